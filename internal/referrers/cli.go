package referrers

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/berth-registry/berth/internal/config"
)

// exitError carries the process exit status: 2 for usage and
// configuration, 1 for failures.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }
func (e *exitError) ExitCode() int { return e.code }

// NewMigrateCommand returns `berth migrate` with its `referrers` step.
func NewMigrateCommand() *cobra.Command {
	migrate := &cobra.Command{
		Use:   "migrate",
		Short: "One-time storage steps for data berth did not write",
	}
	var configFile, dataDir, output string
	var concurrency int
	cmd := &cobra.Command{
		Use:   "referrers",
		Short: "Build the referrers index from the manifests in storage",
		Long: `Index every manifest with a subject (signatures, SBOMs, attestations) for the referrers API, and
drop index entries whose manifest is gone.

Not required: berth indexes a repository by itself the first time its referrers are asked for. Run it
to pay that cost up front for a large registry written by Distribution (registry:2/3), after plain
Distribution replicas wrote to the same storage (e.g. during a rolling upgrade to berth), or after
another tool deleted manifests. It is safe while berth serves and safe to run again.
Exit status: 0 done, 1 failed (rerunning is safe), 2 usage or configuration.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "text" && output != "json" {
				return &exitError{2, fmt.Errorf("--output must be text or json, got %q", output)}
			}
			if concurrency < 1 || concurrency > 256 {
				return &exitError{2, fmt.Errorf("--concurrency must be between 1 and 256, got %d", concurrency)}
			}
			cfg, err := config.Load(configFile, os.Environ())
			if err == nil {
				err = cfg.Apply(config.Overrides{DataDir: dataDir})
			}
			if err == nil {
				err = cfg.Validate()
			}
			if err != nil {
				return &exitError{2, err}
			}
			d, err := cfg.StorageDriver(cmd.Context())
			if err != nil {
				return &exitError{2, err}
			}
			errw := cmd.ErrOrStderr()
			st, err := Migrate(cmd.Context(), d, concurrency, func(repo string, st Stats) {
				if st.Added > 0 || st.Removed > 0 {
					fmt.Fprintf(errw, "%s: %d referrers, %d entries added, %d stale removed\n", repo, st.Referrers, st.Added, st.Removed)
				}
			})
			if werr := writeStats(cmd.OutOrStdout(), output, st); werr != nil && err == nil {
				err = werr
			}
			if err != nil {
				return &exitError{1, fmt.Errorf("migrate referrers: %w", err)}
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&configFile, "config", "", "configuration file (the one berth serve uses)")
	fl.StringVar(&dataDir, "data-dir", "", "filesystem storage root (default "+config.DefaultDataDir+" without --config)")
	fl.StringVar(&output, "output", "text", "summary format: text or json")
	fl.IntVar(&concurrency, "concurrency", 16, "parallel storage operations")
	migrate.AddCommand(cmd)
	return migrate
}

func writeStats(w io.Writer, format string, st Stats) error {
	if format == "json" {
		return json.NewEncoder(w).Encode(st)
	}
	_, err := fmt.Fprintf(w, "referrers index: %d repositories, %d manifests, %d referrers; %d entries added, %d stale removed\n",
		st.Repositories, st.Manifests, st.Referrers, st.Added, st.Removed)
	return err
}
