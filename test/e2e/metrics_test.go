//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-registry/berth/internal/deploytest"
)

// TestMetricsInClusterOnly: Prometheus metrics answer on the berth-metrics
// Service inside the cluster; the registry Service (what a LoadBalancer or
// Ingress exposes) has no such port and does not serve them on 5000.
func TestMetricsInClusterOnly(t *testing.T) {
	e := deploy(t, deployOptions{})
	ctx := t.Context()

	host := e.registry()
	img := randomImage(t, 32<<10, 1)
	e.mustPush(host, "metrics/app:1", img) // so request counters exist

	mhost, closeFn, err := e.endpoint(ctx, deploytest.MetricsService, 5001)
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	poll(t, "metrics on berth-metrics:5001", time.Minute, func(ctx context.Context) (bool, string, error) {
		code, _, body, err := httpGet(ctx, "http://"+mhost+"/metrics", "", "")
		if err != nil {
			return false, err.Error(), nil
		}
		for _, want := range []string{"berth_http_requests_total", "berth_redis_up 1"} {
			if code != http.StatusOK || !strings.Contains(body, want) {
				return false, fmt.Sprintf("GET /metrics = %d, body lacks %q", code, want), nil
			}
		}
		return true, "", nil
	})
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, _, body, err := httpGet(ctx, "http://"+mhost+path, "", ""); err != nil || code != http.StatusOK {
			t.Errorf("GET %s on the debug port = %d %q (%v), want 200", path, code, body, err)
		}
	}

	svc, err := e.cs.CoreV1().Services(e.ns).Get(ctx, deploytest.RegistryService, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range svc.Spec.Ports {
		if p.Port != 5000 {
			t.Errorf("registry Service exposes port %d (%s): only 5000 may be public", p.Port, p.Name)
		}
	}
	for _, creds := range [][2]string{{"", ""}, {adminUser, e.adminPass}} {
		code, _, body, err := httpGet(ctx, "http://"+host+"/metrics", creds[0], creds[1])
		if err != nil {
			t.Fatal(err)
		}
		if code == http.StatusOK || strings.Contains(body, "# HELP") || strings.Contains(body, "berth_") {
			t.Errorf("GET /metrics on the registry Service (user %q) = %d with metrics in the body", creds[0], code)
		}
	}
	if direct() {
		// The ClusterIP of the public Service does not forward the debug port.
		ip := e.clusterIP(ctx, deploytest.RegistryService)
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if code, _, _, err := httpGet(cctx, fmt.Sprintf("http://%s:5001/metrics", ip), "", ""); err == nil {
			t.Errorf("the registry Service answers on 5001 (status %d)", code)
		}
	}
}
