package redisbackend_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/backends/redisbackend"
	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/internal/redistest"
)

// The password the tests below put in REDIS_URL, and the pieces of it
// that no error or log line may contain.
const secret = "s3cr3t-P4ss"

var secretPieces = []string{"s3cr3t", "P4ss", "cr3t-P4"}

func assertNoSecret(t *testing.T, what, text string) {
	t.Helper()
	for _, p := range secretPieces {
		if strings.Contains(text, p) {
			t.Errorf("%s contains %q of the password:\n%s", what, p, text)
			return
		}
	}
}

// setEnv sets the Redis variables of env and clears the others.
func setEnv(t *testing.T, env map[string]string) {
	for _, k := range []string{"REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD", "REDIS_DB",
		redisbackend.EnvTLSCAFile, redisbackend.EnvTLSCertFile, redisbackend.EnvTLSKeyFile} {
		t.Setenv(k, env[k])
	}
}

// URLs that ParseURL refuses, each with the password somewhere an
// unescaped character or a bad part makes url.Parse or ParseURL quote.
func TestFromEnvParseErrorsNeverQuoteThePassword(t *testing.T) {
	urls := []string{
		"redis://user:" + secret + "/x@127.0.0.1:6379/0",   // "/" unescaped: the password becomes host:port
		"redis://user:123/" + secret + "@127.0.0.1:6379/0", // … or the path
		"redis://:" + secret + "#frag@127.0.0.1:6379/0",
		// "@" then "#" unescaped: the URL parses, with the text between
		// them as its host and the rest a fragment that go-redis ignores.
		"redis://:pa@" + secret + "#frag@127.0.0.1:6379/0",
		"redis://user:pa@" + secret + ":6379#@127.0.0.1:6379/0",
		"redis://user:" + secret + "%zz@127.0.0.1:6379/0", // a bad escape
		"redis://user:" + secret + "@127.0.0.1:6379/notanumber",
		"redis://user:" + secret + "@127.0.0.1:bad/0",
		"redis://user:" + secret + "@127.0.0.1:6379/0?bogus=1",
		"rediss://user:" + secret + "@127.0.0.1:6379/0?skip_verify=maybe",
		"redis://user:" + secret + "@127.0.0.1:6379/0?dial_timeout=soon",
		"htp://user:" + secret + "@127.0.0.1:6379",
		"user:" + secret + "@127.0.0.1:6379",
		"redis://user:" + secret + "@[::1:6379/0",
		"redis://us er:" + secret + "@127.0.0.1:6379/0",
		"redis://user:" + secret + "\x7f@127.0.0.1:6379/0",
	}
	for _, u := range urls {
		setEnv(t, map[string]string{"REDIS_URL": u})
		b, err := redisbackend.FromEnv()
		if err == nil {
			b.Close()
			t.Errorf("FromEnv with REDIS_URL %q succeeded", u)
			continue
		}
		if !strings.Contains(err.Error(), "REDIS_URL") {
			t.Errorf("error %q does not name REDIS_URL", err)
		}
		assertNoSecret(t, fmt.Sprintf("the error for %q", u), err.Error())
		if _, err := redisbackend.ParseURL(u); err == nil {
			t.Errorf("ParseURL(%q) succeeded", u)
		} else {
			assertNoSecret(t, fmt.Sprintf("ParseURL's error for %q", u), err.Error())
		}
	}
}

// captureLogs collects what the Backend's slog logger, depcache's and
// go-redis's own logger print while a test runs.
type captureLogs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *captureLogs) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

func (c *captureLogs) Printf(_ context.Context, format string, v ...any) {
	fmt.Fprintf(c, "go-redis: "+format+"\n", v...)
}

func (c *captureLogs) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

// goRedisLogs routes go-redis's logger to a capture for the test and back
// to standard error after it (go-redis offers no getter to restore the
// previous one).
var goRedisLogs struct {
	mu  sync.Mutex
	cur *captureLogs
}

type routedLogger struct{}

func (routedLogger) Printf(ctx context.Context, format string, v ...any) {
	goRedisLogs.mu.Lock()
	c := goRedisLogs.cur
	goRedisLogs.mu.Unlock()
	if c != nil {
		c.Printf(ctx, format, v...)
		return
	}
	fmt.Fprintf(os.Stderr, "redis: "+format+"\n", v...)
}

func captureGoRedis(t *testing.T, c *captureLogs) {
	redis.SetLogger(routedLogger{})
	goRedisLogs.mu.Lock()
	goRedisLogs.cur = c
	goRedisLogs.mu.Unlock()
	t.Cleanup(func() {
		goRedisLogs.mu.Lock()
		goRedisLogs.cur = nil
		goRedisLogs.mu.Unlock()
	})
}

