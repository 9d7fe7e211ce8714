package redisbackend

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/backends/backendtest"
	"github.com/depcache/go-depcache/internal/redistest"
)

// aclCommands is the ACL command set the README and doc.go give for the user depcache
// connects as: every command it sends (outside and inside its scripts) and
// nothing else; no CONFIG, KEYS, FLUSH*, DEBUG or other admin command.
// Key and channel patterns are the test's: see aclKeysTight.
var aclCommands = "-@all +get +set +mget +unlink +del +exists +pttl +getrange +scan +zcard " +
	"+evalsha +eval +script|load +info +wait +publish +subscribe +zrem +ping +hello +auth +select" +
	" +time +hget +hset +hdel +hgetall +hlen +hrandfield +hscan +rename +zadd +zrangebyscore +zremrangebyscore +zscore +sadd +scard +sismember +smembers"

// safeLog is a logger whose output a test can read while the Backend logs.
type safeLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *safeLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *safeLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *safeLog) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startACLServer starts a redis-server whose default user is off, with an
// admin user (to read ACL LOG) and the user "app" under rule.
func startACLServer(t *testing.T, rule string) (addr string, admin *redis.Client) {
	t.Helper()
	args := []string{"--user", "default", "off", "--user", "admin", "on", ">admin-pw", "~*", "&*", "+@all",
		"--user", "app", "on", ">app-pw"}
	args = append(args, strings.Fields(rule)...)
	addr = redistest.Start(t, args...)
	admin = redis.NewClient(&redis.Options{Addr: addr, Username: "admin", Password: "admin-pw"})
	t.Cleanup(func() { admin.Close() })
	if err := admin.Do(t.Context(), "ACL", "LOG", "RESET").Err(); err != nil {
		t.Fatal(err)
	}
	return addr, admin
}

// aclDenials returns what ACL LOG recorded: the commands, keys and
// channels the user was refused.
func aclDenials(t *testing.T, admin *redis.Client) []string {
	t.Helper()
	v, err := admin.Do(context.Background(), "ACL", "LOG", "128").Slice()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range v {
		m := map[string]any{}
		switch e := e.(type) {
		case []any:
			for i := 0; i+1 < len(e); i += 2 {
				m[fmt.Sprint(e[i])] = e[i+1]
			}
		case map[any]any:
			for k, v := range e {
				m[fmt.Sprint(k)] = v
			}
		}
		out = append(out, fmt.Sprintf("%v %v (%v, %v)", m["reason"], m["object"], m["context"], m["username"]))
	}
	return out
}

// TestACLUserWithoutAdminCommands runs the conformance suite as an ACL
// user granted only aclCommands: no CONFIG (the policy is assumed, and
// said so once), nothing refused (ACL LOG stays empty), with and without
// fill leases.
func TestACLUserWithoutAdminCommands(t *testing.T) {
	rule := "~* &* " + aclCommands
	if r := os.Getenv("DEPCACHE_ACL_RULE"); r != "" {
		rule = r // to try another line by hand
	}
	addr, admin := startACLServer(t, rule)
	for _, lock := range []bool{false, true} {
		t.Run(fmt.Sprint("fillLock=", lock), func(t *testing.T) {
			var logs []*safeLog
			var mu sync.Mutex
			backendtest.Run(t, backendtest.Harness{
				New: func(t *testing.T) backends.Backend {
					l := &safeLog{}
					mu.Lock()
					logs = append(logs, l)
					mu.Unlock()
					c := newClient(t, &redis.Options{Addr: addr, Username: "app", Password: "app-pw"}, nil)
					opts := []Option{WithLogger(l.logger()), WithChunkSize(300)}
					if lock {
						opts = append(opts, WithFillLock())
					}
					return New(c, opts...)
				},
				MaxFillAge: DefaultMaxFillAge,
			})
			for _, l := range logs {
				s := l.String()
				if n := strings.Count(s, "CONFIG GET maxmemory-policy refused"); n > 1 {
					t.Errorf("the refused CONFIG GET was logged %d times by one Backend:\n%s", n, s)
				}
				if strings.Contains(s, "level=ERROR") {
					t.Errorf("an ACL user without CONFIG logged errors:\n%s", s)
				}
			}
		})
	}
	// CONFIG GET is refused by design (the policy is assumed instead).
	d := slices.DeleteFunc(aclDenials(t, admin), func(s string) bool { return strings.HasPrefix(s, "command config|get ") })
	if len(d) > 0 {
		t.Errorf("the ACL user was refused %d times; first: %q", len(d), d[:min(len(d), 10)])
	}
}

// aclKeysTight confines the user to the namespaces under "cache:" (the
// default prefix of depcache managers) and the keys and channels shared
// by every namespace: the epoch, its pruned key and the tier registry.
const aclKeysTight = "~cache:* ~depcache:epoch ~{depcache:epoch}:pruned ~depcache:epoch:tiers &depcache:epoch:tiers:*"

