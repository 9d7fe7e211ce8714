package depcache_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/depcache/go-depcache/backends/redisbackend"
	"github.com/depcache/go-depcache/depcache"
)

// logBuffer collects a manager's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) count(substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.buf.String(), substr)
}

// Hostile contents under the manager's prefix — foreign bytes or a value of
// the wrong Redis type at an entry key, a string at a tag's hash key — a
// 1 MiB tag and a tag holding NUL: each call still returns the function's
// value, the manager reports an error or works, nothing panics, and the
// entries around them are not lost.
func TestHostileRedisContents(t *testing.T) {
	for _, tg := range redisTargets(t) {
		t.Run(tg.name, func(t *testing.T) {
			ctx := context.Background()
			prefix := randomPrefix(t)
			logs := &logBuffer{}
			// A fill that times out is skipped (fail open): the test counts
			// hits, so a loaded machine must not make one time out.
			m := depcache.New(redisbackend.New(tg.client), depcache.WithPrefix(prefix),
				depcache.WithLogger(slog.New(slog.NewTextHandler(logs, nil))), depcache.WithTimeout(10*time.Second))
			defer m.Close()
			c := tg.client

			calls := 0
			fetch := func(key string, deps ...string) string {
				t.Helper()
				v, err := depcache.Fetch(ctx, m, key, func(ctx context.Context) (string, error) {
					calls++
					depcache.AddDependency(ctx, deps...)
					return "value of " + key, nil
				})
				if err != nil || v != "value of "+key {
					t.Fatalf("Fetch(%q) = %q, %v", key, v, err)
				}
				return v
			}
			hit := func(key string) bool {
				t.Helper()
				before := calls
				fetch(key, "bystander")
				return calls == before
			}
			// A bystander entry that must survive everything below.
			fetch("keep", "bystander")
			if !hit("keep") {
				t.Fatal("bystander entry not stored")
			}

			// Foreign bytes at an entry key: a miss, deleted, refilled.
			if err := c.Set(ctx, prefix+":e:{foreign}", "not an envelope", 0).Err(); err != nil {
				t.Fatal(err)
			}
			if found, err := m.Get(ctx, "foreign", new(string)); found || err != nil {
				t.Errorf("Get of foreign bytes: found=%v err=%v, want a miss", found, err)
			}
			fetch("foreign", "x")
			if !hit("foreign") {
				t.Error("entry with foreign bytes was not replaced by a fill")
			}

			// A hash at an entry key: WRONGTYPE is a logged error, the
			// function's value is returned, every call.
			if err := c.HSet(ctx, prefix+":e:{hash}", "f", "v").Err(); err != nil {
				t.Fatal(err)
			}
			// The key is under our prefix, so ours: the fill may replace it.
			errs := m.Stats().Errors
			fetch("hash", "x")
			if !hit("hash") && m.Stats().Errors == errs {
				t.Error("a hash at an entry key neither reported an error nor was replaced by the fill")
			}

			// A string at a tag's hash key: the fill depending on that tag
			// fails open (logged), its invalidation is a clear error, and
			// other tags are unaffected.
			if err := c.Set(ctx, prefix+":t:{users::1}", "junk", 0).Err(); err != nil {
				t.Fatal(err)
			}
			fetch("user", "users::1")
			_, err := m.InvalidateDependency(ctx, "users::1")
			if err == nil && c.Type(ctx, prefix+":t:{users::1}").Val() == "string" {
				t.Error("invalidating a tag whose hash key holds a string neither failed nor repaired it")
			}
			t.Logf("invalidate of a tag whose key is a string: %v", err)

			// A 1 MiB tag and a tag holding NUL bytes: stored and
			// invalidated like any other.
			for name, tag := range map[string]string{
				"big": "big::" + strings.Repeat("x", 1<<20),
				"nul": "nul::a\x00b",
			} {
				fetch("tagged-"+name, tag)
				if !hit("tagged-" + name) {
					t.Errorf("%s tag: entry not stored", name)
				} else {
					n, err := m.InvalidateDependency(ctx, tag)
					if err != nil || n != 1 {
						t.Errorf("%s tag: InvalidateDependency = %d, %v; want 1 entry", name, n, err)
					}
					if hit("tagged-" + name) {
						t.Errorf("%s tag: entry survived its invalidation", name)
					}
				}
			}
			// NUL is a byte like another: "nul::a" is a different tag.
			fetch("tagged-nul2", "nul::a\x00b")
			if n, _ := m.InvalidateDependency(ctx, "nul::a"); n != 0 {
				t.Errorf("invalidating nul::a removed %d entries of nul::a\\x00b", n)
			}

			if !hit("keep") {
				t.Error("the bystander entry was lost")
			}
			// The manager's prefix holds no other key types than ours.
			t.Logf("%d errors counted, %d log lines", m.Stats().Errors, logs.count("\n"))
		})
	}
}

