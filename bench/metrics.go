package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/berth-registry/berth/bench/internal/report"
	"github.com/berth-registry/berth/bench/internal/servers"
)

// Server variants; names are stable row keys.
const (
	sBerth         = "berth"
	sBerthRedis    = "berth+redis"
	sUpstream      = "upstream " + servers.UpstreamVersion
	sUpstreamRedis = "upstream " + servers.UpstreamVersion + "+redis"
	sDebian        = "debian docker-registry"
	// On S3: each on its own bucket of one versitygw.
	sBerthS3    = "berth on S3"
	sUpstreamS3 = "upstream " + servers.UpstreamVersion + " on S3"
	sVersitygw  = "versitygw (S3 server)"
)

// Maintenance contenders.
const (
	pBerthSeq     = "berth prune --concurrency 1"
	pBerthDefault = "berth prune (default concurrency)"
	pBaseline     = "sequential digest cleaner"
	gBerth        = "berth gc"
	gUpstream     = "upstream garbage-collect"
	gDebian       = "debian garbage-collect"
)

// sizes is how big each workload is.
type sizes struct {
	BigLayers      []int64 // one image per rep
	SmallImages    int
	SmallLayer     int64
	SmallWorkers   int
	PushJobs       int
	PullJobs       int
	HeadClients    int
	HeadIters      int
	PruneRepos     int
	PruneTags      int
	PruneKeep      int
	GCImages       int
	GCRepos        int
	GCLayer        int
	PopulateWorker int
}

func sizesFor(short bool) sizes {
	const KiB, MiB = 1 << 10, 1 << 20
	mult := int64(MiB)
	s := sizes{
		SmallImages: 200, SmallLayer: 2 * KiB, SmallWorkers: 4,
		PushJobs: 4, PullJobs: 4,
		HeadClients: 32, HeadIters: 40,
		PruneRepos: 100, PruneTags: 100, PruneKeep: 10,
		GCImages: 1000, GCRepos: 10, GCLayer: 4 * KiB,
		PopulateWorker: 8,
	}
	if short {
		mult = KiB
		s.SmallImages = 10
		s.HeadClients, s.HeadIters = 4, 5
		s.PruneRepos, s.PruneTags = 3, 15
		s.GCImages, s.GCRepos, s.GCLayer = 20, 2, KiB
	}
	// Ten layers between 1 and 32 (MiB, or KiB when short): 108 in all.
	for _, n := range []int64{1, 2, 3, 4, 6, 8, 12, 16, 24, 32} {
		s.BigLayers = append(s.BigLayers, n*mult)
	}
	return s
}

func bigTitle(s sizes) string {
	unit, div := "MiB", int64(1<<20)
	if s.BigLayers[0] < 1<<20 {
		unit, div = "KiB", 1<<10
	}
	return fmt.Sprintf("%d layers %d–%d %s", len(s.BigLayers), s.BigLayers[0]/div, s.BigLayers[len(s.BigLayers)-1]/div, unit)
}

// Metric IDs.
const (
	mPushBig   = "push-big"
	mPushSmall = "push-small"
	mPullCold  = "pull-cold"
	mPullWarm  = "pull-warm"
	mHeadRPS   = "head-rps"
	mHeadP50   = "head-p50"
	mHeadP99   = "head-p99"
	mRSS       = "rss"
	mPrune     = "prune"
	mGC        = "gc"
)

