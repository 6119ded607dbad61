package retention

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Action is what the plan does with a tag.
type Action string

const (
	ActionKeep   Action = "keep"
	ActionDelete Action = "delete"
)

// TimeSource says where a repository's push times came from.
type TimeSource string

const (
	// TimeSourceBerth: exact push times from berth's extension endpoint.
	TimeSourceBerth TimeSource = "berth"
	// TimeSourceCreated: the image's own build time, because the registry
	// does not expose push times. Reproducible builds (ko, Bazel) set it to
	// 1970; such times are treated as unknown, see KnownTime.
	TimeSourceCreated TimeSource = "image created (approximate)"
)

// knownTimeFloor: build times before this are reproducible-build
// placeholders (ko and Bazel write 1970-01-01, zip-based tools 1980-01-01),
// not real ages; no container image was built before 2000.
var knownTimeFloor = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// KnownTime returns t, or the zero time when t cannot be a real build or
// push time.
func KnownTime(t time.Time) time.Time {
	if t.Before(knownTimeFloor) {
		return time.Time{}
	}
	return t
}

// TagInfo is one tag as listed from the registry.
type TagInfo struct {
	Tag    string
	Digest string
	// Pushed is zero when unknown.
	Pushed time.Time
}

// RepoInput is one repository the policy covers, with all its tags.
type RepoInput struct {
	Name      string
	PushTimes TimeSource
	Tags      []TagInfo
}

// Plan is everything a run will do, computed before the first delete. A dry
// run prints it; a real run executes exactly it.
type Plan struct {
	Policy       string     `json:"policy"`
	PolicyFormat Format     `json:"policy_format"`
	PlannedAt    time.Time  `json:"planned_at"`
	Repositories []RepoPlan `json:"repositories"`
	// Untouched lists repositories no rule matches; their tags are not even
	// listed.
	Untouched []string `json:"untouched"`
	Totals    Totals   `json:"totals"`
	// SafetyStops explain why the run must not delete; Forced records that
	// --force overrode them.
	SafetyStops []string `json:"safety_stops,omitempty"`
	Forced      bool     `json:"forced,omitempty"`
}

// Totals count tags in the repositories the policy covers.
type Totals struct {
	Repositories int `json:"repositories"`
	Tags         int `json:"tags"`
	Keep         int `json:"keep"`
	Delete       int `json:"delete"`
}

// RepoPlan is the plan for one repository.
type RepoPlan struct {
	Name      string     `json:"name"`
	Rule      string     `json:"rule"`
	PushTimes TimeSource `json:"push_times"`
	Tags      []TagPlan  `json:"tags"`
	Keep      int        `json:"keep"`
	Delete    int        `json:"delete"`
}

// TagPlan is the decision for one tag and the clause that made it.
type TagPlan struct {
	Tag    string     `json:"tag"`
	Digest string     `json:"digest"`
	Pushed *time.Time `json:"pushed"`
	Action Action     `json:"action"`
	Clause string     `json:"clause"`
}

// Blocked reports whether a safety stop forbids executing the plan.
func (p *Plan) Blocked() bool { return len(p.SafetyStops) > 0 && !p.Forced }

// BuildPlan decides every tag of every covered repository. It is pure: the
// same policy, inputs and clock give the same plan.
func BuildPlan(pol *Policy, repos []RepoInput, untouched []string, now time.Time, force bool) *Plan {
	plan := &Plan{
		Policy:       pol.File,
		PolicyFormat: pol.Format,
		PlannedAt:    now.UTC(),
		Untouched:    slices.Clone(untouched),
		Forced:       force,
	}
	if plan.Untouched == nil {
		plan.Untouched = []string{}
	}
	for _, in := range repos {
		rule, ok := pol.Match(in.Name)
		if !ok {
			plan.Untouched = append(plan.Untouched, in.Name)
			continue
		}
		rp := planRepo(rule, in, now)
		plan.Repositories = append(plan.Repositories, rp)
		plan.Totals.Repositories++
		plan.Totals.Tags += len(rp.Tags)
		plan.Totals.Keep += rp.Keep
		plan.Totals.Delete += rp.Delete
		if len(rp.Tags) > 0 && rp.Delete == len(rp.Tags) && !rule.AllowDeleteAll {
			plan.SafetyStops = append(plan.SafetyStops, fmt.Sprintf(
				"%s: would delete all %d tags (%s); set allowDeleteAll: true on the rule or run with --force",
				rp.Name, len(rp.Tags), rule.Label()))
		}
	}
	slices.SortFunc(plan.Repositories, func(a, b RepoPlan) int { return strings.Compare(a.Name, b.Name) })
	slices.Sort(plan.Untouched)
	if t := plan.Totals; t.Tags > 0 {
		share := float64(t.Delete) / float64(t.Tags)
		if share > pol.Settings.MaxDeleteShare {
			plan.SafetyStops = append(plan.SafetyStops, fmt.Sprintf(
				"would delete %d of %d tags (%.1f%%) in the covered repositories, more than settings.maxDeleteShare %g; raise it or run with --force",
				t.Delete, t.Tags, 100*share, pol.Settings.MaxDeleteShare))
		}
	}
	return plan
}

