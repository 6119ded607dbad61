package referrers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/internal/digests"
	"github.com/berth-registry/berth/internal/referrers"
	"github.com/berth-registry/berth/internal/testutil"
)

const benchReferrers = 1000

// seed stores n referrer manifests of subject in repo the way Distribution
// lays them out (content and revision link), without an index: the first
// listing builds it. Half are signatures, half SBOMs.
func seed(b *testing.B, d driver.StorageDriver, repo string, subject digest.Digest, n int) {
	b.Helper()
	ctx := context.Background()
	for i := range n {
		at := sigType
		if i%2 == 1 {
			at = sbomType
		}
		m := artifactManifest(subject, at, fmt.Sprintf("referrer %d, annotated like cosign: dev.sigstore.cosign/bundle", i))
		c := digest.FromBytes(m)
		if err := d.PutContent(ctx, digests.DataPath(c), m); err != nil {
			b.Fatal(err)
		}
		if err := d.PutContent(ctx, digests.LinkPath(repo, digests.Manifest, c), []byte(c)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReferrersList1000 lists a subject with 1,000 referrers from the
// index on local-disk storage: one page of all of them, and a filtered one.
func BenchmarkReferrersList1000(b *testing.B) {
	ctx := context.Background()
	d := filesystem.New(filesystem.DriverParameters{RootDirectory: b.TempDir(), MaxThreads: 100})
	subject := digest.FromString("image")
	seed(b, d, "app", subject, benchReferrers)
	x := &referrers.Index{Driver: d}
	if p, err := x.List(ctx, "app", subject, referrers.Query{}); err != nil || len(p.Manifests) != benchReferrers || p.More {
		b.Fatalf("first listing: %d referrers, more=%v, err=%v", len(p.Manifests), p.More, err)
	}
	for _, bc := range []struct {
		name string
		q    referrers.Query
		want int
	}{
		{"all", referrers.Query{}, benchReferrers},
		{"artifactType", referrers.Query{ArtifactType: sbomType}, benchReferrers / 2},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cpu := startCPU()
			for b.Loop() {
				p, err := x.List(ctx, "app", subject, bc.q)
				if err != nil || len(p.Manifests) != bc.want {
					b.Fatalf("%d referrers, err=%v", len(p.Manifests), err)
				}
			}
			cpu.report(b)
		})
	}
}

// BenchmarkReferrersAPI1000 is the same lookup through berth's HTTP API.
func BenchmarkReferrersAPI1000(b *testing.B) {
	srv := testutil.StartBerth(b, testutil.Options{})
	d := filesystem.New(filesystem.DriverParameters{RootDirectory: srv.Root, MaxThreads: 100})
	subject := digest.FromString("image")
	seed(b, d, "app", subject, benchReferrers)
	u := srv.URL + "/v2/app/referrers/" + subject.String()
	get := func() {
		res, err := http.Get(u)
		if err != nil {
			b.Fatal(err)
		}
		var idx struct {
			Manifests []json.RawMessage `json:"manifests"`
		}
		err = json.NewDecoder(res.Body).Decode(&idx)
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if err != nil || res.StatusCode != http.StatusOK || len(idx.Manifests) != benchReferrers {
			b.Fatalf("GET referrers: %d, %d manifests, %v", res.StatusCode, len(idx.Manifests), err)
		}
	}
	get() // builds the index
	cpu := startCPU()
	for b.Loop() {
		get()
	}
	cpu.report(b)
}

// cpuClock measures the process' CPU time (user and system), which says
// more than wall time on a machine shared with other work: waiting for a
// core is not counted.
type cpuClock struct{ start time.Duration }

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func startCPU() cpuClock { return cpuClock{processCPU()} }

func (c cpuClock) report(b *testing.B) {
	b.ReportMetric(float64(processCPU()-c.start)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
}
