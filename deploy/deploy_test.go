// Static tests of the Kubernetes deployment: they render every overlay with
// the Kustomize API and check what a cluster would reject or silently
// misbehave on. No cluster needed; test/e2e runs the same overlay for real.
package deploy_test

import (
	"errors"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/berth-registry/berth/internal/deploytest"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
)

var overlays = []string{"overlays/local", "overlays/production", "overlays/production-s3"}

var (
	renderOnce sync.Once
	rendered   map[string]*deploytest.Set
	renderErr  error
)

// render builds every overlay once per test binary; rendering is the slow
// part and every test reads the same result.
func render(t *testing.T) map[string]*deploytest.Set {
	t.Helper()
	renderOnce.Do(func() {
		rendered = map[string]*deploytest.Set{}
		for _, dir := range append([]string{"base"}, overlays...) {
			s, err := deploytest.RenderDir(dir)
			if err != nil {
				renderErr = errors.Join(renderErr, err)
				continue
			}
			rendered[dir] = s
		}
	})
	if renderErr != nil {
		t.Fatalf("render: %v", renderErr)
	}
	return rendered
}

func userSecrets(t *testing.T) deploytest.UserSecrets {
	t.Helper()
	md, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatalf("read the Secrets table: %v", err)
	}
	us := deploytest.ParseSecretsTable(string(md))
	if len(us) == 0 {
		t.Fatal("deploy/README.md documents no Secrets")
	}
	return us
}

func report(t *testing.T, what string, problems []error) {
	t.Helper()
	for _, p := range problems {
		t.Errorf("%s: %v", what, p)
	}
}

func TestOverlays(t *testing.T) {
	sets := render(t)
	us := userSecrets(t)
	for _, dir := range append([]string{"base"}, overlays...) {
		s := sets[dir]
		t.Run(dir, func(t *testing.T) {
			psa, err := deploytest.CheckRestricted(s.PodTemplates())
			if err != nil {
				t.Fatal(err)
			}
			report(t, "pod security", psa)
			report(t, "references", deploytest.CheckReferences(s, us))
			report(t, "ports", deploytest.CheckPorts(s))
			report(t, "selectors", deploytest.CheckSelectors(s))
			if dir != "base" { // the base names its image "berth"; overlays pin it
				report(t, "workloads", deploytest.CheckWorkloads(s))
			}
			report(t, "berth wiring", deploytest.CheckBerthWiring(s))
		})
	}
}

func TestDocumentedSecretsAreUsed(t *testing.T) {
	sets := render(t)
	var all []*deploytest.Set
	for _, dir := range overlays {
		all = append(all, sets[dir])
	}
	report(t, "deploy/README.md", deploytest.CheckDocumentedSecretsUsed(all, userSecrets(t)))
}

func TestNoSecretsRendered(t *testing.T) {
	for dir, s := range render(t) {
		for _, o := range s.Kinds("Secret") {
			t.Errorf("%s renders %s: Secrets are created by users, never committed", dir, o)
		}
	}
}

