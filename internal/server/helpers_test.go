package server_test

import "github.com/berth-registry/berth/internal/config"

func configOverridesTLS(cert, key string) config.Overrides {
	return config.Overrides{TLSCert: cert, TLSKey: key}
}
