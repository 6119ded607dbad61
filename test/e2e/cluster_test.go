//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/gruntwork-io/terratest/modules/k8s"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

var (
	clusterOnce sync.Once
	clusterCfg  *rest.Config
	clusterErr  error
	clusterSkip string
)

// requireCluster returns a client for the cluster in KUBECONFIG, or skips the
// test with the reason when there is none. It asks the API server once, with
// a short timeout, so a missing cluster costs seconds, not the suite timeout.
func requireCluster(t *testing.T) (*rest.Config, *kubernetes.Clientset) {
	t.Helper()
	clusterOnce.Do(func() {
		path, err := k8s.GetKubeConfigPathE(t)
		if err != nil {
			clusterSkip = fmt.Sprintf("no kubeconfig (%v): set KUBECONFIG to run the e2e suite", err)
			return
		}
		if _, err := os.Stat(path); err != nil {
			clusterSkip = fmt.Sprintf("no kubeconfig at %s: set KUBECONFIG to run the e2e suite", path)
			return
		}
		cfg, err := k8s.LoadApiClientConfigE(path, "")
		if err != nil {
			clusterSkip = fmt.Sprintf("kubeconfig %s unusable: %v", path, err)
			return
		}
		probe := rest.CopyConfig(cfg)
		probe.Timeout = 5 * time.Second
		cs, err := kubernetes.NewForConfig(probe)
		if err != nil {
			clusterErr = fmt.Errorf("client for %s: %w", cfg.Host, err)
			return
		}
		v, err := cs.Discovery().ServerVersion()
		if err != nil {
			clusterSkip = fmt.Sprintf("no Kubernetes API server reachable at %s (%v): start a cluster (make e2e-local does) or point KUBECONFIG at one", cfg.Host, err)
			return
		}
		if _, err := exec.LookPath("kubectl"); err != nil {
			clusterErr = fmt.Errorf("cluster %s (Kubernetes %s) is up but kubectl is not on PATH: %w", cfg.Host, v.GitVersion, err)
			return
		}
		clusterCfg = cfg
	})
	if clusterSkip != "" {
		t.Skip(clusterSkip)
	}
	if clusterErr != nil {
		t.Fatal(clusterErr)
	}
	cs, err := kubernetes.NewForConfig(clusterCfg)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	return clusterCfg, cs
}

// poll calls check until it reports done, returns an error, or the deadline
// passes; then it fails the test with what check last said.
func poll(t *testing.T, what string, timeout time.Duration, check func(ctx context.Context) (done bool, status string, err error)) {
	t.Helper()
	if err := pollE(t.Context(), timeout, check); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func pollE(ctx context.Context, timeout time.Duration, check func(ctx context.Context) (bool, string, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	last := "not checked yet"
	for {
		done, status, err := check(ctx)
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		if status != "" {
			last = status
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not done after %s: %s", timeout, last)
		case <-tick.C:
		}
	}
}
