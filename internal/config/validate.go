package config

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	s3aws "github.com/distribution/distribution/v3/registry/storage/driver/s3-aws"

	"github.com/berth-registry/berth/internal/maintenance"
)

// Drivers berth compiles in; NewApp panics on any other.
var supportedDrivers = map[string]bool{"filesystem": true, "s3": true, "inmemory": true}

// Validate checks everything that would otherwise make Distribution panic at
// start-up or make berth unsafe, and names the key (and line) at fault.
// It reads the files the configuration names (htpasswd, TLS) but writes nothing.
func (c *Config) Validate() error {
	d := c.Distribution
	st := d.Storage
	typ, err := storageType(st)
	if err != nil {
		return c.errAt("storage", "%s", err)
	}
	switch {
	case typ == "":
		return c.errAt("storage", "no storage driver configured")
	case !supportedDrivers[typ]:
		return c.errAt("storage."+typ, "unsupported storage driver %q (berth supports filesystem, s3, inmemory)", typ)
	}
	if typ == "filesystem" && c.RootDirectory() == "" {
		return c.errAt("storage.filesystem.rootdirectory", "must be set")
	}
	if del, ok := st["delete"]; ok {
		if v, ok := del["enabled"]; ok {
			if _, isBool := v.(bool); !isBool {
				return c.errAt("storage.delete.enabled", "must be true or false, got %v", v)
			}
		}
	}
	if rd, ok := st["redirect"]; ok {
		// Distribution panics on anything but a boolean here.
		if _, isBool := rd["disable"].(bool); !isBool {
			return c.errAt("storage.redirect.disable", "must be true or false, got %v", rd["disable"])
		}
	}
	if typ == "s3" {
		if err := c.validateS3(st["s3"]); err != nil {
			return err
		}
	}
	if m, ok := st["maintenance"]; ok {
		for _, k := range []string{"uploadpurging", "readonly"} {
			v, present := m[k]
			if !present {
				continue
			}
			mm, isMap := v.(map[any]any)
			if !isMap {
				return c.errAt("storage.maintenance."+k, "must be a mapping")
			}
			for _, dk := range []string{"age", "interval"} {
				if s, ok := mm[dk]; ok {
					if _, err := time.ParseDuration(fmt.Sprint(s)); err != nil {
						return c.errAt("storage.maintenance."+k+"."+dk, "not a duration: %v", s)
					}
				}
			}
			if e, ok := mm["enabled"]; ok {
				if _, isBool := e.(bool); !isBool {
					return c.errAt("storage.maintenance."+k+".enabled", "must be true or false")
				}
			}
		}
	}
	if tp := st.TagParameters(); tp != nil {
		if v, ok := tp["concurrencylimit"]; ok {
			if n, isInt := v.(int); !isInt || n < 0 {
				return c.errAt("storage.tag.concurrencylimit", "must be a non-negative integer")
			}
		}
	}
	for _, list := range []struct {
		key string
		res []string
	}{{"validation.manifests.urls.allow", d.Validation.Manifests.URLs.Allow}, {"validation.manifests.urls.deny", d.Validation.Manifests.URLs.Deny}} {
		for _, re := range list.res {
			if _, err := regexp.Compile(re); err != nil {
				return c.errAt(list.key, "invalid regular expression %q: %v", re, err)
			}
		}
	}

	if d.HTTP.Net != "" && d.HTTP.Net != "tcp" {
		return c.errAt("http.net", "berth listens on tcp only")
	}
	if _, _, err := net.SplitHostPort(d.HTTP.Addr); err != nil {
		return c.errAt("http.addr", "want host:port, got %q", d.HTTP.Addr)
	}
	if _, _, err := net.SplitHostPort(c.Berth.Debug.Addr); err != nil {
		return c.errAt("berth.debug.addr", "want host:port, got %q", c.Berth.Debug.Addr)
	}
	if c.Berth.Debug.Addr == d.HTTP.Addr && !strings.HasSuffix(d.HTTP.Addr, ":0") {
		return c.errAt("berth.debug.addr", "must differ from http.addr: metrics and health never share the registry port")
	}
	if err := c.validateAuth(); err != nil {
		return err
	}
	if !c.AuthEnabled() && !IsLoopback(d.HTTP.Addr) && !c.Berth.InsecurePublic {
		return c.errAt("http.addr", "%q accepts connections from other machines but no authentication is configured; "+
			"set up htpasswd auth (--htpasswd FILE) or allow it explicitly with --insecure-public (berth.insecurepublic: true)", d.HTTP.Addr)
	}
	if (d.HTTP.TLS.Certificate == "") != (d.HTTP.TLS.Key == "") {
		return c.errAt("http.tls", "certificate and key must be given together (--tls-cert and --tls-key)")
	}
	if d.HTTP.TLS.Certificate != "" {
		if _, err := tls.LoadX509KeyPair(d.HTTP.TLS.Certificate, d.HTTP.TLS.Key); err != nil {
			return c.errAt("http.tls.certificate", "cannot load the certificate and key: %v", unwrapPathErr(err))
		}
	}
	if len(d.HTTP.TLS.LetsEncrypt.Hosts) > 0 || d.HTTP.TLS.LetsEncrypt.CacheFile != "" {
		return c.errAt("http.tls.letsencrypt", "not supported by berth; use certificate files (cert-manager) instead")
	}

	switch c.Berth.Log.Format {
	case "text", "json":
	default:
		return c.errAt("berth.log.format", "must be text or json, got %q", c.Berth.Log.Format)
	}
	switch c.CacheType() {
	case "inmemory", "none":
	case "redis":
		if len(d.Redis.Options.Addrs) == 0 {
			return c.errAt("berth.cache", "the redis cache needs redis.addrs (or --redis ADDR)")
		}
	default:
		return c.errAt("berth.cache", "must be inmemory, redis or none, got %q", c.CacheType())
	}
	if c.Berth.ShutdownGrace < 0 {
		return c.errAt("berth.shutdowngrace", "must not be negative")
	}
	m := c.Berth.Maintenance
	if m.LeaseTTL < 2*time.Second || m.LeaseTTL > 10*time.Minute {
		return c.errAt("berth.maintenance.leasettl", "must be between 2s and 10m, got %s", m.LeaseTTL)
	}
	if err := maintenance.ValidateTiming(m.LeaseTTL, m.Poll); err != nil {
		return c.errAt("berth.maintenance.poll", "%v", err)
	}
	g := c.Berth.GC
	for k, v := range map[string]time.Duration{"interval": g.Interval, "uploadmaxage": g.UploadMaxAge, "blobgrace": g.BlobGrace} {
		if v < 0 {
			return c.errAt("berth.gc."+k, "must not be negative")
		}
	}
	if c.Berth.Prune.Interval < 0 {
		return c.errAt("berth.prune.interval", "must not be negative")
	}
	if c.Berth.Prune.Interval > 0 && c.Berth.Prune.Policy == "" {
		return c.errAt("berth.prune.policy", "a prune interval needs a policy file")
	}
	if p := c.Berth.Prune.Policy; p != "" {
		if _, err := os.Stat(p); err != nil {
			return c.errAt("berth.prune.policy", "cannot read %s: %v", p, unwrapPathErr(err))
		}
	}
	return nil
}

