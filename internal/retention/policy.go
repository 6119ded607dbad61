package retention

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// DefaultMaxDeleteShare is the share of all tags (in repositories the policy
// covers) above which a run stops before deleting anything.
const DefaultMaxDeleteShare = 0.5

// flatDefaultLatest is what the seed's cleaner kept in every repository its
// flat config did not list.
const flatDefaultLatest = 10

// Format tells which policy syntax a file used.
type Format string

const (
	FormatRules Format = "rules"
	// FormatFlat is the seed cleaner's `repo: N` map.
	FormatFlat Format = "flat"
)

// Policy is a validated retention policy.
type Policy struct {
	File     string
	Format   Format
	Rules    []Rule
	Settings Settings
}

// Settings apply to a whole run.
type Settings struct {
	MaxDeleteShare float64
}

// Rule selects repositories and says which of their tags to keep.
type Rule struct {
	// Number is 1-based, as users count rules in a file.
	Number         int
	Line           int
	Repositories   []Pattern
	Keep           Keep
	Delete         []Pattern // nil means every tag is a candidate
	AllowDeleteAll bool
}

// Keep clauses; a zero value means the clause is absent. A tag protected by
// any clause is kept.
type Keep struct {
	Latest int
	Within time.Duration
	// WithinText is Within as written, for output.
	WithinText string
	Tags       []Pattern
	Semver     int
}

// usesPushTime reports whether the rule ranks or filters by push time, which
// decides whether a tag without a known push time must be protected.
func (r *Rule) usesPushTime() bool { return r.Keep.Latest > 0 || r.Keep.Within > 0 }

// Label names the rule in output.
func (r *Rule) Label() string {
	if r.Line > 0 {
		return fmt.Sprintf("rule %d (line %d)", r.Number, r.Line)
	}
	return fmt.Sprintf("rule %d", r.Number)
}

// Match returns the first rule whose repository patterns match repo.
func (p *Policy) Match(repo string) (*Rule, bool) {
	for i := range p.Rules {
		if _, ok := matchAny(p.Rules[i].Repositories, repo); ok {
			return &p.Rules[i], true
		}
	}
	return nil, false
}

// PolicyError is a bad policy file. It carries file:line so the user can go
// straight to the mistake, and maps to exit status 2.
type PolicyError struct {
	File string
	Line int
	Msg  string
}

func (e *PolicyError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

// ExitCode makes a bad policy a usage error.
func (e *PolicyError) ExitCode() int { return ExitUsage }

// Is lets callers test errors.Is(err, ErrUsage).
func (e *PolicyError) Is(target error) bool { return target == ErrUsage }

// LoadPolicy reads and validates a policy file.
func LoadPolicy(file string) (*Policy, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, &PolicyError{File: file, Msg: fmt.Sprintf("cannot read policy: %v", err)}
	}
	return ParsePolicy(file, data)
}

// ParsePolicy validates a policy; file is used only in error messages.
func ParsePolicy(file string, data []byte) (*Policy, error) {
	pp := policyParser{file: file}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		return nil, pp.yamlErr(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, pp.errf(&extra, "a policy file holds one YAML document")
	}
	if len(doc.Content) == 0 {
		return nil, &PolicyError{File: file, Msg: "empty policy: no rules"}
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, pp.errf(root, "policy must be a mapping with a rules: list")
	}
	if isFlat(root) {
		return pp.flat(root)
	}
	return pp.rules(root)
}

type policyParser struct{ file string }

func (pp *policyParser) errf(n *yaml.Node, format string, args ...any) error {
	return &PolicyError{File: pp.file, Line: n.Line, Msg: fmt.Sprintf(format, args...)}
}

// yamlErr turns the parser's "yaml: line N: msg" into file:N: msg.
func (pp *policyParser) yamlErr(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, tail, ok := strings.Cut(rest, ":"); ok {
			if line, convErr := strconv.Atoi(num); convErr == nil {
				return &PolicyError{File: pp.file, Line: line, Msg: strings.TrimSpace(tail)}
			}
		}
	}
	return &PolicyError{File: pp.file, Msg: "invalid YAML: " + msg}
}

// isFlat tells the seed's `repo: N` map from the rules format: a mapping
// that uses none of the rules format's top-level keys.
func isFlat(root *yaml.Node) bool {
	for i := 0; i < len(root.Content); i += 2 {
		switch root.Content[i].Value {
		case "rules", "settings", "version":
			return false
		}
	}
	return true
}

