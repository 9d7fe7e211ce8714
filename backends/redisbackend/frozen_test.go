package redisbackend

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/internal/redistest"
)

// opTimeout is the cache timeout the frozen-server tests give each call.
// They assert that a call returns within frozenBound, twenty times more:
// still far below the 3-5 s a client ignoring deadlines waits, and wide
// enough for a slow machine.
const (
	opTimeout   = 50 * time.Millisecond
	frozenBound = 20 * opTimeout
)

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// boundedCall runs fn with a context of opTimeout and fails the test if it
// succeeds or takes longer than frozenBound.
func boundedCall(t *testing.T, what string, fn func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	start := time.Now()
	err := fn(ctx)
	if took := time.Since(start); took > frozenBound {
		t.Errorf("%s on a frozen server took %v, want at most %v (its context allowed %v)", what, took, frozenBound, opTimeout)
	}
	if err == nil {
		t.Errorf("%s on a frozen server succeeded", what)
	}
}

// A server that accepts connections and never answers holds each call no
// longer than its context, on a client given to New with
// ContextTimeoutEnabled and on the one FromEnv builds.
func TestFrozenServerCallsEndAtTheirDeadline(t *testing.T) {
	addr, _ := redistest.Frozen(t)
	fromEnv := func(t *testing.T) *Backend {
		t.Setenv("REDIS_URL", "redis://"+addr+"/15")
		b, err := FromEnv()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}
	given := func(t *testing.T) *Backend {
		c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
		t.Cleanup(func() { c.Close() })
		return New(c, WithLogger(quietLog))
	}
	for name, open := range map[string]func(*testing.T) *Backend{"FromEnv": fromEnv, "New": given} {
		t.Run(name, func(t *testing.T) {
			b := open(t)
			// Twice each: the first call also dials and learns the server.
			for range 2 {
				boundedCall(t, "Lookup", func(ctx context.Context) error {
					_, err := b.Lookup(ctx, "ns", "k")
					return err
				})
				boundedCall(t, "Epoch", func(ctx context.Context) error {
					_, err := b.Epoch(ctx)
					return err
				})
				boundedCall(t, "Invalidate", func(ctx context.Context) error {
					_, err := b.Invalidate(ctx, "ns", "tag")
					return err
				})
			}
		})
	}
}

// FromEnv's client honours deadlines and bounds calls without one.
func TestFromEnvClientOptions(t *testing.T) {
	opt, err := envOptions(func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	withEnvTimeouts(opt)
	if !opt.ContextTimeoutEnabled {
		t.Error("ContextTimeoutEnabled is off")
	}
	if opt.DialTimeout != envDialTimeout || opt.ReadTimeout != envReadTimeout || opt.WriteTimeout != envWriteTimeout {
		t.Errorf("timeouts dial %v read %v write %v, want %v %v %v", opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout, envDialTimeout, envReadTimeout, envWriteTimeout)
	}
	// A URL's own timeouts stay.
	opt, err = envOptions(func(k string) (string, bool) {
		return "redis://127.0.0.1:6379/0?read_timeout=7s", k == "REDIS_URL"
	})
	if err != nil {
		t.Fatal(err)
	}
	withEnvTimeouts(opt)
	if opt.ReadTimeout != 7*time.Second {
		t.Errorf("read timeout %v, want the URL's 7s", opt.ReadTimeout)
	}
}

// A go-redis client without ContextTimeoutEnabled is not used for reads
// and fills: Lookup and Fill fail at once with an error that says what to
// set, sending nothing; with the option, the same client kinds are
// accepted.
func TestNewRejectsClientsThatIgnoreDeadlines(t *testing.T) {
	addr, accepted := redistest.Frozen(t)
	clients := func(on bool) map[string]redis.UniversalClient {
		return map[string]redis.UniversalClient{
			"client":   redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: on}),
			"cluster":  redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{addr}, ContextTimeoutEnabled: on}),
			"failover": redis.NewFailoverClient(&redis.FailoverOptions{MasterName: "m", SentinelAddrs: []string{addr}, ContextTimeoutEnabled: on}),
			"ring":     redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": addr}, ContextTimeoutEnabled: on}),
		}
	}
	for name, c := range clients(false) {
		b := New(c, WithLogger(quietLog))
		_, err := b.Lookup(context.Background(), "ns", "k")
		if !errors.Is(err, ErrNoContextTimeout) {
			t.Errorf("%s without ContextTimeoutEnabled: Lookup: %v, want ErrNoContextTimeout", name, err)
		}
		err = b.Fill(context.Background(), "ns", backends.Fill{Key: "k"})
		if !errors.Is(err, ErrNoContextTimeout) {
			t.Errorf("%s without ContextTimeoutEnabled: Fill: %v, want ErrNoContextTimeout", name, err)
		}
		c.Close()
	}
	if n := accepted(); n != 0 {
		t.Errorf("rejected clients opened %d connections, want none", n)
	}
	for name, c := range clients(true) {
		if err := clientHonoursDeadlines(c); err != nil {
			t.Errorf("%s with ContextTimeoutEnabled: %v", name, err)
		}
		c.Close()
	}
}

