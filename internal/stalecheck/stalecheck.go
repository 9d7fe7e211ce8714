// Package stalecheck is a harness that looks for stale reads: concurrent
// writers change a few hot rows through GORM while concurrent readers read
// them through depcache.Memoize and the GORM plugin (or, with
// Config.CachedReads, gormplugin.Cached queries), and every read is
// checked against what had been committed and invalidated before it began.
//
// It checks three properties:
//
//   - (a) no stale read: a read returns, for every row, a state at least as
//     new as the last write to that row acknowledged (committed, and its
//     invalidation returned) before the read began; an absent row is a
//     state too;
//   - (b) convergence: once the writers stop and fills settle, every cached
//     query equals a direct database read;
//   - (c) no uncommitted read: a value written by a transaction that rolled
//     back is never read.
//
// Modes that break the protocol on purpose (Naive, InvalidateBeforeCommit)
// show that the harness bites.
//
// With Config.CDC (PostgreSQL with wal_level=logical) more writers bypass
// GORM — the same writes in plain SQL on their own connections — and a
// gormplugin/pgcdc listener invalidates them; a raw write is acknowledged
// once the listener's Processed passed pg_current_wal_lsn() read after its
// commit, so (a) checks the listener's guarantee. CDC.AckAtCommit breaks
// it on purpose.
package stalecheck

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"gorm.io/gorm"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/gormplugin"
)

// Mode selects the protocol under test.
type Mode int

const (
	// Guarded is depcache as shipped.
	Guarded Mode = iota
	// Naive fills without the stale-fill guard: the epoch is read at fill
	// time, as a plain SET would behave.
	Naive
	// InvalidateBeforeCommit invalidates inside the transaction, before
	// COMMIT, instead of after it.
	InvalidateBeforeCommit
)

func (m Mode) String() string {
	return [...]string{"guarded", "naive", "invalidate-before-commit"}[m]
}

// HotRow is the table the harness writes and reads.
type HotRow struct {
	ID  int `gorm:"primaryKey;autoIncrement:false"`
	Ver int64
	Grp int
	Val string `gorm:"size:32"`
}

const poison = "poison"

// Config sets up one run.
type Config struct {
	DB *gorm.DB // an empty database; the harness creates its table
	// PlainDB is a second handle on the same database without the plugin:
	// InvalidateBeforeCommit writes through it (GORM callbacks belong to a
	// handle, and the plugin would invalidate after COMMIT as well).
	PlainDB *gorm.DB
	Backend backends.Backend
	Mode    Mode
	Rows    int // hot rows (default 10)
	Readers int // default 8
	Writers int // default 4
	Reads   int // total reads before the writers stop (default 100,000)
	// Prefix is the key prefix of the run's manager (default
	// "cache:stalecheck-<random>").
	Prefix string
	// Jitter is the longest pause injected between a fill's query and its
	// store, and between a commit and its invalidation (default 200µs).
	// Pauses widen the race windows; the checks never rely on them.
	Jitter time.Duration

	// Others are more managers, as other processes would have: each with
	// its own database handle (on the same database) and backend (on the
	// same store), sharing the first manager's prefix. Readers are spread
	// over all managers; writers write through the first.
	Others []Other
	// Options apply to every manager (WithLocalCache, for instance).
	Options []depcache.Option
	// CDC, on PostgreSQL with wal_level=logical, adds writers that bypass
	// GORM and a pgcdc listener that invalidates their writes.
	CDC *CDC
	// PluginOptions apply to every manager's GORM plugin
	// (gormplugin.WithConjunctionTags, for instance).
	PluginOptions []gormplugin.Option
	// Moves adds reads of each group's rows (Where("grp = ?"): a
	// conjunctive list), writes that move rows between groups (by key, and
	// mass updates of grp), and inserts into random groups.
	Moves bool
	// CachedReads makes the readers' lookups by id and lists (conjunctive
	// ones with Moves) gormplugin.Cached queries instead of
	// depcache.Memoize around GORM queries: the same read shapes, keyed
	// from GORM's clauses and tagged by the plugin's read path.
	CachedReads bool
	// Midway, if set, runs once when half the reads are done and, where
	// managers have in-process tiers, the tiers have served (to kill a
	// subscription mid-run, for instance).
	Midway func()
}

