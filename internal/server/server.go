// Package server runs the registry: Distribution's handler behind berth's own
// http.Server and middleware, plus a private debug listener for metrics,
// health and status.
package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/distribution/distribution/v3/registry/auth"
	"github.com/distribution/distribution/v3/registry/handlers"
	"github.com/distribution/distribution/v3/registry/storage/cache"
	"github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"

	"github.com/berth-registry/berth/internal/blobcache"
	"github.com/berth-registry/berth/internal/config"
)

// Server is one berth registry process.
type Server struct {
	cfg     *config.Config
	log     *slog.Logger
	app     *handlers.App
	driver  driver.StorageDriver
	cache   blobcache.Provider // nil with cache "none"
	redisC  redis.UniversalClient
	redis   *blobcache.Redis
	metrics *metrics

	inflight atomic.Int64
	gate     atomic.Pointer[Gate]

	regSrv, dbgSrv *http.Server
	regLn, dbgLn   net.Listener
	certs          *certReloader

	statusMu sync.Mutex
	status   map[string]func() any

	secret   string
	internal internalApp
}

// New builds the server from a validated configuration. It opens storage
// (and writes the generated http secret there if none is configured) but
// does not listen yet.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger) (*Server, error) {
	s := &Server{cfg: cfg, log: log, metrics: getMetrics(), status: map[string]func() any{}}
	configureLogrus(cfg, log)

	d, err := cfg.StorageDriver(ctx)
	if err != nil {
		return nil, err
	}
	s.driver = d
	secret := cfg.Distribution.HTTP.Secret
	if secret == "" {
		if secret, err = persistedSecret(ctx, d); err != nil {
			return nil, err
		}
	}

	switch cfg.CacheType() {
	case "inmemory":
		size := 0
		if cc, ok := cfg.Distribution.Storage["cache"]; ok {
			if v, ok := cc["blobdescriptorsize"].(int); ok {
				size = v
			}
		}
		s.cache = blobcache.NewMemory(size)
	case "redis":
		s.redisC = cfg.RedisClient()
		s.redis = blobcache.NewRedis(s.redisC, log.With("component", "redis-cache"))
		s.cache = s.redis
		s.metrics.registerRedisGauge()
	}
	if s.redisC == nil {
		// Redis may be configured for coordination only (berth.cache: inmemory).
		s.redisC = cfg.RedisClient()
	}

	s.secret = secret
	dc := distributionConfig(cfg.Distribution, secret)
	app, err := newApp(ctx, dc, s.distributionCache())
	if err != nil {
		return nil, err
	}
	s.app = app

	var access auth.AccessController
	if t := dc.Auth.Type(); t != "" && !strings.EqualFold(t, "none") {
		access, err = auth.GetAccessController(t, dc.Auth.Parameters())
		if err != nil {
			return nil, fmt.Errorf("auth %s: %w", t, err)
		}
	}

	if c := cfg.Distribution.HTTP.TLS; c.Certificate != "" {
		if s.certs, err = newCertReloader(c.Certificate, c.Key, log); err != nil {
			return nil, err
		}
	}

	var h http.Handler = guardBlobReads(log.With("component", "http"), s.metrics, app)
	h = &tagTimes{driver: d, access: access, next: h}
	h = ociErrors(h) // OCI error answers instead of 500s and plain-text pages (oci.go)
	// --- oci11 (referrers API, OCI-Subject, sha512, foreign layers; oci11.go) ---
	// Outside ociErrors: it turns sha512 mounts into sha256 ones before
	// dropUnsafeMount would drop them.
	h = newOCI11(d, access, s.cache, cfg.Distribution, log, h)
	// --- end oci11 ---
	h = hygiene(h)
	h = gate(s.currentGate, &s.inflight, h)
	h = observe(log.With("component", "http"), s.metrics, h)
	s.regSrv = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if s.certs != nil {
		s.regSrv.TLSConfig = s.certs.tlsConfig()
	}
	s.dbgSrv = &http.Server{
		Handler:           s.debugMux(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	gaugeServer.Store(s)
	return s, nil
}

// configureLogrus sends Distribution's logrus output through berth's slog
// handler, so there is one log format. Its per-request "response completed"
// lines for client errors duplicate berth's access log and are dropped;
// server errors keep their detail.
func configureLogrus(cfg *config.Config, log *slog.Logger) {
	logrus.SetFormatter(slogFormatter{log: log.With("component", "distribution")})
	lvl := logrus.InfoLevel
	if l, err := logrus.ParseLevel(string(cfg.Distribution.Log.Level)); err == nil {
		lvl = l
	}
	logrus.SetLevel(lvl)
}

type slogFormatter struct{ log *slog.Logger }

func (f slogFormatter) Format(e *logrus.Entry) ([]byte, error) {
	if status, ok := e.Data["http.response.status"].(int); (ok && status < 500) || e.Message == "redis not configured" {
		return nil, nil
	}
	lvl := slog.LevelInfo
	switch {
	case e.Level <= logrus.ErrorLevel:
		lvl = slog.LevelError
	case e.Level == logrus.WarnLevel:
		lvl = slog.LevelWarn
	case e.Level >= logrus.DebugLevel:
		lvl = slog.LevelDebug
	}
	attrs := make([]any, 0, 2*len(e.Data))
	for k, v := range e.Data {
		switch k {
		case "go.version", "http.request.useragent", "instance.id", "service", "version", "environment":
			continue
		}
		attrs = append(attrs, k, v)
	}
	f.log.Log(context.Background(), lvl, e.Message, attrs...)
	return nil, nil
}

const secretPath = "/berth/http-secret"

// persistedSecret returns the http secret stored beside the data, creating
// it on first start. Upload URLs are signed with it, so it must survive
// restarts; replicas sharing storage share it (set http.secret explicitly
// when several replicas may start at the same moment for the first time).
func persistedSecret(ctx context.Context, d driver.StorageDriver) (string, error) {
	b, err := d.GetContent(ctx, secretPath)
	if err == nil && len(strings.TrimSpace(string(b))) >= 32 {
		return strings.TrimSpace(string(b)), nil
	}
	var nf driver.PathNotFoundError
	if err != nil && !errors.As(err, &nf) {
		return "", fmt.Errorf("read the http secret from storage: %w", err)
	}
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return "", err
	}
	secret := hex.EncodeToString(buf)
	if err := d.PutContent(ctx, secretPath, []byte(secret+"\n")); err != nil {
		return "", fmt.Errorf("store the generated http secret: %w", err)
	}
	return secret, nil
}

