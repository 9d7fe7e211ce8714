package redisbackend

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/depcache/go-depcache/backends"
)

// holdHook holds the first script whose arguments mention match (its keys
// are among them) until release is closed, after closing
// arrived: a request delayed in transit, past every check its sender made.
type holdHook struct {
	match   string
	once    sync.Once
	arrived chan struct{}
	release chan struct{}
}

func newHoldHook(match string) *holdHook {
	return &holdHook{match: match, arrived: make(chan struct{}), release: make(chan struct{})}
}

func (h *holdHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *holdHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if n := cmd.Name(); n != "evalsha" && n != "eval" {
			return next(ctx, cmd)
		}
		for _, a := range cmd.Args() {
			if s, ok := a.(string); ok && s == h.match {
				h.once.Do(func() {
					close(h.arrived)
					<-h.release
				})
				break
			}
		}
		return next(ctx, cmd)
	}
}

func (h *holdHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestPrunedStampRefusesHeldFill: a fill that passed the client's age
// check reaches the server only after the stamp that would refuse it was
// pruned — held in transit past the prune age (a real Redis), or with the
// server's clock stepped forward (miniredis: a fresh stamp looks old). The
// server refuses it by itself: the pruned key remembers the newest stamp
// pruned (issue 13 items 4 and 6; item 7, a parent that took an older
// Since from a child hit, is the same fill).
func TestPrunedStampRefusesHeldFill(t *testing.T) {
	for _, tg := range targets(t) {
		t.Run(tg.name, func(t *testing.T) {
			maxAge := time.Minute
			if tg.advance == nil {
				maxAge = 20 * time.Millisecond // real time passes while the fill is held
			}
			ns := randomName(t, "held")
			hold := newHoldHook(entryKey(ns, "k"))
			b := newBackendHooked(t, tg, []redis.Hook{hold}, WithMaxFillAge(maxAge))
			other := newBackend(t, tg, WithMaxFillAge(maxAge)) // another process
			clearAtEnd(t, other, ns)
			ctx := t.Context()

			l, err := b.Lookup(ctx, ns, "k")
			if err != nil || l.Found {
				t.Fatalf("Lookup = %+v, %v; want a miss", l, err)
			}
			// The computation read the database; then a write and its
			// invalidation.
			if _, err := other.Invalidate(ctx, ns, "t"); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				done <- b.Fill(ctx, ns, backends.Fill{
					Key: "k", Entry: backends.Entry{Value: []byte("before the write"), Deps: []string{"t"}}, Since: l.Epoch,
				})
			}()
			<-hold.arrived

			// While the fill is in transit the stamp becomes old enough
			// and another process's Prune removes it.
			if tg.advance != nil {
				tg.advance(3 * maxAge)
			}
			eventually(t, "the stamp pruned", func() bool {
				if err := other.Prune(ctx, ns); err != nil {
					t.Fatal(err)
				}
				return other.c.Exists(ctx, tagKey(ns, "t")).Val() == 0
			})
			close(hold.release)
			if err := <-done; !errors.Is(err, backends.ErrStale) {
				t.Fatalf("Fill after its stamp was pruned = %v, want ErrStale", err)
			}
			if l, err := other.Lookup(ctx, ns, "k"); err != nil || l.Found {
				t.Fatalf("Lookup after the refused fill = found %v (%q), %v; want a miss", l.Found, l.Entry.Value, err)
			}
			// A fill that starts now passes: the pruned key refuses only
			// fills older than the pruned stamp.
			fill(t, other, ns, "k", "after the write", 0, "t")
		})
	}
}

// linkProxy forwards TCP connections to target: a replication link the test
// can freeze (bytes from target are held back) and cut (held bytes are
// dropped with the connections).
type linkProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	frozen bool
	thaw   chan struct{}
	conns  []net.Conn
}

func startLinkProxy(t *testing.T, target string) *linkProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &linkProxy{ln: ln, target: target, thaw: make(chan struct{})}
	t.Cleanup(p.cut)
	go p.serve()
	return p
}

func (p *linkProxy) addr() string { return p.ln.Addr().String() }

func (p *linkProxy) serve() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, in, out)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(out, in); out.Close() }()
		go p.forward(in, out)
	}
}

