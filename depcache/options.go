package depcache

import (
	"log/slog"
	"time"

	"github.com/depcache/go-depcache/backends"
)

// Option configures a Manager.
type Option func(*config)

type config struct {
	name         string
	prefix       string
	prefixSet    bool
	defaultTTL   time.Duration
	codec        Codec
	observer     func(Event)
	logger       *slog.Logger
	strict       bool
	enabled      bool
	enabledSet   bool
	backend      backends.Backend
	timeout      time.Duration
	invTimeout   time.Duration
	pendingLimit int
	retryMin     time.Duration
	retryMax     time.Duration
	fillWait     time.Duration
	envPrefix    string // DEP_CACHE_PREFIX, when read
	configErr    error  // an environment value New could not parse
}

// Defaults for the options below.
const (
	DefaultTimeout             = 250 * time.Millisecond
	DefaultInvalidationTimeout = 5 * time.Second
	DefaultPendingLimit        = 10000
)

// WithName names the manager (default "default"). GetOrCreate's name
// argument wins over it.
func WithName(name string) Option { return func(c *config) { c.name = name } }

// WithPrefix sets the key prefix of everything the manager stores. Without
// it the prefix is "<DEP_CACHE_PREFIX or cache>:<name>", so two managers
// never share tags by accident.
func WithPrefix(p string) Option { return func(c *config) { c.prefix, c.prefixSet = p, true } }

// WithDefaultTTL sets the lifetime of entries stored with a TTL of 0. The
// default, 0, means no expiry.
func WithDefaultTTL(d time.Duration) Option { return func(c *config) { c.defaultTTL = d } }

// WithCodec sets how values are encoded (default JSON, or
// DEP_CACHE_SERIALIZER).
func WithCodec(cd Codec) Option { return func(c *config) { c.codec = cd } }

// WithObserver calls fn for every Event, synchronously: keep it quick. A
// panicking observer is recovered and logged.
func WithObserver(fn func(Event)) Option { return func(c *config) { c.observer = fn } }

// WithLogger sets where errors are logged (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithStrictErrors makes backend errors reach callers. By default the manager
// fails open: a backend error is logged and counted and the function runs.
func WithStrictErrors() Option { return func(c *config) { c.strict = true } }

// WithEnabled(false) makes memoized functions run every time and the manager
// store nothing; invalidations still run. Default true, or
// DEP_CACHE_ENABLED.
func WithEnabled(on bool) Option { return func(c *config) { c.enabled, c.enabledSet = on, true } }

// WithBackend sets the store for GetOrCreate; without it the store comes
// from the environment, as for Default.
func WithBackend(b backends.Backend) Option { return func(c *config) { c.backend = b } }

// WithTimeout bounds each lookup and fill (default DefaultTimeout). A lookup
// that times out is a miss.
func WithTimeout(d time.Duration) Option { return func(c *config) { c.timeout = d } }

// WithInvalidationTimeout bounds each invalidation attempt (default
// DefaultInvalidationTimeout).
func WithInvalidationTimeout(d time.Duration) Option {
	return func(c *config) { c.invTimeout = d }
}

// WithPendingLimit bounds how many failed tags are kept for retry (default
// DefaultPendingLimit); past it the manager retries a Clear of its prefix
// instead.
func WithPendingLimit(n int) Option { return func(c *config) { c.pendingLimit = n } }

// WithRetryBackoff sets the first and the longest wait between retries of
// failed invalidations (default 50ms and 5s).
func WithRetryBackoff(first, longest time.Duration) Option {
	return func(c *config) { c.retryMin, c.retryMax = first, longest }
}

// WithFillWait sets how long a miss waits when another process holds the
// key's fill lease (stores with leases: Redis Cluster, or a Redis backend
// with its fill lock on) before it computes without filling. Default 0:
// compute at once.
func WithFillWait(d time.Duration) Option { return func(c *config) { c.fillWait = d } }

func defaultConfig() config {
	return config{
		name:         "default",
		codec:        JSON,
		enabled:      true,
		timeout:      DefaultTimeout,
		invTimeout:   DefaultInvalidationTimeout,
		pendingLimit: DefaultPendingLimit,
		retryMin:     50 * time.Millisecond,
		retryMax:     5 * time.Second,
	}
}

// buildConfig applies the environment, then opts, over the defaults. An
// environment value that cannot be parsed is kept as cfg.configErr.
func buildConfig(opts []Option) config {
	cfg := defaultConfig()
	envOpts, err := envOptions()
	for _, o := range envOpts {
		o(&cfg)
	}
	for _, o := range opts {
		o(&cfg)
	}
	cfg.configErr = err
	return cfg
}
