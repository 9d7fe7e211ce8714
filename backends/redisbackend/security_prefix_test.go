package redisbackend

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/depcache/go-depcache/backends"
)

// namespacePairs are pairs of namespaces (after a random base) that must
// never touch each other's keys: one a prefix of the other, with or
// without the delimiter, and glob metacharacters that an unescaped SCAN
// MATCH would expand to the other.
var namespacePairs = [][2]string{
	{"app", "app2"}, {"app2", "app"},
	{"a:", "a"}, {"a", "a:"},
	{"a:e", "a"}, {"a", "a:e"}, {"a:t", "a"},
	{"a*", "ab"}, {"a?", "ab"}, {"a[b]", "ab"}, {"[ab]", "a"}, {"a*", "a"},
	{"a", "a:{x}"}, {"a:{x}", "a"}, {"a{", "a"}, {"a", "a:e{"},
}

// TestPrefixIsolation: every operation of a Backend on namespace A —
// lookups that take fill leases, fills with and without a lease, TTL,
// Delete, Release, invalidations (which stamp, drain and trim), Prune and
// Clear — on the same keys and tags as B's, leaves every key of B (its
// entries, fill lease, tag hashes and stamps, tag index and namespace
// stamp) exactly as it was, and B's entries served.
func TestPrefixIsolation(t *testing.T) {
	type server struct {
		name   string
		client func(t *testing.T) redis.UniversalClient
	}
	var servers []server
	for _, tg := range targets(t) {
		servers = append(servers, server{tg.name, func(t *testing.T) redis.UniversalClient { return tg.client(t) }})
	}
	if !testing.Short() {
		servers = append(servers, server{"cluster", func(t *testing.T) redis.UniversalClient { return clusterClient(t, sharedCluster(t)) }})
	}
	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			c := srv.client(t)
			for _, p := range namespacePairs {
				t.Run(p[0]+" vs "+p[1], func(t *testing.T) {
					base := randomName(t, "dciso")
					isolated(t, c, base, base+p[0], base+p[1])
				})
			}
		})
	}
}

