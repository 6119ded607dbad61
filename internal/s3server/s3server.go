// Package s3server runs a real S3 server — versitygw's posix backend over a
// directory — on loopback, for the tests, the conformance harness and the
// benchmarks. It is a tool for checking berth on S3, not part of berth.
package s3server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/aws/credentials"
	"github.com/aws/aws-sdk-go/aws/session"
	"github.com/aws/aws-sdk-go/service/s3"
)

// Hint says how to install the pinned versitygw (mk/s3.mk).
const Hint = "make s3-tools (go install github.com/versity/versitygw/cmd/versitygw@v1.8.0)"

// ErrNotInstalled means versitygw is not found; callers decide whether that
// is a skip or, with BERTH_REQUIRE_S3=1, a failure.
var ErrNotInstalled = errors.New("versitygw not installed; " + Hint)

// readyTimeout bounds a start: versitygw answers within a second when idle,
// but the machines running this are often busy compiling.
const readyTimeout = 30 * time.Second

// Find locates versitygw: $BERTH_VERSITYGW, then PATH, then the tool cache
// `make s3-tools` installs into.
func Find() (string, error) {
	if p := os.Getenv("BERTH_VERSITYGW"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("BERTH_VERSITYGW: %w", err)
		}
		return p, nil
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	p := filepath.Join(cache, "berth", "bin", "versitygw")
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	return "", ErrNotInstalled
}

// Options configure Start.
type Options struct {
	// Dir is the directory served: bucket b's objects are files under
	// Dir/b, and a file's modification time is the object's LastModified.
	Dir string
	// Logs receives the server's output (default: discarded).
	Logs io.Writer
	// AccessKey defaults to "berth"; the secret key is random.
	AccessKey string
}

// Server is a running versitygw.
type Server struct {
	// Endpoint is the server's URL (http://127.0.0.1:PORT).
	Endpoint  string
	AccessKey string
	SecretKey string
	Region    string
	// Dir is the directory served (see Options.Dir).
	Dir string

	bin    string
	addr   string
	logs   io.Writer
	cmd    *exec.Cmd
	exited chan struct{}
}

// Start starts bin on a free loopback port and waits until it answers
// signed requests.
func Start(ctx context.Context, bin string, o Options) (*Server, error) {
	if o.Dir == "" {
		return nil, errors.New("s3server: no directory to serve")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("find a free port: %w", err)
	}
	addr := l.Addr().String()
	l.Close()
	secret := make([]byte, 20)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	s := &Server{Endpoint: "http://" + addr, AccessKey: o.AccessKey, SecretKey: hex.EncodeToString(secret),
		Region: "us-east-1", Dir: o.Dir, bin: bin, addr: addr, logs: o.Logs}
	if s.AccessKey == "" {
		s.AccessKey = "berth"
	}
	if s.logs == nil {
		s.logs = io.Discard
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	if err := s.start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Server) start(ctx context.Context) error {
	cmd := exec.Command(s.bin, "--access", s.AccessKey, "--secret", s.SecretKey, "--port", s.addr, "--quiet", "posix", s.Dir)
	cmd.Stdout, cmd.Stderr = s.logs, s.logs
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start versitygw: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	s.cmd, s.exited = cmd, exited
	if err := s.waitReady(ctx); err != nil {
		s.Kill()
		return fmt.Errorf("versitygw on %s: %w", s.addr, err)
	}
	return nil
}

// waitReady polls ListBuckets: a listening port is not yet a server that
// answers signed requests.
func (s *Server) waitReady(ctx context.Context) error {
	c, err := s.client(0)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	for {
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := c.ListBucketsWithContext(rctx, &s3.ListBucketsInput{})
		rcancel()
		if err == nil {
			return nil
		}
		select {
		case <-s.exited:
			return errors.New("exited before it was ready")
		case <-ctx.Done():
			return fmt.Errorf("not answering: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (s *Server) client(retries int) (*s3.S3, error) {
	sess, err := session.NewSession(&aws.Config{
		Region:           aws.String(s.Region),
		Endpoint:         aws.String(s.Endpoint),
		S3ForcePathStyle: aws.Bool(true),
		DisableSSL:       aws.Bool(true),
		Credentials:      credentials.NewStaticCredentials(s.AccessKey, s.SecretKey, ""),
		MaxRetries:       aws.Int(retries),
	})
	if err != nil {
		return nil, fmt.Errorf("s3 client: %w", err)
	}
	return s3.New(sess), nil
}

// Client is an S3 client for the server, for setup and inspection.
func (s *Server) Client() (*s3.S3, error) { return s.client(3) }

// CreateBucket creates an empty bucket.
func (s *Server) CreateBucket(ctx context.Context, name string) error {
	c, err := s.Client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := c.CreateBucketWithContext(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		return fmt.Errorf("create bucket %s: %w", name, err)
	}
	return nil
}

// StorageYAML is a config file's `storage:` section for bucket, as a user
// would write it with Distribution's s3 keys: deletes on (gc and prune
// need them), redirects off (clients would otherwise fetch from the store).
func (s *Server) StorageYAML(bucket string) string {
	return fmt.Sprintf(`storage:
  s3:
    region: %s
    bucket: %s
    regionendpoint: %s
    forcepathstyle: true
    secure: false
    accesskey: %s
    secretkey: %s
  redirect:
    disable: true
  delete:
    enabled: true
`, s.Region, bucket, s.Endpoint, s.AccessKey, s.SecretKey)
}

// Parameters are the s3-aws driver parameters for bucket, for opening the
// store directly with the driver factory.
func (s *Server) Parameters(bucket string) map[string]any {
	return map[string]any{
		"region": s.Region, "bucket": bucket, "regionendpoint": s.Endpoint, "forcepathstyle": true,
		"secure": false, "accesskey": s.AccessKey, "secretkey": s.SecretKey,
	}
}

// Kill stops the server abruptly (SIGKILL), as a crash or a network cut
// would; its data stays.
func (s *Server) Kill() {
	if s == nil || s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

// Restart starts the server again on the same port and data.
func (s *Server) Restart(ctx context.Context) error {
	s.Kill()
	return s.start(ctx)
}
