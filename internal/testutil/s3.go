package testutil

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/aws/aws-sdk-go/service/s3"

	"github.com/berth-registry/berth/internal/s3server"
)

// S3 is a real S3 server (versitygw over a temp directory) started for a
// test, with a fresh bucket.
type S3 struct {
	*s3server.Server
	// Bucket was created empty for the caller.
	Bucket string
	logs   string
}

// RequireVersitygw skips the test loudly without versitygw, or fails it
// when BERTH_REQUIRE_S3=1 (CI).
func RequireVersitygw(t testing.TB) string {
	t.Helper()
	bin, err := s3server.Find()
	switch {
	case errors.Is(err, s3server.ErrNotInstalled) && os.Getenv("BERTH_REQUIRE_S3") != "1":
		t.Skipf("SKIPPING S3 test: %v, or set BERTH_REQUIRE_S3=1 to make this a failure", err)
	case err != nil:
		t.Fatalf("S3 tests need versitygw (BERTH_REQUIRE_S3=1): %v", err)
	}
	return bin
}

// StartS3 starts versitygw on a free loopback port with a fresh bucket and
// stops it when the test ends.
func StartS3(t testing.TB) *S3 {
	t.Helper()
	bin := RequireVersitygw(t)
	dir := t.TempDir()
	s := &S3{logs: filepath.Join(dir, "versitygw.log")}
	logs, err := os.Create(s.logs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logs.Close() })
	s.Server, err = s3server.Start(context.Background(), bin, s3server.Options{
		Dir: filepath.Join(dir, "data"), Logs: logs, AccessKey: "berthtest"})
	if err != nil {
		t.Fatalf("%v\n%s", err, s.logTail())
	}
	t.Cleanup(s.Kill)
	s.Bucket = s.NewBucket(t)
	return s
}

func (s *S3) logTail() string {
	b, _ := os.ReadFile(s.logs)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// Client returns an S3 client for the server (for setup and inspection).
func (s *S3) Client(t testing.TB) *s3.S3 {
	t.Helper()
	c, err := s.Server.Client()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// NewBucket creates another empty bucket and returns its name.
func (s *S3) NewBucket(t testing.TB) string {
	t.Helper()
	name := "berth-" + randomHex(t, 6)
	if err := s.CreateBucket(context.Background(), name); err != nil {
		t.Fatal(err)
	}
	return name
}

// ConfigYAML is a whole config file for s.Bucket.
func (s *S3) ConfigYAML() string { return "version: 0.1\n" + s.StorageYAML(s.Bucket) }

// Restart starts the server again on the same port and data.
func (s *S3) Restart(t testing.TB) {
	t.Helper()
	if err := s.Server.Restart(context.Background()); err != nil {
		t.Fatalf("%v\n%s", err, s.logTail())
	}
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", b)
}