// distributionCache is the cache handed to Distribution: berth's own,
// filling paused while writes are refused for maintenance.
func (s *Server) distributionCache() cache.BlobDescriptorCacheProvider {
	if s.cache == nil {
		return nil
	}
	return blobcache.Gated(s.cache, func() bool {
		g := s.currentGate()
		if g == nil {
			return false
		}
		refused, _ := g.WritesRefused()
		return refused
	})
}

// FlushSharedCache drops the Redis blob-descriptor cache, when that is the
// cache in use.
func (s *Server) FlushSharedCache(ctx context.Context) error {
	if s.redis == nil {
		return nil
	}
	return s.redis.Flush(ctx)
}

// SetGate installs the maintenance gate (nil: writes always allowed).
func (s *Server) SetGate(g Gate) {
	if g == nil {
		s.gate.Store(nil)
		return
	}
	s.gate.Store(&g)
}

func (s *Server) currentGate() Gate {
	if p := s.gate.Load(); p != nil {
		return *p
	}
	return nil
}

// InFlightWrites is the number of write requests being served.
func (s *Server) InFlightWrites() int64 { return s.inflight.Load() }

// FlushCache forgets this process' in-memory blob descriptors. The Redis
// cache is shared and flushed by gc itself.
func (s *Server) FlushCache(ctx context.Context) error {
	if m, ok := s.cache.(*blobcache.Memory); ok {
		return m.Flush(ctx)
	}
	return nil
}

// Driver is the storage driver, for the jobs `serve` schedules.
func (s *Server) Driver() driver.StorageDriver { return s.driver }

// Redis is the configured Redis client, or nil.
func (s *Server) Redis() redis.UniversalClient { return s.redisC }

// SetStatus adds a section to /debug/berth/status.
func (s *Server) SetStatus(name string, fn func() any) {
	s.statusMu.Lock()
	defer s.statusMu.Unlock()
	s.status[name] = fn
}