// TestACLUserConfinedToItsKeys: a user allowed only aclKeysTight and
// aclCommands does every operation, tiers included, with nothing refused
// but CONFIG GET, which is logged once and replaced by the assumed policy.
func TestACLUserConfinedToItsKeys(t *testing.T) {
	addr, admin := startACLServer(t, aclKeysTight+" "+aclCommands)
	opt := &redis.Options{Addr: addr, Username: "app", Password: "app-pw"}
	var log safeLog
	b := New(newClient(t, opt, nil), WithLogger(log.logger()), WithTierLease(notifyTestLease), WithAssumedPolicy("volatile-lru"))
	t.Cleanup(func() { b.Close() })
	other := New(newClient(t, opt, nil), WithLogger(testLogger(t)), WithTierLease(notifyTestLease))
	t.Cleanup(func() { other.Close() })
	ctx := t.Context()
	ns := "cache:users"

	var rec recorder
	lease, stop, err := other.Listen(&rec)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	waitNotify(t, "the tier lease", lease.Valid)

	l, err := b.Lookup(ctx, ns, "k")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Fill(ctx, ns, backends.Fill{Key: "k", Entry: backends.Entry{Value: []byte("v"), Deps: []string{"users::1"}}, Since: l.Epoch, Lease: l.Lease}); err != nil {
		t.Fatal(err)
	}
	if l, err := b.Lookup(ctx, ns, "k"); err != nil || !l.Found {
		t.Fatalf("Lookup after the fill = %+v, %v; want a hit", l, err)
	}
	if _, err := b.TTL(ctx, ns, "k"); err != nil {
		t.Fatal(err)
	}
	if n, err := b.Invalidate(ctx, ns, "users::1"); err != nil || n != 1 {
		t.Fatalf("Invalidate = %d, %v; want 1", n, err)
	}
	// A tag bigger than the chunk size is frozen (RENAME) and drained in
	// steps.
	big := New(newClient(t, opt, nil), WithLogger(testLogger(t)), WithChunkSize(2), WithAssumedPolicy("volatile-lru"))
	t.Cleanup(func() { big.Close() })
	for i := range 3 {
		fill(t, big, ns, fmt.Sprint("list", i), "v", 0, "users::*")
	}
	if n, err := big.Invalidate(ctx, ns, "users::*"); err != nil || n != 3 {
		t.Fatalf("Invalidate of a tag bigger than the chunk size = %d, %v; want 3", n, err)
	}
	if err := b.Notify(ctx, backends.Change{NS: ns, Tags: []string{"users::1"}}); err != nil {
		t.Fatal(err)
	}
	waitNotify(t, "the change at the tier", func() bool { c, _ := rec.state(); return len(c) > 0 })
	if _, err := b.Delete(ctx, ns, "k"); err != nil {
		t.Fatal(err)
	}
	if err := b.Prune(ctx, ns); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Clear(ctx, ns); err != nil {
		t.Fatal(err)
	}
	if got := b.Policy(); got != "volatile-lru" {
		t.Errorf("Policy() = %q, want the assumed volatile-lru", got)
	}
	if n := strings.Count(log.String(), "CONFIG GET maxmemory-policy refused"); n != 1 {
		t.Errorf("the refused CONFIG GET was logged %d times, want once:\n%s", n, log.String())
	}
	d := slices.DeleteFunc(aclDenials(t, admin), func(s string) bool { return strings.HasPrefix(s, "command config|get ") })
	if len(d) > 0 {
		t.Errorf("the ACL user was refused: %q", d)
	}
	// The same user outside its keys is refused: the line confines it.
	if err := b.c.Set(ctx, "elsewhere", "x", 0).Err(); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Errorf("SET outside the user's keys: %v, want NOPERM", err)
	}
}

