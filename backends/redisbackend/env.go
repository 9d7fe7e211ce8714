package redisbackend

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// FromEnv opens a Backend on the Redis the environment names: REDIS_URL
// (redis://, rediss:// or unix://) when set, else REDIS_HOST (default
// 127.0.0.1), REDIS_PORT (default 6379), REDIS_PASSWORD and REDIS_DB
// (default 0). A value that cannot be parsed is an error naming the
// variable. Nothing is dialled until the Backend is first used. The Backend
// owns its client: Close closes it.
func FromEnv() (*Backend, error) {
	opt, err := envOptions(os.LookupEnv)
	if err != nil {
		return nil, err
	}
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
