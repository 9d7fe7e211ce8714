package redisbackend

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// FromEnv opens a Backend on the Redis the environment names: REDIS_URL
// (redis://, rediss:// or unix://) when set, else REDIS_HOST (default
// 127.0.0.1), REDIS_PORT (default 6379), REDIS_PASSWORD and REDIS_DB
// (default 0). A value that cannot be parsed is an error naming the
// variable. Nothing is dialled until the Backend is first used. The Backend
// owns its client: Close closes it.
//
// The client honours context deadlines (ContextTimeoutEnabled), so each
// cache operation ends within the manager's timeout even on a server that
// accepts connections and never answers. Calls with no deadline are bounded
// by the dial, read and write timeouts (envTimeouts), unless REDIS_URL sets
// its own (dial_timeout, read_timeout, write_timeout).
func FromEnv() (*Backend, error) {
	opt, err := envOptions(os.LookupEnv)
	if err != nil {
		return nil, err
	}
	withEnvTimeouts(opt)
	b := New(redis.NewClient(opt))
	b.owned = true
	return b, nil
}

// envOptions reads the client options from the environment through lookup.
func envOptions(lookup func(string) (string, bool)) (*redis.Options, error) {
	if u, ok := lookup("REDIS_URL"); ok && u != "" {
		opt, err := redis.ParseURL(u)
		if err != nil {
			// url.Error quotes the whole URL, password included: keep only
			// its reason.
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err
			}
			return nil, fmt.Errorf("redisbackend: REDIS_URL: %w", err)
		}
		return opt, nil
	}
	host := "127.0.0.1"
	if h, ok := lookup("REDIS_HOST"); ok && h != "" {
		host = h
	}
	port := "6379"
	if p, ok := lookup("REDIS_PORT"); ok && p != "" {
		n, err := strconv.ParseUint(p, 10, 16)
		if err == nil && n == 0 {
			err = errors.New("port 0")
		}
		if err != nil {
			return nil, fmt.Errorf("redisbackend: REDIS_PORT=%q: %w", p, err)
		}
		port = p
	}
	db := 0
	if d, ok := lookup("REDIS_DB"); ok && d != "" {
		n, err := strconv.Atoi(d)
		if err == nil && n < 0 {
			err = errors.New("negative database")
		}
		if err != nil {
			return nil, fmt.Errorf("redisbackend: REDIS_DB=%q: %w", d, err)
		}
		db = n
	}
	password, _ := lookup("REDIS_PASSWORD")
	return &redis.Options{
		Addr:     net.JoinHostPort(host, port),
		Password: password,
		DB:       db,
	}, nil
}

// The timeouts of the client FromEnv builds, for what the context does not
// bound: a call whose context has no deadline (Clear, Delete, a caller's
// own). Shorter than go-redis's defaults (5 s dial) so that a host that
// does not answer is given up on in about a second.
const (
	envDialTimeout  = time.Second
	envReadTimeout  = 3 * time.Second
	envWriteTimeout = 3 * time.Second
)

// withEnvTimeouts makes opt honour context deadlines and fills the
// timeouts the URL left unset.
func withEnvTimeouts(opt *redis.Options) {
	opt.ContextTimeoutEnabled = true
	if opt.DialTimeout == 0 {
		opt.DialTimeout = envDialTimeout
	}
	if opt.ReadTimeout == 0 {
		opt.ReadTimeout = envReadTimeout
	}
	if opt.WriteTimeout == 0 {
		opt.WriteTimeout = envWriteTimeout
	}
}
