package retention

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/spf13/cobra"

	"github.com/berth-registry/berth/internal/progress"
	"github.com/berth-registry/berth/internal/registryclient"
)

// maxPasswordSize guards against piping a wrong file into --password-stdin.
const maxPasswordSize = 64 << 10

type pruneFlags struct {
	registry, policy, output, username, caFile string
	passwordStdin, dryRun, force               bool
	concurrency, pageSize                      int
}

// NewPruneCommand is `berth prune`.
func NewPruneCommand() *cobra.Command {
	var f pruneFlags
	cmd := &cobra.Command{
		Use:   "prune --registry URL --policy FILE",
		Short: "Delete tags a retention policy does not keep",
		Long: `Delete the tags a retention policy does not keep, one tag at a time
(DELETE /v2/<name>/manifests/<tag>): other tags on the same digest stay, and an
index is deleted as one unit with its children untouched. Blobs are freed by
"berth gc" afterwards.

Credentials: --username with --password-stdin, else REGISTRY_USER and
REGISTRY_PASSWORD, else ~/.docker/config.json, else anonymous.

Exit status: 0 done, 1 some deletes failed or listing failed, 2 bad policy or
flags (nothing sent), 3 safety stop (nothing deleted), 130 interrupted.`,
		Example: `  berth prune --registry https://registry.example.com --policy retention.yaml --dry-run
  echo "$PASS" | berth prune --registry http://127.0.0.1:5000 --policy p.yaml --username ci --password-stdin`,
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runPrune(cmd, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.registry, "registry", "", "registry base URL, e.g. https://registry.example.com (default $REGISTRY_URL)")
	fl.StringVar(&f.policy, "policy", "", "retention policy file (YAML)")
	fl.BoolVar(&f.dryRun, "dry-run", false, "print the plan, delete nothing")
	fl.BoolVar(&f.force, "force", false, "delete even when a safety stop trips")
	fl.IntVar(&f.concurrency, "concurrency", DefaultConcurrency, "requests in flight at most")
	fl.StringVarP(&f.output, "output", "o", "text", "report format: text or json")
	fl.StringVar(&f.username, "username", "", "registry user (password from --password-stdin)")
	fl.BoolVar(&f.passwordStdin, "password-stdin", false, "read the password from standard input")
	fl.StringVar(&f.caFile, "ca-file", "", "PEM file with extra CA certificates to trust")
	fl.IntVar(&f.pageSize, "page-size", registryclient.DefaultPageSize, "entries per page when listing repositories and tags")
	return cmd
}

func runPrune(cmd *cobra.Command, f pruneFlags) error {
	if f.registry == "" {
		f.registry = os.Getenv("REGISTRY_URL")
	}
	if f.registry == "" {
		return usageErr(errors.New("--registry is required (or set REGISTRY_URL)"))
	}
	if f.policy == "" {
		return usageErr(errors.New("--policy is required"))
	}
	if f.output != "text" && f.output != "json" {
		return usageErr(fmt.Errorf("--output %q: want text or json", f.output))
	}
	if f.concurrency < 1 {
		return usageErr(fmt.Errorf("--concurrency %d: want ≥ 1", f.concurrency))
	}
	if f.pageSize < 1 {
		return usageErr(fmt.Errorf("--page-size %d: want ≥ 1", f.pageSize))
	}
	if _, err := registryclient.ParseURL(f.registry); err != nil {
		return usageErr(err)
	}
	// Validate the policy before reading secrets or sending anything.
	pol, err := LoadPolicy(f.policy)
	if err != nil {
		return err
	}
	var password string
	switch {
	case f.passwordStdin && f.username == "":
		return usageErr(errors.New("--password-stdin needs --username"))
	case f.username != "" && !f.passwordStdin:
		return usageErr(errors.New("--username needs --password-stdin (passwords are not taken as flags)"))
	case f.passwordStdin:
		password, err = readPassword(cmd.InOrStdin())
		if err != nil {
			return usageErr(err)
		}
	}

	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// After the first signal, restore default handling so a second
		// Ctrl-C ends the process at once.
		<-ctx.Done()
		stop()
	}()

	log := slog.Default()
	auth, source, err := registryclient.ResolveAuth(ctx, f.registry, registryclient.AuthInput{
		Username: f.username, Password: password, Getenv: os.Getenv, Keychain: authn.DefaultKeychain,
	})
	if err != nil {
		return usageErr(err)
	}
	log.Debug("prune: credentials", "source", source)

	rep, runErr := Run(ctx, RunOptions{
		Registry: f.registry, Policy: pol, DryRun: f.dryRun, Force: f.force,
		Concurrency: f.concurrency, PageSize: f.pageSize, Auth: auth, CAFile: f.caFile,
		Logger: log, Progress: progress.New(cmd.ErrOrStderr(), log),
	})
	if rep != nil {
		var werr error
		if f.output == "json" {
			werr = WriteJSON(cmd.OutOrStdout(), rep)
		} else {
			werr = WriteText(cmd.OutOrStdout(), rep)
		}
		if werr != nil && runErr == nil {
			runErr = &ExitError{Code: ExitFailed, Err: werr}
		}
	}
	return runErr
}

func readPassword(r io.Reader) (string, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxPasswordSize+1))
	if err != nil {
		return "", fmt.Errorf("read password from stdin: %w", err)
	}
	if len(b) > maxPasswordSize {
		return "", errors.New("password on stdin is too long")
	}
	p := strings.TrimRight(string(b), "\r\n")
	if p == "" {
		return "", errors.New("--password-stdin: standard input is empty")
	}
	return p, nil
}