// TestNetworkFlows evaluates the rendered NetworkPolicies for the flows the
// deployment needs and the ones it must refuse.
func TestNetworkFlows(t *testing.T) {
	const ns = "berth"
	type flow struct {
		name     string
		from, to string // a pod owner or one of the synthetic endpoints below
		port     int32
		proto    corev1.Protocol
		want     bool
		overlays []string // nil: every overlay
	}
	flows := []flow{
		{"client reaches the registry API", "external", "Deployment/berth", 5000, "", true, nil},
		{"a client pod in another namespace reaches the registry API", "stranger@other", "Deployment/berth", 5000, "", true, nil},
		{"an unlisted pod of berth's namespace has no egress", "stranger", "Deployment/berth", 5000, "", false, nil},
		{"a pod of another namespace cannot reach Redis", "stranger@other", "Deployment/berth-redis", 6379, "", false, nil},
		{"a pod of another namespace cannot scrape", "stranger@other", "Deployment/berth", 5001, "", false, nil},
		{"nobody outside reaches the debug port", "external", "Deployment/berth", 5001, "", false, nil},
		{"a random pod cannot scrape", "stranger", "Deployment/berth", 5001, "", false, nil},
		{"prometheus namespace scrapes", "prometheus@monitoring", "Deployment/berth", 5001, "", true, nil},
		{"prometheus pod elsewhere scrapes", "prometheus-pod@other", "Deployment/berth", 5001, "", true, nil},
		{"prometheus cannot reach Redis", "prometheus@monitoring", "Deployment/berth-redis", 6379, "", false, nil},
		{"registry reaches Redis", "Deployment/berth", "Deployment/berth-redis", 6379, "", true, nil},
		{"gc reaches Redis", "CronJob/berth-gc", "Deployment/berth-redis", 6379, "", true, nil},
		{"prune reaches the registry", "CronJob/berth-prune", "Deployment/berth", 5000, "", true, nil},
		{"prune cannot reach Redis", "CronJob/berth-prune", "Deployment/berth-redis", 6379, "", false, nil},
		{"prune cannot reach the debug port", "CronJob/berth-prune", "Deployment/berth", 5001, "", false, nil},
		{"a pod without berth labels cannot reach Redis", "stranger", "Deployment/berth-redis", 6379, "", false, nil},
		{"outside cannot reach Redis", "external", "Deployment/berth-redis", 6379, "", false, nil},
		{"registry cannot reach Redis on another port", "Deployment/berth", "Deployment/berth-redis", 6380, "", false, nil},
		{"Redis cannot call the registry", "Deployment/berth-redis", "Deployment/berth", 5000, "", false, nil},
		{"gc needs no registry API", "CronJob/berth-gc", "Deployment/berth", 5000, "", false, nil},
		{"registry resolves names", "Deployment/berth", "kube-dns", 53, corev1.ProtocolUDP, true, nil},
		{"prune resolves names over TCP", "CronJob/berth-prune", "kube-dns", 53, corev1.ProtocolTCP, true, nil},
		{"Redis resolves names", "Deployment/berth-redis", "kube-dns", 53, corev1.ProtocolUDP, true, nil},
		{"registry has no internet", "Deployment/berth", "external", 443, "", false, []string{"base", "overlays/local", "overlays/production"}},
		{"registry reaches S3", "Deployment/berth", "external", 443, "", true, []string{"overlays/production-s3"}},
		{"gc reaches S3", "CronJob/berth-gc", "external", 443, "", true, []string{"overlays/production-s3"}},
		{"prune has no internet even with S3", "CronJob/berth-prune", "external", 443, "", false, nil},
		{"Redis has no internet", "Deployment/berth-redis", "external", 443, "", false, nil},
	}
	sets := render(t)
	for _, dir := range append([]string{"base"}, overlays...) {
		s := sets[dir]
		pods := map[string]deploytest.Endpoint{}
		for _, p := range s.PodTemplates() {
			pods[p.Owner] = deploytest.PodEndpoint(p, ns)
		}
		pods["external"] = deploytest.Endpoint{External: netip.MustParseAddr("203.0.113.7")}
		pods["stranger"] = deploytest.Endpoint{Namespace: ns, NamespaceLabels: deploytest.Labels("kubernetes.io/metadata.name", ns), Labels: deploytest.Labels("app", "debug-shell")}
		pods["stranger@other"] = deploytest.Endpoint{Namespace: "apps", NamespaceLabels: deploytest.Labels("kubernetes.io/metadata.name", "apps"), Labels: deploytest.Labels("app", "ci-runner")}
		pods["prometheus@monitoring"] = deploytest.Endpoint{Namespace: "monitoring", NamespaceLabels: deploytest.Labels("kubernetes.io/metadata.name", "monitoring"), Labels: deploytest.Labels("app", "prometheus-server")}
		pods["prometheus-pod@other"] = deploytest.Endpoint{Namespace: "obs", NamespaceLabels: deploytest.Labels("kubernetes.io/metadata.name", "obs"), Labels: deploytest.Labels("app.kubernetes.io/name", "prometheus")}
		pods["kube-dns"] = deploytest.Endpoint{Namespace: "kube-system", NamespaceLabels: deploytest.Labels("kubernetes.io/metadata.name", "kube-system"), Labels: deploytest.Labels("k8s-app", "kube-dns")}
		for _, f := range flows {
			if f.overlays != nil && !slices.Contains(f.overlays, dir) {
				continue
			}
			from, ok1 := pods[f.from]
			to, ok2 := pods[f.to]
			if !ok1 || !ok2 {
				t.Errorf("%s: %s: endpoint %q or %q not rendered", dir, f.name, f.from, f.to)
				continue
			}
			got, err := deploytest.Allowed(s.NetworkPolicies(), ns, deploytest.Flow{From: from, To: to, Port: f.port, Protocol: f.proto})
			if err != nil {
				t.Errorf("%s: %s: %v", dir, f.name, err)
			} else if got != f.want {
				t.Errorf("%s: %s (%s → %s:%d): allowed=%v, want %v", dir, f.name, f.from, f.to, f.port, got, f.want)
			}
		}
	}
}

