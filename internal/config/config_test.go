package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultsServeLoopbackWithoutAuth(t *testing.T) {
	c, err := Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Distribution.HTTP.Addr != "127.0.0.1:5000" || c.RootDirectory() != DefaultDataDir || c.Berth.Debug.Addr != "127.0.0.1:5001" {
		t.Fatalf("defaults: addr %s root %s debug %s", c.Distribution.HTTP.Addr, c.RootDirectory(), c.Berth.Debug.Addr)
	}
	if c.CacheType() != "inmemory" {
		t.Fatalf("cache %s", c.CacheType())
	}
}

// A config.yml written for registry:2 must load unchanged.
func TestUpstreamConfigAcceptedUnchanged(t *testing.T) {
	p := writeFile(t, "config.yml", `version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:5000
  headers:
    X-Content-Type-Options: [nosniff]
  debug:
    addr: 127.0.0.1:5901
    prometheus:
      enabled: true
      path: /metrics
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
`)
	c, err := Load(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Berth.Debug.Addr != "127.0.0.1:5901" {
		t.Fatalf("http.debug.addr not honoured: %s", c.Berth.Debug.Addr)
	}
}

func TestEnvironmentAndFlagsOverrideFile(t *testing.T) {
	p := writeFile(t, "config.yml", "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /from/file\nhttp:\n  addr: 127.0.0.1:7000\n")
	t.Setenv("REGISTRY_HTTP_ADDR", "127.0.0.1:7001")
	c, err := Load(p, []string{"BERTH_REDIS_PASSWORD=pw"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Distribution.HTTP.Addr != "127.0.0.1:7001" {
		t.Fatalf("REGISTRY_HTTP_ADDR ignored: %s", c.Distribution.HTTP.Addr)
	}
	if c.Distribution.Redis.Options.Password != "pw" {
		t.Fatal("BERTH_REDIS_PASSWORD ignored")
	}
	if err := c.Apply(Overrides{Addr: "127.0.0.1:7002", DataDir: "/from/flag"}); err != nil {
		t.Fatal(err)
	}
	if c.Distribution.HTTP.Addr != "127.0.0.1:7002" || c.RootDirectory() != "/from/flag" {
		t.Fatalf("flags did not win: %s %s", c.Distribution.HTTP.Addr, c.RootDirectory())
	}
}

func TestInvalidConfigNamesFileLineAndKey(t *testing.T) {
	htpasswdMD5 := writeFile(t, "htpasswd", "bob:$apr1$abc$def\n")
	cases := []struct {
		name, text string
		wantLine   int
		want       string
	}{
		{"unknown berth key", "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /x\nberth:\n  gc:\n    intervall: 1h\n", 7, `unknown key "intervall"`},
		{"bad duration", "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /x\nberth:\n  maintenance:\n    leasettl: soon\n", 7, "leasettl"},
		{"lease too long", "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /x\nberth:\n  maintenance:\n    leasettl: 1h\n", 7, "berth.maintenance.leasettl"},
		{"log format", "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /x\nberth:\n  log:\n    format: xml\n", 7, "berth.log.format"},
		{"no storage", "version: 0.1\nhttp:\n  addr: 127.0.0.1:5000\n", 0, "storage"},
		{"two drivers", "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /x\n  inmemory: {}\n", 0, "exactly one storage type"},
		{"unsupported driver", "version: 0.1\nstorage:\n  azure:\n    accountname: x\n", 3, "unsupported storage driver"},
		{"delete not bool", "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /x\n  delete:\n    enabled: yes-please\n", 6, "storage.delete.enabled"},
		{"public without auth", "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /x\nhttp:\n  addr: 0.0.0.0:5000\n", 6, "--insecure-public"},
		{"missing htpasswd", "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /x\nauth:\n  htpasswd:\n    realm: r\n    path: /nonexistent/htpasswd\n", 8, "berth htpasswd"},
		{"md5 htpasswd", "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /x\nauth:\n  htpasswd:\n    realm: r\n    path: " + htpasswdMD5 + "\n", 1, "only bcrypt"},
		{"half TLS", "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /x\nhttp:\n  addr: 127.0.0.1:5000\n  tls:\n    certificate: /x.crt\n", 7, "together"},
		{"redis cache without redis", "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /x\nberth:\n  cache: redis\n", 6, "redis.addrs"},
		{"yaml syntax", "version: 0.1\nstorage:\n  filesystem:\n   - x\n  :\n", 0, ""},
		{"s3 without bucket", "version: 0.1\nstorage:\n  s3:\n    region: us-east-1\n", 3, "no bucket parameter"},
		{"s3 chunk size", "version: 0.1\nstorage:\n  s3:\n    region: us-east-1\n    bucket: b\n    chunksize: 1\n", 6, "chunksize"},
		{"bad regexp", "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /x\nvalidation:\n  manifests:\n    urls:\n      allow: ['(']\n", 8, "regular expression"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, "config.yml", tc.text)
			c, err := Load(p, nil)
			if err == nil {
				err = c.Validate()
			}
			if err == nil {
				t.Fatal("accepted")
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("%T %v is not a config error", err, err)
			}
			if ce.ExitCode() != 2 {
				t.Fatal("exit code")
			}
			if tc.wantLine > 0 && ce.Line != tc.wantLine {
				t.Errorf("line %d, want %d (%v)", ce.Line, tc.wantLine, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%q does not mention %q", err, tc.want)
			}
			if tc.name != "md5 htpasswd" && !strings.HasPrefix(err.Error(), p) {
				t.Errorf("%q does not name the file", err)
			}
		})
	}
}

func TestInsecurePublicIsExplicit(t *testing.T) {
	c, err := Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(Overrides{Addr: "0.0.0.0:5000"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err == nil {
		t.Fatal("public listener without auth accepted")
	}
	if err := c.Apply(Overrides{InsecurePublic: true}); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("explicitly allowed: %v", err)
	}
	h, _ := bcrypt.GenerateFromPassword([]byte("x"), bcrypt.MinCost)
	c2, _ := Load("", nil)
	_ = c2.Apply(Overrides{Addr: "0.0.0.0:5000", Htpasswd: writeFile(t, "h", "alice:"+string(h)+"\n")})
	if err := c2.Validate(); err != nil {
		t.Fatalf("public listener with auth: %v", err)
	}
}

func TestRedactedHidesSecrets(t *testing.T) {
	p := writeFile(t, "config.yml", `version: 0.1
storage:
  s3:
    region: us-east-1
    bucket: b
    accesskey: AKIASECRETACCESS
    secretkey: verysecretkey
http:
  addr: 127.0.0.1:5000
  secret: httpsecretvalue
redis:
  addrs: [127.0.0.1:6379]
  password: redispassword
notifications:
  endpoints:
    - name: hook
      url: https://example.invalid/hook
      headers:
        Authorization: [Bearer tokenvalue]
`)
	c, err := Load(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.Redacted()
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"AKIASECRETACCESS", "verysecretkey", "httpsecretvalue", "redispassword", "tokenvalue"} {
		if strings.Contains(string(out), secret) {
			t.Errorf("%q printed:\n%s", secret, out)
		}
	}
	for _, kept := range []string{"us-east-1", "127.0.0.1:6379", "berth:"} {
		if !strings.Contains(string(out), kept) {
			t.Errorf("%q missing from:\n%s", kept, out)
		}
	}
}
