package imagebuild

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// fakeELF returns a minimal 64-bit little-endian ELF executable header, with
// a PT_INTERP program header when dynamic is set.
func fakeELF(machine elf.Machine, dynamic bool) []byte {
	var b bytes.Buffer
	b.Write([]byte{0x7f, 'E', 'L', 'F', byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT), byte(elf.ELFOSABI_NONE)})
	b.Write(make([]byte, 8))
	w := func(v any) { _ = binary.Write(&b, binary.LittleEndian, v) }
	w(uint16(elf.ET_EXEC))
	w(uint16(machine))
	w(uint32(elf.EV_CURRENT))
	w(uint64(0x401000)) // entry
	phoff, phnum := uint64(0), uint16(0)
	if dynamic {
		phoff, phnum = 64, 1
	}
	w(phoff)
	w(uint64(0)) // shoff
	w(uint32(0)) // flags
	w(uint16(64))
	w(uint16(56))
	w(phnum)
	w(uint16(64))
	w(uint16(0))
	w(uint16(0))
	if dynamic {
		w(uint32(elf.PT_INTERP))
		w(uint32(elf.PF_R))
		for range 6 {
			w(uint64(0))
		}
	}
	return b.Bytes()
}

const certs = "-----BEGIN CERTIFICATE-----\nnot a real one\n-----END CERTIFICATE-----\n"

func build(t *testing.T, opts Options) v1.Image {
	t.Helper()
	img, err := Build(opts)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return img
}

func TestBuildConfig(t *testing.T) {
	created := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	img := build(t, Options{
		Binary:  fakeELF(elf.EM_X86_64, false),
		CACerts: []byte(certs),
		Labels:  map[string]string{"org.opencontainers.image.version": "1.2.3"},
		Created: created,
	})
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	checks := []struct {
		what      string
		got, want any
	}{
		{"os", cf.OS, "linux"},
		{"architecture", cf.Architecture, "amd64"},
		{"entrypoint", strings.Join(c.Entrypoint, " "), "/berth"},
		{"cmd", strings.Join(c.Cmd, " "), "serve"},
		{"user", c.User, "65532:65532"},
		{"workdir", c.WorkingDir, "/var/lib/berth"},
		{"created", cf.Created.UTC(), created},
		{"version label", c.Labels["org.opencontainers.image.version"], "1.2.3"},
		{"title label", c.Labels["org.opencontainers.image.title"], "berth"},
		{"created label", c.Labels["org.opencontainers.image.created"], "2026-11-27T10:00:00Z"},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.what, ch.got, ch.want)
		}
	}
	for _, p := range []string{"5000/tcp", "5001/tcp"} {
		if _, ok := c.ExposedPorts[p]; !ok {
			t.Errorf("port %s not exposed: %v", p, c.ExposedPorts)
		}
	}
	mt, err := img.MediaType()
	if err != nil || mt != "application/vnd.oci.image.manifest.v1+json" {
		t.Errorf("manifest media type %s (%v), want OCI", mt, err)
	}
	// validate.Image runs on the written forms in
	// TestWriteDockerArchiveAndOCILayout: on the in-memory mutate result it
	// trips over a nil-vs-empty annotations map that never reaches the wire.
}

type file struct {
	mode     int64
	uid, gid int
	typ      byte
	data     string
	mtime    time.Time
}

func layerFiles(t *testing.T, img v1.Image) map[string]file {
	t.Helper()
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("want one layer, got %d (%v)", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	out := map[string]file{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name] = file{h.Mode, h.Uid, h.Gid, h.Typeflag, string(data), h.ModTime}
	}
}