func deployment(t *testing.T, s *deploytest.Set, name string) *appsv1.Deployment {
	t.Helper()
	o := s.Find("Deployment", name)
	if o == nil {
		t.Fatalf("%s: Deployment %s not rendered", s.Dir, name)
	}
	return o.Obj.(*appsv1.Deployment)
}

func cronJob(t *testing.T, s *deploytest.Set, name string) *batchv1.CronJob {
	t.Helper()
	o := s.Find("CronJob", name)
	if o == nil {
		t.Fatalf("%s: CronJob %s not rendered", s.Dir, name)
	}
	return o.Obj.(*batchv1.CronJob)
}

func TestRegistryDeployment(t *testing.T) {
	for _, dir := range overlays {
		s := render(t)[dir]
		d := deployment(t, s, deploytest.RegistryDeployment)
		if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
			t.Errorf("%s: registry replicas %v, want at least 2", dir, d.Spec.Replicas)
		}
		ps := d.Spec.Template.Spec
		if ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken {
			t.Errorf("%s: the registry must not get a service-account token", dir)
		}
		c := ps.Containers[0]
		if want := []string{"serve", "--config", "/etc/berth/config.yml"}; !reflect.DeepEqual(c.Args, want) {
			t.Errorf("%s: registry args %q, want %q", dir, c.Args, want)
		}
		for _, probe := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe} {
			if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Port.StrVal != "debug" {
				t.Errorf("%s: readiness and liveness must be HTTP probes on the debug port, got %+v", dir, probe)
			}
		}
		if c.ReadinessProbe != nil && c.ReadinessProbe.HTTPGet != nil && c.ReadinessProbe.HTTPGet.Path != "/readyz" {
			t.Errorf("%s: readiness path %s, want /readyz", dir, c.ReadinessProbe.HTTPGet.Path)
		}
		if c.LivenessProbe != nil && c.LivenessProbe.HTTPGet != nil && c.LivenessProbe.HTTPGet.Path != "/healthz" {
			t.Errorf("%s: liveness path %s, want /healthz", dir, c.LivenessProbe.HTTPGet.Path)
		}
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if _, ok := c.Resources.Requests[r]; !ok {
				t.Errorf("%s: registry has no %s request", dir, r)
			}
			if _, ok := c.Resources.Limits[r]; !ok {
				t.Errorf("%s: registry has no %s limit", dir, r)
			}
		}
		for _, env := range []string{"REGISTRY_HTTP_SECRET", "REGISTRY_REDIS_PASSWORD"} {
			if !hasSecretEnv(c, env) {
				t.Errorf("%s: registry env %s must come from a Secret", dir, env)
			}
		}
	}
}

func hasSecretEnv(c corev1.Container, name string) bool {
	for _, e := range c.Env {
		if e.Name == name && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			return true
		}
	}
	return false
}

func TestRedis(t *testing.T) {
	for _, dir := range overlays {
		s := render(t)[dir]
		d := deployment(t, s, deploytest.RedisDeployment)
		c := d.Spec.Template.Spec.Containers[0]
		if c.Image != "redis:7.0.15" {
			t.Errorf("%s: redis image %s, want redis:7.0.15", dir, c.Image)
		}
		args := strings.Join(c.Args, " ")
		for _, want := range []string{"--maxmemory 256mb", "--maxmemory-policy allkeys-lru", "--appendonly no", "--requirepass $(REDIS_PASSWORD)"} {
			if !strings.Contains(args, want) {
				t.Errorf("%s: redis args %q lack %q", dir, args, want)
			}
		}
		if i := slices.Index(c.Args, "--save"); i < 0 || i+1 >= len(c.Args) || c.Args[i+1] != "" {
			t.Errorf("%s: redis must run with --save \"\" (no RDB snapshots): %q", dir, c.Args)
		}
		if !hasSecretEnv(c, "REDIS_PASSWORD") {
			t.Errorf("%s: REDIS_PASSWORD must come from a Secret", dir)
		}
		sc := d.Spec.Template.Spec.SecurityContext
		if sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != 999 {
			t.Errorf("%s: redis must run as uid 999 (the image's redis user)", dir)
		}
	}
}