// forward copies from the target to the client, holding while frozen.
func (p *linkProxy) forward(client, target net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := target.Read(buf)
		if n > 0 {
			p.mu.Lock()
			thaw := p.thaw
			frozen := p.frozen
			p.mu.Unlock()
			if frozen {
				<-thaw
			}
			if _, werr := client.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			client.Close()
			return
		}
	}
}

func (p *linkProxy) freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.frozen = true
}

// cut closes the listener and every connection; what was held is lost.
func (p *linkProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	_ = p.ln.Close()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
	if p.frozen {
		p.frozen = false
		close(p.thaw) // the forwarders write to closed connections and end
	}
}

// inSync waits until primary's replica acknowledges a write (a replica that
// just loaded the master's snapshot gets the stream after its first ACK).
func inSync(t *testing.T, primary *redis.Client) {
	t.Helper()
	eventually(t, "replica in sync", func() bool {
		ctx := context.Background()
		var wait *redis.IntCmd
		_, err := primary.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, "probe", "1", 0)
			wait = redis.NewIntCmd(ctx, "WAIT", 1, 100)
			return p.Process(ctx, wait)
		})
		return err == nil && wait.Val() == 1
	})
}

// TestFailoverStartsNewEra (issue 13 item 2): an invalidation's epoch bump
// that no replica acknowledged is read by a lookup; the master dies and
// its replica, which never got the bump, is promoted; the next
// invalidation is acknowledged and returns nil. The fill that began from
// the lost epoch must be refused: on the promoted replica the same number
// would be issued again, so the era changes with the replication history.
func TestFailoverStartsNewEra(t *testing.T) {
	if testing.Short() {
		t.Skip("starts redis-server processes")
	}
	master, masterProc := startRedis(t)
	link := startLinkProxy(t, master)
	lhost, lport, _ := net.SplitHostPort(link.addr())
	replica, _ := startRedis(t, "--replicaof", lhost, lport)
	mc := newClient(t, &redis.Options{Addr: master}, nil)
	rc := newClient(t, &redis.Options{Addr: replica}, nil)
	inSync(t, mc)

	// The application's client follows the master, as Sentinel would.
	follow := newFollower(master)
	dial := follow.dial
	c := newClient(t, &redis.Options{Addr: master, Dialer: dial, MaxRetries: 3}, nil)
	b := New(c, WithLogger(testLogger(t)), WithWaitTimeout(200*time.Millisecond))
	t.Cleanup(func() { _ = b.Close() })
	ctx := t.Context()
	warm(t, b)
	const ns = "failover"

	// An epoch both have, then a bump the replica never sees.
	invalidateAcked(t, b, ns, "x")
	link.freeze()
	if _, err := b.Invalidate(ctx, ns, "x"); !errors.Is(err, ErrNotReplicated) {
		t.Fatalf("Invalidate with the link frozen = %v, want ErrNotReplicated", err)
	}
	l, err := b.Lookup(ctx, ns, "k")
	if err != nil || l.Found {
		t.Fatalf("Lookup = %+v, %v; want a miss", l, err)
	}
	epochBefore := rc.Get(ctx, DefaultEpochKey).Val()

	// Failover: the master dies, its replica is promoted and gets a
	// replica of its own; the application follows.
	if err := masterProc.Kill(); err != nil {
		t.Fatal(err)
	}
	link.cut()
	if err := rc.Do(ctx, "REPLICAOF", "NO", "ONE").Err(); err != nil {
		t.Fatal(err)
	}
	_, rport, _ := net.SplitHostPort(replica)
	startRedis(t, "--replicaof", "127.0.0.1", rport)
	inSync(t, rc)
	follow.moveTo(replica)
	if v := rc.Get(ctx, DefaultEpochKey).Val(); v != epochBefore || v == "" || v == l.Epoch.String() {
		t.Fatalf("the promoted replica's epoch is %q (before the failover %q), the lookup read %v: the bump was not lost", v, epochBefore, l.Epoch)
	}

	// A fill from the lost epoch before anything bumps the promoted one is
	// refused by number: its Since is ahead of the epoch.
	err = b.Fill(ctx, ns, backends.Fill{
		Key: "k", Entry: backends.Entry{Value: []byte("before the failover"), Deps: []string{"x"}}, Since: l.Epoch,
	})
	if !errors.Is(err, backends.ErrStale) || !strings.Contains(err.Error(), "behind") {
		t.Fatalf("Fill from the lost epoch %v on the promoted replica = %v, want ErrStale (the epoch is behind)", l.Epoch, err)
	}

	// The write, and its invalidation, acknowledged by the new replica.
	invalidateAcked(t, b, ns, "t")
	err = b.Fill(ctx, ns, backends.Fill{
		Key: "k", Entry: backends.Entry{Value: []byte("before the write"), Deps: []string{"t"}}, Since: l.Epoch,
	})
	if !errors.Is(err, backends.ErrStale) {
		t.Fatalf("Fill from the lost epoch %v after the failover = %v, want ErrStale", l.Epoch, err)
	}
	if l, err := b.Lookup(ctx, ns, "k"); err != nil || l.Found {
		t.Fatalf("Lookup after the refused fill = found %v (%q), %v; want a miss", l.Found, l.Entry.Value, err)
	} else if l.Epoch.Era == epochEra(epochBefore) {
		t.Errorf("epoch after the failover %v: still the old era", l.Epoch)
	}
}

