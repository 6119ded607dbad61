package deploytest

import (
	"fmt"
	"net"
	"net/url"
	"path"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// Names of berth's rendered objects, shared by the static and e2e tests.
const (
	RegistryDeployment = "berth"
	RegistryService    = "berth"
	MetricsService     = "berth-metrics"
	RedisDeployment    = "berth-redis"
	RedisService       = "berth-redis"
	GCCronJob          = "berth-gc"
	PruneCronJob       = "berth-prune"
	ConfigMapPrefix    = "berth-config"
	PolicyMapPrefix    = "berth-policy"
	ConfigKey          = "config.yml"
	PVCName            = "berth-data"
)

// Config is a parsed berth config file, as generic YAML.
type Config map[string]any

// Get returns the value at a dotted path such as "http.addr".
func (c Config) Get(dotted string) (any, bool) {
	var cur any = map[string]any(c)
	for _, k := range strings.Split(dotted, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[k]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// String returns the string at a dotted path, or "".
func (c Config) String(dotted string) string {
	v, _ := c.Get(dotted)
	s, _ := v.(string)
	return s
}

// ParseConfig parses a berth config file.
func ParseConfig(data string) (Config, error) {
	var c Config
	if err := yaml.Unmarshal([]byte(data), &c); err != nil {
		return nil, fmt.Errorf("parse config: %w", err)
	}
	if c == nil {
		return nil, fmt.Errorf("parse config: empty document")
	}
	return c, nil
}

// BerthConfig returns the config file from the rendered berth-config
// ConfigMap.
func (s *Set) BerthConfig() (Config, error) {
	name, data, err := s.ConfigMapData(ConfigMapPrefix)
	if err != nil {
		return nil, err
	}
	raw, ok := data[ConfigKey]
	if !ok {
		return nil, fmt.Errorf("ConfigMap %s has no key %s", name, ConfigKey)
	}
	return ParseConfig(raw)
}

func (s *Set) pod(kind, name string) (PodTemplate, error) {
	o := s.Find(kind, name)
	if o == nil {
		return PodTemplate{}, fmt.Errorf("%s/%s is not rendered", kind, name)
	}
	switch v := o.Obj.(type) {
	case *appsv1.Deployment:
		return PodTemplate{o.String(), v.Spec.Template.ObjectMeta, v.Spec.Template.Spec}, nil
	case *batchv1.CronJob:
		t := v.Spec.JobTemplate.Spec.Template
		return PodTemplate{o.String(), t.ObjectMeta, t.Spec}, nil
	}
	return PodTemplate{}, fmt.Errorf("%s is not a workload", o)
}

func containerPort(p PodTemplate, name string) (int32, bool) {
	for _, c := range allContainers(&p.Spec) {
		for _, cp := range c.Ports {
			if cp.Name == name {
				return cp.ContainerPort, true
			}
		}
	}
	return 0, false
}

// CheckBerthWiring reports disagreements between berth's config file and the
// manifests that run it: listen addresses vs. container ports, the storage
// root vs. the volume mounts, the htpasswd path vs. the Secret mount, the
// Redis address vs. the Redis Service, and the CronJobs' file and URL
// arguments vs. what is mounted and served.
func CheckBerthWiring(s *Set) []error {
	var problems []error
	bad := func(format string, a ...any) { problems = append(problems, fmt.Errorf(format, a...)) }
	cfg, err := s.BerthConfig()
	if err != nil {
		return []error{err}
	}
	reg, err := s.pod("Deployment", RegistryDeployment)
	if err != nil {
		return []error{err}
	}
	gc, err := s.pod("CronJob", GCCronJob)
	if err != nil {
		return []error{err}
	}
	prune, err := s.pod("CronJob", PruneCronJob)
	if err != nil {
		return []error{err}
	}

	if want, ok := containerPort(reg, "registry"); !ok {
		bad("%s: no container port named registry", reg.Owner)
	} else if p := addrPort(cfg.String("http.addr")); p != want {
		bad("config http.addr %q does not listen on the registry containerPort %d", cfg.String("http.addr"), want)
	}
	if want, ok := containerPort(reg, "debug"); !ok {
		bad("%s: no container port named debug", reg.Owner)
	} else {
		a := cfg.String("berth.debug.addr")
		host, _, _ := net.SplitHostPort(a)
		if addrPort(a) != want || (host != "0.0.0.0" && host != "" && host != "::") {
			bad("config berth.debug.addr %q must listen on all interfaces on the debug containerPort %d, or probes and Prometheus cannot reach it", a, want)
		}
	}

	for _, p := range []PodTemplate{reg, gc} {
		ctr := p.Spec.Containers[0]
		cfgPath, ok := Flag(ctr.Args, "config")
		if !ok {
			bad("%s: no --config argument", p.Owner)
			continue
		}
		src, err := MountedFile(p, ctr.Name, cfgPath)
		if err != nil {
			bad("--config %s: %v", cfgPath, err)
		} else if src.Volume.ConfigMap == nil || !strings.HasPrefix(src.Volume.ConfigMap.Name, ConfigMapPrefix) || src.Key != ConfigKey {
			bad("%s: --config %s is not key %s of ConfigMap %s", p.Owner, cfgPath, ConfigKey, ConfigMapPrefix)
		}
		if root := cfg.String("storage.filesystem.rootdirectory"); root != "" {
			// Distribution keeps everything below <root>/docker: that path
			// must land at the top of the claim, not on the image's filesystem.
			src, err := MountedFile(p, ctr.Name, path.Join(root, "docker"))
			if err != nil {
				bad("storage root %s: %v", root, err)
			} else if src.Volume.PersistentVolumeClaim == nil || src.Volume.PersistentVolumeClaim.ClaimName != PVCName || src.Key != "docker" {
				bad("%s: storage root %s is not the root of PersistentVolumeClaim %s", p.Owner, root, PVCName)
			}
		}
		if hp := cfg.String("auth.htpasswd.path"); hp != "" {
			src, err := MountedFile(p, ctr.Name, hp)
			if err != nil {
				bad("htpasswd %s: %v", hp, err)
			} else if src.Volume.Secret == nil || src.Volume.Secret.SecretName != "berth-htpasswd" || src.Key != "htpasswd" {
				bad("%s: auth.htpasswd.path %s is not key htpasswd of Secret berth-htpasswd", p.Owner, hp)
			}
		}
	}
	if _, isS3 := cfg.Get("storage.s3"); isS3 {
		if s.Find("PersistentVolumeClaim", PVCName) != nil {
			bad("S3 storage but PersistentVolumeClaim %s is still rendered", PVCName)
		}
	}

	addrs, _ := cfg.Get("redis.addrs")
	list, _ := addrs.([]any)
	if len(list) == 0 {
		bad("config redis.addrs is empty: replicas would not share the cache nor see gc's lease")
	}
	for _, a := range list {
		as, _ := a.(string)
		host, port, err := net.SplitHostPort(as)
		if err != nil {
			bad("config redis.addrs entry %q: %v", as, err)
			continue
		}
		problems = append(problems, checkServiceTarget(s, "redis.addrs "+as, host, port, RedisDeployment)...)
	}

	pctr := prune.Spec.Containers[0]
	if u, ok := Flag(pctr.Args, "registry"); !ok {
		bad("%s: no --registry argument", prune.Owner)
	} else if pu, err := url.Parse(u); err != nil || pu.Host == "" {
		bad("%s: --registry %q is not a URL", prune.Owner, u)
	} else {
		problems = append(problems, checkServiceTarget(s, "prune --registry "+u, pu.Hostname(), pu.Port(), RegistryDeployment)...)
	}
	if pp, ok := Flag(pctr.Args, "policy"); !ok {
		bad("%s: no --policy argument", prune.Owner)
	} else if src, err := MountedFile(prune, pctr.Name, pp); err != nil {
		bad("--policy %s: %v", pp, err)
	} else if src.Volume.ConfigMap == nil || !strings.HasPrefix(src.Volume.ConfigMap.Name, PolicyMapPrefix) {
		bad("%s: --policy %s is not from ConfigMap %s", prune.Owner, pp, PolicyMapPrefix)
	} else if _, data, err := s.ConfigMapData(PolicyMapPrefix); err != nil {
		bad("%v", err)
	} else if _, ok := data[src.Key]; !ok {
		bad("%s: --policy %s reads key %s, which ConfigMap %s lacks", prune.Owner, pp, src.Key, PolicyMapPrefix)
	}
	return problems
}

// checkServiceTarget reports whether host:port names a rendered Service port
// whose pods belong to the Deployment wantDeployment. host may be a short
// name or name.namespace[.svc[.cluster.local]].
func checkServiceTarget(s *Set, what, host, port, wantDeployment string) []error {
	name := strings.SplitN(host, ".", 2)[0]
	so := s.Find("Service", name)
	if so == nil {
		return []error{fmt.Errorf("%s: no Service %s", what, name)}
	}
	svc := so.Obj.(*corev1.Service)
	n, err := strconv.Atoi(port)
	if err != nil {
		return []error{fmt.Errorf("%s: port %q is not a number", what, port)}
	}
	found := false
	for _, sp := range svc.Spec.Ports {
		found = found || int(sp.Port) == n
	}
	if !found {
		return []error{fmt.Errorf("%s: Service %s has no port %d", what, name, n)}
	}
	dep := s.Find("Deployment", wantDeployment)
	if dep == nil {
		return []error{fmt.Errorf("%s: Deployment %s is not rendered", what, wantDeployment)}
	}
	ok, err := Selects(&metav1.LabelSelector{MatchLabels: svc.Spec.Selector}, dep.Obj.(*appsv1.Deployment).Spec.Template.Labels)
	if err != nil || !ok {
		return []error{fmt.Errorf("%s: Service %s does not select the pods of Deployment %s", what, name, wantDeployment)}
	}
	return nil
}

func addrPort(addr string) int32 {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		return -1
	}
	return int32(n)
}
