package redisbackend

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/backends/backendtest"
)

func TestClusterConformance(t *testing.T) {
	tc := sharedCluster(t)
	backendtest.Run(t, backendtest.Harness{
		New: func(t *testing.T) backends.Backend {
			// A small chunk so that BigTag drains in HSCAN steps.
			b := clusterBackend(t, tc, WithChunkSize(300))
			return &tidyBackend{Backend: b, nss: map[string]bool{}}
		},
		MaxFillAge: DefaultMaxFillAge,
	})
}

// clusterNS returns a fresh namespace cleared (stamps included) when the
// test ends.
func clusterNS(t *testing.T, b *Backend, prefix string) string {
	ns := randomName(t, prefix)
	clearAtEnd(t, b, ns)
	return ns
}

// leasedFill looks key up (a miss) and fills it with the miss's epoch and
// lease, as depcache does.
func leasedFill(t *testing.T, b *Backend, ns, key, value string, deps ...string) {
	t.Helper()
	ctx := t.Context()
	l, err := b.Lookup(ctx, ns, key)
	if err != nil || l.Found || l.Lease == "" {
		t.Fatalf("Lookup(%q) = %+v, %v; want a miss with a lease", key, l, err)
	}
	err = b.Fill(ctx, ns, backends.Fill{Key: key, Entry: backends.Entry{Value: []byte(value), Deps: deps}, Since: l.Epoch, Lease: l.Lease})
	if err != nil {
		t.Fatalf("Fill(%q): %v", key, err)
	}
}

// masterOf returns the address of the master serving key.
func masterOf(t *testing.T, b *Backend, key string) string {
	t.Helper()
	c, err := b.c.(*redis.ClusterClient).MasterForKey(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	return c.Options().Addr
}

func TestClusterRoundTrips(t *testing.T) {
	tc := sharedCluster(t)
	var cnt counter
	c := clusterClient(t, tc, &cnt)
	b := New(c, WithLogger(testLogger(t)))
	t.Cleanup(func() { _ = b.Close() })
	ns := clusterNS(t, b, "crt")
	ctx := t.Context()
	if _, err := b.connected(ctx); err != nil {
		t.Fatal(err)
	}
	mustEpoch(t, b)
	// Dial a connection to every master, for pipelines and single
	// commands alike.
	_ = c.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error { return n.Ping(ctx).Err() })
	for i := range 30 {
		_ = c.Get(ctx, fmt.Sprint("warm", i)).Err()
		_, _ = c.Pipelined(ctx, func(p redis.Pipeliner) error { p.Get(ctx, fmt.Sprint("warm", i)); return nil })
	}
	cnt.reset()
	want := func(what string, n int64) {
		t.Helper()
		if got, sent := cnt.reset(); got != n {
			t.Errorf("%s: %d round trips %q, want %d", what, got, sent, n)
		} else {
			t.Logf("%s: %d round trips %q", what, got, sent)
		}
	}

	l, err := b.Lookup(ctx, ns, "one")
	if err != nil || l.Found || l.Lease == "" {
		t.Fatalf("Lookup: %+v, %v; want a miss with a lease", l, err)
	}
	want("Lookup miss (lease taken)", 1)
	err = b.Fill(ctx, ns, backends.Fill{Key: "one", Entry: backends.Entry{Value: []byte("1"), Deps: []string{"d0"}}, Since: l.Epoch, Lease: l.Lease})
	if err != nil {
		t.Fatal(err)
	}
	want("Fill with the lease, 1 dep", 3)
	deps := make([]string, 10)
	for i := range deps {
		deps[i] = fmt.Sprint("d", i)
	}
	l, err = b.Lookup(ctx, ns, "ten")
	if err != nil || l.Lease == "" {
		t.Fatalf("Lookup: %+v, %v; want a miss with a lease", l, err)
	}
	cnt.reset()
	err = b.Fill(ctx, ns, backends.Fill{Key: "ten", Entry: backends.Entry{Value: []byte("10"), Deps: deps}, TTL: time.Hour, Since: l.Epoch, Lease: l.Lease})
	if err != nil {
		t.Fatal(err)
	}
	want("Fill with the lease, 10 deps in several slots", 3)
	l, err = b.Lookup(ctx, ns, "foreign")
	if err != nil || l.Lease == "" {
		t.Fatalf("Lookup: %+v, %v; want a miss with a lease", l, err)
	}
	cnt.reset()
	err = b.Fill(ctx, ns, backends.Fill{Key: "foreign", Entry: backends.Entry{Value: []byte("f"), Deps: []string{"d0", backends.ForeignDep(ns+"-other", "d0")}}, Since: l.Epoch, Lease: l.Lease})
	if err != nil {
		t.Fatal(err)
	}
	want("Fill with the lease, a dep of another namespace", 4)
	clearAtEnd(t, b, ns+"-other")
	err = b.Fill(ctx, ns, backends.Fill{Key: "set", Entry: backends.Entry{Value: []byte("s")}, Since: l.Epoch})
	if err != nil {
		t.Fatal(err)
	}
	want("Fill without lease nor deps", 2)
	err = b.Fill(ctx, ns, backends.Fill{Key: "fresh", Entry: backends.Entry{Value: []byte("f"), Deps: deps}, Since: l.Epoch})
	if err != nil {
		t.Fatal(err)
	}
	want("Fill without a lease of a missing key", 4)
	err = b.Fill(ctx, ns, backends.Fill{Key: "fresh", Entry: backends.Entry{Value: []byte("f2"), Deps: deps}, Since: l.Epoch})
	if err != nil {
		t.Fatal(err)
	}
	want("Fill without a lease over an entry (Manager.Set)", 5)
	if l, err := b.Lookup(ctx, ns, "one"); err != nil || !l.Found {
		t.Fatalf("Lookup: %+v, %v; want a hit", l, err)
	}
	want("Lookup hit", 1)
	if d, err := b.TTL(ctx, ns, "ten"); err != nil || d <= 0 {
		t.Fatalf("TTL = %v, %v", d, err)
	}
	want("TTL", 1)
	if n, err := b.Invalidate(ctx, ns, "d0"); err != nil || n != 4 {
		t.Fatalf("Invalidate = %d, %v; want 4", n, err)
	}
	want("Invalidate of a small tag", 4)
	if n, err := b.Invalidate(ctx, ns, "d0"); err != nil || n != 0 {
		t.Fatalf("Invalidate = %d, %v; want 0", n, err)
	}
	want("Invalidate of an empty tag", 2)
	if n, err := b.Delete(ctx, ns, "set", "y", "z"); err != nil || n != 1 {
		t.Fatalf("Delete = %d, %v; want 1", n, err)
	}
	want("Delete of 3 keys", 1)
	l, err = b.Lookup(ctx, ns, "rel")
	if err != nil || l.Lease == "" {
		t.Fatalf("Lookup: %+v, %v; want a miss with a lease", l, err)
	}
	cnt.reset()
	if err := b.Release(ctx, ns, "rel", l.Lease); err != nil {
		t.Fatal(err)
	}
	want("Release", 1)
}

