package deploy_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/bcrypt"
	"sigs.k8s.io/yaml"

	"github.com/berth-registry/berth/internal/cli"
	"github.com/berth-registry/berth/internal/config"
	"github.com/berth-registry/berth/internal/deploytest"
	"github.com/berth-registry/berth/internal/retention"
)

// TestConfigLoadsWithBerthLoader loads each overlay's config.yml with
// berth's own loader and validator, in the environment its pods get: the
// Secret-backed variables set (dummy values), and the files the config names
// (the htpasswd Secret) present. TestOverlays already checked that those
// paths are the mounted ones.
func TestConfigLoadsWithBerthLoader(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range overlays {
		t.Run(dir, func(t *testing.T) {
			s := render(t)[dir]
			_, data, err := s.ConfigMapData(deploytest.ConfigMapPrefix)
			if err != nil {
				t.Fatal(err)
			}
			var doc map[string]any
			if err := yaml.Unmarshal([]byte(data[deploytest.ConfigKey]), &doc); err != nil {
				t.Fatal(err)
			}
			tmp := t.TempDir()
			htpasswd := filepath.Join(tmp, "htpasswd")
			if err := os.WriteFile(htpasswd, []byte("admin:"+string(hash)+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			doc["auth"].(map[string]any)["htpasswd"].(map[string]any)["path"] = htpasswd
			out, err := yaml.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(tmp, "config.yml")
			if err := os.WriteFile(file, out, 0o600); err != nil {
				t.Fatal(err)
			}
			reg := s.Find("Deployment", deploytest.RegistryDeployment)
			for _, p := range s.PodTemplates() {
				if p.Owner != reg.String() {
					continue
				}
				for _, e := range p.Spec.Containers[0].Env {
					if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
						t.Setenv(e.Name, "from-secret-"+strings.ToLower(e.Name))
					}
				}
			}
			cfg, err := config.Load(file, os.Environ())
			if err != nil {
				t.Fatalf("berth's loader rejects %s config.yml: %v", dir, err)
			}
			if err := cfg.Validate(); err != nil {
				t.Fatalf("berth's validator rejects %s config.yml: %v", dir, err)
			}
			if got := cfg.CacheType(); got != "redis" {
				t.Errorf("cache type %q, want redis (replicas must share descriptors)", got)
			}
			if !cfg.AuthEnabled() {
				t.Error("authentication is off")
			}
			if cfg.Distribution.HTTP.Secret != "from-secret-registry_http_secret" {
				t.Errorf("http.secret %q does not come from REGISTRY_HTTP_SECRET", cfg.Distribution.HTTP.Secret)
			}
			if cfg.Distribution.Redis.Options.Password != "from-secret-registry_redis_password" {
				t.Errorf("redis password does not come from REGISTRY_REDIS_PASSWORD")
			}
			if cfg.Berth.GC.Interval != 0 || cfg.Berth.Prune.Interval != 0 {
				t.Errorf("in-process gc/prune schedules must be off when CronJobs run them: gc %s, prune %s", cfg.Berth.GC.Interval, cfg.Berth.Prune.Interval)
			}
		})
	}
}

// TestPolicyParsesWithBerth parses the policy ConfigMap with berth's own
// policy parser, as the prune Job will.
func TestPolicyParsesWithBerth(t *testing.T) {
	for _, dir := range overlays {
		_, data, err := render(t)[dir].ConfigMapData(deploytest.PolicyMapPrefix)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := retention.ParsePolicy(dir+"/policy.yaml", []byte(data["policy.yaml"])); err != nil {
			t.Errorf("%s: %v", dir, err)
		}
	}
}

// TestCommandLinesParse runs every berth command line of the manifests
// through berth's own cobra tree: the subcommand exists, every flag is known
// and takes the value given, and positional arguments are accepted.
func TestCommandLinesParse(t *testing.T) {
	for _, dir := range overlays {
		for _, p := range render(t)[dir].PodTemplates() {
			for _, c := range p.Spec.Containers {
				if !slices.Equal(c.Command, []string{"/berth"}) {
					continue
				}
				t.Run(dir+"/"+p.Owner, func(t *testing.T) {
					root := cli.NewRoot()
					cmd, rest, err := root.Find(c.Args)
					if err != nil || cmd == root {
						t.Fatalf("berth %s: unknown command (%v)", strings.Join(c.Args, " "), err)
					}
					checkParses(t, cmd, rest, c.Args)
				})
			}
		}
	}
}

func checkParses(t *testing.T, cmd *cobra.Command, rest, all []string) {
	t.Helper()
	if err := cmd.ParseFlags(rest); err != nil {
		t.Fatalf("berth %s: %v", strings.Join(all, " "), err)
	}
	if err := cmd.ValidateArgs(cmd.Flags().Args()); err != nil {
		t.Fatalf("berth %s: %v", strings.Join(all, " "), err)
	}
	if err := cmd.ValidateRequiredFlags(); err != nil {
		t.Fatalf("berth %s: %v", strings.Join(all, " "), err)
	}
}
