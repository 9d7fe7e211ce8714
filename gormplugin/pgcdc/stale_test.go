package pgcdc_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/gormplugin"
	"github.com/depcache/go-depcache/gormplugin/pgcdc"
	"github.com/depcache/go-depcache/internal/testenv"
)

type Hot struct {
	ID  int `gorm:"primaryKey;autoIncrement:false"`
	Ver int64
}

func (Hot) TableName() string { return "hot" }

// freshness is the stale-read check for writes that bypass GORM: every
// acknowledged write is recorded with the WAL position read after its
// commit, and a read must return, for its row, at least the newest version
// whose position the listener had processed when the read began.
type freshness struct {
	mu    sync.Mutex
	acked map[int][]ack // per row, in commit order
}

type ack struct {
	lsn pgcdc.LSN
	ver int64
}

func (f *freshness) record(id int, lsn pgcdc.LSN, ver int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.acked[id] = append(f.acked[id], ack{lsn, ver})
}

// required is the version a read of row id that begins at position p must
// at least see.
func (f *freshness) required(id int, p pgcdc.LSN) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var v int64
	for _, a := range f.acked[id] {
		if a.lsn <= p && a.ver > v {
			v = a.ver
		}
	}
	return v
}

type staleRig struct {
	e    *env
	db   *gorm.DB
	read func(context.Context, int) (Hot, error)
	hits atomic.Int64
}

func newStaleRig(t *testing.T, run bool) *staleRig {
	e := newEnv(t, envConfig{noRun: !run})
	db, err := gorm.Open(postgres.Open(e.dsn), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, _ := db.DB()
	t.Cleanup(func() { sqlDB.Close() })
	if err := db.AutoMigrate(&Hot{}); err != nil {
		t.Fatal(err)
	}
	for id := 1; id <= 4; id++ {
		if err := db.Create(&Hot{ID: id}).Error; err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Use(gormplugin.New(e.m)); err != nil {
		t.Fatal(err)
	}
	r := &staleRig{e: e, db: db}
	r.read = depcache.Memoize(func(ctx context.Context, id int) (Hot, error) {
		var h Hot
		err := db.WithContext(ctx).First(&h, id).Error
		return h, err
	}, depcache.Using(e.m), depcache.KeyName("hot"), depcache.OnResult(func(res depcache.Result) {
		if res.Hit {
			r.hits.Add(1)
		}
	}))
	return r
}

// write bumps row id's version with raw SQL on its own connection and
// returns the new version and the position after its commit.
func (r *staleRig) write(t testing.TB, id int) (int64, pgcdc.LSN) {
	var ver int64
	if err := r.e.db.QueryRow(`UPDATE hot SET ver = ver + 1 WHERE id = $1 RETURNING ver`, id).Scan(&ver); err != nil {
		t.Error(err)
		return 0, 0
	}
	return ver, currentLSN(t, r.e.db)
}

// A writer bypassing GORM, readers through the plugin: no read that began
// after the listener processed a commit returns data from before it.
func TestNoStaleReadAfterProcessed(t *testing.T) {
	writes := 400
	if testenv.Long() {
		writes = 5000
	}
	r := newStaleRig(t, true)
	f := &freshness{acked: map[int][]ack{}}
	ctx := context.Background()

	var writers, readers sync.WaitGroup
	stop := make(chan struct{})
	readersGone := make(chan struct{})
	// Each write waits for a read since the last one, so that reads
	// interleave with writes however the scheduler favours either.
	tokens := make(chan struct{}, 4)
	var reads, violations atomic.Int64
	for w := 0; w < 2; w++ {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for i := 0; i < writes/2; i++ {
				select {
				case <-tokens:
				case <-readersGone:
					return
				}
				id := 1 + (i+w)%4
				ver, lsn := r.write(t, id)
				f.record(id, lsn, ver)
			}
		}()
	}
	for g := 0; g < 3; g++ {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := 1 + (i+g)%4
				want := f.required(id, r.e.l.Processed())
				h, err := r.read(ctx, id)
				if err != nil {
					t.Error(err)
					return
				}
				reads.Add(1)
				select {
				case tokens <- struct{}{}:
				default:
				}
				if h.Ver < want {
					violations.Add(1)
					t.Errorf("row %d: read version %d, but %d had been processed before the read began", id, h.Ver, want)
				}
			}
		}()
	}
	go func() {
		readers.Wait()
		close(readersGone)
	}()
	writers.Wait()
	sync_(t, r.e.l, currentLSN(t, r.e.db))
	close(stop)
	<-readersGone
	t.Logf("%d writes, %d reads (%d cache hits), %d stale", writes, reads.Load(), r.hits.Load(), violations.Load())
	if r.hits.Load() == 0 {
		t.Fatal("no read was served from the cache: the check proved nothing")
	}
	// Converged: every row reads as the database has it.
	for id := 1; id <= 4; id++ {
		var db Hot
		if err := r.db.First(&db, id).Error; err != nil {
			t.Fatal(err)
		}
		h, err := r.read(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if h.Ver != db.Ver {
			t.Errorf("row %d: cached %d, database %d after the listener caught up", id, h.Ver, db.Ver)
		}
	}
}

// The check bites: without the listener, a write that bypasses GORM leaves
// the cached row stale, and checking against the commit position (not the
// listener's) reports it.
func TestStaleCheckBitesWithoutListener(t *testing.T) {
	r := newStaleRig(t, false)
	f := &freshness{acked: map[int][]ack{}}
	ctx := context.Background()
	stale := 0
	for i := 0; i < 5; i++ {
		if _, err := r.read(ctx, 1); err != nil { // fills
			t.Fatal(err)
		}
		ver, lsn := r.write(t, 1)
		f.record(1, lsn, ver)
		h, err := r.read(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		if h.Ver < f.required(1, lsn) {
			stale++
		}
	}
	if stale == 0 {
		t.Fatal("no stale read without the listener: the check cannot see one")
	}
	t.Log(fmt.Sprintf("%d of 5 reads stale without the listener", stale))
}
