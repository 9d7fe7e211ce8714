package depcache

import (
	"fmt"
	"os"
	"strings"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/backends/redisbackend"
)

// The environment variables depcache reads.
const (
	EnvEnabled    = "DEP_CACHE_ENABLED"
	EnvPrefix     = "DEP_CACHE_PREFIX"
	EnvSerializer = "DEP_CACHE_SERIALIZER"
	EnvBackend    = "DEP_CACHE_BACKEND"
)

func init() {
	backends.Register("memory", func() (backends.Backend, error) { return memory.New(), nil })
	backends.Register("redis", func() (backends.Backend, error) { return redisbackend.FromEnv() })
}

// envOptions reads DEP_CACHE_ENABLED, DEP_CACHE_PREFIX and
// DEP_CACHE_SERIALIZER into options that explicit options override. A value
// that cannot be parsed is an error naming the variable.
func envOptions() ([]Option, error) {
	var opts []Option
	if v, ok := os.LookupEnv(EnvEnabled); ok && v != "" {
		on, err := parseBool(v)
		if err != nil {
			return nil, fmt.Errorf("depcache: %s=%q: %w", EnvEnabled, v, err)
		}
		opts = append(opts, WithEnabled(on))
	}
	if v := os.Getenv(EnvPrefix); v != "" {
		opts = append(opts, func(c *config) { c.envPrefix = v })
	}
	if v := os.Getenv(EnvSerializer); v != "" {
		cd, ok := LookupCodec(v)
		if !ok {
			return nil, fmt.Errorf("depcache: %s=%q: unknown codec (registered: %s)",
				EnvSerializer, v, strings.Join(codecNames(), ", "))
		}
		opts = append(opts, WithCodec(cd))
	}
	return opts, nil
}

func parseBool(s string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "1", "t", "true", "yes", "y", "on":
		return true, nil
	case "0", "f", "false", "no", "n", "off":
		return false, nil
	}
	return false, fmt.Errorf("not a boolean (want true or false)")
}

// envBackendName returns DEP_CACHE_BACKEND, "redis" when unset, checked
// against the registered backends.
func envBackendName() (string, error) {
	name := os.Getenv(EnvBackend)
	if name == "" {
		name = "redis"
	}
	if _, ok := backends.Opener(name); !ok {
		return "", fmt.Errorf("depcache: %s=%q: unknown backend (registered: %s)",
			EnvBackend, name, strings.Join(backends.Names(), ", "))
	}
	return name, nil
}

// backendConfigKey identifies a distinct backend configuration, so that
// managers configured alike share one client.
func backendConfigKey(name string) string {
	var b strings.Builder
	b.WriteString(name)
	for _, v := range []string{"REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD", "REDIS_DB",
		"REDIS_TLS_CA_FILE", "REDIS_TLS_CERT_FILE", "REDIS_TLS_KEY_FILE"} {
		b.WriteByte(0)
		b.WriteString(os.Getenv(v))
	}
	return b.String()
}
