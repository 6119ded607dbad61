package servers

import (
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

type regConfig struct {
	Storage struct {
		Filesystem struct{ RootDirectory string }  `yaml:"filesystem"`
		Delete     struct{ Enabled bool }          `yaml:"delete"`
		Cache      struct{ BlobDescriptor string } `yaml:"cache"`
	} `yaml:"storage"`
	HTTP  struct{ Addr, Secret string } `yaml:"http"`
	Redis struct {
		Addrs []string `yaml:"addrs"`
		Addr  string   `yaml:"addr"`
	} `yaml:"redis"`
}

func parse(t *testing.T, kind Kind, redis string) regConfig {
	t.Helper()
	b, err := RegistryConfig(kind, "127.0.0.1:5555", "/tmp/x y/data", redis)
	if err != nil {
		t.Fatal(err)
	}
	var c regConfig
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	return c
}

func TestRegistryConfig(t *testing.T) {
	c := parse(t, Distribution, "")
	if c.Storage.Filesystem.RootDirectory != "/tmp/x y/data" || !c.Storage.Delete.Enabled ||
		c.Storage.Cache.BlobDescriptor != "inmemory" || c.HTTP.Addr != "127.0.0.1:5555" || c.HTTP.Secret == "" {
		t.Errorf("in-memory config = %+v", c)
	}
	c = parse(t, Distribution, "127.0.0.1:6379")
	if c.Storage.Cache.BlobDescriptor != "redis" || len(c.Redis.Addrs) != 1 || c.Redis.Addrs[0] != "127.0.0.1:6379" {
		t.Errorf("v3 redis config = %+v", c)
	}
	c = parse(t, Debian, "127.0.0.1:6379")
	if c.Storage.Cache.BlobDescriptor != "redis" || c.Redis.Addr != "127.0.0.1:6379" {
		t.Errorf("v2 redis config = %+v", c)
	}
	if _, err := RegistryConfig(Berth, "a", "b", ""); err == nil {
		t.Error("berth takes flags, not a registry config")
	}
	if _, err := RegistryConfig(Distribution, "a", "b\nc", ""); err == nil {
		t.Error("a newline in the root must be refused")
	}
}

func TestBerthArgs(t *testing.T) {
	got := strings.Join(BerthArgs("127.0.0.1:1", "127.0.0.1:2", "/d", "127.0.0.1:3"), " ")
	if got != "serve --addr 127.0.0.1:1 --debug-addr 127.0.0.1:2 --data-dir /d --redis 127.0.0.1:3" {
		t.Errorf("args = %q", got)
	}
}

func TestParseVmHWM(t *testing.T) {
	status := "Name:\tregistry\nVmPeak:\t  900 kB\nVmHWM:\t   12345 kB\nVmRSS:\t 100 kB\n"
	if got, err := parseVmHWM(strings.NewReader(status)); err != nil || got != 12345 {
		t.Errorf("parseVmHWM = %d, %v", got, err)
	}
	if _, err := parseVmHWM(strings.NewReader("Name:\tx\n")); err == nil {
		t.Error("missing VmHWM must be an error")
	}
}

func TestS3Configs(t *testing.T) {
	bucket := &Bucket{S3: &S3{Endpoint: "http://127.0.0.1:9000", AccessKey: "ak", SecretKey: "sk", Region: "us-east-1"}, Name: "b1"}
	type s3Config struct {
		Storage map[string]map[string]any `yaml:"storage"`
		HTTP    struct{ Addr string }     `yaml:"http"`
	}
	b, err := registryConfig(Distribution, "127.0.0.1:5555", "/unused", bucket, "")
	if err != nil {
		t.Fatal(err)
	}
	var up s3Config
	if err := yaml.Unmarshal(b, &up); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	var berth s3Config
	if err := yaml.Unmarshal(BerthConfig(bucket), &berth); err != nil {
		t.Fatalf("%v\n%s", err, BerthConfig(bucket))
	}
	for name, c := range map[string]s3Config{"upstream": up, "berth": berth} {
		s3 := c.Storage["s3"]
		if s3["bucket"] != "b1" || s3["regionendpoint"] != "http://127.0.0.1:9000" || s3["forcepathstyle"] != true ||
			s3["secure"] != false || s3["accesskey"] != "ak" || s3["secretkey"] != "sk" || s3["region"] != "us-east-1" {
			t.Errorf("%s: s3 section %v", name, s3)
		}
		// Both serve every byte themselves: with redirects the client would
		// read from the S3 server and the pull would not measure the registry.
		if c.Storage["redirect"]["disable"] != true || c.Storage["delete"]["enabled"] != true {
			t.Errorf("%s: storage %v", name, c.Storage)
		}
		if _, ok := c.Storage["filesystem"]; ok {
			t.Errorf("%s: filesystem storage as well as s3", name)
		}
	}
	if got := strings.Join(BerthArgs("127.0.0.1:1", "127.0.0.1:2", "", ""), " "); got != "serve --addr 127.0.0.1:1 --debug-addr 127.0.0.1:2" {
		t.Errorf("berth args without a root = %q", got)
	}
}