// TestClusterFillRacesInvalidation runs an invalidation of the fill's tag
// after the fill registered its entry (on the tags' slots) and before its
// compare-and-set (on the entry's slot): the invalidation removes the
// lease, and the fill is refused.
func TestClusterFillRacesInvalidation(t *testing.T) {
	tc := sharedCluster(t)
	other := clusterBackend(t, tc)
	var (
		once    sync.Once
		invErr  error
		invN    int
		raceRan bool
	)
	var b *Backend
	hook := hookFunc{before: func(cmd redis.Cmder) {
		args := cmd.Args()
		if len(args) < 2 || cmd.Name() != "evalsha" || args[1] != clusterScripts[clusterCompareAndSet].Hash() {
			return
		}
		once.Do(func() {
			raceRan = true
			invN, invErr = other.Invalidate(context.Background(), "cfr", "t1")
		})
	}}
	c := clusterClient(t, tc, hook)
	b = New(c, WithLogger(testLogger(t)))
	t.Cleanup(func() { _ = b.Close() })
	clearAtEnd(t, b, "cfr")
	ctx := t.Context()

	for _, leased := range []bool{true, false} {
		once = sync.Once{}
		raceRan = false
		var f backends.Fill
		l, err := b.Lookup(ctx, "cfr", "k")
		if err != nil || l.Found {
			t.Fatalf("Lookup: %+v, %v", l, err)
		}
		f = backends.Fill{Key: "k", Entry: backends.Entry{Value: []byte("old"), Deps: []string{"t0", "t1", "t2"}}, Since: l.Epoch}
		if leased {
			f.Lease = l.Lease
		}
		err = b.Fill(ctx, "cfr", f)
		if !raceRan {
			t.Fatal("the compare-and-set was not seen")
		}
		if invErr != nil {
			t.Fatalf("racing Invalidate: %v", invErr)
		}
		if !errors.Is(err, backends.ErrStale) {
			t.Errorf("leased %v: Fill racing an invalidation between registration and CAS: %v, want ErrStale", leased, err)
		}
		if invN != 0 {
			t.Errorf("leased %v: the racing invalidation counted %d entries, want 0 (it removed a lease)", leased, invN)
		}
		if l, err := b.Lookup(ctx, "cfr", "k"); err != nil || l.Found {
			t.Errorf("leased %v: Lookup after the refused fill = %+v, %v; want a miss", leased, l, err)
		} else if l.Lease != "" {
			_ = b.Release(ctx, "cfr", "k", l.Lease)
		}
	}

	// Without the race the same fill is stored.
	once.Do(func() {})
	leasedFill(t, b, "cfr", "k", "new", "t0", "t1", "t2")
	if l, err := b.Lookup(ctx, "cfr", "k"); err != nil || !l.Found || string(l.Entry.Value) != "new" {
		t.Errorf("Lookup = %+v, %v; want a hit", l, err)
	}
}

