package backendtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/depcache/go-depcache/backends"
)

// Harness describes the store under test.
type Harness struct {
	// New returns a fresh Backend. Backends may share a server: every case
	// works in namespaces of its own. The suite closes the Backend when the
	// case ends.
	New func(t *testing.T) backends.Backend

	// Advance moves the store's clock forward by d (an injected clock for
	// the memory store, FastForward for miniredis). Nil skips the cases
	// that need time to pass.
	Advance func(t *testing.T, d time.Duration)

	// MaxFillAge is the store's longest allowed fill: it refuses fills
	// whose Age is beyond it. Zero skips the MaxFillAge case.
	MaxFillAge time.Duration

	// BigTag is the number of entries the BigTag case registers under one
	// tag; 0 means 2000 with DEPCACHE_LONG (see Long), else 700, and
	// without DEPCACHE_LONG it is at most 700.
	BigTag int

	// MaxTTL is the TTL a store gives an entry filled without expiry, where
	// it caps it (the Redis store under a volatile-* policy): TTL must then
	// report a value in (0, MaxTTL]. Zero means TTL reports NoExpiry.
	MaxTTL time.Duration

	// StaleReads is the number of reads each reader of the NoStaleReads
	// case makes with DEPCACHE_LONG (see Long); 0 means 3000. A slow store
	// (miniredis, whose scripts cost a fresh Lua state each) may ask for
	// fewer. Without DEPCACHE_LONG each reader makes 400 (200 with -short).
	StaleReads int
}

// Run runs every case of the suite against h, each as a subtest.
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.New == nil {
		t.Fatal("backendtest: Harness.New is nil")
	}
	switch {
	case h.BigTag > 0 && Long():
	case h.BigTag > 0:
		h.BigTag = min(h.BigTag, 700)
	case Long():
		h.BigTag = 2000
	default:
		h.BigTag = 700
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.run(t, newEnv(t, h))
		})
	}
}

var cases = []struct {
	name string
	run  func(*testing.T, *env)
}{
	{"Miss", testMiss},
	{"FillThenHit", testFillThenHit},
	{"EmptyValue", testEmptyValue},
	{"NoDeps", testNoDeps},
	{"Refill", testRefill},
	{"TTL", testTTL},
	{"Expiry", testExpiry},
	{"Delete", testDelete},
	{"Invalidate", testInvalidate},
	{"StaleGuard", testStaleGuard},
	{"ForeignEra", testForeignEra},
	{"FillCurrent", testFillCurrent},
	{"MaxFillAge", testMaxFillAge},
	{"EpochGrows", testEpochGrows},
	{"NamespaceIsolation", testNamespaceIsolation},
	{"NamespaceGlob", testNamespaceGlob},
	{"NamespaceNesting", testNamespaceNesting},
	{"ForeignDeps", testForeignDeps},
	{"Clear", testClear},
	{"ClearRefusesOlderFill", testClearRefusesOlderFill},
	{"AwkwardNames", testAwkwardNames},
	{"BigTag", testBigTag},
	{"ManyDeps", testManyDeps},
	{"Concurrent", testConcurrent},
	{"NoStaleReads", testNoStaleReads},
	{"NaiveFill", testNaiveFill},
	{"Sets", testSets},
}

// env is one case's store, namespace and context.
type env struct {
	t    *testing.T
	h    Harness
	b    backends.Backend
	ns   string
	ctx  context.Context
	used *namespaces
}

// namespaces records the namespaces a case used, to clear them at its end.
type namespaces struct {
	mu    sync.Mutex
	names map[string]bool
}

func newEnv(t *testing.T, h Harness) *env {
	b := h.New(t)
	if b == nil {
		t.Fatal("backendtest: Harness.New returned nil")
	}
	used := &namespaces{names: map[string]bool{}}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	// Runs before Close: leave nothing behind on a shared server. The
	// test's context is canceled by now.
	t.Cleanup(func() {
		ctx := context.WithoutCancel(t.Context())
		used.mu.Lock()
		defer used.mu.Unlock()
		for ns := range used.names {
			if _, err := b.Clear(ctx, ns); err != nil {
				t.Errorf("Clear(%q) at the end of the case: %v", ns, err)
			}
		}
	})
	e := &env{t: t, h: h, b: b, ctx: t.Context(), used: used}
	return e.in(randomNS(t))
}

