package main

import (
	"encoding/xml"
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// Report is what one run of the OCI conformance suite found.
type Report struct {
	// The suite's own counts: one per check, so a test case may count more
	// than once (a delete and its "is it gone" check).
	Total, Passed, Failed, Errors, Skipped, Disabled int
	// Cases are the leaf test cases, in the suite's order.
	Cases []Case
}

// Case is one leaf test case. Names are not unique: the suite runs the
// same check once per blob or manifest.
type Case struct {
	Name   string
	Status string // passed, failure, error, skipped
	// Output is the requests and responses the case made.
	Output string
	// Message is why it failed.
	Message string
}

// Failed reports whether the case failed (a conformance failure or an
// error of the suite against this registry).
func (c Case) Failed() bool { return c.Status == "failure" || c.Status == "error" }

type junitSuites struct {
	Tests    int          `xml:"tests,attr"`
	Failures int          `xml:"failures,attr"`
	Errors   int          `xml:"errors,attr"`
	Skipped  int          `xml:"skipped,attr"`
	Disabled int          `xml:"disabled,attr"`
	Suites   []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Cases []struct {
		Name      string `xml:"name,attr"`
		Status    string `xml:"status,attr"`
		SystemOut string `xml:"system-out"`
		SystemErr string `xml:"system-err"`
	} `xml:"testcase"`
}

// ParseJUnit reads the suite's junit.xml.
func ParseJUnit(b []byte) (*Report, error) {
	var s junitSuites
	if err := xml.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("parse junit report: %w", err)
	}
	if s.Tests == 0 || len(s.Suites) == 0 {
		return nil, fmt.Errorf("junit report has no tests")
	}
	r := &Report{Total: s.Tests, Failed: s.Failures, Errors: s.Errors, Skipped: s.Skipped, Disabled: s.Disabled}
	r.Passed = s.Tests - s.Failures - s.Errors - s.Skipped - s.Disabled
	for _, suite := range s.Suites {
		for _, c := range suite.Cases {
			// The suite writes the HTTP exchange to system-err and the
			// failure to system-out.
			r.Cases = append(r.Cases, Case{Name: c.Name, Status: c.Status, Output: c.SystemErr, Message: c.SystemOut})
		}
	}
	return r, nil
}

// Summary is the one-line count.
func (r *Report) Summary() string {
	return fmt.Sprintf("%d passed, %d failed of %d (%d skipped or disabled)",
		r.Passed, r.Failed+r.Errors, r.Total, r.Skipped+r.Disabled)
}

// FailedCounts is how many cases of each name failed.
func (r *Report) FailedCounts() map[string]int {
	out := map[string]int{}
	for _, c := range r.Cases {
		if c.Failed() {
			out[c.Name]++
		}
	}
	return out
}

var statusLine = regexp.MustCompile(`(?m)^Status: (5\d\d)$`)

// ServerErrors lists the cases that received a 5xx, with the status.
func (r *Report) ServerErrors() []string {
	var out []string
	for _, c := range r.Cases {
		for _, m := range statusLine.FindAllStringSubmatch(c.Output, -1) {
			out = append(out, fmt.Sprintf("%s: HTTP %s", c.Name, m[1]))
		}
	}
	return out
}

var (
	// berth's access log: one "request" line per response.
	berthStatus = regexp.MustCompile(`(?m)\smsg=request\s.*\sstatus=5\d\d\b`)
	// Distribution's: a "response completed with error" line per error in
	// the response, so responses are told apart by request id.
	upstreamStatus = regexp.MustCompile(`\shttp\.response\.status=5\d\d\b`)
	requestID      = regexp.MustCompile(`\shttp\.request\.id=(\S+)`)
)

// CountLogServerErrors counts the 5xx responses a registry logged.
func CountLogServerErrors(target, log string) int {
	if target != "upstream" {
		return len(berthStatus.FindAllString(log, -1))
	}
	ids := map[string]bool{}
	for i, line := range strings.Split(log, "\n") {
		if !upstreamStatus.MatchString(line) {
			continue
		}
		id := fmt.Sprintf("line %d", i)
		if m := requestID.FindStringSubmatch(line); m != nil {
			id = m[1]
		}
		ids[id] = true
	}
	return len(ids)
}

// Expected is the list of failures a run may have: name → how many cases
// of that name may fail.
type Expected map[string]int

var multiplicity = regexp.MustCompile(`^(.*\S)\s+x(\d+)$`)

// ParseExpected reads expected-failures.txt: one test name per line,
// optionally followed by " xN" when N cases of that name fail; '#' starts a
// comment line; blank lines are ignored.
func ParseExpected(text string) (Expected, error) {
	exp := Expected{}
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		n := 1
		if m := multiplicity.FindStringSubmatch(line); m != nil {
			if _, err := fmt.Sscan(m[2], &n); err != nil || n < 1 {
				return nil, fmt.Errorf("line %d: bad count in %q", i+1, line)
			}
			line = m[1]
		}
		if _, dup := exp[line]; dup {
			return nil, fmt.Errorf("line %d: %q is listed twice (use one line with xN)", i+1, line)
		}
		exp[line] = n
	}
	return exp, nil
}

// Verdict compares a run with the expected failures.
type Verdict struct {
	// Unexpected are failures not on the list (or more of them than listed).
	Unexpected []string
	// NowPassing are listed failures that did not happen: the list must
	// shrink, so they count as problems too.
	NowPassing []string
}

// OK reports whether the run matched the list exactly.
func (v Verdict) OK() bool { return len(v.Unexpected) == 0 && len(v.NowPassing) == 0 }

// Compare matches the failures of r against exp.
func Compare(r *Report, exp Expected) Verdict {
	var v Verdict
	got := r.FailedCounts()
	for name, n := range got {
		if want := exp[name]; n > want {
			v.Unexpected = append(v.Unexpected, withCount(name, n-want))
		}
	}
	for name, want := range exp {
		if n := got[name]; n < want {
			v.NowPassing = append(v.NowPassing, withCount(name, want-n))
		}
	}
	sort.Strings(v.Unexpected)
	sort.Strings(v.NowPassing)
	return v
}

func withCount(name string, n int) string {
	if n == 1 {
		return name
	}
	return fmt.Sprintf("%s x%d", name, n)
}

// FailureMessages returns why the named cases failed, for the log.
func (r *Report) FailureMessages(name string) []string {
	var out []string
	for _, c := range r.Cases {
		if c.Name == name && c.Failed() {
			out = append(out, strings.TrimSpace(c.Message))
		}
	}
	return out
}
