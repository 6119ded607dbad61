package retention

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"
)

// regexPrefix marks a pattern as a regular expression instead of a glob.
const regexPrefix = "re:"

// Pattern matches repository names or tags. A glob is matched per
// "/"-separated segment with path.Match, and a segment that is exactly "**"
// matches zero or more whole segments. A pattern starting with "re:" is a Go
// regular expression, unanchored unless it anchors itself (like grep), so
// "re:^release-" means "starts with release-".
type Pattern struct {
	raw  string
	re   *regexp.Regexp
	segs []string
}

// ParsePattern validates a pattern so that a typo fails at load time, not by
// silently matching nothing at run time.
func ParsePattern(s string) (Pattern, error) {
	if s == "" {
		return Pattern{}, errors.New("empty pattern")
	}
	if expr, ok := strings.CutPrefix(s, regexPrefix); ok {
		if expr == "" {
			return Pattern{}, errors.New(`empty regular expression after "re:"`)
		}
		re, err := regexp.Compile(expr)
		if err != nil {
			return Pattern{}, fmt.Errorf("bad regular expression %q: %w", expr, err)
		}
		return Pattern{raw: s, re: re}, nil
	}
	segs := strings.Split(s, "/")
	for _, seg := range segs {
		if seg == "**" {
			continue
		}
		if seg == "" {
			return Pattern{}, fmt.Errorf("bad glob %q: empty path segment", s)
		}
		// path.Match reports a malformed pattern only when it gets that far
		// in the name, so validate against a name that forces a full scan.
		if _, err := path.Match(seg, seg); err != nil {
			return Pattern{}, fmt.Errorf("bad glob %q: %w", s, err)
		}
	}
	return Pattern{raw: s, segs: segs}, nil
}

// String returns the pattern as written in the policy.
func (p Pattern) String() string { return p.raw }

// Match reports whether s matches the pattern.
func (p Pattern) Match(s string) bool {
	if p.re != nil {
		return p.re.MatchString(s)
	}
	return matchSegments(p.segs, strings.Split(s, "/"))
}

func matchSegments(pat, name []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			// Collapse runs of "**" so the recursion below stays linear.
			for len(pat) > 0 && pat[0] == "**" {
				pat = pat[1:]
			}
			if len(pat) == 0 {
				return true
			}
			for i := range name {
				if matchSegments(pat, name[i:]) {
					return true
				}
			}
			return false
		}
		if len(name) == 0 {
			return false
		}
		if ok, _ := path.Match(pat[0], name[0]); !ok {
			return false
		}
		pat, name = pat[1:], name[1:]
	}
	return len(name) == 0
}

// matchAny returns the first pattern that matches s.
func matchAny(ps []Pattern, s string) (Pattern, bool) {
	for _, p := range ps {
		if p.Match(s) {
			return p, true
		}
	}
	return Pattern{}, false
}
