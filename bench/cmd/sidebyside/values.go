package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	gocache "github.com/eko/gocache/lib/v4/cache"
	gostore "github.com/eko/gocache/lib/v4/store"
	gocacheredis "github.com/eko/gocache/store/redis/v4"
	rediscache "github.com/go-redis/cache/v9"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/depcache/go-depcache/backends/redisbackend"
	"github.com/depcache/go-depcache/bench"
	"github.com/depcache/go-depcache/depcache"
)

// The second baselines of the hit table: a GET and the decode no cache of
// a struct can skip.
const (
	rawJSONName    = "raw go-redis GET + json.Unmarshal"
	rawMsgpackName = "raw go-redis GET + msgpack.Unmarshal"
)

// Post is the cached value: about 170 bytes of JSON.
type Post struct {
	ID        int      `json:"id"`
	AuthorID  int      `json:"author_id"`
	Title     string   `json:"title"`
	Body      string   `json:"body"`
	Tags      []string `json:"tags"`
	Published bool     `json:"published"`
}

var thePost = Post{ID: 1, AuthorID: 7, Title: "Caching by dependency in Go",
	Body: "Every entry is tagged with the rows it was computed from; a write invalidates them.",
	Tags: []string{"go", "redis", "cache"}, Published: true}

func postJSON() []byte {
	b, _ := json.Marshal(thePost)
	return b
}

// newManager is a depcache manager on a client of its own under the run's prefix.
func (e *env) newManager(name string, pool int, opts ...depcache.Option) (*depcache.Manager, *bench.Client, error) {
	c, err := e.client("bench-"+name, pool)
	if err != nil {
		return nil, nil, err
	}
	b := redisbackend.New(c.Client, redisbackend.WithLogger(e.quiet))
	base := []depcache.Option{depcache.WithPrefix(e.key(name)), depcache.WithLogger(e.quiet), depcache.WithStrictErrors()}
	if e.opTimeout > 0 {
		base = append(base, depcache.WithTimeout(e.opTimeout))
	}
	m := depcache.New(b, append(base, opts...)...)
	if e.backends == nil {
		e.backends = map[*depcache.Manager]*redisbackend.Backend{}
	}
	e.backends[m] = b
	return m, c, waitTier(m)
}

// closeManager clears what m wrote, closes it and its backend.
func (e *env) closeManager(m *depcache.Manager) {
	m.Clear(context.Background())
	m.Close()
	if b := e.backends[m]; b != nil {
		b.Close()
		delete(e.backends, m)
	}
}