// Other is one more manager of a run.
type Other struct {
	DB      *gorm.DB
	Backend backends.Backend
}

// Report is what a run counted.
type Report struct {
	Mode                 Mode
	Reads, Writes        int64
	RawWrites            int64 // of Writes, made with plain SQL (CDC)
	Stale                int64 // (a)
	Diverged             int64 // (b)
	PoisonRead           int64 // (c)
	Hits, Misses, Stored uint64
	StaleFills           uint64
	LocalHits            uint64 // of Hits, served from in-process tiers
	LocalHitsAtMidway    uint64 // LocalHits when Midway ran
	Elapsed              time.Duration
}

func (r Report) String() string {
	return fmt.Sprintf("%s: %d reads (%d hits, %d misses), %d writes (%d with plain SQL), %d fills stored, %d refused as stale in %v; violations: (a) stale %d, (b) diverged %d, (c) poison %d",
		r.Mode, r.Reads, r.Hits, r.Misses, r.Writes, r.RawWrites, r.Stored, r.StaleFills, r.Elapsed.Round(time.Millisecond), r.Stale, r.Diverged, r.PoisonRead)
}

// state is one committed state of a row. Every write gives a row a new
// ver, so ver names the state.
type state struct {
	ver     int64
	present bool
	grp     int
}

// ledger records, per row, the committed states in commit order, and the
// last one acknowledged. Writers of a row hold its lock from choosing a
// version to acknowledging it, so each row's states are totally ordered.
type ledger struct {
	locks   []sync.Mutex
	mu      sync.RWMutex
	history [][]state
	acked   []state
}

func (l *ledger) commit(row int, s state) {
	l.mu.Lock()
	l.history[row] = append(l.history[row], s)
	l.mu.Unlock()
}

func (l *ledger) ack(row int, s state) {
	l.mu.Lock()
	l.acked[row] = s
	l.mu.Unlock()
}

func (l *ledger) snapshot() []state {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return append([]state(nil), l.acked...)
}

