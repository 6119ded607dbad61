package config

import (
	"fmt"
	"os"
	"strings"

	"github.com/distribution/distribution/v3/configuration"
)

// Overrides are the command-line flags of `berth serve`; a zero field means
// "not given" and leaves the file's value alone.
type Overrides struct {
	Addr              string
	DataDir           string
	Htpasswd          string
	TLSCert           string
	TLSKey            string
	Redis             string
	RedisPasswordFile string
	DebugAddr         string
	LogFormat         string
	InsecurePublic    bool
}

// Apply writes the flags over the loaded configuration.
func (c *Config) Apply(o Overrides) error {
	d := c.Distribution
	if o.Addr != "" {
		d.HTTP.Addr = o.Addr
	}
	if o.DataDir != "" {
		if t := d.Storage.Type(); t != "filesystem" {
			return &Error{Key: "--data-dir", Msg: fmt.Sprintf("only applies to filesystem storage, the configuration uses %q", t)}
		}
		d.Storage["filesystem"]["rootdirectory"] = o.DataDir
	}
	if o.Htpasswd != "" {
		d.Auth = configuration.Auth{"htpasswd": configuration.Parameters{"realm": "berth", "path": o.Htpasswd}}
	}
	if o.TLSCert != "" {
		d.HTTP.TLS.Certificate = o.TLSCert
	}
	if o.TLSKey != "" {
		d.HTTP.TLS.Key = o.TLSKey
	}
	if o.Redis != "" {
		d.Redis.Options.Addrs = strings.Split(o.Redis, ",")
	}
	if o.RedisPasswordFile != "" {
		b, err := os.ReadFile(o.RedisPasswordFile)
		if err != nil {
			return &Error{Key: "--redis-password-file", Msg: fmt.Sprintf("cannot read: %v", unwrapPathErr(err))}
		}
		d.Redis.Options.Password = strings.TrimRight(string(b), "\r\n")
	}
	if o.DebugAddr != "" {
		c.Berth.Debug.Addr = o.DebugAddr
	}
	if o.LogFormat != "" {
		c.Berth.Log.Format = o.LogFormat
	}
	if o.InsecurePublic {
		c.Berth.InsecurePublic = true
	}
	return nil
}

// RootDirectory is the filesystem storage root, or "" for other drivers.
func (c *Config) RootDirectory() string {
	if c.Distribution.Storage.Type() != "filesystem" {
		return ""
	}
	v, _ := c.Distribution.Storage["filesystem"]["rootdirectory"].(string)
	return v
}

// CacheType is the blob-descriptor cache berth runs: inmemory, redis or none.
// A migrated config's storage.cache.blobdescriptor is honoured when berth's
// own key is not set.
func (c *Config) CacheType() string {
	if c.Berth.Cache != "" {
		return c.Berth.Cache
	}
	if cc, ok := c.Distribution.Storage["cache"]; ok {
		v, ok := cc["blobdescriptor"]
		if !ok {
			v = cc["layerinfo"]
		}
		if s, ok := v.(string); ok && s != "" {
			return s
		}
	}
	if len(c.Distribution.Redis.Options.Addrs) > 0 {
		return "redis"
	}
	return "inmemory"
}

// AuthEnabled reports whether clients must authenticate.
func (c *Config) AuthEnabled() bool {
	t := c.Distribution.Auth.Type()
	return t != "" && !strings.EqualFold(t, "none")
}

// HtpasswdPath is the htpasswd file when htpasswd auth is configured.
func (c *Config) HtpasswdPath() string {
	if c.Distribution.Auth.Type() != "htpasswd" {
		return ""
	}
	p, _ := c.Distribution.Auth.Parameters()["path"].(string)
	return p
}