// randomNS returns "bt" followed by 16 random hex digits.
func randomNS(t testing.TB) string {
	var p [8]byte
	if _, err := rand.Read(p[:]); err != nil {
		t.Fatalf("random namespace: %v", err)
	}
	return "bt" + hex.EncodeToString(p[:])
}

// in returns a copy of e working in namespace ns.
func (e *env) in(ns string) *env {
	e.used.mu.Lock()
	e.used.names[ns] = true
	e.used.mu.Unlock()
	c := *e
	c.ns = ns
	return &c
}

func (e *env) lookup(key string) backends.Lookup {
	e.t.Helper()
	l, err := e.b.Lookup(e.ctx, e.ns, key)
	if err != nil {
		e.t.Fatalf("Lookup(%q, %q): %v", e.ns, short(key), err)
	}
	return l
}

func (e *env) epoch() backends.Epoch {
	e.t.Helper()
	ep, err := e.b.Epoch(e.ctx)
	if err != nil {
		e.t.Fatalf("Epoch: %v", err)
	}
	return ep
}

// tryFill fills key with value under deps, with Since as given and no TTL.
func (e *env) tryFill(key string, value []byte, since backends.Epoch, deps ...string) error {
	return e.b.Fill(e.ctx, e.ns, backends.Fill{
		Key:   key,
		Entry: backends.Entry{Value: value, Deps: deps, Since: since},
		Since: since,
	})
}

// fill stores value under key with a Since read from a miss, as a caller
// would, and fails the test if the store refuses.
func (e *env) fill(key, value string, deps ...string) backends.Epoch {
	e.t.Helper()
	return e.fillTTL(key, value, 0, deps...)
}

func (e *env) fillTTL(key, value string, ttl time.Duration, deps ...string) backends.Epoch {
	e.t.Helper()
	since := e.epoch()
	err := e.b.Fill(e.ctx, e.ns, backends.Fill{
		Key:   key,
		Entry: backends.Entry{Value: []byte(value), Deps: deps, Since: since},
		TTL:   ttl,
		Since: since,
	})
	if err != nil {
		e.t.Fatalf("Fill(%q, %q, deps %q): %v", e.ns, short(key), shortAll(deps), err)
	}
	return since
}

func (e *env) invalidate(tags ...string) int {
	e.t.Helper()
	n, err := e.b.Invalidate(e.ctx, e.ns, tags...)
	if err != nil {
		e.t.Fatalf("Invalidate(%q, %q): %v", e.ns, shortAll(tags), err)
	}
	return n
}

func (e *env) wantInvalidate(want int, tags ...string) {
	e.t.Helper()
	if n := e.invalidate(tags...); n != want {
		e.t.Errorf("Invalidate(%q, %q) = %d, want %d", e.ns, shortAll(tags), n, want)
	}
}

func (e *env) wantDelete(want int, keys ...string) {
	e.t.Helper()
	n, err := e.b.Delete(e.ctx, e.ns, keys...)
	if err != nil {
		e.t.Fatalf("Delete(%q, %q): %v", e.ns, shortAll(keys), err)
	}
	if n != want {
		e.t.Errorf("Delete(%q, %q) = %d, want %d", e.ns, shortAll(keys), n, want)
	}
}

func (e *env) wantClear(want int) {
	e.t.Helper()
	n, err := e.b.Clear(e.ctx, e.ns)
	if err != nil {
		e.t.Fatalf("Clear(%q): %v", e.ns, err)
	}
	if n != want {
		e.t.Errorf("Clear(%q) = %d, want %d", e.ns, n, want)
	}
}

