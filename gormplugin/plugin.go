package gormplugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/schema"

	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/internal/taglist"
)

// Plugin is the depcache GORM plugin. Install it with db.Use(New(m)).
type Plugin struct {
	m   *depcache.Manager
	cfg config
	log *slog.Logger

	// schemas holds every model seen (*schema.Schema → its table name),
	// for cascades. Keyed by schema, not table: several model types may
	// share a table (GORM's own tests declare local types per test), and
	// the relationships of each count.
	schemas sync.Map
	logged  sync.Map // messages logged once

	conj *conjState // WithConjunctionTags (schemes.go); nil when off

	delayed sync.WaitGroup
	timerMu sync.Mutex
	timers  map[*time.Timer][]string

	ob *outbox // WithOutbox (outbox.go); nil when off

	memo entryMemo // decoded entries of the manager's tier (entrymemo.go)

	dbIDs dbIdentities // the databases' identities in keys (identity.go)
}

var _ gorm.Plugin = (*Plugin)(nil)

// Option configures the plugin.
type Option func(*config)

type config struct {
	foreignDelay time.Duration
	foreignError bool
	logger       *slog.Logger
	conjSchemes  int // WithConjunctionTags: schemes per table; 0 is off

	outbox      bool          // WithOutbox (outbox.go)
	outboxTable string        // WithOutboxTable
	outboxPoll  time.Duration // WithOutboxPoll

	dbName string // WithDatabaseName (identity.go), as keys carry it
}

// WithForeignTxDelay sets how long after a write inside a transaction the
// plugin did not begin it invalidates a second time (default 1s). The first
// invalidation runs at statement time, before that transaction's COMMIT;
// the second narrows the window in which a reader can refill the old value,
// but cannot close it.
func WithForeignTxDelay(d time.Duration) Option { return func(c *config) { c.foreignDelay = d } }

// WithForeignTxError makes a write inside a transaction the plugin did not
// begin fail with ErrForeignTransaction instead.
func WithForeignTxError() Option { return func(c *config) { c.foreignError = true } }

// WithLogger sets where the plugin logs (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// New returns the plugin for m: reads inside computations of m get their
// tags, and writes invalidate in m.
func New(m *depcache.Manager, opts ...Option) *Plugin {
	cfg := config{foreignDelay: time.Second}
	for _, o := range opts {
		if o != nil { // an option built conditionally
			o(&cfg)
		}
	}
	log := cfg.logger
	if log == nil {
		log = slog.Default()
	}
	return &Plugin{m: m, cfg: cfg, log: log.With("depcache", "gormplugin"), timers: map[*time.Timer][]string{}}
}

// Name implements gorm.Plugin.
func (p *Plugin) Name() string { return pluginName }

// pluginName is the plugin's name in gorm.Config.Plugins.
const pluginName = "depcache:gormplugin"

// Initialize implements gorm.Plugin: it wraps db's connection pool and
// registers the plugin's callbacks. Calling it again changes nothing.
func (p *Plugin) Initialize(db *gorm.DB) error {
	if p.m == nil {
		return fmt.Errorf("gormplugin: New needs a manager")
	}
	if p.cfg.outbox && p.ob != nil {
		// The outbox and its flusher are on the database the plugin was
		// first installed on: this one's writes would record their tags
		// in a table no flusher of ours reads.
		if sqlDB, err := db.DB(); err == nil && sqlDB != p.ob.db {
			return fmt.Errorf("%w: this plugin's outbox is on the database it was first installed on; install a plugin of its own on each database (gormplugin.New)", ErrOutbox)
		}
	}
	p.wrapPool(db)
	p.initConjunctions()
	if p.cfg.outbox && p.ob == nil {
		// Before the callbacks: if it fails, db.Use fails and may be
		// called again.
		if err := p.openOutbox(db); err != nil {
			return err
		}
	}

	processors := db.Callback()
	if processors.Query().Get("depcache:restore_preloads") != nil {
		return nil // already initialised: registering again would run every callback twice
	}
	errs := []error{
		processors.Query().Replace("gorm:query", p.query),
		processors.Query().Before("gorm:preload").After("gorm:query").Register("depcache:before_preload", beforePreload),
		processors.Query().After("gorm:preload").Before("gorm:after_query").Register("depcache:after_preload", afterPreload),
		processors.Query().After("gorm:after_query").Register("depcache:restore_preloads", restorePreloads),
		processors.Row().Replace("gorm:row", p.row),
		processors.Raw().Before("gorm:raw").Register("depcache:before_raw", p.beforeRaw),
		processors.Raw().After("gorm:raw").Register("depcache:after_raw", p.afterRaw),

		processors.Create().Before("gorm:begin_transaction").Register("depcache:before_begin_create", recordPoolBeforeBegin),
		processors.Create().After("gorm:begin_transaction").Before("gorm:before_create").Register("depcache:after_begin_create", p.adoptStatementTx),
		processors.Update().Before("gorm:begin_transaction").Register("depcache:before_begin_update", recordPoolBeforeBegin),
		processors.Update().After("gorm:begin_transaction").Before("gorm:setup_reflect_value").Register("depcache:after_begin_update", p.adoptStatementTx),
		processors.Delete().Before("gorm:begin_transaction").Register("depcache:before_begin_delete", recordPoolBeforeBegin),
		processors.Delete().After("gorm:begin_transaction").Before("gorm:before_delete").Register("depcache:after_begin_delete", p.adoptStatementTx),
		processors.Create().Before("gorm:create").Register("depcache:before_create", p.beforeWrite(opCreate)),
		processors.Create().After("gorm:create").Before("gorm:save_after_associations").Register("depcache:after_create", p.afterWrite(opCreate)),
		processors.Update().Before("gorm:update").Register("depcache:before_update", p.beforeWrite(opUpdate)),
		processors.Update().After("gorm:update").Before("gorm:save_after_associations").Register("depcache:after_update", p.afterWrite(opUpdate)),
		processors.Delete().Before("gorm:delete").Register("depcache:before_delete", p.beforeWrite(opDelete)),
		processors.Delete().After("gorm:delete").Before("gorm:after_delete").Register("depcache:after_delete", p.afterWrite(opDelete)),
	}
	if p.cfg.outbox {
		errs = append(errs,
			processors.Raw().Before("gorm:raw").Register("depcache:outbox_begin_raw", p.outboxBeginRaw),
			processors.Raw().After("depcache:after_raw").Register("depcache:outbox_end_raw", p.outboxEndRaw))
	}
	for _, err := range errs {
		if err != nil {
			return fmt.Errorf("gormplugin: register callbacks: %w", err)
		}
	}
	return nil
}

