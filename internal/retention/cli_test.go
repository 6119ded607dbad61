package retention

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

type cliResult struct {
	stdout string
	err    error
}

// runCLI runs `berth prune` with args; stdin feeds --password-stdin.
func runCLI(t *testing.T, stdin string, args ...string) cliResult {
	t.Helper()
	cmd := NewPruneCommand()
	var out, errOut bytes.Buffer
	cmd.SetArgs(args)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	err := cmd.Execute()
	return cliResult{stdout: out.String(), err: err}
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ec interface{ ExitCode() int }
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	return -1
}

// isolateCredentials keeps the developer's own Docker config and
// REGISTRY_* variables out of the test.
func isolateCredentials(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("DOCKER_CONFIG", dir)
	// Unset, not empty: berth's embedded Distribution warns about every
	// REGISTRY_* variable it sees.
	for _, k := range []string{"REGISTRY_USER", "REGISTRY_PASSWORD", "REGISTRY_URL"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	return dir
}

const cliPolicy = "rules:\n- repositories: [app]\n  keep: {latest: 1}\nsettings: {maxDeleteShare: 1}\n"

func TestCLICredentialSources(t *testing.T) {
	dockerDir := isolateCredentials(t)
	reg := startBerthWithUser(t, "ci", "s3cret")
	policy := writePolicy(t, cliPolicy)

	t.Run("anonymous is refused by the registry", func(t *testing.T) {
		seedAged(t, reg, "app", 2)
		res := runCLI(t, "", "--registry", reg.URL, "--policy", policy)
		if exitCode(res.err) != ExitFailed || !strings.Contains(res.err.Error(), "401") && !strings.Contains(strings.ToLower(res.err.Error()), "unauthorized") {
			t.Fatalf("want exit 1 with an auth error, got %d %v", exitCode(res.err), res.err)
		}
	})
	t.Run("--username with --password-stdin, JSON output", func(t *testing.T) {
		seedAged(t, reg, "app", 2)
		res := runCLI(t, "s3cret\n", "--registry", reg.URL, "--policy", policy, "--username", "ci", "--password-stdin", "-o", "json")
		if res.err != nil {
			t.Fatalf("prune: %v\n%s", res.err, res.stdout)
		}
		var doc struct {
			Outcome      string `json:"outcome"`
			Repositories []struct {
				Name      string `json:"name"`
				PushTimes string `json:"push_times"`
				Tags      []struct {
					Tag, Digest, Action, Clause, Result string
					Pushed                              *string
				} `json:"tags"`
			} `json:"repositories"`
			Totals struct {
				Tags, Keep, Delete, Deleted, Failed int
			} `json:"totals"`
		}
		if err := json.Unmarshal([]byte(res.stdout), &doc); err != nil {
			t.Fatalf("JSON output: %v\n%s", err, res.stdout)
		}
		if doc.Outcome != "ok" || doc.Totals.Deleted != 1 || doc.Totals.Tags != 2 || len(doc.Repositories) != 1 {
			t.Fatalf("JSON report: %+v", doc)
		}
		for _, tg := range doc.Repositories[0].Tags {
			if !strings.HasPrefix(tg.Digest, "sha256:") || tg.Pushed == nil || tg.Clause == "" {
				t.Errorf("tag entry incomplete: %+v", tg)
			}
			if tg.Tag == "t1" && (tg.Action != "delete" || tg.Result != "deleted") {
				t.Errorf("t1: %+v", tg)
			}
		}
	})
	t.Run("REGISTRY_USER and REGISTRY_PASSWORD", func(t *testing.T) {
		seedAged(t, reg, "app", 2)
		t.Setenv("REGISTRY_USER", "ci")
		t.Setenv("REGISTRY_PASSWORD", "s3cret")
		res := runCLI(t, "", "--registry", reg.URL, "--policy", policy)
		if res.err != nil || !slices.Equal(reg.tags("app"), []string{"t0"}) {
			t.Fatalf("prune with env credentials: %v\n%s", res.err, res.stdout)
		}
	})
	t.Run("docker config", func(t *testing.T) {
		seedAged(t, reg, "app", 2)
		auth := base64.StdEncoding.EncodeToString([]byte("ci:s3cret"))
		cfg := `{"auths":{"` + reg.Host + `":{"auth":"` + auth + `"}}}`
		if err := os.WriteFile(filepath.Join(dockerDir, "config.json"), []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(filepath.Join(dockerDir, "config.json"))
		res := runCLI(t, "", "--registry", reg.URL, "--policy", policy, "--dry-run")
		if res.err != nil || !strings.Contains(res.stdout, "dry run") {
			t.Fatalf("prune with docker config: %v\n%s", res.err, res.stdout)
		}
	})
}

func TestCLITextOutput(t *testing.T) {
	isolateCredentials(t)
	reg := startBerth(t)
	seedAged(t, reg, "app", 3)
	reg.push("other", "x", dockerImage(t))
	res := runCLI(t, "", "--registry", reg.URL, "--policy", writePolicy(t, cliPolicy), "--dry-run")
	if res.err != nil {
		t.Fatal(res.err)
	}
	t.Logf("text report:\n%s", res.stdout)
	for _, want := range []string{
		"mode:     dry run",
		"app — rule 1 (line 2), push times: berth — keep 1, delete 2",
		"keep.latest 1 (#1 newest)",
		"delete: no keep clause protects it",
		"dry-run",
		"untouched (no rule matches): 1 repository",
		"totals: 1 repository, 3 tags: keep 1, delete 2",
		"outcome:  dry-run",
	} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("text output lacks %q:\n%s", want, res.stdout)
		}
	}
	if got := reg.tags("app"); len(got) != 3 {
		t.Fatalf("dry run deleted: %v", got)
	}
}

