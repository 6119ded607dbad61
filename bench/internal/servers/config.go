// Package servers starts the registries under test as separate processes on
// loopback (berth, upstream Distribution, Debian's docker-registry) and a
// redis-server, and measures their peak memory.
package servers

import (
	"fmt"
	"strings"
)

// Kind is the family of a registry binary; it decides how it is configured.
type Kind int

const (
	// Berth is `berth serve`, configured with flags.
	Berth Kind = iota
	// Distribution is upstream `registry serve config.yml` (v3).
	Distribution
	// Debian is Debian's docker-registry 2.8 (`docker-registry serve config.yml`).
	Debian
)

// Spec describes one server variant.
type Spec struct {
	// Name is how the variant is shown in results, e.g. "berth+redis".
	Name   string
	Kind   Kind
	Binary string
	// Redis gives the variant its own redis-server for the blob-descriptor
	// cache (and, for berth, maintenance coordination).
	Redis bool
	// S3 stores on this bucket instead of the filesystem.
	S3 *Bucket
}

// sharedSecret is the upload-state HMAC key. Fixed so that upstream does
// not log a warning and generate one; the servers only listen on loopback.
const sharedSecret = "berth-bench-loopback-only"

// RegistryConfig is the config.yml for upstream or Debian's registry with
// filesystem storage at root, deletes enabled and the blob-descriptor cache
// in memory, or in Redis when redisAddr is set. Everything else is left at
// the registry's defaults, so the comparison is with the registry as users
// run it.
func RegistryConfig(kind Kind, addr, root, redisAddr string) ([]byte, error) {
	return registryConfig(kind, addr, root, nil, redisAddr)
}

// registryConfig is RegistryConfig on bucket when it is not nil.
func registryConfig(kind Kind, addr, root string, bucket *Bucket, redisAddr string) ([]byte, error) {
	if kind != Distribution && kind != Debian {
		return nil, fmt.Errorf("registry config: kind %d is not an upstream registry", kind)
	}
	if strings.ContainsAny(root, "\n\"") || strings.ContainsAny(addr, "\n\"") {
		return nil, fmt.Errorf("registry config: unsupported characters in %q or %q", root, addr)
	}
	cache := "inmemory"
	if redisAddr != "" {
		cache = "redis"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "version: 0.1\n")
	if bucket != nil {
		fmt.Fprintf(&b, "storage:\n%s", bucket.storageLines())
	} else {
		fmt.Fprintf(&b, "storage:\n  filesystem:\n    rootdirectory: %q\n", root)
	}
	fmt.Fprintf(&b, "  delete:\n    enabled: true\n")
	fmt.Fprintf(&b, "  cache:\n    blobdescriptor: %s\n", cache)
	fmt.Fprintf(&b, "http:\n  addr: %q\n  secret: %s\n", addr, sharedSecret)
	fmt.Fprintf(&b, "  headers:\n    X-Content-Type-Options: [nosniff]\n")
	if redisAddr != "" {
		if kind == Distribution {
			// v3 moved to go-redis' universal options.
			fmt.Fprintf(&b, "redis:\n  addrs: [%q]\n", redisAddr)
		} else {
			fmt.Fprintf(&b, "redis:\n  addr: %q\n", redisAddr)
		}
	}
	return []byte(b.String()), nil
}

// BerthArgs are the `berth serve` arguments for a variant; berth enables
// deletes itself when no config file is given. An empty root leaves the
// storage to a config file.
func BerthArgs(addr, debugAddr, root, redisAddr string) []string {
	args := []string{"serve", "--addr", addr, "--debug-addr", debugAddr}
	if root != "" {
		args = append(args, "--data-dir", root)
	}
	if redisAddr != "" {
		args = append(args, "--redis", redisAddr)
	}
	return args
}
