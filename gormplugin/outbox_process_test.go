package gormplugin_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
	"gorm.io/gorm/schema"

	"github.com/depcache/go-depcache/backends/redisbackend"
	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/gormplugin"
	"github.com/depcache/go-depcache/internal/redistest"
	"github.com/depcache/go-depcache/internal/testenv"
)

// The outage of issue 15, with real processes: a redis-server of the
// test's own, saved (so that its dump holds the entries from before the
// writes) and killed -9; writers committing while it is down, one of them
// killed -9 before it returns; a reader process alive throughout, one
// started during the outage and one started after; the server restarted
// from its dump, old entries included. Each process is this test binary
// run again as TestOutboxChild.
//
// A read is stale when the version it returns is older than the version
// the database held when the read began (read first, without the cache).

// Counter is the processes' model: writers increment Version.
type Counter struct {
	ID      uint `gorm:"primaryKey"`
	Version int
}

const (
	childVar     = "DEPCACHE_OUTBOX_CHILD" // role: reader or writer
	counterCount = 20
)

func TestOutboxProcesses(t *testing.T) {
	testenv.SkipUnlessLong(t)
	for _, c := range dbCases() {
		t.Run(c.dialect, func(t *testing.T) {
			for _, outbox := range []bool{true, false} {
				name := "outbox"
				if !outbox {
					name = "control-without-outbox"
				}
				t.Run(name, func(t *testing.T) {
					stale, errs, hits := runOutage(t, c, outbox)
					t.Logf("stale reads after recovery by process: %v; read errors %d; hits after recovery %v", stale, errs, hits)
					if errs != 0 {
						t.Errorf("%d read or write errors, want 0", errs)
					}
					total := 0
					for _, n := range stale {
						total += n
					}
					if outbox {
						if total != 0 {
							t.Errorf("stale reads with the outbox: %v, want 0 in every phase", stale)
						}
						for who, n := range hits {
							if n == 0 {
								t.Errorf("%s made no cache hit after recovery: the check above proves nothing", who)
							}
						}
					} else if total == 0 {
						t.Errorf("no stale read without the outbox: the scenario no longer shows what the outbox fixes")
					}
				})
			}
		})
	}
}

func namingFor(prefix string) schema.NamingStrategy {
	return schema.NamingStrategy{TablePrefix: prefix}
}

func silent() logger.Interface { return logger.Default.LogMode(logger.Silent) }

// child is a process running TestOutboxChild.
type child struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	tail  *tailBuffer // the end of what it printed besides its counts
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

func startChild(t *testing.T, name string, env []string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestOutboxChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	tail := &tailBuffer{max: 16 << 10}
	cmd.Stderr = tail // its end goes into the failure message
	if os.Getenv("DEPCACHE_TEST_LOG") != "" {
		cmd.Stderr = io.MultiWriter(os.Stderr, tail) // else go-redis's dial errors of the outage fill the output
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{name: name, cmd: cmd, stdin: stdin, lines: make(chan string, 100), tail: tail}
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if line, ok := strings.CutPrefix(sc.Text(), "OUTBOX "); ok {
				c.lines <- line
			} else {
				tail.Write([]byte(sc.Text() + "\n"))
			}
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return c
}

// expect waits for the child's next line, which must start with prefix.
func (c *child) expect(t *testing.T, prefix string) string {
	t.Helper()
	select {
	case line, ok := <-c.lines:
		if !ok {
			t.Fatalf("%s exited before saying %q; the end of its output:\n%s", c.name, prefix, c.tail)
		}
		if !strings.HasPrefix(line, prefix) {
			t.Fatalf("%s said %q, want %q…", c.name, line, prefix)
		}
		return line
	case <-time.After(60 * time.Second):
		t.Fatalf("%s said nothing for 60s (waiting for %q)", c.name, prefix)
	}
	return ""
}

func (c *child) send(t *testing.T, cmd string) {
	t.Helper()
	if _, err := io.WriteString(c.stdin, cmd+"\n"); err != nil {
		t.Fatalf("%s: %v", c.name, err)
	}
}

// finish closes the child's stdin, which ends it, and returns its last
// counts.
func (c *child) finish(t *testing.T) counts {
	t.Helper()
	c.stdin.Close()
	got := parseCounts(t, c.expect(t, "DONE"))
	if err := c.cmd.Wait(); err != nil {
		t.Errorf("%s: %v; the end of its output:\n%s", c.name, err, c.tail)
	}
	return got
}

// kill ends the child with SIGKILL.
func (c *child) kill() {
	c.cmd.Process.Kill()
	c.cmd.Wait()
}

type counts struct{ reads, stale, errors, hits, writes int }

func parseCounts(t *testing.T, line string) counts {
	t.Helper()
	var c counts
	for _, f := range strings.Fields(line)[1:] {
		k, v, _ := strings.Cut(f, "=")
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("bad counts %q", line)
		}
		switch k {
		case "reads":
			c.reads = n
		case "stale":
			c.stale = n
		case "errors":
			c.errors = n
		case "hits":
			c.hits = n
		case "writes":
			c.writes = n
		}
	}
	return c
}

