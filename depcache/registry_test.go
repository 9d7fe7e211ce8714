package depcache_test

import (
	"context"
	"strings"
	"testing"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/depcache"
)

func TestRegistry(t *testing.T) {
	t.Setenv(depcache.EnvBackend, "memory")
	reg := depcache.NewRegistry()
	defer reg.Close()
	a, err := reg.GetOrCreate("users", depcache.WithName("ignored"), depcache.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	if a.Name() != "users" || a.Prefix() != "cache:users" {
		t.Fatalf("name %q prefix %q; the name argument wins", a.Name(), a.Prefix())
	}
	b, _ := reg.GetOrCreate("users", depcache.WithPrefix("other"))
	if a != b || b.Prefix() != "cache:users" {
		t.Fatal("an existing name must return the existing manager and ignore options")
	}
	if got, ok := reg.Lookup("users"); !ok || got != a {
		t.Fatal("Lookup did not find the manager")
	}
	c, _ := reg.GetOrCreate("posts", depcache.WithLogger(quiet))
	if c.Backend() != a.Backend() {
		t.Fatal("managers configured alike from the environment must share one backend")
	}
	if depcache.New(memory.New(), depcache.WithName("free")) == nil {
		t.Fatal("New returned nil")
	}
	if _, ok := reg.Lookup("free"); ok {
		t.Fatal("New registered its manager")
	}
	a.Close()
	if _, ok := reg.Lookup("users"); ok {
		t.Fatal("a closed manager stays registered")
	}
	// The shared backend stays open while posts uses it.
	if err := c.Set(context.Background(), "k", 1, 0, "t"); err != nil {
		t.Fatal(err)
	}
	d, _ := reg.Default()
	if d.Name() != "default" {
		t.Fatalf("Default is named %q", d.Name())
	}
}

func TestEnvironmentErrorsNameTheVariable(t *testing.T) {
	for _, tc := range []struct{ env, value string }{
		{depcache.EnvEnabled, "maybe"},
		{depcache.EnvSerializer, "pickle"},
		{depcache.EnvBackend, "cassandra"},
		{"REDIS_PORT", "sixty"},
		{"REDIS_DB", "-x"},
	} {
		t.Run(tc.env, func(t *testing.T) {
			t.Setenv("REDIS_URL", "") // else REDIS_URL wins over REDIS_PORT and REDIS_DB
			t.Setenv(tc.env, tc.value)
			reg := depcache.NewRegistry()
			defer reg.Close()
			_, err := reg.Default()
			if err == nil || !strings.Contains(err.Error(), tc.env) {
				t.Fatalf("%s=%q: err = %v; want an error naming the variable", tc.env, tc.value, err)
			}
		})
	}
}

func TestEnvironmentConfiguresDefault(t *testing.T) {
	t.Setenv(depcache.EnvBackend, "memory")
	t.Setenv(depcache.EnvEnabled, "false")
	t.Setenv(depcache.EnvSerializer, "msgpack")
	t.Setenv(depcache.EnvPrefix, "svc")
	reg := depcache.NewRegistry()
	defer reg.Close()
	m, err := reg.Default()
	if err != nil {
		t.Fatal(err)
	}
	if m.Enabled() || m.Prefix() != "svc:default" {
		t.Fatalf("enabled=%v prefix=%q", m.Enabled(), m.Prefix())
	}
	var calls counter
	f := depcache.Memoize(func(ctx context.Context, x int) (int, error) {
		calls.n.Add(1)
		return x, nil
	}, depcache.InRegistry(reg))
	f(context.Background(), 1)
	f(context.Background(), 1)
	if calls.calls() != 2 {
		t.Fatal("DEP_CACHE_ENABLED=false still cached")
	}
}

func TestRegisteredBackendFromEnvironment(t *testing.T) {
	opened := 0
	backends.Register("test-store", func() (backends.Backend, error) {
		opened++
		return memory.New(), nil
	})
	defer backends.Unregister("test-store")
	t.Setenv(depcache.EnvBackend, "test-store")
	reg := depcache.NewRegistry()
	defer reg.Close()
	if _, err := reg.GetOrCreate("x"); err != nil {
		t.Fatal(err)
	}
	reg.GetOrCreate("y")
	if opened != 1 {
		t.Fatalf("opened %d backends for one configuration", opened)
	}
}

func TestBadEnvironmentInNewIsReportedOnUse(t *testing.T) {
	t.Setenv(depcache.EnvEnabled, "perhaps")
	m := depcache.New(memory.New(), depcache.WithLogger(quiet))
	err := m.Set(context.Background(), "k", 1, 0)
	if err == nil || !strings.Contains(err.Error(), depcache.EnvEnabled) {
		t.Fatalf("Set on a manager with a bad environment: %v", err)
	}
}