// wantHit checks that key holds value and returns the entry.
func (e *env) wantHit(key, value string) backends.Entry {
	e.t.Helper()
	l := e.lookup(key)
	if !l.Found {
		e.t.Errorf("Lookup(%q, %q): miss, want hit %q", e.ns, short(key), short(value))
		return backends.Entry{}
	}
	if string(l.Entry.Value) != value {
		e.t.Errorf("Lookup(%q, %q) = %q, want %q", e.ns, short(key), short(string(l.Entry.Value)), short(value))
	}
	return l.Entry
}

// wantMiss checks that key holds nothing and returns the miss's epoch.
func (e *env) wantMiss(key string) backends.Epoch {
	e.t.Helper()
	l := e.lookup(key)
	if l.Found {
		e.t.Errorf("Lookup(%q, %q): hit %q, want miss", e.ns, short(key), short(string(l.Entry.Value)))
	}
	return l.Epoch
}

func (e *env) wantStale(err error, what string) {
	e.t.Helper()
	if !errors.Is(err, backends.ErrStale) {
		e.t.Errorf("%s: got %v, want an error wrapping ErrStale", what, err)
	}
}

func (e *env) ttl(key string) (time.Duration, error) {
	return e.b.TTL(e.ctx, e.ns, key)
}

// wantNoExpiry checks the TTL of an entry filled without expiry.
func (e *env) wantNoExpiry(key string) {
	e.t.Helper()
	d, err := e.ttl(key)
	switch {
	case err != nil:
		e.t.Errorf("TTL(%q): %v", short(key), err)
	case e.h.MaxTTL > 0 && (d <= 0 || d > e.h.MaxTTL):
		e.t.Errorf("TTL(%q) = %v, want in (0, MaxTTL %v]", short(key), d, e.h.MaxTTL)
	case e.h.MaxTTL == 0 && d != backends.NoExpiry:
		e.t.Errorf("TTL(%q) = %v, want NoExpiry", short(key), d)
	}
}

func (e *env) wantNotFound(key string) {
	e.t.Helper()
	d, err := e.ttl(key)
	if !errors.Is(err, backends.ErrNotFound) {
		e.t.Errorf("TTL(%q) = %v, %v; want an error wrapping ErrNotFound", short(key), d, err)
	}
}

// short abbreviates long strings in messages.
func short(s string) string {
	if len(s) <= 40 {
		return s
	}
	return fmt.Sprintf("%s…(%d bytes)", s[:20], len(s))
}

func shortAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = short(s)
	}
	return out
}

func testMiss(t *testing.T, e *env) {
	l := e.lookup("missing")
	if l.Found {
		t.Fatalf("Lookup of a missing key: hit %q", l.Entry.Value)
	}
	if l.Epoch.IsZero() || l.Epoch.Era == "" {
		t.Errorf("miss epoch = %v, want a non-zero epoch with an era", l.Epoch)
	}
	ep := e.epoch()
	if ep.Era != l.Epoch.Era || ep.N < l.Epoch.N {
		t.Errorf("Epoch() = %v after a miss at %v: want the same era, not older", ep, l.Epoch)
	}
}