// waitTier waits until a manager's in-process tier serves (a Redis tier
// waits a lease after it registers), if it has one.
func waitTier(m *depcache.Manager) error {
	if m.Err() != nil {
		return m.Err()
	}
	deadline := time.Now().Add(10 * time.Second)
	for m.LocalCacheEnabled() && !m.LocalCacheServing() {
		if time.Now().After(deadline) {
			return errors.New("the in-process tier never started serving")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// hitContenders builds every contender for a warm hit of the same post,
// with the raw GET first (the baseline). pool sizes every client's pool.
func hitContenders(ctx context.Context, e *env, pool int) ([]contender, func(), error) {
	var out []contender
	var closers []func()
	done := func() {
		for _, f := range closers {
			f()
		}
	}
	value := postJSON()

	raw, err := e.client("bench-raw", pool)
	if err != nil {
		return nil, done, err
	}
	rawKey := e.key("raw", "post:1")
	if err := raw.Set(ctx, rawKey, value, time.Hour).Err(); err != nil {
		return nil, done, err
	}
	rawMsgpackKey := e.key("raw", "post:1:msgpack")
	packed, err := msgpack.Marshal(thePost)
	if err != nil {
		return nil, done, err
	}
	if err := raw.Set(ctx, rawMsgpackKey, packed, time.Hour).Err(); err != nil {
		return nil, done, err
	}
	rawEpochKey := e.key("raw", "epoch")
	if err := raw.Set(ctx, rawEpochKey, "1:era", time.Hour).Err(); err != nil {
		return nil, done, err
	}
	out = append(out,
		contender{"raw go-redis GET", raw.Trips, func(ctx context.Context) error {
			return raw.Get(ctx, rawKey).Err()
		}},
		// What two parts of a depcache hit cost on their own: a deadline
		// per operation (a runtime timer armed and stopped), and an MGET of
		// the entry and a second key instead of a GET.
		contender{"raw go-redis GET under a per-op context.WithTimeout", raw.Trips, func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			return raw.Get(ctx, rawKey).Err()
		}},
		contender{"raw go-redis MGET of the value and a second key", raw.Trips, func(ctx context.Context) error {
			return raw.MGet(ctx, rawKey, rawEpochKey).Err()
		}},
		contender{rawJSONName, raw.Trips, func(ctx context.Context) error {
			b, err := raw.Get(ctx, rawKey).Bytes()
			if err != nil {
				return err
			}
			var p Post
			return json.Unmarshal(b, &p)
		}},
		contender{rawMsgpackName, raw.Trips, func(ctx context.Context) error {
			b, err := raw.Get(ctx, rawMsgpackKey).Bytes()
			if err != nil {
				return err
			}
			var p Post
			return msgpack.Unmarshal(b, &p)
		}})

	// depcache: Manager.Get, a Memoize'd function, Fetch.
	mGet, cGet, err := e.newManager("dcget", pool)
	if err != nil {
		return nil, done, err
	}
	closers = append(closers, func() { e.closeManager(mGet) })
	if err := mGet.Set(ctx, "post:1", thePost, time.Hour, "posts::1"); err != nil {
		return nil, done, err
	}
	out = append(out, contender{"depcache Manager.Get", cGet.Trips, func(ctx context.Context) error {
		var p Post
		found, err := mGet.Get(ctx, "post:1", &p)
		if err == nil && !found {
			err = errors.New("miss")
		}
		return err
	}})

	// The same with the msgpack codec: the decode a hit cannot avoid is the
	// codec's, and msgpack's costs less than JSON's.
	mPack, cPack, err := e.newManager("dcpack", pool, depcache.WithCodec(depcache.Msgpack))
	if err != nil {
		return nil, done, err
	}
	closers = append(closers, func() { e.closeManager(mPack) })
	if err := mPack.Set(ctx, "post:1", thePost, time.Hour, "posts::1"); err != nil {
		return nil, done, err
	}
	out = append(out, contender{"depcache Manager.Get, msgpack codec", cPack.Trips, func(ctx context.Context) error {
		var p Post
		found, err := mPack.Get(ctx, "post:1", &p)
		if err == nil && !found {
			err = errors.New("miss")
		}
		return err
	}})

	mMemo, cMemo, err := e.newManager("dcmemo", pool)
	if err != nil {
		return nil, done, err
	}
	closers = append(closers, func() { e.closeManager(mMemo) })
	getPost := depcache.Memoize(func(ctx context.Context, id int) (Post, error) {
		depcache.AddDependency(ctx, fmt.Sprint("posts::", id))
		return thePost, nil
	}, depcache.Using(mMemo), depcache.KeyName("getPost"), depcache.TTL(time.Hour))
	out = append(out, contender{"depcache Memoize", cMemo.Trips, func(ctx context.Context) error {
		_, err := getPost(ctx, 1)
		return err
	}})

	mFetch, cFetch, err := e.newManager("dcfetch", pool)
	if err != nil {
		return nil, done, err
	}
	closers = append(closers, func() { e.closeManager(mFetch) })
	out = append(out, contender{"depcache Fetch", cFetch.Trips, func(ctx context.Context) error {
		_, err := depcache.Fetch(ctx, mFetch, "post:1", func(ctx context.Context) (Post, error) {
			depcache.AddDependency(ctx, "posts::1")
			return thePost, nil
		}, depcache.TTL(time.Hour))
		return err
	}})

	// depcache with its in-process tier (WithLocalCache): Manager.Get and
	// a Memoize'd function.
	mTier, cTier, err := e.newManager("dctier", pool, depcache.WithLocalCache(1000))
	if err != nil {
		return nil, done, err
	}
	closers = append(closers, func() { e.closeManager(mTier) })
	if err := mTier.Set(ctx, "post:1", thePost, time.Hour, "posts::1"); err != nil {
		return nil, done, err
	}
	out = append(out, contender{"depcache Manager.Get + WithLocalCache", cTier.Trips, func(ctx context.Context) error {
		var p Post
		found, err := mTier.Get(ctx, "post:1", &p)
		if err == nil && !found {
			err = errors.New("miss")
		}
		return err
	}})
	tierPost := depcache.Memoize(func(ctx context.Context, id int) (Post, error) {
		depcache.AddDependency(ctx, fmt.Sprint("posts::", id))
		return thePost, nil
	}, depcache.Using(mTier), depcache.KeyName("getPost"), depcache.TTL(time.Hour))
	out = append(out, contender{"depcache Memoize + WithLocalCache", cTier.Trips, func(ctx context.Context) error {
		_, err := tierPost(ctx, 1)
		return err
	}})

	// go-redis/cache, without and with its in-process TinyLFU.
	for _, local := range []bool{false, true} {
		name := "go-redis/cache"
		opts := &rediscache.Options{}
		if local {
			name += " + local TinyLFU"
			opts.LocalCache = rediscache.NewTinyLFU(1000, time.Minute)
		}
		c, err := e.client("bench-"+name, pool)
		if err != nil {
			return nil, done, err
		}
		opts.Redis = c.Client
		rc := rediscache.New(opts)
		key := e.key("grc", fmt.Sprint(local), "post:1")
		if err := rc.Set(&rediscache.Item{Ctx: ctx, Key: key, Value: thePost, TTL: time.Hour}); err != nil {
			return nil, done, err
		}
		out = append(out, contender{name, c.Trips, func(ctx context.Context) error {
			var p Post
			return rc.Get(ctx, key, &p)
		}})
	}

	// eko/gocache with its Redis store (values as JSON strings).
	gc, err := e.client("bench-gocache", pool)
	if err != nil {
		return nil, done, err
	}
	gcache := gocache.New[string](gocacheredis.NewRedis(gc.Client, gostore.WithExpiration(time.Hour)))
	gkey := e.key("gocache", "post:1")
	if err := gcache.Set(ctx, gkey, string(value), gostore.WithTags([]string{e.key("posts::1")})); err != nil {
		return nil, done, err
	}
	out = append(out, contender{"eko/gocache (redis store)", gc.Trips, func(ctx context.Context) error {
		s, err := gcache.Get(ctx, gkey)
		if err != nil {
			return err
		}
		var p Post
		return json.Unmarshal([]byte(s), &p)
	}})

	// The naive simple-dep-cache layout.
	nc, err := e.client("bench-naive", pool)
	if err != nil {
		return nil, done, err
	}
	naive := &bench.Naive{C: nc.Client, Prefix: e.key("naive")}
	if err := naive.Set(ctx, "post:1", value, time.Hour, "posts::1"); err != nil {
		return nil, done, err
	}
	out = append(out, contender{"naive dep cache (simple-dep-cache layout)", nc.Trips, func(ctx context.Context) error {
		b, err := naive.Get(ctx, "post:1")
		if err != nil {
			return err
		}
		var p Post
		return json.Unmarshal(b, &p)
	}})
	return out, done, nil
}

// hitWorkload: a warm hit from one goroutine.
func hitWorkload(ctx context.Context, e *env, w io.Writer) error {
	cs, done, err := hitContenders(ctx, e, 0)
	defer done()
	if err != nil {
		return err
	}
	rows, err := interleave(ctx, cs, e.rounds, 50)
	if err != nil {
		return err
	}
	printLatency(w, fmt.Sprintf("1. Warm hit, 1 goroutine (%d-byte JSON value)", len(postJSON())), "raw GET", rows,
		rawJSONName, rawMsgpackName)
	return nil
}

// fillWorkload: storing a new entry with 10 dependencies.
func fillWorkload(ctx context.Context, e *env, w io.Writer) error {
	cs, done, err := fillContenders(ctx, e)
	defer done()
	if err != nil {
		return err
	}
	rounds := max(e.rounds/4, 10)
	rows, err := interleave(ctx, cs, rounds, 20)
	if err != nil {
		return err
	}
	printLatency(w, "2. Fill: store a new entry with 10 dependencies", "raw SET", rows)
	return nil
}

// fillContenders builds every contender for a fill, the raw SET first.
func fillContenders(ctx context.Context, e *env) (cs []contender, done func(), err error) {
	var closers []func()
	done = func() {
		for _, f := range closers {
			f()
		}
	}
	value := postJSON()
	deps := make([]string, 10)
	for i := range deps {
		deps[i] = fmt.Sprint("fill::", i)
	}
	var n atomic.Int64 // a new key for every op, shared by all
	next := func() string { return fmt.Sprint("f", n.Add(1)) }
	const ttl = 10 * time.Minute // leftovers of an interrupted run expire

	raw, err := e.client("bench-fill-raw", 0)
	if err != nil {
		return nil, done, err
	}
	cs = []contender{{"raw go-redis SET", raw.Trips, func(ctx context.Context) error {
		return raw.Set(ctx, e.key("rawfill", next()), value, ttl).Err()
	}}}

	mSet, cSet, err := e.newManager("fillset", 0)
	if err != nil {
		return nil, done, err
	}
	closers = append(closers, func() { e.closeManager(mSet) })
	cs = append(cs, contender{"depcache Manager.Set", cSet.Trips, func(ctx context.Context) error {
		return mSet.Set(ctx, next(), thePost, ttl, deps...)
	}})

	mMemo, cMemo, err := e.newManager("fillmemo", 0)
	if err != nil {
		return nil, done, err
	}
	closers = append(closers, func() { e.closeManager(mMemo) })
	miss := depcache.Memoize(func(ctx context.Context, k string) (Post, error) {
		depcache.AddDependency(ctx, deps...)
		return thePost, nil
	}, depcache.Using(mMemo), depcache.KeyName("fill"), depcache.TTL(ttl))
	cs = append(cs, contender{"depcache Memoize miss (lookup + fill)", cMemo.Trips, func(ctx context.Context) error {
		_, err := miss(ctx, next())
		return err
	}})

	nc, err := e.client("bench-fill-naive", 0)
	if err != nil {
		return nil, done, err
	}
	naive := &bench.Naive{C: nc.Client, Prefix: e.key("naivefill")}
	cs = append(cs, contender{"naive dep cache (SETEX, SADD+EXPIRE ×10)", nc.Trips, func(ctx context.Context) error {
		return naive.Set(ctx, next(), value, ttl, deps...)
	}})

	gc, err := e.client("bench-fill-gocache", 0)
	if err != nil {
		return nil, done, err
	}
	gcache := gocache.New[string](gocacheredis.NewRedis(gc.Client, gostore.WithExpiration(ttl)))
	gtags := make([]string, len(deps))
	for i, d := range deps {
		gtags[i] = e.key(d)
	}
	cs = append(cs, contender{"eko/gocache Set with 10 tags", gc.Trips, func(ctx context.Context) error {
		return gcache.Set(ctx, e.key("gocachefill", next()), string(value), gostore.WithTags(gtags))
	}})

	rc, err := e.client("bench-fill-grc", 0)
	if err != nil {
		return nil, done, err
	}
	grc := rediscache.New(&rediscache.Options{Redis: rc.Client})
	cs = append(cs, contender{"go-redis/cache Set (no tags)", rc.Trips, func(ctx context.Context) error {
		return grc.Set(&rediscache.Item{Ctx: ctx, Key: e.key("grcfill", next()), Value: thePost, TTL: ttl})
	}})

	return cs, done, nil
}
