package servers

import (
	"context"
	"debug/buildinfo"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/berth-registry/berth/internal/s3server"
)

// FindVersitygw finds the S3 server as the tests do (s3server.Find).
func FindVersitygw() (string, error) { return s3server.Find() }

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
type S3 = s3server.Server

// Bucket is one bucket of an S3 server: the storage of one registry.
type Bucket struct {
	S3   *S3
	Name string
}

// StartS3 starts versitygw serving dir/data, its log in dir, and waits
// until it answers.
func StartS3(ctx context.Context, bin, dir string) (*S3, error) {
	logPath := filepath.Join(dir, "versitygw.log")
	var lastErr error
	for try := 0; try < startTries; try++ {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, err
		}
		// The child keeps its own copy of the descriptor.
		s, err := s3server.Start(ctx, bin, s3server.Options{Dir: filepath.Join(dir, "data"), Logs: logf, AccessKey: "bench"})
		logf.Close()
		if err == nil {
			return s, nil
		}
		lastErr = fmt.Errorf("%w; log tail:\n%s", err, tail(logPath, 1000))
	}
	return nil, lastErr
}

// NewBucket creates an empty bucket on s.
func NewBucket(ctx context.Context, s *S3, name string) (*Bucket, error) {
	if err := s.CreateBucket(ctx, name); err != nil {
		return nil, err
	}
	return &Bucket{S3: s, Name: name}, nil
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