// fresh reports whether got is at least as new as acked: the same state or
// one committed after it.
func (l *ledger) fresh(row int, acked state, got state) bool {
	if got.present {
		return got.ver >= acked.ver
	}
	if !acked.present {
		return true
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	for _, s := range l.history[row] {
		if !s.present && s.ver >= acked.ver {
			return true
		}
	}
	return false
}

// freshOutside reports whether a read of group g that did not see row
// row is fresh: some state of the row at least as new as acked is absent
// or in another group.
func (l *ledger) freshOutside(row int, acked state, g int) bool {
	if !(acked.present && acked.grp == g) {
		return true
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	for _, s := range l.history[row] {
		if s.ver >= acked.ver && !(s.present && s.grp == g) {
			return true
		}
	}
	return false
}

// Run runs the harness once.
func Run(ctx context.Context, cfg Config) (rep Report, err error) {
	if cfg.Rows == 0 {
		cfg.Rows = 10
	}
	if cfg.Readers == 0 {
		cfg.Readers = 8
	}
	if cfg.Writers == 0 {
		cfg.Writers = 4
	}
	if cfg.Reads == 0 {
		cfg.Reads = 100_000
	}
	if cfg.Jitter == 0 {
		cfg.Jitter = 200 * time.Microsecond
	}
	rep = Report{Mode: cfg.Mode}
	jb := &jitterBackend{Backend: cfg.Backend, max: cfg.Jitter, naive: cfg.Mode == Naive}
	name := fmt.Sprintf("stalecheck-%d", rand.Int64())
	if cfg.Prefix == "" {
		cfg.Prefix = "cache:" + name
	}
	// No breaker unless cfg.Options asks for one: lookups that time out
	// on a loaded machine (-race, parallel packages) would open it, and a
	// short run would then check uncached reads only.
	opts := append([]depcache.Option{depcache.WithName(name), depcache.WithPrefix(cfg.Prefix), depcache.WithoutBreaker()}, cfg.Options...)
	m := depcache.New(jb, opts...)
	defer m.Close()
	defer m.Clear(context.WithoutCancel(ctx))

	readDB := cfg.DB
	writeDB := cfg.DB
	if err := readDB.AutoMigrate(&HotRow{}); err != nil {
		return rep, err
	}
	readDB.Session(&gorm.Session{AllowGlobalUpdate: true}).Delete(&HotRow{})
	plugin := gormplugin.New(m, cfg.PluginOptions...)
	readDB = readDB.Session(&gorm.Session{NewDB: true})
	if err := readDB.Use(plugin); err != nil && !errors.Is(err, gorm.ErrRegistered) {
		return rep, err
	}
	if cfg.Mode == InvalidateBeforeCommit {
		// Writes go around the plugin; the harness invalidates by hand.
		if cfg.PlainDB == nil {
			return rep, errors.New("stalecheck: InvalidateBeforeCommit needs PlainDB")
		}
		writeDB = cfg.PlainDB
	} else {
		writeDB = readDB
	}

	var seq atomic.Int64
	led := &ledger{locks: make([]sync.Mutex, cfg.Rows), history: make([][]state, cfg.Rows), acked: make([]state, cfg.Rows)}
	for i := range cfg.Rows {
		v := seq.Add(1)
		if err := readDB.Create(&HotRow{ID: i + 1, Ver: v, Grp: i % 3, Val: "ok"}).Error; err != nil {
			return rep, err
		}
		led.history[i] = []state{{v, true, i % 3}}
		led.acked[i] = state{v, true, i % 3}
	}
	var cdc *cdcRun
	if cfg.CDC != nil {
		cc := *cfg.CDC
		if cdc, err = startCDC(ctx, &cc, m, readDB); err != nil {
			return rep, err
		}
		defer func() { err = errors.Join(err, cdc.stop()) }()
	}

	type reader struct {
		m    *depcache.Manager
		byID func(context.Context, int) (HotRow, error)
		list func(context.Context, int) ([]HotRow, error)
	}
	newReader := func(m *depcache.Manager, readDB *gorm.DB) reader {
		if cfg.CachedReads {
			cached := gormplugin.Cached(time.Hour)
			byID := func(ctx context.Context, id int) (HotRow, error) {
				var r HotRow
				err := readDB.WithContext(ctx).Scopes(cached).First(&r, id).Error
				return r, err
			}
			list := func(ctx context.Context, grp int) ([]HotRow, error) {
				var rs []HotRow
				q := readDB.WithContext(ctx).Scopes(cached).Order("id")
				if grp >= 0 {
					q = q.Where("grp = ?", grp)
				}
				err := q.Find(&rs).Error
				return rs, err
			}
			return reader{m, byID, list}
		}
		byID := depcache.Memoize(func(ctx context.Context, id int) (HotRow, error) {
			var r HotRow
			err := readDB.WithContext(ctx).First(&r, id).Error
			return r, err
		}, depcache.Using(m), depcache.KeyName("stalecheck.byID"), depcache.CacheErrors(gorm.ErrRecordNotFound))
		list := depcache.Memoize(func(ctx context.Context, grp int) ([]HotRow, error) {
			var rs []HotRow
			q := readDB.WithContext(ctx).Order("id")
			if grp >= 0 {
				q = q.Where("grp = ?", grp)
			}
			err := q.Find(&rs).Error
			return rs, err
		}, depcache.Using(m), depcache.KeyName("stalecheck.list"))
		return reader{m, byID, list}
	}
	readers := []reader{newReader(m, readDB)}
	for _, o := range cfg.Others {
		om := depcache.New(&jitterBackend{Backend: o.Backend, max: cfg.Jitter, naive: cfg.Mode == Naive}, opts...)
		defer om.Close()
		odb := o.DB.Session(&gorm.Session{NewDB: true})
		if err := odb.Use(gormplugin.New(om, cfg.PluginOptions...)); err != nil && !errors.Is(err, gorm.ErrRegistered) {
			return rep, err
		}
		readers = append(readers, newReader(om, odb))
	}

	start := time.Now()
	var (
		reads, writes, stale, poisoned atomic.Int64
		rawWrites                      atomic.Int64
		wg                             sync.WaitGroup
		errOnce                        sync.Once
		runErr                         error
	)
	fail := func(err error) { errOnce.Do(func() { runErr = err }) }
	stop := make(chan struct{})

	// checkGroup checks a read of group g's rows.
	checkGroup := func(snap []state, rows []HotRow, g int) {
		seen := make([]bool, cfg.Rows)
		for _, r := range rows {
			i := r.ID - 1
			if i < 0 || i >= cfg.Rows {
				continue
			}
			seen[i] = true
			if r.Val == poison {
				poisoned.Add(1)
			}
			if r.Grp != g || !led.fresh(i, snap[i], state{ver: r.Ver, present: true}) {
				stale.Add(1)
			}
		}
		for i := range cfg.Rows {
			if !seen[i] && !led.freshOutside(i, snap[i], g) {
				stale.Add(1)
			}
		}
	}

	check := func(snap []state, rows []HotRow, all bool, only int) {
		seen := make([]bool, cfg.Rows)
		for _, r := range rows {
			i := r.ID - 1
			if i < 0 || i >= cfg.Rows {
				continue
			}
			seen[i] = true
			if r.Val == poison {
				poisoned.Add(1)
			}
			if !led.fresh(i, snap[i], state{ver: r.Ver, present: true}) {
				stale.Add(1)
			}
		}
		if !all {
			if only >= 0 && !seen[only] && !led.fresh(only, snap[only], state{present: false}) {
				stale.Add(1)
			}
			return
		}
		for i := range cfg.Rows {
			if !seen[i] && !led.fresh(i, snap[i], state{present: false}) {
				stale.Add(1)
			}
		}
	}

	var midway sync.Once
	var atMidway atomic.Uint64
	for ri := range cfg.Readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
			byID, list := readers[ri%len(readers)].byID, readers[ri%len(readers)].list
			for reads.Load() < int64(cfg.Reads) {
				if cfg.Midway != nil && reads.Load() >= int64(cfg.Reads/2) {
					var local uint64
					for _, r := range readers {
						local += r.m.Stats().LocalHits
					}
					if local > 0 || !readers[0].m.LocalCacheServing() && reads.Load() >= int64(cfg.Reads*3/4) {
						midway.Do(func() {
							atMidway.Store(local)
							cfg.Midway()
						})
					}
				}
				snap := led.snapshot()
				if rng.IntN(2) == 0 {
					id := rng.IntN(cfg.Rows)
					r, err := byID(ctx, id+1)
					switch {
					case errors.Is(err, gorm.ErrRecordNotFound):
						check(snap, nil, false, id)
					case err != nil:
						fail(fmt.Errorf("byID: %w", err))
						return
					default:
						check(snap, []HotRow{r}, false, id)
					}
				} else {
					grp := -1
					if cfg.Moves {
						grp = rng.IntN(4) - 1
					}
					rs, err := list(ctx, grp)
					if err != nil {
						fail(fmt.Errorf("list: %w", err))
						return
					}
					if grp < 0 {
						check(snap, rs, true, -1)
					} else {
						checkGroup(snap, rs, grp)
					}
				}
				reads.Add(1)
			}
		}()
	}

	var ww sync.WaitGroup
	for range cfg.Writers {
		ww.Add(1)
		go func() {
			defer ww.Done()
			rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := write(ctx, cfg, rng, writeDB, m, led, &seq); err != nil {
					fail(err)
					return
				}
				writes.Add(1)
				pause(4 * cfg.Jitter) // let reads hit between writes
			}
		}()
	}
	if cdc != nil {
		for range cdc.cfg.Writers {
			ww.Add(1)
			go func() {
				defer ww.Done()
				rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
				for {
					select {
					case <-stop:
						return
					default:
					}
					if err := cdc.rawWrite(ctx, cfg, rng, led, &seq); err != nil {
						fail(err)
						return
					}
					writes.Add(1)
					rawWrites.Add(1)
					pause(4 * cfg.Jitter)
				}
			}()
		}
	}
	wg.Wait()
	close(stop)
	ww.Wait()
	if runErr != nil {
		return rep, runErr
	}
	if cdc != nil {
		// (b) compares with the database: the listener must have caught up
		// (it has, unless AckAtCommit).
		if err := cdc.settle(ctx); err != nil {
			return rep, err
		}
	}

	// (b): every cached query equals a direct read, through every manager.
	var diverged int64
	for _, r := range readers {
		for i := range cfg.Rows {
			var direct HotRow
			derr := cfg.DB.First(&direct, i+1).Error
			cached, cerr := r.byID(ctx, i+1)
			if (derr == nil) != (cerr == nil) || derr == nil && cached != direct {
				diverged++
			}
		}
		var direct []HotRow
		cfg.DB.Order("id").Find(&direct)
		cachedList, _ := r.list(ctx, -1)
		if fmt.Sprint(direct) != fmt.Sprint(cachedList) {
			diverged++
		}
		for g := 0; cfg.Moves && g < 3; g++ {
			var direct []HotRow
			cfg.DB.Where("grp = ?", g).Order("id").Find(&direct)
			cachedList, _ := r.list(ctx, g)
			if fmt.Sprint(direct) != fmt.Sprint(cachedList) {
				diverged++
			}
		}
	}

	rep.Reads, rep.Writes, rep.RawWrites = reads.Load(), writes.Load(), rawWrites.Load()
	rep.Stale, rep.PoisonRead, rep.Diverged = stale.Load(), poisoned.Load(), diverged
	for _, r := range readers {
		st := r.m.Stats()
		rep.Hits, rep.Misses, rep.Stored, rep.StaleFills = rep.Hits+st.Hits, rep.Misses+st.Misses, rep.Stored+st.Sets, rep.StaleFills+st.StaleFills
		rep.LocalHits += st.LocalHits
	}
	rep.LocalHitsAtMidway = atMidway.Load()
	rep.Elapsed = time.Since(start)
	return rep, nil
}