func TestBuildLayer(t *testing.T) {
	bin := fakeELF(elf.EM_X86_64, false)
	files := layerFiles(t, build(t, Options{Binary: bin, CACerts: []byte(certs)}))
	want := map[string]file{
		"berth":                             {mode: 0o755, typ: tar.TypeReg, data: string(bin)},
		"etc/ssl/certs/ca-certificates.crt": {mode: 0o644, typ: tar.TypeReg, data: certs},
		"tmp/":                              {mode: 0o1777, typ: tar.TypeDir},
		"var/lib/berth/":                    {mode: 0o755, typ: tar.TypeDir, uid: 65532, gid: 65532},
		"home/nonroot/":                     {mode: 0o700, typ: tar.TypeDir, uid: 65532, gid: 65532},
	}
	for name, w := range want {
		g, ok := files[name]
		if !ok {
			t.Errorf("layer lacks %s", name)
			continue
		}
		if g.mode != w.mode || g.typ != w.typ || g.uid != w.uid || g.gid != w.gid || g.data != w.data {
			t.Errorf("%s: mode %o type %c owner %d:%d (%d bytes), want mode %o type %c owner %d:%d (%d bytes)",
				name, g.mode, g.typ, g.uid, g.gid, len(g.data), w.mode, w.typ, w.uid, w.gid, len(w.data))
		}
		if !g.mtime.Equal(time.Unix(0, 0)) {
			t.Errorf("%s: mtime %v, want the epoch for a reproducible layer", name, g.mtime)
		}
	}
	if !strings.Contains(files["etc/passwd"].data, "nonroot:x:65532:65532:") {
		t.Errorf("/etc/passwd has no nonroot user 65532:\n%s", files["etc/passwd"].data)
	}
	if !strings.Contains(files["etc/group"].data, "nonroot:x:65532:") {
		t.Errorf("/etc/group has no nonroot group 65532:\n%s", files["etc/group"].data)
	}
	for name := range files {
		if dir := filepath.Dir(strings.TrimSuffix(name, "/")); dir != "." {
			if _, ok := files[dir+"/"]; !ok {
				t.Errorf("%s has no parent directory entry %s/", name, dir)
			}
		}
	}
}

func TestBuildReproducible(t *testing.T) {
	opts := Options{Binary: fakeELF(elf.EM_X86_64, false), CACerts: []byte(certs)}
	a, _ := build(t, opts).Digest()
	b, _ := build(t, opts).Digest()
	if a != b {
		t.Errorf("two builds from the same inputs differ: %s vs %s", a, b)
	}
	opts.Binary = append(opts.Binary, 0)
	if c, _ := build(t, opts).Digest(); c == a {
		t.Error("a different binary gave the same digest")
	}
}

func TestBuildArchitectureFromBinary(t *testing.T) {
	cf, err := build(t, Options{Binary: fakeELF(elf.EM_AARCH64, false), CACerts: []byte(certs)}).ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Architecture != "arm64" {
		t.Errorf("architecture %s, want arm64", cf.Architecture)
	}
}

func TestBuildRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"empty binary", Options{CACerts: []byte(certs)}, "empty"},
		{"script", Options{Binary: []byte("#!/bin/sh\necho hi\n"), CACerts: []byte(certs)}, "not an ELF"},
		{"dynamic binary", Options{Binary: fakeELF(elf.EM_X86_64, true), CACerts: []byte(certs)}, "CGO_ENABLED=0"},
		{"no CA roots", Options{Binary: fakeELF(elf.EM_X86_64, false)}, "CA certificates"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Build(tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Build: %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

func TestWriteDockerArchiveAndOCILayout(t *testing.T) {
	img := build(t, Options{Binary: fakeELF(elf.EM_X86_64, false), CACerts: []byte(certs)})
	want, _ := img.Digest()
	dir := t.TempDir()

	tarPath := filepath.Join(dir, "berth.tar")
	if err := WriteDockerArchive(tarPath, img, "localhost/berth:e2e"); err != nil {
		t.Fatal(err)
	}
	tag, _ := name.NewTag("localhost/berth:e2e")
	back, err := tarball.ImageFromPath(tarPath, &tag)
	if err != nil {
		t.Fatalf("read the docker archive back: %v", err)
	}
	if err := validate.Image(back); err != nil {
		t.Errorf("docker archive image invalid: %v", err)
	}
	if cf, err := back.ConfigFile(); err != nil || cf.Config.User != "65532:65532" {
		t.Errorf("docker archive config user %v (%v)", cf, err)
	}

	ociDir := filepath.Join(dir, "oci")
	if err := WriteOCILayout(ociDir, img, "localhost/berth:e2e"); err != nil {
		t.Fatal(err)
	}
	p, err := layout.FromPath(ociDir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := p.Image(want)
	if err != nil {
		t.Fatalf("image %s not in the OCI layout: %v", want, err)
	}
	if err := validate.Image(got); err != nil {
		t.Errorf("OCI layout image invalid: %v", err)
	}
	idx, _ := p.ImageIndex()
	m, _ := idx.IndexManifest()
	if len(m.Manifests) != 1 || m.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "localhost/berth:e2e" {
		t.Errorf("OCI index %+v, want one manifest named localhost/berth:e2e", m.Manifests)
	}
	if err := WriteDockerArchive(tarPath, img, "not a tag!"); err == nil {
		t.Error("an invalid tag was accepted")
	}
}
