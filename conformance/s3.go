package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
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

// The S3 run uses a real S3 server, versitygw, found like the tests find it
// (internal/testutil/s3.go, which only tests may import): $BERTH_VERSITYGW,
// then PATH, then the tool cache `make s3-tools` installs into.
const versitygwHint = "make s3-tools (go install github.com/versity/versitygw/cmd/versitygw@v1.8.0)"

// errNoVersitygw means the S3 run cannot happen here; the caller decides
// whether that is a skip or a failure (BERTH_REQUIRE_S3=1).
var errNoVersitygw = errors.New("versitygw not installed; " + versitygwHint)

func findVersitygw(flagValue string) (string, error) {
	for _, p := range []string{flagValue, os.Getenv("BERTH_VERSITYGW")} {
		if p != "" {
			if _, err := os.Stat(p); err != nil {
				return "", fmt.Errorf("versitygw: %w", err)
			}
			return p, nil
		}
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
	return "", errNoVersitygw
}

// s3Server is a versitygw process serving a directory, with one bucket
// made for the run.
type s3Server struct {
	endpoint, bucket, access, secret, region string
	cmd                                      *exec.Cmd
	exited                                   chan struct{}
}

func startS3(ctx context.Context, bin, dir, logPath string) (*s3Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	secret := make([]byte, 20)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	s := &s3Server{endpoint: fmt.Sprintf("http://127.0.0.1:%d", port), bucket: "berth-conformance",
		access: "conformance", secret: hex.EncodeToString(secret), region: "us-east-1"}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	s.cmd = exec.Command(bin, "--access", s.access, "--secret", s.secret,
		"--port", fmt.Sprintf("127.0.0.1:%d", port), "--quiet", "posix", dir)
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	if err := s.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start versitygw: %w", err)
	}
	s.exited = make(chan struct{})
	go func() { _ = s.cmd.Wait(); logFile.Close(); close(s.exited) }()
	if err := s.waitListening(ctx, 30*time.Second); err != nil {
		s.stop()
		return nil, err
	}
	if err := s.createBucket(ctx); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

func (s *s3Server) waitListening(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	addr := s.endpoint[len("http://"):]
	for {
		select {
		case <-s.exited:
			return errors.New("versitygw exited at start (see its log)")
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("versitygw not listening on %s after %s", addr, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (s *s3Server) createBucket(ctx context.Context) error {
	sess, err := session.NewSession(&aws.Config{
		Region:           aws.String(s.region),
		Endpoint:         aws.String(s.endpoint),
		S3ForcePathStyle: aws.Bool(true),
		DisableSSL:       aws.Bool(true),
		Credentials:      credentials.NewStaticCredentials(s.access, s.secret, ""),
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := s3.New(sess).CreateBucketWithContext(ctx, &s3.CreateBucketInput{Bucket: aws.String(s.bucket)}); err != nil {
		return fmt.Errorf("create bucket %s: %w", s.bucket, err)
	}
	return nil
}

// storageYAML is the `storage:` section for the bucket, as a user would
// write it (Distribution's s3 keys).
func (s *s3Server) storageYAML() string {
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
`, s.region, s.bucket, s.endpoint, s.access, s.secret)
}

func (s *s3Server) stop() {
	if s == nil || s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
}