func TestCLIUsageErrors(t *testing.T) {
	isolateCredentials(t)
	good := writePolicy(t, cliPolicy)
	bad := writePolicy(t, "rules:\n- repositories: [app]\n  keep: {latest: ten}\n")
	cases := []struct {
		name  string
		stdin string
		args  []string
		want  string
	}{
		{"no registry", "", []string{"--policy", good}, "--registry is required"},
		{"no policy", "", []string{"--registry", "http://127.0.0.1:1"}, "--policy is required"},
		{"bad policy", "", []string{"--registry", "http://127.0.0.1:1", "--policy", bad}, bad + ":3:"},
		{"missing policy file", "", []string{"--registry", "http://127.0.0.1:1", "--policy", bad + ".nope"}, "cannot read policy"},
		{"registry without scheme", "", []string{"--registry", "127.0.0.1:5000", "--policy", good}, "needs a scheme"},
		{"bad output", "", []string{"--registry", "http://127.0.0.1:1", "--policy", good, "-o", "yaml"}, "want text or json"},
		{"username without password", "", []string{"--registry", "http://127.0.0.1:1", "--policy", good, "--username", "u"}, "--password-stdin"},
		{"password-stdin without username", "x", []string{"--registry", "http://127.0.0.1:1", "--policy", good, "--password-stdin"}, "needs --username"},
		{"empty password", "\n", []string{"--registry", "http://127.0.0.1:1", "--policy", good, "--username", "u", "--password-stdin"}, "empty"},
		{"zero concurrency", "", []string{"--registry", "http://127.0.0.1:1", "--policy", good, "--concurrency", "0"}, "concurrency"},
		{"missing CA file", "", []string{"--registry", "https://127.0.0.1:1", "--policy", good, "--ca-file", "/nonexistent.pem"}, "CA file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := runCLI(t, c.stdin, c.args...)
			if exitCode(res.err) != ExitUsage || !errors.Is(res.err, ErrUsage) {
				t.Fatalf("want exit 2, got %d: %v", exitCode(res.err), res.err)
			}
			if !strings.Contains(res.err.Error(), c.want) {
				t.Errorf("error %q does not mention %q", res.err, c.want)
			}
		})
	}
}

// The seed cleaner's config (`repo: N`, 10 for every other repository) runs
// unchanged.
func TestCLISeedFlatPolicy(t *testing.T) {
	isolateCredentials(t)
	reg := startBerth(t)
	seedAged(t, reg, "listed", 4)
	seedAged(t, reg, "other/app", 12)
	flat := writePolicy(t, "listed: 1\n")
	res := runCLI(t, "", "--registry", reg.URL, "--policy", flat)
	if res.err != nil {
		t.Fatalf("prune: %v\n%s", res.err, res.stdout)
	}
	if got := reg.tags("listed"); !slices.Equal(got, []string{"t0"}) {
		t.Errorf("listed kept %v, want t0", got)
	}
	if got := reg.tags("other/app"); len(got) != 10 || slices.Contains(got, "t10") || slices.Contains(got, "t11") {
		t.Errorf("other/app kept %v, want the 10 newest", got)
	}
	if !strings.Contains(res.stdout, "(flat format)") {
		t.Errorf("report does not name the flat format:\n%s", res.stdout)
	}
}
