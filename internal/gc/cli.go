package gc

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-registry/berth/internal/blobcache"
	"github.com/berth-registry/berth/internal/config"
	"github.com/berth-registry/berth/internal/maintenance"
)

// RedisPrefix is where berth keeps its own keys (the maintenance lease).
const RedisPrefix = "berth:"

// ExitError carries the process exit status: 2 for usage and configuration
// problems, 1 for failures and partial failures.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// ExitCode is what the root command exits with.
func (e *ExitError) ExitCode() int { return e.Code }

func usage(format string, args ...any) error {
	return &ExitError{Code: 2, Err: fmt.Errorf(format, args...)}
}

type cliFlags struct {
	configFile      string
	dataDir         string
	dryRun          bool
	deleteUntagged  bool
	output          string
	registryStopped bool
	leaseTTL        time.Duration
	concurrency     int
}

// NewCommand returns `berth gc`.
func NewCommand() *cobra.Command {
	var f cliFlags
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "Delete blobs and manifests nothing refers to",
		Long: `Collect garbage: delete blobs no manifest refers to, manifests no tag refers to (with
--delete-untagged), and upload sessions older than berth.gc.uploadmaxage.

While gc deletes, every replica refuses writes (503 UNAVAILABLE with Retry-After) and keeps serving
reads. With Redis configured (redis.addrs) gc coordinates through it; the read-only state is a lease
that ends by itself (berth.maintenance.leasettl) if gc dies. Without Redis, gc refuses to run while a
registry uses the storage, unless you stop the registry and pass --registry-stopped.

Kept: tagged manifests; children of kept indexes; referrers (signatures, SBOMs) of kept manifests,
including referrer tags "sha256-<digest>[.sig]"; anything pushed within berth.gc.blobgrace.
A dry run prints the same report as a real run and deletes nothing.
Exit status: 0 done, 1 failed or partially failed (rerunning is safe), 2 usage or configuration.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runCLI(cmd.Context(), f, cmd.Flags().Changed("lease-ttl"), cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.configFile, "config", "", "configuration file (the one berth serve uses)")
	fl.StringVar(&f.dataDir, "data-dir", "", "filesystem storage root (default "+config.DefaultDataDir+" without --config)")
	fl.BoolVar(&f.dryRun, "dry-run", false, "report what would be deleted, delete nothing")
	fl.BoolVar(&f.deleteUntagged, "delete-untagged", false, "also delete manifests no tag refers to (or set berth.gc.deleteuntagged)")
	fl.StringVar(&f.output, "output", "text", "report format: text or json")
	fl.BoolVar(&f.registryStopped, "registry-stopped", false, "confirm no registry writes to the storage (needed without Redis while a server's beacon is fresh)")
	fl.DurationVar(&f.leaseTTL, "lease-ttl", 0, "read-only lease TTL (default berth.maintenance.leasettl, 30s)")
	fl.IntVar(&f.concurrency, "concurrency", DefaultConcurrency, "storage requests in flight at once, 1-256 (on S3 a deletion request carries up to 1,000 keys)")
	return cmd
}

func runCLI(ctx context.Context, f cliFlags, leaseTTLSet bool, out, errw io.Writer) error {
	if f.output != "text" && f.output != "json" {
		return usage("--output must be text or json, got %q", f.output)
	}
	if f.concurrency < 1 || f.concurrency > 256 {
		return usage("--concurrency must be between 1 and 256, got %d", f.concurrency)
	}
	cfg, err := config.Load(f.configFile, os.Environ())
	if err == nil {
		err = cfg.Apply(config.Overrides{DataDir: f.dataDir})
	}
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		return &ExitError{Code: 2, Err: err}
	}
	log := newLogger(errw, cfg.Berth.Log.Format)

	ttl, poll := cfg.Berth.Maintenance.LeaseTTL, cfg.Berth.Maintenance.Poll
	if leaseTTLSet {
		ttl = f.leaseTTL
	}
	if err := maintenance.ValidateTiming(ttl, poll); err != nil {
		return usage("--lease-ttl: %v", err)
	}

	d, err := cfg.StorageDriver(ctx)
	if err != nil {
		return &ExitError{Code: 2, Err: err}
	}
	files, err := FileDeleterFor(cfg.Distribution.Storage.Type(), cfg.Distribution.Storage.Parameters())
	if err != nil {
		return &ExitError{Code: 2, Err: err}
	}
	opts := Options{
		Driver:         d,
		Files:          files,
		DryRun:         f.dryRun,
		DeleteUntagged: f.deleteUntagged || cfg.Berth.GC.DeleteUntagged,
		UploadMaxAge:   cfg.Berth.GC.UploadMaxAge,
		BlobGrace:      cfg.Berth.GC.BlobGrace,
		Concurrency:    f.concurrency,
		PreScan:        true,
		Logger:         log,
	}

	if rc := cfg.RedisClient(); rc != nil {
		defer rc.Close()
		b := maintenance.NewRedis(rc, RedisPrefix)
		opts.Coordinator = maintenance.NewCoordinator(b, holderName(), maintenance.CoordinatorOptions{
			LeaseTTL: ttl, ReplicaPoll: poll, Logger: log})
		opts.FlushRedis = func(ctx context.Context) error { return blobcache.FlushRedis(ctx, rc) }
	} else {
		live, err := maintenance.LiveBeacons(ctx, d, maintenance.DefaultBeaconMaxAge)
		if err != nil {
			return &ExitError{Code: 1, Err: fmt.Errorf("check whether a registry uses this storage: %w", err)}
		}
		switch {
		case len(live) == 0:
		case f.registryStopped:
			log.Warn("proceeding because of --registry-stopped although servers signalled recently", "servers", live)
		case f.dryRun:
			log.Warn("a registry is using this storage; the dry run shows what would be deleted right now", "servers", live)
		default:
			return usage("refusing to collect garbage: a running registry uses this storage (%s) and gc has no way "+
				"to make it read-only. Configure Redis (redis.addrs) so gc can coordinate with it, or stop the "+
				"registry and re-run with --registry-stopped", strings.Join(live, ", "))
		}
	}

	rep, runErr := Run(ctx, opts)
	if rep != nil {
		var err error
		if f.output == "json" {
			err = rep.WriteJSON(out)
		} else {
			err = rep.WriteText(out)
		}
		if err != nil && runErr == nil {
			runErr = fmt.Errorf("write report: %w", err)
		}
	}
	if runErr != nil {
		return &ExitError{Code: 1, Err: runErr}
	}
	return nil
}

// holderName identifies this gc run in the lease and in replicas' logs.
func holderName() string {
	host, _ := os.Hostname()
	if host == "" {
		host = "unknown-host"
	}
	return fmt.Sprintf("berth-gc/%s/%d", host, os.Getpid())
}

func newLogger(w io.Writer, format string) *slog.Logger {
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, nil))
	}
	return slog.New(slog.NewTextHandler(w, nil))
}
