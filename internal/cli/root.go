// Package cli holds berth's cobra commands: flags in, a package call out.
package cli

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

	"github.com/spf13/cobra"
)

// exitCoder is implemented by errors that choose the process' exit status
// (2 for usage and configuration, 1 for partial failure).
type exitCoder interface{ ExitCode() int }

// usageError marks a command-line mistake.
type usageError struct{ error }

func (usageError) ExitCode() int { return 2 }

// NewRoot builds the whole command tree.
func NewRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "berth",
		Short:         "A self-maintaining private container registry",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newServeCommand(), newConfigCommand(), newHtpasswdCommand(), newVersionCommand())
	for _, extra := range extraCommands {
		root.AddCommand(extra())
	}
	return root
}

// extraCommands are added by the files that wire gc and prune, so each
// job's command lives beside its package.
var extraCommands []func() *cobra.Command

// Main runs the CLI and returns the exit status.
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// After the first signal, a second one kills at once.
	go func() { <-ctx.Done(); stop() }()
	root := NewRoot()
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintln(os.Stderr, "berth:", err)
	var ec exitCoder
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	if isUsage(err) {
		return 2
	}
	return 1
}

// isUsage recognises cobra's own argument errors, which are plain errors.
func isUsage(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand", "accepts ", "requires ", "invalid argument"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

// newLogger builds the process logger in the configured format.
func newLogger(w io.Writer, format string, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
