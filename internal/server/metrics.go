package server

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are process-wide: Prometheus' default registry also carries
// Distribution's own (registry_*) metrics, and /metrics serves both.
type metrics struct {
	requests      *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	redisUp       prometheus.GaugeFunc
	storageErrors prometheus.Counter
}

var (
	metricsOnce sync.Once
	theMetrics  *metrics
	// gaugeServer is the server the gauges read from: the one built last;
	// one process runs one server outside tests.
	gaugeServer atomic.Pointer[Server]
)

// gauge reads a value from the current server, 0 when there is none.
func gauge(f func(*Server) float64) func() float64 {
	return func() float64 {
		if s := gaugeServer.Load(); s != nil {
			return f(s)
		}
		return 0
	}
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func getMetrics() *metrics {
	metricsOnce.Do(func() {
		m := &metrics{
			requests: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "berth_http_requests_total", Help: "Registry HTTP requests by status code and method.",
			}, []string{"code", "method"}),
			duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
				Name: "berth_http_request_duration_seconds", Help: "Registry HTTP request duration.",
				Buckets: prometheus.ExponentialBuckets(0.001, 4, 9),
			}, []string{"method"}),
			redisUp: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "berth_redis_up", Help: "1 while the Redis blob-descriptor cache is in use, 0 while Redis is unreachable (absent without Redis).",
			}, gauge(func(s *Server) float64 { return boolGauge(s.redis != nil && s.redis.Up()) })),
			storageErrors: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "berth_storage_errors_total", Help: "Storage health checks that failed.",
			}),
		}
		inflight := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "berth_http_inflight_writes", Help: "Write requests in flight.",
		}, gauge(func(s *Server) float64 { return float64(s.inflight.Load()) }))
		readOnly := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "berth_maintenance_readonly", Help: "1 while this replica refuses writes for maintenance.",
		}, gauge(func(s *Server) float64 {
			g := s.currentGate()
			if g == nil {
				return 0
			}
			refused, _ := g.WritesRefused()
			return boolGauge(refused)
		}))
		prometheus.MustRegister(m.requests, m.duration, inflight, readOnly, m.storageErrors)
		theMetrics = m
	})
	return theMetrics
}

var redisGaugeOnce sync.Once

// registerRedisGauge exposes berth_redis_up only where Redis is configured,
// so its absence does not look like an outage.
func (m *metrics) registerRedisGauge() {
	redisGaugeOnce.Do(func() { prometheus.MustRegister(m.redisUp) })
}