// TestFailoverPruneKeepsRecord: an invalidation acknowledged by the
// replica returns nil; a fill that began before it is held in transit;
// the master dies and the replica is promoted. Before anything bumps the
// epoch there, the stamp is old enough and a Prune removes it. A fill of
// the old history's era still passes the promoted replica's epoch check
// by number, so the stamp must not go without its record in the pruned
// key: the held fill must be refused, as it is on the old master
// (TestPrunedStampRefusesHeldFill).
func TestFailoverPruneKeepsRecord(t *testing.T) {
	if testing.Short() {
		t.Skip("starts redis-server processes")
	}
	master, masterProc := startRedis(t)
	_, mport, _ := net.SplitHostPort(master)
	replica, _ := startRedis(t, "--replicaof", "127.0.0.1", mport)
	rc := newClient(t, &redis.Options{Addr: replica}, nil)
	inSync(t, newClient(t, &redis.Options{Addr: master}, nil))

	// The application's clients follow the master, as Sentinel would.
	follow := newFollower(master)
	dial := follow.dial
	const maxAge = 20 * time.Millisecond // real time passes while the fill is held
	ns := randomName(t, "fprune")
	hold := newHoldHook(entryKey(ns, "k"))
	opts := []Option{WithLogger(testLogger(t)), WithMaxFillAge(maxAge), WithWaitTimeout(time.Second)}
	b := New(newClient(t, &redis.Options{Addr: master, Dialer: dial, MaxRetries: 3}, []redis.Hook{hold}), opts...)
	t.Cleanup(func() { _ = b.Close() })
	other := New(newClient(t, &redis.Options{Addr: master, Dialer: dial, MaxRetries: 3}, nil), opts...) // another process
	t.Cleanup(func() { _ = other.Close() })
	ctx := t.Context()
	warm(t, b)
	warm(t, other)

	l, err := b.Lookup(ctx, ns, "k")
	if err != nil || l.Found {
		t.Fatalf("Lookup = %+v, %v; want a miss", l, err)
	}
	// The computation read the database; then a write and its
	// invalidation, acknowledged by the replica (tried again if a loaded
	// machine starves the replica past the WAIT, as the manager would).
	invalidateAcked(t, other, ns, "t")
	done := make(chan error, 1)
	go func() {
		done <- b.Fill(ctx, ns, backends.Fill{
			Key: "k", Entry: backends.Entry{Value: []byte("before the write"), Deps: []string{"t"}}, Since: l.Epoch,
		})
	}()
	<-hold.arrived

	// Failover: the master dies, its replica, which has the
	// invalidation, is promoted; the application follows.
	if err := masterProc.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := rc.Do(ctx, "REPLICAOF", "NO", "ONE").Err(); err != nil {
		t.Fatal(err)
	}
	follow.moveTo(replica)
	if rc.Exists(ctx, tagKey(ns, "t")).Val() != 1 {
		t.Fatalf("the promoted replica lacks the acknowledged invalidation's stamp")
	}

	// While the fill is in transit the stamp becomes old enough and
	// another process's Prune removes it, before any invalidation on the
	// new master.
	eventually(t, "the stamp pruned", func() bool {
		if err := other.Prune(ctx, ns); err != nil {
			t.Fatal(err)
		}
		return rc.Exists(ctx, tagKey(ns, "t")).Val() == 0
	})
	close(hold.release)
	if err := <-done; !errors.Is(err, backends.ErrStale) {
		t.Fatalf("Fill from before the acknowledged invalidation, after its stamp was pruned on the promoted replica = %v, want ErrStale", err)
	}
	if l, err := other.Lookup(ctx, ns, "k"); err != nil || l.Found {
		t.Fatalf("Lookup after the refused fill = found %v (%q), %v; want a miss", l.Found, l.Entry.Value, err)
	}
}

