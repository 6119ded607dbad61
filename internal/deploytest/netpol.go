package deploytest

import (
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Endpoint is one side of a connection: a pod (Namespace set) or an address
// outside the cluster's pods (External set, e.g. a load balancer or S3).
type Endpoint struct {
	Namespace       string
	NamespaceLabels map[string]string
	Labels          map[string]string
	// Ports are the pod's named container ports, for policies that name them.
	Ports    map[string]int32
	External netip.Addr
}

// IsPod reports whether the endpoint is a pod.
func (e Endpoint) IsPod() bool { return e.Namespace != "" }

// Flow is a connection attempt.
type Flow struct {
	From, To Endpoint
	Port     int32
	Protocol corev1.Protocol // "" means TCP
}

// Allowed evaluates NetworkPolicy semantics for one flow: the source's egress
// and the destination's ingress must both allow it. A pod that no policy of a
// direction selects is unrestricted in that direction; a selected pod allows
// what the union of the selecting policies' rules allows. Only the given
// policies exist (each in the namespace it names, or in policyNamespace
// when it names none). Node-originated traffic (kubelet probes) is out of scope, as
// most CNIs let it through.
func Allowed(policies []*networkingv1.NetworkPolicy, policyNamespace string, f Flow) (bool, error) {
	proto := f.Protocol
	if proto == "" {
		proto = corev1.ProtocolTCP
	}
	if f.From.IsPod() {
		ok, err := directionAllows(policies, policyNamespace, networkingv1.PolicyTypeEgress, f.From, f.To, f.Port, proto)
		if err != nil || !ok {
			return false, err
		}
	}
	if f.To.IsPod() {
		return directionAllows(policies, policyNamespace, networkingv1.PolicyTypeIngress, f.To, f.From, f.Port, proto)
	}
	return true, nil
}

// rule is an ingress or egress rule: its peers and ports.
type rule struct {
	peers []networkingv1.NetworkPolicyPeer
	ports []networkingv1.NetworkPolicyPort
}

// directionAllows decides one direction for subject (the pod the policies
// select), with peer on the other side. For egress, port is the peer's port;
// for ingress, the subject's.
func directionAllows(policies []*networkingv1.NetworkPolicy, defaultNS string, dir networkingv1.PolicyType, subject, peer Endpoint, port int32, proto corev1.Protocol) (bool, error) {
	isolated := false
	for _, np := range policies {
		ns := np.Namespace
		if ns == "" {
			ns = defaultNS
		}
		if ns != subject.Namespace || !hasPolicyType(np, dir) {
			continue
		}
		sel, err := Selects(&np.Spec.PodSelector, subject.Labels)
		if err != nil {
			return false, fmt.Errorf("NetworkPolicy %s: %w", np.Name, err)
		}
		if !sel {
			continue
		}
		isolated = true
		var rules []rule
		if dir == networkingv1.PolicyTypeIngress {
			for _, r := range np.Spec.Ingress {
				rules = append(rules, rule{r.From, r.Ports})
			}
		} else {
			for _, r := range np.Spec.Egress {
				rules = append(rules, rule{r.To, r.Ports})
			}
		}
		portOwner := subject
		if dir == networkingv1.PolicyTypeEgress {
			portOwner = peer
		}
		for _, r := range rules {
			pm, err := portsMatch(r.ports, portOwner, port, proto)
			if err != nil {
				return false, fmt.Errorf("NetworkPolicy %s: %w", np.Name, err)
			}
			if !pm {
				continue
			}
			peerOK, err := peersMatch(r.peers, ns, peer)
			if err != nil {
				return false, fmt.Errorf("NetworkPolicy %s: %w", np.Name, err)
			}
			if peerOK {
				return true, nil
			}
		}
	}
	return !isolated, nil
}

// hasPolicyType applies the API's defaulting: without policyTypes a policy
// is an ingress policy, plus egress when it has egress rules.
func hasPolicyType(np *networkingv1.NetworkPolicy, t networkingv1.PolicyType) bool {
	if len(np.Spec.PolicyTypes) == 0 {
		return t == networkingv1.PolicyTypeIngress || (t == networkingv1.PolicyTypeEgress && len(np.Spec.Egress) > 0)
	}
	for _, pt := range np.Spec.PolicyTypes {
		if pt == t {
			return true
		}
	}
	return false
}

func portsMatch(ports []networkingv1.NetworkPolicyPort, owner Endpoint, port int32, proto corev1.Protocol) (bool, error) {
	if len(ports) == 0 {
		return true, nil
	}
	for _, p := range ports {
		if protoOf(p) != proto {
			continue
		}
		if p.Port == nil {
			return true, nil
		}
		if p.Port.Type == intstr.String {
			if n, ok := owner.Ports[p.Port.StrVal]; ok && n == port {
				return true, nil
			}
			continue
		}
		lo, hi := p.Port.IntVal, p.Port.IntVal
		if p.EndPort != nil {
			hi = *p.EndPort
		}
		if port >= lo && port <= hi {
			return true, nil
		}
	}
	return false, nil
}

func peersMatch(peers []networkingv1.NetworkPolicyPeer, policyNS string, peer Endpoint) (bool, error) {
	if len(peers) == 0 {
		return true, nil
	}
	for _, p := range peers {
		ok, err := peerMatches(p, policyNS, peer)
		if err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}

func peerMatches(p networkingv1.NetworkPolicyPeer, policyNS string, peer Endpoint) (bool, error) {
	if p.IPBlock != nil {
		if peer.IsPod() || !peer.External.IsValid() {
			// Pod IPs are ephemeral; policies here never rely on ipBlock for pods.
			return false, nil
		}
		cidr, err := netip.ParsePrefix(p.IPBlock.CIDR)
		if err != nil {
			return false, fmt.Errorf("ipBlock %q: %w", p.IPBlock.CIDR, err)
		}
		if !cidr.Contains(peer.External) {
			return false, nil
		}
		for _, ex := range p.IPBlock.Except {
			exc, err := netip.ParsePrefix(ex)
			if err != nil {
				return false, fmt.Errorf("ipBlock except %q: %w", ex, err)
			}
			if exc.Contains(peer.External) {
				return false, nil
			}
		}
		return true, nil
	}
	if !peer.IsPod() {
		return false, nil
	}
	if p.NamespaceSelector != nil {
		ok, err := Selects(p.NamespaceSelector, peer.NamespaceLabels)
		if err != nil || !ok {
			return false, err
		}
	} else if peer.Namespace != policyNS {
		return false, nil
	}
	if p.PodSelector == nil {
		return true, nil
	}
	return Selects(p.PodSelector, peer.Labels)
}

// PodEndpoint describes a rendered pod template as an Endpoint in namespace
// ns (whose labels include the kubernetes.io/metadata.name label).
func PodEndpoint(p PodTemplate, ns string) Endpoint {
	ports := map[string]int32{}
	for _, c := range allContainers(&p.Spec) {
		for _, cp := range c.Ports {
			if cp.Name != "" {
				ports[cp.Name] = cp.ContainerPort
			}
		}
	}
	return Endpoint{
		Namespace:       ns,
		NamespaceLabels: map[string]string{"kubernetes.io/metadata.name": ns},
		Labels:          p.Meta.Labels,
		Ports:           ports,
	}
}

// NetworkPolicies returns the rendered policies.
func (s *Set) NetworkPolicies() []*networkingv1.NetworkPolicy {
	var out []*networkingv1.NetworkPolicy
	for _, o := range s.Kinds("NetworkPolicy") {
		out = append(out, o.Obj.(*networkingv1.NetworkPolicy))
	}
	return out
}

// Labels builds a label map from alternating keys and values.
func Labels(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}
