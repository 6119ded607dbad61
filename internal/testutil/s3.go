package testutil

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/aws/credentials"
	"github.com/aws/aws-sdk-go/aws/session"
	"github.com/aws/aws-sdk-go/service/s3"
)

// S3 is a real S3 server (versitygw over a temp directory) started for a
// test. Every test gets its own bucket; the server may be shared.
type S3 struct {
	// Endpoint is the server's URL (http://127.0.0.1:PORT).
	Endpoint string
	// Bucket was created empty for the caller.
	Bucket    string
	AccessKey string
	SecretKey string
	Region    string

	bin    string
	port   int
	dir    string
	cmd    *exec.Cmd
	exited chan struct{}
	logs   bytes.Buffer
}

// VersitygwBinary finds versitygw: $BERTH_VERSITYGW, then PATH, then the
// tool cache `make s3-tools` installs into.
func VersitygwBinary() (string, bool) {
	if p := os.Getenv("BERTH_VERSITYGW"); p != "" {
		return p, true
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, true
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	p := filepath.Join(cache, "berth", "bin", "versitygw")
	if _, err := os.Stat(p); err == nil {
		return p, true
	}
	return "", false
}

// RequireVersitygw skips the test loudly without versitygw, or fails it
// when BERTH_REQUIRE_S3=1 (CI).
func RequireVersitygw(t testing.TB) string {
	t.Helper()
	bin, ok := VersitygwBinary()
	if !ok {
		const how = "make s3-tools (go install github.com/versity/versitygw/cmd/versitygw@v1.8.0)"
		if os.Getenv("BERTH_REQUIRE_S3") == "1" {
			t.Fatalf("versitygw not found and BERTH_REQUIRE_S3=1: install it with %s", how)
		}
		t.Skipf("SKIPPING S3 test: versitygw not installed; %s, or set BERTH_REQUIRE_S3=1 to make this a failure", how)
	}
	return bin
}

// StartS3 starts versitygw on a free loopback port with a fresh bucket and
// stops it when the test ends.
func StartS3(t testing.TB) *S3 {
	t.Helper()
	s := &S3{bin: RequireVersitygw(t), port: FreePort(t), dir: t.TempDir(),
		AccessKey: "berthtest", SecretKey: randomHex(t, 20), Region: "us-east-1"}
	s.Endpoint = fmt.Sprintf("http://127.0.0.1:%d", s.port)
	s.start(t)
	t.Cleanup(s.Kill)
	s.Bucket = s.NewBucket(t)
	return s
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func (s *S3) start(t testing.TB) {
	t.Helper()
	s.logs.Reset()
	s.cmd = exec.Command(s.bin, "--access", s.AccessKey, "--secret", s.SecretKey,
		"--port", fmt.Sprintf("127.0.0.1:%d", s.port), "--quiet", "posix", s.dir)
	s.cmd.Stdout, s.cmd.Stderr = &s.logs, &s.logs
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start versitygw: %v", err)
	}
	exited := make(chan struct{})
	go func(c *exec.Cmd) { _ = c.Wait(); close(exited) }(s.cmd)
	s.exited = exited
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("versitygw exited at start: %s", s.logs.String())
		default:
		}
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.port), time.Second); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("versitygw did not listen within 30s: %s", s.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Client returns an S3 client for the server (for setup and inspection).
func (s *S3) Client(t testing.TB) *s3.S3 {
	t.Helper()
	sess, err := session.NewSession(&aws.Config{
		Region:           aws.String(s.Region),
		Endpoint:         aws.String(s.Endpoint),
		S3ForcePathStyle: aws.Bool(true),
		DisableSSL:       aws.Bool(true),
		Credentials:      credentials.NewStaticCredentials(s.AccessKey, s.SecretKey, ""),
	})
	if err != nil {
		t.Fatal(err)
	}
	return s3.New(sess)
}

// NewBucket creates another empty bucket and returns its name.
func (s *S3) NewBucket(t testing.TB) string {
	t.Helper()
	name := "berth-" + randomHex(t, 6)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.Client(t).CreateBucketWithContext(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("create bucket %s: %v", name, err)
	}
	return name
}

// StorageYAML is the `storage:` section of a berth/Distribution config for
// bucket, indented as a top-level key.
func (s *S3) StorageYAML(bucket string) string {
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

// ConfigYAML is a whole config file for s.Bucket.
func (s *S3) ConfigYAML() string { return "version: 0.1\n" + s.StorageYAML(s.Bucket) }

// Parameters are the s3-aws driver parameters for bucket, for opening the
// store directly with factory.Create.
func (s *S3) Parameters(bucket string) map[string]any {
	return map[string]any{
		"region": s.Region, "bucket": bucket, "regionendpoint": s.Endpoint, "forcepathstyle": true,
		"secure": false, "accesskey": s.AccessKey, "secretkey": s.SecretKey,
	}
}

// Dir is the directory versitygw serves: bucket b's objects are files under
// Dir()/b, and a file's modification time is the object's LastModified
// (tests use that to give objects a past push time without waiting).
func (s *S3) Dir() string { return s.dir }

// Kill stops the server abruptly (SIGKILL), as a crash or a network cut would.
func (s *S3) Kill() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		<-s.exited
		s.cmd = nil
	}
}

// Restart starts the server again on the same port and data.
func (s *S3) Restart(t testing.TB) {
	t.Helper()
	s.Kill()
	s.start(t)
}
