// Package schedule runs gc and prune inside `berth serve`, so one process on
// a laptop keeps itself clean the way the CronJobs keep a cluster clean. It
// records each run in Prometheus metrics and in a status the debug listener
// shows; the numbers come from the jobs' own reports.
package schedule

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Job is one scheduled task. Run returns a summary for the status page.
type Job struct {
	Name     string
	Interval time.Duration
	// Run does one run; a nil error is success.
	Run func(ctx context.Context) (summary any, err error)
}

// LastRun is what the status page shows of a job.
type LastRun struct {
	Started     time.Time     `json:"started"`
	Duration    time.Duration `json:"durationNanos"`
	Result      string        `json:"result"`
	Error       string        `json:"error,omitempty"`
	Summary     any           `json:"summary,omitempty"`
	LastSuccess time.Time     `json:"lastSuccess,omitzero"`
	NextRun     time.Time     `json:"nextRun"`
}

// Runner runs jobs on their intervals.
type Runner struct {
	log *slog.Logger
	mu  sync.Mutex
	st  map[string]*LastRun
}

// NewRunner returns a runner logging to log.
func NewRunner(log *slog.Logger) *Runner {
	return &Runner{log: log.With("component", "schedule"), st: map[string]*LastRun{}}
}

// Status is a copy of every job's last run.
func (r *Runner) Status() map[string]LastRun {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]LastRun, len(r.st))
	for k, v := range r.st {
		out[k] = *v
	}
	return out
}

// Start runs job every Interval until ctx ends. The first run comes one
// interval after start (with up to 10% jitter, so replicas restarted together
// do not all collect at once), not at start-up, when a rollout is busiest.
func (r *Runner) Start(ctx context.Context, job Job) {
	if job.Interval <= 0 {
		return
	}
	m := jobMetrics(job.Name)
	r.mu.Lock()
	r.st[job.Name] = &LastRun{Result: "pending"}
	r.mu.Unlock()
	go func() {
		for {
			wait := job.Interval + time.Duration(rand.Int64N(int64(job.Interval)/10+1))
			r.mu.Lock()
			r.st[job.Name].NextRun = time.Now().Add(wait).UTC()
			r.mu.Unlock()
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			r.runOnce(ctx, job, m)
		}
	}()
}

func (r *Runner) runOnce(ctx context.Context, job Job, m *metrics) {
	start := time.Now()
	summary, err := job.Run(ctx)
	d := time.Since(start)
	result := "success"
	if err != nil {
		result = "failure"
		if errors.Is(err, context.Canceled) {
			result = "interrupted"
		}
	}
	m.runs.WithLabelValues(result).Inc()
	m.duration.Observe(d.Seconds())
	r.mu.Lock()
	st := r.st[job.Name]
	st.Started, st.Duration, st.Result, st.Summary, st.Error = start.UTC(), d, result, summary, ""
	if err != nil {
		st.Error = err.Error()
	} else {
		st.LastSuccess = time.Now().UTC()
		m.lastSuccess.Set(float64(time.Now().Unix()))
	}
	r.mu.Unlock()
	if err != nil {
		r.log.Error("scheduled job failed", "job", job.Name, "took", d.Round(time.Millisecond), "err", err)
	} else {
		r.log.Info("scheduled job done", "job", job.Name, "took", d.Round(time.Millisecond))
	}
}

type metrics struct {
	runs        *prometheus.CounterVec
	duration    prometheus.Histogram
	lastSuccess prometheus.Gauge
}

var (
	metricsMu sync.Mutex
	byJob     = map[string]*metrics{}
)

// jobMetrics registers, once per job name, the series the alert rules in
// deploy/ use: berth_<job>_runs_total{result},
// berth_<job>_last_success_timestamp_seconds and berth_<job>_duration_seconds.
func jobMetrics(name string) *metrics {
	metricsMu.Lock()
	defer metricsMu.Unlock()
	if m, ok := byJob[name]; ok {
		return m
	}
	m := &metrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_" + name + "_runs_total", Help: "Scheduled " + name + " runs by result.",
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "berth_" + name + "_duration_seconds", Help: "Scheduled " + name + " run duration.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 10),
		}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "berth_" + name + "_last_success_timestamp_seconds", Help: "Unix time of the last successful " + name + " run.",
		}),
	}
	prometheus.MustRegister(m.runs, m.duration, m.lastSuccess)
	for _, r := range []string{"success", "failure"} {
		m.runs.WithLabelValues(r)
	}
	byJob[name] = m
	return m
}
