package gc

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

// Report describes one gc run. A dry run fills it exactly as a real run
// would, from the same plan; only nothing is deleted and no lease is taken.
// The plain fields are what metrics are made of.
type Report struct {
	DryRun         bool `json:"dryRun"`
	DeleteUntagged bool `json:"deleteUntagged"`
	// Coordination is "lease" when replicas were put into read-only
	// maintenance, "none" otherwise (dry run, or a stopped registry).
	Coordination string    `json:"coordination"`
	Started      time.Time `json:"started"`
	// Duration is the whole run; ReadOnly is how long writes were refused.
	Duration time.Duration `json:"-"`
	ReadOnly time.Duration `json:"-"`
	// Listing and Sweeping are the two phases inside the read-only window
	// (with a lease): the figures to work on to shorten it.
	Listing  time.Duration `json:"-"`
	Sweeping time.Duration `json:"-"`

	Repositories      int   `json:"repositories"`
	ManifestsRemoved  int   `json:"manifestsRemoved"`
	ManifestsKept     int   `json:"manifestsKept"`
	BlobsRemoved      int   `json:"blobsRemoved"`
	BlobsKept         int   `json:"blobsKept"`
	BytesFreed        int64 `json:"bytesFreed"`
	LayerLinksRemoved int   `json:"layerLinksRemoved"`
	UploadsPurged     int   `json:"uploadsPurged"`

	// Manifests lists the manifests removed (or, in a dry run, to remove).
	Manifests []ManifestRef `json:"manifests"`
	Warnings  []string      `json:"warnings"`
	// Errors are deletions that failed; the run is a partial failure.
	Errors []string `json:"errors"`
}

// MarshalJSON adds the durations in seconds.
func (r *Report) MarshalJSON() ([]byte, error) {
	type plain Report
	return json.Marshal(struct {
		*plain
		DurationSeconds float64 `json:"durationSeconds"`
		ReadOnlySeconds float64 `json:"readOnlySeconds"`
		ListingSeconds  float64 `json:"listingSeconds"`
		SweepingSeconds float64 `json:"sweepingSeconds"`
	}{(*plain)(r), r.Duration.Seconds(), r.ReadOnly.Seconds(), r.Listing.Seconds(), r.Sweeping.Seconds()})
}

// WriteJSON renders the report as one JSON document.
func (r *Report) WriteJSON(w io.Writer) error {
	out := *r
	// Empty lists as [] rather than null keeps consumers simple.
	if out.Manifests == nil {
		out.Manifests = []ManifestRef{}
	}
	if out.Warnings == nil {
		out.Warnings = []string{}
	}
	if out.Errors == nil {
		out.Errors = []string{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(&out)
}

// WriteText renders the report for people.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	switch {
	case r.DryRun:
		b.WriteString("berth gc: dry run, nothing was deleted\n")
	case len(r.Errors) > 0:
		b.WriteString("berth gc: finished with errors\n")
	default:
		b.WriteString("berth gc: done\n")
	}
	row := func(k string, v any) { fmt.Fprintf(&b, "  %-22s %v\n", k, v) }
	row("repositories", r.Repositories)
	row("manifests removed", fmt.Sprintf("%d (kept %d)", r.ManifestsRemoved, r.ManifestsKept))
	row("blobs removed", fmt.Sprintf("%d (kept %d)", r.BlobsRemoved, r.BlobsKept))
	row("bytes freed", fmt.Sprintf("%s (%d bytes)", humanBytes(r.BytesFreed), r.BytesFreed))
	row("layer links removed", r.LayerLinksRemoved)
	row("upload sessions purged", r.UploadsPurged)
	row("duration", r.Duration.Round(time.Millisecond))
	row("writes refused for", r.ReadOnly.Round(time.Millisecond))
	if len(r.Manifests) > 0 {
		b.WriteString("manifests:\n")
		for _, m := range r.Manifests {
			fmt.Fprintf(&b, "  %s@%s\n", m.Repository, m.Digest)
		}
	}
	if len(r.Warnings) > 0 {
		b.WriteString("warnings:\n")
		for _, s := range r.Warnings {
			fmt.Fprintf(&b, "  %s\n", s)
		}
	}
	if len(r.Errors) > 0 {
		b.WriteString("errors:\n")
		for _, s := range r.Errors {
			fmt.Fprintf(&b, "  %s\n", s)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
