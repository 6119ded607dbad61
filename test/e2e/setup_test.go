//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gruntwork-io/terratest/modules/k8s"
	"golang.org/x/crypto/bcrypt"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/berth-registry/berth/internal/deploytest"
)

// Environment knobs:
//
//	KUBECONFIG            the cluster (skipped when none answers)
//	BERTH_E2E_DIRECT=1    reach Services by ClusterIP (the test runs in the
//	                      cluster's network, as in ../shared/k8s/exec);
//	                      otherwise through kubectl port-forward
//	BERTH_E2E_PV_ROOT     host directory holding the hostPath volumes, as the
//	                      node sees it (default /var/lib/berth-k8s/pv)
//	BERTH_E2E_REPO_ROOT   the repository (default: found from the working dir)
//	BERTH_E2E_KEEP=1      keep the namespace of a failed test for inspection
const (
	adminUser = "admin"
	pruneUser = "prune"
	// The local overlay's image; `make image` builds it and the cluster must
	// have it loaded (nothing is pulled).
	berthImage = "localhost/berth:e2e"
	redisImage = "redis:7.0.15"
)

// env is one deployment of the local overlay in its own namespace.
type env struct {
	t         *testing.T
	ns        string
	cfg       *rest.Config
	cs        *kubernetes.Clientset
	kubectl   *k8s.KubectlOptions
	adminPass string
	redisPass string
	pvDir     string
	pvName    string
}

type deployOptions struct {
	// policy replaces the overlay's retention policy (policy.yaml) when set.
	policy string
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func repoRoot(t *testing.T) string {
	t.Helper()
	if r := os.Getenv("BERTH_E2E_REPO_ROOT"); r != "" {
		return r
	}
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "deploy", "overlays", "local", "kustomization.yaml")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("cannot find the repository (deploy/overlays/local): run from inside it or set BERTH_E2E_REPO_ROOT")
		}
		dir = parent
	}
}

// deploy applies the local overlay into a fresh namespace that enforces Pod
// Security "restricted", with Secrets and a hostPath volume of its own, and
// waits until every Deployment is rolled out. The CronJobs are suspended:
// tests run them with `kubectl create job --from=cronjob/...` when they
// choose. Everything is deleted when the test ends.
func deploy(t *testing.T, o deployOptions) *env {
	t.Helper()
	cfg, cs := requireCluster(t)
	// Tests share nothing but the cluster; most of their time is spent
	// waiting for pods, so they overlap (-test.parallel bounds how many).
	t.Parallel()
	name := strings.ToLower(strings.TrimPrefix(t.Name(), "Test"))
	if len(name) > 30 {
		name = name[:30]
	}
	e := &env{t: t, cfg: cfg, cs: cs, ns: "e2e-" + name + "-" + randomHex(3), adminPass: randomHex(12), redisPass: randomHex(16)}
	e.kubectl = k8s.NewKubectlOptions("", "", e.ns)
	e.pvName = "berth-" + e.ns
	ctx := t.Context()

	pvRoot := os.Getenv("BERTH_E2E_PV_ROOT")
	if pvRoot == "" {
		pvRoot = "/var/lib/berth-k8s/pv"
	}
	if fi, err := os.Stat(pvRoot); err != nil || !fi.IsDir() {
		t.Fatalf("hostPath root %s is missing (%v): the local overlay's PersistentVolume lives there; create it, mount it into the nodes (deploy/README.md) or set BERTH_E2E_PV_ROOT", pvRoot, err)
	}
	e.pvDir = filepath.Join(pvRoot, e.ns)
	// 0777: kubelet would make a root-owned 0755 directory and fsGroup does
	// not apply to hostPath, so uid 65532 could not write.
	if err := os.Mkdir(e.pvDir, 0o777); err != nil {
		t.Fatalf("create the volume directory: %v", err)
	}
	if err := os.Chmod(e.pvDir, 0o777); err != nil {
		t.Fatal(err)
	}

	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: e.ns,
		Labels: map[string]string{
			"pod-security.kubernetes.io/enforce":         "restricted",
			"pod-security.kubernetes.io/enforce-version": "latest",
			"pod-security.kubernetes.io/warn":            "restricted",
		},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace %s: %v", e.ns, err)
	}
	t.Cleanup(e.teardown)
	t.Logf("namespace %s, volume %s", e.ns, e.pvDir)

	e.createSecrets()
	e.apply(repoRoot(t), o)
	e.waitRollout(deploytest.RedisDeployment)
	e.waitRollout(deploytest.RegistryDeployment)
	e.waitServing()
	return e
}

// waitServing waits until the registry answers through its Service the way
// a client sees it. Ready pods are not enough: Service rules and the
// NetworkPolicy controller catch up with new pods a second or two later.
func (e *env) waitServing() {
	e.t.Helper()
	for _, svc := range []struct {
		name, path string
		port, want int
	}{
		{deploytest.RegistryService, "/v2/", 5000, http.StatusUnauthorized},
		{deploytest.MetricsService, "/readyz", 5001, http.StatusOK},
	} {
		poll(e.t, fmt.Sprintf("Service %s answering %s", svc.name, svc.path), time.Minute, func(ctx context.Context) (bool, string, error) {
			host, closeFn, err := e.endpoint(ctx, svc.name, svc.port)
			if err != nil {
				return false, err.Error(), nil
			}
			defer closeFn()
			code, _, body, err := httpGet(ctx, "http://"+host+svc.path, "", "")
			if err != nil {
				return false, err.Error(), nil
			}
			return code == svc.want, fmt.Sprintf("GET %s = %d %q", svc.path, code, body), nil
		})
	}
}