func (c counts) minus(o counts) counts {
	return counts{c.reads - o.reads, c.stale - o.stale, c.errors - o.errors, c.hits - o.hits, c.writes - o.writes}
}

func runOutage(t *testing.T, c dbCase, outbox bool) (stale map[string]int, errs int, hits map[string]int) {
	dsn := c.dsn(t)
	prefix := "op" + randomHex(4) + "_"
	dir := t.TempDir()
	addr, redisProc := redistest.StartProcess(t, "--dir", dir)
	_, portText, _ := strings.Cut(addr, ":")
	port, _ := strconv.Atoi(portText)

	truth, err := gorm.Open(c.open(dsn), &gorm.Config{NamingStrategy: namingFor(prefix), Logger: silent()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if c.dialect != "sqlite" {
			// Migrator.DropTable skips a table given by name on PostgreSQL.
			if err := truth.Exec("DROP TABLE IF EXISTS " + prefix + "outbox").Error; err != nil {
				t.Errorf("drop the outbox table: %v", err)
			}
			if err := truth.Migrator().DropTable(&Counter{}); err != nil {
				t.Errorf("drop tables: %v", err)
			}
		}
		if sqlDB, err := truth.DB(); err == nil {
			sqlDB.Close()
		}
	}()
	if err := truth.AutoMigrate(&Counter{}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= counterCount; i++ {
		if err := truth.Create(&Counter{ID: uint(i)}).Error; err != nil {
			t.Fatal(err)
		}
	}
	env := []string{
		"DEPCACHE_OUTBOX_DIALECT=" + c.dialect, "DEPCACHE_OUTBOX_DSN=" + dsn, "DEPCACHE_OUTBOX_PREFIX=" + prefix,
		"DEPCACHE_OUTBOX_ON=" + strconv.FormatBool(outbox), "REDIS_URL=redis://" + addr + "/0",
		"DEPCACHE_OUTBOX_NS=op:" + prefix,
	}
	role := func(r string) []string { return append([]string{childVar + "=" + r}, env...) }
	began := time.Now()
	phase := func(what string) { t.Logf("%6.2fs %s", time.Since(began).Seconds(), what) }

	// Before the outage: a reader (alive throughout) warms the cache, a
	// writer (alive throughout) writes.
	alive := startChild(t, "reader alive throughout", role("reader"))
	alive.expect(t, "WARM")
	writer := startChild(t, "writer alive throughout", role("writer"))
	writer.expect(t, "READY")

	// The dump holds the warm entries; then the server dies.
	rc := redis.NewClient(&redis.Options{Addr: addr})
	if err := rc.Save(context.Background()).Err(); err != nil {
		t.Fatalf("SAVE: %v", err)
	}
	rc.Close()
	redisProc.Kill()
	redisProc.Wait()
	phase("redis-server killed")

	// During the outage: a second writer commits and is killed -9 before
	// the server returns; a reader process starts.
	doomed := startChild(t, "writer killed during the outage", role("writer"))
	doomed.expect(t, "READY")
	doomed.send(t, "mark")
	for parseCounts(t, doomed.expect(t, "COUNTS")).writes < 10 {
		doomed.send(t, "mark")
	}
	doomed.kill()
	phase("writer killed")
	during := startChild(t, "reader started during the outage", role("reader"))
	during.expect(t, "WARM")
	phase("reader started during the outage")

	// The writer alive throughout stops writing (it stays alive, with its
	// retries): after the recovery the database no longer changes, so any
	// read older than it is stale whatever the timing. (With writes going
	// on, a read between a commit and its invalidation may return the old
	// value, which the guarantee allows.)
	writer.send(t, "pause")
	writer.expect(t, "PAUSED")
	phase("writer paused")

	// The server comes back from its dump, on the same port.
	redistest.StartAt(t, port, "--dir", dir)
	phase("redis-server back")
	alive.send(t, "mark")
	aliveAtRecovery := parseCounts(t, alive.expect(t, "COUNTS"))
	after := startChild(t, "reader started after recovery", role("reader"))
	after.expect(t, "WARM")

	// Let the readers read, and the writer write, until every reader has
	// served a good number of reads from the cache since the recovery.
	since := map[*child]counts{alive: aliveAtRecovery}
	for _, r := range []*child{alive, during, after} {
		for {
			r.send(t, "mark")
			if parseCounts(t, r.expect(t, "COUNTS")).minus(since[r]).hits >= 300 {
				break
			}
		}
	}
	phase("every reader has hits after the recovery")
	w := writer.finish(t)
	if w.writes == 0 {
		t.Error("the writer wrote nothing")
	}
	stale, hits = map[string]int{}, map[string]int{}
	errs = w.errors
	for i, r := range []*child{alive, during, after} {
		got := r.finish(t)
		if i == 0 {
			got = got.minus(aliveAtRecovery)
		}
		stale[r.name] = got.stale
		hits[r.name] = got.hits
		errs += got.errors
	}
	return stale, errs, hits
}

// TestOutboxChild is a process of TestOutboxProcesses: it does nothing in
// an ordinary run.
func TestOutboxChild(t *testing.T) {
	role := os.Getenv(childVar)
	if role == "" {
		t.Skip("a child process of TestOutboxProcesses")
	}
	var open func(string) gorm.Dialector
	switch os.Getenv("DEPCACHE_OUTBOX_DIALECT") {
	case "postgres":
		open = postgres.Open
	case "mysql":
		open = mysql.Open
	default:
		open = sqlite.Open
	}
	dsn, prefix := os.Getenv("DEPCACHE_OUTBOX_DSN"), os.Getenv("DEPCACHE_OUTBOX_PREFIX")
	cfg := &gorm.Config{NamingStrategy: namingFor(prefix), Logger: silent()}
	db, err := gorm.Open(open(dsn), cfg)
	if err != nil {
		t.Fatal(err)
	}
	truth, err := gorm.Open(open(dsn), &gorm.Config{NamingStrategy: namingFor(prefix), Logger: silent()})
	if err != nil {
		t.Fatal(err)
	}
	backend, err := redisbackend.FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	// Writes during the outage wait for their invalidation to fail: keep
	// that short, so that the outage is made of many writes.
	m := depcache.New(backend, depcache.WithPrefix(os.Getenv("DEPCACHE_OUTBOX_NS")), depcache.WithLogger(testLogger()),
		depcache.WithInvalidationTimeout(300*time.Millisecond))
	opts := []gormplugin.Option{gormplugin.WithLogger(testLogger()), gormplugin.WithOutboxPoll(100 * time.Millisecond)}
	if on, _ := strconv.ParseBool(os.Getenv("DEPCACHE_OUTBOX_ON")); on {
		opts = append(opts, gormplugin.WithOutboxTable(prefix+"outbox"))
	}
	plugin := gormplugin.New(m, opts...)
	if err := db.Use(plugin); err != nil {
		t.Fatal(err)
	}
	defer func() {
		plugin.Close()
		m.Close()
		backend.Close()
		for _, g := range []*gorm.DB{db, truth} {
			if sqlDB, err := g.DB(); err == nil {
				sqlDB.Close()
			}
		}
	}()

	var reads, stale, errs, hits, writes atomic.Int64
	say := func(what string) {
		fmt.Printf("OUTBOX %s reads=%d stale=%d errors=%d hits=%d writes=%d\n", what, reads.Load(), stale.Load(), errs.Load(), hits.Load(), writes.Load())
	}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	switch role {
	case "reader":
		read := func(id uint) {
			var before Counter
			if err := truth.First(&before, id).Error; err != nil {
				errs.Add(1)
				return
			}
			tctx, trace := depcache.Track(ctx)
			v, err := depcache.Fetch(tctx, m, "counter:"+strconv.Itoa(int(id)), func(ctx context.Context) (int, error) {
				var c Counter
				err := db.WithContext(ctx).First(&c, id).Error
				return c.Version, err
			})
			if err != nil {
				if ctx.Err() == nil {
					errs.Add(1)
				}
				return
			}
			reads.Add(1)
			hits.Add(int64(trace.Hits()))
			if v < before.Version {
				stale.Add(1)
			}
		}
		for id := uint(1); id <= counterCount; id++ {
			read(id)
		}
		say("WARM")
		for range 4 {
			wg.Go(func() {
				for ctx.Err() == nil {
					read(uint(rand.IntN(counterCount)) + 1)
				}
			})
		}
	case "writer":
		say("READY")
		wg.Go(func() {
			tick := time.NewTicker(5 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				id := uint(rand.IntN(counterCount)) + 1
				if err := db.Model(&Counter{ID: id}).Update("version", gorm.Expr("version + 1")).Error; err != nil {
					errs.Add(1)
					continue
				}
				writes.Add(1)
			}
		})
	}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		switch sc.Text() {
		case "mark":
			say("COUNTS")
		case "pause":
			stop()
			wg.Wait()
			say("PAUSED")
		}
	}
	stop()
	wg.Wait()
	say("DONE")
}
