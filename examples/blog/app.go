package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/backends/redisbackend"
	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/gormplugin"
)

// sqliteParams: BEGIN IMMEDIATE (the plugin needs it to find the rows of a
// mass write without phantoms, and writers queue instead of failing), a busy
// timeout, foreign keys (ON DELETE CASCADE), and WAL so that readers do not
// wait for writers.
const sqliteParams = "?_txlock=immediate&_busy_timeout=5000&_foreign_keys=1&_journal_mode=WAL"

// infra is what the blog runs on: a database, and a Redis unless the cache
// is the in-process memory store. The two servers of -load share it.
type infra struct {
	dialector func() gorm.Dialector
	dbDesc    string
	redis     redis.UniversalClient // nil: memory store
	cacheDesc string
	closers   []func() error // run in reverse order by Close
}

// openInfra resolves the -db flag (empty: a SQLite file in a new temporary
// directory) and, for the redis store, connects to REDIS_URL or starts a
// miniredis.
func openInfra(dsn, store string) (in *infra, err error) {
	in = &infra{}
	opened := in // the error returns below return a nil in
	defer func() {
		if err != nil {
			opened.Close()
		}
	}()
	switch {
	case dsn == "":
		dir, err := os.MkdirTemp("", "depcache-blog-")
		if err != nil {
			return nil, err
		}
		in.closers = append(in.closers, func() error { return os.RemoveAll(dir) })
		path := filepath.Join(dir, "blog.db")
		in.dialector = func() gorm.Dialector { return sqlite.Open(path + sqliteParams) }
		in.dbDesc = "SQLite " + path
	case isPostgres(dsn):
		in.dialector = func() gorm.Dialector { return postgres.Open(dsn) }
		in.dbDesc = "PostgreSQL"
	case strings.Contains(dsn, "@tcp("), strings.Contains(dsn, "@unix("):
		in.dialector = func() gorm.Dialector { return mysql.Open(dsn) }
		in.dbDesc = "MySQL"
	default:
		if !strings.Contains(dsn, "?") {
			dsn += sqliteParams
		}
		in.dialector = func() gorm.Dialector { return sqlite.Open(dsn) }
		in.dbDesc = "SQLite " + dsn
	}

	switch url := os.Getenv("REDIS_URL"); {
	case store == "memory":
		in.cacheDesc = "depcache's in-process memory store"
	case url != "":
		opt, err := redisbackend.ParseURL(url) // its errors never quote a password
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL: %w", err)
		}
		// Without it a frozen Redis would hold each cached call for the
		// client's ReadTimeout; redisbackend refuses such a client.
		opt.ContextTimeoutEnabled = true
		// One dial per attempt: go-redis's 5, 100 ms apart, made every
		// write's invalidation take seconds to fail while Redis was down
		// (depcache retries failed invalidations itself).
		opt.DialerRetries = 1
		c := redis.NewClient(opt)
		in.closers = append(in.closers, c.Close)
		// Fail now, not after seeding: each seed write would wait for its
		// invalidation to fail (35 s of logged errors before "clear cache:
		// connection refused" on a REDIS_URL nothing listens on).
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = c.Ping(ctx).Err()
		cancel()
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL: the Redis at %s does not answer: %w", opt.Addr, err)
		}
		in.redis, in.cacheDesc = c, "Redis at "+opt.Addr+" (REDIS_URL)"
	default:
		mr := miniredis.NewMiniRedis()
		if err := mr.Start(); err != nil {
			return nil, fmt.Errorf("start miniredis: %w", err)
		}
		in.closers = append(in.closers, func() error { mr.Close(); return nil })
		c := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
		in.closers = append(in.closers, c.Close)
		in.redis, in.cacheDesc = c, "in-process miniredis at "+mr.Addr()
	}
	return in, nil
}

// isPostgres reports whether dsn is a PostgreSQL URL or key=value DSN.
func isPostgres(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") || strings.Contains(dsn, "host=")
}

