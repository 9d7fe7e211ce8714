package depcache_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/depcache"
)

type User struct {
	ID   int
	Name string
}

// A memoized function tags its result with what it read; invalidating the
// tag removes the result.
func ExampleMemoize() {
	ctx := context.Background()
	m := depcache.New(memory.New(), depcache.WithName("users"))
	defer m.Close()

	db := map[int]string{42: "Ada"}
	getUser := depcache.Memoize(func(ctx context.Context, id int) (User, error) {
		fmt.Println("query user", id)
		depcache.AddDependency(ctx, fmt.Sprintf("users::%d", id))
		return User{ID: id, Name: db[id]}, nil
	}, depcache.Using(m), depcache.KeyName("getUser"))

	u, _ := getUser(ctx, 42)
	fmt.Println(u.Name)
	u, _ = getUser(ctx, 42) // served from the cache
	fmt.Println(u.Name)

	db[42] = "Grace"
	m.InvalidateDependency(ctx, "users::42")
	u, _ = getUser(ctx, 42)
	fmt.Println(u.Name)
	// Output:
	// query user 42
	// Ada
	// Ada
	// query user 42
	// Grace
}

// A cached function that calls another inherits its dependencies, on a miss
// and on a hit.
func ExampleMemoize_nested() {
	ctx := context.Background()
	m := depcache.New(memory.New(), depcache.WithName("nested"))
	defer m.Close()

	profile := depcache.Memoize(func(ctx context.Context, id int) (string, error) {
		depcache.AddDependency(ctx, fmt.Sprintf("users::%d", id))
		return "profile", nil
	}, depcache.Using(m), depcache.KeyName("profile"))
	page := depcache.Memoize(func(ctx context.Context, id int) (string, error) {
		p, err := profile(ctx, id)
		return "page with " + p, err
	}, depcache.Using(m), depcache.KeyName("page"))

	page(ctx, 7)
	n, _ := m.InvalidateDependency(ctx, "users::7")
	fmt.Println("entries removed:", n)
	// Output: entries removed: 2
}

var ErrNoSuchUser = errors.New("no such user")

// Errors are cached only when named; a cached error still matches errors.Is.
func ExampleCacheErrors() {
	ctx := context.Background()
	m := depcache.New(memory.New(), depcache.WithName("errors"))
	defer m.Close()

	lookup := depcache.Memoize(func(ctx context.Context, id int) (User, error) {
		fmt.Println("query")
		depcache.AddDependency(ctx, fmt.Sprintf("users::%d", id))
		return User{}, fmt.Errorf("user %d: %w", id, ErrNoSuchUser)
	}, depcache.Using(m), depcache.KeyName("lookup"), depcache.CacheErrors(ErrNoSuchUser))

	lookup(ctx, 9)
	_, err := lookup(ctx, 9)
	fmt.Println(err, errors.Is(err, ErrNoSuchUser))
	// Output:
	// query
	// user 9: no such user true
}

// Fetch caches under a key of your choosing.
func ExampleFetch() {
	ctx := context.Background()
	m := depcache.New(memory.New(), depcache.WithName("fetch"))
	defer m.Close()

	load := func(ctx context.Context) (int, error) {
		depcache.AddDependency(ctx, "stats")
		fmt.Println("computing")
		return 99, nil
	}
	v, _ := depcache.Fetch(ctx, m, "stats:daily", load)
	v, _ = depcache.Fetch(ctx, m, "stats:daily", load)
	fmt.Println(v)
	// Output:
	// computing
	// 99
}