func isolated(t *testing.T, c redis.UniversalClient, base, nsA, nsB string) {
	ctx := t.Context()
	bA := New(c, WithLogger(testLogger(t)), WithFillLock())
	bB := New(c, WithLogger(testLogger(t)), WithFillLock())
	t.Cleanup(func() { bA.Close(); bB.Close() })
	clearAtEnd(t, bB, nsB)
	clearAtEnd(t, bA, nsA)

	fill := func(b *Backend, ns, key, value string, deps ...string) {
		t.Helper()
		l, err := b.Lookup(ctx, ns, key)
		if err != nil || l.Found {
			t.Fatalf("%s: Lookup(%q) = %+v, %v; want a miss", ns, key, l, err)
		}
		err = b.Fill(ctx, ns, backends.Fill{Key: key, Entry: backends.Entry{Value: []byte(value), Deps: deps}, Since: l.Epoch, Lease: l.Lease})
		if err != nil {
			t.Fatalf("%s: Fill(%q): %v", ns, key, err)
		}
	}
	// B: two entries under shared tag names, a stamp, a fill lease held.
	fill(bB, nsB, "k1", "B1", "t", "u")
	fill(bB, nsB, "k2", "B2", "t")
	if _, err := bB.Invalidate(ctx, nsB, "old"); err != nil {
		t.Fatal(err)
	}
	lB, err := bB.Lookup(ctx, nsB, "kl")
	if err != nil || lB.Lease == "" {
		t.Fatalf("B: Lookup(kl) = %+v, %v; want a lease", lB, err)
	}
	before := snapshotNS(t, c, base, nsB)
	if len(before) < 5 {
		t.Fatalf("B's keys: %v; want entries, a lease, tag hashes, the tag index", slices.Sorted(mapKeys(before)))
	}

	// A: everything, on the same keys and tags.
	fill(bA, nsA, "k1", "A1", "t", "u")
	if err := bA.Fill(ctx, nsA, backends.Fill{Key: "k2", Entry: backends.Entry{Value: []byte("A2"), Deps: []string{"t", "old"}}, Current: true}); err != nil {
		t.Fatal(err)
	}
	if l, err := bA.Lookup(ctx, nsA, "k1"); err != nil || !l.Found || string(l.Entry.Value) != "A1" {
		t.Fatalf("A: Lookup(k1) = %+v, %v; want A1", l, err)
	}
	if _, err := bA.TTL(ctx, nsA, "k1"); err != nil {
		t.Fatal(err)
	}
	lA, err := bA.Lookup(ctx, nsA, "kl")
	if err != nil || lA.Busy || lA.Lease == "" {
		t.Fatalf("A: Lookup(kl) = %+v, %v; want a lease of its own (B's lease is B's)", lA, err)
	}
	if err := bA.Release(ctx, nsA, "kl", lA.Lease); err != nil {
		t.Fatal(err)
	}
	if err := bA.Release(ctx, nsA, "kl", lB.Lease); err != nil { // B's token, on A's key
		t.Fatal(err)
	}
	if n, err := bA.Delete(ctx, nsA, "k1", "kl"); err != nil || n != 1 {
		t.Fatalf("A: Delete = %d, %v; want 1", n, err)
	}
	if n, err := bA.Invalidate(ctx, nsA, "t", "u", "old"); err != nil || n != 1 {
		t.Fatalf("A: Invalidate = %d, %v; want 1 (k2)", n, err)
	}
	if err := bA.Prune(ctx, nsA); err != nil {
		t.Fatal(err)
	}
	fill(bA, nsA, "k1", "A1", "t")
	if n, err := bA.Clear(ctx, nsA); err != nil || n != 1 {
		t.Fatalf("A: Clear = %d, %v; want 1", n, err)
	}

	after := snapshotNS(t, c, base, nsB)
	for k, v := range before {
		if w, ok := after[k]; !ok {
			t.Errorf("B's key %q is gone", k)
		} else if w != v {
			t.Errorf("B's key %q changed:\n  before %s\n  after  %s", k, v, w)
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			t.Errorf("B has a new key %q: %s", k, after[k])
		}
	}
	for key, want := range map[string]string{"k1": "B1", "k2": "B2"} {
		if l, err := bB.Lookup(ctx, nsB, key); err != nil || !l.Found || string(l.Entry.Value) != want {
			t.Errorf("B: Lookup(%q) = %+v, %v; want %s", key, l, err, want)
		}
	}
	if l, err := bB.Lookup(ctx, nsB, "kl"); err != nil || !l.Busy {
		t.Errorf("B: Lookup(kl) = %+v, %v; want B's lease still held (Busy)", l, err)
	}
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// snapshotNS returns every key of namespace ns (its layout, and nothing
// another namespace under base may have) with its type, content and
// whether it expires.
func snapshotNS(t *testing.T, c redis.UniversalClient, base, ns string) map[string]string {
	t.Helper()
	ctx := t.Context()
	var mu sync.Mutex
	out := map[string]string{}
	scan := func(ctx context.Context, c redis.Cmdable) error {
		return scanPages(ctx, c, globEscape(base)+"*", 1000, func(keys []string) error {
			for _, k := range keys {
				if k != ns+":s" && k != ns+":c" && !strings.HasPrefix(k, ns+":e:{") && !strings.HasPrefix(k, ns+":t:{") {
					continue
				}
				v, err := describeKey(ctx, c, k)
				if err != nil {
					return err
				}
				mu.Lock()
				out[k] = v
				mu.Unlock()
			}
			return nil
		})
	}
	var err error
	if cc, ok := c.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error { return scan(ctx, m) })
	} else {
		err = scan(ctx, c)
	}
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func describeKey(ctx context.Context, c redis.Cmdable, k string) (string, error) {
	typ, err := c.Type(ctx, k).Result()
	if err != nil {
		return "", err
	}
	ttl, err := c.PTTL(ctx, k).Result()
	if err != nil {
		return "", err
	}
	v := ""
	switch typ {
	case "string":
		v, err = c.Get(ctx, k).Result()
	case "hash":
		var h map[string]string
		h, err = c.HGetAll(ctx, k).Result()
		var fs []string
		for f, x := range h {
			fs = append(fs, f+"="+x)
		}
		sort.Strings(fs)
		v = strings.Join(fs, ",")
	case "zset":
		var zs []redis.Z
		zs, err = c.ZRangeWithScores(ctx, k, 0, -1).Result()
		v = fmt.Sprint(zs)
	}
	return fmt.Sprintf("%s expires=%v %q", typ, ttl > 0, v), err
}

// A namespace holding the layout's separators is refused by every call,
// before anything is sent: its keys could be another namespace's.
func TestNamespaceWithSeparatorRefused(t *testing.T) {
	for _, ns := range []string{"a:e:{x", "a:t:{", "x:t:{y}:z"} {
		namespaceRefused(t, ns)
	}
	// Other braces are fine (the conformance suite's AwkwardNames).
	if err := checkNS("a:{e}:t{"); err != nil {
		t.Errorf("checkNS(%q) = %v", "a:{e}:t{", err)
	}
}

func namespaceRefused(t *testing.T, ns string) {
	tg := miniTarget(t)
	b := newBackend(t, tg)
	ctx := t.Context()
	calls := map[string]error{}
	_, calls["Lookup"] = b.Lookup(ctx, ns, "k")
	calls["Fill"] = b.Fill(ctx, ns, backends.Fill{Key: "k", Current: true})
	calls["Fill with a foreign dependency"] = b.Fill(ctx, "ok", backends.Fill{Key: "k", Current: true,
		Entry: backends.Entry{Deps: []string{backends.ForeignDep(ns, "t")}}})
	_, calls["Invalidate"] = b.Invalidate(ctx, ns, "t")
	_, calls["Delete"] = b.Delete(ctx, ns, "k")
	_, calls["TTL"] = b.TTL(ctx, ns, "k")
	calls["Release"] = b.Release(ctx, ns, "k", "lease")
	_, calls["Clear"] = b.Clear(ctx, ns)
	calls["Prune"] = b.Prune(ctx, ns)
	for name, err := range calls {
		if !errors.Is(err, ErrNamespace) {
			t.Errorf("%s in %q: %v, want ErrNamespace", name, ns, err)
		}
	}
	if keys := tg.mini.Keys(); len(keys) != 0 {
		t.Errorf("refused calls wrote %v", keys)
	}
}
