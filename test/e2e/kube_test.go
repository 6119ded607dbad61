//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-registry/berth/internal/deploytest"
)

// kubectl runs kubectl against the test's namespace with a deadline, so a
// connection that a NetworkPolicy drops (rather than refuses) cannot hang
// the suite. Output is stdout and stderr together.
func (e *env) kubectlCtx(ctx context.Context, timeout time.Duration, ns string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "kubectl", append([]string{"--namespace", ns}, args...)...).CombinedOutput()
	if ctx.Err() != nil {
		return string(out), fmt.Errorf("kubectl %s: %w", strings.Join(args, " "), ctx.Err())
	}
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// runCronJob creates a Job from the CronJob, as an operator would with
// `kubectl create job --from=cronjob/NAME`, waits for it to finish and
// returns its pod's logs. A failed Job fails the test with those logs.
func (e *env) runCronJob(cron string) string {
	e.t.Helper()
	job := e.startCronJob(cron)
	return e.waitJob(job)
}

func (e *env) startCronJob(cron string) string {
	e.t.Helper()
	job := cron + "-e2e-" + randomHex(3)
	if out, err := e.kubectlCtx(e.t.Context(), time.Minute, e.ns, "create", "job", job, "--from=cronjob/"+cron); err != nil {
		e.t.Fatalf("create Job from CronJob %s: %v\n%s", cron, err, out)
	}
	return job
}

func (e *env) waitJob(job string) string {
	e.t.Helper()
	var final *batchv1.Job
	poll(e.t, "Job "+job, 5*time.Minute, func(ctx context.Context) (bool, string, error) {
		j, err := e.cs.BatchV1().Jobs(e.ns).Get(ctx, job, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		for _, c := range j.Status.Conditions {
			if c.Status == corev1.ConditionTrue && (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) {
				final = j
				return true, "", nil
			}
		}
		return false, fmt.Sprintf("active %d, failed %d; pods: %s; events: %s", j.Status.Active, j.Status.Failed, e.podSummary(ctx), e.events(ctx, job)), nil
	})
	logs := e.jobLogs(job)
	for _, c := range final.Status.Conditions {
		if c.Type == batchv1.JobFailed && c.Status == corev1.ConditionTrue {
			e.t.Fatalf("Job %s failed: %s: %s\nlogs:\n%s", job, c.Reason, c.Message, logs)
		}
	}
	if final.Status.Failed > 0 {
		e.t.Errorf("Job %s succeeded only after %d failed pods; logs:\n%s", job, final.Status.Failed, logs)
	}
	e.t.Logf("Job %s succeeded; logs:\n%s", job, logs)
	return logs
}

func (e *env) jobLogs(job string) string {
	out, err := e.kubectlCtx(e.t.Context(), time.Minute, e.ns, "logs", "--prefix", "--tail=-1", "-l", "batch.kubernetes.io/job-name="+job)
	if err != nil {
		return err.Error()
	}
	return out
}

// events lists the events about one object, for messages.
func (e *env) events(ctx context.Context, object string) string {
	evs, err := e.cs.CoreV1().Events(e.ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + object})
	if err != nil {
		return err.Error()
	}
	var parts []string
	for _, ev := range evs.Items {
		parts = append(parts, ev.Reason+": "+ev.Message)
	}
	return strings.Join(parts, "; ")
}

// podState is what a rollout or a crash would change about a pod.
type podState struct {
	uid      string
	restarts int32
}

// registryPods snapshots the registry pods by name.
func (e *env) registryPods(ctx context.Context) (map[string]podState, error) {
	pods, err := e.cs.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/name=berth,app.kubernetes.io/component=registry",
	})
	if err != nil {
		return nil, err
	}
	out := map[string]podState{}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		s := podState{uid: string(p.UID)}
		for _, c := range p.Status.ContainerStatuses {
			s.restarts += c.RestartCount
		}
		out[p.Name] = s
	}
	return out, nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// redisCLI runs redis-cli inside the Redis pod; REDISCLI_AUTH is set there.
func (e *env) redisCLI(ctx context.Context, args ...string) (string, error) {
	return e.kubectlCtx(ctx, 30*time.Second, e.ns, append([]string{"exec", "deploy/" + deploytest.RedisDeployment, "-c", "redis", "--", "redis-cli"}, args...)...)
}

// probePod starts an idle pod from the Redis image (the only client image
// a cluster without a registry is sure to have) for connection probes.
func (e *env) probePod(ns, name string, labels map[string]string) {
	e.t.Helper()
	ctx := e.t.Context()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken: ptr(false),
			EnableServiceLinks:           ptr(false),
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   ptr(true),
				RunAsUser:      ptr(int64(999)),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:            "probe",
				Image:           redisImage,
				ImagePullPolicy: corev1.PullIfNotPresent,
				// An idle process that needs nothing: redis-server on a
				// private port, nothing saved.
				Args: []string{"--port", "6390", "--save", "", "--appendonly", "no"},
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: ptr(false),
					ReadOnlyRootFilesystem:   ptr(true),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
				VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}},
			}},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
		},
	}
	if _, err := e.cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		e.t.Fatalf("create probe pod %s/%s: %v", ns, name, err)
	}
	poll(e.t, "probe pod "+name+" running", 2*time.Minute, func(ctx context.Context) (bool, string, error) {
		p, err := e.cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				return true, "", nil
			}
		}
		return false, fmt.Sprintf("phase %s", p.Status.Phase), nil
	})
}

// clientNamespace makes a second namespace for pods that play clients from
// elsewhere in the cluster; it has no NetworkPolicies of its own.
func (e *env) clientNamespace() string {
	e.t.Helper()
	ns := e.ns + "-c"
	_, err := e.cs.CoreV1().Namespaces().Create(e.t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name:   ns,
		Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted"},
	}}, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatalf("create namespace %s: %v", ns, err)
	}
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := e.cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil {
			e.t.Logf("delete namespace %s: %v", ns, err)
		}
	})
	return ns
}

// errNotConnected marks a probe whose TCP connection was refused, dropped or
// timed out.
var errNotConnected = errors.New("not connected")

// connect opens a TCP connection from a probe pod to host:port with
// redis-cli and reports whether the peer answered anything at all: PONG from
// Redis, or a protocol error from an HTTP server, both mean the connection
// was made. extra are more redis-cli arguments (a password).
func (e *env) connect(ctx context.Context, ns, pod, host string, port int, extra ...string) (string, error) {
	args := append([]string{"exec", pod, "--", "redis-cli", "-h", host, "-p", fmt.Sprint(port), "--no-auth-warning"}, extra...)
	args = append(args, "PING")
	out, err := e.kubectlCtx(ctx, 15*time.Second, ns, args...)
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return out, fmt.Errorf("%w: timed out (dropped?)", errNotConnected)
	case strings.Contains(out, "Could not connect"), strings.Contains(out, "Connection refused"), strings.Contains(out, "No route to host"):
		return out, fmt.Errorf("%w: %s", errNotConnected, strings.TrimSpace(out))
	case err != nil && !strings.Contains(out, "rror"):
		// kubectl itself failed (pod gone, API error): not an answer either way.
		return out, err
	}
	return strings.TrimSpace(out), nil
}

func (e *env) clusterIP(ctx context.Context, svc string) string {
	e.t.Helper()
	s, err := e.cs.CoreV1().Services(e.ns).Get(ctx, svc, metav1.GetOptions{})
	if err != nil {
		e.t.Fatalf("Service %s: %v", svc, err)
	}
	return s.Spec.ClusterIP
}