// TestClusterTagOnEveryMaster invalidates tags whose entries live on every
// master, small and big (drained in HSCAN chunks).
func TestClusterTagOnEveryMaster(t *testing.T) {
	tc := sharedCluster(t)
	b := clusterBackend(t, tc, WithChunkSize(40))
	ns := clusterNS(t, b, "cev")
	ctx := t.Context()
	masters := map[string]int{}
	const n = 300
	since := mustEpoch(t, b)
	for i := range n {
		key := fmt.Sprint("k", i)
		masters[masterOf(t, b, entryKey(ns, key))]++
		deps := []string{"big", fmt.Sprint("own", i)}
		if i%10 == 0 {
			deps = append(deps, "small")
		}
		err := b.Fill(ctx, ns, backends.Fill{Key: key, Entry: backends.Entry{Value: []byte("v"), Deps: deps}, Since: since})
		if err != nil {
			t.Fatalf("Fill %d: %v", i, err)
		}
	}
	if len(masters) != 3 {
		t.Fatalf("entries on %d masters (%v), want 3", len(masters), masters)
	}
	if n, err := b.Invalidate(ctx, ns, "small"); err != nil || n != 30 {
		t.Errorf("Invalidate(small) = %d, %v; want 30", n, err)
	}
	// big and own0..own9 overlap: each entry counts once.
	tags := []string{"big"}
	for i := range 10 {
		tags = append(tags, fmt.Sprint("own", i))
	}
	if got, err := b.Invalidate(ctx, ns, tags...); err != nil || got != n-30 {
		t.Errorf("Invalidate(big, own0..9) = %d, %v; want %d", got, err, n-30)
	}
	for i := range n {
		if l, err := b.Lookup(ctx, ns, fmt.Sprint("k", i)); err != nil || l.Found {
			t.Fatalf("entry %d: Lookup = %+v, %v; want a miss", i, l, err)
		}
	}
	if n, err := b.Invalidate(ctx, ns, "big"); err != nil || n != 0 {
		t.Errorf("second Invalidate(big) = %d, %v; want 0", n, err)
	}
	// Every registration of big went with its entry.
	for _, k := range []string{tagKey(ns, "big"), tagKey(ns, "small")} {
		if fields := b.c.HKeys(ctx, k).Val(); len(fields) != 1 || fields[0] != "~v" {
			t.Errorf("%s holds %d fields after the invalidation, want the stamp only", k, len(fields))
		}
	}
}