func planRepo(rule *Rule, in RepoInput, now time.Time) RepoPlan {
	rp := RepoPlan{Name: in.Name, Rule: rule.Label(), PushTimes: in.PushTimes, Tags: []TagPlan{}}
	tags := slices.Clone(in.Tags)
	// Newest first, unknown times last, then by name: the order users read
	// and the order keep.latest counts in.
	slices.SortFunc(tags, func(a, b TagInfo) int {
		if c := b.Pushed.Compare(a.Pushed); c != 0 {
			return c
		}
		return strings.Compare(a.Tag, b.Tag)
	})

	var candidates []int
	clauses := make([]string, len(tags))
	for i, t := range tags {
		if rule.Delete == nil {
			candidates = append(candidates, i)
			continue
		}
		if _, ok := matchAny(rule.Delete, t.Tag); ok {
			candidates = append(candidates, i)
		} else {
			clauses[i] = "not a delete candidate (matches no delete pattern)"
		}
	}

	// Each keep clause is evaluated over the candidates independently; the
	// first one in this order names the reason in the plan.
	protect := func(i int, clause string) {
		if clauses[i] == "" {
			clauses[i] = clause
		}
	}
	for _, i := range candidates {
		if p, ok := matchAny(rule.Keep.Tags, tags[i].Tag); ok {
			protect(i, fmt.Sprintf("keep.tags %q", p.String()))
		}
	}
	if n := rule.Keep.Latest; n > 0 {
		rank := 0
		var nth time.Time
		for _, i := range candidates {
			p := tags[i].Pushed
			if p.IsZero() {
				continue
			}
			rank++
			if rank == n {
				nth = p
			}
			if rank <= n {
				protect(i, fmt.Sprintf("keep.latest %d (#%d newest)", n, rank))
				continue
			}
			// Push times are only as fine as the storage keeps them: S3
			// reports whole seconds. A tag with the same time as the Nth
			// newest may have been pushed after it, so it is kept too
			// rather than chosen by name.
			if !p.Equal(nth) {
				break
			}
			protect(i, fmt.Sprintf("keep.latest %d (same push time as #%d)", n, n))
		}
	}
	if d := rule.Keep.Within; d > 0 {
		withinText := rule.Keep.WithinText
		if withinText == "" {
			withinText = formatAge(d)
		}
		for _, i := range candidates {
			if p := tags[i].Pushed; !p.IsZero() && now.Sub(p) < d {
				protect(i, "keep.within "+withinText)
			}
		}
	}
	if k := rule.Keep.Semver; k > 0 {
		type ranked struct {
			idx int
			v   version
		}
		var vs []ranked
		for _, i := range candidates {
			if v, ok := parseVersion(tags[i].Tag); ok {
				vs = append(vs, ranked{i, v})
			}
		}
		slices.SortFunc(vs, func(a, b ranked) int {
			if c := b.v.compare(a.v); c != 0 {
				return c
			}
			return strings.Compare(tags[a.idx].Tag, tags[b.idx].Tag)
		})
		for r, v := range vs[:min(k, len(vs))] {
			protect(v.idx, fmt.Sprintf("keep.semver %d (#%d by version)", k, r+1))
		}
	}
	if rule.usesPushTime() {
		for _, i := range candidates {
			if tags[i].Pushed.IsZero() {
				protect(i, "push time unknown (age rules never delete it)")
			}
		}
	}
	actions := make([]Action, len(tags))
	for i := range actions {
		actions[i] = ActionKeep
	}
	for _, i := range candidates {
		if clauses[i] != "" {
			continue
		}
		actions[i] = ActionDelete
		if rule.Delete == nil {
			clauses[i] = "delete: no keep clause protects it"
		} else {
			p, _ := matchAny(rule.Delete, tags[i].Tag)
			clauses[i] = fmt.Sprintf("delete: matches %q, no keep clause protects it", p.String())
		}
	}

	for i, t := range tags {
		tp := TagPlan{Tag: t.Tag, Digest: t.Digest, Action: actions[i], Clause: clauses[i]}
		if !t.Pushed.IsZero() {
			p := t.Pushed.UTC()
			tp.Pushed = &p
		}
		if tp.Action == ActionDelete {
			rp.Delete++
		} else {
			rp.Keep++
		}
		rp.Tags = append(rp.Tags, tp)
	}
	return rp
}

// formatAge prints whole days as days, which is how they were most likely
// written in the policy.
func formatAge(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}