// exercise runs every kind of cache call through a manager on the Backend
// the environment names and returns what they returned and logged.
func exercise(t *testing.T) string {
	t.Helper()
	var logs captureLogs
	captureGoRedis(t, &logs)
	b, err := redisbackend.FromEnv()
	if err != nil {
		return err.Error()
	}
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	m := depcache.New(b, depcache.WithLogger(log), depcache.WithPrefix("cache:sec"), depcache.WithTimeout(100*time.Millisecond),
		depcache.WithInvalidationTimeout(100*time.Millisecond), depcache.WithoutBreaker())
	var errs []string
	note := func(err error) {
		if err != nil {
			errs = append(errs, err.Error())
		}
	}
	ctx := context.Background()
	get := depcache.Memoize(func(ctx context.Context, id int) (int, error) {
		depcache.AddDependency(ctx, "t")
		return id, nil
	}, depcache.Using(m), depcache.KeyName("get"))
	for i := range 3 {
		_, err := get(ctx, i)
		note(err)
	}
	var s string
	_, err = m.Get(ctx, "k", &s)
	note(err)
	note(m.Set(ctx, "k", "v", 0, "t"))
	_, err = m.InvalidateDependency(ctx, "t")
	note(err)
	_, err = m.Clear(ctx)
	note(err)
	_, err = b.Epoch(ctx)
	note(err)
	note(m.Close())
	note(b.Close())
	return strings.Join(errs, "\n") + "\n" + logs.String()
}