func testFillThenHit(t *testing.T, e *env) {
	since := e.wantMiss("k")
	value := []byte("hello, world")
	deps := []string{"users::42", "posts::*"}
	err := e.b.Fill(e.ctx, e.ns, backends.Fill{
		Key:   "k",
		Entry: backends.Entry{Value: value, Deps: deps, Since: since},
		Since: since,
	})
	if err != nil {
		t.Fatalf("Fill: %v", err)
	}
	// The store keeps its own copy: changing the caller's slices now must
	// not change the entry.
	value[0] = 'X'
	deps[0] = "changed"

	got := e.wantHit("k", "hello, world")
	if want := []string{"users::42", "posts::*"}; !slices.Equal(got.Deps, want) {
		t.Errorf("Deps = %q, want %q", got.Deps, want)
	}
	if got.Since != since {
		t.Errorf("Since = %v, want %v", got.Since, since)
	}

	// Nor may changing what a lookup returned.
	if len(got.Value) > 0 {
		got.Value[0] = 'Y'
	}
	if len(got.Deps) > 0 {
		got.Deps[0] = "changed"
	}
	again := e.wantHit("k", "hello, world")
	if want := []string{"users::42", "posts::*"}; !slices.Equal(again.Deps, want) {
		t.Errorf("Deps after changing a returned entry = %q, want %q", again.Deps, want)
	}

	// A binary value round-trips byte for byte.
	bin := make([]byte, 256)
	for i := range bin {
		bin[i] = byte(i)
	}
	since = e.epoch()
	if err := e.tryFill("bin", bin, since, "t"); err != nil {
		t.Fatalf("Fill of a binary value: %v", err)
	}
	if l := e.lookup("bin"); !l.Found || !bytes.Equal(l.Entry.Value, bin) {
		t.Errorf("binary value: found %v, %d bytes, want the 256 bytes filled", l.Found, len(l.Entry.Value))
	}
}

func testEmptyValue(t *testing.T, e *env) {
	since := e.epoch()
	if err := e.tryFill("empty", []byte{}, since, "t"); err != nil {
		t.Fatalf("Fill of an empty value: %v", err)
	}
	if err := e.tryFill("nil", nil, since, "t"); err != nil {
		t.Fatalf("Fill of a nil value: %v", err)
	}
	for _, k := range []string{"empty", "nil"} {
		l := e.lookup(k)
		if !l.Found {
			t.Errorf("Lookup(%q): miss, want a hit with an empty value", k)
		} else if len(l.Entry.Value) != 0 {
			t.Errorf("Lookup(%q) = %q, want an empty value", k, l.Entry.Value)
		}
	}
	e.wantInvalidate(2, "t")
}

func testNoDeps(t *testing.T, e *env) {
	e.fill("k", "v")
	got := e.wantHit("k", "v")
	if len(got.Deps) != 0 {
		t.Errorf("Deps = %q, want none", got.Deps)
	}
	e.wantInvalidate(0, "t", "other")
	e.wantHit("k", "v")
	e.wantDelete(1, "k")
	e.wantMiss("k")
}

func testRefill(t *testing.T, e *env) {
	e.fill("k", "v1", "t")
	e.fill("k", "v2", "t")
	e.wantHit("k", "v2")
	e.wantInvalidate(1, "t")
	e.wantMiss("k")
	// A refill after an invalidation is registered again.
	e.fill("k", "v3", "t")
	e.wantHit("k", "v3")
	e.wantInvalidate(1, "t")
	e.wantMiss("k")
}

func testTTL(t *testing.T, e *env) {
	const set = time.Hour
	e.fillTTL("ttl", "v", set, "t")
	d, err := e.ttl("ttl")
	if err != nil {
		t.Errorf("TTL: %v", err)
	} else if d <= 0 || d > set {
		t.Errorf("TTL = %v, want in (0, %v]", d, set)
	}

	e.fillTTL("zero", "v", 0, "t")
	e.wantNoExpiry("zero")
	e.fillTTL("never", "v", backends.NoExpiry, "t")
	e.wantNoExpiry("never")

	e.wantNotFound("missing")
	e.wantDelete(1, "ttl")
	e.wantNotFound("ttl")
}

func testExpiry(t *testing.T, e *env) {
	if e.h.Advance == nil {
		t.Skip("Harness.Advance is nil")
	}
	e.fillTTL("short", "v", 10*time.Second, "t")
	e.fill("long", "v", "t")
	e.fillTTL("alone", "v", 10*time.Second, "u")

	e.h.Advance(t, 5*time.Second)
	e.wantHit("short", "v")
	if d, err := e.ttl("short"); err != nil || d <= 0 || d > 5*time.Second {
		t.Errorf("TTL after 5s of 10s = %v, %v; want in (0, 5s]", d, err)
	}

	e.h.Advance(t, 6*time.Second)
	e.wantMiss("short")
	e.wantNotFound("short")
	e.wantHit("long", "v")
	e.wantDelete(0, "short")
	// The expired entries' registrations are forgotten: invalidating their
	// tags removes only the live entry.
	e.wantInvalidate(0, "u")
	e.wantInvalidate(1, "t")
	e.wantMiss("long")

	// An expired key can be filled again.
	e.fillTTL("short", "again", 10*time.Second, "t")
	e.wantHit("short", "again")
	e.wantInvalidate(1, "t")
}

