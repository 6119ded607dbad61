// Command conformance runs the OCI distribution-spec conformance suite
// against a registry it starts itself (berth, or upstream Distribution for
// comparison), prints the counts, and checks the failures against
// expected-failures.txt: any failure not on the list, any listed failure
// that no longer happens, and any 5xx response fail the run.
//
// `make conformance` and `make conformance-upstream` call it; see
// mk/conformance.mk for how the suite and the upstream registry are
// installed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/berth-registry/berth/internal/s3server"
)

type options struct {
	target   string // berth | upstream
	bin      string // the registry binary
	suite    string // the conformance suite binary
	expected string // expected-failures.txt
	out      string // results directory
	auth     bool   // run with htpasswd credentials
	s3       bool   // store on a fresh bucket of a real S3 server (versitygw)
	vgw      string // versitygw binary (default: found like the tests find it)
	check    bool   // fail on differences from the expected list
	timeout  time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.target, "target", "berth", "registry under test: berth or upstream")
	flag.StringVar(&o.bin, "bin", "", "registry binary (berth, or Distribution's registry)")
	flag.StringVar(&o.suite, "suite", "", "OCI conformance suite binary")
	flag.StringVar(&o.expected, "expected", "conformance/expected-failures.txt", "expected failures list")
	flag.StringVar(&o.out, "results", "", "directory for junit.xml, report.html and the registry log (default: a new temp dir)")
	flag.BoolVar(&o.auth, "auth", false, "require htpasswd credentials and give them to the suite")
	flag.BoolVar(&o.s3, "s3", false, "store on a fresh bucket of a real S3 server (versitygw) instead of the filesystem;\nwithout versitygw the run is skipped, or fails when BERTH_REQUIRE_S3=1")
	flag.StringVar(&o.vgw, "versitygw", "", "versitygw binary (default: $BERTH_VERSITYGW, PATH, then ~/.cache/berth/bin/versitygw)")
	flag.BoolVar(&o.check, "check", true, "fail when the failures differ from the expected list or a 5xx was seen")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Minute, "give up after this long")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ok, err := run(context.Background(), o, log)
	if err != nil {
		fmt.Fprintf(os.Stderr, "conformance: %v\n", err)
		os.Exit(2)
	}
	if !ok {
		os.Exit(1)
	}
}

func (o options) validate() error {
	switch o.target {
	case "berth", "upstream":
	default:
		return fmt.Errorf("-target must be berth or upstream, not %q", o.target)
	}
	for flagName, p := range map[string]string{"-bin": o.bin, "-suite": o.suite} {
		if p == "" {
			return fmt.Errorf("%s is required", flagName)
		}
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%s: %w", flagName, err)
		}
	}
	return nil
}

func run(ctx context.Context, o options, log *slog.Logger) (bool, error) {
	if err := o.validate(); err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	var exp Expected
	if o.check {
		text, err := os.ReadFile(o.expected)
		if err != nil {
			return false, fmt.Errorf("read expected failures: %w", err)
		}
		if exp, err = ParseExpected(string(text)); err != nil {
			return false, fmt.Errorf("%s: %w", o.expected, err)
		}
	}
	vgw := ""
	if o.s3 {
		var err error
		if vgw, err = findVersitygw(o.vgw); errors.Is(err, s3server.ErrNotInstalled) && os.Getenv("BERTH_REQUIRE_S3") != "1" {
			fmt.Printf("SKIPPING OCI conformance, %s on S3: %v; set BERTH_REQUIRE_S3=1 to make this a failure\n", o.target, err)
			return true, nil
		} else if err != nil {
			return false, fmt.Errorf("the S3 run needs versitygw: %w", err)
		}
	}
	work, err := os.MkdirTemp("", "berth-conformance-")
	if err != nil {
		return false, err
	}
	// Registry data is thrown away; the results stay for CI artifacts.
	defer os.RemoveAll(filepath.Join(work, "data"))
	defer os.RemoveAll(filepath.Join(work, "s3"))
	if o.out == "" {
		o.out = filepath.Join(work, "results")
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return false, err
	}

	label := o.target
	if o.s3 {
		label += " on S3 (versitygw)"
	}
	if o.auth {
		label += " (htpasswd auth)"
	}
	var store *s3Store
	if o.s3 {
		if store, err = startS3(ctx, vgw, filepath.Join(work, "s3"), filepath.Join(o.out, "versitygw.log")); err != nil {
			return false, err
		}
		defer store.stop()
		log.Info("S3 server started", "endpoint", store.Endpoint, "bucket", store.bucket)
	}
	reg, err := startRegistry(ctx, o, work, store, log)
	if err != nil {
		return false, err
	}
	rep, suiteErr := runSuite(ctx, o, reg, work)
	stopErr := reg.stop()
	if suiteErr != nil {
		return false, suiteErr
	}
	if stopErr != nil {
		log.Warn("registry did not stop cleanly", "err", stopErr)
	}
	serverLog, _ := os.ReadFile(reg.logPath)

	fmt.Printf("OCI conformance, %s: %s\n", label, rep.Summary())
	fmt.Printf("  report: %s\n", filepath.Join(o.out, "report.html"))
	ok := true
	server5xx := rep.ServerErrors()
	if n := CountLogServerErrors(o.target, string(serverLog)); n > 0 || len(server5xx) > 0 {
		fmt.Printf("  5xx responses: %d seen by the suite, %d in the registry log (%s)\n", len(server5xx), n, reg.logPath)
		for _, s := range server5xx {
			fmt.Printf("    %s\n", s)
		}
		ok = false
	}
	if !o.check {
		return true, nil
	}
	v := Compare(rep, exp)
	for _, name := range v.Unexpected {
		fmt.Printf("  UNEXPECTED FAILURE: %s\n", name)
		for _, m := range rep.FailureMessages(strings.TrimSuffix(name, suffixCount(name))) {
			fmt.Printf("      %s\n", indent(m, "      "))
		}
	}
	for _, name := range v.NowPassing {
		fmt.Printf("  NOW PASSING (remove from %s): %s\n", o.expected, name)
	}
	if v.OK() {
		fmt.Printf("  failures match %s\n", o.expected)
	}
	return ok && v.OK(), nil
}

