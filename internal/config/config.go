// Package config is berth's one configuration model: the Distribution
// configuration, passed through unchanged so that a registry:2/registry:3
// config.yml keeps working, plus berth's own section under the top-level key
// `berth:`. Sources, lowest precedence first: built-in defaults, the file,
// REGISTRY_* environment variables (as upstream), command-line flags.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	yaml "go.yaml.in/yaml/v3"
)

// DefaultDataDir is where `berth serve` stores images when nothing says otherwise.
const DefaultDataDir = "./berth-data"

// Config is the effective configuration.
type Config struct {
	// Distribution is upstream's configuration. Berth takes the parts it
	// manages itself (Redis, the blob-descriptor cache) out of the copy it
	// hands to Distribution; see server.
	Distribution *configuration.Configuration
	Berth        Berth
	// Source is the file the configuration came from ("" for defaults only).
	Source string
	// lines maps dotted key paths of the file to their line numbers, so
	// validation errors can point at the line.
	lines map[string]int
}

// Berth is berth's own section.
type Berth struct {
	Debug          Debug         `yaml:"debug"`
	Log            Log           `yaml:"log"`
	InsecurePublic bool          `yaml:"insecurepublic"`
	ShutdownGrace  time.Duration `yaml:"shutdowngrace"`
	// Cache selects the blob-descriptor cache: inmemory, redis or none.
	Cache       string      `yaml:"cache"`
	Maintenance Maintenance `yaml:"maintenance"`
	GC          GC          `yaml:"gc"`
	Prune       Prune       `yaml:"prune"`
}

// Debug is the private listener for metrics, health and status.
type Debug struct {
	Addr string `yaml:"addr"`
}

// Log configures berth's structured logs.
type Log struct {
	Format string `yaml:"format"`
}

// Maintenance configures the read-only lease gc takes.
type Maintenance struct {
	LeaseTTL time.Duration `yaml:"leasettl"`
	Poll     time.Duration `yaml:"poll"`
}

// GC configures garbage collection, both `berth gc` and the schedule in serve.
type GC struct {
	Interval       time.Duration `yaml:"interval"`
	DeleteUntagged bool          `yaml:"deleteuntagged"`
	UploadMaxAge   time.Duration `yaml:"uploadmaxage"`
	BlobGrace      time.Duration `yaml:"blobgrace"`
}

// Prune configures the retention schedule in serve.
type Prune struct {
	Interval time.Duration `yaml:"interval"`
	Policy   string        `yaml:"policy"`
}