func testDelete(t *testing.T, e *env) {
	e.fill("a", "1", "t")
	e.fill("b", "2", "t")
	e.fill("c", "3", "t")
	e.wantDelete(2, "a", "b", "missing")
	e.wantMiss("a")
	e.wantMiss("b")
	e.wantHit("c", "3")
	e.wantDelete(0, "a")
	e.wantDelete(0)
	// Deleted entries are not counted again by an invalidation.
	e.wantInvalidate(1, "t")
}

func testInvalidate(t *testing.T, e *env) {
	e.fill("e1", "1", "A")
	e.fill("e2", "2", "A", "B")
	e.fill("e3", "3", "B")
	e.fill("e4", "4", "C")
	e.fill("e5", "5")

	e.wantInvalidate(2, "A")
	e.wantMiss("e1")
	e.wantMiss("e2")
	e.wantHit("e3", "3")
	e.wantHit("e4", "4")
	e.wantHit("e5", "5")
	e.wantInvalidate(0, "A")
	e.wantInvalidate(0, "nothing")
	e.wantInvalidate(0)

	// An entry under two tags invalidated together counts once.
	e.fill("f1", "1", "A", "B")
	e.fill("f2", "2", "A")
	e.fill("f3", "3", "B")
	e.wantInvalidate(4, "A", "B") // f1, f2, f3 and e3
	for _, k := range []string{"f1", "f2", "f3", "e3"} {
		e.wantMiss(k)
	}
	e.wantHit("e4", "4")
	e.wantInvalidate(1, "C", "C")
	e.wantMiss("e4")
}

func testStaleGuard(t *testing.T, e *env) {
	e0 := e.wantMiss("k")
	e.wantInvalidate(0, "T")

	// A computation that started before the invalidation must not store.
	e.wantStale(e.tryFill("k", []byte("old"), e0, "X", "T"), "Fill with a Since older than a stamp")
	e.wantMiss("k")
	// Nor register: its other tag has nothing under it.
	e.wantInvalidate(0, "X")

	// A fill whose tags were not invalidated succeeds with the same Since.
	if err := e.tryFill("other", []byte("v"), e0, "U"); err != nil {
		t.Errorf("Fill under another tag: %v", err)
	}
	e.wantHit("other", "v")

	// A computation that started after the invalidation stores.
	e1 := e.wantMiss("k")
	if err := e.tryFill("k", []byte("new"), e1, "T"); err != nil {
		t.Fatalf("Fill with the epoch of a miss after the invalidation: %v", err)
	}
	e.wantHit("k", "new")
	e.wantInvalidate(1, "T")

	// So does one whose Since comes from Epoch after the invalidation.
	if err := e.tryFill("k", []byte("newer"), e.epoch(), "T"); err != nil {
		t.Fatalf("Fill with Epoch() after the invalidation: %v", err)
	}
	e.wantHit("k", "newer")

	// The refused key can still be filled over an existing entry, and a
	// refused fill leaves the existing entry alone.
	e.wantInvalidate(1, "T")
	e.fill("k", "kept", "V")
	e.wantStale(e.tryFill("k", []byte("stale"), e1, "T"), "Fill over an entry with a stale Since")
	e.wantHit("k", "kept")
}

