package config

import (
	"strings"
	"testing"
)

// S3 configured only through REGISTRY_* variables, with no file, is a whole
// configuration: upstream's defaults (catalog size) and berth's (deletes on,
// redirects off) survive REGISTRY_STORAGE replacing the storage section.
func TestS3FromEnvironmentWithoutFile(t *testing.T) {
	for k, v := range map[string]string{
		"REGISTRY_STORAGE":                   "s3",
		"REGISTRY_STORAGE_S3_BUCKET":         "images",
		"REGISTRY_STORAGE_S3_REGION":         "us-east-1",
		"REGISTRY_STORAGE_S3_REGIONENDPOINT": "http://127.0.0.1:7070",
		"REGISTRY_STORAGE_S3_FORCEPATHSTYLE": "true",
		"REGISTRY_STORAGE_S3_ACCESSKEY":      "AKIAENVACCESSKEY",
		"REGISTRY_STORAGE_S3_SECRETKEY":      "env-secret-key-value",
	} {
		t.Setenv(k, v)
	}
	c, err := Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	st := c.Distribution.Storage
	if st.Type() != "s3" || st["s3"]["bucket"] != "images" {
		t.Fatalf("storage from the environment: %#v", st)
	}
	if _, ok := st["filesystem"]; ok {
		t.Fatalf("the default filesystem storage survived REGISTRY_STORAGE=s3: %#v", st)
	}
	if c.Distribution.Catalog.MaxEntries != 1000 {
		t.Fatalf("catalog.maxentries %d, want upstream's 1000 (0 makes every /v2/_catalog a 400)", c.Distribution.Catalog.MaxEntries)
	}
	if st["delete"]["enabled"] != true {
		t.Fatalf("storage.delete without a file: %#v, want enabled (gc and prune need it)", st["delete"])
	}
	if st["redirect"]["disable"] != true {
		t.Fatalf("storage.redirect by default: %#v, want disabled", st["redirect"])
	}
	out, err := c.Redacted()
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"AKIAENVACCESSKEY", "env-secret-key-value"} {
		if strings.Contains(string(out), secret) {
			t.Errorf("%q printed:\n%s", secret, out)
		}
	}
	if !strings.Contains(string(out), "images") {
		t.Errorf("bucket missing from:\n%s", out)
	}
}

// Every credential-like key of the S3 driver, and of a future one, is
// redacted wherever it is nested.
func TestS3CredentialsRedacted(t *testing.T) {
	p := writeFile(t, "config.yml", `version: 0.1
storage:
  s3:
    region: us-east-1
    bucket: b
    accessKey: AKIAMIXEDCASE
    secretkey: s3-secret-value
    sessiontoken: session-token-value
    keyid: arn:aws:kms:us-east-1:1:key/kms-key-id
`)
	c, err := Load(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.Redacted()
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"AKIAMIXEDCASE", "s3-secret-value", "session-token-value"} {
		if strings.Contains(string(out), secret) {
			t.Errorf("%q printed:\n%s", secret, out)
		}
	}
	// A KMS key id names a key, it is not one: kept so the output is useful.
	if !strings.Contains(string(out), "kms-key-id") {
		t.Errorf("keyid missing from:\n%s", out)
	}
}

func TestS3RedirectDefaultAndExplicit(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want bool
	}{
		{"", true},
		{"  redirect:\n    disable: false\n", false},
		{"  redirect:\n    disable: true\n", true},
	} {
		p := writeFile(t, "config.yml", "version: 0.1\nstorage:\n  s3:\n    region: us-east-1\n    bucket: b\n"+tc.yaml)
		c, err := Load(p, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
		if got := c.Distribution.Storage["redirect"]["disable"]; got != tc.want {
			t.Errorf("with %q: redirect.disable %v, want %v", tc.yaml, got, tc.want)
		}
	}
	p := writeFile(t, "config.yml", "version: 0.1\nstorage:\n  s3:\n    region: us-east-1\n    bucket: b\n  redirect:\n    disable: sometimes\n")
	c, err := Load(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Validate()
	if err == nil || !strings.Contains(err.Error(), "storage.redirect.disable") || !strings.Contains(err.Error(), ":7:") {
		t.Fatalf("a non-boolean redirect.disable: %v, want an error naming the key and line", err)
	}
}

// The AWS SDK's own request logging prints signed headers to stdout.
func TestS3SDKRequestLoggingRefused(t *testing.T) {
	for level, ok := range map[string]bool{"off": true, "debug": false, "debugwithsigning": false, "debugwithhttpbody": false} {
		p := writeFile(t, "config.yml", "version: 0.1\nstorage:\n  s3:\n    region: us-east-1\n    bucket: b\n    loglevel: "+level+"\n")
		c, err := Load(p, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = c.Validate()
		if ok != (err == nil) {
			t.Errorf("loglevel %s: %v", level, err)
		}
		if err != nil && !strings.Contains(err.Error(), "storage.s3.loglevel") {
			t.Errorf("loglevel %s: error does not name the key: %v", level, err)
		}
	}
}
