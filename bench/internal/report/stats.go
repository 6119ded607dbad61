// Package report turns benchmark samples into rows, ratios, a markdown table
// and JSON. It does no I/O beyond writing to the io.Writer it is given.
package report

import (
	"math"
	"slices"
	"time"
)

// Median returns the middle sample (mean of the two middle ones for an even
// count); NaN for no samples. The median, not the mean, because one rep
// stalled by another engineer's compile should not move the figure.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Percentile returns the nearest-rank p-th percentile (0 < p ≤ 100) of
// durations; zero for none. Nearest rank, so p99 of 100 samples is the 99th
// slowest request actually observed rather than an interpolation.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	rank = max(1, min(rank, len(s)))
	return s[rank-1]
}