// testFillCurrent: a fill at the current epoch (Manager.Set) is stored
// whatever was invalidated or cleared before it, carries the epoch it was
// stored at as its Since, and is removed by a later invalidation.
func testFillCurrent(t *testing.T, e *env) {
	e.wantMiss("k")
	e.wantInvalidate(0, "T")
	e.wantClear(0)
	before := e.epoch()
	err := e.b.Fill(e.ctx, e.ns, backends.Fill{
		Key: "k", Entry: backends.Entry{Value: []byte("current"), Deps: []string{"T", "U"}}, Current: true,
	})
	if err != nil {
		t.Fatalf("Fill at the current epoch after an invalidation and a Clear: %v", err)
	}
	en := e.wantHit("k", "current")
	after := e.epoch()
	if en.Since.Era != before.Era || en.Since.N < before.N || en.Since.N > after.N {
		t.Errorf("entry filled at the current epoch has Since %v, want an epoch between %v and %v", en.Since, before, after)
	}
	if !slices.Equal(en.Deps, []string{"T", "U"}) {
		t.Errorf("entry filled at the current epoch has deps %q, want [T U]", en.Deps)
	}
	e.wantInvalidate(1, "U")
	e.wantMiss("k")
}

func testForeignEra(t *testing.T, e *env) {
	ep := e.epoch()
	foreign := backends.Epoch{Era: ep.Era + "-other", N: ep.N + 1000}
	e.wantStale(e.tryFill("k", []byte("v"), foreign, "T"), "Fill with a Since of a foreign era")
	e.wantStale(e.tryFill("nodeps", []byte("v"), foreign), "Fill without deps with a Since of a foreign era")
	e.wantStale(e.tryFill("zero", []byte("v"), backends.Epoch{}, "T"), "Fill with the zero Since")
	e.wantMiss("k")
	e.wantMiss("nodeps")
	e.wantMiss("zero")
	e.wantInvalidate(0, "T")
}

func testMaxFillAge(t *testing.T, e *env) {
	max := e.h.MaxFillAge
	if max <= 0 {
		t.Skip("Harness.MaxFillAge is 0")
	}
	fill := func(key string, age time.Duration, deps ...string) error {
		since := e.epoch()
		return e.b.Fill(e.ctx, e.ns, backends.Fill{
			Key:   key,
			Entry: backends.Entry{Value: []byte("v"), Deps: deps, Since: since},
			Since: since,
			Age:   age,
		})
	}
	e.wantStale(fill("old", max+time.Second, "T"), fmt.Sprintf("Fill with Age %v beyond MaxFillAge %v", max+time.Second, max))
	e.wantStale(fill("oldnodeps", 2*max), "Fill without deps with Age beyond MaxFillAge")
	e.wantMiss("old")
	e.wantMiss("oldnodeps")
	e.wantInvalidate(0, "T")

	if err := fill("young", max/2, "T"); err != nil {
		t.Errorf("Fill with Age %v within MaxFillAge %v: %v", max/2, max, err)
	}
	e.wantHit("young", "v")
}

func testEpochGrows(t *testing.T, e *env) {
	e1 := e.epoch()
	e.invalidate("T")
	e2 := e.epoch()
	if e2.Era != e1.Era || e2.N <= e1.N {
		t.Errorf("Epoch() after an invalidation = %v, want newer than %v in the same era", e2, e1)
	}
	e.invalidate("T", "U")
	e3 := e.wantMiss("k")
	if e3.Era != e2.Era || e3.N <= e2.N {
		t.Errorf("miss epoch after an invalidation = %v, want newer than %v in the same era", e3, e2)
	}
	if _, ok := backends.Older(e1, e3); !ok {
		t.Errorf("Older(%v, %v) cannot order epochs of one store", e1, e3)
	}
}

