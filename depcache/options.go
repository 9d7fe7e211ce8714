package depcache

import (
	"errors"
	"fmt"
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
	envPrefix    string  // DEP_CACHE_PREFIX, when read
	invalidOpts  []error // options given values that cannot work
	configErr    error   // an environment value or option New could not use

	maxValueSize    int           // WithMaxValueSize (sizelimit.go)
	breakerFailures int           // WithBreaker (breaker.go); 0: off
	breakerOpenFor  time.Duration // WithBreaker

	localMax int           // WithLocalCache (localtier.go)
	localTTL time.Duration // WithLocalCacheTTL
}

// ErrInvalidOption is wrapped by the error of a manager given an option
// value that cannot work, such as WithTimeout(0) or an empty WithPrefix.
// New has no error result: such a manager logs the error once, caches
// nothing, and returns the error from Err and from every method (its
// invalidations still run, with the defaults in place of the invalid
// values); GetOrCreate returns it and registers nothing.
var ErrInvalidOption = errors.New("depcache: invalid option")

// invalid records an option value that cannot work; the field keeps its
// default.
func (c *config) invalid(msg string) {
	c.invalidOpts = append(c.invalidOpts, fmt.Errorf("%w: %s", ErrInvalidOption, msg))
}

// Err returns the configuration error that keeps the manager from caching
// (an invalid option or environment value), or nil.
func (m *Manager) Err() error { return m.cfg.configErr }

// Defaults for the options below.
const (
	DefaultTimeout             = 250 * time.Millisecond
	DefaultInvalidationTimeout = 5 * time.Second
	DefaultPendingLimit        = 10000
)

// WithName names the manager (default "default"). GetOrCreate's name
// argument wins over it.
func WithName(name string) Option {
	return func(c *config) {
		if name == "" {
			c.invalid("WithName: empty name")
			return
		}
		c.name = name
	}
}

// WithPrefix sets the key prefix of everything the manager stores. Without
// it the prefix is "<DEP_CACHE_PREFIX or cache>:<name>", so two managers
// never share tags by accident.
func WithPrefix(p string) Option {
	return func(c *config) {
		if p == "" {
			c.invalid("WithPrefix: empty prefix (the manager would share keys with everything in the store)")
			return
		}
		c.prefix, c.prefixSet = p, true
	}
}

// WithDefaultTTL sets the lifetime of entries stored with a TTL of 0. The
// default, 0, means no expiry.
func WithDefaultTTL(d time.Duration) Option {
	return func(c *config) {
		if d < 0 && d != NoExpiry {
			c.invalid(fmt.Sprintf("WithDefaultTTL(%v): negative; use NoExpiry or 0 for none", d))
			return
		}
		c.defaultTTL = d
	}
}

// WithCodec sets how values are encoded (default JSON, or
// DEP_CACHE_SERIALIZER).
func WithCodec(cd Codec) Option {
	return func(c *config) {
		if cd == nil {
			c.invalid("WithCodec(nil)")
			return
		}
		c.codec = cd
	}
}

// WithObserver calls fn for every Event, synchronously: keep it quick. A
// panicking observer is recovered and logged.
func WithObserver(fn func(Event)) Option { return func(c *config) { c.observer = fn } }

// WithLogger sets where errors are logged (default, and for nil,
// slog.Default()).
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
func WithBackend(b backends.Backend) Option {
	return func(c *config) {
		if b == nil {
			c.invalid("WithBackend(nil)")
			return
		}
		c.backend = b
	}
}

// WithTimeout bounds each lookup and fill (default DefaultTimeout); it must
// be positive, since an unbounded lookup would make a frozen Redis stall
// every caller. A lookup that times out is a miss, and the rest of that
// call skips the cache (no epoch read, no fill). When the caller's context
// has a deadline, a wait before the function (a lookup, an epoch read, the
// wait for another process's fill) takes at most half of what remains of
// it, so that the function still runs within the deadline.
func WithTimeout(d time.Duration) Option {
	return func(c *config) {
		if d <= 0 {
			c.invalid(fmt.Sprintf("WithTimeout(%v): must be positive", d))
			return
		}
		c.timeout = d
	}
}

// WithInvalidationTimeout bounds each invalidation attempt (default
// DefaultInvalidationTimeout); it must be positive.
func WithInvalidationTimeout(d time.Duration) Option {
	return func(c *config) {
		if d <= 0 {
			c.invalid(fmt.Sprintf("WithInvalidationTimeout(%v): must be positive (every invalidation would fail)", d))
			return
		}
		c.invTimeout = d
	}
}

// WithPendingLimit bounds how many failed tags are kept for retry (default
// DefaultPendingLimit, at least 1); past it the manager retries a Clear of
// its prefix instead.
func WithPendingLimit(n int) Option {
	return func(c *config) {
		if n < 1 {
			c.invalid(fmt.Sprintf("WithPendingLimit(%d): must be at least 1", n))
			return
		}
		c.pendingLimit = n
	}
}

// WithRetryBackoff sets the first and the longest wait between retries of
// failed invalidations (default 50ms and 5s). The wait doubles after each
// failed attempt up to longest, and each wait is drawn at random between
// half and all of it, so that processes that failed together do not retry
// in step. first must be positive and longest at least first.
func WithRetryBackoff(first, longest time.Duration) Option {
	return func(c *config) {
		if first <= 0 || longest < first {
			c.invalid(fmt.Sprintf("WithRetryBackoff(%v, %v): first must be positive and longest at least first", first, longest))
			return
		}
		c.retryMin, c.retryMax = first, longest
	}
}

// WithFillWait sets how long a miss waits when another process holds the
// key's fill lease (stores with leases: Redis Cluster, or a Redis backend
// with its fill lock on) before it computes without filling. Default 0:
// compute at once.
func WithFillWait(d time.Duration) Option {
	return func(c *config) {
		if d < 0 {
			c.invalid(fmt.Sprintf("WithFillWait(%v): negative", d))
			return
		}
		c.fillWait = d
	}
}

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
		localTTL:     DefaultLocalCacheTTL,
		maxValueSize: DefaultMaxValueSize,

		breakerFailures: DefaultBreakerFailures,
		breakerOpenFor:  DefaultBreakerOpenFor,
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
		if o != nil { // an option built conditionally
			o(&cfg)
		}
	}
	cfg.configErr = errors.Join(append([]error{err}, cfg.invalidOpts...)...)
	return cfg
}

// invalid records a MemoOption value that cannot work. Memoize has no error
// result: the function runs uncached, and the error is logged and counted
// once (as for a function that cannot be keyed).
func (s *memoSpec) invalid(msg string) {
	s.idErr = errors.Join(s.idErr, fmt.Errorf("%w: %s", ErrInvalidOption, msg))
}