// follower dials the address the application believes is the master, as
// a Sentinel client would: moveTo points it at a promoted replica.
type follower struct {
	mu   sync.Mutex
	addr string
}

func newFollower(master string) *follower { return &follower{addr: master} }

func (f *follower) moveTo(addr string) {
	f.mu.Lock()
	f.addr = addr
	f.mu.Unlock()
}

func (f *follower) dial(ctx context.Context, network, _ string) (net.Conn, error) {
	f.mu.Lock()
	a := f.addr
	f.mu.Unlock()
	var d net.Dialer
	return d.DialContext(ctx, network, a)
}

// invalidateAcked invalidates tag until a replica acknowledges it: a
// loaded machine may starve the replica past a short WAIT, and the
// manager would try again.
func invalidateAcked(t *testing.T, b *Backend, ns, tag string) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		_, err := b.Invalidate(t.Context(), ns, tag)
		if err == nil {
			return
		}
		if !errors.Is(err, ErrNotReplicated) || attempt == 20 {
			t.Fatalf("Invalidate %q (attempt %d): %v", tag, attempt, err)
		}
	}
}

func epochEra(v string) string {
	if i := strings.LastIndexByte(v, ':'); i > 0 {
		return v[:i]
	}
	return v
}

// TestReplicaJoinsLater: the replica count is read at first use, but a
// replica that joins later is found by the next invalidation, which runs
// again waiting for it; from then on an invalidation the replica does not
// acknowledge fails (a failover could lose it) instead of returning nil.
func TestReplicaJoinsLater(t *testing.T) {
	if testing.Short() {
		t.Skip("starts redis-server processes")
	}
	master, _ := startRedis(t)
	mc := newClient(t, &redis.Options{Addr: master}, nil)
	b := New(newClient(t, &redis.Options{Addr: master}, nil), WithLogger(testLogger(t)), WithWaitTimeout(200*time.Millisecond))
	t.Cleanup(func() { _ = b.Close() })
	ctx := t.Context()
	warm(t, b)
	if st := b.srv.Load(); st.replicas != 0 {
		t.Fatalf("replicas at first use = %d, want 0", st.replicas)
	}
	_, port, _ := net.SplitHostPort(master)
	_, replicaProc := startRedis(t, "--replicaof", "127.0.0.1", port)
	inSync(t, mc)

	fill(t, b, "ns", "k", "v", 0, "t")
	invalidateAcked(t, b, "ns", "t")
	if l, err := b.Lookup(ctx, "ns", "k"); err != nil || l.Found {
		t.Fatalf("Lookup after the invalidation = found %v, %v; want a miss", l.Found, err)
	}
	if !b.srv.Load().lateReplica.Load() {
		t.Fatalf("the invalidation did not notice the replica")
	}
	if err := replicaProc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = replicaProc.Signal(syscall.SIGCONT) })
	if _, err := b.Invalidate(ctx, "ns", "t"); !errors.Is(err, ErrNotReplicated) {
		t.Fatalf("Invalidate with the replica frozen = %v, want ErrNotReplicated", err)
	}
}

// TestNextStep: a drain step is sized to the time it may block the server,
// within bounds, from the last step's duration measured by the server.
func TestNextStep(t *testing.T) {
	for _, c := range []struct {
		count int
		n     int64
		took  time.Duration
		want  int
	}{
		{256, 256, stepBudget, 256},         // on budget: the same
		{256, 256, 2 * stepBudget, 128},     // twice too long: half
		{256, 256, stepBudget / 4, 1000},    // a quarter: four times, capped at the limit
		{256, 250, stepBudget / 2, 512},     // half: twice
		{64, 64, 100 * stepBudget, minStep}, // a stalled server: never below minStep
		{256, 0, stepBudget, 256},           // an empty step says nothing
		{256, 10, 0, 256},                   // nor one the clock did not see
	} {
		if got := nextStep(c.count, c.n, c.took, 1000); got != c.want {
			t.Errorf("nextStep(%d, %d, %v, 1000) = %d, want %d", c.count, c.n, c.took, got, c.want)
		}
	}
}
