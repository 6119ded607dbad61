package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/berth-registry/berth/bench/internal/report"
	"github.com/berth-registry/berth/bench/internal/servers"
)

// options are the command-line settings of one run.
type options struct {
	Short bool
	Reps  int
	// JSONPath receives the JSON document; empty means a fresh file in
	// $TMPDIR (results are never written into the repository by default).
	JSONPath string
	CacheDir string
	// WorkDir is where the run's scratch directory is made (default
	// /dev/shm when it has room, else $TMPDIR).
	WorkDir string
	Keep    bool
	// Binaries; empty means build berth, install upstream, look for Debian's.
	BerthBin, UpstreamBin, DebianBin string
	NoDebian                         bool
	// Only runs these scenarios (see scenarios); empty runs all.
	Only []string
	Out  io.Writer
	Log  *slog.Logger
}

// binaries are the contenders' executables.
type binaries struct {
	berth, upstream, debian string
	// debianNA says why Debian's registry is not in the run.
	debianNA string
	// pruneNA and gcNA say why a berth command cannot run (not written yet).
	pruneNA, gcNA string
	// versitygw is the S3 server of the S3 rows; versitygwNA says why
	// there is none.
	versitygw, versitygwNA string
	subjects               []report.Subject
}

type bench struct {
	o    options
	sz   sizes
	res  *report.Results
	bin  binaries
	work string
	log  *slog.Logger
	// big describes each rep's big image, for the pulls and the storm.
	big map[int]bigInfo
}

// run executes every workload and writes the table and the JSON. It
// returns the document even when some rows failed, with an error naming
// them.
func run(ctx context.Context, o options) (*report.Doc, error) {
	if o.Reps < 1 {
		return nil, fmt.Errorf("-reps %d: want at least 1", o.Reps)
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	started := time.Now()
	bin, err := resolveBinaries(ctx, o)
	if err != nil {
		return nil, err
	}
	if o.WorkDir == "" {
		o.WorkDir = defaultWorkDir(o.Short)
	}
	work, err := os.MkdirTemp(o.WorkDir, "berth-bench-")
	if err != nil {
		return nil, fmt.Errorf("scratch dir: %w", err)
	}
	if o.Keep {
		o.Log.Info("keeping scratch dir", "dir", work)
	} else {
		defer os.RemoveAll(work)
	}
	b := &bench{o: o, sz: sizesFor(o.Short), res: report.NewResults(), bin: bin, work: work, log: o.Log, big: map[int]bigInfo{}}

	only, err := selectScenarios(o.Only)
	if err != nil {
		return nil, err
	}
	phases := map[string]func(context.Context){scServer: b.serverWorkloads, scS3: b.s3Workloads, scPrune: b.prune, scGC: b.gc}
	for _, sc := range scenarios {
		if ctx.Err() == nil && only[sc] {
			phases[sc](ctx)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("interrupted: %w", err)
	}

	doc := &report.Doc{
		Machine: machine(), Storage: describeStorage(o.WorkDir), Started: started, Duration: time.Since(started), Short: o.Short, Reps: o.Reps,
		Subjects: bin.subjects, Rows: b.res.Rows(selectRows(rowSpecs(b.sz), only)), Notes: b.res.Notes(),
	}
	if err := doc.Markdown(o.Out); err != nil {
		return doc, err
	}
	path := o.JSONPath
	if path == "" {
		path = filepath.Join(os.TempDir(), "berth-bench-"+started.Format("20060102-150405")+".json")
	}
	if err := writeJSON(path, doc); err != nil {
		return doc, err
	}
	o.Log.Info("wrote JSON", "path", path, "took", doc.Duration.Round(time.Second))
	if failed := doc.Failed(); len(failed) > 0 {
		ids := make([]string, len(failed))
		for i, r := range failed {
			ids[i] = r.ID
		}
		return doc, fmt.Errorf("%d rows failed: %s", len(failed), strings.Join(ids, "; "))
	}
	return doc, nil
}

func writeJSON(path string, doc *report.Doc) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write JSON: %w", err)
	}
	if err := doc.WriteJSON(f); err != nil {
		f.Close()
		return fmt.Errorf("write JSON %s: %w", path, err)
	}
	return f.Close()
}