func testNamespaceIsolation(t *testing.T, e *env) {
	x := e
	x2 := e.in(e.ns + "2")
	xy := e.in(e.ns + ":y")
	all := []*env{x, x2, xy}
	for _, n := range all {
		n.fill("k", n.ns, "t")
		n.fill("k2", n.ns, "u")
	}
	for _, n := range all {
		n.wantHit("k", n.ns)
	}

	// Invalidate in one namespace leaves the others.
	x2.wantInvalidate(1, "t")
	x2.wantMiss("k")
	x.wantHit("k", x.ns)
	xy.wantHit("k", xy.ns)

	// So does its stamp: a fill in another namespace with an epoch read
	// before that invalidation succeeds.
	before := x.wantMiss("fresh")
	x2.invalidate("t")
	if err := x.tryFill("fresh", []byte("v"), before, "t"); err != nil {
		t.Errorf("Fill in %q refused by an invalidation in %q: %v", x.ns, x2.ns, err)
	}
	x.wantHit("fresh", "v")

	// Clear of "x" leaves "x2" and "x:y".
	x.wantClear(3)
	x.wantMiss("k")
	x.wantMiss("k2")
	x2.wantHit("k2", x2.ns)
	xy.wantHit("k", xy.ns)
	xy.wantHit("k2", xy.ns)

	// Clear of "x:y" leaves "x2"; Delete is namespaced too.
	xy.wantDelete(1, "k2")
	x2.wantHit("k2", x2.ns)
	xy.wantClear(1)
	x2.wantHit("k2", x2.ns)
	x2.wantClear(1)
}

func testNamespaceGlob(t *testing.T, e *env) {
	base := e.ns
	plain := []*env{e.in(base + "2"), e.in(base + "x"), e.in(base + ":y"), e.in(base)}
	globs := []*env{e.in(base + "*"), e.in(base + "?"), e.in(base + "[2x]"), e.in(base + "\\")}
	for _, n := range append(plain, globs...) {
		n.fill("k", n.ns, "t")
	}
	for _, g := range globs {
		g.wantInvalidate(1, "t")
		g.wantClear(0)
		g.fill("k", g.ns, "t")
		g.wantClear(1)
		g.wantMiss("k")
	}
	for _, n := range plain {
		n.wantHit("k", n.ns)
		n.wantClear(1)
	}
}

// testNamespaceNesting checks namespaces that extend another by segments a
// store may use in its own layout (":e", ":t", ...): a Clear or an
// invalidation of the shorter one must not reach into them.
func testNamespaceNesting(t *testing.T, e *env) {
	var nested []*env
	for _, s := range []string{":e", ":t", ":v", ":e:k", ":t:t", ":{k}", ":k"} {
		nested = append(nested, e.in(e.ns+s))
	}
	for _, n := range append(nested, e) {
		n.fill("k", n.ns, "t")
		n.fill("t", n.ns, "k")
	}
	e.wantInvalidate(2, "t", "k")
	e.fill("k", e.ns, "t")
	e.wantClear(1)
	for _, n := range nested {
		n.wantHit("k", n.ns)
		n.wantHit("t", n.ns)
		n.wantInvalidate(1, "t")
		n.wantClear(1)
	}
}

func testClear(t *testing.T, e *env) {
	e.wantClear(0)
	const n = 10
	for i := range n {
		e.fillTTL(fmt.Sprint("k", i), "v", time.Duration(i)*time.Hour, fmt.Sprint("t", i%3), "all")
	}
	e0 := e.wantMiss("late")
	e.invalidate("recent")

	e.wantClear(n)
	for i := range n {
		e.wantMiss(fmt.Sprint("k", i))
		e.wantNotFound(fmt.Sprint("k", i))
	}
	e.wantClear(0)
	// Registrations went with the entries.
	e.wantInvalidate(0, "t0", "t1", "t2", "all")
	// A recent stamp survives: a fill that started before the invalidation
	// is still refused.
	e.wantStale(e.tryFill("late", []byte("v"), e0, "recent"), "Fill with a Since older than a stamp, after Clear")
	e.wantMiss("late")

	// The namespace works as before.
	e.fill("k0", "again", "t0")
	e.fill("k1", "again", "t1")
	e.wantHit("k0", "again")
	e.wantInvalidate(1, "t0")
	e.wantHit("k1", "again")
	e.wantClear(1)
}

