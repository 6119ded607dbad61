package server

import (
	"context"
	"fmt"
	"net/http"
	"sync"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
)

// internalApp is a second Distribution handler over the same storage and the
// same cache, without authentication, for jobs that `serve` runs itself (the
// prune schedule). It is reachable only through InternalTransport, never
// from the network, and it sits behind the same maintenance gate.
type internalApp struct {
	once sync.Once
	h    http.Handler
	app  *handlers.App
	err  error
}

// InternalTransport returns a RoundTripper that serves requests in-process
// with full access, so scheduled jobs need no credentials. Its requests go
// through the maintenance gate like any other.
func (s *Server) InternalTransport(ctx context.Context) (http.RoundTripper, error) {
	s.internal.once.Do(func() {
		dc := distributionConfig(s.cfg.Distribution, s.secret)
		dc.Auth = nil
		// One upload purger per process is enough.
		st := configuration.Storage{}
		for k, v := range dc.Storage {
			st[k] = v
		}
		m := configuration.Parameters{}
		for k, v := range st["maintenance"] {
			m[k] = v
		}
		m["uploadpurging"] = map[any]any{"enabled": false}
		st["maintenance"] = m
		dc.Storage = st
		app, err := newApp(ctx, dc, s.distributionCache())
		if err != nil {
			s.internal.err = fmt.Errorf("internal registry handler: %w", err)
			return
		}
		s.internal.app = app
		var h http.Handler = app
		// --- oci11 (referrers API, OCI-Subject, sha512, foreign layers; oci11.go) ---
		h = newOCI11(s.driver, nil, s.cache, s.cfg.Distribution, s.log, h)
		// --- end oci11 ---
		h = &tagTimes{driver: s.driver, next: h}
		h = hygiene(h)
		s.internal.h = gate(s.currentGate, &s.inflight, h)
	})
	if s.internal.err != nil {
		return nil, s.internal.err
	}
	return handlerTransport{s.internal.h}, nil
}

type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	rec := newResponseRecorder()
	t.h.ServeHTTP(rec, req)
	return rec.result(req), nil
}
