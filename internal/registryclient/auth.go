package registryclient

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// Environment variables the seed's cleaner read credentials from.
const (
	EnvUser     = "REGISTRY_USER"
	EnvPassword = "REGISTRY_PASSWORD"
)

// AuthInput is everything credentials can come from, in precedence order:
// explicit username/password (flags), the environment, then the Docker
// config (~/.docker/config.json, $DOCKER_CONFIG, credential helpers).
type AuthInput struct {
	Username, Password string
	Getenv             func(string) string
	Keychain           authn.Keychain
}

// ResolveAuth picks credentials for registryURL and says where they came
// from (for logs; never the secret itself).
func ResolveAuth(ctx context.Context, registryURL string, in AuthInput) (authn.Authenticator, string, error) {
	if in.Username != "" || in.Password != "" {
		if in.Username == "" || in.Password == "" {
			return nil, "", errors.New("username and password must be given together")
		}
		return &authn.Basic{Username: in.Username, Password: in.Password}, "flags", nil
	}
	if in.Getenv != nil {
		u, p := in.Getenv(EnvUser), in.Getenv(EnvPassword)
		if u != "" || p != "" {
			if u == "" || p == "" {
				return nil, "", fmt.Errorf("set both %s and %s, or neither", EnvUser, EnvPassword)
			}
			return &authn.Basic{Username: u, Password: p}, "environment", nil
		}
	}
	if in.Keychain != nil {
		base, err := ParseURL(registryURL)
		if err != nil {
			return nil, "", err
		}
		reg, err := name.NewRegistry(base.Host)
		if err != nil {
			return nil, "", fmt.Errorf("registry host %q: %w", base.Host, err)
		}
		a, err := authn.Resolve(ctx, in.Keychain, reg)
		if err != nil {
			return nil, "", fmt.Errorf("read docker config credentials for %s: %w", base.Host, err)
		}
		if a != authn.Anonymous {
			return a, "docker config", nil
		}
	}
	return authn.Anonymous, "anonymous", nil
}