func (pp *policyParser) flat(root *yaml.Node) (*Policy, error) {
	p := &Policy{File: pp.file, Format: FormatFlat, Settings: Settings{MaxDeleteShare: DefaultMaxDeleteShare}}
	seen := map[string]bool{}
	for i := 0; i < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if seen[k.Value] {
			return nil, pp.errf(k, "repository %q listed twice", k.Value)
		}
		seen[k.Value] = true
		pat, err := ParsePattern(k.Value)
		if err != nil {
			return nil, pp.errf(k, "repository %q: %v (a file without rules: is read as the flat `repository: N` format)", k.Value, err)
		}
		n, err := pp.positiveInt(v, k.Value)
		if err != nil {
			var pe *PolicyError
			if errors.As(err, &pe) {
				pe.Msg += " (a file without rules: is read as the seed's flat `repository: N` format)"
			}
			return nil, err
		}
		p.Rules = append(p.Rules, Rule{
			Number:       len(p.Rules) + 1,
			Line:         k.Line,
			Repositories: []Pattern{pat},
			Keep:         Keep{Latest: n},
		})
	}
	all, _ := ParsePattern("**")
	p.Rules = append(p.Rules, Rule{
		Number:       len(p.Rules) + 1,
		Repositories: []Pattern{all},
		Keep:         Keep{Latest: flatDefaultLatest},
	})
	return p, nil
}

func (pp *policyParser) rules(root *yaml.Node) (*Policy, error) {
	p := &Policy{File: pp.file, Format: FormatRules, Settings: Settings{MaxDeleteShare: DefaultMaxDeleteShare}}
	var rulesNode *yaml.Node
	err := pp.fields(root, "policy", map[string]func(k, v *yaml.Node) error{
		"version": func(_, v *yaml.Node) error {
			if v.Kind != yaml.ScalarNode || v.Value != "1" {
				return pp.errf(v, "version: only 1 is supported, got %q", v.Value)
			}
			return nil
		},
		"rules": func(_, v *yaml.Node) error {
			rulesNode = v
			return nil
		},
		"settings": func(_, v *yaml.Node) error { return pp.settings(v, &p.Settings) },
	})
	if err != nil {
		return nil, err
	}
	if rulesNode == nil {
		return nil, pp.errf(root, "rules: missing (an ordered list of rules)")
	}
	if rulesNode.Kind != yaml.SequenceNode {
		return nil, pp.errf(rulesNode, "rules: must be a list")
	}
	if len(rulesNode.Content) == 0 {
		return nil, pp.errf(rulesNode, "rules: empty; a policy without rules would do nothing")
	}
	for i, rn := range rulesNode.Content {
		r, err := pp.rule(rn, i+1)
		if err != nil {
			return nil, err
		}
		p.Rules = append(p.Rules, r)
	}
	return p, nil
}

func (pp *policyParser) settings(n *yaml.Node, s *Settings) error {
	return pp.fields(n, "settings", map[string]func(k, v *yaml.Node) error{
		"maxDeleteShare": func(_, v *yaml.Node) error {
			f, err := strconv.ParseFloat(v.Value, 64)
			if v.Kind != yaml.ScalarNode || err != nil || math.IsNaN(f) || f <= 0 || f > 1 {
				return pp.errf(v, "settings.maxDeleteShare: want a number in (0, 1], got %q", v.Value)
			}
			s.MaxDeleteShare = f
			return nil
		},
	})
}

func (pp *policyParser) rule(n *yaml.Node, number int) (Rule, error) {
	r := Rule{Number: number, Line: n.Line}
	where := fmt.Sprintf("rules[%d]", number-1)
	if n.Kind != yaml.MappingNode {
		return r, pp.errf(n, "%s: a rule must be a mapping with repositories: and keep:/delete:", where)
	}
	sawRepos := false
	err := pp.fields(n, where, map[string]func(k, v *yaml.Node) error{
		"repositories": func(k, v *yaml.Node) error {
			sawRepos = true
			var err error
			r.Repositories, err = pp.patterns(v, where+".repositories")
			if err == nil && len(r.Repositories) == 0 {
				err = pp.errf(v, "%s.repositories: empty list; the rule would match nothing", where)
			}
			return err
		},
		"keep": func(_, v *yaml.Node) error { return pp.keep(v, where+".keep", &r.Keep) },
		"delete": func(_, v *yaml.Node) error {
			var err error
			r.Delete, err = pp.patterns(v, where+".delete")
			if err == nil && len(r.Delete) == 0 {
				err = pp.errf(v, "%s.delete: empty list; omit the key to make every tag a candidate", where)
			}
			return err
		},
		"allowDeleteAll": func(_, v *yaml.Node) error {
			var err error
			r.AllowDeleteAll, err = pp.boolean(v, where+".allowDeleteAll")
			return err
		},
	})
	if err != nil {
		return r, err
	}
	if !sawRepos {
		return r, pp.errf(n, "%s: repositories: missing", where)
	}
	return r, nil
}

