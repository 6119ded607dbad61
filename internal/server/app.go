package server

import (
	"context"
	"fmt"
	"reflect"
	"sync"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	registrymiddleware "github.com/distribution/distribution/v3/registry/middleware/registry"
	"github.com/distribution/distribution/v3/registry/storage"
	"github.com/distribution/distribution/v3/registry/storage/cache"

	// htpasswd and token access controllers register themselves by name.
	_ "github.com/distribution/distribution/v3/registry/auth/htpasswd"
	_ "github.com/distribution/distribution/v3/registry/auth/token"
)

// Distribution has no parameter for a caller-built blob-descriptor cache, only
// a process-wide list of registry options that NewApp applies. Berth registers
// one option, once, that installs whichever provider the app being built
// right now should use; appMu makes "right now" unambiguous when one process
// builds several apps (tests do).
var (
	appMu       sync.Mutex
	appProvider cache.BlobDescriptorCacheProvider
	optionOnce  sync.Once
)

func registerCacheOption() {
	t := reflect.TypeFor[storage.RegistryOption]()
	fn := reflect.MakeFunc(t, func(args []reflect.Value) []reflect.Value {
		if appProvider == nil {
			return []reflect.Value{reflect.Zero(t.Out(0))}
		}
		return reflect.ValueOf(storage.BlobDescriptorCacheProvider(appProvider)).Call(args)
	})
	_ = registrymiddleware.RegisterOptions(fn.Interface().(storage.RegistryOption))
}

// newApp builds Distribution's handler with berth's cache. NewApp panics on
// configuration it dislikes; config.Validate catches what we know of, and the
// recover turns anything else into an error instead of a crash.
func newApp(ctx context.Context, dc *configuration.Configuration, provider cache.BlobDescriptorCacheProvider) (app *handlers.App, err error) {
	optionOnce.Do(registerCacheOption)
	appMu.Lock()
	defer appMu.Unlock()
	appProvider = provider
	defer func() { appProvider = nil }()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("distribution rejected the configuration: %v", r)
		}
	}()
	return handlers.NewApp(ctx, dc), nil
}

// distributionConfig is the copy of the configuration Distribution sees:
// berth runs the cache and the Redis client itself, so Distribution must not
// build its own (it would be one berth cannot flush).
func distributionConfig(c *configuration.Configuration, secret string) *configuration.Configuration {
	dc := *c
	dc.Storage = configuration.Storage{}
	for k, v := range c.Storage {
		if k == "cache" {
			continue
		}
		dc.Storage[k] = v
	}
	dc.Redis = configuration.Redis{}
	dc.HTTP.Secret = secret
	// Berth serves its own health and debug endpoints.
	dc.HTTP.Debug = configuration.Debug{}
	dc.Health = configuration.Health{}
	return &dc
}