// Close closes the Redis client, stops miniredis and removes the temporary
// directory, whichever were opened.
func (in *infra) Close() error {
	var errs []error
	for _, c := range slices.Backward(in.closers) {
		errs = append(errs, c())
	}
	in.closers = nil
	return errors.Join(errs...)
}

// app is one blog: a manager, a *gorm.DB with the plugin for that manager,
// the store and the HTTP handler.
type app struct {
	db      *gorm.DB
	m       *depcache.Manager
	backend backends.Backend
	plugin  *gormplugin.Plugin
	store   *store
	handler http.Handler
}

// newApp opens the database with the plugin installed. With cache false
// the manager is disabled: memoized reads always run (writes still
// invalidate), which is the baseline of -load.
func newApp(in *infra, name string, cache bool, log *slog.Logger) (*app, error) {
	db, err := gorm.Open(in.dialector(), &gorm.Config{Logger: quietLogger{logger.New(
		slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		logger.Config{SlowThreshold: time.Second, LogLevel: logger.Warn, IgnoreRecordNotFoundError: true},
	)}})
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	var b backends.Backend = memory.New()
	if in.redis != nil {
		b = redisbackend.New(in.redis, redisbackend.WithLogger(log))
	}
	m := depcache.New(b,
		depcache.WithName(name),
		depcache.WithEnabled(cache),
		depcache.WithDefaultTTL(10*time.Minute),
		depcache.WithLogger(log))
	// Conjunction tags: a write kills only the cached lists its rows can
	// belong to (one application, so every process agrees on the option).
	p := gormplugin.New(m, gormplugin.WithLogger(log), gormplugin.WithConjunctionTags(0))
	a := &app{db: db, m: m, backend: b, plugin: p}
	if err := db.Use(p); err != nil {
		return nil, errors.Join(fmt.Errorf("install gormplugin: %w", err), a.Close())
	}
	a.store = newStore(db, m)
	a.handler = newHandler(a.store, m, log)
	return a, nil
}

// prepare creates the tables, loads the seed file (unless seedPath is ""),
// and empties the manager's namespace: entries left in a shared Redis by an
// earlier run on another database must not be served.
func (a *app) prepare(ctx context.Context, seedPath string) error {
	if err := migrate(a.db); err != nil {
		return err
	}
	if seedPath != "" {
		if err := seed(ctx, a.db, seedPath); err != nil {
			return err
		}
	}
	if _, err := a.m.Clear(ctx); err != nil {
		return fmt.Errorf("clear cache: %w", err)
	}
	return nil
}

// Close runs the plugin's delayed invalidations, closes the manager, its
// backend (not the shared Redis client) and the database.
func (a *app) Close() error {
	errs := []error{a.plugin.Close(), a.m.Close(), a.backend.Close()}
	if sqlDB, err := a.db.DB(); err == nil {
		errs = append(errs, sqlDB.Close())
	} else {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// httpServer is a running http.Server.
type httpServer struct {
	URL  string
	srv  *http.Server
	done chan error
}

func startServer(addr string, h http.Handler) (*httpServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &httpServer{
		URL:  "http://" + ln.Addr().String(),
		srv:  &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ErrorLog: log.New(os.Stderr, "blog: http: ", 0)},
		done: make(chan error, 1),
	}
	go func() { s.done <- s.srv.Serve(ln) }()
	return s, nil
}

// Shutdown stops accepting connections and waits up to 10 seconds for the
// requests in flight.
func (s *httpServer) Shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if serveErr := <-s.done; !errors.Is(serveErr, http.ErrServerClosed) {
		err = errors.Join(err, serveErr)
	}
	return err
}

// quietLogger is GORM's logger, silent about queries whose request was
// canceled (a client that went away).
type quietLogger struct{ logger.Interface }

func (l quietLogger) LogMode(level logger.LogLevel) logger.Interface {
	return quietLogger{l.Interface.LogMode(level)}
}

func (l quietLogger) Trace(ctx context.Context, begin time.Time, fc func() (string, int64), err error) {
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	l.Interface.Trace(ctx, begin, fc, err)
}
