package config

import (
	"context"
	"fmt"
	"regexp"
	"time"

	"github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/factory"
	"github.com/redis/go-redis/v9"
	yamlv2 "go.yaml.in/yaml/v2"
	yaml "go.yaml.in/yaml/v3"

	// The drivers berth supports; NewApp panics on a driver that is not linked in.
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/s3-aws"
)

const redacted = "<redacted>"

// Keys whose values are secrets wherever they appear.
var secretKey = regexp.MustCompile(`(?i)(secret|password|passwd|accesskey|secretkey|accountkey|credentials|privatekey|token|sessiontoken|authorization)$`)

// Redacted renders the effective configuration as YAML with every secret
// replaced, for `berth config print` and logs.
func (c *Config) Redacted() ([]byte, error) {
	// Distribution's types marshal with yaml v2 (Storage has a custom marshaller).
	b, err := yamlv2.Marshal(c.Distribution)
	if err != nil {
		return nil, fmt.Errorf("render configuration: %w", err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("render configuration: %w", err)
	}
	redactTree(doc)
	bb, err := yaml.Marshal(c.Berth)
	if err != nil {
		return nil, fmt.Errorf("render configuration: %w", err)
	}
	var berth map[string]any
	if err := yaml.Unmarshal(bb, &berth); err != nil {
		return nil, fmt.Errorf("render configuration: %w", err)
	}
	doc["berth"] = berth
	return yaml.Marshal(doc)
}

func redactTree(v any) {
	switch t := v.(type) {
	case map[string]any:
		for k, val := range t {
			if s, isStr := val.(string); isStr && s != "" && secretKey.MatchString(k) {
				t[k] = redacted
				continue
			}
			if k == "headers" { // notification endpoint headers carry Authorization
				t[k] = redacted
				continue
			}
			redactTree(val)
		}
	case []any:
		for _, e := range t {
			redactTree(e)
		}
	}
}

// StorageDriver opens the configured storage driver (without Distribution's
// storage middleware).
func (c *Config) StorageDriver(ctx context.Context) (driver.StorageDriver, error) {
	params := map[string]any{}
	for k, v := range c.Distribution.Storage.Parameters() {
		params[k] = v
	}
	d, err := factory.Create(ctx, c.Distribution.Storage.Type(), params)
	if err != nil {
		return nil, fmt.Errorf("open %s storage: %w", c.Distribution.Storage.Type(), err)
	}
	return d, nil
}

// RedisClient builds a client for the configured Redis, or returns nil when
// none is configured. Timeouts are short: Redis is a cache and a coordination
// point, and a dead Redis must not stall requests for long.
func (c *Config) RedisClient() redis.UniversalClient {
	o := c.Distribution.Redis.Options
	if len(o.Addrs) == 0 {
		return nil
	}
	dial, rd, wr := o.DialTimeout, o.ReadTimeout, o.WriteTimeout
	if dial == 0 {
		dial = time.Second
	}
	if rd == 0 {
		rd = time.Second
	}
	if wr == 0 {
		wr = time.Second
	}
	return redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:           o.Addrs,
		ClientName:      "berth",
		DB:              o.DB,
		Username:        o.Username,
		Password:        o.Password,
		MasterName:      o.MasterName,
		DialTimeout:     dial,
		ReadTimeout:     rd,
		WriteTimeout:    wr,
		MaxRetries:      -1, // a failing cache call falls back to storage; retrying only adds latency
		PoolSize:        o.PoolSize,
		MinIdleConns:    o.MinIdleConns,
		DisableIdentity: true,
	})
}
