package pgcdc

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"gorm.io/gorm"
)

// Option configures a Listener.
type Option func(*config)

type config struct {
	slot, publication string
	tables            []string // the publication's tables; nil: FOR ALL TABLES
	models            []modelSet
	logger            *slog.Logger
	observer          func(Event)
	changeTags        func(Change) []string
	minBackoff        time.Duration
	maxBackoff        time.Duration
	status            time.Duration
	invTimeout        time.Duration
	maxRetained       int64
	debtTable         string
	err               error // the first bad option, returned by New
}

type modelSet struct {
	db     *gorm.DB
	models []any
}

func defaults() config {
	return config{
		slot:        "depcache_pgcdc",
		publication: "depcache_pgcdc",
		minBackoff:  50 * time.Millisecond,
		maxBackoff:  5 * time.Second,
		status:      10 * time.Second,
		invTimeout:  10 * time.Second,
		debtTable:   "depcache_pgcdc_debt",
	}
}

// WithSlot names the logical replication slot (default "depcache_pgcdc").
// Run creates it when it is missing, with the pgoutput plugin. The slot is
// the listener's durable position: PostgreSQL keeps the WAL from its
// confirmed position on, so one slot per cache namespace, never shared with
// another consumer. A listener that finds the slot held by the listener of
// another manager prefix returns an error wrapping ErrBadOption instead of
// waiting as its standby (told by the sessions' application_name, which
// the listener sets unless the DSN does). The slot is permanent, not
// temporary: it outlives Run, so that changes committed while no listener
// runs are invalidated by the next one; drop it when the listener is
// retired (pg_drop_replication_slot). Slot names are lower-case letters,
// digits and '_', at most 63.
func WithSlot(name string) Option {
	return func(c *config) {
		if !validSlot(name) {
			c.fail(fmt.Errorf("%w: slot name %q: want [a-z0-9_]{1,63}", ErrBadOption, name))
		}
		c.slot = name
	}
}

// WithPublication names the publication the slot streams (default
// "depcache_pgcdc"). Run creates it when missing: FOR ALL TABLES, or for the
// tables of WithTables. An existing publication is used as it is, unless
// it would leave changes out — an operation it does not publish (insert,
// update, delete, truncate) or a table of WithTables it does not cover:
// Setup and Run then return an error wrapping ErrPublication that names
// the ALTER PUBLICATION to run.
func WithPublication(name string) Option {
	return func(c *config) {
		if name == "" || len(name) > 63 {
			c.fail(fmt.Errorf("%w: publication name %q: want 1 to 63 characters", ErrBadOption, name))
		}
		c.publication = name
	}
}

// WithTables makes a publication that Run creates cover only these tables
// ("users", "app.users") instead of FOR ALL TABLES (which needs superuser).
// Writes to other tables are then not seen. Names are the catalogue's,
// case-sensitive and unquoted ("Users" is the table created as "Users");
// one without a schema is looked up in the session's search_path. A table
// that does not exist is an error wrapping ErrTableNotFound, from Setup
// and Run, naming it: create the tables before the listener starts. One
// that cannot be published (a view, a temporary or unlogged table) is an
// error wrapping ErrBadOption.
func WithTables(tables ...string) Option {
	return func(c *config) {
		if len(tables) == 0 {
			c.fail(fmt.Errorf("%w: WithTables with no table", ErrBadOption))
		}
		for i, t := range tables {
			if strings.TrimSpace(t) == "" {
				c.fail(fmt.Errorf("%w: WithTables: table %d of %d is an empty name", ErrBadOption, i+1, len(tables)))
			}
		}
		c.tables = append(c.tables, tables...)
	}
}

