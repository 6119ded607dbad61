package server

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are process-wide: Prometheus' default registry also carries
// Distribution's own (registry_*) metrics, and /metrics serves both.
type metrics struct {
	requests       *prometheus.CounterVec
	duration       *prometheus.HistogramVec
	inflightWrites prometheus.GaugeFunc
	redisUp        prometheus.Gauge
	maintenance    prometheus.Gauge
	storageErrors  prometheus.Counter
}

var (
	metricsOnce sync.Once
	theMetrics  *metrics
	// The gauges read from whichever server registered last; one process
	// runs one server outside tests.
	inflightSource func() float64
	inflightMu     sync.Mutex
)

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
			inflightWrites: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "berth_http_inflight_writes", Help: "Write requests in flight.",
			}, func() float64 {
				inflightMu.Lock()
				defer inflightMu.Unlock()
				if inflightSource == nil {
					return 0
				}
				return inflightSource()
			}),
			redisUp: prometheus.NewGauge(prometheus.GaugeOpts{
				Name: "berth_redis_up", Help: "1 when the configured Redis answers, 0 when not (absent without Redis).",
			}),
			maintenance: prometheus.NewGauge(prometheus.GaugeOpts{
				Name: "berth_maintenance_readonly", Help: "1 while this replica refuses writes for maintenance.",
			}),
			storageErrors: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "berth_storage_errors_total", Help: "Storage health checks that failed.",
			}),
		}
		prometheus.MustRegister(m.requests, m.duration, m.inflightWrites, m.maintenance, m.storageErrors)
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