func (e *env) createSecrets() {
	t := e.t
	hash := func(pw string) string {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		return string(h)
	}
	prunePass := randomHex(12)
	secrets := map[string]map[string]string{
		"berth-htpasswd":          {"htpasswd": adminUser + ":" + hash(e.adminPass) + "\n" + pruneUser + ":" + hash(prunePass) + "\n"},
		"berth-http-secret":       {"secret": randomHex(32)},
		"berth-redis":             {"password": e.redisPass},
		"berth-prune-credentials": {"username": pruneUser, "password": prunePass},
	}
	for name, data := range secrets {
		_, err := e.cs.CoreV1().Secrets(e.ns).Create(t.Context(), &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			StringData: data,
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create Secret %s: %v", name, err)
		}
	}
}

// apply writes a kustomization that puts the local overlay into the test's
// namespace, gives it its own PersistentVolume and suspends the CronJobs,
// then runs `kubectl apply -k` on it like a user would.
func (e *env) apply(root string, o deployOptions) {
	t := e.t
	dir, err := deploytest.TestDeployment{
		Namespace: e.ns,
		Overlay:   filepath.Join(root, "deploy", "overlays", "local"),
		PVName:    e.pvName,
		PVPath:    e.pvDir,
		Policy:    o.policy,
	}.WriteKustomization(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	out, err := k8s.RunKubectlAndGetOutputE(t, e.kubectl, "apply", "-k", dir)
	if err != nil {
		t.Fatalf("kubectl apply -k (local overlay in %s): %v\n%s", e.ns, err, out)
	}
	if strings.Contains(out, "violate PodSecurity") {
		t.Errorf("the namespace enforces Pod Security restricted and kubectl warned:\n%s", out)
	}
}

// waitRollout waits until a Deployment has all its replicas updated, ready
// and available.
func (e *env) waitRollout(name string) {
	e.t.Helper()
	poll(e.t, "rollout of Deployment "+name, 3*time.Minute, func(ctx context.Context) (bool, string, error) {
		d, err := e.cs.AppsV1().Deployments(e.ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		return rolledOut(d), fmt.Sprintf("generation %d/%d, %d updated, %d ready, %d available of %d; pods: %s",
			d.Status.ObservedGeneration, d.Generation, d.Status.UpdatedReplicas, d.Status.ReadyReplicas,
			d.Status.AvailableReplicas, *d.Spec.Replicas, e.podSummary(ctx)), nil
	})
}

func rolledOut(d *appsv1.Deployment) bool {
	want := *d.Spec.Replicas
	s := d.Status
	return s.ObservedGeneration >= d.Generation && s.UpdatedReplicas == want && s.ReadyReplicas == want &&
		s.AvailableReplicas == want && s.Replicas == want
}

// podSummary is one line per pod, for failure messages.
func (e *env) podSummary(ctx context.Context) string {
	pods, err := e.cs.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err.Error()
	}
	var parts []string
	for _, p := range pods.Items {
		s := p.Name + " " + string(p.Status.Phase)
		for _, c := range p.Status.ContainerStatuses {
			if w := c.State.Waiting; w != nil {
				s += " " + w.Reason
			}
			if c.RestartCount > 0 {
				s += fmt.Sprintf(" restarts=%d", c.RestartCount)
			}
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

// teardown deletes what deploy made. After a failure it first logs the
// namespace's events and every container's logs, the evidence a CI log needs.
func (e *env) teardown() {
	t := e.t
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if t.Failed() {
		e.dumpDiagnostics(ctx)
		if os.Getenv("BERTH_E2E_KEEP") == "1" {
			t.Logf("BERTH_E2E_KEEP=1: namespace %s, PersistentVolume %s and %s kept", e.ns, e.pvName, e.pvDir)
			return
		}
	}
	if err := e.cs.CoreV1().Namespaces().Delete(ctx, e.ns, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("delete namespace %s: %v", e.ns, err)
	}
	// The volume directory can go only once no pod writes into it.
	err := pollE(ctx, 2*time.Minute, func(ctx context.Context) (bool, string, error) {
		_, err := e.cs.CoreV1().Namespaces().Get(ctx, e.ns, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, "", nil
		}
		return false, fmt.Sprintf("namespace %s still terminating: %v", e.ns, err), nil
	})
	if err != nil {
		t.Logf("cleanup: %v", err)
	}
	if err := e.cs.CoreV1().PersistentVolumes().Delete(ctx, e.pvName, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("delete PersistentVolume %s: %v", e.pvName, err)
	}
	if err := os.RemoveAll(e.pvDir); err != nil {
		t.Errorf("remove %s: %v", e.pvDir, err)
	}
}

func (e *env) dumpDiagnostics(ctx context.Context) {
	t := e.t
	t.Logf("pods in %s: %s", e.ns, e.podSummary(ctx))
	if evs, err := e.cs.CoreV1().Events(e.ns).List(ctx, metav1.ListOptions{}); err == nil {
		for _, ev := range evs.Items {
			t.Logf("event %s %s/%s: %s: %s", ev.Type, ev.InvolvedObject.Kind, ev.InvolvedObject.Name, ev.Reason, ev.Message)
		}
	}
	pods, err := e.cs.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return
	}
	for _, p := range pods.Items {
		for _, c := range p.Spec.Containers {
			out, err := e.kubectlCtx(ctx, 30*time.Second, e.ns, "logs", p.Name, "-c", c.Name, "--tail=60")
			if err != nil {
				t.Logf("logs %s/%s: %v", p.Name, c.Name, err)
				continue
			}
			t.Logf("logs %s/%s (last 60 lines):\n%s", p.Name, c.Name, out)
		}
	}
}

func ptr[T any](v T) *T { return &v }
