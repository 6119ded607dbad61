package deploytest

import (
	"fmt"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// hasPort reports whether a container of the pod declares p (a number or a
// port name) for protocol proto ("" means TCP).
func hasPort(spec *corev1.PodSpec, p intstr.IntOrString, proto corev1.Protocol) bool {
	if proto == "" {
		proto = corev1.ProtocolTCP
	}
	for _, c := range allContainers(spec) {
		for _, cp := range c.Ports {
			cpProto := cp.Protocol
			if cpProto == "" {
				cpProto = corev1.ProtocolTCP
			}
			if cpProto != proto {
				continue
			}
			if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
				return true
			}
		}
	}
	return false
}

// Selects reports whether a label selector matches a set of labels. A nil
// selector matches nothing, as for Services and PDBs.
func Selects(sel *metav1.LabelSelector, l map[string]string) (bool, error) {
	if sel == nil {
		return false, nil
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return false, fmt.Errorf("invalid label selector: %w", err)
	}
	return s.Matches(labels.Set(l)), nil
}

// podsSelected returns the pod templates a selector matches.
func (s *Set) podsSelected(sel *metav1.LabelSelector) ([]PodTemplate, error) {
	var out []PodTemplate
	for _, p := range s.PodTemplates() {
		ok, err := Selects(sel, p.Meta.Labels)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, p)
		}
	}
	return out, nil
}

// CheckPorts reports probe ports, Service target ports, NetworkPolicy ports,
// Ingress backends and ServiceMonitor endpoints that point at nothing.
func CheckPorts(s *Set) []error {
	var problems []error
	bad := func(format string, a ...any) { problems = append(problems, fmt.Errorf(format, a...)) }

	for _, p := range s.PodTemplates() {
		for _, c := range allContainers(&p.Spec) {
			for kind, pr := range map[string]*corev1.Probe{"readinessProbe": c.ReadinessProbe, "livenessProbe": c.LivenessProbe, "startupProbe": c.StartupProbe} {
				if port, ok := probePort(pr); ok && !hasPort(&corev1.PodSpec{Containers: []corev1.Container{*c}}, port, corev1.ProtocolTCP) {
					bad("%s container %s: %s port %s is not a port of the container", p.Owner, c.Name, kind, port.String())
				}
			}
		}
	}

	for _, o := range s.Kinds("Service") {
		svc := o.Obj.(*corev1.Service)
		if len(svc.Spec.Selector) == 0 {
			continue // endpoints managed elsewhere
		}
		pods, err := s.podsSelected(&metav1.LabelSelector{MatchLabels: svc.Spec.Selector})
		if err != nil {
			bad("%s: %v", o, err)
			continue
		}
		if len(pods) == 0 {
			bad("%s: selector %v matches no pod template", o, svc.Spec.Selector)
		}
		for _, sp := range svc.Spec.Ports {
			target := sp.TargetPort
			if target.Type == intstr.Int && target.IntVal == 0 {
				target = intstr.FromInt32(sp.Port)
			}
			for _, p := range pods {
				if !hasPort(&p.Spec, target, sp.Protocol) {
					bad("%s port %s: targetPort %s is not a port of %s", o, sp.Name, target.String(), p.Owner)
				}
			}
		}
	}

	for _, o := range s.Kinds("NetworkPolicy") {
		np := o.Obj.(*networkingv1.NetworkPolicy)
		selected, err := s.podsSelected(&np.Spec.PodSelector)
		if err != nil {
			bad("%s: %v", o, err)
			continue
		}
		for _, rule := range np.Spec.Ingress {
			for _, port := range rule.Ports {
				if port.Port == nil {
					continue
				}
				for _, p := range selected {
					if !hasPort(&p.Spec, *port.Port, protoOf(port)) {
						bad("%s: ingress port %s is not a port of selected %s", o, port.Port.String(), p.Owner)
					}
				}
			}
		}
		for _, rule := range np.Spec.Egress {
			for _, peer := range rule.To {
				if peer.PodSelector == nil || peer.NamespaceSelector != nil || peer.IPBlock != nil {
					continue // pods outside the render
				}
				dests, err := s.podsSelected(peer.PodSelector)
				if err != nil {
					bad("%s: %v", o, err)
					continue
				}
				for _, port := range rule.Ports {
					if port.Port == nil {
						continue
					}
					for _, d := range dests {
						if !hasPort(&d.Spec, *port.Port, protoOf(port)) {
							bad("%s: egress port %s is not a port of destination %s", o, port.Port.String(), d.Owner)
						}
					}
				}
			}
		}
	}

	for _, o := range s.Kinds("Ingress") {
		ing := o.Obj.(*networkingv1.Ingress)
		var backends []*networkingv1.IngressServiceBackend
		if b := ing.Spec.DefaultBackend; b != nil && b.Service != nil {
			backends = append(backends, b.Service)
		}
		for _, r := range ing.Spec.Rules {
			if r.HTTP == nil {
				continue
			}
			for _, path := range r.HTTP.Paths {
				if path.Backend.Service != nil {
					backends = append(backends, path.Backend.Service)
				}
			}
		}
		for _, b := range backends {
			so := s.Find("Service", b.Name)
			if so == nil {
				bad("%s: backend Service %s is not rendered", o, b.Name)
				continue
			}
			if !serviceHasPort(so.Obj.(*corev1.Service), b.Port) {
				bad("%s: backend port %s/%d is not a port of %s", o, b.Port.Name, b.Port.Number, so)
			}
		}
	}

	for _, o := range s.Kinds("ServiceMonitor") {
		sm := o.Obj.(*monitoringv1.ServiceMonitor)
		var svcs []*corev1.Service
		for _, so := range s.Kinds("Service") {
			svc := so.Obj.(*corev1.Service)
			if ok, err := Selects(&sm.Spec.Selector, svc.Labels); err != nil {
				bad("%s: %v", o, err)
			} else if ok {
				svcs = append(svcs, svc)
			}
		}
		if len(svcs) == 0 {
			bad("%s: selector matches no Service", o)
		}
		for _, ep := range sm.Spec.Endpoints {
			for _, svc := range svcs {
				if !serviceHasPort(svc, networkingv1.ServiceBackendPort{Name: ep.Port}) {
					bad("%s: endpoint port %q is not a port of Service %s", o, ep.Port, svc.Name)
				}
			}
		}
	}
	return problems
}

