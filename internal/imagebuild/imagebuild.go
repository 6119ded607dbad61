// Package imagebuild packs berth's static binary into a container image
// without a Docker engine: one layer on the empty base holding the binary,
// CA roots, a passwd/group pair with the nonroot user and a world-writable
// /tmp. The result is reproducible: the same inputs give the same digest.
package imagebuild

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Paths inside the image.
const (
	BinaryPath  = "/berth"
	CACertsPath = "/etc/ssl/certs/ca-certificates.crt"
	// DataDir is the working directory: `berth serve` without a config keeps
	// its data in ./berth-data, which must be writable by the nonroot user.
	DataDir = "/var/lib/berth"
	// NonRootUID is distroless's "nonroot" user, so the image and the
	// Dockerfile build agree and the manifests can pin runAsUser.
	NonRootUID = 65532
)

// Options describe one image.
type Options struct {
	// Binary is a statically linked Linux ELF executable; it becomes /berth.
	Binary []byte
	// CACerts is a PEM bundle installed at /etc/ssl/certs/ca-certificates.crt
	// (S3 storage and TLS Redis need roots). Required.
	CACerts []byte
	// Cmd is the default command after the /berth entrypoint; nil means
	// ["serve"].
	Cmd []string
	// Labels are added to (and override) the org.opencontainers.image.* defaults.
	Labels map[string]string
	// Created is the image creation time and every file's mtime. The zero
	// value means the Unix epoch, for reproducible builds.
	Created time.Time
}

// Build assembles the image. It rejects binaries that would not start on the
// empty base: non-ELF files and dynamically linked executables.
func Build(opts Options) (v1.Image, error) {
	arch, err := elfArch(opts.Binary)
	if err != nil {
		return nil, err
	}
	if len(opts.CACerts) == 0 {
		return nil, errors.New("imagebuild: no CA certificates given: berth could not verify TLS peers (S3, Redis over TLS)")
	}
	created := opts.Created
	if created.IsZero() {
		created = time.Unix(0, 0)
	}
	created = created.UTC()

	layerTar, err := rootfs(opts.Binary, opts.CACerts, created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("imagebuild: layer: %w", err)
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		return nil, fmt.Errorf("imagebuild: append layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("imagebuild: config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	if arch == "arm" {
		cf.Variant = "v7"
	}
	cf.Created = v1.Time{Time: created}
	cf.History = []v1.History{{
		Created:   v1.Time{Time: created},
		CreatedBy: "berth imagebuild: /berth, CA roots, passwd, /tmp",
		Comment:   "static binary on the empty base",
	}}
	cmd := opts.Cmd
	if cmd == nil {
		cmd = []string{"serve"}
	}
	labels := map[string]string{
		"org.opencontainers.image.title":       "berth",
		"org.opencontainers.image.description": "berth: a self-maintaining private container registry",
		"org.opencontainers.image.source":      "https://github.com/berth-registry/berth",
		"org.opencontainers.image.created":     created.Format(time.RFC3339),
	}
	maps.Copy(labels, opts.Labels)
	cf.Config = v1.Config{
		Entrypoint:   []string{BinaryPath},
		Cmd:          cmd,
		User:         fmt.Sprintf("%d:%d", NonRootUID, NonRootUID),
		WorkingDir:   DataDir,
		Env:          []string{"SSL_CERT_FILE=" + CACertsPath},
		ExposedPorts: map[string]struct{}{"5000/tcp": {}, "5001/tcp": {}},
		Labels:       labels,
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("imagebuild: set config: %w", err)
	}
	return img, nil
}

// elfArch returns the GOARCH-style architecture of a static ELF executable.
func elfArch(bin []byte) (string, error) {
	if len(bin) == 0 {
		return "", errors.New("imagebuild: the binary is empty")
	}
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return "", fmt.Errorf("imagebuild: the binary is not an ELF executable (build it with GOOS=linux): %w", err)
	}
	defer f.Close()
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return "", fmt.Errorf("imagebuild: ELF type %s is not an executable", f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return "", errors.New("imagebuild: the binary is dynamically linked (it names an ELF interpreter); the image has no libc: build with CGO_ENABLED=0")
		}
	}
	if f.OSABI != elf.ELFOSABI_NONE && f.OSABI != elf.ELFOSABI_LINUX {
		return "", fmt.Errorf("imagebuild: ELF OS ABI %s is not Linux", f.OSABI)
	}
	switch {
	case f.Machine == elf.EM_X86_64:
		return "amd64", nil
	case f.Machine == elf.EM_AARCH64:
		return "arm64", nil
	case f.Machine == elf.EM_386:
		return "386", nil
	case f.Machine == elf.EM_ARM:
		return "arm", nil
	case f.Machine == elf.EM_PPC64 && f.ByteOrder.String() == "LittleEndian":
		return "ppc64le", nil
	case f.Machine == elf.EM_S390:
		return "s390x", nil
	case f.Machine == elf.EM_RISCV && f.Class == elf.ELFCLASS64:
		return "riscv64", nil
	}
	return "", fmt.Errorf("imagebuild: unsupported ELF machine %s", f.Machine)
}

type entry struct {
	mode     int64
	uid, gid int
	data     []byte
	dir      bool
}

const (
	passwd = "root:x:0:0:root:/root:/sbin/nologin\n" +
		"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n" +
		"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
	group = "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"
)

// rootfs writes the layer's tar: parents before children, sorted, fixed
// owners and times, so the bytes depend on the inputs only.
func rootfs(bin, certs []byte, mtime time.Time) ([]byte, error) {
	files := map[string]entry{
		"etc/":                              {mode: 0o755, dir: true},
		"etc/passwd":                        {mode: 0o644, data: []byte(passwd)},
		"etc/group":                         {mode: 0o644, data: []byte(group)},
		"etc/ssl/":                          {mode: 0o755, dir: true},
		"etc/ssl/certs/":                    {mode: 0o755, dir: true},
		"etc/ssl/certs/ca-certificates.crt": {mode: 0o644, data: certs},
		"home/":                             {mode: 0o755, dir: true},
		"home/nonroot/":                     {mode: 0o700, dir: true, uid: NonRootUID, gid: NonRootUID},
		"tmp/":                              {mode: 0o1777, dir: true},
		"var/":                              {mode: 0o755, dir: true},
		"var/lib/":                          {mode: 0o755, dir: true},
		"var/lib/berth/":                    {mode: 0o755, dir: true, uid: NonRootUID, gid: NonRootUID},
		"berth":                             {mode: 0o755, data: bin},
	}
	names := slices.Collect(maps.Keys(files))
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range names {
		e := files[name]
		h := &tar.Header{
			Name:    name,
			Mode:    e.mode,
			Uid:     e.uid,
			Gid:     e.gid,
			ModTime: mtime,
			Format:  tar.FormatPAX,
		}
		if e.dir {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("imagebuild: tar header %s: %w", name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, fmt.Errorf("imagebuild: tar %s: %w", name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("imagebuild: close tar: %w", err)
	}
	return buf.Bytes(), nil
}
