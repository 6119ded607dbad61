package main

import (
	"context"
	"fmt"
	"os"

	"github.com/berth-registry/berth/internal/s3server"
)

// findVersitygw is the -versitygw flag when set, else found as the tests
// find it (s3server.Find).
func findVersitygw(flagValue string) (string, error) {
	if flagValue == "" {
		return s3server.Find()
	}
	if _, err := os.Stat(flagValue); err != nil {
		return "", fmt.Errorf("versitygw: %w", err)
	}
	return flagValue, nil
}

// s3Store is a versitygw process serving a directory, with one bucket made
// for the run.
type s3Store struct {
	*s3server.Server
	bucket string
	log    *os.File
}

func startS3(ctx context.Context, bin, dir, logPath string) (*s3Store, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	s := &s3Store{bucket: "berth-conformance", log: logFile}
	if s.Server, err = s3server.Start(ctx, bin, s3server.Options{Dir: dir, Logs: logFile, AccessKey: "conformance"}); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("%w (log: %s)", err, logPath)
	}
	if err := s.CreateBucket(ctx, s.bucket); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

func (s *s3Store) stop() {
	if s == nil {
		return
	}
	s.Kill()
	s.log.Close()
}
