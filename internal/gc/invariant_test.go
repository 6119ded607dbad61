package gc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/redis/go-redis/v9"

	"github.com/berth-registry/berth/internal/blobcache"
	"github.com/berth-registry/berth/internal/gc"
	"github.com/berth-registry/berth/internal/maintenance"
	"github.com/berth-registry/berth/internal/testutil"
)

// The invariant test from the gc issue: pushers, pullers and tag deletions
// run against berth while gc runs again and again with --delete-untagged.
// Afterwards every image whose manifest PUT succeeded and whose tag was not
// deleted pulls completely with every blob verified, no pull of a live
// image failed meanwhile, and every write refused during maintenance
// succeeded on retry. Once with the in-memory cache (gc in-process, as the
// schedule in serve runs it) and once with Redis and two replicas.

const loadFor = 12 * time.Second

// loadGrace is gc's blob grace period under load. It protects layers
// uploaded for a manifest not pushed yet, so it must outlast most pushes;
// pushes here keep meeting read-only windows and backing off, so it is
// seconds rather than the hour berth defaults to.
const loadGrace = 4 * time.Second

// countingTransport counts writes refused for maintenance.
type countingTransport struct {
	next    http.RoundTripper
	refused atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(r)
	if err == nil && resp.StatusCode == http.StatusServiceUnavailable && r.Method != http.MethodGet && r.Method != http.MethodHead {
		c.refused.Add(1)
	}
	return resp, err
}

type image struct {
	ref string // repository:tag
	img v1.Image
	dg  v1.Hash
}

type workload struct {
	t      *testing.T
	hosts  []string
	tr     *countingTransport
	opts   []remote.Option
	gcOnce func(ctx context.Context, grace time.Duration) (*gc.Report, error)

	mu       sync.Mutex
	live     []image // pushed, tag never deleted: must pull at every moment
	doomed   []image // pushed, tag to be deleted
	deleted  []image // tag deleted: gc may collect it
	failures []string
	// repushed counts pushes repeated because they outlived the grace period.
	repushed atomic.Int64

	reports []*gc.Report
}

func newWorkload(t *testing.T, hosts []string, gcOnce func(context.Context, time.Duration) (*gc.Report, error)) *workload {
	tr := &countingTransport{next: http.DefaultTransport}
	return &workload{t: t, hosts: hosts, tr: tr, gcOnce: gcOnce, opts: []remote.Option{
		remote.WithTransport(tr),
		// Enough retries to outlast a read-only window several times over.
		remote.WithRetryBackoff(remote.Backoff{Duration: 100 * time.Millisecond, Factor: 1.5, Jitter: 0.1, Steps: 10}),
	}}
}

func (w *workload) fail(format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.failures = append(w.failures, fmt.Sprintf(format, args...))
}

func (w *workload) ref(host, s string) name.Reference {
	r, err := name.ParseReference(host+"/"+s, name.Insecure)
	if err != nil {
		w.t.Fatal(err)
	}
	return r
}

func (w *workload) host(i int) string { return w.hosts[i%len(w.hosts)] }

func (w *workload) push(ctx context.Context, host, ref string, img v1.Image) error {
	opts := append([]remote.Option{remote.WithContext(ctx)}, w.opts...)
	return remote.Write(w.ref(host, ref), img, opts...)
}

func (w *workload) pull(ctx context.Context, host string, im image) error {
	opts := append([]remote.Option{remote.WithContext(ctx)}, w.opts...)
	img, err := remote.Image(w.ref(host, im.ref), opts...)
	if err != nil {
		return err
	}
	if got, err := img.Digest(); err != nil || got != im.dg {
		return fmt.Errorf("%s resolves to %v (%v), pushed %s", im.ref, got, err, im.dg)
	}
	return validate.Image(img)
}

// outlivedGrace reports a manifest refused for a missing layer by a push
// that started longer than loadGrace ago.
func outlivedGrace(err error, start time.Time) bool {
	var te *transport.Error
	if !errors.As(err, &te) || time.Since(start) <= loadGrace {
		return false
	}
	for _, d := range te.Errors {
		if d.Code == transport.ManifestBlobUnknownErrorCode {
			return true
		}
	}
	return false
}

// smallImage is a one-layer image, plus base when given. It is called from
// worker goroutines, where t.Fatal is not allowed; random images do not fail.
func smallImage(_ *testing.T, base v1.Layer) v1.Image {
	img, err := random.Image(256, 1)
	if err == nil && base != nil {
		img, err = mutate.AppendLayers(img, base)
	}
	if err != nil {
		panic(err)
	}
	return mutate.MediaType(img, types.OCIManifestSchema1)
}

