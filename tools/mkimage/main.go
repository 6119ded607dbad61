// Command mkimage packs a static Linux build of berth into a container image
// without Docker, as a docker-archive tarball (for docker load, k3d image
// import, kind load image-archive, ../shared/k8s/load-image) and optionally
// an OCI layout.
//
//	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o bin/berth-linux ./cmd/berth
//	go run ./tools/mkimage -o bin/berth-image.tar -tag localhost/berth:e2e bin/berth-linux
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/berth-registry/berth/internal/imagebuild"
)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("mkimage", flag.ContinueOnError)
	out := fs.String("o", "", "docker-archive tarball to write (required)")
	ociDir := fs.String("oci-layout", "", "also write an OCI image layout into this directory")
	certs := fs.String("ca-certs", "/etc/ssl/certs/ca-certificates.crt", "PEM bundle of CA roots to install")
	version := fs.String("version", "", "org.opencontainers.image.version label")
	revision := fs.String("revision", "", "org.opencontainers.image.revision label")
	var tags, labels multi
	fs.Var(&tags, "tag", "image reference to tag the image with (repeatable; default localhost/berth:e2e)")
	fs.Var(&labels, "label", "extra label KEY=VALUE (repeatable)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: mkimage -o FILE.tar [-tag REF]... [-oci-layout DIR] [-label K=V]... BINARY")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || fs.NArg() != 1 {
		fs.Usage()
		return fmt.Errorf("need -o and exactly one BINARY")
	}
	if len(tags) == 0 {
		tags = multi{"localhost/berth:e2e"}
	}
	bin, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return fmt.Errorf("read binary: %w", err)
	}
	ca, err := os.ReadFile(*certs)
	if err != nil {
		return fmt.Errorf("read CA roots (install ca-certificates or pass -ca-certs): %w", err)
	}
	lbl := map[string]string{}
	if *version != "" {
		lbl["org.opencontainers.image.version"] = *version
	}
	if *revision != "" {
		lbl["org.opencontainers.image.revision"] = *revision
	}
	for _, kv := range labels {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return fmt.Errorf("-label %q: want KEY=VALUE", kv)
		}
		lbl[k] = v
	}
	created, err := sourceDateEpoch()
	if err != nil {
		return err
	}
	img, err := imagebuild.Build(imagebuild.Options{Binary: bin, CACerts: ca, Labels: lbl, Created: created})
	if err != nil {
		return err
	}
	if err := imagebuild.WriteDockerArchive(*out, img, tags...); err != nil {
		return err
	}
	if *ociDir != "" {
		if err := imagebuild.WriteOCILayout(*ociDir, img, tags...); err != nil {
			return err
		}
	}
	digest, err := img.Digest()
	if err != nil {
		return fmt.Errorf("digest: %w", err)
	}
	slog.Info("image written", "file", *out, "tags", tags.String(), "digest", digest.String(), "oci_layout", *ociDir)
	return nil
}

// sourceDateEpoch honours the reproducible-builds convention; unset means
// the epoch, so rebuilding the same binary gives the same digest.
func sourceDateEpoch() (time.Time, error) {
	v := os.Getenv("SOURCE_DATE_EPOCH")
	if v == "" {
		return time.Time{}, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", v, err)
	}
	return time.Unix(n, 0), nil
}