func suffixCount(name string) string {
	if m := multiplicity.FindStringSubmatch(name); m != nil {
		return name[len(m[1]):]
	}
	return ""
}

func indent(s, prefix string) string { return strings.ReplaceAll(s, "\n", "\n"+prefix) }

// registry is a registry process under test.
type registry struct {
	host       string // 127.0.0.1:port
	user, pass string
	logPath    string
	cmd        *exec.Cmd
	exited     chan error
}

const (
	confUser = "conformance"
	confPass = "conformance-password"
)

// startRegistry starts the registry on filesystem storage under work, or
// on store's bucket when store is not nil.
func startRegistry(ctx context.Context, o options, work string, store *s3Store, log *slog.Logger) (*registry, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	r := &registry{host: fmt.Sprintf("127.0.0.1:%d", port), logPath: filepath.Join(o.out, o.target+"-registry.log")}
	data := filepath.Join(work, "data")
	storage := fmt.Sprintf("storage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\n", data)
	if store != nil {
		storage = store.StorageYAML(store.bucket)
	}
	htpasswd := ""
	if o.auth {
		r.user, r.pass = confUser, confPass
		htpasswd = filepath.Join(work, "htpasswd")
		if err := writeHtpasswd(ctx, o, htpasswd); err != nil {
			return nil, err
		}
	}
	var args []string
	env := os.Environ()
	switch o.target {
	case "berth":
		dbg, err := freePort()
		if err != nil {
			return nil, err
		}
		args = []string{"serve", "--addr", r.host, "--debug-addr", fmt.Sprintf("127.0.0.1:%d", dbg)}
		if store == nil {
			args = append(args, "--data-dir", data)
		} else {
			// Credentials belong in a file, not on a command line.
			cfg := filepath.Join(work, "berth.yml")
			if err := os.WriteFile(cfg, []byte("version: 0.1\n"+storage), 0o600); err != nil {
				return nil, err
			}
			args = append(args, "--config", cfg)
		}
		if htpasswd != "" {
			args = append(args, "--htpasswd", htpasswd)
		}
		// The suite pushes non-distributable (foreign) layers; like
		// upstream, berth accepts them only where configured to. This is
		// the configuration, set the upstream way (REGISTRY_* environment).
		env = append(env, `REGISTRY_VALIDATION_MANIFESTS_URLS_ALLOW=["^https?://"]`)
	case "upstream":
		cfg := filepath.Join(work, "config.yml")
		if err := os.WriteFile(cfg, []byte(upstreamConfig(r.host, storage, htpasswd)), 0o600); err != nil {
			return nil, err
		}
		args = []string{"serve", cfg}
		// Distribution v3 exports traces over OTLP by default.
		env = append(env, "OTEL_TRACES_EXPORTER=none")
	}
	logFile, err := os.Create(r.logPath)
	if err != nil {
		return nil, err
	}
	r.cmd = exec.Command(o.bin, args...)
	r.cmd.Env = env
	r.cmd.Stdout, r.cmd.Stderr = logFile, logFile
	if err := r.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", o.bin, err)
	}
	r.exited = make(chan error, 1)
	go func() { r.exited <- r.cmd.Wait(); logFile.Close() }()
	log.Info("registry started", "target", o.target, "addr", r.host, "log", r.logPath)
	if err := r.waitReady(ctx, 30*time.Second); err != nil {
		_ = r.stop()
		tail, _ := os.ReadFile(r.logPath)
		return nil, fmt.Errorf("%w\n%s", err, lastLines(string(tail), 20))
	}
	return r, nil
}

