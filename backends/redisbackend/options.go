package redisbackend

import (
	"log/slog"
	"strings"
	"time"
)

// Defaults of the options.
const (
	DefaultEpochKey      = "depcache:epoch"
	DefaultMaxFillAge    = time.Minute
	DefaultMaxTTL        = 24 * time.Hour
	DefaultAssumedPolicy = "noeviction"
	DefaultChunkSize     = 1000
	DefaultWaitTimeout   = time.Second
)

// pruneSample is how many registrations of one of its tags a fill
// samples for pruning, one fill in pruneEvery: HRANDFIELD costs about as
// much for one field as for eight (6–10 µs on a big hash, measured), a
// quarter of a 10-tag fill's server time when every fill sampled two, so
// fewer, bigger samples prune at the same rate for less.
const (
	pruneSample = 8
	pruneEvery  = 4
)

// Trimming the tag index (doc.go, "Pruning"): every fill visits up to
// trimBudget due stamps, every invalidation trimBudget plus one per tag it
// stamps, at most trimStep per script; each visit samples up to trimSample
// registrations of the tag.
const (
	trimBudget = 32
	trimStep   = 256
	trimSample = 16
)

// A script that drains a big tag blocks the server while it runs: the
// invalidation script stops draining tags itself after stepBudget, and
// each HSCAN step is sized from the last one's duration to about
// stepBudget (at least minStep registrations, at most the chunk size),
// the first firstStep. The budget is measured inside the script, which
// is most but not all of the time the server spends on it.
const (
	stepBudget = 1500 * time.Microsecond
	minStep    = 32
	firstStep  = 256
)

// An Option configures a Backend.
type Option func(*config)

type config struct {
	epochKey      string
	prunedKey     string // in the epoch key's slot: prunedKeyOf
	maxFillAge    time.Duration
	maxTTL        time.Duration
	assumedPolicy string
	logger        *slog.Logger
	chunkSize     int
	waitTimeout   time.Duration
	leaseTTL      time.Duration
	fillLock      bool
	tierLease     time.Duration // notify.go
}

// pruneAfterMS is the age, in ms of the server's clock, after which a
// stamp may go (from a hash that holds nothing else): twice the maximum
// fill age, so that a fill that passed the Age check at its start still
// has a whole maximum fill age for its own round trips before a stamp that
// could refuse it goes.
func (c *config) pruneAfterMS() int64 { return 2 * c.maxFillAge.Milliseconds() }

func defaultConfig() config {
	return config{
		epochKey:      DefaultEpochKey,
		maxFillAge:    DefaultMaxFillAge,
		maxTTL:        DefaultMaxTTL,
		assumedPolicy: DefaultAssumedPolicy,
		chunkSize:     DefaultChunkSize,
		waitTimeout:   DefaultWaitTimeout,
	}
}

// prunedKeyOf names the key that records the newest stamp pruned in the
// current era (doc.go, "Pruning"), in the epoch key's Cluster slot so that
// one script reads both: the epoch key's own hash tag if it has one, else
// the whole epoch key as the tag.
func prunedKeyOf(epochKey string) string {
	if i := strings.IndexByte(epochKey, '{'); i >= 0 {
		if j := strings.IndexByte(epochKey[i+1:], '}'); j > 0 {
			return epochKey + ":pruned"
		}
	}
	return "{" + epochKey + "}:pruned"
}

// WithEpochKey names the key that holds the epoch (default
// "depcache:epoch"). There is one epoch per Redis, shared by every
// namespace so that the epochs of different managers compare: every process
// sharing a Redis must use the same key, outside every manager's prefix.
// Clear never touches it. An empty key keeps the default.
func WithEpochKey(key string) Option {
	return func(c *config) {
		if key != "" {
			c.epochKey = key
		}
	}
}

// WithMaxFillAge sets the longest a computation may run between its Lookup
// and its Fill (default 1 minute). Older fills are refused with ErrStale,
// and stamps older than twice this are pruned. A value ≤ 0 keeps the
// default.
func WithMaxFillAge(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.maxFillAge = d
		}
	}
}

// WithMaxTTL sets the lifetime given to entries stored without expiry when
// the server's maxmemory-policy is volatile-*, so that they stay evictable
// (default 24 hours). Under other policies such entries never expire. A
// value ≤ 0 keeps the default.
func WithMaxTTL(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.maxTTL = d
		}
	}
}

// WithAssumedPolicy names the maxmemory-policy to assume where CONFIG GET
// is refused, as on managed Redis services and miniredis (default
// "noeviction"). Set it to the policy the service is configured with: an
// allkeys-* policy makes Lookup and Fill fail with ErrUnsafePolicy, a
// volatile-* one caps entries without expiry at the maximum TTL.
func WithAssumedPolicy(p string) Option {
	return func(c *config) {
		if p != "" {
			c.assumedPolicy = p
		}
	}
}

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(c *config) { c.logger = l }
}

// WithChunkSize sets how many registrations one invalidation or clean
// script handles at most (default 1000): a tag with more is drained in
// HSCAN steps of about this many, one script each, so that no script
// blocks the server for long. A value ≤ 0 keeps the default.
func WithChunkSize(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.chunkSize = n
		}
	}
}

// WithWaitTimeout sets how long an invalidation waits for a replica to
// acknowledge it (WAIT 1 <timeout>) when the server has replicas (default
// 1 second). An invalidation no replica acknowledged in time fails with
// ErrNotReplicated. A value ≤ 0 keeps the default.
func WithWaitTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.waitTimeout = d
		}
	}
}

// WithLeaseTTL sets the lifetime of a fill lease on Redis Cluster (default:
// the maximum fill age, WithMaxFillAge). A miss takes the lease; while it lives,
// other callers that miss on the key compute without filling (Busy), and a
// fill that outlives it is refused. A lease is given back when its fill
// ends either way, so this matters only when a process dies mid-fill: the
// key is then served uncached until the lease expires. A value ≤ 0 keeps
// the default. A single Redis takes no leases.
func WithLeaseTTL(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.leaseTTL = d
		}
	}
}
