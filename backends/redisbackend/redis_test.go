package redisbackend

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/backends/backendtest"
)

func TestConformance(t *testing.T) {
	for _, tg := range targets(t) {
		t.Run(tg.name, func(t *testing.T) {
			h := backendtest.Harness{
				New: func(t *testing.T) backends.Backend {
					// A small chunk so that BigTag drains in HSCAN steps.
					b := newBackend(t, tg, WithChunkSize(300))
					if tg.mini != nil {
						return b
					}
					return &tidyBackend{Backend: b, nss: map[string]bool{}}
				},
				MaxFillAge: DefaultMaxFillAge,
			}
			if tg.advance != nil {
				h.Advance = func(t *testing.T, d time.Duration) { tg.advance(d) }
			}
			backendtest.Run(t, h)
		})
	}
}

// warm makes b learn the server and load its scripts, and dials a
// connection, so that round trips counted next are the operations' own.
// (go-redis runs pipelines on a connection of their own: the first plain
// command after them dials.)
func warm(tb testing.TB, b *Backend) {
	tb.Helper()
	if _, err := b.connected(context.Background()); err != nil {
		tb.Fatal(err)
	}
	if err := b.c.Ping(context.Background()).Err(); err != nil {
		tb.Fatal(err)
	}
}

func mustEpoch(tb testing.TB, b *Backend) backends.Epoch {
	tb.Helper()
	ep, err := b.Epoch(context.Background())
	if err != nil {
		tb.Fatalf("Epoch: %v", err)
	}
	return ep
}

// fill stores value under key and deps with a Since read now.
func fill(tb testing.TB, b *Backend, ns, key, value string, ttl time.Duration, deps ...string) {
	tb.Helper()
	since := mustEpoch(tb, b)
	err := b.Fill(context.Background(), ns, backends.Fill{
		Key: key, Entry: backends.Entry{Value: []byte(value), Deps: deps}, TTL: ttl, Since: since,
	})
	if err != nil {
		tb.Fatalf("Fill(%q, %q): %v", ns, key, err)
	}
}