// WithModels tells the listener the GORM models of the tables it watches,
// parsed with db's naming strategy (its NamingStrategy, TableName methods):
// a model's table is named, and its row tags keyed, exactly as the plugin
// does — the model's primary-key fields in the model's order, each value
// converted to the field's Go type before it is formatted. Tables without a
// model use the table's primary key in the database and the natural Go type
// of each column type (see the package documentation).
func WithModels(db *gorm.DB, models ...any) Option {
	return func(c *config) {
		if db == nil {
			c.fail(fmt.Errorf("%w: WithModels needs a *gorm.DB for its naming strategy", ErrBadOption))
			return
		}
		c.models = append(c.models, modelSet{db: db, models: models})
	}
}

// WithLogger sets where the listener logs (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithObserver calls fn for every Event, one call at a time, on the
// listener's goroutines: keep it fast, it holds up the stream.
func WithObserver(fn func(Event)) Option { return func(c *config) { c.observer = fn } }

// WithChangeTags adds tags of its own for each row change: fn gets the
// change's table and its old and new column values, and its tags are
// invalidated with the transaction's other tags (for instance the
// plugin's ConjunctionTag of a row's new values, finer than the scheme
// tags the listener invalidates; see the package documentation). A
// transaction gathers at most 100,000 of its tags: past them the listener
// clears the manager's prefix instead (recorded in PostgreSQL first, as
// past WithMaxRetainedWAL, so a listener that dies before clearing leaves
// the Clear to its successor) and calls fn for none of the transaction's
// remaining rows.
func WithChangeTags(fn func(Change) []string) Option { return func(c *config) { c.changeTags = fn } }

// WithBackoff sets the waits between attempts of a failed invalidation and
// between attempts to take a slot another listener holds or to reconnect:
// from min, doubling up to max (defaults 50ms and 5s).
func WithBackoff(min, max time.Duration) Option {
	return func(c *config) {
		if min <= 0 || max < min {
			c.fail(fmt.Errorf("%w: backoff %v..%v", ErrBadOption, min, max))
		}
		c.minBackoff, c.maxBackoff = min, max
	}
}

// WithStatusInterval sets how often the listener reports its position to
// PostgreSQL when nothing else made it (default 10s; keep it well under
// the server's wal_sender_timeout, 60s by default). That report asks the
// server for a reply: a connection that stays silent for twice the
// interval (at least 2s) after it is taken for lost and replaced, since a
// partition or a dead server host leaves TCP silent for many minutes. A
// manager closed while the listener idles ends Run within the interval.
func WithStatusInterval(d time.Duration) Option {
	return func(c *config) {
		if d <= 0 {
			c.fail(fmt.Errorf("%w: status interval %v", ErrBadOption, d))
		}
		c.status = d
	}
}

// WithInvalidationTimeout bounds each invalidation attempt (default 10s); an
// attempt that times out is retried.
func WithInvalidationTimeout(d time.Duration) Option {
	return func(c *config) {
		if d <= 0 {
			c.fail(fmt.Errorf("%w: invalidation timeout %v", ErrBadOption, d))
		}
		c.invTimeout = d
	}
}

// WithMaxRetainedWAL bounds the WAL the slot holds while invalidations
// fail (Redis down): past bytes behind the server's WAL end, the listener
// stops waiting for them. It records in PostgreSQL (table
// depcache_pgcdc_debt, created on first need: the user needs CREATE on its
// schema) that the manager's prefix must be cleared, confirms the pending
// commits so that the slot lets their WAL go, and from then on tries the
// Clear (every WithBackoff maximum, and before each later batch) until it
// succeeds, confirming commits meanwhile; a listener that starts with the
// record present clears first. It logs an error and emits EventOverBound
// and EventCleared. Zero (the default) means no bound: the slot holds WAL
// until the invalidations succeed.
func WithMaxRetainedWAL(bytes int64) Option {
	return func(c *config) {
		if bytes < 0 {
			c.fail(fmt.Errorf("%w: max retained WAL %d", ErrBadOption, bytes))
		}
		c.maxRetained = bytes
	}
}

func (c *config) fail(err error) {
	if c.err == nil {
		c.err = err
	}
}

func validSlot(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}