func TestCronJobs(t *testing.T) {
	for _, dir := range overlays {
		s := render(t)[dir]
		for _, name := range []string{deploytest.GCCronJob, deploytest.PruneCronJob} {
			cj := cronJob(t, s, name)
			sp := cj.Spec
			if sp.ConcurrencyPolicy != batchv1.ForbidConcurrent {
				t.Errorf("%s %s: concurrencyPolicy %q, want Forbid", dir, name, sp.ConcurrencyPolicy)
			}
			if sp.StartingDeadlineSeconds == nil {
				t.Errorf("%s %s: no startingDeadlineSeconds: a long controller outage would skip runs silently or pile them up", dir, name)
			}
			if sp.SuccessfulJobsHistoryLimit == nil || sp.FailedJobsHistoryLimit == nil || *sp.FailedJobsHistoryLimit < 1 {
				t.Errorf("%s %s: history limits must be set and keep failed Jobs for alerting", dir, name)
			}
			if sp.Suspend != nil && *sp.Suspend {
				t.Errorf("%s %s: suspended", dir, name)
			}
			js := sp.JobTemplate.Spec
			if js.BackoffLimit == nil || *js.BackoffLimit > 3 {
				t.Errorf("%s %s: backoffLimit %v, want a small explicit value", dir, name, js.BackoffLimit)
			}
			if js.Template.Spec.RestartPolicy != corev1.RestartPolicyNever {
				t.Errorf("%s %s: restartPolicy %q, want Never (podFailurePolicy needs it)", dir, name, js.Template.Spec.RestartPolicy)
			}
		}
		gc := cronJob(t, s, deploytest.GCCronJob).Spec.JobTemplate.Spec.Template.Spec.Containers[0]
		if gc.Args[0] != "gc" {
			t.Errorf("%s: gc CronJob runs %q", dir, gc.Args)
		}
		pr := cronJob(t, s, deploytest.PruneCronJob).Spec.JobTemplate.Spec.Template.Spec.Containers[0]
		if pr.Args[0] != "prune" {
			t.Errorf("%s: prune CronJob runs %q", dir, pr.Args)
		}
		for _, env := range []string{"REGISTRY_USER", "REGISTRY_PASSWORD"} {
			if !hasSecretEnv(pr, env) {
				t.Errorf("%s: prune env %s must come from a Secret", dir, env)
			}
		}
	}
}

func TestImages(t *testing.T) {
	want := map[string]string{
		"overlays/local":         "localhost/berth:e2e",
		"overlays/production":    "registry.example.com/platform/berth:0.1.0",
		"overlays/production-s3": "registry.example.com/platform/berth:0.1.0",
	}
	for dir, img := range want {
		s := render(t)[dir]
		for _, p := range s.PodTemplates() {
			for _, c := range p.Spec.Containers {
				if c.Name == "redis" {
					continue
				}
				if c.Image != img {
					t.Errorf("%s: %s container %s runs %s, want %s", dir, p.Owner, c.Name, c.Image, img)
				}
			}
		}
	}
}

// TestMetricsNotExposed: the debug port must stay inside the cluster.
func TestMetricsNotExposed(t *testing.T) {
	for _, dir := range overlays {
		s := render(t)[dir]
		for _, o := range s.Kinds("Service") {
			svc := o.Obj.(*corev1.Service)
			exposed := svc.Spec.Type == corev1.ServiceTypeLoadBalancer || svc.Spec.Type == corev1.ServiceTypeNodePort
			for _, p := range svc.Spec.Ports {
				if p.Port == 5001 || p.TargetPort.StrVal == "debug" || p.TargetPort.IntValue() == 5001 {
					if exposed || o.Name != deploytest.MetricsService {
						t.Errorf("%s: %s exposes the debug port (type %s)", dir, o, svc.Spec.Type)
					}
				}
			}
		}
		for _, o := range s.Kinds("Ingress") {
			for _, r := range o.Obj.(*networkingv1.Ingress).Spec.Rules {
				for _, p := range r.HTTP.Paths {
					b := p.Backend.Service
					if b == nil || b.Name != deploytest.RegistryService || b.Port.Name != "registry" {
						t.Errorf("%s: %s routes %s to %+v; only berth:registry may be routed", dir, o, p.Path, b)
					}
				}
			}
		}
	}
}

