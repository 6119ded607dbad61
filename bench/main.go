// Command bench runs berth side by side with upstream Distribution and
// Debian's docker-registry on loopback, and reports each workload as the
// median of several reps and as the ratio berth/peer from the same run.
//
//	go run ./bench              # full size, a few minutes
//	go run ./bench -short       # tiny sizes, checks the harness works
//	go run ./bench -json out.json -reps 5
//	go run ./bench -only s3 -reps 7   # one scenario, more reps
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/berth-registry/berth/bench/internal/servers"
)

func main() {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.BoolVar(&o.Short, "short", false, "run every workload at a tiny size (checks the harness, figures are meaningless)")
	fs.IntVar(&o.Reps, "reps", 3, "repetitions of each workload; the median is reported")
	fs.StringVar(&o.JSONPath, "json", "", "write the JSON results here (default: a new file in $TMPDIR)")
	fs.StringVar(&o.CacheDir, "cache", "", "where built binaries are kept between runs (default: $XDG_CACHE_HOME/berth-bench)")
	fs.StringVar(&o.WorkDir, "work", "", "where the run's scratch storage goes (default: /dev/shm when it has room, else $TMPDIR)")
	fs.BoolVar(&o.Keep, "keep", false, "keep the scratch directory (storage and server logs) for inspection")
	fs.StringVar(&o.BerthBin, "berth", "", "use this berth binary instead of building ./cmd/berth")
	fs.StringVar(&o.UpstreamBin, "registry", "", "use this upstream registry binary instead of installing "+servers.UpstreamVersion)
	fs.StringVar(&o.DebianBin, "debian", "", "Debian docker-registry binary (default: /usr/bin/docker-registry if installed)")
	fs.BoolVar(&o.NoDebian, "no-debian", false, "leave Debian's docker-registry out")
	only := fs.String("only", "", "run only these scenarios, comma-separated: "+strings.Join(scenarios, ", ")+" (default: all)")
	verbose := fs.Bool("v", false, "log every measurement")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "bench: unexpected arguments %q\n", fs.Args())
		os.Exit(2)
	}
	if *only != "" {
		o.Only = strings.Split(*only, ",")
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	o.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	o.Out = os.Stdout

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}
