package redisbackend

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// FromEnv opens a Backend on the Redis the environment names: REDIS_URL
// (redis://, rediss:// or unix://) when set, else REDIS_HOST (default
// 127.0.0.1), REDIS_PORT (default 6379), REDIS_PASSWORD and REDIS_DB
// (default 0). A value that cannot be parsed is an error naming the
// variable, and never quoting a password. Nothing is dialled until the
// Backend is first used. The Backend owns its client: Close closes it.
//
// Credentials: redis://:password@host (AUTH with requirepass) or
// redis://user:password@host (an ACL user), percent-encoding the
// characters : / ? # @ % in them; or REDIS_PASSWORD with REDIS_HOST.
//
// TLS: a rediss:// URL verifies the server's certificate against the
// system's roots and the URL's host name (go-redis ParseURL).
// REDIS_TLS_CA_FILE names a PEM file of CA certificates to trust instead
// (a private CA); REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE name a client
// certificate and its key, for a server that requires one
// (tls-auth-clients). These are an error without a rediss:// URL.
//
// The client honours context deadlines (ContextTimeoutEnabled), so each
// cache operation ends within the manager's timeout even on a server that
// accepts connections and never answers. A call with no deadline gets one
// per command or pipeline, retries included: the dial timeout plus the read
// timeout (1 s + 3 s, envTimeouts; a REDIS_URL's own dial_timeout,
// read_timeout and write_timeout win, and a disabled one removes it).
func FromEnv() (*Backend, error) {
	opt, err := envOptions(os.LookupEnv)
	if err != nil {
		return nil, err
	}
	withEnvTimeouts(opt)
	c := redis.NewClient(opt)
	if opt.ReadTimeout > 0 && opt.DialTimeout > 0 {
		c.AddHook(noDeadlineBound(opt.DialTimeout + opt.ReadTimeout))
	}
	b := New(c)
	b.owned = true
	return b, nil
}

// noDeadlineBound is a go-redis hook that gives a command or pipeline
// sent without a deadline (Clear, Delete or Epoch under
// context.Background) one of its own, retries included. go-redis retries
// a read that timed out (MaxRetries, 3): on a server that never answers, a
// call without a deadline waited 4 read timeouts per round trip, 24 s for
// a Clear's first use, where the context would have ended it. Calls with a
// deadline pass untouched, without an allocation.
type noDeadlineBound time.Duration

func (d noDeadlineBound) DialHook(next redis.DialHook) redis.DialHook { return next }

func (d noDeadlineBound) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if _, ok := ctx.Deadline(); ok {
			return next(ctx, cmd)
		}
		ctx, cancel := context.WithTimeout(ctx, time.Duration(d))
		defer cancel()
		return next(ctx, cmd)
	}
}

func (d noDeadlineBound) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if _, ok := ctx.Deadline(); ok {
			return next(ctx, cmds)
		}
		ctx, cancel := context.WithTimeout(ctx, time.Duration(d))
		defer cancel()
		return next(ctx, cmds)
	}
}

// The variables that configure TLS on a rediss:// URL.
const (
	EnvTLSCAFile   = "REDIS_TLS_CA_FILE"
	EnvTLSCertFile = "REDIS_TLS_CERT_FILE"
	EnvTLSKeyFile  = "REDIS_TLS_KEY_FILE"
)

// envOptions reads the client options from the environment through lookup.
func envOptions(lookup func(string) (string, bool)) (*redis.Options, error) {
	get := func(k string) string {
		if v, ok := lookup(k); ok {
			return v
		}
		return ""
	}
	var opt *redis.Options
	if u := get("REDIS_URL"); u != "" {
		var err error
		if opt, err = ParseURL(u); err != nil {
			return nil, fmt.Errorf("redisbackend: REDIS_URL: %w", err)
		}
	} else {
		var err error
		if opt, err = hostOptions(get); err != nil {
			return nil, err
		}
	}
	if err := envTLS(opt, get); err != nil {
		return nil, err
	}
	return opt, nil
}

