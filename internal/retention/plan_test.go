package retention

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

var planNow = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func mustPolicy(t *testing.T, src string) *Policy {
	t.Helper()
	p, err := ParsePolicy("test.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// tagsAged builds tags named after their age in days: "d3" was pushed 3 days
// before planNow.
func tagsAged(days ...int) []TagInfo {
	out := make([]TagInfo, 0, len(days))
	for _, d := range days {
		out = append(out, TagInfo{Tag: "d" + strconv.Itoa(d), Digest: "sha256:" + strings.Repeat("a", 64),
			Pushed: planNow.Add(-time.Duration(d) * 24 * time.Hour)})
	}
	return out
}

func named(names []string, ages ...int) []TagInfo {
	out := make([]TagInfo, len(names))
	for i, n := range names {
		age := i
		if i < len(ages) {
			age = ages[i]
		}
		out[i] = TagInfo{Tag: n, Digest: "sha256:" + strings.Repeat("b", 64), Pushed: planNow.Add(-time.Duration(age) * time.Hour)}
	}
	return out
}

func deleted(rp RepoPlan) []string {
	var out []string
	for _, tp := range rp.Tags {
		if tp.Action == ActionDelete {
			out = append(out, tp.Tag)
		}
	}
	slices.Sort(out)
	return out
}

func TestPlanDecisions(t *testing.T) {
	cases := []struct {
		name   string
		policy string
		tags   []TagInfo
		want   []string // deleted tags
	}{
		{
			name:   "keep latest N",
			policy: "rules:\n- repositories: [app]\n  keep: {latest: 2}\n",
			tags:   tagsAged(5, 1, 3, 2, 4),
			want:   []string{"d3", "d4", "d5"},
		},
		{
			name:   "keep within age",
			policy: "rules:\n- repositories: [app]\n  keep: {within: 3d}\n",
			tags:   tagsAged(1, 2, 3, 4, 10),
			want:   []string{"d10", "d3", "d4"},
		},
		{
			name:   "latest or within, whichever keeps more",
			policy: "rules:\n- repositories: [app]\n  keep: {latest: 1, within: 72h}\n",
			tags:   tagsAged(1, 2, 5, 6),
			want:   []string{"d5", "d6"},
		},
		{
			name:   "keep tag patterns",
			policy: "rules:\n- repositories: [app]\n  keep: {tags: [latest, \"v*\", \"re:^release-\"]}\n",
			tags:   named([]string{"latest", "v1", "v2.0", "release-7", "pre-release-7", "dev", "sha-abc"}),
			want:   []string{"dev", "pre-release-7", "sha-abc"},
		},
		{
			name:   "keep newest semver, prerelease below release, v prefix",
			policy: "rules:\n- repositories: [app]\n  keep: {semver: 2}\n",
			tags:   named([]string{"1.9.0", "v1.10.0", "1.10.0-rc1", "1.2", "latest", "2.0.0-beta.2", "2.0.0-beta.10"}),
			// By version: 2.0.0-beta.10 > 2.0.0-beta.2 > 1.10.0 > ...; non-semver tags are not kept by semver.
			want: []string{"1.10.0-rc1", "1.2", "1.9.0", "latest", "v1.10.0"},
		},
		{
			name:   "delete patterns limit candidates",
			policy: "rules:\n- repositories: [app]\n  keep: {latest: 1}\n  delete: [\"pr-*\"]\n",
			tags:   named([]string{"pr-3", "pr-2", "pr-1", "main", "v1"}, 1, 2, 3, 0, 10),
			// main is the newest tag, but latest counts among candidates, so pr-3 is kept too.
			want: []string{"pr-1", "pr-2"},
		},
		{
			name:   "no keep clause: delete every candidate",
			policy: "rules:\n- repositories: [app]\n  delete: [\"tmp-*\"]\n",
			tags:   named([]string{"tmp-1", "tmp-2", "v1"}),
			want:   []string{"tmp-1", "tmp-2"},
		},
		{
			name:   "unknown push time is never deleted by an age rule",
			policy: "rules:\n- repositories: [app]\n  keep: {latest: 1}\n",
			tags: append(tagsAged(1, 2, 3), TagInfo{Tag: "ko", Digest: "sha256:" + strings.Repeat("c", 64)},
				TagInfo{Tag: "bazel", Digest: "sha256:" + strings.Repeat("c", 64), Pushed: KnownTime(time.Unix(0, 0))}),
			want: []string{"d2", "d3"},
		},
		{
			name:   "unknown push time does not protect from a pattern-only rule",
			policy: "rules:\n- repositories: [app]\n  delete: [\"tmp-*\"]\n",
			tags:   []TagInfo{{Tag: "tmp-ko"}, {Tag: "v1"}},
			want:   []string{"tmp-ko"},
		},
		{
			name:   "empty repository",
			policy: "rules:\n- repositories: [app]\n  keep: {latest: 1}\n",
			tags:   nil,
			want:   nil,
		},
		{
			// S3 keeps whole seconds: which of two tags pushed in one
			// second is newer is unknown, so neither is deleted for it.
			name:   "tags tied with the Nth newest are kept",
			policy: "rules:\n- repositories: [app]\n  keep: {latest: 2}\n",
			tags: []TagInfo{
				{Tag: "a", Digest: "sha256:" + strings.Repeat("1", 64), Pushed: planNow.Add(-time.Hour)},
				{Tag: "z", Digest: "sha256:" + strings.Repeat("2", 64), Pushed: planNow.Add(-2 * time.Hour)},
				{Tag: "b", Digest: "sha256:" + strings.Repeat("3", 64), Pushed: planNow.Add(-2 * time.Hour)},
				{Tag: "c", Digest: "sha256:" + strings.Repeat("4", 64), Pushed: planNow.Add(-2 * time.Hour)},
				{Tag: "old", Digest: "sha256:" + strings.Repeat("5", 64), Pushed: planNow.Add(-3 * time.Hour)},
			},
			want: []string{"old"},
		},
		{
			name:   "shared digests are separate tags",
			policy: "rules:\n- repositories: [app]\n  keep: {latest: 1}\n",
			tags: []TagInfo{
				{Tag: "a", Digest: "sha256:" + strings.Repeat("1", 64), Pushed: planNow.Add(-time.Hour)},
				{Tag: "b", Digest: "sha256:" + strings.Repeat("1", 64), Pushed: planNow.Add(-2 * time.Hour)},
			},
			want: []string{"b"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pol := mustPolicy(t, c.policy)
			plan := BuildPlan(pol, []RepoInput{{Name: "app", PushTimes: TimeSourceBerth, Tags: c.tags}}, nil, planNow, false)
			if len(plan.Repositories) != 1 {
				t.Fatalf("want one repository in the plan, got %+v", plan)
			}
			rp := plan.Repositories[0]
			if got := deleted(rp); !slices.Equal(got, c.want) {
				t.Errorf("deleted %v, want %v\n%s", got, c.want, dumpPlan(rp))
			}
			if rp.Keep+rp.Delete != len(c.tags) || rp.Delete != len(c.want) {
				t.Errorf("counts keep=%d delete=%d for %d tags", rp.Keep, rp.Delete, len(c.tags))
			}
			for _, tp := range rp.Tags {
				if tp.Clause == "" {
					t.Errorf("tag %s has no deciding clause", tp.Tag)
				}
			}
		})
	}
}

func dumpPlan(rp RepoPlan) string {
	var b strings.Builder
	for _, tp := range rp.Tags {
		b.WriteString(tp.Tag + " " + string(tp.Action) + " " + tp.Clause + "\n")
	}
	return b.String()
}

func TestPlanClauses(t *testing.T) {
	pol := mustPolicy(t, `rules:
- repositories: [app]
  keep: {latest: 1, tags: [stable], within: 48h}
  delete: ["*"]
`)
	plan := BuildPlan(pol, []RepoInput{{Name: "app", Tags: []TagInfo{
		{Tag: "new", Pushed: planNow.Add(-time.Hour)},
		{Tag: "stable", Pushed: planNow.Add(-100 * 24 * time.Hour)},
		{Tag: "recent", Pushed: planNow.Add(-30 * time.Hour)},
		{Tag: "old", Pushed: planNow.Add(-50 * time.Hour)},
	}}}, nil, planNow, false)
	got := map[string]string{}
	var order []string
	for _, tp := range plan.Repositories[0].Tags {
		got[tp.Tag] = tp.Clause
		order = append(order, tp.Tag)
	}
	want := map[string]string{
		"new":    "keep.latest 1 (#1 newest)",
		"stable": `keep.tags "stable"`,
		"recent": "keep.within 48h",
		"old":    `delete: matches "*", no keep clause protects it`,
	}
	for tag, clause := range want {
		if got[tag] != clause {
			t.Errorf("%s: clause %q, want %q", tag, got[tag], clause)
		}
	}
	if !slices.Equal(order, []string{"new", "recent", "old", "stable"}) {
		t.Errorf("tags not listed newest first: %v", order)
	}
}

func TestPlanFirstMatchAndUntouched(t *testing.T) {
	pol := mustPolicy(t, `rules:
- repositories: ["team-a/keep-all"]
  keep: {latest: 100}
- repositories: ["team-a/**"]
  keep: {latest: 1}
`)
	in := []RepoInput{
		{Name: "team-a/keep-all", Tags: tagsAged(1, 2, 3)},
		{Name: "team-a/app", Tags: tagsAged(1, 2, 3)},
		{Name: "team-b/app", Tags: tagsAged(1, 2, 3)},
	}
	plan := BuildPlan(pol, in, []string{"zzz"}, planNow, false)
	if len(plan.Repositories) != 2 {
		t.Fatalf("plan covers %d repositories, want 2", len(plan.Repositories))
	}
	byName := map[string]RepoPlan{}
	for _, rp := range plan.Repositories {
		byName[rp.Name] = rp
	}
	if d := deleted(byName["team-a/keep-all"]); len(d) != 0 {
		t.Errorf("first matching rule must win; deleted %v", d)
	}
	if d := deleted(byName["team-a/app"]); !slices.Equal(d, []string{"d2", "d3"}) {
		t.Errorf("team-a/app deleted %v", d)
	}
	if !slices.Equal(plan.Untouched, []string{"team-b/app", "zzz"}) {
		t.Errorf("untouched = %v", plan.Untouched)
	}
	if plan.Totals != (Totals{Repositories: 2, Tags: 6, Keep: 4, Delete: 2}) {
		t.Errorf("totals = %+v", plan.Totals)
	}
}

func TestPlanSafetyStops(t *testing.T) {
	allGo := "rules:\n- repositories: [app]\n  delete: [\"*\"]\n"
	t.Run("every tag of a repository", func(t *testing.T) {
		plan := BuildPlan(mustPolicy(t, allGo+"settings: {maxDeleteShare: 1}\n"),
			[]RepoInput{{Name: "app", Tags: tagsAged(1, 2)}}, nil, planNow, false)
		if !plan.Blocked() || len(plan.SafetyStops) != 1 || !strings.Contains(plan.SafetyStops[0], "app: would delete all 2 tags") {
			t.Fatalf("want a per-repository stop, got %q", plan.SafetyStops)
		}
	})
	t.Run("allowDeleteAll lifts the repository stop", func(t *testing.T) {
		plan := BuildPlan(mustPolicy(t, allGo+"  allowDeleteAll: true\nsettings: {maxDeleteShare: 1}\n"),
			[]RepoInput{{Name: "app", Tags: tagsAged(1, 2)}}, nil, planNow, false)
		if plan.Blocked() {
			t.Fatalf("allowDeleteAll ignored: %q", plan.SafetyStops)
		}
	})
	t.Run("share of all tags", func(t *testing.T) {
		pol := mustPolicy(t, "rules:\n- repositories: [\"**\"]\n  keep: {latest: 1}\n")
		plan := BuildPlan(pol, []RepoInput{{Name: "a", Tags: tagsAged(1, 2, 3)}, {Name: "b", Tags: tagsAged(1)}}, nil, planNow, false)
		// 2 of 4 tags is exactly the default 0.5: allowed.
		if plan.Blocked() {
			t.Fatalf("50%% must pass the default share: %q", plan.SafetyStops)
		}
		plan = BuildPlan(pol, []RepoInput{{Name: "a", Tags: tagsAged(1, 2, 3, 4)}, {Name: "b", Tags: tagsAged(1)}}, nil, planNow, false)
		if !plan.Blocked() || !strings.Contains(strings.Join(plan.SafetyStops, ";"), "would delete 3 of 5 tags (60.0%)") {
			t.Fatalf("want a share stop, got %q", plan.SafetyStops)
		}
	})
	t.Run("force overrides but keeps the explanation", func(t *testing.T) {
		plan := BuildPlan(mustPolicy(t, allGo), []RepoInput{{Name: "app", Tags: tagsAged(1, 2)}}, nil, planNow, true)
		if plan.Blocked() || len(plan.SafetyStops) != 2 || !plan.Forced {
			t.Fatalf("force: blocked=%v stops=%q", plan.Blocked(), plan.SafetyStops)
		}
	})
	t.Run("empty repository is not deleting everything", func(t *testing.T) {
		plan := BuildPlan(mustPolicy(t, allGo), []RepoInput{{Name: "app"}}, nil, planNow, false)
		if plan.Blocked() {
			t.Fatalf("empty repository tripped a stop: %q", plan.SafetyStops)
		}
	})
}

// The same inputs must give the same plan, whatever order the registry
// listed tags in: the seed cleaner kept N tags of an unordered list.
func TestPlanIndependentOfListingOrder(t *testing.T) {
	pol := mustPolicy(t, "rules:\n- repositories: [app]\n  keep: {latest: 3}\n")
	tags := tagsAged(9, 1, 7, 3, 5, 2, 8, 4, 6)
	a := BuildPlan(pol, []RepoInput{{Name: "app", Tags: tags}}, nil, planNow, false)
	slices.Reverse(tags)
	b := BuildPlan(pol, []RepoInput{{Name: "app", Tags: tags}}, nil, planNow, false)
	if dumpPlan(a.Repositories[0]) != dumpPlan(b.Repositories[0]) {
		t.Fatalf("plan depends on listing order:\n%s\nvs\n%s", dumpPlan(a.Repositories[0]), dumpPlan(b.Repositories[0]))
	}
	if d := deleted(a.Repositories[0]); !slices.Equal(d, []string{"d4", "d5", "d6", "d7", "d8", "d9"}) {
		t.Fatalf("deleted %v", d)
	}
}

func TestKnownTime(t *testing.T) {
	for _, ts := range []time.Time{{}, time.Unix(0, 0), time.Unix(1, 0), time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)} {
		if !KnownTime(ts).IsZero() {
			t.Errorf("%v must count as unknown", ts)
		}
	}
	if real := time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC); !KnownTime(real).Equal(real) {
		t.Error("a real time was discarded")
	}
}

func TestParseVersion(t *testing.T) {
	order := []string{"0.9", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1", "v1", "1.0.1", "1.10", "2"}
	for i := 1; i < len(order); i++ {
		a, okA := parseVersion(order[i-1])
		b, okB := parseVersion(order[i])
		if !okA || !okB || a.compare(b) >= 0 {
			t.Errorf("want %s < %s", order[i-1], order[i])
		}
	}
	for _, s := range []string{"latest", "1.2.3.4", "01.2", "1.x", "v", "1.2-", "1..2", "sha-1.2", "1.2.3-a..b"} {
		if _, ok := parseVersion(s); ok {
			t.Errorf("%q parsed as a version", s)
		}
	}
}
