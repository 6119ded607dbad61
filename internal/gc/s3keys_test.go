package gc

import (
	"strings"
	"testing"
)

func TestFileDeleterFor(t *testing.T) {
	base := func(extra map[string]any) map[string]any {
		p := map[string]any{"region": "us-east-1", "bucket": "b", "regionendpoint": "http://127.0.0.1:1"}
		for k, v := range extra {
			p[k] = v
		}
		return p
	}
	for _, c := range []struct {
		name    string
		typ     string
		params  map[string]any
		batches bool
		err     string
	}{
		{name: "filesystem deletes through the driver", typ: "filesystem", params: map[string]any{"rootdirectory": "/x"}},
		{name: "s3", typ: "s3", params: base(nil), batches: true},
		{name: "s3aws name", typ: "s3aws", params: base(nil), batches: true},
		{name: "booleans as strings (environment overrides)", typ: "s3", params: base(map[string]any{"secure": "false", "forcepathstyle": "true"}), batches: true},
		{name: "signature v2 is left to the driver", typ: "s3", params: base(map[string]any{"v4auth": false})},
		{name: "bad boolean", typ: "s3", params: base(map[string]any{"secure": "maybe"}), err: "secure"},
		{name: "no bucket", typ: "s3", params: map[string]any{"region": "us-east-1"}, err: "bucket"},
	} {
		t.Run(c.name, func(t *testing.T) {
			d, err := FileDeleterFor(c.typ, c.params)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err %v; want one naming %q", err, c.err)
				}
				return
			}
			if err != nil || (d != nil) != c.batches {
				t.Fatalf("deleter %v, err %v; want batches %t", d, err, c.batches)
			}
		})
	}
}

func TestS3KeysMatchTheDriver(t *testing.T) {
	for root, want := range map[string]string{
		"":          "docker/registry/v2/blobs/x/data",
		"/":         "docker/registry/v2/blobs/x/data",
		"/registry": "registry/docker/registry/v2/blobs/x/data",
		"registry/": "registry/docker/registry/v2/blobs/x/data",
	} {
		d := &s3Deleter{root: root}
		if got := d.key("/docker/registry/v2/blobs/x/data"); got != want {
			t.Errorf("root %q: key %q; want %q", root, got, want)
		}
	}
}
