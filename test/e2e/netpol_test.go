//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

var (
	registryLabels = map[string]string{"app.kubernetes.io/name": "berth", "app.kubernetes.io/component": "registry"}
	gcLabels       = map[string]string{"app.kubernetes.io/name": "berth", "app.kubernetes.io/component": "gc"}
	strangerLabels = map[string]string{"app": "e2e-stranger"}
	promLabels     = map[string]string{"app.kubernetes.io/name": "prometheus"}
)

// enforcement tells whether the cluster's CNI enforces NetworkPolicies, by
// trying a connection that the namespace's default deny must refuse: a pod
// with no allow rule calling Redis. It polls, because a new pod is covered by
// the policy controller only once it has seen it.
func (e *env) enforcement(ctx context.Context, redisIP string) (bool, string) {
	e.t.Helper()
	e.probePod(e.ns, "np-canary", strangerLabels)
	var last string
	err := pollE(ctx, 45*time.Second, func(ctx context.Context) (bool, string, error) {
		out, err := e.connect(ctx, e.ns, "np-canary", redisIP, 6379, "-a", e.redisPass)
		if errors.Is(err, errNotConnected) {
			return true, "", nil
		}
		last = fmt.Sprintf("canary reached Redis: %q (%v)", out, err)
		return false, last, nil
	})
	if err != nil {
		return false, "a pod under the namespace's default-deny policy still reaches Redis after 45s (" + last + "): the cluster's CNI does not enforce NetworkPolicy (kind's kindnet before v0.24 does not; use Calico or Cilium)"
	}
	return true, ""
}

// TestNetworkPolicies: Redis answers only the registry and the gc Job; a
// pod without those labels, in the namespace or elsewhere, cannot connect.
// The registry port stays open to clients in other namespaces, the debug
// port only to Prometheus.
func TestNetworkPolicies(t *testing.T) {
	e := deploy(t, deployOptions{})
	ctx := t.Context()
	redisIP := e.clusterIP(ctx, "berth-redis")
	registryIP := e.clusterIP(ctx, "berth")
	metricsIP := e.clusterIP(ctx, "berth-metrics")

	if ok, why := e.enforcement(ctx, redisIP); !ok {
		t.Skip("NetworkPolicy checks skipped: " + why)
	}

	// The allowed flow first, so a refusal below cannot be Redis being down.
	e.probePod(e.ns, "np-gc", gcLabels)
	poll(t, "gc-labelled pod → Redis", time.Minute, func(ctx context.Context) (bool, string, error) {
		out, err := e.connect(ctx, e.ns, "np-gc", redisIP, 6379, "-a", e.redisPass)
		if err == nil && out == "PONG" {
			return true, "", nil
		}
		return false, fmt.Sprintf("%q %v", out, err), nil
	})

	other := e.clientNamespace()
	e.probePod(other, "stranger", strangerLabels)
	e.probePod(other, "prometheus", promLabels)
	// Pods from another namespace that merely claim berth's labels get no
	// further: the Redis rule's podSelector is namespace-local.
	e.probePod(other, "impostor", registryLabels)

	for _, c := range []struct {
		what      string
		ns, pod   string
		ip        string
		port      int
		connected bool
		extra     []string
	}{
		{"stranger in another namespace → Redis", other, "stranger", redisIP, 6379, false, []string{"-a", e.redisPass}},
		{"pod with registry labels in another namespace → Redis", other, "impostor", redisIP, 6379, false, []string{"-a", e.redisPass}},
		{"gc-labelled pod → registry API (gc needs none)", e.ns, "np-gc", registryIP, 5000, false, nil},
		{"stranger in another namespace → registry API", other, "stranger", registryIP, 5000, true, nil},
		{"stranger in another namespace → metrics", other, "stranger", metricsIP, 5001, false, nil},
		{"Prometheus-labelled pod → metrics", other, "prometheus", metricsIP, 5001, true, nil},
	} {
		t.Run(c.what, func(t *testing.T) {
			// Poll to the expected state (new pods are covered within about a
			// second), then confirm it holds on repeated tries.
			check := func(ctx context.Context) (bool, string, error) {
				out, err := e.connect(ctx, c.ns, c.pod, c.ip, c.port, c.extra...)
				if err != nil && !errors.Is(err, errNotConnected) {
					return false, err.Error(), nil
				}
				got := err == nil
				return got == c.connected, fmt.Sprintf("connected=%v: %q %v", got, out, err), nil
			}
			poll(t, c.what, 45*time.Second, check)
			for range 3 {
				if ok, status, _ := check(ctx); !ok {
					t.Fatalf("%s: flipped after settling: %s", c.what, status)
				}
			}
		})
	}
}
