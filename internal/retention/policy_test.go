package retention

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestPatternMatch(t *testing.T) {
	cases := []struct {
		pattern string
		yes     []string
		no      []string
	}{
		{"team-a/**", []string{"team-a", "team-a/app", "team-a/x/y/z"}, []string{"team-b/app", "team-ab/app"}},
		{"**", []string{"a", "a/b", "a/b/c"}, nil},
		{"team-*/app", []string{"team-a/app", "team-xyz/app"}, []string{"team-a/b/app", "team-a/application"}},
		{"**/cache", []string{"cache", "a/cache", "a/b/cache"}, []string{"a/cache/x", "a/cached"}},
		{"a/**/z", []string{"a/z", "a/b/z", "a/b/c/z"}, []string{"a/b/c", "b/z"}},
		{"app", []string{"app"}, []string{"app/x", "x/app", "apps"}},
		{"re:^legacy/.*$", []string{"legacy/a", "legacy/a/b"}, []string{"x/legacy/a", "legacy"}},
		{"re:^release-", []string{"release-1", "release-"}, []string{"pre-release-1"}},
		{"re:rc", []string{"v1-rc1", "rc"}, []string{"v1"}},
		{"v*", []string{"v1", "v1.2.3", "v"}, []string{"1.0", "latest"}},
		{"[0-9]*", []string{"1", "2024-01"}, []string{"v1"}},
	}
	for _, c := range cases {
		p, err := ParsePattern(c.pattern)
		if err != nil {
			t.Fatalf("ParsePattern(%q): %v", c.pattern, err)
		}
		for _, s := range c.yes {
			if !p.Match(s) {
				t.Errorf("%q should match %q", c.pattern, s)
			}
		}
		for _, s := range c.no {
			if p.Match(s) {
				t.Errorf("%q should not match %q", c.pattern, s)
			}
		}
	}
}

func TestParsePatternRejects(t *testing.T) {
	for _, s := range []string{"", "re:", "re:(", "a[", "team//x", "a/[-]"} {
		if _, err := ParsePattern(s); err == nil {
			t.Errorf("ParsePattern(%q) accepted a bad pattern", s)
		}
	}
}

const fullPolicy = `version: 1
rules:
  - repositories: ["team-a/**", "re:^legacy/.*$"]
    keep:
      latest: 10
      within: 30d
      tags: ["latest", "v*", "re:^release-"]
      semver: 3
    delete: ["*"]
    allowDeleteAll: true
  - repositories: ["**"]
    keep:
      within: 720h
settings:
  maxDeleteShare: 0.75
`

func TestParsePolicyFull(t *testing.T) {
	p, err := ParsePolicy("p.yaml", []byte(fullPolicy))
	if err != nil {
		t.Fatal(err)
	}
	if p.Format != FormatRules || len(p.Rules) != 2 || p.Settings.MaxDeleteShare != 0.75 {
		t.Fatalf("unexpected policy: %+v", p)
	}
	r := p.Rules[0]
	if r.Number != 1 || r.Line != 3 || r.Keep.Latest != 10 || r.Keep.Within != 30*24*time.Hour ||
		r.Keep.Semver != 3 || len(r.Keep.Tags) != 3 || len(r.Delete) != 1 || !r.AllowDeleteAll {
		t.Fatalf("rule 1 parsed wrong: %+v", r)
	}
	if p.Rules[1].Keep.Within != 720*time.Hour || p.Rules[1].Delete != nil || p.Rules[1].Line != 11 {
		t.Fatalf("rule 2 parsed wrong: %+v", p.Rules[1])
	}
	// First match wins: legacy/x hits rule 1 even though rule 2 matches too.
	if got, _ := p.Match("legacy/x"); got.Number != 1 {
		t.Errorf("legacy/x matched rule %d, want 1", got.Number)
	}
	if got, _ := p.Match("other"); got.Number != 2 {
		t.Errorf("other matched rule %d, want 2", got.Number)
	}
}