// populate fills n entries "k<i>" registered under tags, pipelining the
// fill script 1000 at a time.
func populate(tb testing.TB, b *Backend, ns string, n int, tags ...string) {
	tb.Helper()
	ctx := context.Background()
	st, err := b.connected(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	since := mustEpoch(tb, b)
	tagKeys := make([]string, len(tags))
	for i, t := range tags {
		tagKeys[i] = tagKey(ns, t)
	}
	env := backends.EncodeEntry(backends.Entry{Value: []byte("value"), Deps: tags, Since: since})
	for start := 0; start < n; start += 1000 {
		pipe := b.c.Pipeline()
		var cmds []*redis.Cmd
		for i := start; i < min(n, start+1000); i++ {
			keys := append([]string{entryKey(ns, fmt.Sprint("k", i)), b.cfg.epochKey, tagIndexKey(ns), b.cfg.prunedKey}, tagKeys...)
			cmds = append(cmds, st.scripts[scriptFill].EvalSha(ctx, pipe, keys, since.Era, since.N, newFillID(), env, 0, 0, 0, 0, 0, 0, newEra()))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			tb.Fatalf("populate: %v", err)
		}
		for _, c := range cmds {
			if v, _ := c.Slice(); len(v) == 0 || v[0] != int64(0) {
				tb.Fatalf("populate: fill refused: %v", v)
			}
		}
	}
}

func TestRoundTrips(t *testing.T) {
	for _, tg := range targets(t) {
		t.Run(tg.name, func(t *testing.T) {
			var cnt counter
			b := newBackendHooked(t, tg, []redis.Hook{&cnt})
			ns := randomName(t, "rt")
			clearAtEnd(t, b, ns)
			ctx := t.Context()
			warm(t, b)
			mustEpoch(t, b)
			cnt.reset()
			want := func(what string, n int64) {
				t.Helper()
				if got, sent := cnt.reset(); got != n {
					t.Errorf("%s: %d round trips %q, want %d", what, got, sent, n)
				}
			}

			l, err := b.Lookup(ctx, ns, "one")
			if err != nil || l.Found {
				t.Fatalf("Lookup: %+v, %v; want a miss", l, err)
			}
			want("Lookup miss", 1)
			err = b.Fill(ctx, ns, backends.Fill{Key: "one", Entry: backends.Entry{Value: []byte("1"), Deps: []string{"d0"}}, Since: l.Epoch})
			if err != nil {
				t.Fatal(err)
			}
			want("Fill with 1 dep", 1)
			deps := make([]string, 10)
			for i := range deps {
				deps[i] = fmt.Sprint("d", i)
			}
			err = b.Fill(ctx, ns, backends.Fill{Key: "ten", Entry: backends.Entry{Value: []byte("10"), Deps: deps}, TTL: time.Hour, Since: l.Epoch})
			if err != nil {
				t.Fatal(err)
			}
			want("Fill with 10 deps", 1)
			err = b.Fill(ctx, ns, backends.Fill{Key: "set", Entry: backends.Entry{Value: []byte("s"), Deps: deps}, Current: true})
			if err != nil {
				t.Fatal(err)
			}
			want("Fill at the current epoch with 10 deps (Manager.Set)", 1)
			if l, err := b.Lookup(ctx, ns, "one"); err != nil || !l.Found {
				t.Fatalf("Lookup: %+v, %v; want a hit", l, err)
			}
			want("Lookup hit", 1)
			if d, err := b.TTL(ctx, ns, "ten"); err != nil || d <= 0 {
				t.Fatalf("TTL = %v, %v", d, err)
			}
			want("TTL", 1)
			if n, err := b.Invalidate(ctx, ns, "d0"); err != nil || n != 3 {
				t.Fatalf("Invalidate = %d, %v; want 3", n, err)
			}
			want("Invalidate of a small tag", 1)
			fill(t, b, ns, "x", "x", 0, "d1")
			cnt.reset()
			if n, err := b.Delete(ctx, ns, "x", "y"); err != nil || n != 1 {
				t.Fatalf("Delete = %d, %v; want 1", n, err)
			}
			want("Delete", 1)
		})
	}
}

func TestCorruptEntry(t *testing.T) {
	for _, tg := range targets(t) {
		t.Run(tg.name, func(t *testing.T) {
			b := newBackend(t, tg)
			ns := randomName(t, "corrupt")
			clearAtEnd(t, b, ns)
			ctx := t.Context()
			valid := backends.EncodeEntry(backends.Entry{Value: []byte("v"), Deps: []string{"a", "b"}})
			for _, bad := range []string{"not an envelope", "", string(valid[:6]), "dc\x09rest"} {
				key := entryKey(ns, "k")
				if err := b.c.Set(ctx, key, bad, 0).Err(); err != nil {
					t.Fatal(err)
				}
				l, err := b.Lookup(ctx, ns, "k")
				if err != nil {
					t.Fatalf("Lookup of %q: %v", bad, err)
				}
				if bad == "" {
					// The lookup's MGET reads an empty string as no
					// value (single.lookup): a plain miss, which the
					// next fill overwrites.
					if l.Found || l.Epoch.Era == "" {
						t.Errorf("Lookup of %q = %+v, want a miss with an epoch", bad, l)
					}
					continue
				}
				if l.Found || !l.Corrupt || l.Epoch.Era == "" {
					t.Errorf("Lookup of %q = %+v, want a corrupt miss with an epoch", bad, l)
				}
				if n := b.c.Exists(ctx, key).Val(); n != 0 {
					t.Errorf("corrupt bytes %q not deleted", bad)
				}
			}
			fill(t, b, ns, "k", "good", 0, "t")
			if l, err := b.Lookup(ctx, ns, "k"); err != nil || !l.Found || l.Corrupt {
				t.Errorf("Lookup after a refill = %+v, %v; want a clean hit", l, err)
			}
		})
	}
}

func TestEnvOptions(t *testing.T) {
	vars := []string{"REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD", "REDIS_DB"}
	for _, c := range []struct {
		name    string
		env     map[string]string
		addr    string
		pass    string
		db      int
		wantErr string // substring of the error
		secret  string // must not appear in the error
	}{
		{name: "defaults", addr: "127.0.0.1:6379"},
		{name: "url", env: map[string]string{"REDIS_URL": "redis://:s3cret@example.com:7000/4", "REDIS_HOST": "ignored"},
			addr: "example.com:7000", pass: "s3cret", db: 4},
		{name: "parts", env: map[string]string{"REDIS_HOST": "cache.local", "REDIS_PORT": "6380", "REDIS_PASSWORD": "pw", "REDIS_DB": "2"},
			addr: "cache.local:6380", pass: "pw", db: 2},
		{name: "ipv6", env: map[string]string{"REDIS_HOST": "::1"}, addr: "[::1]:6379"},
		{name: "port only", env: map[string]string{"REDIS_PORT": "7001"}, addr: "127.0.0.1:7001"},
		{name: "bad port", env: map[string]string{"REDIS_PORT": "abc"}, wantErr: `redisbackend: REDIS_PORT="abc": `},
		{name: "port out of range", env: map[string]string{"REDIS_PORT": "70000"}, wantErr: `REDIS_PORT="70000"`},
		{name: "port 0", env: map[string]string{"REDIS_PORT": "0"}, wantErr: `REDIS_PORT="0"`},
		{name: "bad db", env: map[string]string{"REDIS_DB": "x"}, wantErr: `redisbackend: REDIS_DB="x": `},
		{name: "negative db", env: map[string]string{"REDIS_DB": "-1"}, wantErr: `REDIS_DB="-1"`},
		{name: "bad scheme", env: map[string]string{"REDIS_URL": "http://example.com"}, wantErr: "redisbackend: REDIS_URL: "},
		{name: "bad url", env: map[string]string{"REDIS_URL": "redis://:s3cret@host:port/"}, wantErr: "redisbackend: REDIS_URL: ", secret: "s3cret"},
		{name: "bad url db", env: map[string]string{"REDIS_URL": "redis://:s3cret@host/x"}, wantErr: "redisbackend: REDIS_URL: ", secret: "s3cret"},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, v := range vars {
				t.Setenv(v, c.env[v])
			}
			opt, err := envOptions(os.LookupEnv)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("envOptions: %v, want an error containing %q", err, c.wantErr)
				}
				if c.secret != "" && strings.Contains(err.Error(), c.secret) {
					t.Errorf("error %q shows the password", err)
				}
				if _, err := FromEnv(); err == nil {
					t.Errorf("FromEnv: no error")
				}
				return
			}
			if err != nil {
				t.Fatalf("envOptions: %v", err)
			}
			if opt.Addr != c.addr || opt.Password != c.pass || opt.DB != c.db {
				t.Errorf("envOptions = addr %q password %q db %d, want %q %q %d", opt.Addr, opt.Password, opt.DB, c.addr, c.pass, c.db)
			}
		})
	}
}