func metrics(s sizes) map[string]report.Metric {
	big := bigTitle(s)
	storm := fmt.Sprintf("HEAD storm (%d clients × %d × tag+%d blobs)", s.HeadClients, s.HeadIters, len(s.BigLayers)+1)
	ms := []report.Metric{
		{ID: mPushBig, Title: "push " + big, Unit: "MB/s", Better: report.Higher},
		{ID: mPushSmall, Title: fmt.Sprintf("push %d small images, %d at once", s.SmallImages, s.SmallWorkers), Unit: "manifests/s", Better: report.Higher},
		{ID: mPullCold, Title: "pull " + big + ", cold process", Unit: "MB/s", Better: report.Higher},
		{ID: mPullWarm, Title: "pull " + big + ", warm", Unit: "MB/s", Better: report.Higher},
		{ID: mHeadRPS, Title: storm, Unit: "req/s", Better: report.Higher},
		{ID: mHeadP50, Title: storm + " p50", Unit: "ms", Better: report.Lower},
		{ID: mHeadP99, Title: storm + " p99", Unit: "ms", Better: report.Lower},
		{ID: mRSS, Title: "peak RSS over the workloads above", Unit: "MiB", Better: report.Lower},
		{ID: mPrune, Title: fmt.Sprintf("prune %d×%d tags, keep %d", s.PruneRepos, s.PruneTags, s.PruneKeep), Unit: "s", Better: report.Lower},
		{ID: mGC, Title: fmt.Sprintf("gc %d images, half deleted, registry stopped", s.GCImages), Unit: "s", Better: report.Lower},
	}
	out := map[string]report.Metric{}
	for _, m := range ms {
		out[m.ID] = m
	}
	return out
}

// rowSpecs is every row of the table, in order. The set is fixed whatever
// is installed: a missing contender shows as n/a, never as a missing row.
func rowSpecs(s sizes) []report.RowSpec {
	ms := metrics(s)
	serverPairs := []report.Pair{
		{Subject: sBerth, Peer: sUpstream},
		{Subject: sBerth, Peer: sDebian},
		{Subject: sBerthRedis, Peer: sUpstreamRedis},
	}
	var specs []report.RowSpec
	for _, id := range []string{mPushBig, mPushSmall, mPullCold, mPullWarm, mHeadRPS, mHeadP50, mHeadP99, mRSS} {
		for _, p := range serverPairs {
			specs = append(specs, report.RowSpec{Metric: ms[id], Pair: p})
		}
		if slices.Contains(s3Metrics, id) {
			specs = append(specs, report.RowSpec{Metric: ms[id], Pair: report.Pair{Subject: sBerthS3, Peer: sUpstreamS3}})
		}
	}
	specs = append(specs,
		report.RowSpec{Metric: ms[mPrune], Pair: report.Pair{Subject: pBerthSeq, Peer: pBaseline}},
		report.RowSpec{Metric: ms[mPrune], Pair: report.Pair{Subject: pBerthDefault, Peer: pBaseline}},
		report.RowSpec{Metric: ms[mGC], Pair: report.Pair{Subject: gBerth, Peer: gUpstream}},
		report.RowSpec{Metric: ms[mGC], Pair: report.Pair{Subject: gBerth, Peer: gDebian}},
	)
	return specs
}

// Scenarios, in the order a run takes them; -only picks some.
const (
	scServer = "server" // push, pull, HEAD storm, RSS on the filesystem
	scS3     = "s3"     // push and pull on S3
	scPrune  = "prune"
	scGC     = "gc"
)

var scenarios = []string{scServer, scS3, scPrune, scGC}

func selectScenarios(names []string) (map[string]bool, error) {
	sel := map[string]bool{}
	for _, n := range names {
		n = strings.TrimSpace(n)
		if !slices.Contains(scenarios, n) {
			return nil, fmt.Errorf("-only: unknown scenario %q (want %s)", n, strings.Join(scenarios, ", "))
		}
		sel[n] = true
	}
	if len(sel) == 0 {
		for _, n := range scenarios {
			sel[n] = true
		}
	}
	return sel, nil
}

// scenarioOf says which scenario produces a row.
func scenarioOf(sp report.RowSpec) string {
	switch {
	case sp.Metric.ID == mPrune:
		return scPrune
	case sp.Metric.ID == mGC:
		return scGC
	case sp.Pair.Subject == sBerthS3:
		return scS3
	}
	return scServer
}

// selectRows keeps the rows of the scenarios that ran.
func selectRows(specs []report.RowSpec, only map[string]bool) []report.RowSpec {
	return slices.DeleteFunc(specs, func(sp report.RowSpec) bool { return !only[scenarioOf(sp)] })
}