// awkward are keys, tags and namespace suffixes that a store laying out
// strings in its own keys could mangle.
var awkward = []string{
	"a:b", "::", ":", "*", "a*", "users::*", "{x}", "{", "}", "}{", "{a}:{b}",
	"\\", "a\\:b", "\\*", " ", "a b", " lead", "trail ", "tab\there", "new\nline",
	"?", "[ab]", "%s%d", "\"'`", "ünïcødé", "日本語", "🙂", "e:k", "t:{x}",
	"v:x", "\x00nul", strings.Repeat("k", 1024), strings.Repeat("日", 400),
}

func testAwkwardNames(t *testing.T, e *env) {
	// Each awkward string is the key of one entry, tagged with the same
	// string and with "common".
	for i, s := range awkward {
		e.fill(s, fmt.Sprint(i), s, "common")
	}
	for i, s := range awkward {
		got := e.wantHit(s, fmt.Sprint(i))
		if !slices.Equal(got.Deps, []string{s, "common"}) {
			t.Errorf("Deps of %q = %q, want %q", short(s), shortAll(got.Deps), shortAll([]string{s, "common"}))
		}
		if d, err := e.ttl(s); err != nil || d != backends.NoExpiry && e.h.MaxTTL == 0 {
			t.Errorf("TTL(%q) = %v, %v", short(s), d, err)
		}
	}
	// Glob-looking tags and keys match only themselves.
	e.wantInvalidate(1, "*")
	e.wantMiss("*")
	e.wantInvalidate(1, "[ab]")
	e.wantMiss("[ab]")
	e.wantDelete(1, "a*")
	e.wantDelete(1, "?")
	e.wantHit("a:b", fmt.Sprint(slices.Index(awkward, "a:b")))
	e.wantHit("{x}", fmt.Sprint(slices.Index(awkward, "{x}")))
	e.wantInvalidate(len(awkward)-4, "common")
	for _, s := range awkward {
		e.wantMiss(s)
	}

	// Awkward namespaces (the namespace is the base plus the suffix).
	for i, s := range awkward {
		n := e.in(e.ns + s)
		n.fill("k", fmt.Sprint(i), "t")
	}
	for i, s := range awkward {
		n := e.in(e.ns + s)
		n.wantHit("k", fmt.Sprint(i))
		n.wantClear(1)
	}
}

// testManyDeps: an entry with thousands of dependencies is stored, comes
// back with all of them, and goes with any one. (A Lua unpack of them all,
// limited to about 8000 values, once refused every fill of more than
// 3998.)
func testManyDeps(t *testing.T, e *env) {
	deps := make([]string, 5000)
	for i := range deps {
		deps[i] = fmt.Sprint("dep", i)
	}
	if err := e.tryFill("many", []byte("v"), e.epoch(), deps...); err != nil {
		// The error, not the call: it would quote all 5000.
		t.Fatalf("Fill with %d dependencies: %.300v", len(deps), err)
	}
	if got := e.wantHit("many", "v"); len(got.Deps) != len(deps) {
		t.Errorf("hit carries %d dependencies, want %d", len(got.Deps), len(deps))
	}
	e.wantInvalidate(1, deps[len(deps)-1])
	e.wantMiss("many")
}

func testBigTag(t *testing.T, e *env) {
	n := e.h.BigTag
	key := func(i int) string { return fmt.Sprint("big", i) }
	since := e.epoch()
	for i := range n {
		if err := e.tryFill(key(i), []byte("v"), since, "big", fmt.Sprint("own", i)); err != nil {
			t.Fatalf("Fill %d of %d: %v", i, n, err)
		}
	}
	e.fill("bystander", "v", "small")
	e.wantInvalidate(n, "big")
	for i := range n {
		if l := e.lookup(key(i)); l.Found {
			t.Fatalf("entry %d of %d survived the invalidation of its tag", i, n)
		}
	}
	e.wantHit("bystander", "v")
	e.wantInvalidate(0, "big")
	e.wantInvalidate(0, "own0", fmt.Sprint("own", n-1))
}
