package registryclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// RetryPolicy bounds how a failed request is retried.
type RetryPolicy struct {
	// MaxAttempts counts the first try; 1 disables retries.
	MaxAttempts int
	BaseDelay   time.Duration
	MaxDelay    time.Duration
	// MaxRetryAfter caps how long a server may ask us to wait: a longer
	// Retry-After fails the request instead of stalling the run.
	MaxRetryAfter time.Duration
}

// DefaultRetryPolicy rides out a registry restart or a short overload.
var DefaultRetryPolicy = RetryPolicy{MaxAttempts: 5, BaseDelay: 250 * time.Millisecond, MaxDelay: 8 * time.Second, MaxRetryAfter: time.Minute}

func (p RetryPolicy) withDefaults() RetryPolicy {
	d := DefaultRetryPolicy
	if p.MaxAttempts > 0 {
		d.MaxAttempts = p.MaxAttempts
	}
	if p.BaseDelay > 0 {
		d.BaseDelay = p.BaseDelay
	}
	if p.MaxDelay > 0 {
		d.MaxDelay = p.MaxDelay
	}
	if p.MaxRetryAfter > 0 {
		d.MaxRetryAfter = p.MaxRetryAfter
	}
	return d
}

// retryableStatus: overload and gateway errors are transient; 500 is
// included because registries answer it for storage hiccups.
func retryableStatus(code int) bool {
	switch code {
	case http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// Delay decides whether to retry after attempt (1-based) ended with status
// (0 for a transport error) and how long to wait. It is pure so the policy
// can be tested without a clock; jitter is a number in [0, 1).
func (p RetryPolicy) Delay(attempt, status int, h http.Header, now time.Time, jitter float64) (time.Duration, bool) {
	if attempt >= p.MaxAttempts {
		return 0, false
	}
	if status != 0 && !retryableStatus(status) {
		return 0, false
	}
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		if d, ok := parseRetryAfter(h.Get("Retry-After"), now); ok {
			if d > p.MaxRetryAfter {
				return 0, false
			}
			return d, true
		}
	}
	d := p.BaseDelay << (attempt - 1)
	if d <= 0 || d > p.MaxDelay {
		d = p.MaxDelay
	}
	// Half fixed, half random, so that concurrent workers hit by the same
	// outage do not retry in lockstep.
	return d/2 + time.Duration(jitter*float64(d/2)), true
}

// parseRetryAfter reads delay-seconds or an HTTP date (RFC 9110 10.2.3).
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.Atoi(v); err == nil {
		if secs < 0 {
			return 0, false
		}
		return time.Duration(secs) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

type stopRetriesKey struct{}

// Detach returns a context that outlives parent's cancellation, so that a
// request already sent (a delete) can finish and be reported after SIGINT,
// while retries of it stop once parent is done.
func Detach(parent context.Context) context.Context {
	return context.WithValue(context.WithoutCancel(parent), stopRetriesKey{}, parent.Done())
}

// retryTransport retries idempotent, bodiless requests.
type retryTransport struct {
	inner   http.RoundTripper
	policy  RetryPolicy
	log     *slog.Logger
	retries atomic.Int64
	jitter  func() float64
}

func (rt *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !replayable(req) {
		return rt.inner.RoundTrip(req)
	}
	ctx := req.Context()
	stop, _ := ctx.Value(stopRetriesKey{}).(<-chan struct{})
	for attempt := 1; ; attempt++ {
		resp, err := rt.inner.RoundTrip(req)
		status := 0
		var header http.Header
		switch {
		case err != nil:
			if ctx.Err() != nil || !retryableErr(err) {
				return nil, err
			}
		default:
			status, header = resp.StatusCode, resp.Header
			if !retryableStatus(status) {
				return resp, nil
			}
		}
		wait, ok := rt.policy.Delay(attempt, status, header, time.Now(), rt.jitter())
		if !ok {
			return resp, err
		}
		if resp != nil {
			// Drain so the keep-alive connection can be reused.
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
		}
		rt.retries.Add(1)
		rt.log.Debug("retrying registry request", "method", req.Method, "url", req.URL.Redacted(),
			"attempt", attempt, "status", status, "error", errString(err), "wait", wait)
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return nil, fmt.Errorf("%s %s: %w (after %d attempts)", req.Method, req.URL.Redacted(), ctx.Err(), attempt)
		case <-stop:
			timer.Stop()
			return nil, fmt.Errorf("%s %s: interrupted before retry %d: %w", req.Method, req.URL.Redacted(), attempt+1, errLastAttempt(status, err))
		}
	}
}

// retryableErr: connection failures may pass; a certificate or protocol
// mismatch will fail the same way every time.
func retryableErr(err error) bool {
	var certErr *tls.CertificateVerificationError
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalid x509.CertificateInvalidError
	var recordErr tls.RecordHeaderError
	switch {
	case errors.As(err, &certErr), errors.As(err, &unknownCA), errors.As(err, &hostErr),
		errors.As(err, &invalid), errors.As(err, &recordErr), errors.Is(err, errWrongScheme):
		return false
	}
	return true
}

func errLastAttempt(status int, err error) error {
	if err != nil {
		return err
	}
	return fmt.Errorf("last attempt answered %d %s", status, http.StatusText(status))
}

func replayable(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodDelete:
	default:
		return false
	}
	return req.Body == nil || req.Body == http.NoBody
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// schemeGuard pins the scheme the user asked for: it fails fast on the
// https probe go-containerregistry sends to an http registry, and it refuses
// the plain-http fallback that library allows for private-range addresses,
// which would send credentials in the clear.
type schemeGuard struct {
	host, scheme string
	inner        http.RoundTripper
}

var errWrongScheme = errors.New("scheme differs from --registry")

func (g *schemeGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host == g.host && req.URL.Scheme != g.scheme {
		return nil, fmt.Errorf("refusing %s://%s: %w (%s)", req.URL.Scheme, g.host, errWrongScheme, g.scheme)
	}
	return g.inner.RoundTrip(req)
}