func resolveBinaries(ctx context.Context, o options) (binaries, error) {
	var b binaries
	cache := o.CacheDir
	if cache == "" {
		var err error
		if cache, err = servers.DefaultCacheDir(); err != nil {
			return b, err
		}
	}
	b.berth = o.BerthBin
	if b.berth == "" {
		root, err := servers.ModuleRoot(ctx)
		if err != nil {
			return b, err
		}
		o.Log.Info("building berth", "into", cache)
		if b.berth, err = servers.BuildBerth(ctx, root, cache); err != nil {
			return b, err
		}
	}
	b.upstream = o.UpstreamBin
	if b.upstream == "" {
		o.Log.Info("installing upstream registry if needed", "version", servers.UpstreamVersion, "into", cache)
		var err error
		if b.upstream, err = servers.InstallUpstream(ctx, cache); err != nil {
			return b, err
		}
	}
	bv, err := servers.Version(ctx, b.berth, "version")
	if err != nil {
		return b, fmt.Errorf("berth binary: %w", err)
	}
	uv, err := servers.Version(ctx, b.upstream)
	if err != nil {
		return b, fmt.Errorf("upstream binary: %w", err)
	}
	b.subjects = append(b.subjects,
		report.Subject{Name: sBerth, Version: bv, Binary: b.berth},
		report.Subject{Name: sUpstream, Version: uv, Binary: b.upstream})

	switch {
	case o.NoDebian:
		b.debianNA = "disabled by -no-debian"
	case o.DebianBin != "":
		b.debian = o.DebianBin
		if v, err := servers.Version(ctx, b.debian); err != nil {
			return b, fmt.Errorf("debian binary: %w", err)
		} else {
			b.subjects = append(b.subjects, report.Subject{Name: sDebian, Version: v, Binary: b.debian})
		}
	default:
		path, v, err := servers.FindDebian(ctx)
		if err != nil {
			b.debianNA = err.Error()
		} else {
			b.debian = path
			b.subjects = append(b.subjects, report.Subject{Name: sDebian, Version: v, Binary: path})
		}
	}
	if b.debianNA != "" {
		b.subjects = append(b.subjects, report.Subject{Name: sDebian, NA: b.debianNA})
	}

	if p, err := servers.FindVersitygw(); err != nil {
		b.versitygwNA = err.Error()
		b.subjects = append(b.subjects, report.Subject{Name: sVersitygw, NA: b.versitygwNA})
	} else {
		b.versitygw = p
		b.subjects = append(b.subjects, report.Subject{Name: sVersitygw, Version: servers.VersitygwVersion(p), Binary: p})
	}

	if _, err := servers.Help(ctx, b.berth, "prune"); err != nil {
		b.pruneNA = err.Error()
	}
	if _, err := servers.Help(ctx, b.berth, "gc"); err != nil {
		b.gcNA = err.Error()
	}
	return b, nil
}

// rotate returns xs starting at index i mod len: each rep gives a different
// contender the first (possibly colder or noisier) slot.
func rotate[T any](xs []T, i int) []T {
	if len(xs) == 0 {
		return nil
	}
	i %= len(xs)
	return append(append([]T(nil), xs[i:]...), xs[:i]...)
}

// measure runs f and records its value, or the failure.
func (b *bench) measure(metric, subject string, f func() (float64, error)) {
	v, err := f()
	if err != nil {
		b.log.Error("workload failed", "metric", metric, "subject", subject, "err", err)
		b.res.Fail(metric, subject, err)
		return
	}
	b.log.Info("measured", "metric", metric, "subject", subject, "value", report.FormatValue(v))
	b.res.Add(metric, subject, v)
}

// slug makes a subject name usable as a directory name.
func slug(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '.', r == '-':
			return r
		}
		return '_'
	}, strings.ToLower(s))
}