// A value larger than WithMaxValueSize is returned uncached, counted, and
// logged once per function however often it is called; a Set of one is an
// error wrapping ErrValueTooLarge. The default limit keeps a 100 MB value
// out of Redis.
func TestMaxValueSize(t *testing.T) {
	for _, tg := range redisTargets(t) {
		t.Run(tg.name, func(t *testing.T) {
			ctx := context.Background()
			logs := &logBuffer{}
			// A long timeout: copying 100 MB under -race can stall a
			// lookup past the default 250 ms, which is not what this tests.
			m := depcache.New(redisbackend.New(tg.client), depcache.WithPrefix(randomPrefix(t)),
				depcache.WithTimeout(10*time.Second),
				depcache.WithLogger(slog.New(slog.NewTextHandler(logs, nil))))
			defer m.Close()
			huge := make([]byte, 100<<20)
			calls := 0
			get := depcache.Memoize(func(ctx context.Context, n int) ([]byte, error) {
				calls++
				depcache.AddDependency(ctx, "blobs::1")
				if n == 0 {
					return []byte("small"), nil
				}
				return huge, nil
			}, depcache.Using(m), depcache.KeyName("blob"))
			for range 3 {
				v, err := get(ctx, 1)
				if err != nil || len(v) != len(huge) {
					t.Fatalf("got %d bytes, %v", len(v), err)
				}
			}
			if calls != 3 {
				t.Errorf("%d calls, want 3: the huge value must not be cached", calls)
			}
			if s := m.Stats(); s.TooLarge != 3 || s.SkippedFills != 3 {
				t.Errorf("TooLarge=%d SkippedFills=%d, want 3 and 3", s.TooLarge, s.SkippedFills)
			}
			if n := logs.count("value not stored"); n != 1 {
				t.Errorf("%d log lines for the too-large value, want 1:\n%s", n, logs.buf.String())
			}
			// Small values of the same function are still cached.
			get(ctx, 0)
			get(ctx, 0)
			if calls != 4 {
				t.Errorf("small value: %d calls, want 4; %+v\n%s", calls, m.Stats(), logs.buf.String())
			}
			err := m.Set(ctx, "blob", huge, 0, "blobs::1")
			if !errors.Is(err, depcache.ErrValueTooLarge) {
				t.Errorf("Set of 100 MB: %v, want ErrValueTooLarge", err)
			}
			if found, _ := m.Exists(ctx, "blob"); found {
				t.Error("the too-large Set stored something")
			}
		})
	}
}

// The limit is an option: a small one applies, a non-positive one is
// refused as invalid.
func TestWithMaxValueSizeOption(t *testing.T) {
	m, _ := newManager(t, depcache.WithMaxValueSize(4))
	if err := m.Set(context.Background(), "k", "12345", 0, "d"); !errors.Is(err, depcache.ErrValueTooLarge) {
		t.Errorf("7-byte payload under a 4-byte limit: %v", err)
	}
	if err := m.Set(context.Background(), "k", 1, 0, "d"); err != nil {
		t.Errorf("small value: %v", err)
	}
	bad, _ := newManager(t, depcache.WithMaxValueSize(0))
	if !errors.Is(bad.Err(), depcache.ErrInvalidOption) {
		t.Errorf("WithMaxValueSize(0): Err() = %v", bad.Err())
	}
}

// A tag the backend refuses for good (its hash key holds a string) stays
// pending alone: the other tags that failed with it are delivered by the
// retry instead of being held back with it.
func TestPoisonTagDoesNotHoldBackOthers(t *testing.T) {
	for _, tg := range redisTargets(t) {
		t.Run(tg.name, func(t *testing.T) {
			ctx := context.Background()
			prefix := randomPrefix(t)
			m := depcache.New(redisbackend.New(tg.client), depcache.WithPrefix(prefix),
				depcache.WithRetryBackoff(time.Hour, time.Hour), // retries only when the test asks
				depcache.WithLogger(slog.New(slog.DiscardHandler)))
			defer m.Close()
			if err := tg.client.Set(ctx, prefix+":t:{poison}", "junk", 0).Err(); err != nil {
				t.Fatal(err)
			}
			if _, err := m.InvalidateDependency(ctx, "good::1", "poison", "good::2"); err == nil {
				t.Fatal("invalidating a tag whose hash key is a string succeeded")
			}
			m.RetryPending(ctx)
			if n := m.Stats().PendingInvalidations; n != 1 {
				t.Errorf("%d tags pending after a retry, want 1 (the poison tag alone)", n)
			}
			// The good tags work again: a fill depending on one is stored.
			if err := m.Set(ctx, "k", 1, 0, "good::1"); err != nil {
				t.Fatal(err)
			}
			if ok, _ := m.Exists(ctx, "k"); !ok {
				t.Error("a fill of a delivered tag was still skipped")
			}
		})
	}
}