// TestACLUserWithoutInfo: "+@all -@admin -@dangerous" also takes INFO
// away, which the scripts need to follow failovers and the Backend to see
// replicas: a single Redis says so once (an error) and keeps working, with
// the scripts that declare allow-oom.
func TestACLUserWithoutInfo(t *testing.T) {
	addr, _ := startACLServer(t, "~* &* +@all -@admin -@dangerous")
	var log safeLog
	b := New(newClient(t, &redis.Options{Addr: addr, Username: "app", Password: "app-pw"}, nil), WithLogger(log.logger()))
	t.Cleanup(func() { b.Close() })
	ctx := t.Context()
	for range 2 {
		if _, err := b.Invalidate(ctx, "cache:x", "t"); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(log.String(), "INFO refused"); n != 1 {
		t.Errorf("the refused INFO was logged %d times, want once:\n%s", n, log.String())
	}
	if srv := b.srv.Load(); srv == nil || srv.scripts != shebangScripts {
		t.Error("without INFO the Backend did not load the allow-oom (shebang) scripts of Redis 7")
	}
}

// aclClusterCommands are what Redis Cluster needs beyond aclCommands:
// go-redis reads the slot layout (CLUSTER SLOTS) and the commands' key
// positions (COMMAND).
var aclClusterCommands = "+cluster|slots +command"

// TestACLUserOnCluster runs every operation on the shared Cluster as a
// user of its own granted aclCommands and aclClusterCommands on every
// node: nothing but CONFIG GET is refused.
func TestACLUserOnCluster(t *testing.T) {
	tc := sharedCluster(t)
	user := randomName(t, "dcacl")
	rule := "~* &* " + aclCommands + " " + aclClusterCommands
	if r := os.Getenv("DEPCACHE_ACL_CLUSTER_RULE"); r != "" {
		rule = r
	}
	ctx := t.Context()
	c, admins := clusterACLUser(t, tc, user, rule)
	var log safeLog
	b := New(c, WithLogger(log.logger()))
	t.Cleanup(func() { b.Close() })
	ns := clusterNS(t, b, "cacl")
	l, err := b.Lookup(ctx, ns, "k")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Fill(ctx, ns, backends.Fill{Key: "k", Entry: backends.Entry{Value: []byte("v"), Deps: []string{"a", "b"}}, Since: l.Epoch, Lease: l.Lease}); err != nil {
		t.Fatal(err)
	}
	if err := b.Fill(ctx, ns, backends.Fill{Key: "k2", Entry: backends.Entry{Value: []byte("v"), Deps: []string{"a"}}, Current: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.TTL(ctx, ns, "k"); err != nil {
		t.Fatal(err)
	}
	if n, err := b.Invalidate(ctx, ns, "a"); err != nil || n != 2 {
		t.Fatalf("Invalidate = %d, %v; want 2", n, err)
	}
	if _, err := b.Delete(ctx, ns, "k"); err != nil {
		t.Fatal(err)
	}
	if err := b.Prune(ctx, ns); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Clear(ctx, ns); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "CONFIG GET maxmemory-policy refused") {
		t.Errorf("the refused CONFIG GET was not logged:\n%s", log.String())
	}
	for _, a := range admins {
		d := slices.DeleteFunc(aclDenials(t, a), func(s string) bool {
			return !strings.Contains(s, user) || strings.HasPrefix(s, "command config|get ")
		})
		if len(d) > 0 {
			t.Errorf("%s refused the ACL user: %q", a.Options().Addr, d)
		}
	}
}

// clusterACLUser creates user under rule on every node of tc (removed at
// the test's end) and returns a client as that user and admin clients of
// the nodes.
func clusterACLUser(t *testing.T, tc *testCluster, user, rule string) (*redis.ClusterClient, []*redis.Client) {
	t.Helper()
	var admins []*redis.Client
	var addrs []string
	for _, nd := range tc.live() {
		a := redis.NewClient(&redis.Options{Addr: nd.addr})
		t.Cleanup(func() {
			a.Do(context.Background(), "ACL", "DELUSER", user)
			a.Close()
		})
		args := []any{"ACL", "SETUSER", user, "on", ">pw"}
		for _, f := range strings.Fields(rule) {
			args = append(args, f)
		}
		if err := a.Do(t.Context(), args...).Err(); err != nil {
			t.Fatal(err)
		}
		admins = append(admins, a)
		addrs = append(addrs, nd.addr)
	}
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, Username: user, Password: "pw", ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	return c, admins
}

// TestACLUserWithoutInfoOnCluster: on Cluster a user without INFO cannot
// be served safely (no replicas seen, eras not bound to a replication
// history): every call fails with an error that says to grant +info, and
// the Backend logs it once.
func TestACLUserWithoutInfoOnCluster(t *testing.T) {
	tc := sharedCluster(t)
	user := randomName(t, "dcacl")
	c, _ := clusterACLUser(t, tc, user, "~* &* +@all -@admin -@dangerous")
	var log safeLog
	b := New(c, WithLogger(log.logger()))
	t.Cleanup(func() { b.Close() })
	for range 2 {
		_, err := b.Lookup(t.Context(), "cache:x", "k")
		if err == nil || !strings.Contains(err.Error(), "grant +info") {
			t.Fatalf("Lookup as a user without INFO: %v, want an error saying to grant +info", err)
		}
		if _, err := b.Invalidate(t.Context(), "cache:x", "t"); err == nil {
			t.Fatal("Invalidate as a user without INFO succeeded")
		}
	}
	if n := strings.Count(log.String(), "INFO refused"); n != 1 {
		t.Errorf("the refused INFO was logged %d times, want once:\n%s", n, log.String())
	}
}
