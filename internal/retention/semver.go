package retention

import (
	"strconv"
	"strings"
)

// version is a tag read as a semantic version. Registry tags cannot contain
// "+", so build metadata never appears and is not handled.
type version struct {
	nums [3]uint64
	pre  []string // nil for a release
}

// parseVersion accepts 1, 1.2, 1.2.3 with an optional v/V prefix and an
// optional -prerelease, because image tags commonly drop trailing components
// (node:20, alpine:3.20). Missing components count as 0.
func parseVersion(tag string) (version, bool) {
	s := tag
	if len(s) > 0 && (s[0] == 'v' || s[0] == 'V') {
		s = s[1:]
	}
	core, pre, hasPre := strings.Cut(s, "-")
	parts := strings.Split(core, ".")
	if len(parts) > 3 {
		return version{}, false
	}
	var v version
	for i, p := range parts {
		n, ok := numericIdent(p)
		if !ok {
			return version{}, false
		}
		v.nums[i] = n
	}
	if hasPre {
		if pre == "" {
			return version{}, false
		}
		v.pre = strings.Split(pre, ".")
		for _, id := range v.pre {
			if id == "" {
				return version{}, false
			}
		}
	}
	return v, true
}

func numericIdent(s string) (uint64, bool) {
	if s == "" || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
}

// compare follows semver 2.0.0 precedence: a release ranks above its
// prereleases; prerelease identifiers compare numerically when numeric.
func (a version) compare(b version) int {
	for i := range a.nums {
		if a.nums[i] != b.nums[i] {
			if a.nums[i] < b.nums[i] {
				return -1
			}
			return 1
		}
	}
	switch {
	case a.pre == nil && b.pre == nil:
		return 0
	case a.pre == nil:
		return 1
	case b.pre == nil:
		return -1
	}
	for i := 0; i < len(a.pre) && i < len(b.pre); i++ {
		if c := compareIdent(a.pre[i], b.pre[i]); c != 0 {
			return c
		}
	}
	switch {
	case len(a.pre) < len(b.pre):
		return -1
	case len(a.pre) > len(b.pre):
		return 1
	}
	return 0
}

func compareIdent(a, b string) int {
	an, aNum := numericIdent(a)
	bn, bNum := numericIdent(b)
	switch {
	case aNum && bNum:
		switch {
		case an < bn:
			return -1
		case an > bn:
			return 1
		}
		return 0
	case aNum:
		return -1 // numeric identifiers rank below alphanumeric ones
	case bNum:
		return 1
	}
	return strings.Compare(a, b)
}