// write makes one random write and acknowledges it once committed and
// invalidated.
func write(ctx context.Context, cfg Config, rng *rand.Rand, db *gorm.DB, m *depcache.Manager, led *ledger, seq *atomic.Int64) error {
	table := "hot_rows"
	manual := cfg.Mode == InvalidateBeforeCommit
	kind := rng.IntN(10)
	if kind == 9 { // a mass UPDATE … WHERE grp = ? on a non-key column
		grp := rng.IntN(3)
		// Every row's lock: with Moves, which rows are in grp changes.
		for i := range cfg.Rows {
			led.locks[i].Lock()
		}
		defer func() {
			for i := range cfg.Rows {
				led.locks[i].Unlock()
			}
		}()
		v := seq.Add(1)
		set := map[string]any{"ver": v}
		if cfg.Moves && rng.IntN(2) == 0 {
			set["grp"] = (grp + 1 + rng.IntN(2)) % 3 // moves the group's rows
		}
		var changed []HotRow
		err := db.Transaction(func(tx *gorm.DB) error {
			if err := tx.Where("grp = ?", grp).Find(&changed).Error; err != nil {
				return err
			}
			for _, r := range changed {
				g := r.Grp
				if ng, ok := set["grp"].(int); ok {
					g = ng
				}
				led.commit(r.ID-1, state{v, true, g})
			}
			if err := tx.Model(&HotRow{}).Where("grp = ?", grp).Updates(set).Error; err != nil {
				return err
			}
			if manual {
				_, err := m.InvalidateDependency(ctx, gormplugin.TableTag(table), gormplugin.ListTag(table))
				pause(cfg.Jitter) // between the invalidation and COMMIT
				return err
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("mass update: %w", err)
		}
		for _, r := range changed {
			g := r.Grp
			if ng, ok := set["grp"].(int); ok {
				g = ng
			}
			led.ack(r.ID-1, state{v, true, g})
		}
		return nil
	}

	i := rng.IntN(cfg.Rows)
	led.locks[i].Lock()
	defer led.locks[i].Unlock()
	id := i + 1
	var cur []HotRow
	if err := db.Where("id = ?", id).Find(&cur).Error; err != nil {
		return err
	}
	exists := len(cur)
	v := seq.Add(1)
	grp := i % 3
	if exists > 0 {
		grp = cur[0].Grp
	}
	move := cfg.Moves && kind >= 5 && kind < 8 // an update by key that moves the row
	if cfg.Moves && (move || exists == 0) {
		grp = (grp + 1 + rng.IntN(2)) % 3
	}
	next := state{v, true, grp}
	switch {
	case kind == 8:
	case exists == 0:
	case kind < 2:
		next = state{v, false, grp}
	}
	// Record the state before COMMIT: a reader may see it as soon as the
	// database has it, before this writer is back.
	led.commit(i, next)
	err := db.Transaction(func(tx *gorm.DB) error {
		switch {
		case kind == 8: // a transaction that writes poison, reads, and rolls back
			if exists == 0 {
				return nil
			}
			tx.Model(&HotRow{ID: id}).Update("val", poison)
			var r HotRow
			tx.WithContext(gormplugin.TxContext(tx)).First(&r, id)
			return errRollback
		case exists == 0: // insert
			if err := tx.Create(&HotRow{ID: id, Ver: v, Grp: grp, Val: "ok"}).Error; err != nil {
				return err
			}
		case kind < 2: // delete
			if err := tx.Delete(&HotRow{ID: id}).Error; err != nil {
				return err
			}
		case move: // update by key of the group's column
			if err := tx.Model(&HotRow{ID: id}).Updates(map[string]any{"ver": v, "grp": grp}).Error; err != nil {
				return err
			}
		default: // update by key
			if err := tx.Model(&HotRow{ID: id}).Update("ver", v).Error; err != nil {
				return err
			}
		}
		if manual {
			_, err := m.InvalidateDependency(ctx, gormplugin.RowTag(table, id), gormplugin.ListTag(table))
			pause(cfg.Jitter) // between the invalidation and COMMIT
			return err
		}
		return nil
	})
	switch {
	case errors.Is(err, errRollback) || kind == 8:
		return nil
	case err != nil:
		return fmt.Errorf("write row %d: %w", id, err)
	}
	led.ack(i, next)
	return nil
}

var errRollback = errors.New("roll back")

// jitterBackend widens the race windows: it pauses before each fill (after
// the computation's query) and before each invalidation (after the commit).
// In Naive mode it also drops the fill guard, by presenting the epoch
// current at fill time instead of the one read before the computation.
type jitterBackend struct {
	backends.Backend
	max   time.Duration
	naive bool
}

func (j *jitterBackend) pause() { pause(j.max) }

// pause sleeps up to max about half the time. It only widens race windows;
// no check depends on it.
func pause(max time.Duration) {
	if d := rand.N(max); d > max/2 {
		time.Sleep(d)
	}
}

func (j *jitterBackend) Fill(ctx context.Context, ns string, f backends.Fill) error {
	j.pause()
	if j.naive {
		e, err := j.Backend.Epoch(ctx)
		if err != nil {
			return err
		}
		f.Since, f.Entry.Since, f.Age = e, e, 0
	}
	return j.Backend.Fill(ctx, ns, f)
}

// Listen and Notify pass the store's notifications through, so that
// managers on it can keep in-process tiers.
func (j *jitterBackend) Listen(l backends.Listener) (*backends.Lease, func(), error) {
	n, ok := j.Backend.(backends.Notifier)
	if !ok {
		return nil, nil, fmt.Errorf("stalecheck: %T does not notify", j.Backend)
	}
	return n.Listen(l)
}

func (j *jitterBackend) Notify(ctx context.Context, c backends.Change) error {
	if n, ok := j.Backend.(backends.Notifier); ok {
		return n.Notify(ctx, c)
	}
	return nil
}

func (j *jitterBackend) Invalidate(ctx context.Context, ns string, tags ...string) (int, error) {
	j.pause()
	return j.Backend.Invalidate(ctx, ns, tags...)
}

// AddMember, Members and RemoveSet pass the store's sets through
// (backends.Sets), for conjunction tags.
func (j *jitterBackend) AddMember(ctx context.Context, ns, name, member string, limit int) (bool, error) {
	s, ok := j.Backend.(backends.Sets)
	if !ok {
		return false, fmt.Errorf("stalecheck: %T has no sets", j.Backend)
	}
	return s.AddMember(ctx, ns, name, member, limit)
}

func (j *jitterBackend) Members(ctx context.Context, ns, name string) ([]string, error) {
	s, ok := j.Backend.(backends.Sets)
	if !ok {
		return nil, fmt.Errorf("stalecheck: %T has no sets", j.Backend)
	}
	j.pause() // between a write's commit and its reading of the schemes
	return s.Members(ctx, ns, name)
}

func (j *jitterBackend) RemoveSet(ctx context.Context, ns, name string) error {
	if s, ok := j.Backend.(backends.Sets); ok {
		return s.RemoveSet(ctx, ns, name)
	}
	return nil
}