// Close runs now the second invalidations still waiting for their delay
// (WithForeignTxDelay), and waits for them; with WithOutbox it then stops
// the outbox's flusher, after deleting the rows it delivered.
func (p *Plugin) Close() error {
	p.timerMu.Lock()
	pending := p.timers
	p.timers = map[*time.Timer][]string{}
	p.timerMu.Unlock()
	for t, tags := range pending {
		if t.Stop() {
			p.delayed.Done()
			p.invalidate(context.Background(), tags)
		}
	}
	p.delayed.Wait()
	if p.ob != nil {
		p.ob.close()
	}
	return nil
}

// invalidate runs after a commit: a failure is logged and counted by the
// manager, which retries it, and never becomes the write's error (the
// caller would retry a write that happened).
//
// The write waits for it at most as long as ctx allows (DESIGN.md: a GORM
// write waits for its invalidation at most its own context and the
// invalidation timeout): past ctx's end it goes on in the background,
// bounded by the manager's invalidation timeout, Close waits for it, and
// the write returns with it pending.
func (p *Plugin) invalidate(ctx context.Context, tags []string) error {
	return p.invalidateThen(ctx, tags, nil)
}

// invalidateThen is invalidate, calling then with the invalidation's
// result once it has returned, whether the write still waited for it or
// not.
func (p *Plugin) invalidateThen(ctx context.Context, tags []string, then func(error)) error {
	run := func() error {
		bg := context.WithoutCancel(ctx)
		tags := dedupe(p.resolveConjunctions(bg, tags))
		var err error
		if len(tags) > 0 {
			if _, err = p.m.InvalidateDependency(bg, tags...); errors.Is(err, depcache.ErrClosed) {
				// Nothing retries it, and a closed manager logs nothing:
				// entries carrying the tags stay until their TTL in every
				// process still serving them.
				p.log.Error("gormplugin: invalidation after commit lost: the plugin's manager is closed", "tags", taglist.Quote(tags), "err", err)
			} else if err != nil {
				// The manager logged it (at error level once per outage)
				// and retries it.
				p.log.Debug("gormplugin: invalidation after commit failed; the manager retries it", "tags", taglist.Quote(tags), "err", err)
			}
		}
		if then != nil {
			then(err)
		}
		return err
	}
	if len(tags) == 0 {
		return run()
	}
	if ctx.Done() == nil {
		return run() // nothing can end the wait but the invalidation timeout
	}
	done := make(chan error, 1)
	p.delayed.Add(1)
	go func() {
		defer p.delayed.Done()
		done <- run()
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		p.log.Warn("gormplugin: the write's context ended before its invalidation returned; the invalidation goes on in the background", "tags", len(tags), "err", context.Cause(ctx))
		return ctx.Err()
	}
}

// invalidateLater schedules the second invalidation for a write in a
// foreign transaction.
func (p *Plugin) invalidateLater(tags []string) {
	p.timerMu.Lock()
	defer p.timerMu.Unlock()
	p.delayed.Add(1)
	var t *time.Timer
	t = time.AfterFunc(p.cfg.foreignDelay, func() {
		defer p.delayed.Done()
		p.timerMu.Lock()
		delete(p.timers, t)
		p.timerMu.Unlock()
		p.invalidate(context.Background(), tags)
	})
	p.timers[t] = tags
}

func (p *Plugin) logOnce(key, msg string, args ...any) {
	if _, seen := p.logged.LoadOrStore(key, true); !seen {
		p.log.Warn(msg, args...)
	}
}

// remember records a model's schema, for cascades.
func (p *Plugin) remember(s *schema.Schema) {
	if s != nil {
		p.schemas.LoadOrStore(s, tableName(s.Table))
	}
}

func dedupe(tags []string) []string {
	seen := make(map[string]struct{}, len(tags))
	out := tags[:0:0]
	for _, t := range tags {
		if _, ok := seen[t]; !ok && t != "" {
			seen[t] = struct{}{}
			out = append(out, t)
		}
	}
	return out
}
