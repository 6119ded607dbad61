package servers

import (
	"context"
	"debug/buildinfo"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/aws/credentials"
	"github.com/aws/aws-sdk-go/aws/session"
	"github.com/aws/aws-sdk-go/service/s3"
)

// VersitygwHint says how to get the S3 server the S3 scenario needs.
const VersitygwHint = "make s3-tools (go install github.com/versity/versitygw/cmd/versitygw@v1.8.0)"

// FindVersitygw finds the S3 server as the tests do: $BERTH_VERSITYGW,
// then PATH, then the tool cache `make s3-tools` installs into.
func FindVersitygw() (string, error) {
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
	return "", errors.New("versitygw not installed: " + VersitygwHint)
}

// VersitygwVersion reads the module version the binary was built from
// (its --version prints only "git" when installed with go install).
func VersitygwVersion(bin string) string {
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		return "unknown"
	}
	return "versitygw " + info.Main.Version
}

// S3 is a real S3 server (versitygw's posix backend over a directory) on
// loopback.
type S3 struct {
	Endpoint, AccessKey, SecretKey, Region string

	dir  string
	proc *process
}

// Bucket is one bucket of an S3 server: the storage of one registry.
type Bucket struct {
	S3   *S3
	Name string
}

// StartS3 starts versitygw over dir and waits until it answers.
func StartS3(ctx context.Context, bin, dir string) (*S3, error) {
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, err
	}
	var lastErr error
	for try := 0; try < startTries; try++ {
		addr, err := FreeAddr()
		if err != nil {
			return nil, err
		}
		s := &S3{Endpoint: "http://" + addr, AccessKey: "bench", SecretKey: "bench-loopback-only", Region: "us-east-1", dir: dir}
		logPath := filepath.Join(dir, "versitygw.log")
		logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, err
		}
		p, err := spawn(bin, []string{"--access", s.AccessKey, "--secret", s.SecretKey, "--port", addr, "--quiet", "posix", data}, logf)
		logf.Close()
		if err != nil {
			return nil, err
		}
		s.proc = p
		if lastErr = s.waitReady(ctx); lastErr == nil {
			return s, nil
		}
		p.kill()
		lastErr = fmt.Errorf("versitygw: %w; log tail:\n%s", lastErr, tail(logPath, 1000))
	}
	return nil, lastErr
}

func (s *S3) client() (*s3.S3, error) {
	sess, err := session.NewSession(&aws.Config{
		Region:           aws.String(s.Region),
		Endpoint:         aws.String(s.Endpoint),
		S3ForcePathStyle: aws.Bool(true),
		DisableSSL:       aws.Bool(true),
		Credentials:      credentials.NewStaticCredentials(s.AccessKey, s.SecretKey, ""),
		MaxRetries:       aws.Int(0),
	})
	if err != nil {
		return nil, err
	}
	return s3.New(sess), nil
}

// waitReady polls ListBuckets: a listening port is not yet a server that
// answers signed requests.
func (s *S3) waitReady(ctx context.Context) error {
	c, err := s.client()
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
		case <-s.proc.exited:
			return errors.New("exited before it was ready")
		case <-ctx.Done():
			return fmt.Errorf("not answering on %s: %w (last error: %v)", s.Endpoint, ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// NewBucket creates an empty bucket.
func (s *S3) NewBucket(ctx context.Context, name string) (*Bucket, error) {
	c, err := s.client()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := c.CreateBucketWithContext(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", name, err)
	}
	return &Bucket{S3: s, Name: name}, nil
}

// Stop kills the server; its data stays in its directory.
func (s *S3) Stop() {
	if s != nil && s.proc != nil {
		s.proc.kill()
		s.proc = nil
	}
}

// storageLines are the s3 driver's keys for the bucket, indented under
// `storage:`. Redirects are off for every registry: with them the client
// would fetch blobs from versitygw directly and the pull would measure
// the S3 server, not the registry.
func (b *Bucket) storageLines() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "  s3:\n    region: %s\n    bucket: %s\n    regionendpoint: %q\n", b.S3.Region, b.Name, b.S3.Endpoint)
	fmt.Fprintf(&sb, "    forcepathstyle: true\n    secure: false\n    accesskey: %s\n    secretkey: %s\n", b.S3.AccessKey, b.S3.SecretKey)
	fmt.Fprintf(&sb, "  redirect:\n    disable: true\n")
	return sb.String()
}

// BerthConfig is a berth config file for a variant on S3: the storage
// section only (deletes on, as berth's filesystem default); everything
// else comes from flags as in the filesystem variants.
func BerthConfig(b *Bucket) []byte {
	return []byte("version: 0.1\nstorage:\n" + b.storageLines() + "  delete:\n    enabled: true\n")
}