// validateS3 refuses the AWS SDK's request logging: it writes every signed
// request, with the access key id and any session token in its headers, to
// stdout, past berth's logger and its redaction. Distribution's own debug
// logs (log.level: debug) are the supported way to see storage calls.
func (c *Config) validateS3(p configuration.Parameters) error {
	switch v := p["loglevel"].(type) {
	case nil:
	case bool:
		if v {
			return c.errAt("storage.s3.loglevel", "must be off")
		}
	case string:
		if !strings.EqualFold(v, "off") && v != "" {
			return c.errAt("storage.s3.loglevel", "%q is not supported: the AWS SDK would print signed requests "+
				"(access key id, session token) to stdout, outside berth's logs; use log.level: debug instead", v)
		}
	default:
		return c.errAt("storage.s3.loglevel", "must be off")
	}
	// The driver's own parameter parsing, which makes no request: a missing
	// bucket or a malformed chunk size is a configuration error with a line,
	// not a failed start after the listener is half set up.
	params := make(map[string]any, len(p))
	for k, v := range p {
		params[k] = v
	}
	if _, err := s3aws.FromParameters(context.Background(), params); err != nil {
		return c.errAt(s3ParamKey(err.Error()), "%s", err)
	}
	return nil
}

// s3ParamKey names the storage.s3 key an s3 driver error is about, so the
// error points at its line when the file has it.
func s3ParamKey(msg string) string {
	best := ""
	for _, w := range strings.FieldsFunc(msg, func(r rune) bool { return r == ' ' || r == ':' || r == '"' }) {
		w = strings.ToLower(w)
		switch w {
		case "region", "bucket", "regionendpoint", "chunksize", "multipartcopychunksize", "multipartcopymaxconcurrency",
			"multipartcopythresholdsize", "rootdirectory", "storageclass", "objectacl", "encrypt", "keyid", "secure",
			"skipverify", "v4auth", "redirectendpoint", "forcepathstyle", "accelerate", "usedualstack", "usefips":
			if best == "" {
				best = w
			}
		}
	}
	if best == "" {
		return "storage.s3"
	}
	return "storage.s3." + best
}