func (w *workload) pusher(ctx context.Context, k int) {
	base, err := random.Layer(512, types.DockerLayer)
	if err != nil {
		w.t.Error(err)
		return
	}
	rng := rand.New(rand.NewPCG(uint64(k), 7))
	for n := 0; ctx.Err() == nil; n++ {
		host := w.host(k + n)
		var im image
		var into *[]image
		w.mu.Lock()
		switch {
		case n%3 == 0:
			im, into = image{ref: fmt.Sprintf("inv/doomed:d%d-%d", k, n), img: smallImage(w.t, nil)}, &w.doomed
		case n%4 == 1 && len(w.deleted) > 0:
			// An image whose tag was deleted, probably collected by now:
			// pushing it again must upload it again.
			old := w.deleted[rng.IntN(len(w.deleted))]
			im, into = image{ref: fmt.Sprintf("inv/repush:r%d-%d", k, n), img: old.img}, &w.live
		default:
			im, into = image{ref: fmt.Sprintf("inv/p%d:t%d", k, n), img: smallImage(w.t, base)}, &w.live
		}
		w.mu.Unlock()
		start := time.Now()
		err := w.push(ctx, host, im.ref, im.img)
		if outlivedGrace(err, start) && ctx.Err() == nil {
			// On a loaded machine a push that kept backing off can take
			// longer than the grace period; gc may then collect its layers
			// before the manifest arrives, and the registry refuses the
			// manifest. Nothing pushed successfully is lost, and a client
			// pushes again, which uploads what is missing. Within the grace
			// period the same refusal stays a failure.
			w.repushed.Add(1)
			err = w.push(ctx, host, im.ref, im.img)
		}
		if err != nil {
			if ctx.Err() == nil {
				w.fail("push %s via %s (after %s): %v", im.ref, host, time.Since(start).Round(time.Millisecond), err)
			}
			return
		}
		dg, err := im.img.Digest()
		if err != nil {
			w.t.Error(err)
			return
		}
		im.dg = dg
		w.mu.Lock()
		*into = append(*into, im)
		w.mu.Unlock()
	}
}

func (w *workload) puller(ctx context.Context, k int) {
	rng := rand.New(rand.NewPCG(uint64(k), 11))
	for n := 0; ctx.Err() == nil; n++ {
		w.mu.Lock()
		if len(w.live) == 0 {
			w.mu.Unlock()
			waitABit(ctx)
			continue
		}
		im := w.live[rng.IntN(len(w.live))]
		w.mu.Unlock()
		host := w.host(k + n)
		if err := w.pull(ctx, host, im); err != nil && ctx.Err() == nil {
			w.fail("pull of live %s via %s during the run: %v", im.ref, host, err)
		}
	}
}

// waitABit paces a worker that has nothing to do yet.
func waitABit(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-time.After(20 * time.Millisecond):
	}
}

// deleter removes doomed tags between gc runs.
func (w *workload) deleteSome(ctx context.Context, n int) {
	for range n {
		w.mu.Lock()
		if len(w.doomed) == 0 {
			w.mu.Unlock()
			return
		}
		im := w.doomed[0]
		w.doomed = w.doomed[1:]
		w.mu.Unlock()
		opts := append([]remote.Option{remote.WithContext(ctx)}, w.opts...)
		if err := remote.Delete(w.ref(w.host(len(im.ref)), im.ref), opts...); err != nil {
			if ctx.Err() == nil {
				w.fail("delete tag %s: %v", im.ref, err)
			}
			return
		}
		w.mu.Lock()
		w.deleted = append(w.deleted, im)
		w.mu.Unlock()
	}
}

func (w *workload) collector(ctx context.Context) {
	for ctx.Err() == nil {
		w.deleteSome(ctx, 3)
		rep, err := w.gcOnce(ctx, loadGrace)
		if err != nil {
			if ctx.Err() == nil {
				w.fail("gc: %v", err)
			}
			return
		}
		w.mu.Lock()
		w.reports = append(w.reports, rep)
		w.mu.Unlock()
		// Leave writers some air between runs.
		select {
		case <-ctx.Done():
		case <-time.After(400 * time.Millisecond):
		}
	}
}