// clusterKeys returns the keys of ns of a kind ("e", "t") on every master.
func clusterKeys(t *testing.T, b *Backend, ns, kind string) []string {
	t.Helper()
	var mu sync.Mutex
	var keys []string
	err := b.c.(*redis.ClusterClient).ForEachMaster(t.Context(), func(ctx context.Context, c *redis.Client) error {
		ks, err := c.Keys(ctx, globEscape(ns)+":"+kind+`:\{*`).Result()
		mu.Lock()
		keys = append(keys, ks...)
		mu.Unlock()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func TestClusterClear(t *testing.T) {
	tc := sharedCluster(t)
	b := clusterBackend(t, tc, WithChunkSize(25))
	ns := clusterNS(t, b, "ccl")
	ctx := t.Context()
	const n = 120
	for i := range n {
		fill(t, b, ns, fmt.Sprint("k", i), "v", 0, fmt.Sprint("t", i%7), "all")
	}
	// A lease is removed but not counted.
	if l, err := b.Lookup(ctx, ns, "leased"); err != nil || l.Lease == "" {
		t.Fatalf("Lookup = %+v, %v; want a lease", l, err)
	}
	masters := map[string]bool{}
	for _, k := range clusterKeys(t, b, ns, "e") {
		masters[masterOf(t, b, k)] = true
	}
	if len(masters) != 3 {
		t.Fatalf("entries on %d masters, want 3", len(masters))
	}
	// Another namespace sharing the prefix is left alone.
	fill(t, b, ns+"2", "k", "v", 0, "all")
	clearAtEnd(t, b, ns+"2")
	if got, err := b.Clear(ctx, ns); err != nil || got != n {
		t.Errorf("Clear = %d, %v; want %d", got, err, n)
	}
	if keys := clusterKeys(t, b, ns, "e"); len(keys) != 0 {
		t.Errorf("%d entry keys left after Clear: %q", len(keys), keys[:min(5, len(keys))])
	}
	// Tag hashes hold no registration any more (young stamps may stay).
	for _, k := range clusterKeys(t, b, ns, "t") {
		if fields := b.c.HKeys(ctx, k).Val(); len(fields) > 1 || len(fields) == 1 && fields[0] != "~v" {
			t.Errorf("%s holds %q after Clear", k, fields)
		}
	}
	if l, err := b.Lookup(ctx, ns+"2", "k"); err != nil || !l.Found {
		t.Errorf("Clear of %q removed %q's entry: %+v, %v", ns, ns+"2", l, err)
	}
	// Clear with stamps older than the maximum fill age leaves nothing.
	if _, err := sweeper(b).Clear(ctx, ns); err != nil {
		t.Fatal(err)
	}
	if keys := clusterKeys(t, b, ns, "t"); len(keys) != 0 {
		t.Errorf("%d tag hashes left after a sweeping Clear", len(keys))
	}
}

func TestClusterLeases(t *testing.T) {
	tc := sharedCluster(t)
	b := clusterBackend(t, tc)
	ns := clusterNS(t, b, "cls")
	ctx := t.Context()

	// A second caller missing on a leased key is Busy, without a lease.
	a, err := b.Lookup(ctx, ns, "k")
	if err != nil || a.Found || a.Busy || a.Lease == "" {
		t.Fatalf("first Lookup = %+v, %v; want a miss with a lease", a, err)
	}
	c, err := b.Lookup(ctx, ns, "k")
	if err != nil || c.Found || !c.Busy || c.Lease != "" || c.Epoch.Era == "" {
		t.Fatalf("second Lookup = %+v, %v; want a Busy miss with an epoch and no lease", c, err)
	}
	// A lease is no entry.
	if _, err := b.TTL(ctx, ns, "k"); !errors.Is(err, backends.ErrNotFound) {
		t.Errorf("TTL of a leased key: %v, want ErrNotFound", err)
	}
	err = b.Fill(ctx, ns, backends.Fill{Key: "k", Entry: backends.Entry{Value: []byte("a"), Deps: []string{"t"}}, Since: a.Epoch, Lease: a.Lease})
	if err != nil {
		t.Fatalf("Fill with the lease: %v", err)
	}
	if l, err := b.Lookup(ctx, ns, "k"); err != nil || !l.Found || string(l.Entry.Value) != "a" {
		t.Errorf("Lookup after the fill = %+v, %v; want a hit", l, err)
	}
	// A lease once used is spent.
	err = b.Fill(ctx, ns, backends.Fill{Key: "k", Entry: backends.Entry{Value: []byte("again")}, Since: a.Epoch, Lease: a.Lease})
	if !errors.Is(err, backends.ErrStale) {
		t.Errorf("second Fill with a spent lease: %v, want ErrStale", err)
	}

	// A fill without a lease (Manager.Set) replaces another caller's
	// lease, whose fill then fails.
	a, err = b.Lookup(ctx, ns, "k2")
	if err != nil || a.Lease == "" {
		t.Fatalf("Lookup = %+v, %v; want a lease", a, err)
	}
	if err := b.Fill(ctx, ns, backends.Fill{Key: "k2", Entry: backends.Entry{Value: []byte("set"), Deps: []string{"t"}}, Since: a.Epoch}); err != nil {
		t.Fatalf("Fill without a lease: %v", err)
	}
	err = b.Fill(ctx, ns, backends.Fill{Key: "k2", Entry: backends.Entry{Value: []byte("late"), Deps: []string{"t"}}, Since: a.Epoch, Lease: a.Lease})
	if !errors.Is(err, backends.ErrStale) {
		t.Errorf("Fill with a replaced lease: %v, want ErrStale", err)
	}
	if l, err := b.Lookup(ctx, ns, "k2"); err != nil || string(l.Entry.Value) != "set" {
		t.Errorf("Lookup = %+v, %v; want the Set value", l, err)
	}

	// Release gives a lease back; another token's release does nothing.
	a, err = b.Lookup(ctx, ns, "k3")
	if err != nil || a.Lease == "" {
		t.Fatalf("Lookup = %+v, %v; want a lease", a, err)
	}
	if err := b.Release(ctx, ns, "k3", newLeaseToken()); err != nil {
		t.Fatal(err)
	}
	if l, _ := b.Lookup(ctx, ns, "k3"); !l.Busy {
		t.Errorf("Lookup after releasing another token = %+v, want Busy", l)
	}
	if err := b.Release(ctx, ns, "k3", a.Lease); err != nil {
		t.Fatal(err)
	}
	l, err := b.Lookup(ctx, ns, "k3")
	if err != nil || l.Busy || l.Lease == "" {
		t.Errorf("Lookup after Release = %+v, %v; want a miss with a new lease", l, err)
	}
	// Release never deletes an entry.
	if err := b.Release(ctx, ns, "k", a.Lease); err != nil {
		t.Fatal(err)
	}
	if l, _ := b.Lookup(ctx, ns, "k"); !l.Found {
		t.Errorf("Release of a filled key deleted it")
	}
	// Delete removes a lease without counting it, and revokes it.
	a, _ = b.Lookup(ctx, ns, "k4")
	if n, err := b.Delete(ctx, ns, "k4"); err != nil || n != 0 {
		t.Errorf("Delete of a leased key = %d, %v; want 0", n, err)
	}
	err = b.Fill(ctx, ns, backends.Fill{Key: "k4", Entry: backends.Entry{Value: []byte("v"), Deps: []string{"t"}}, Since: a.Epoch, Lease: a.Lease})
	if !errors.Is(err, backends.ErrStale) {
		t.Errorf("Fill after Delete of its lease: %v, want ErrStale", err)
	}
	// A lease expires.
	short := clusterBackend(t, tc, WithLeaseTTL(50*time.Millisecond))
	if l, _ := short.Lookup(ctx, ns, "k5"); l.Lease == "" {
		t.Fatalf("Lookup = %+v; want a lease", l)
	}
	if err := poll(5*time.Second, func() bool {
		l, err := short.Lookup(ctx, ns, "k5")
		return err == nil && !l.Busy
	}); err != nil {
		t.Errorf("lease never expired: %v", err)
	}
}

func TestReleaseStandalone(t *testing.T) {
	b := newBackend(t, miniTarget(t))
	if err := b.Release(t.Context(), "ns", "k", "token"); err != nil {
		t.Errorf("Release on a single Redis: %v, want nil", err)
	}
	l, err := b.Lookup(t.Context(), "ns", "k")
	if err != nil || l.Lease != "" || l.Busy {
		t.Errorf("Lookup on a single Redis = %+v, %v; want no lease", l, err)
	}
}

func TestClusterCorruptEntry(t *testing.T) {
	tc := sharedCluster(t)
	b := clusterBackend(t, tc)
	ns := clusterNS(t, b, "ccor")
	ctx := t.Context()
	key := entryKey(ns, "k")
	for _, bad := range []string{"not an envelope", "", "dc\x09rest"} {
		if err := b.c.Set(ctx, key, bad, 0).Err(); err != nil {
			t.Fatal(err)
		}
		l, err := b.Lookup(ctx, ns, "k")
		if err != nil || l.Found || !l.Corrupt || l.Epoch.Era == "" {
			t.Errorf("Lookup of %q = %+v, %v; want a corrupt miss with an epoch", bad, l, err)
		}
		if n := b.c.Exists(ctx, key).Val(); n != 0 {
			t.Errorf("corrupt bytes %q not deleted", bad)
		}
	}
}

func TestClusterPolicy(t *testing.T) {
	tc := sharedCluster(t)
	ctx := context.Background()
	var addrs []string
	for _, nd := range tc.live() {
		addrs = append(addrs, nd.addr)
	}
	set := func(addr, policy string) {
		c := redis.NewClient(&redis.Options{Addr: addr})
		defer c.Close()
		if err := c.ConfigSet(ctx, "maxmemory-policy", policy).Err(); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, a := range addrs {
			set(a, "noeviction")
		}
	})
	if b := clusterBackend(t, tc); mustPolicy(t, b) != "noeviction" {
		t.Errorf("policy = %q, want noeviction", b.Policy())
	}
	set(addrs[1], "volatile-lru")
	b := clusterBackend(t, tc)
	if p := mustPolicy(t, b); p != "volatile-lru" {
		t.Errorf("policy with one volatile-lru master = %q", p)
	}
	set(addrs[2], "allkeys-lru")
	b = clusterBackend(t, tc)
	if p := mustPolicy(t, b); p != "allkeys-lru" {
		t.Errorf("policy with one allkeys-lru master = %q", p)
	}
	if _, err := b.Lookup(ctx, "cpol", "k"); !errors.Is(err, ErrUnsafePolicy) {
		t.Errorf("Lookup under allkeys-lru: %v, want ErrUnsafePolicy", err)
	}
}

func mustPolicy(t *testing.T, b *Backend) string {
	t.Helper()
	if _, err := b.connected(t.Context()); err != nil {
		t.Fatal(err)
	}
	return b.Policy()
}

// TestClusterFailover runs a cluster with a replica per master: an
// invalidation waits for the replicas of the masters it wrote to (and
// fails with ErrNotReplicated when one does not answer); after a master is
// killed and its replica promoted, no entry whose invalidation returned is
// readable again, no stamp is lost, the epoch has not gone back, and fills
// work.
func TestClusterFailover(t *testing.T) {
	longOnly(t)
	tc := ownCluster(t, true)
	c := clusterClient(t, tc)
	var nodes counter // pipelines sent on the masters' own connections
	c.OnNewNode(func(n *redis.Client) { n.AddHook(&nodes) })
	b := New(c, WithLogger(testLogger(t)), WithWaitTimeout(2*time.Second))
	t.Cleanup(func() { _ = b.Close() })
	ctx := t.Context()
	st, err := b.connected(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.replicas < 1 {
		t.Fatalf("replicas = %d, want 1", st.replicas)
	}
	const ns, n, invalidated = "fo", 90, 45
	key := func(i int) string { return fmt.Sprint("k", i) }
	tag := func(i int) string { return fmt.Sprint("t", i) }
	for i := range n {
		leasedFill(t, b, ns, key(i), "v", tag(i), "all")
	}

	// A replica that does not answer fails the invalidation, which is
	// applied on the masters all the same.
	frozenKey := entryKey(ns, key(n-1))
	replica := replicaOf(t, tc, masterOf(t, b, frozenKey))
	quick := New(c, WithLogger(testLogger(t)), WithWaitTimeout(200*time.Millisecond))
	if err := replica.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	_, err = quick.Invalidate(ctx, ns, tag(n-1))
	_ = replica.Process.Signal(syscall.SIGCONT)
	if !errors.Is(err, ErrNotReplicated) {
		t.Errorf("Invalidate with a frozen replica: %v, want ErrNotReplicated", err)
	}
	if l, err := b.Lookup(ctx, ns, key(n-1)); err != nil || l.Found {
		t.Errorf("Lookup after the unacknowledged invalidation = %+v, %v; want a miss", l, err)
	} else {
		_ = b.Release(ctx, ns, key(n-1), l.Lease)
	}

	for i := range invalidated {
		nodes.reset()
		if got, err := b.Invalidate(ctx, ns, tag(i)); err != nil || got != 1 {
			t.Fatalf("Invalidate(%s) = %d, %v; want 1", tag(i), got, err)
		}
		// Every step is one pipeline on each master it writes to, ending
		// with WAIT: epoch (and the due stamps, on the tag index's
		// master), stamp and read (and the index), unlink, registrations.
		_, sent := nodes.reset()
		masters := func(keys ...string) int {
			set := map[string]bool{}
			for _, k := range keys {
				set[masterOf(t, b, k)] = true
			}
			return len(set)
		}
		want := masters(b.cfg.epochKey, tagIndexKey(ns)) + masters(tagKey(ns, tag(i)), tagIndexKey(ns)) + 2
		var pipes []string
		for _, s := range sent {
			if strings.HasPrefix(s, "pipeline(") {
				pipes = append(pipes, s)
				if !strings.HasSuffix(s, ",wait)") {
					t.Errorf("a step of the invalidation without WAIT: %s", s)
				}
			}
		}
		if len(pipes) != want {
			t.Errorf("Invalidate(%s) sent %q on the masters' connections, want %d pipelines", tag(i), pipes, want)
		}
	}
	// A fill that started before an invalidation must still be refused
	// after the failover: the stamp survives.
	late, err := b.Lookup(ctx, ns, "late")
	if err != nil || late.Lease == "" {
		t.Fatalf("Lookup(late) = %+v, %v", late, err)
	}
	if _, err := b.Invalidate(ctx, ns, "late-tag"); err != nil {
		t.Fatal(err)
	}
	before := mustEpoch(t, b)

	// Kill the epoch's master: the one key every fill and invalidation
	// reads.
	victim := masterOf(t, b, b.cfg.epochKey)
	start := time.Now()
	if err := tc.kill(victim); err != nil {
		t.Fatal(err)
	}
	if err := tc.waitReady(context.Background(), 30*time.Second); err != nil {
		t.Fatalf("after killing %s: %v", victim, err)
	}
	promoted := time.Since(start)
	c.ReloadState(ctx)
	if err := poll(10*time.Second, func() bool {
		_, err := b.Epoch(ctx)
		return err == nil && masterOf(t, b, b.cfg.epochKey) != victim
	}); err != nil {
		t.Fatalf("client never reached the promoted master: %v", err)
	}
	t.Logf("master %s killed; replica promoted and serving after %v", victim, time.Since(start).Round(time.Millisecond))
	_ = promoted

	after := mustEpoch(t, b)
	if after.Era != before.Era || after.N < before.N {
		t.Errorf("epoch after the failover = %v, before %v: want the same era, not older", after, before)
	}
	for i := range invalidated {
		l, err := b.Lookup(ctx, ns, key(i))
		if err != nil {
			t.Fatalf("Lookup(%s) after the failover: %v", key(i), err)
		}
		if l.Found {
			t.Errorf("entry %s, whose invalidation returned, is readable after the failover", key(i))
		}
		if l.Lease != "" {
			_ = b.Release(ctx, ns, key(i), l.Lease)
		}
	}
	kept := 0
	for i := invalidated; i < n-1; i++ {
		if l, err := b.Lookup(ctx, ns, key(i)); err == nil && l.Found {
			kept++
		}
	}
	t.Logf("%d of %d entries never invalidated survived the failover", kept, n-1-invalidated)
	err = b.Fill(ctx, ns, backends.Fill{Key: "late", Entry: backends.Entry{Value: []byte("old"), Deps: []string{"late-tag"}}, Since: late.Epoch, Lease: late.Lease})
	if !errors.Is(err, backends.ErrStale) {
		t.Errorf("Fill that started before an invalidation, after the failover: %v, want ErrStale", err)
	}

	// The promoted replica has another replication history: the first
	// fill that meets its epoch is refused and starts a new era, so that
	// no number a reader saw on the old master is issued again.
	probe, err := b.Lookup(ctx, ns, "probe")
	if err != nil || probe.Lease == "" {
		t.Fatalf("Lookup(probe) = %+v, %v", probe, err)
	}
	err = b.Fill(ctx, ns, backends.Fill{Key: "probe", Entry: backends.Entry{Value: []byte("v")}, Since: probe.Epoch, Lease: probe.Lease})
	if !errors.Is(err, backends.ErrStale) {
		t.Errorf("first fill on the promoted epoch master: %v, want ErrStale (a new era)", err)
	}
	if ep := mustEpoch(t, b); ep.Era == before.Era {
		t.Errorf("epoch after the first fill on the promoted master = %v: want a new era", ep)
	}

	// Fills work on every master, the promoted one included.
	masters := map[string]bool{}
	for i := range 30 {
		k := fmt.Sprint("new", i)
		masters[masterOf(t, b, entryKey(ns, k))] = true
		leasedFill(t, b, ns, k, "fresh", "fresh-tag")
		if l, err := b.Lookup(ctx, ns, k); err != nil || !l.Found {
			t.Errorf("Lookup(%s) after a fill = %+v, %v; want a hit", k, l, err)
		}
	}
	if len(masters) != 3 {
		t.Errorf("new entries on %d masters, want 3", len(masters))
	}
	// The promoted master has no replica now: an invalidation that writes
	// there is applied but reported as not replicated (and retried by
	// depcache), never reported as done.
	got, err := quick.Invalidate(ctx, ns, "fresh-tag")
	if got != 30 {
		t.Errorf("Invalidate(fresh-tag) after the failover removed %d, want 30", got)
	}
	if !errors.Is(err, ErrNotReplicated) {
		t.Errorf("Invalidate touching the replica-less promoted master: %v, want ErrNotReplicated", err)
	}
}

// replicaOf returns the process of the replica of the master at addr.
func replicaOf(t *testing.T, tc *testCluster, master string) *exec.Cmd {
	t.Helper()
	_, port, _ := net.SplitHostPort(master)
	for _, nd := range tc.live() {
		c := redis.NewClient(&redis.Options{Addr: nd.addr})
		info, err := c.Info(context.Background(), "replication").Result()
		c.Close()
		if err == nil && infoField(info, "role") == "slave" && infoField(info, "master_port") == port {
			return nd.cmd
		}
	}
	t.Fatalf("no replica of %s", master)
	return nil
}

// TestClusterFillRacesChunkedInvalidation runs, between two steps of a big
// tag's invalidation (after the stamp, with most entries still there): a
// fill that started before the invalidation (refused), a fill that started
// after it (stored), and a second invalidation of the same tag, which must
// remove everything itself before it returns, although the first is
// draining too.
func TestClusterFillRacesChunkedInvalidation(t *testing.T) {
	const chunk, n = 100, 1050
	tc := sharedCluster(t)
	ns := randomName(t, "crace")
	ctx := t.Context()
	other := clusterBackend(t, tc, WithChunkSize(chunk))
	clearAtEnd(t, other, ns)
	var e0 backends.Epoch
	steps, fired := 0, false
	var removedByOther int
	hook := hookFunc{before: func(cmd redis.Cmder) {
		if cmd.Name() != "evalsha" || cmd.Args()[1] != clusterScripts[clusterRemoveAndRead].Hash() {
			return
		}
		if steps++; steps != 1 {
			return
		}
		fired = true
		err := other.Fill(ctx, ns, backends.Fill{Key: "stale", Entry: backends.Entry{Value: []byte("old"), Deps: []string{"big"}}, Since: e0})
		if !errors.Is(err, backends.ErrStale) {
			t.Errorf("fill from before the invalidation, during its drain: %v, want ErrStale", err)
		}
		leasedFill(t, other, ns, "fresh", "new", "big")
		var err2 error
		removedByOther, err2 = other.Invalidate(ctx, ns, "big")
		if err2 != nil {
			t.Errorf("concurrent Invalidate: %v", err2)
		}
		if left := clusterKeys(t, other, ns, "e"); len(left) != 0 {
			t.Errorf("concurrent Invalidate returned with %d entries left", len(left))
		}
	}}
	c := clusterClient(t, tc, hook)
	b := New(c, WithLogger(testLogger(t)), WithChunkSize(chunk))
	t.Cleanup(func() { _ = b.Close() })
	e0 = mustEpoch(t, b)
	env := backends.EncodeEntry(backends.Entry{Value: []byte("v"), Deps: []string{"big"}, Since: e0})
	pipe := c.Pipeline()
	fields := make([]any, 0, 2*n)
	for j := range n {
		k := entryKey(ns, fmt.Sprint("k", j))
		pipe.Set(ctx, k, env, 0)
		fields = append(fields, k, newFillID())
	}
	pipe.HSet(ctx, tagKey(ns, "big"), fields...)
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	removed, err := b.Invalidate(ctx, ns, "big")
	if err != nil {
		t.Fatal(err)
	}
	if !fired {
		t.Fatalf("the race did not run: %d steps", steps)
	}
	t.Logf("%d steps; removed %d, the concurrent invalidation %d", steps, removed, removedByOther)
	if removed+removedByOther != n+1 {
		t.Errorf("removed %d + %d, want %d in all", removed, removedByOther, n+1)
	}
	if left := clusterKeys(t, b, ns, "e"); len(left) != 0 {
		t.Errorf("entries left: %d", len(left))
	}
	if fields := c.HKeys(ctx, tagKey(ns, "big")).Val(); len(fields) != 1 {
		t.Errorf("tag hash holds %d fields, want the stamp only", len(fields))
	}
}

func TestClusterPrune(t *testing.T) {
	tc := sharedCluster(t)
	b := clusterBackend(t, tc, WithChunkSize(10))
	ns := clusterNS(t, b, "cpr")
	ctx := t.Context()
	const n = 40
	for i := range n {
		ttl := time.Duration(0)
		if i%2 == 0 {
			ttl = 50 * time.Millisecond
		}
		fill(t, b, ns, fmt.Sprint("k", i), "v", ttl, "t", fmt.Sprint("own", i))
	}
	if err := poll(5*time.Second, func() bool {
		_, err := b.TTL(ctx, ns, "k0")
		return errors.Is(err, backends.ErrNotFound)
	}); err != nil {
		t.Fatal(err)
	}
	if err := poll(5*time.Second, func() bool { return len(clusterKeys(t, b, ns, "e")) == n/2 }); err != nil {
		t.Fatalf("entries never expired: %v", err)
	}
	if err := b.Prune(ctx, ns); err != nil {
		t.Fatal(err)
	}
	if fields := b.c.HLen(ctx, tagKey(ns, "t")).Val(); fields != n/2 {
		t.Errorf("tag hash holds %d registrations after Prune, want the %d live ones", fields, n/2)
	}
	// The tags of expired entries were never invalidated: their hashes go.
	if left := len(clusterKeys(t, b, ns, "t")); left != 1+n/2 {
		t.Errorf("%d tag hashes after Prune, want %d", left, 1+n/2)
	}
	if got, err := b.Invalidate(ctx, ns, "t"); err != nil || got != n/2 {
		t.Errorf("Invalidate after Prune = %d, %v; want %d", got, err, n/2)
	}
}

// TestClusterOutOfMemory sets maxmemory below what every master uses,
// under noeviction: hits still serve (the lookup's SET NX is refused, a
// plain GET is not), fills fail, and invalidations, Delete and Clear
// still work (their scripts declare allow-oom).
func TestClusterOutOfMemory(t *testing.T) {
	tc := sharedCluster(t)
	b := clusterBackend(t, tc)
	ns := clusterNS(t, b, "coom")
	ctx := t.Context()
	for i := range 9 {
		fill(t, b, ns, fmt.Sprint("k", i), "v", 0, "t")
	}
	setAll := func(v string) {
		for _, nd := range tc.live() {
			c := redis.NewClient(&redis.Options{Addr: nd.addr})
			err := c.ConfigSet(context.Background(), "maxmemory", v).Err()
			c.Close()
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	setAll("1")
	t.Cleanup(func() { setAll("0") })

	l, err := b.Lookup(ctx, ns, "k0")
	if err != nil || !l.Found {
		t.Errorf("Lookup of an entry at maxmemory = %+v, %v; want a hit", l, err)
	}
	l, err = b.Lookup(ctx, ns, "missing")
	if err != nil || l.Found || l.Lease != "" || l.Epoch.Era == "" {
		t.Errorf("Lookup of a missing key at maxmemory = %+v, %v; want a miss without a lease", l, err)
	}
	err = b.Fill(ctx, ns, backends.Fill{Key: "missing", Entry: backends.Entry{Value: []byte("v"), Deps: []string{"t"}}, Since: l.Epoch})
	if err == nil {
		t.Errorf("Fill at maxmemory succeeded")
	}
	if n, err := b.Invalidate(ctx, ns, "t"); err != nil || n != 9 {
		t.Errorf("Invalidate at maxmemory = %d, %v; want 9", n, err)
	}
	setAll("0")
	fill(t, b, ns, "k", "v", 0, "t")
	setAll("1")
	if n, err := b.Delete(ctx, ns, "k"); err != nil || n != 1 {
		t.Errorf("Delete at maxmemory = %d, %v; want 1", n, err)
	}
	if _, err := b.Clear(ctx, ns); err != nil {
		t.Errorf("Clear at maxmemory: %v", err)
	}
}