// storageType is Storage.Type without its panic on several drivers.
func storageType(st configuration.Storage) (typ string, err error) {
	var found []string
	for k := range st {
		switch k {
		case "maintenance", "cache", "delete", "redirect", "tag":
		default:
			found = append(found, k)
		}
	}
	if len(found) > 1 {
		return "", fmt.Errorf("several storage drivers configured: %s", strings.Join(found, ", "))
	}
	if len(found) == 1 {
		return found[0], nil
	}
	return "", nil
}

func (c *Config) validateAuth() error {
	a := c.Distribution.Auth
	if len(a) > 1 {
		return c.errAt("auth", "configure one authentication method")
	}
	switch t := a.Type(); t {
	case "", "none":
		return nil
	case "htpasswd":
	case "token":
		return nil
	default:
		return c.errAt("auth."+t, "unsupported auth method %q (berth supports htpasswd, token, none)", t)
	}
	p := a.Parameters()
	if r, _ := p["realm"].(string); r == "" {
		p["realm"] = "berth"
	}
	path, _ := p["path"].(string)
	if path == "" {
		return c.errAt("auth.htpasswd.path", "must be set")
	}
	// Upstream creates a missing file with a generated default user; berth
	// refuses instead, so a typo never opens a registry with unknown credentials.
	b, err := os.ReadFile(path)
	if err != nil {
		return c.errAt("auth.htpasswd.path", "cannot read %s: %v (create it with `berth htpasswd USER`)", path, unwrapPathErr(err))
	}
	return checkHtpasswd(b, func(line int, format string, args ...any) error {
		return &Error{File: path, Line: line, Msg: fmt.Sprintf(format, args...)}
	})
}

// checkHtpasswd accepts bcrypt entries only: upstream silently fails logins
// for other hash types, which looks like a wrong password.
func checkHtpasswd(b []byte, errf func(line int, format string, args ...any) error) error {
	sc := bufio.NewScanner(bytes.NewReader(b))
	n, users := 0, 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		if !ok || user == "" {
			return errf(n, "not a user:hash line")
		}
		if !(strings.HasPrefix(hash, "$2a$") || strings.HasPrefix(hash, "$2b$") || strings.HasPrefix(hash, "$2y$")) {
			return errf(n, "user %q: only bcrypt hashes are accepted (make one with `berth htpasswd %s`)", user, user)
		}
		users++
	}
	if users == 0 {
		return errf(0, "no users")
	}
	return nil
}