func (w *workload) run() {
	ctx, cancel := context.WithTimeout(context.Background(), loadFor)
	defer cancel()
	var wg sync.WaitGroup
	for k := range 3 {
		wg.Go(func() { w.pusher(ctx, k) })
	}
	for k := range 2 {
		wg.Go(func() { w.puller(ctx, k) })
	}
	wg.Go(func() { w.collector(ctx) })
	wg.Wait()
}

// check asserts the invariants after the load.
func (w *workload) check() {
	t := w.t
	ctx := context.Background()
	for _, f := range w.failures {
		t.Error(f)
	}
	var removed, runs int
	var window time.Duration
	for _, r := range w.reports {
		removed += r.ManifestsRemoved
		window += r.ReadOnly
		runs++
		if r.Coordination != "lease" {
			t.Errorf("gc ran without the lease: %+v", r)
		}
	}
	if runs < 3 || removed == 0 {
		t.Errorf("%d gc runs removed %d manifests: the load did not exercise gc", runs, removed)
	}
	for i, im := range w.live {
		if err := w.pull(ctx, w.host(i), im); err != nil {
			t.Errorf("live image %s after the run: %v", im.ref, err)
		}
	}
	t.Logf("%d gc runs, %d manifests removed, writes refused %s in total, %d writes refused and retried, %d pushes repeated after outliving the grace period; %d live images verified, %d tags deleted",
		runs, removed, window.Round(time.Millisecond), w.tr.refused.Load(), w.repushed.Load(), len(w.live), len(w.deleted))
}

// collectedThenRepushed deterministically covers the cache bug of
// distribution#2945: images whose descriptors every replica has cached are
// deleted and collected, then pushed again through every replica; the push
// must upload them again and they must pull.
func (w *workload) collectedThenRepushed() {
	t := w.t
	ctx := context.Background()
	var ims []image
	for i := range 2 {
		im := image{ref: fmt.Sprintf("inv/cached:c%d", i), img: smallImage(t, nil)}
		if err := w.push(ctx, w.host(i), im.ref, im.img); err != nil {
			t.Fatal(err)
		}
		im.dg, _ = im.img.Digest()
		for h := range w.hosts {
			if err := w.pull(ctx, w.host(h), im); err != nil { // fills every replica's cache
				t.Fatal(err)
			}
		}
		if err := remote.Delete(w.ref(w.host(i), im.ref), w.opts...); err != nil {
			t.Fatal(err)
		}
		ims = append(ims, im)
	}
	rep, err := w.gcOnce(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if rep.ManifestsRemoved < len(ims) {
		t.Fatalf("final gc removed %d manifests; want at least %d", rep.ManifestsRemoved, len(ims))
	}
	for i, im := range ims {
		for h := range w.hosts {
			ref := fmt.Sprintf("inv/cached:again%d-%d", i, h)
			if err := w.push(ctx, w.host(h), ref, im.img); err != nil {
				t.Fatalf("re-push %s via %s: %v", ref, w.host(h), err)
			}
			for p := range w.hosts {
				if err := w.pull(ctx, w.host(p), image{ref: ref, img: im.img, dg: im.dg}); err != nil {
					t.Errorf("collected image pushed again as %s via %s, pulled via %s: %v", ref, w.host(h), w.host(p), err)
				}
			}
		}
	}
}

// refusedThenRetried shows a write refused during maintenance succeeding
// once the lease ends.
func refusedThenRetried(t *testing.T, w *workload, b maintenance.Backend) {
	ctx := context.Background()
	lease, err := maintenance.NewCoordinator(b, "test-holder", maintenance.CoordinatorOptions{
		LeaseTTL: 5 * time.Second, ReplicaPoll: 100 * time.Millisecond}).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before := w.tr.refused.Load()
	done := make(chan error, 1)
	go func() { done <- w.push(ctx, w.host(0), "inv/refused:r", smallImage(t, nil)) }()
	testutil.Eventually(t, 10*time.Second, "a write refused for maintenance", func() bool { return w.tr.refused.Load() > before })
	if err := lease.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("refused write did not succeed on retry: %v", err)
	}
}

func quietLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func TestInvariantInMemoryCache(t *testing.T) {
	b := testutil.StartBerth(t, testutil.Options{})
	d, err := b.Config.StorageDriver(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	cache := gc.NewManifestCache()
	w := newWorkload(t, []string{b.Host}, func(ctx context.Context, grace time.Duration) (*gc.Report, error) {
		return gc.Run(ctx, gc.Options{Driver: d, DeleteUntagged: true, BlobGrace: grace, PreScan: true, Cache: cache,
			Logger: quietLogger(),
			Coordinator: maintenance.NewCoordinator(b.Backend, "in-process-gc", maintenance.CoordinatorOptions{
				LeaseTTL: 5 * time.Second, ReplicaPoll: b.Config.Berth.Maintenance.Poll, Logger: quietLogger()})})
	})
	w.run()
	w.check()
	w.collectedThenRepushed()
	refusedThenRetried(t, w, b.Backend)
}

func TestInvariantRedisTwoReplicas(t *testing.T) {
	r := testutil.StartRedis(t)
	b1 := testutil.StartBerth(t, testutil.Options{Redis: r.Addr})
	b2 := testutil.StartBerth(t, testutil.Options{Redis: r.Addr, Root: b1.Root})
	rc := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer rc.Close()
	d, err := b1.Config.StorageDriver(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	backend := maintenance.NewRedis(rc, gc.RedisPrefix)
	w := newWorkload(t, []string{b1.Host, b2.Host}, func(ctx context.Context, grace time.Duration) (*gc.Report, error) {
		return gc.Run(ctx, gc.Options{Driver: d, DeleteUntagged: true, BlobGrace: grace, PreScan: true,
			Logger:     quietLogger(),
			FlushRedis: func(ctx context.Context) error { return blobcache.FlushRedis(ctx, rc) },
			Coordinator: maintenance.NewCoordinator(backend, "redis-gc", maintenance.CoordinatorOptions{
				LeaseTTL: 5 * time.Second, ReplicaPoll: b1.Config.Berth.Maintenance.Poll, Logger: quietLogger()})})
	})
	w.run()
	w.check()
	w.collectedThenRepushed()
	refusedThenRetried(t, w, backend)
}

// TestInvariantS3TwoReplicas is the invariant on shared object storage, the
// setup S3 exists for: two replicas on one bucket of a real S3 server,
// coordinated through Redis, gc listing through the s3-aws driver and
// deleting in DeleteObjects batches, as `berth gc` does, while both serve.
func TestInvariantS3TwoReplicas(t *testing.T) {
	s3 := testutil.StartS3(t)
	r := testutil.StartRedis(t)
	b1 := testutil.StartBerth(t, testutil.Options{ConfigYAML: s3.ConfigYAML(), Redis: r.Addr})
	b2 := testutil.StartBerth(t, testutil.Options{ConfigYAML: s3.ConfigYAML(), Redis: r.Addr})
	rc := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer rc.Close()
	// gc opens the store from the same configuration, as `berth gc --config` does.
	d, err := b1.Config.StorageDriver(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if d.Name() != "s3aws" {
		t.Fatalf("storage driver %q; want s3aws", d.Name())
	}
	files, err := gc.FileDeleterFor(b1.Config.Distribution.Storage.Type(), b1.Config.Distribution.Storage.Parameters())
	if err != nil || files == nil {
		t.Fatalf("batch deleter for s3: %v, %v", files, err)
	}
	backend := maintenance.NewRedis(rc, gc.RedisPrefix)
	w := newWorkload(t, []string{b1.Host, b2.Host}, func(ctx context.Context, grace time.Duration) (*gc.Report, error) {
		return gc.Run(ctx, gc.Options{Driver: d, Files: files, DeleteUntagged: true, BlobGrace: grace, PreScan: true,
			Logger:     quietLogger(),
			FlushRedis: func(ctx context.Context) error { return blobcache.FlushRedis(ctx, rc) },
			Coordinator: maintenance.NewCoordinator(backend, "s3-gc", maintenance.CoordinatorOptions{
				LeaseTTL: 5 * time.Second, ReplicaPoll: b1.Config.Berth.Maintenance.Poll, Logger: quietLogger()})})
	})
	w.run()
	w.check()
	w.collectedThenRepushed()
	refusedThenRetried(t, w, backend)
}

// berthBinary builds the berth command, or the gc-only stand-in while
// cmd/berth does not offer gc yet.
func berthBinary(t *testing.T) []string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "berth")
	build := func(pkg string) error {
		out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput()
		if err != nil {
			return fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
		return nil
	}
	deps, err := exec.Command("go", "list", "-deps", "../../cmd/berth").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	if strings.Contains(string(deps), "berth/internal/gc\n") {
		if err := build("../../cmd/berth"); err != nil {
			t.Fatal(err)
		}
		return []string{bin, "gc"}
	}
	t.Log("cmd/berth has no gc command yet; using internal/gc/testdata/gcmain")
	if err := build("./testdata/gcmain"); err != nil {
		t.Fatal(err)
	}
	return []string{bin}
}

func TestKillGCMidRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the berth binary")
	}
	gcCmd := berthBinary(t)
	r := testutil.StartRedis(t)
	b := testutil.StartBerth(t, testutil.Options{Redis: r.Addr})
	rc := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer rc.Close()
	backend := maintenance.NewRedis(rc, gc.RedisPrefix)
	ctx := context.Background()

	w := newWorkload(t, []string{b.Host}, nil)
	var kept []image
	for i := range 4 {
		im := image{ref: fmt.Sprintf("kill/app:v%d", i), img: smallImage(t, nil)}
		if err := w.push(ctx, b.Host, im.ref, im.img); err != nil {
			t.Fatal(err)
		}
		im.dg, _ = im.img.Digest()
		if i%2 == 0 {
			if err := remote.Delete(w.ref(b.Host, im.ref)); err != nil {
				t.Fatal(err)
			}
		} else {
			kept = append(kept, im)
		}
	}

	cfg := filepath.Join(t.TempDir(), "config.yml")
	doc := fmt.Sprintf("version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\n"+
		"redis:\n  addrs: [%s]\nberth:\n  maintenance:\n    poll: 100ms\n  gc:\n    blobgrace: 0s\n", b.Root, r.Addr)
	if err := os.WriteFile(cfg, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append(gcCmd[1:], "--config", cfg, "--delete-untagged", "--lease-ttl", "2s", "--output", "json")

	// A write in flight keeps gc waiting inside its lease for the drain: the
	// moment to kill it is then certain, not a race with a fast sweep.
	pr, pw := io.Pipe()
	upload := startSlowUpload(t, b.Host, pr)
	testutil.Eventually(t, 10*time.Second, "the upload is in flight", func() bool { return b.Server.InFlightWrites() > 0 })

	var stderr bytes.Buffer
	cmd := exec.Command(gcCmd[0], args...)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "gc holds the lease", func() bool {
		st, err := backend.State(ctx)
		return err == nil && st.Active && strings.Contains(st.Holder, "berth-gc")
	})
	if refused, _ := b.Replica.WritesRefused(); !refused {
		testutil.Eventually(t, 5*time.Second, "the replica refuses writes", func() bool {
			refused, _ := b.Replica.WritesRefused()
			return refused
		})
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	pw.Close()
	<-upload

	testutil.Eventually(t, 10*time.Second, "the abandoned lease expires", func() bool {
		st, err := backend.State(ctx)
		return err == nil && !st.Active
	})
	testutil.Eventually(t, 5*time.Second, "the registry is writable again", func() bool {
		refused, _ := b.Replica.WritesRefused()
		return !refused
	})
	for _, im := range kept {
		if err := w.pull(ctx, b.Host, im); err != nil {
			t.Errorf("%s after gc was killed: %v", im.ref, err)
		}
	}

	out, err := exec.Command(gcCmd[0], args...).Output()
	if err != nil {
		t.Fatalf("rerun after the kill: %v\n%s", err, out)
	}
	var rep map[string]any
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("rerun report: %v\n%s", err, out)
	}
	if rep["coordination"] != "lease" || rep["manifestsRemoved"] != 2.0 {
		t.Fatalf("rerun report: %s", out)
	}
	for _, im := range kept {
		if err := w.pull(ctx, b.Host, im); err != nil {
			t.Errorf("%s after the rerun: %v", im.ref, err)
		}
	}
	if err := w.push(ctx, b.Host, "kill/app:after", smallImage(t, nil)); err != nil {
		t.Fatalf("push after the rerun: %v", err)
	}
}

// startSlowUpload starts a blob upload whose PATCH body streams from body,
// so the write stays in flight until body is closed.
func startSlowUpload(t *testing.T, host string, body io.Reader) <-chan struct{} {
	t.Helper()
	resp, err := http.Post("http://"+host+"/v2/kill/slow/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusAccepted || loc == "" {
		t.Fatalf("start upload: %s", resp.Status)
	}
	if !strings.HasPrefix(loc, "http") {
		loc = "http://" + host + loc
	}
	req, err := http.NewRequest(http.MethodPatch, loc, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	done := make(chan struct{})
	started := make(chan struct{})
	go func() {
		defer close(done)
		close(started)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	<-started
	return done
}
