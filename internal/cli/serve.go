package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-registry/berth/internal/config"
	"github.com/berth-registry/berth/internal/maintenance"
	"github.com/berth-registry/berth/internal/server"
)

type serveFlags struct {
	configFile string
	o          config.Overrides
}

func newServeCommand() *cobra.Command {
	var f serveFlags
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the registry",
		Long: `Run the registry. With no flags it listens on 127.0.0.1:5000, stores images under ./berth-data,
caches blob descriptors in memory and needs no credentials (it only accepts local connections).
Metrics, /healthz and /readyz are served on the debug listener (127.0.0.1:5001), never on the registry port.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runServe(cmd.Context(), f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.configFile, "config", "", "configuration file (a registry:2/3 config.yml works unchanged; berth's settings go under `berth:`)")
	fl.StringVar(&f.o.Addr, "addr", "", "registry listen address (default 127.0.0.1:5000)")
	fl.StringVar(&f.o.DataDir, "data-dir", "", "filesystem storage root (default "+config.DefaultDataDir+")")
	fl.StringVar(&f.o.Htpasswd, "htpasswd", "", "htpasswd file (bcrypt) enabling basic auth; make entries with `berth htpasswd USER`")
	fl.StringVar(&f.o.TLSCert, "tls-cert", "", "TLS certificate file (re-read when it changes)")
	fl.StringVar(&f.o.TLSKey, "tls-key", "", "TLS private key file")
	fl.StringVar(&f.o.Redis, "redis", "", "Redis address host:port for the shared blob-descriptor cache and gc coordination")
	fl.StringVar(&f.o.RedisPasswordFile, "redis-password-file", "", "file holding the Redis password (or set BERTH_REDIS_PASSWORD)")
	fl.StringVar(&f.o.DebugAddr, "debug-addr", "", "metrics and health listen address (default 127.0.0.1:5001)")
	fl.StringVar(&f.o.LogFormat, "log-format", "", "log format: text or json")
	fl.BoolVar(&f.o.InsecurePublic, "insecure-public", false, "allow listening beyond loopback without authentication")
	return cmd
}

// loadConfig is the one path from flags to a validated configuration, shared
// by serve, gc and config check.
func loadConfig(path string, o config.Overrides) (*config.Config, error) {
	cfg, err := config.Load(path, os.Environ())
	if err != nil {
		return nil, err
	}
	if err := cfg.Apply(o); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

func runServe(ctx context.Context, f serveFlags) error {
	cfg, err := loadConfig(f.configFile, f.o)
	if err != nil {
		return err
	}
	log := newLogger(os.Stderr, cfg.Berth.Log.Format, slog.LevelInfo)
	srv, err := server.New(ctx, cfg, log)
	if err != nil {
		return fmt.Errorf("start registry: %w", err)
	}
	if err := srv.Listen(); err != nil {
		return err
	}

	id := replicaID()
	var backend maintenance.Backend
	if rc := srv.Redis(); rc != nil {
		backend = maintenance.NewRedis(rc, "berth:")
	} else {
		backend = maintenance.NewLocal()
	}
	rep := maintenance.NewReplica(backend, id, maintenance.Hooks{
		InFlightWrites: srv.InFlightWrites,
		FlushCache:     srv.FlushCache,
		FlushShared:    srv.FlushSharedCache,
	}, maintenance.ReplicaOptions{
		Poll:     cfg.Berth.Maintenance.Poll,
		LeaseTTL: cfg.Berth.Maintenance.LeaseTTL,
		Logger:   log.With("component", "maintenance"),
	})
	srv.SetGate(rep)
	srv.SetStatus("maintenance", func() any { return rep.Status() })

	// Background work outlives the request context until the server has
	// drained, so a replica keeps answering gc while it shuts down.
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBG()
	go func() { _ = rep.Run(bg) }()
	go func() { _ = maintenance.NewBeacon(srv.Driver(), id, maintenance.DefaultBeaconEvery).Run(bg) }()
	startSchedules(ctx, cfg, srv, backend, id, log)
	// The replica refuses writes until it has read the lease once (a gc may
	// be running); give it a moment so the first pushes are not bounced.
	// Reads are served regardless, so this never blocks start-up for long.
	for deadline := time.Now().Add(3 * cfg.Berth.Maintenance.Poll); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if refused, _ := rep.WritesRefused(); !refused {
			break
		}
	}

	return srv.Serve(ctx)
}

// startSchedules is replaced by the wiring of the in-process gc and prune
// schedules (schedule.go).
var startSchedules = func(ctx context.Context, cfg *config.Config, srv *server.Server, b maintenance.Backend, id string, log *slog.Logger) {
}

func replicaID() string {
	h, _ := os.Hostname()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return h + "-" + hex.EncodeToString(b)
}