// Listen binds both listeners, so callers know the addresses (":0" works).
func (s *Server) Listen() error {
	var err error
	if s.regLn, err = net.Listen("tcp", s.cfg.Distribution.HTTP.Addr); err != nil {
		return fmt.Errorf("registry listener: %w", err)
	}
	if s.dbgLn, err = net.Listen("tcp", s.cfg.Berth.Debug.Addr); err != nil {
		s.regLn.Close()
		return fmt.Errorf("debug listener: %w", err)
	}
	return nil
}

// Addr is the registry listener's address (after Listen).
func (s *Server) Addr() string { return s.regLn.Addr().String() }

// DebugAddr is the debug listener's address (after Listen).
func (s *Server) DebugAddr() string { return s.dbgLn.Addr().String() }

// TLS reports whether the registry port speaks TLS.
func (s *Server) TLS() bool { return s.certs != nil }

// Serve serves until ctx ends, then stops accepting, lets requests in
// flight finish within the shutdown grace, and returns nil on a clean stop.
func (s *Server) Serve(ctx context.Context) error {
	if s.regLn == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBG()
	if s.redis != nil {
		go s.redis.Run(bg, 2*time.Second)
	}
	errc := make(chan error, 2)
	go func() {
		var err error
		if s.certs != nil {
			err = s.regSrv.ServeTLS(s.regLn, "", "")
		} else {
			err = s.regSrv.Serve(s.regLn)
		}
		errc <- err
	}()
	go func() { errc <- s.dbgSrv.Serve(s.dbgLn) }()
	s.log.Info("registry listening", "addr", s.Addr(), "tls", s.certs != nil, "auth", s.cfg.AuthEnabled(),
		"cache", s.cfg.CacheType(), "storage", s.cfg.Distribution.Storage.Type())
	s.log.Info("debug listener (metrics, /healthz, /readyz)", "addr", s.DebugAddr())

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			runErr = err
		}
	}
	grace := s.cfg.Berth.ShutdownGrace
	s.log.Info("shutting down", "grace", grace)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	if err := s.regSrv.Shutdown(sctx); err != nil {
		s.log.Warn("requests still running at the end of the grace period were cut", "err", err)
		_ = s.regSrv.Close()
	}
	_ = s.dbgSrv.Shutdown(sctx)
	_ = s.app.Shutdown()
	if s.internal.app != nil {
		_ = s.internal.app.Shutdown()
	}
	if s.redisC != nil {
		_ = s.redisC.Close()
	}
	return runErr
}

// Close stops the server at once (tests).
func (s *Server) Close() {
	_ = s.regSrv.Close()
	_ = s.dbgSrv.Close()
	_ = s.app.Shutdown()
}

func (s *Server) debugMux() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.HandleFunc("GET /debug/berth/status", func(w http.ResponseWriter, r *http.Request) {
		s.statusMu.Lock()
		out := map[string]any{}
		for k, fn := range s.status {
			out[k] = fn()
		}
		s.statusMu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(out)
	})
	return mux
}

// readyz is 503 only when storage cannot be read: that is what serving
// needs. Redis is a cache, so a Redis outage shows as "degraded" with 200 —
// taking every replica out of the Service because the cache is down would
// turn a slowdown into an outage.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	checks := map[string]string{}
	status, code := "ok", http.StatusOK
	if _, err := s.driver.Stat(ctx, "/docker/registry/v2"); err != nil {
		var nf driver.PathNotFoundError
		if !errors.As(err, &nf) {
			s.metrics.storageErrors.Inc()
			checks["storage"] = "unavailable"
			status, code = "unavailable", http.StatusServiceUnavailable
			s.log.Warn("readiness: storage check failed", "err", err)
		}
	}
	if _, ok := checks["storage"]; !ok {
		checks["storage"] = "ok"
	}
	// With the Redis cache, report whether the cache is in use (reachable
	// and flushed after an outage); otherwise whether Redis answers.
	if s.redis != nil {
		if s.redis.Up() {
			checks["redis"] = "ok"
		} else {
			checks["redis"] = "unreachable"
			if status == "ok" {
				status = "degraded"
			}
		}
	} else if s.redisC != nil {
		if err := s.redisC.Ping(ctx).Err(); err != nil {
			checks["redis"] = "unreachable"
			if status == "ok" {
				status = "degraded"
			}
		} else {
			checks["redis"] = "ok"
		}
	}
	if g := s.currentGate(); g != nil {
		if ro, _ := g.WritesRefused(); ro {
			checks["maintenance"] = "read-only"
		} else {
			checks["maintenance"] = "read-write"
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"status": status, "checks": checks})
}