func TestFromEnv(t *testing.T) {
	mr := miniredis.RunT(t)
	for _, v := range []string{"REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD", "REDIS_DB"} {
		t.Setenv(v, "")
	}
	host, port, _ := net.SplitHostPort(mr.Addr())
	t.Setenv("REDIS_HOST", host)
	t.Setenv("REDIS_PORT", port)
	t.Setenv("REDIS_DB", "3")

	// Nothing is dialled until first use: a server that is down is not an
	// error yet, and a failure to reach it is retried at the next call.
	mr.Close()
	b, err := FromEnv()
	if err != nil {
		t.Fatalf("FromEnv: %v", err)
	}
	b.log = testLogger(t)
	ctx := t.Context()
	down, cancel := context.WithTimeout(ctx, 100*time.Millisecond) // no dial retries for long
	defer cancel()
	if _, err := b.Lookup(down, "ns", "k"); err == nil {
		t.Fatal("Lookup with the server down: no error")
	}
	if err := mr.Restart(); err != nil {
		t.Fatal(err)
	}
	l, err := b.Lookup(ctx, "ns", "k")
	if err != nil || l.Found || l.Epoch.Era == "" {
		t.Fatalf("Lookup after the server came up = %+v, %v; want a miss", l, err)
	}
	mr.Select(3)
	if !mr.Exists(DefaultEpochKey) {
		t.Errorf("epoch not created in REDIS_DB 3")
	}

	// The Backend owns its client.
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := b.c.Ping(context.Background()).Err(); !errors.Is(err, redis.ErrClosed) {
		t.Errorf("Ping after Close: %v, want redis.ErrClosed", err)
	}
	if _, err := b.Lookup(ctx, "ns", "k"); !errors.Is(err, backends.ErrClosed) {
		t.Errorf("Lookup after Close: %v, want ErrClosed", err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestCloseLeavesClientOpen(t *testing.T) {
	tg := miniTarget(t)
	c := tg.client(t)
	b := New(c, WithLogger(testLogger(t)))
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Ping(t.Context()).Err(); err != nil {
		t.Errorf("Ping after Backend.Close: %v", err)
	}
	if _, err := b.Invalidate(t.Context(), "ns", "t"); !errors.Is(err, backends.ErrClosed) {
		t.Errorf("Invalidate after Close: %v, want ErrClosed", err)
	}
}

func TestClearGlob(t *testing.T) {
	for _, tg := range targets(t) {
		t.Run(tg.name, func(t *testing.T) {
			b := newBackend(t, tg)
			base := randomName(t, "glob")
			ctx := t.Context()
			globs := []string{base + "c*", base + "c[x]", base + "c?", base + `c\`, base + "c[", base + "c]"}
			plain := []string{base + "cx", base + "c2", base + "c", base + "cache", base + "cache2", base + "c:x"}
			for _, ns := range append(globs, plain...) {
				fill(t, b, ns, "k", ns, 0, "t")
			}
			for _, ns := range globs {
				if n, err := b.Clear(ctx, ns); err != nil || n != 1 {
					t.Errorf("Clear(%q) = %d, %v; want 1", ns, n, err)
				}
			}
			for _, ns := range plain {
				if l, err := b.Lookup(ctx, ns, "k"); err != nil || string(l.Entry.Value) != ns {
					t.Errorf("Lookup(%q) after clearing the globs = %+v, %v", ns, l, err)
				}
			}
			if n, err := b.Clear(ctx, base+"cache"); err != nil || n != 1 {
				t.Errorf("Clear(cache) = %d, %v; want 1", n, err)
			}
			if l, _ := b.Lookup(ctx, base+"cache2", "k"); !l.Found {
				t.Errorf("Clear(cache) reached cache2")
			}
			for _, ns := range append(globs, plain...) {
				clearAtEnd(t, b, ns)
			}
		})
	}
}

// keysOf returns the keys of the namespace, of kind "e" or "t".
func keysOf(tb testing.TB, b *Backend, ns, kind string) []string {
	tb.Helper()
	var out []string
	err := scanPages(context.Background(), b.c, globEscape(ns)+":"+kind+`:\{*`, b.cfg.chunkSize, func(keys []string) error {
		out = append(out, keys...)
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

func TestBigTagChunked(t *testing.T) {
	const chunk, n = 100, 1050
	for _, tg := range targets(t) {
		t.Run(tg.name, func(t *testing.T) {
			var cnt counter
			b := newBackendHooked(t, tg, []redis.Hook{&cnt}, WithChunkSize(chunk))
			ns := randomName(t, "big")
			clearAtEnd(t, b, ns)
			ctx := t.Context()
			before := mustEpoch(t, b)
			populate(t, b, ns, n, "big")
			for i := range 5 {
				fill(t, b, ns, fmt.Sprint("small", i), "v", 0, "small")
			}
			fill(t, b, ns, "bystander", "v", 0, "other")
			cnt.reset()
			removed, err := b.Invalidate(ctx, ns, "big", "small")
			if err != nil || removed != n+5 {
				t.Fatalf("Invalidate = %d, %v; want %d", removed, err, n+5)
			}
			trips, sent := cnt.reset()
			t.Logf("%d round trips: %q", trips, sent)
			if trips < 2 {
				t.Errorf("%d round trips: the big tag was not drained in steps", trips)
			}
			if tg.mini == nil && trips < n/chunk {
				// A real Redis's HSCAN returns about COUNT fields per step.
				t.Errorf("%d round trips for %d registrations in chunks of %d", trips, n, chunk)
			}
			if left := keysOf(t, b, ns, "e"); len(left) != 1 {
				t.Errorf("entries left: %q, want only the bystander", left)
			}
			for _, tag := range []string{"big", "small"} {
				if f := b.c.HKeys(ctx, tagKey(ns, tag)).Val(); len(f) != 1 || f[0] != "~v" {
					t.Errorf("tag %q holds %d fields after its invalidation, want the stamp only", tag, len(f))
				}
			}
			err = b.Fill(ctx, ns, backends.Fill{Key: "late", Entry: backends.Entry{Value: []byte("v"), Deps: []string{"big"}}, Since: before})
			if !errors.Is(err, backends.ErrStale) {
				t.Errorf("Fill from before the invalidation: %v, want ErrStale", err)
			}
			if n, err := b.Invalidate(ctx, ns, "big", "small"); err != nil || n != 0 {
				t.Errorf("second Invalidate = %d, %v; want 0", n, err)
			}
		})
	}
}

// hookFunc is a go-redis hook that calls before ahead of every command sent
// on its own.
type hookFunc struct{ before func(redis.Cmder) }

func (h hookFunc) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h hookFunc) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.before(cmd)
		return next(ctx, cmd)
	}
}
func (h hookFunc) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestFillRacesChunkedInvalidation runs, between two drain steps of a big
// tag's invalidation (after the stamp, before every entry is gone): a fill
// that started before the invalidation (refused), a fill that started
// after it (stored), and a second invalidation of the same tag, which must
// drain everything itself before it returns, although the first is
// draining too.
func TestFillRacesChunkedInvalidation(t *testing.T) {
	const chunk, n = 100, 1050
	for _, tg := range targets(t) {
		t.Run(tg.name, func(t *testing.T) {
			ns := randomName(t, "race")
			ctx := t.Context()
			other := newBackend(t, tg, WithChunkSize(chunk))
			clearAtEnd(t, other, ns)
			var b *Backend
			var e0 backends.Epoch
			steps, fireAt := 0, 2 // between the first and second step
			if tg.mini != nil {
				fireAt = 1 // miniredis's HSCAN returns every field at once
			}
			fired := false
			var removedByOther int
			hook := hookFunc{before: func(cmd redis.Cmder) {
				st := b.srv.Load()
				if st == nil || cmd.Name() != "evalsha" ||
					cmd.Args()[1] != st.scripts[scriptDrainStep].Hash() && cmd.Args()[1] != st.scripts[scriptDrainFrozenStep].Hash() {
					return
				}
				if steps++; steps != fireAt {
					return
				}
				fired = true
				err := other.Fill(ctx, ns, backends.Fill{Key: "stale", Entry: backends.Entry{Value: []byte("old"), Deps: []string{"big"}}, Since: e0})
				if !errors.Is(err, backends.ErrStale) {
					t.Errorf("fill from before the invalidation, during its drain: %v, want ErrStale", err)
				}
				fill(t, other, ns, "fresh", "new", 0, "big")
				var err2 error
				removedByOther, err2 = other.Invalidate(ctx, ns, "big")
				if err2 != nil {
					t.Errorf("concurrent Invalidate: %v", err2)
				}
				if left := keysOf(t, other, ns, "e"); len(left) != 0 {
					t.Errorf("concurrent Invalidate returned with %d entries left", len(left))
				}
			}}
			b = newBackendHooked(t, tg, []redis.Hook{hook}, WithChunkSize(chunk))
			e0 = mustEpoch(t, b)
			populate(t, b, ns, n, "big")
			removed, err := b.Invalidate(ctx, ns, "big")
			if err != nil {
				t.Fatal(err)
			}
			if !fired {
				t.Fatalf("the race did not run: %d drain steps", steps)
			}
			t.Logf("%d drain steps; removed %d, the concurrent invalidation %d", steps, removed, removedByOther)
			if removed+removedByOther != n+1 {
				t.Errorf("removed %d + %d, want %d in all", removed, removedByOther, n+1)
			}
			if left := keysOf(t, b, ns, "e"); len(left) != 0 {
				t.Errorf("entries left: %q", left)
			}
		})
	}
}

// TestAbandonedFrozenHashDrained: an invalidation of a big tag freezes
// its registrations and dies before its drain (its context ends at the
// first step); entries registered since make the tag hash big again. The
// next invalidation must drain both the tag hash (in steps, as a frozen
// hash is there already) and the abandoned frozen hash before it returns,
// and leave neither registrations nor the frozen hash behind.
func TestAbandonedFrozenHashDrained(t *testing.T) {
	const chunk, n, late = 10, 55, 15
	for _, tg := range targets(t) {
		t.Run(tg.name, func(t *testing.T) {
			ns := randomName(t, "frozen")
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			var b *Backend
			steps := 0
			hook := hookFunc{before: func(cmd redis.Cmder) {
				if st := b.srv.Load(); st != nil && cmd.Name() == "evalsha" && cmd.Args()[1] == st.scripts[scriptDrainFrozenStep].Hash() {
					if steps++; steps == 1 {
						cancel()
					}
				}
			}}
			b = newBackendHooked(t, tg, []redis.Hook{hook}, WithChunkSize(chunk))
			clearAtEnd(t, b, ns)
			populate(t, b, ns, n, "big")
			if _, err := b.Invalidate(ctx, ns, "big"); !errors.Is(err, context.Canceled) {
				t.Fatalf("Invalidate whose context ends at its first drain step = %v, want context.Canceled", err)
			}
			frozen := frozenKey(tagKey(ns, "big"))
			if got := b.c.HLen(t.Context(), frozen).Val(); got != n+1 {
				t.Fatalf("frozen hash holds %d fields, want the %d registrations and the stamp", got, n)
			}
			if left := keysOf(t, b, ns, "e"); len(left) != n {
				t.Fatalf("%d entries before the second invalidation, want %d", len(left), n)
			}
			for i := range late {
				fill(t, b, ns, fmt.Sprint("late", i), "v", 0, "big")
			}
			removed, err := b.Invalidate(t.Context(), ns, "big")
			if err != nil || removed != n+late {
				t.Fatalf("second Invalidate = %d, %v; want %d", removed, err, n+late)
			}
			if left := keysOf(t, b, ns, "e"); len(left) != 0 {
				t.Errorf("entries left: %q", left)
			}
			if f := b.c.HKeys(t.Context(), tagKey(ns, "big")).Val(); len(f) != 1 || f[0] != "~v" {
				t.Errorf("tag hash holds %q after the invalidation, want the stamp only", f)
			}
			if b.c.Exists(t.Context(), frozen).Val() != 0 {
				t.Errorf("the frozen hash is still there after a complete drain")
			}
		})
	}
}

// TestFrozenHashOfALaterInvalidationStays: while an invalidation A drains
// its frozen hash in steps, a second invalidation B drains that frozen hash
// to its end and removes it, fills make the tag hash big again, and a
// third invalidation C freezes it under the same key and dies before its
// drain. A's next steps iterate C's frozen hash with A's cursor: A must
// not remove it at its end (it holds another stamp), or entries would be
// left that no registration names. Real Redis only: miniredis's HSCAN
// returns every field in one step.
func TestFrozenHashOfALaterInvalidationStays(t *testing.T) {
	const chunk, n, late = 50, 1000, 1000 // above hash-max-listpack-entries (512): HSCAN steps by COUNT
	for _, tg := range targets(t) {
		if tg.mini != nil {
			continue
		}
		t.Run(tg.name, func(t *testing.T) {
			ns := randomName(t, "refrozen")
			ctx := t.Context()
			other := newBackend(t, tg, WithChunkSize(chunk))
			clearAtEnd(t, other, ns)
			var a, c *Backend
			cctx, cancel := context.WithCancel(ctx)
			defer cancel()
			isFrozenStep := func(b *Backend, cmd redis.Cmder) bool {
				st := b.srv.Load()
				return st != nil && cmd.Name() == "evalsha" && cmd.Args()[1] == st.scripts[scriptDrainFrozenStep].Hash()
			}
			c = newBackendHooked(t, tg, []redis.Hook{hookFunc{before: func(cmd redis.Cmder) {
				if isFrozenStep(c, cmd) {
					cancel() // C dies before its first drain step
				}
			}}}, WithChunkSize(chunk))
			steps := 0
			a = newBackendHooked(t, tg, []redis.Hook{hookFunc{before: func(cmd redis.Cmder) {
				if !isFrozenStep(a, cmd) {
					return
				}
				if steps++; steps != 2 {
					return
				}
				if _, err := other.Invalidate(ctx, ns, "big"); err != nil {
					t.Errorf("B: %v", err)
				}
				if got := other.c.Exists(ctx, frozenKey(tagKey(ns, "big"))).Val(); got != 0 {
					t.Errorf("B left the frozen hash it drained to its end")
				}
				for i := range late {
					fill(t, other, ns, fmt.Sprint("late", i), "v", 0, "big")
				}
				if _, err := c.Invalidate(cctx, ns, "big"); !errors.Is(err, context.Canceled) {
					t.Errorf("C = %v, want context.Canceled", err)
				}
			}}}, WithChunkSize(chunk))
			populate(t, a, ns, n, "big")
			if _, err := a.Invalidate(ctx, ns, "big"); err != nil {
				t.Fatal(err)
			}
			if steps < 3 {
				t.Fatalf("A ran %d drain steps, want at least 3", steps)
			}
			frozen := frozenKey(tagKey(ns, "big"))
			for _, ek := range keysOf(t, a, ns, "e") {
				if !a.c.HExists(ctx, frozen, ek).Val() && !a.c.HExists(ctx, tagKey(ns, "big"), ek).Val() {
					t.Errorf("entry %q is registered nowhere: no invalidation can find it", ek)
				}
			}
			if removed, err := other.Invalidate(ctx, ns, "big"); err != nil {
				t.Fatal(err)
			} else if left := keysOf(t, a, ns, "e"); len(left) != 0 {
				t.Errorf("after a last invalidation (removed %d), entries left: %d", removed, len(left))
			}
		})
	}
}

func TestVolatilePolicyCapsNoExpiry(t *testing.T) {
	tg := miniTarget(t)
	const maxTTL = 2 * time.Hour
	b := newBackend(t, tg, WithAssumedPolicy("volatile-lru"), WithMaxTTL(maxTTL))
	ns := "vol"
	fill(t, b, ns, "zero", "v", 0, "t")
	fill(t, b, ns, "never", "v", backends.NoExpiry, "t")
	fill(t, b, ns, "long", "v", 3*time.Hour, "t")
	if p := b.Policy(); p != "volatile-lru" {
		t.Errorf("Policy() = %q", p)
	}
	for key, want := range map[string]time.Duration{"zero": maxTTL, "never": maxTTL, "long": 3 * time.Hour} {
		if d, err := b.TTL(t.Context(), ns, key); err != nil || d != want {
			t.Errorf("TTL(%q) = %v, %v; want %v", key, d, err, want)
		}
	}
	// Tag hashes and the epoch have no TTL: never evicted under volatile-*.
	for _, k := range []string{tagKey(ns, "t"), DefaultEpochKey} {
		if d := tg.mini.TTL(k); d != 0 {
			t.Errorf("%s has a TTL of %v", k, d)
		}
	}

	// Under noeviction an entry without expiry keeps none.
	b2 := newBackend(t, tg)
	fill(t, b2, ns, "zero", "v", 0, "t")
	if d, err := b2.TTL(t.Context(), ns, "zero"); err != nil || d != backends.NoExpiry {
		t.Errorf("TTL under noeviction = %v, %v; want NoExpiry", d, err)
	}
}

func TestUnsafePolicy(t *testing.T) {
	tg := miniTarget(t)
	b := newBackend(t, tg, WithAssumedPolicy("allkeys-lru"))
	ctx := t.Context()
	ns := "unsafe"
	if _, err := b.Lookup(ctx, ns, "k"); !errors.Is(err, ErrUnsafePolicy) {
		t.Errorf("Lookup: %v, want ErrUnsafePolicy", err)
	}
	ep := mustEpoch(t, b)
	err := b.Fill(ctx, ns, backends.Fill{Key: "k", Entry: backends.Entry{Value: []byte("v")}, Since: ep})
	if !errors.Is(err, ErrUnsafePolicy) {
		t.Errorf("Fill: %v, want ErrUnsafePolicy", err)
	}
	// Removing data still works.
	if _, err := b.Invalidate(ctx, ns, "t"); err != nil {
		t.Errorf("Invalidate: %v", err)
	}
	if _, err := b.Delete(ctx, ns, "k"); err != nil {
		t.Errorf("Delete: %v", err)
	}
	if _, err := b.Clear(ctx, ns); err != nil {
		t.Errorf("Clear: %v", err)
	}
	if _, err := b.TTL(ctx, ns, "k"); !errors.Is(err, backends.ErrNotFound) {
		t.Errorf("TTL: %v, want ErrNotFound", err)
	}
	b2 := newBackend(t, tg, WithAssumedPolicy("something-new"))
	if _, err := b2.Lookup(ctx, ns, "k"); !errors.Is(err, ErrUnsafePolicy) {
		t.Errorf("Lookup under an unknown policy: %v, want ErrUnsafePolicy", err)
	}
}

func TestServerState(t *testing.T) {
	for _, tg := range targets(t) {
		t.Run(tg.name, func(t *testing.T) {
			b := newBackend(t, tg)
			st, err := b.connected(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if tg.mini != nil {
				if st.policy != DefaultAssumedPolicy || st.scripts != plainScripts || st.replicas != 0 {
					t.Errorf("miniredis: policy %q, shebang %v, replicas %d", st.policy, st.scripts == shebangScripts, st.replicas)
				}
				return
			}
			cfg := b.c.ConfigGet(t.Context(), "maxmemory-policy").Val()["maxmemory-policy"]
			version := infoField(b.c.Info(t.Context(), "server").Val(), "redis_version")
			t.Logf("Redis %s, policy %s, replicas %d, shebang %v", version, st.policy, st.replicas, st.scripts == shebangScripts)
			if st.policy != cfg {
				t.Errorf("policy %q, server says %q", st.policy, cfg)
			}
			if strings.HasPrefix(version, "7.") && st.scripts != shebangScripts {
				t.Errorf("Redis %s runs the plain scripts, want allow-oom", version)
			}
		})
	}
}

func TestEpochLost(t *testing.T) {
	for _, tg := range targets(t) {
		t.Run(tg.name, func(t *testing.T) {
			var cnt counter
			key := randomName(t, "test-epoch:")
			b := newBackendHooked(t, tg, []redis.Hook{&cnt}, WithEpochKey(key))
			ns := randomName(t, "lost")
			// After clearAtEnd, whose Clear advances the epoch (and may prune).
			t.Cleanup(func() { b.c.Del(context.Background(), key, prunedKeyOf(key)) })
			clearAtEnd(t, b, ns)
			ctx := t.Context()
			warm(t, b)
			cnt.reset()

			// A miss that finds no epoch creates one: one more round trip.
			l, err := b.Lookup(ctx, ns, "k")
			if err != nil || l.Epoch.Era == "" || l.Epoch.N != 0 {
				t.Fatalf("first Lookup = %+v, %v; want a new era at 0", l, err)
			}
			if n, sent := cnt.reset(); n != 2 {
				t.Errorf("Lookup creating the epoch: %d round trips %q, want 2", n, sent)
			}
			if ep := mustEpoch(t, b); ep != l.Epoch {
				t.Errorf("Epoch() = %v, want %v", ep, l.Epoch)
			}

			// Lost epoch: fills from the old era are refused, a new era starts.
			b.c.Del(ctx, key)
			err = b.Fill(ctx, ns, backends.Fill{Key: "k", Entry: backends.Entry{Value: []byte("v"), Deps: []string{"t"}}, Since: l.Epoch})
			if !errors.Is(err, backends.ErrStale) {
				t.Errorf("Fill after the epoch was lost: %v, want ErrStale", err)
			}
			l2, err := b.Lookup(ctx, ns, "k")
			if err != nil || l2.Epoch.Era == l.Epoch.Era || l2.Found {
				t.Fatalf("Lookup after the loss = %+v, %v; want a miss in a new era", l2, err)
			}
			err = b.Fill(ctx, ns, backends.Fill{Key: "k", Entry: backends.Entry{Value: []byte("v"), Deps: []string{"t"}}, Since: l.Epoch})
			if !errors.Is(err, backends.ErrStale) {
				t.Errorf("Fill of the old era in the new one: %v, want ErrStale", err)
			}

			// An invalidation that finds no epoch starts a new era too.
			b.c.Del(ctx, key)
			if _, err := b.Invalidate(ctx, ns, "t"); err != nil {
				t.Fatal(err)
			}
			if ep := mustEpoch(t, b); ep.Era == l2.Epoch.Era || ep.N != 1 {
				t.Errorf("epoch after an invalidation with none = %v, want a new era at 1", ep)
			}

			// An unreadable epoch is replaced.
			b.c.Set(ctx, key, "junk", 0)
			if l, err := b.Lookup(ctx, ns, "k"); err != nil || l.Epoch.Era == "" {
				t.Errorf("Lookup over a junk epoch = %+v, %v", l, err)
			}
			if v := b.c.Get(ctx, key).Val(); v == "junk" {
				t.Errorf("junk epoch left in place")
			}
		})
	}
}

func TestFillChecks(t *testing.T) {
	tg := miniTarget(t)
	b := newBackend(t, tg, WithMaxFillAge(time.Second))
	ctx := t.Context()
	ep := mustEpoch(t, b)
	base := backends.Fill{Key: "k", Entry: backends.Entry{Value: []byte("v"), Deps: []string{"t", "t", "u"}}, Since: ep}

	f := base
	f.Age = 2 * time.Second
	if err := b.Fill(ctx, "ns", f); !errors.Is(err, backends.ErrStale) {
		t.Errorf("Fill with Age beyond WithMaxFillAge: %v, want ErrStale", err)
	}
	f = base
	f.TTL = -5 * time.Second
	if err := b.Fill(ctx, "ns", f); err == nil || errors.Is(err, backends.ErrStale) {
		t.Errorf("Fill with a negative TTL: %v, want an error", err)
	}
	// The stored Since is the fill's, whatever the entry said; repeated
	// dependencies are registered once.
	f = base
	f.Entry.Since = backends.Epoch{Era: "elsewhere", N: 7}
	f.TTL = time.Microsecond // rounds up to a millisecond
	if err := b.Fill(ctx, "ns", f); err != nil {
		t.Fatal(err)
	}
	l, err := b.Lookup(ctx, "ns", "k")
	if err != nil || !l.Found || l.Entry.Since != ep {
		t.Errorf("Lookup = %+v, %v; want Since %v", l, err, ep)
	}
	if d, err := b.TTL(ctx, "ns", "k"); err != nil || d != time.Millisecond {
		t.Errorf("TTL = %v, %v; want 1ms", d, err)
	}
	if n, err := b.Invalidate(ctx, "ns", "t", "u", "t"); err != nil || n != 1 {
		t.Errorf("Invalidate = %d, %v; want 1", n, err)
	}
}

// TestPruning checks that fills remove registrations whose entries are
// gone, and that Prune and Clear drop old stamps from otherwise empty
// hashes while keeping recent ones.
func TestPruning(t *testing.T) {
	tg := miniTarget(t)
	b := newBackend(t, tg, WithMaxFillAge(time.Minute))
	ctx := t.Context()
	ns := "prune"
	for i := range 50 {
		fill(t, b, ns, fmt.Sprint("gone", i), "v", time.Second, "hot")
	}
	tg.advance(2 * time.Second) // the 50 entries expire
	for range 200 {
		fill(t, b, ns, "live", "v", 0, "hot")
	}
	if n := b.c.HLen(ctx, tagKey(ns, "hot")).Val(); n > 10 {
		t.Errorf("tag hash holds %d fields after 200 fills over 50 dead registrations, want them pruned", n)
	}

	if _, err := b.Invalidate(ctx, ns, "cold"); err != nil {
		t.Fatal(err)
	}
	fill(t, b, ns, "d", "v", time.Second, "dead")
	tg.advance(2 * time.Second)
	if err := b.Prune(ctx, ns); err != nil {
		t.Fatal(err)
	}
	if !tg.mini.Exists(tagKey(ns, "cold")) {
		t.Errorf("Prune dropped a recent stamp")
	}
	if tg.mini.Exists(tagKey(ns, "dead")) {
		t.Errorf("Prune left a hash whose only registration is dead")
	}
	tg.advance(2 * time.Minute)
	if n, err := b.Clear(ctx, ns); err != nil || n != 1 {
		t.Errorf("Clear = %d, %v; want 1", n, err)
	}
	// Clear stamps the namespace (a fill that began before it is refused):
	// that stamp, and the tag index that holds it, stay until it is older
	// than the prune age, like a tag's stamp.
	// The epoch and the pruned key (the newest stamp pruned) are one per
	// Redis, outside every namespace.
	want := []string{DefaultEpochKey, prunedKeyOf(DefaultEpochKey), clearKey(ns), tagIndexKey(ns)}
	slices.Sort(want)
	if keys := tg.mini.Keys(); !slices.Equal(keys, want) {
		t.Errorf("keys left after Clear of stamps older than MaxFillAge: %q, want %q", keys, want)
	}
	tg.advance(2*time.Minute + time.Second)
	if err := b.Prune(ctx, ns); err != nil {
		t.Fatal(err)
	}
	want = []string{DefaultEpochKey, prunedKeyOf(DefaultEpochKey)}
	slices.Sort(want)
	if keys := tg.mini.Keys(); !slices.Equal(keys, want) {
		t.Errorf("keys left after Prune of a Clear stamp older than the prune age: %q, want %q", keys, want)
	}
}

func TestClusterUnreachable(t *testing.T) {
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}, MaxRedirects: -1, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = c.Close() })
	b := New(c, WithLogger(testLogger(t)))
	if _, err := b.Lookup(t.Context(), "ns", "k"); err == nil {
		t.Errorf("Lookup on an unreachable cluster: no error")
	}
}

func TestKeySlot(t *testing.T) {
	// Values from the Redis Cluster specification and CLUSTER KEYSLOT.
	for key, want := range map[string]uint16{
		"123456789":    0x31C3 & 16383,
		"foo":          12182,
		"{user1000}.a": keySlot("user1000"),
		"a{}b":         keySlot("a{}b"),
		"ns:t:{users}": keySlot("users"),
		"ns:e:{}{x}":   keySlot("ns:e:{}{x}"),
		"ns:e:{a}{b}":  keySlot("a"),
		"ns:e:{a":      keySlot("ns:e:{a"),
	} {
		if got := keySlot(key); got != want {
			t.Errorf("keySlot(%q) = %d, want %d", key, got, want)
		}
	}
}
