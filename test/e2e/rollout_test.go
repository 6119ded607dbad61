//go:build e2e

package e2e

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-registry/berth/internal/deploytest"
)

// TestRollout: in a namespace that enforces Pod Security "restricted", every
// workload of the local overlay starts: both Deployments roll out, the claim
// binds, and a Job from each CronJob is admitted and succeeds on an empty
// registry. Nothing restarts.
func TestRollout(t *testing.T) {
	e := deploy(t, deployOptions{})
	ctx := t.Context()

	pvc, err := e.cs.CoreV1().PersistentVolumeClaims(e.ns).Get(ctx, deploytest.PVCName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pvc.Status.Phase != corev1.ClaimBound || pvc.Spec.VolumeName != e.pvName {
		t.Errorf("claim %s is %s on %q, want Bound on %s", pvc.Name, pvc.Status.Phase, pvc.Spec.VolumeName, e.pvName)
	}

	for _, name := range []string{deploytest.RegistryDeployment, deploytest.RedisDeployment} {
		d, err := e.cs.AppsV1().Deployments(e.ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !rolledOut(d) {
			t.Errorf("Deployment %s not rolled out: %+v", name, d.Status)
		}
		if name == deploytest.RegistryDeployment && *d.Spec.Replicas < 2 {
			t.Errorf("registry runs %d replicas, want 2", *d.Spec.Replicas)
		}
		checkAvailable(t, d)
	}

	before, err := e.registryPods(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Both Jobs must be admitted (Pod Security) and succeed with nothing to do.
	e.runCronJob(deploytest.PruneCronJob)
	e.runCronJob(deploytest.GCCronJob)

	after, err := e.registryPods(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range before {
		if a, ok := after[name]; !ok || a.restarts != s.restarts {
			t.Errorf("registry pod %s restarted or vanished while the Jobs ran: before %+v, after %+v", name, s, a)
		}
	}
	pods, err := e.cs.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		for _, c := range p.Status.ContainerStatuses {
			if c.RestartCount > 0 {
				t.Errorf("pod %s container %s restarted %d times", p.Name, c.Name, c.RestartCount)
			}
		}
	}
}

func checkAvailable(t *testing.T, d *appsv1.Deployment) {
	t.Helper()
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentAvailable && c.Status != corev1.ConditionTrue {
			t.Errorf("Deployment %s not Available: %s", d.Name, c.Message)
		}
	}
}