// A Redis that refuses connections, one that never answers and one that
// refuses the password: neither the errors returned nor any log line
// (depcache's, the Backend's, go-redis's) holds the password of REDIS_URL
// or REDIS_PASSWORD.
func TestUnreachableRedisNeverPrintsThePassword(t *testing.T) {
	frozen, _ := redistest.Frozen(t)
	authed := redistest.Start(t, "--requirepass", "another-password")
	refused := "127.0.0.1:" + strconv.Itoa(redistest.FreePort(t))
	// Calls without a deadline (Clear, Epoch) end after the dial and read
	// timeouts: short ones keep the test short.
	const quick = "?dial_timeout=100ms&read_timeout=200ms"
	for name, env := range map[string]map[string]string{
		"refused":        {"REDIS_URL": "redis://user:" + secret + "@" + refused + "/0" + quick},
		"frozen":         {"REDIS_URL": "redis://:" + secret + "@" + frozen + "/0" + quick},
		"wrong password": {"REDIS_URL": "redis://:" + secret + "@" + authed + "/0"},
		"wrong user":     {"REDIS_URL": "redis://nobody:" + secret + "@" + authed + "/0"},
		"tls to plain":   {"REDIS_URL": "rediss://:" + secret + "@" + authed + "/0" + quick},
		"REDIS_PASSWORD": {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": strings.TrimPrefix(authed, "127.0.0.1:"), "REDIS_PASSWORD": secret},
	} {
		t.Run(name, func(t *testing.T) {
			setEnv(t, env)
			out := exercise(t)
			if strings.TrimSpace(out) == "" {
				t.Fatal("nothing was returned or logged: the test saw no failure to check")
			}
			assertNoSecret(t, "the errors and logs", out)
		})
	}
}

// AUTH with requirepass works from REDIS_URL and from REDIS_PASSWORD.
func TestFromEnvAuth(t *testing.T) {
	addr := redistest.Start(t, "--requirepass", secret)
	host, port, _ := strings.Cut(addr, ":")
	for name, env := range map[string]map[string]string{
		"url":      {"REDIS_URL": "redis://:" + secret + "@" + addr + "/3"},
		"variable": {"REDIS_HOST": host, "REDIS_PORT": port, "REDIS_PASSWORD": secret, "REDIS_DB": "3"},
	} {
		t.Run(name, func(t *testing.T) {
			setEnv(t, env)
			roundTrip(t)
		})
	}
}

// roundTrip fills, hits and invalidates through FromEnv's Backend.
func roundTrip(t *testing.T) {
	t.Helper()
	b, err := redisbackend.FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := t.Context()
	l, err := b.Lookup(ctx, "cache:sec", "k")
	if err != nil {
		t.Fatal(err)
	}
	f := backends.Fill{Key: "k", Entry: backends.Entry{Value: []byte("v"), Deps: []string{"t"}}, Since: l.Epoch, Lease: l.Lease}
	if err := b.Fill(ctx, "cache:sec", f); err != nil {
		t.Fatal(err)
	}
	if l, err := b.Lookup(ctx, "cache:sec", "k"); err != nil || !l.Found {
		t.Fatalf("Lookup after the fill = %+v, %v; want a hit", l, err)
	}
	if n, err := b.Invalidate(ctx, "cache:sec", "t"); err != nil || n != 1 {
		t.Fatalf("Invalidate = %d, %v; want 1", n, err)
	}
}

// TestFromEnvTLS runs FromEnv against a redis-server of the test's own
// that accepts TLS only, with a CA made by the test and client
// certificates required (tls-auth-clients yes, Redis's default), and AUTH.
func TestFromEnvTLS(t *testing.T) {
	files := redistest.NewTLSFiles(t)
	addr := redistest.StartTLS(t, files, "--requirepass", secret)
	url := "rediss://:" + secret + "@" + addr + "/0"
	withCert := map[string]string{
		"REDIS_URL":                 url,
		redisbackend.EnvTLSCAFile:   files.CA,
		redisbackend.EnvTLSCertFile: files.ClientCert,
		redisbackend.EnvTLSKeyFile:  files.ClientKey,
	}
	t.Run("CA file and client certificate", func(t *testing.T) {
		setEnv(t, withCert)
		roundTrip(t)
	})
	t.Run("skip_verify", func(t *testing.T) {
		env := map[string]string{"REDIS_URL": url + "?skip_verify=true",
			redisbackend.EnvTLSCertFile: files.ClientCert, redisbackend.EnvTLSKeyFile: files.ClientKey}
		setEnv(t, env)
		roundTrip(t)
	})
	// Refusals: the system roots do not hold the test's CA; the server
	// requires a client certificate; plain text to a TLS port.
	for name, env := range map[string]map[string]string{
		"system roots":   {"REDIS_URL": url, redisbackend.EnvTLSCertFile: files.ClientCert, redisbackend.EnvTLSKeyFile: files.ClientKey},
		"no client cert": {"REDIS_URL": url, redisbackend.EnvTLSCAFile: files.CA},
		"plain text":     {"REDIS_URL": "redis://:" + secret + "@" + addr + "/0"},
	} {
		t.Run(name, func(t *testing.T) {
			setEnv(t, env)
			b, err := redisbackend.FromEnv()
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
			defer cancel()
			_, err = b.Epoch(ctx)
			if err == nil {
				t.Fatal("Epoch succeeded")
			}
			assertNoSecret(t, "the error", err.Error())
			if name == "system roots" && !strings.Contains(err.Error(), "certificate") {
				t.Errorf("error %q does not say the certificate is not trusted", err)
			}
		})
	}
	// Bad TLS variables are errors that name them.
	for name, c := range map[string]struct {
		env  map[string]string
		want string
	}{
		"CA without rediss":  {map[string]string{"REDIS_URL": "redis://" + addr, redisbackend.EnvTLSCAFile: files.CA}, redisbackend.EnvTLSCAFile},
		"CA with REDIS_HOST": {map[string]string{"REDIS_HOST": "127.0.0.1", redisbackend.EnvTLSCAFile: files.CA}, redisbackend.EnvTLSCAFile},
		"missing CA file":    {map[string]string{"REDIS_URL": url, redisbackend.EnvTLSCAFile: files.CA + ".missing"}, redisbackend.EnvTLSCAFile},
		"CA not PEM":         {map[string]string{"REDIS_URL": url, redisbackend.EnvTLSCAFile: files.ClientKey + "x"}, redisbackend.EnvTLSCAFile},
		"cert without key":   {map[string]string{"REDIS_URL": url, redisbackend.EnvTLSCertFile: files.ClientCert}, redisbackend.EnvTLSKeyFile},
		"key without cert":   {map[string]string{"REDIS_URL": url, redisbackend.EnvTLSKeyFile: files.ClientKey}, redisbackend.EnvTLSCertFile},
		"key not matching":   {map[string]string{"REDIS_URL": url, redisbackend.EnvTLSCertFile: files.ClientCert, redisbackend.EnvTLSKeyFile: files.ServerKey}, redisbackend.EnvTLSCertFile},
	} {
		t.Run(name, func(t *testing.T) {
			setEnv(t, c.env)
			b, err := redisbackend.FromEnv()
			if err == nil {
				b.Close()
				t.Fatal("FromEnv succeeded")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not name %s", err, c.want)
			}
			assertNoSecret(t, "the error", err.Error())
		})
	}
}

// A call without a deadline on a server that never answers ends after the
// dial and read timeouts of FromEnv's client, not after go-redis has
// retried the read MaxRetries times (4 read timeouts per round trip).
func TestFromEnvBoundsCallsWithoutDeadline(t *testing.T) {
	addr, _ := redistest.Frozen(t)
	const read = 500 * time.Millisecond
	setEnv(t, map[string]string{"REDIS_URL": "redis://" + addr + "/0?dial_timeout=100ms&read_timeout=" + read.String()})
	b, err := redisbackend.FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, call := range []struct {
		name string
		fn   func() error
	}{
		{"Epoch", func() error { _, err := b.Epoch(context.Background()); return err }},
		{"Clear", func() error { _, err := b.Clear(context.Background(), "cache:x"); return err }},
	} {
		start := time.Now()
		err := call.fn()
		took := time.Since(start)
		if err == nil {
			t.Errorf("%s on a frozen server succeeded", call.name)
		}
		// One read timeout and a dial timeout; 4 read timeouts are 2 s.
		if took >= 3*read {
			t.Errorf("%s without a deadline on a frozen server took %v, want under %v (read timeout %v)", call.name, took, 3*read, read)
		}
	}
}