func TestProduction(t *testing.T) {
	for _, dir := range []string{"overlays/production", "overlays/production-s3"} {
		s := render(t)[dir]
		d := deployment(t, s, deploytest.RegistryDeployment)
		spread := false
		for _, c := range d.Spec.Template.Spec.TopologySpreadConstraints {
			spread = spread || (c.TopologyKey == "kubernetes.io/hostname" && c.WhenUnsatisfiable == corev1.DoNotSchedule)
		}
		if !spread {
			t.Errorf("%s: registry replicas are not forced onto different nodes", dir)
		}
		pdbs := s.Kinds("PodDisruptionBudget")
		if len(pdbs) != 1 {
			t.Fatalf("%s: want one PodDisruptionBudget, got %d", dir, len(pdbs))
		}
		pdb := pdbs[0].Obj.(*policyv1.PodDisruptionBudget)
		if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() >= int(*d.Spec.Replicas) {
			t.Errorf("%s: PodDisruptionBudget must keep a replica up", dir)
		}
		ings := s.Kinds("Ingress")
		if len(ings) != 1 {
			t.Fatalf("%s: want one Ingress, got %d", dir, len(ings))
		}
		ing := ings[0].Obj.(*networkingv1.Ingress)
		if len(ing.Spec.TLS) == 0 || ing.Annotations["cert-manager.io/cluster-issuer"] == "" {
			t.Errorf("%s: Ingress needs TLS through cert-manager", dir)
		}
		if ing.Annotations["nginx.ingress.kubernetes.io/proxy-body-size"] != "0" {
			t.Errorf("%s: Ingress limits the body size: layer uploads would fail with 413", dir)
		}
		rules := s.Find("PrometheusRule", "berth")
		if rules == nil || s.Find("ServiceMonitor", "berth") == nil {
			t.Fatalf("%s: ServiceMonitor and PrometheusRule berth must be rendered", dir)
		}
		checkAlerts(t, dir, rules.Obj.(*monitoringv1.PrometheusRule))
	}
	if render(t)["overlays/production-s3"].Find("PersistentVolumeClaim", deploytest.PVCName) != nil {
		t.Error("production-s3 still renders the PVC")
	}
}

// checkAlerts: each failure the issue names has an alert on the metric
// berth exports for it.
func checkAlerts(t *testing.T, dir string, pr *monitoringv1.PrometheusRule) {
	exprs := map[string]string{}
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("%s: rule without alert name in group %s", dir, g.Name)
				continue
			}
			if _, dup := exprs[r.Alert]; dup {
				t.Errorf("%s: alert %s defined twice", dir, r.Alert)
			}
			exprs[r.Alert] = r.Expr.String()
			if r.Annotations["summary"] == "" || r.Labels["severity"] == "" {
				t.Errorf("%s: alert %s needs a summary and a severity", dir, r.Alert)
			}
			if strings.Count(r.Expr.String(), "(") != strings.Count(r.Expr.String(), ")") {
				t.Errorf("%s: alert %s: unbalanced parentheses", dir, r.Alert)
			}
		}
	}
	want := map[string][]string{
		"BerthRegistryHigh5xxRate": {`berth_http_requests_total`, `code=~"5.."`},
		"BerthGCFailed":            {`berth_gc_runs_total`, `result="failure"`},
		"BerthGCJobFailed":         {`kube_job_status_failed`, `berth-gc`},
		"BerthGCNotRun":            {`berth_gc_last_success_timestamp_seconds`, `2 * 86400`},
		"BerthPruneFailed":         {`berth_prune_runs_total`, `kube_job_status_failed`},
		"BerthRedisUnreachable":    {`berth_redis_up`, `== 0`},
		"BerthStorageErrors":       {`berth_storage_errors_total`},
	}
	for alert, parts := range want {
		e, ok := exprs[alert]
		if !ok {
			t.Errorf("%s: alert %s missing", dir, alert)
			continue
		}
		for _, p := range parts {
			if !strings.Contains(e, p) {
				t.Errorf("%s: alert %s expression lacks %s: %s", dir, alert, p, e)
			}
		}
	}
}

// TestConfigsInStep: the overlays that replace config.yml may differ from
// the base only where they mean to, so a fix in one cannot miss the others.
func TestConfigsInStep(t *testing.T) {
	sets := render(t)
	base, err := sets["base"].BerthConfig()
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[string][]string{
		"overlays/local":         {"berth.gc.blobgrace"},
		"overlays/production":    nil,
		"overlays/production-s3": {"storage.filesystem", "storage.s3", "storage.redirect"},
	}
	for dir, keys := range allowed {
		c, err := sets[dir].BerthConfig()
		if err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		for _, d := range diffPaths("", map[string]any(base), map[string]any(c)) {
			if !slices.Contains(keys, d) {
				t.Errorf("%s: config.yml differs from base/config.yml at %s", dir, d)
			}
		}
	}
}

func diffPaths(prefix string, a, b any) []string {
	am, aok := a.(map[string]any)
	bm, bok := b.(map[string]any)
	if !aok || !bok {
		if reflect.DeepEqual(a, b) {
			return nil
		}
		return []string{strings.TrimPrefix(prefix, ".")}
	}
	var out []string
	for k := range am {
		out = append(out, diffPaths(prefix+"."+k, am[k], bm[k])...)
	}
	for k := range bm {
		if _, ok := am[k]; !ok {
			out = append(out, strings.TrimPrefix(prefix+"."+k, "."))
		}
	}
	return out
}
