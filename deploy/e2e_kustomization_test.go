package deploy_test

import (
	"path/filepath"
	"strings"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/berth-registry/berth/internal/deploytest"
)

// TestE2EKustomization renders the kustomization test/e2e applies, so a
// mistake in it shows up here rather than as a Pending claim on a cluster:
// its own PersistentVolume bound by name, everything in the test namespace,
// CronJobs suspended, the replacement policy used, and every static check
// still passing.
func TestE2EKustomization(t *testing.T) {
	overlay, err := filepath.Abs("overlays/local")
	if err != nil {
		t.Fatal(err)
	}
	const policy = "rules:\n  - repositories: [\"**\"]\n    keep:\n      latest: 2\n"
	d := deploytest.TestDeployment{Namespace: "e2e-x-abc", Overlay: overlay, PVName: "berth-e2e-x-abc", PVPath: "/var/lib/berth-k8s/pv/e2e-x-abc", Policy: policy}
	dir, err := d.WriteKustomization(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s, err := deploytest.RenderDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range s.Objects {
		if o.GVK.Kind == "PersistentVolume" {
			if o.Namespace != "" {
				t.Errorf("%s got namespace %s", o, o.Namespace)
			}
			continue
		}
		if o.Namespace != d.Namespace {
			t.Errorf("%s in namespace %q, want %s", o, o.Namespace, d.Namespace)
		}
	}
	pv := s.Find("PersistentVolume", d.PVName)
	if pv == nil {
		t.Fatalf("no PersistentVolume %s in the render", d.PVName)
	}
	if got := pv.Obj.(*corev1.PersistentVolume).Spec.HostPath.Path; got != d.PVPath {
		t.Errorf("PV path %s, want %s", got, d.PVPath)
	}
	for _, o := range s.Kinds("CronJob") {
		if sus := o.Obj.(*batchv1.CronJob).Spec.Suspend; sus == nil || !*sus {
			t.Errorf("%s not suspended", o)
		}
	}
	_, data, err := s.ConfigMapData(deploytest.PolicyMapPrefix)
	if err != nil {
		t.Fatal(err)
	}
	if data["policy.yaml"] != policy {
		t.Errorf("policy not replaced: %q", data["policy.yaml"])
	}
	report(t, "references", deploytest.CheckReferences(s, userSecrets(t)))
	report(t, "wiring", deploytest.CheckBerthWiring(s))
	report(t, "workloads", deploytest.CheckWorkloads(s))
	for _, o := range s.Objects {
		if strings.Contains(string(o.YAML), "berth-registry\n") {
			t.Errorf("%s still names the overlay's shared PersistentVolume berth-registry", o)
		}
	}
}