func protoOf(p networkingv1.NetworkPolicyPort) corev1.Protocol {
	if p.Protocol == nil {
		return corev1.ProtocolTCP
	}
	return *p.Protocol
}

func probePort(p *corev1.Probe) (intstr.IntOrString, bool) {
	switch {
	case p == nil:
		return intstr.IntOrString{}, false
	case p.HTTPGet != nil:
		return p.HTTPGet.Port, true
	case p.TCPSocket != nil:
		return p.TCPSocket.Port, true
	case p.GRPC != nil:
		return intstr.FromInt32(p.GRPC.Port), true
	}
	return intstr.IntOrString{}, false
}

func serviceHasPort(svc *corev1.Service, bp networkingv1.ServiceBackendPort) bool {
	for _, sp := range svc.Spec.Ports {
		if (bp.Name != "" && sp.Name == bp.Name) || (bp.Name == "" && sp.Port == bp.Number) {
			return true
		}
	}
	return false
}

// CheckSelectors reports selectors that select nothing: a workload selector
// that does not match its own template (the API server rejects it), and
// Service, NetworkPolicy, PodDisruptionBudget and spread selectors that match
// no rendered pod (silently inert).
func CheckSelectors(s *Set) []error {
	var problems []error
	bad := func(format string, a ...any) { problems = append(problems, fmt.Errorf(format, a...)) }
	for _, o := range s.Kinds("Deployment") {
		d := o.Obj.(*appsv1.Deployment)
		if ok, err := Selects(d.Spec.Selector, d.Spec.Template.Labels); err != nil || !ok {
			bad("%s: spec.selector does not match the pod template's labels (%v)", o, err)
		}
	}
	for _, p := range s.PodTemplates() {
		for _, tsc := range p.Spec.TopologySpreadConstraints {
			if ok, err := Selects(tsc.LabelSelector, p.Meta.Labels); err != nil || !ok {
				bad("%s: topologySpreadConstraint on %s does not select the pod's own labels (%v)", p.Owner, tsc.TopologyKey, err)
			}
		}
	}
	for _, o := range s.Kinds("NetworkPolicy") {
		np := o.Obj.(*networkingv1.NetworkPolicy)
		if len(np.Spec.PodSelector.MatchLabels)+len(np.Spec.PodSelector.MatchExpressions) > 0 {
			if pods, err := s.podsSelected(&np.Spec.PodSelector); err != nil || len(pods) == 0 {
				bad("%s: podSelector matches no pod template (%v)", o, err)
			}
		}
		var peers []networkingv1.NetworkPolicyPeer
		for _, r := range np.Spec.Ingress {
			peers = append(peers, r.From...)
		}
		for _, r := range np.Spec.Egress {
			peers = append(peers, r.To...)
		}
		for _, peer := range peers {
			if peer.PodSelector == nil || peer.NamespaceSelector != nil {
				continue
			}
			if pods, err := s.podsSelected(peer.PodSelector); err != nil || len(pods) == 0 {
				bad("%s: peer podSelector %v matches no pod template of the namespace (%v)", o, metav1.FormatLabelSelector(peer.PodSelector), err)
			}
		}
	}
	for _, o := range s.Kinds("PodDisruptionBudget") {
		pdb := o.Obj.(*policyv1.PodDisruptionBudget)
		if pods, err := s.podsSelected(pdb.Spec.Selector); err != nil || len(pods) == 0 {
			bad("%s: selector matches no pod template (%v)", o, err)
		}
	}
	return problems
}