// Error is a configuration error: it names the file, the line when known,
// and the key. Commands exit 2 on it.
type Error struct {
	File string
	Line int
	Key  string
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// ExitCode makes configuration errors exit with status 2.
func (e *Error) ExitCode() int { return 2 }

const defaultYAML = `version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: ` + DefaultDataDir + `
  delete:
    enabled: true
http:
  addr: 127.0.0.1:5000
`

func defaultBerth() Berth {
	return Berth{
		Debug:         Debug{Addr: "127.0.0.1:5001"},
		Log:           Log{Format: "text"},
		ShutdownGrace: 30 * time.Second,
		Maintenance:   Maintenance{LeaseTTL: 30 * time.Second, Poll: time.Second},
		GC: GC{
			Interval:     24 * time.Hour,
			UploadMaxAge: 7 * 24 * time.Hour,
			BlobGrace:    time.Hour,
		},
	}
}

// Load reads the configuration file at path ("" for the built-in defaults),
// applies REGISTRY_* overrides from the process environment (Distribution
// reads them itself) and berth's BERTH_* secrets from env, and validates the
// result. It never touches storage or the network.
func Load(path string, env []string) (*Config, error) {
	raw := []byte(defaultYAML)
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, &Error{File: path, Msg: fmt.Sprintf("cannot read: %v", unwrapPathErr(err))}
		}
		raw = b
	}
	c := &Config{Source: path, Berth: defaultBerth(), lines: map[string]int{}}

	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, c.yamlErr(err)
	}
	if len(doc.Content) == 0 {
		return nil, &Error{File: path, Msg: "empty configuration (need at least `version: 0.1` and a `storage:` section)"}
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, &Error{File: path, Line: root.Line, Msg: "the configuration must be a YAML mapping"}
	}
	indexLines(root, "", c.lines)
	// Decoding the whole document with KnownFields keeps the file's own line
	// numbers in errors; the inline map swallows Distribution's keys.
	top := struct {
		Berth *Berth         `yaml:"berth"`
		Rest  map[string]any `yaml:",inline"`
	}{Berth: &c.Berth}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&top); err != nil {
		return nil, c.yamlErr(err)
	}

	dist, err := configuration.Parse(bytes.NewReader(raw))
	if err != nil {
		return nil, &Error{File: path, Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	c.Distribution = dist
	applyStorageDefaults(dist, path == "")
	if dist.HTTP.Addr == "" {
		// Upstream would listen on every interface; berth starts private.
		dist.HTTP.Addr = "127.0.0.1:5000"
	}
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "BERTH_REDIS_PASSWORD="); ok && v != "" {
			c.Distribution.Redis.Options.Password = v
		}
	}
	// A registry:2 config may name the debug listener under http.debug;
	// honour it when berth's own key is not set.
	if c.lines["berth.debug.addr"] == 0 && dist.HTTP.Debug.Addr != "" {
		c.Berth.Debug.Addr = dist.HTTP.Debug.Addr
	}
	return c, nil
}

// applyStorageDefaults fills in what berth decides differently from
// upstream, after REGISTRY_* variables have been applied (so that
// REGISTRY_STORAGE=s3 without a file keeps them too).
//
// Blob redirects are off unless storage.redirect says otherwise: upstream
// sends clients to presigned storage URLs by default, which breaks pulls
// whenever the store is not reachable from every client (an in-cluster
// MinIO, a private endpoint), and hides blob traffic from berth's metrics.
// Without a configuration file, deletes are on: gc and prune need them.
func applyStorageDefaults(d *configuration.Configuration, noFile bool) {
	if d.Storage == nil {
		return
	}
	if _, ok := d.Storage["redirect"]; !ok {
		d.Storage["redirect"] = configuration.Parameters{"disable": true}
	}
	if noFile {
		if _, ok := d.Storage["delete"]; !ok {
			d.Storage["delete"] = configuration.Parameters{"enabled": true}
		}
	}
}

func (c *Config) yamlErr(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		var n int
		if _, e := fmt.Sscanf(rest, "%d", &n); e == nil {
			line = n
			if i := strings.Index(rest, ": "); i >= 0 {
				msg = rest[i+2:]
			}
		}
	}
	if f, ok := strings.CutPrefix(msg, "field "); ok {
		if name, _, found := strings.Cut(f, " not found in type"); found {
			msg = fmt.Sprintf("unknown key %q", name)
		}
	}
	key := ""
	for k, l := range c.lines {
		if l == line && len(k) > len(key) {
			key = k
		}
	}
	return &Error{File: c.Source, Line: line, Key: key, Msg: msg}
}

func indexLines(n *yaml.Node, prefix string, out map[string]int) {
	if n.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := strings.ToLower(n.Content[i].Value)
		if prefix != "" {
			k = prefix + "." + k
		}
		out[k] = n.Content[i].Line
		indexLines(n.Content[i+1], k, out)
	}
}

// errAt builds an Error for key, with the line of key (or of its nearest
// ancestor present in the file).
func (c *Config) errAt(key, format string, args ...any) *Error {
	line := 0
	for k := key; k != ""; {
		if l, ok := c.lines[k]; ok {
			line = l
			break
		}
		i := strings.LastIndex(k, ".")
		if i < 0 {
			break
		}
		k = k[:i]
	}
	return &Error{File: c.Source, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)}
}

func unwrapPathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// IsLoopback reports whether addr (host:port) only accepts connections from
// this machine. An empty host means every interface.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
