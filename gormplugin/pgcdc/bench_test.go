package pgcdc_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/depcache/go-depcache/backends/redisbackend"
	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/gormplugin"
	"github.com/depcache/go-depcache/gormplugin/pgcdc"
	"github.com/depcache/go-depcache/internal/redistest"
)

// BenchmarkInvalidationLag writes rows with raw SQL at a fixed rate (b.N
// writes, one per transaction) and reports the lag from each commit (its
// commit time in the stream) to its invalidation returning, p50 and p99.
// The backend is miniredis, or the Redis at REDIS_URL.
//
//	go test -run '^$' -bench InvalidationLag -benchtime 2000x ./gormplugin/pgcdc/
func BenchmarkInvalidationLag(b *testing.B) {
	for _, rate := range []int{100, 1000} {
		b.Run(fmt.Sprintf("rate=%d", rate), func(b *testing.B) { benchLag(b, rate) })
	}
}

func benchLag(b *testing.B, rate int) {
	m := benchManager(b)
	var mu sync.Mutex
	var lags []time.Duration
	e := newEnv(b, envConfig{manager: m, noRun: true})
	l := e.listener(pgcdc.WithObserver(func(ev pgcdc.Event) {
		if ev.Kind == pgcdc.EventInvalidated {
			lag := time.Since(ev.CommitTime)
			mu.Lock()
			lags = append(lags, lag)
			mu.Unlock()
		}
	}))
	e.run(l)
	e.db.SetMaxOpenConns(8)

	ticks := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range ticks {
				if _, err := e.db.Exec(`INSERT INTO users VALUES ($1, 'x')`, i); err != nil {
					b.Error(err)
				}
			}
		}()
	}
	b.ResetTimer()
	start := time.Now()
	late := 0
	for i := 0; i < b.N; i++ {
		due := start.Add(time.Duration(i) * time.Second / time.Duration(rate))
		if d := time.Until(due); d > 0 {
			time.Sleep(d) // pacing the load generator
		} else if d < -10*time.Millisecond {
			late++
		}
		ticks <- i + 1
	}
	close(ticks)
	wg.Wait()
	sync_(b, l, currentLSN(b, e.db))
	b.StopTimer()
	mu.Lock()
	defer mu.Unlock()
	if len(lags) < b.N {
		b.Fatalf("%d invalidations for %d writes", len(lags), b.N)
	}
	slices.Sort(lags)
	b.ReportMetric(float64(lags[len(lags)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lags[len(lags)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "writes/s")
	if late > b.N/10 {
		b.Logf("the load generator fell behind on %d of %d writes: the rate was not reached", late, b.N)
	}
}

// benchManager is a manager on miniredis, or on the Redis at REDIS_URL
// under a prefix the benchmark removes at its end.
func benchManager(b *testing.B) *depcache.Manager {
	url := os.Getenv("REDIS_URL")
	if url == "" {
		return redisManager(b, startMiniredis(b).Addr(), "bench")
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		b.Fatal(err)
	}
	opt.ContextTimeoutEnabled = true
	c := redis.NewClient(opt)
	prefix := fmt.Sprintf("pgcdcbench%d", rand.Int64())
	redistest.RemoveNamespaceAtEnd(b, url, prefix)
	m := depcache.New(redisbackend.New(c), depcache.WithPrefix(prefix))
	b.Cleanup(func() {
		m.Close()
		c.Close()
	})
	return m
}

// BenchmarkGORMWrite measures what a GORM write costs when the plugin and
// a listener both invalidate it: one Update by key (GORM's implicit
// transaction), one at a time, with the plugin alone and with the plugin
// and a listener on the same manager. With the listener the timer runs
// until it has processed the last write, so ns/op and allocs/op (the
// process's, the listener's goroutines included) count its work; it
// reports the tags and the invalidation calls it made per write.
//
//	go test -run '^$' -bench GORMWrite -benchmem -benchtime 2000x ./gormplugin/pgcdc/
func BenchmarkGORMWrite(b *testing.B) {
	for _, withListener := range []bool{false, true} {
		name := "plugin"
		if withListener {
			name = "plugin+listener"
		}
		b.Run(name, func(b *testing.B) {
			m := benchManager(b)
			e := newEnv(b, envConfig{manager: m, noRun: true})
			db, err := gorm.Open(postgres.Open(e.dsn), &gorm.Config{Logger: logger.Discard})
			if err != nil {
				b.Fatal(err)
			}
			sqlDB, _ := db.DB()
			b.Cleanup(func() { sqlDB.Close() })
			if err := db.AutoMigrate(&Account{}); err != nil {
				b.Fatal(err)
			}
			p := gormplugin.New(m)
			b.Cleanup(func() { p.Close() })
			if err := db.Use(p); err != nil {
				b.Fatal(err)
			}
			const rows = 64
			for i := 1; i <= rows; i++ {
				if err := db.Create(&Account{ID: int64(i), Name: "a"}).Error; err != nil {
					b.Fatal(err)
				}
			}
			var calls, tags atomic.Int64
			var l *pgcdc.Listener
			if withListener {
				l = e.listener(pgcdc.WithModels(db, &Account{}), pgcdc.WithObserver(func(ev pgcdc.Event) {
					if ev.Kind == pgcdc.EventInvalidated {
						calls.Add(1)
						tags.Add(int64(len(ev.Tags)))
					}
				}))
				e.run(l)
				sync_(b, l, currentLSN(b, e.db)) // past the rows above
				calls.Store(0)
				tags.Store(0)
			}
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				if err := db.Model(&Account{ID: int64(i%rows + 1)}).Update("name", fmt.Sprint(i)).Error; err != nil {
					b.Fatal(err)
				}
			}
			if l != nil {
				sync_(b, l, currentLSN(b, e.db))
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "writes/s")
			if l != nil {
				b.ReportMetric(float64(tags.Load())/float64(b.N), "listener-tags/write")
				b.ReportMetric(float64(calls.Load())/float64(b.N), "listener-calls/write")
			}
		})
	}
}