// A caller that arrives while another learns the server (first use) waits
// no longer than its own context, even when the first caller's context is
// far longer: with a mutex it would wait for the other's whole deadline.
func TestFirstUseWaitIsBoundedByTheCallersContext(t *testing.T) {
	addr, accepted := redistest.Frozen(t)
	c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	defer c.Close()
	b := New(c, WithLogger(quietLog))
	// The first caller may wait twice as long as the second is allowed
	// to take in all.
	first, cancel := context.WithTimeout(context.Background(), 2*frozenBound)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = b.Invalidate(first, "ns", "tag")
	}()
	defer func() { <-done }()
	// The first caller is connecting once the server has its connection.
	for accepted() == 0 {
		select {
		case <-done:
			t.Fatal("the first caller returned before connecting")
		case <-time.After(time.Millisecond):
		}
	}
	boundedCall(t, "Lookup behind a connecting caller", func(ctx context.Context) error {
		_, err := b.Lookup(ctx, "ns", "k")
		return err
	})
}

// The same bound holds for a Cluster client and for a failover client whose
// sentinel is frozen.
func TestFrozenServerOtherClientKinds(t *testing.T) {
	addr, _ := redistest.Frozen(t)
	cluster := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{addr}, ContextTimeoutEnabled: true})
	defer cluster.Close()
	// Closing a failover client whose sentinel never answers takes go-redis
	// a few seconds; that is not a cache call, and not measured.
	failover := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: "depcache", SentinelAddrs: []string{addr}, ContextTimeoutEnabled: true})
	defer failover.Close()
	for name, c := range map[string]redis.UniversalClient{"cluster": cluster, "failover": failover} {
		t.Run(name, func(t *testing.T) {
			b := New(c, WithLogger(quietLog))
			for range 2 {
				boundedCall(t, "Lookup", func(ctx context.Context) error {
					_, err := b.Lookup(ctx, "ns", "k")
					return err
				})
				boundedCall(t, "Invalidate", func(ctx context.Context) error {
					_, err := b.Invalidate(ctx, "ns", "tag")
					return err
				})
			}
		})
	}
}

// dialCounter is a go-redis hook that counts dial attempts.
type dialCounter struct{ n atomic.Int64 }

func (d *dialCounter) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		d.n.Add(1)
		return next(ctx, network, addr)
	}
}
func (d *dialCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (d *dialCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// Against a Redis that refuses connections, FromEnv's client makes one dial
// where go-redis would make 5, 100 ms apart: an invalidation (a GORM
// write's, under a context without deadline) fails in a few refused dials
// instead of 3.3 s.
func TestFromEnvGivesUpOnARefusedConnectionAtOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: dials are refused
	for _, k := range []string{"REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD", "REDIS_DB", EnvTLSCAFile, EnvTLSCertFile, EnvTLSKeyFile} {
		t.Setenv(k, "")
	}
	t.Setenv("REDIS_URL", "redis://"+addr+"/0")
	b, err := FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	dials := &dialCounter{}
	b.c.(*redis.Client).AddHook(dials)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := b.Invalidate(ctx, "ns", "t"); err == nil {
		t.Fatal("Invalidate succeeded against a refused connection")
	}
	// The first-use pipeline fails it: go-redis sends a pipeline in 1 +
	// MaxRetries (3) attempts of two dials each, 8 dials; with its default
	// of 5 dials 100 ms apart for each, 40 (3.3 s).
	if n := dials.n.Load(); n > 8 {
		t.Errorf("%d dial attempts for one failed Invalidate, want at most 8", n)
	}
}