// waitReady polls /v2/ until the registry answers (200, or 401 with auth).
func (r *registry) waitReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		select {
		case err := <-r.exited:
			r.exited <- err
			return fmt.Errorf("registry exited before it was ready: %v", err)
		default:
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.host+"/v2/", nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("registry on %s not ready after %s", r.host, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stop sends SIGTERM and waits for a graceful exit, killing after a grace.
func (r *registry) stop() error {
	if r.cmd == nil || r.cmd.Process == nil {
		return nil
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-r.exited:
		r.exited <- err
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			// Distribution does not catch SIGTERM: dying of it is its clean stop.
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGTERM {
				return nil
			}
		}
		return err
	case <-time.After(40 * time.Second):
		_ = r.cmd.Process.Kill()
		err := <-r.exited
		r.exited <- err
		return fmt.Errorf("killed after 40s without exiting: %v", err)
	}
}

func runSuite(ctx context.Context, o options, r *registry, work string) (*Report, error) {
	cmd := exec.CommandContext(ctx, o.suite)
	// The suite also reads ./oci-conformance.yaml; run it where there is none.
	cmd.Dir = work
	cmd.Env = suiteEnv(os.Environ(), r, o.out)
	outPath := filepath.Join(o.out, "suite-output.txt")
	out, err := os.Create(outPath)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	runErr := cmd.Run()
	// The suite exits 1 whenever a test fails; junit.xml tells what failed.
	b, err := os.ReadFile(filepath.Join(o.out, "junit.xml"))
	if err != nil {
		return nil, fmt.Errorf("the suite wrote no junit.xml (exit: %v); see %s", runErr, outPath)
	}
	var ee *exec.ExitError
	if runErr != nil && !errors.As(runErr, &ee) {
		return nil, fmt.Errorf("run the suite: %w", runErr)
	}
	return ParseJUnit(b)
}

// suiteEnv configures the suite with every API and data category on: any
// OCI_* setting from the caller's environment is dropped, so a stray
// variable cannot switch a category off.
func suiteEnv(base []string, r *registry, results string) []string {
	var env []string
	for _, kv := range base {
		if !strings.HasPrefix(kv, "OCI_") {
			env = append(env, kv)
		}
	}
	env = append(env,
		"OCI_REGISTRY="+r.host,
		"OCI_TLS=disabled",
		"OCI_VERSION=1.1",
		"OCI_RESULTS_DIR="+results,
		"OCI_LOG=warn",
	)
	if r.user != "" {
		env = append(env, "OCI_USERNAME="+r.user, "OCI_PASSWORD="+r.pass)
	}
	return env
}

// upstreamConfig is the smallest Distribution configuration the suite
// needs: the storage section (with deletes on) and the listener.
func upstreamConfig(addr, storage, htpasswd string) string {
	s := fmt.Sprintf(`version: 0.1
log:
  level: warn
%shttp:
  addr: %s
`, storage, addr)
	if htpasswd != "" {
		s += fmt.Sprintf("auth:\n  htpasswd:\n    realm: conformance\n    path: %s\n", htpasswd)
	}
	return s
}

// writeHtpasswd makes the credentials file with `berth htpasswd` (for both
// targets: the format is the same bcrypt htpasswd).
func writeHtpasswd(ctx context.Context, o options, path string) error {
	bin := o.bin
	if o.target != "berth" {
		b, err := exec.LookPath("berth")
		if err != nil {
			return fmt.Errorf("-auth with upstream needs a berth binary on PATH to write the htpasswd file")
		}
		bin = b
	}
	cmd := exec.CommandContext(ctx, bin, "htpasswd", "--file", path, confUser)
	cmd.Stdin = strings.NewReader(confPass + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("berth htpasswd: %v: %s", err, out)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