func (pp *policyParser) keep(n *yaml.Node, where string, k *Keep) error {
	return pp.fields(n, where, map[string]func(k, v *yaml.Node) error{
		"latest": func(_, v *yaml.Node) error {
			var err error
			k.Latest, err = pp.positiveInt(v, where+".latest")
			return err
		},
		"semver": func(_, v *yaml.Node) error {
			var err error
			k.Semver, err = pp.positiveInt(v, where+".semver")
			return err
		},
		"within": func(_, v *yaml.Node) error {
			d, err := ParseAge(v.Value)
			if v.Kind != yaml.ScalarNode || err != nil {
				return pp.errf(v, "%s.within: want a duration like 720h or 30d, got %q", where, v.Value)
			}
			k.Within, k.WithinText = d, strings.TrimSpace(v.Value)
			return nil
		},
		"tags": func(_, v *yaml.Node) error {
			var err error
			k.Tags, err = pp.patterns(v, where+".tags")
			if err == nil && len(k.Tags) == 0 {
				err = pp.errf(v, "%s.tags: empty list", where)
			}
			return err
		},
	})
}

// fields walks a mapping, rejecting unknown and duplicate keys so that a typo
// such as `lastest:` cannot silently drop a keep clause.
func (pp *policyParser) fields(n *yaml.Node, where string, handlers map[string]func(k, v *yaml.Node) error) error {
	if n.Kind != yaml.MappingNode {
		return pp.errf(n, "%s: must be a mapping", where)
	}
	seen := map[string]bool{}
	for i := 0; i < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		h, ok := handlers[k.Value]
		if !ok {
			return pp.errf(k, "%s: unknown key %q (known: %s)", where, k.Value, knownKeys(handlers))
		}
		if seen[k.Value] {
			return pp.errf(k, "%s: key %q given twice", where, k.Value)
		}
		seen[k.Value] = true
		if err := h(k, v); err != nil {
			return err
		}
	}
	return nil
}

func knownKeys(handlers map[string]func(k, v *yaml.Node) error) string {
	keys := make([]string, 0, len(handlers))
	for k := range handlers {
		keys = append(keys, k)
	}
	slices.Sort(keys) // stable messages
	return strings.Join(keys, ", ")
}

func (pp *policyParser) patterns(n *yaml.Node, where string) ([]Pattern, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, pp.errf(n, "%s: want a list of patterns", where)
	}
	out := make([]Pattern, 0, len(n.Content))
	for _, item := range n.Content {
		if item.Kind != yaml.ScalarNode {
			return nil, pp.errf(item, "%s: want a pattern string", where)
		}
		p, err := ParsePattern(item.Value)
		if err != nil {
			return nil, pp.errf(item, "%s: %v", where, err)
		}
		out = append(out, p)
	}
	return out, nil
}

func (pp *policyParser) positiveInt(n *yaml.Node, where string) (int, error) {
	if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!str") {
		return 0, pp.errf(n, "%s: want a whole number ≥ 1", where)
	}
	v, err := strconv.Atoi(n.Value)
	if err != nil || v < 1 {
		return 0, pp.errf(n, "%s: want a whole number ≥ 1, got %q", where, n.Value)
	}
	return v, nil
}

func (pp *policyParser) boolean(n *yaml.Node, where string) (bool, error) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!bool" {
		switch strings.ToLower(n.Value) {
		case "true":
			return true, nil
		case "false":
			return false, nil
		}
	}
	return false, pp.errf(n, "%s: want true or false, got %q", where, n.Value)
}

// ParseAge accepts Go durations (720h, 90m) and whole days (30d), because
// retention ages are naturally written in days and Go has no day unit.
func ParseAge(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil {
			return 0, fmt.Errorf("bad day count %q", s)
		}
		if int64(n) > math.MaxInt64/int64(24*time.Hour) {
			return 0, fmt.Errorf("duration %q too long", s)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		d, err = time.ParseDuration(s)
		if err != nil {
			return 0, err
		}
	}
	if d <= 0 {
		return 0, errors.New("duration must be positive")
	}
	return d, nil
}