// hostOptions reads REDIS_HOST, REDIS_PORT, REDIS_PASSWORD and REDIS_DB.
func hostOptions(get func(string) string) (*redis.Options, error) {
	host := "127.0.0.1"
	if h := get("REDIS_HOST"); h != "" {
		host = h
	}
	port := "6379"
	if p := get("REDIS_PORT"); p != "" {
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
	if d := get("REDIS_DB"); d != "" {
		n, err := strconv.Atoi(d)
		if err == nil && n < 0 {
			err = errors.New("negative database")
		}
		if err != nil {
			return nil, fmt.Errorf("redisbackend: REDIS_DB=%q: %w", d, err)
		}
		db = n
	}
	return &redis.Options{
		Addr:     net.JoinHostPort(host, port),
		Password: get("REDIS_PASSWORD"),
		DB:       db,
	}, nil
}

// ParseURL is redis.ParseURL, with errors that never quote the URL's user
// information (a password), for programs that build their own client
// from a URL (a ClusterClient, options of their own). FromEnv uses it.
// A URL holding "#" is refused: a Redis URL has no fragment, so the "#"
// comes from a password left unescaped, and go-redis would drop what
// follows it and dial whatever part of the password came before it as
// the host, naming it in every connection error.
func ParseURL(raw string) (*redis.Options, error) {
	if strings.Contains(raw, "#") {
		return nil, errors.New(`the URL holds a "#", and a Redis URL has no fragment: percent-encode the characters : / ? # @ % in a user name or password (# as %23)`)
	}
	opt, err := redis.ParseURL(raw)
	if err != nil {
		return nil, urlError(raw, err)
	}
	return opt, nil
}

// urlError is redis.ParseURL's error on raw without any part of its user
// information. ParseURL's errors quote parts of the URL (url.Error the
// whole of it; "invalid URL path", "invalid database number" and "invalid
// port" the text after a "/", "#" or ":" that a password left unescaped
// moves into the path or the port), so the error reported is the one of
// the URL with everything before its last "@" replaced; if that one
// parses, the fault was in what was replaced.
func urlError(raw string, err error) error {
	at := strings.LastIndexByte(raw, '@')
	if at < 0 {
		return bareURLError(err)
	}
	head := ""
	if i := strings.Index(raw[:at], "://"); i >= 0 {
		head = raw[:i+3]
	}
	if _, rerr := redis.ParseURL(head + "REDACTED" + raw[at:]); rerr != nil {
		return bareURLError(rerr)
	}
	return errors.New("the part before the host (user, password) cannot be parsed: percent-encode the characters : / ? # @ % in a user name or password")
}

// bareURLError drops url.Error's quote of the whole URL.
func bareURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// envTLS applies REDIS_TLS_CA_FILE, REDIS_TLS_CERT_FILE and
// REDIS_TLS_KEY_FILE to the TLS configuration of a rediss:// URL.
func envTLS(opt *redis.Options, get func(string) string) error {
	caFile, certFile, keyFile := get(EnvTLSCAFile), get(EnvTLSCertFile), get(EnvTLSKeyFile)
	if caFile == "" && certFile == "" && keyFile == "" {
		return nil
	}
	if opt.TLSConfig == nil {
		for _, v := range []string{EnvTLSCAFile, EnvTLSCertFile, EnvTLSKeyFile} {
			if get(v) != "" {
				return fmt.Errorf("redisbackend: %s is set but the connection is not TLS: use a rediss:// REDIS_URL", v)
			}
		}
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return fmt.Errorf("redisbackend: %s: %w", EnvTLSCAFile, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("redisbackend: %s=%q: no PEM certificate in the file", EnvTLSCAFile, caFile)
		}
		opt.TLSConfig.RootCAs = pool
	}
	switch {
	case certFile != "" && keyFile != "":
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return fmt.Errorf("redisbackend: %s, %s: %w", EnvTLSCertFile, EnvTLSKeyFile, err)
		}
		opt.TLSConfig.Certificates = []tls.Certificate{cert}
	case certFile != "":
		return fmt.Errorf("redisbackend: %s is set without %s", EnvTLSCertFile, EnvTLSKeyFile)
	case keyFile != "":
		return fmt.Errorf("redisbackend: %s is set without %s", EnvTLSKeyFile, EnvTLSCertFile)
	}
	return nil
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

// withEnvTimeouts makes opt honour context deadlines, fills the timeouts
// the URL left unset, and dials once per attempt: go-redis redials a
// refused connection 5 times, 100 ms apart, within each of a command's 4
// attempts, so that against a Redis that is down every call — a GORM
// write's invalidation among them — took seconds to fail, where depcache
// retries on its own (the breaker's probes, the retry of failed
// invalidations).
func withEnvTimeouts(opt *redis.Options) {
	opt.ContextTimeoutEnabled = true
	opt.DialerRetries = 1
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
