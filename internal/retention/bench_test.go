package retention

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// BenchmarkPrune seeds a local berth with 100 repositories × 100 tags (five
// images per repository, so tags share digests) and prunes with keep-10:
// 9,000 deletions. It reports the wall time of listing+planning and of the
// deletions separately, at concurrency 1 and at the default.
//
//	go test ./internal/retention/ -run '^$' -bench BenchmarkPrune -benchtime 1x
//
// Deletes cost the storage's unlink latency (about 13 ms per tag directory
// on an ext4 disk mounted with online discard); BERTH_BENCH_DIR=/dev/shm
// puts the data on tmpfs to measure berth and prune instead of the disk.
func BenchmarkPrune(b *testing.B) {
	for _, conc := range []int{1, DefaultConcurrency} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			reg := startBerthAt(b, os.Getenv("BERTH_BENCH_DIR"))
			pol, err := ParsePolicy("bench.yaml", []byte("rules:\n- repositories: [\"**\"]\n  keep: {latest: 10}\nsettings: {maxDeleteShare: 1}\n"))
			if err != nil {
				b.Fatal(err)
			}
			quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
			b.Logf("storage root %s", reg.Root)
			var plan, del time.Duration
			var retries int64
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				seedBench(b, reg, 100, 100, 5)
				b.StartTimer()
				rep, err := Run(context.Background(), RunOptions{Registry: reg.URL, Policy: pol, Concurrency: conc, Logger: quiet})
				if err != nil {
					b.Fatal(err)
				}
				if rep.Deleted != 9000 {
					b.Fatalf("deleted %d, want 9000", rep.Deleted)
				}
				retries += rep.Retries
				plan += rep.ListDuration
				del += rep.DeleteDuration
			}
			b.ReportMetric(plan.Seconds()/float64(b.N), "plan-s/op")
			b.ReportMetric(del.Seconds()/float64(b.N), "delete-s/op")
			b.ReportMetric(float64(retries)/float64(b.N), "retries/op")
		})
	}
}

func seedBench(b testing.TB, reg *registry, repos, tagsPerRepo, images int) {
	b.Helper()
	imgs := make([]v1.Image, images)
	for i := range imgs {
		imgs[i] = dockerImage(b)
	}
	for r := range repos {
		repo := fmt.Sprintf("bench/repo%03d", r)
		for i, img := range imgs {
			reg.push(repo, fmt.Sprintf("t%03d", i), img)
		}
		for i, img := range imgs {
			var tags []string
			for tg := images + i; tg < tagsPerRepo; tg += images {
				tags = append(tags, fmt.Sprintf("t%03d", tg))
			}
			reg.tag(repo, img, tags...)
		}
	}
}