func TestParsePolicyDefaults(t *testing.T) {
	p, err := ParsePolicy("p.yaml", []byte("rules:\n  - repositories: [app]\n    keep: {latest: 1}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Settings.MaxDeleteShare != DefaultMaxDeleteShare {
		t.Errorf("default maxDeleteShare = %v", p.Settings.MaxDeleteShare)
	}
	if _, ok := p.Match("other"); ok {
		t.Error("a repository no rule names must stay unmatched")
	}
}

// The seed cleaner's flat `repo: N` map keeps N newest tags in each listed
// repository and 10 everywhere else.
func TestParsePolicyFlat(t *testing.T) {
	p, err := ParsePolicy("clean.yaml", []byte("team/app: 3\nother: 5\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Format != FormatFlat || len(p.Rules) != 3 {
		t.Fatalf("flat policy parsed wrong: %+v", p)
	}
	for repo, want := range map[string]int{"team/app": 3, "other": 5, "team/app2": 10, "x/y/z": 10} {
		r, ok := p.Match(repo)
		if !ok || r.Keep.Latest != want || r.Delete != nil || r.Keep.Within != 0 || r.AllowDeleteAll {
			t.Errorf("%s: rule %+v, want keep.latest %d only", repo, r, want)
		}
	}
}

func TestParsePolicyErrors(t *testing.T) {
	cases := []struct {
		name, policy string
		line         int
		want         string
	}{
		{"unknown top key", "rules: []\nfoo: 1\n", 2, `unknown key "foo"`},
		{"typo in keep", "rules:\n  - repositories: [a]\n    keep:\n      lastest: 3\n", 4, `unknown key "lastest"`},
		{"typo in rule", "rules:\n  - repositories: [a]\n    delte: [x]\n", 3, `unknown key "delte"`},
		{"empty rules", "rules: []\n", 1, "rules: empty"},
		{"no rules key", "settings:\n  maxDeleteShare: 0.5\n", 1, "rules: missing"},
		{"rules not list", "rules:\n  a: 1\n", 2, "must be a list"},
		{"missing repositories", "rules:\n  - keep: {latest: 1}\n", 2, "repositories: missing"},
		{"empty repositories", "rules:\n  - repositories: []\n", 2, "empty list"},
		{"bad regex", "rules:\n  - repositories: [\"re:(\"]\n", 2, "bad regular expression"},
		{"bad glob", "rules:\n  - repositories: [a]\n    keep:\n      tags: [\"v[\"]\n", 4, "bad glob"},
		{"negative latest", "rules:\n  - repositories: [a]\n    keep:\n      latest: -1\n", 4, "whole number"},
		{"zero latest", "rules:\n  - repositories: [a]\n    keep:\n      latest: 0\n", 4, "whole number"},
		{"float semver", "rules:\n  - repositories: [a]\n    keep:\n      semver: 1.5\n", 4, "whole number"},
		{"bad within", "rules:\n  - repositories: [a]\n    keep:\n      within: 3 weeks\n", 4, "within"},
		{"negative within", "rules:\n  - repositories: [a]\n    keep:\n      within: -5h\n", 4, "within"},
		{"bad bool", "rules:\n  - repositories: [a]\n    allowDeleteAll: yes please\n", 3, "true or false"},
		{"share too big", "rules:\n  - repositories: [a]\nsettings:\n  maxDeleteShare: 1.5\n", 4, "maxDeleteShare"},
		{"share zero", "rules:\n  - repositories: [a]\nsettings:\n  maxDeleteShare: 0\n", 4, "maxDeleteShare"},
		{"version 2", "version: 2\nrules:\n  - repositories: [a]\n", 1, "version"},
		{"duplicate key", "rules:\n  - repositories: [a]\n    keep: {latest: 1, latest: 2}\n", 3, "latest"},
		{"empty delete", "rules:\n  - repositories: [a]\n    delete: []\n", 3, "delete: empty"},
		{"rule not mapping", "rules:\n  - a\n", 2, "must be a mapping"},
		{"yaml syntax", "rules:\n  - repositories: [a\n", 0, "did not find expected"},
		{"flat not number", "team/app: many\n", 1, "whole number"},
		{"flat zero", "app: 0\n", 1, "whole number"},
		{"misspelled rules reads as flat", "rule:\n  - repositories: [a]\n", 2, "flat `repository: N` format"},
		{"not a mapping", "- a\n- b\n", 1, "mapping"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParsePolicy("policy.yaml", []byte(c.policy))
			if err == nil {
				t.Fatal("accepted a bad policy")
			}
			var pe *PolicyError
			if !errors.As(err, &pe) {
				t.Fatalf("error %T %v is not a *PolicyError", err, err)
			}
			if !errors.Is(err, ErrUsage) || pe.ExitCode() != 2 {
				t.Errorf("a bad policy must be a usage error with exit code 2: %v", err)
			}
			prefix := "policy.yaml:"
			if c.line > 0 {
				prefix = "policy.yaml:" + strconv.Itoa(c.line) + ":"
			}
			if !strings.HasPrefix(err.Error(), prefix) {
				t.Errorf("error %q does not start with %q", err, prefix)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not mention %q", err, c.want)
			}
		})
	}
}

func TestParsePolicyEmptyFile(t *testing.T) {
	_, err := ParsePolicy("p.yaml", []byte("# nothing\n"))
	if err == nil || !errors.Is(err, ErrUsage) {
		t.Fatalf("empty policy accepted or not a usage error: %v", err)
	}
}

func TestLoadPolicyMissingFile(t *testing.T) {
	_, err := LoadPolicy(filepath.Join(t.TempDir(), "nope.yaml"))
	if err == nil || !errors.Is(err, ErrUsage) {
		t.Fatalf("missing file: %v", err)
	}
}

func TestLoadPolicyFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(f, []byte(fullPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := LoadPolicy(f)
	if err != nil || p.File != f {
		t.Fatalf("LoadPolicy: %v %+v", err, p)
	}
}

func TestParseAge(t *testing.T) {
	good := map[string]time.Duration{"30d": 30 * 24 * time.Hour, "720h": 720 * time.Hour, "90m": 90 * time.Minute, "1h30m": 90 * time.Minute}
	for s, want := range good {
		if got, err := ParseAge(s); err != nil || got != want {
			t.Errorf("ParseAge(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "0", "0d", "-1d", "d", "1.5d", "1w", "99999999999999d"} {
		if _, err := ParseAge(s); err == nil {
			t.Errorf("ParseAge(%q) accepted", s)
		}
	}
}
