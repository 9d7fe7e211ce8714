package pgcdc_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/depcache/go-depcache/backends/redisbackend"
	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/gormplugin"
	"github.com/depcache/go-depcache/gormplugin/pgcdc"
)

// childEnv makes the test binary run one listener (runChild) instead of
// the tests: the process the takeover test kills.
const childEnv = "PGCDC_TEST_CHILD"

// runChild runs a listener on the DSN, slot and Redis in its environment
// and prints "streaming" and "invalidated <lsn> <tags>" lines. Each
// invalidation is held up a little (the observer runs on the listener's
// goroutine) so that the parent kills it with work left to do.
func runChild() int {
	c := redis.NewClient(&redis.Options{Addr: os.Getenv("PGCDC_TEST_REDIS"), MaxRetries: -1, ContextTimeoutEnabled: true})
	m := depcache.New(redisbackend.New(c), depcache.WithPrefix(os.Getenv("PGCDC_TEST_PREFIX")))
	out := bufio.NewWriter(os.Stdout)
	l, err := pgcdc.New(m, os.Getenv("PGCDC_TEST_DSN"), pgcdc.WithSlot(os.Getenv("PGCDC_TEST_SLOT")),
		pgcdc.WithObserver(func(ev pgcdc.Event) {
			switch ev.Kind {
			case pgcdc.EventStreaming:
				fmt.Fprintln(out, "streaming")
			case pgcdc.EventInvalidated:
				fmt.Fprintln(out, "invalidated", ev.LSN, strings.Join(ev.Tags, ","))
				time.Sleep(20 * time.Millisecond) // a slow consumer, not synchronisation
			}
			out.Flush()
		}))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := l.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// The active listener is killed (-9) mid-stream; the second one, waiting
// on the busy slot, takes over from the slot's confirmed position, and not
// one change goes uninvalidated.
func TestTakeoverAfterKill(t *testing.T) {
	mr := startMiniredis(t)
	m := redisManager(t, mr.Addr(), "cdc")
	e := newEnv(t, envConfig{manager: m, noRun: true})
	const n = 120
	for i := 1; i <= n; i++ {
		e.cache(fmt.Sprint("u", i), gormplugin.RowTag("users", i))
	}

	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), childEnv+"=1", "PGCDC_TEST_DSN="+e.dsn, "PGCDC_TEST_SLOT="+e.slot,
		"PGCDC_TEST_REDIS="+mr.Addr(), "PGCDC_TEST_PREFIX=cdc")
	child.Stderr = os.Stderr
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		child.Process.Kill()
		child.Wait()
	})
	lines := make(chan string, 4*n)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	next := func() string {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("the child listener exited")
			}
			return l
		case <-time.After(60 * time.Second):
			t.Fatal("the child listener said nothing for 60s")
		}
		return ""
	}
	if l := next(); l != "streaming" {
		t.Fatalf("child: %q, want streaming", l)
	}

	// The second listener waits on the slot the child holds.
	b := e.listener()
	e.run(b)
	e.events.waitFor(t, "slot busy", func(ev pgcdc.Event) bool { return ev.Kind == pgcdc.EventSlotBusy })

	// The first half of the writes; the child is killed once it has
	// invalidated a few of them, with most still to do.
	for i := 1; i <= n/2; i++ {
		e.exec(fmt.Sprintf(`INSERT INTO users VALUES (%d, 'x')`, i))
	}
	childDone := 0
	for childDone < 5 {
		if strings.HasPrefix(next(), "invalidated") {
			childDone++
		}
	}
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	child.Wait()
	for range lines {
		childDone++ // lines it wrote before it died
	}
	for i := n/2 + 1; i <= n; i++ {
		e.exec(fmt.Sprintf(`INSERT INTO users VALUES (%d, 'x')`, i))
	}
	last := currentLSN(t, e.db)
	sync_(t, b, last)

	missed := 0
	for i := 1; i <= n; i++ {
		if e.present(fmt.Sprint("u", i)) {
			missed++
			t.Errorf("users::%d was never invalidated", i)
		}
	}
	took := e.events.count(pgcdc.EventStreaming)
	t.Logf("child invalidated %d transactions before it died; the second listener took over (%d sessions) and %d changes were missed",
		childDone, took, missed)
	if took == 0 {
		t.Fatal("the second listener never streamed")
	}
	// Mid-stream: some of the first half was left to the second listener,
	// which replayed it from the slot.
	replayed := 0
	tags := e.events.tagsAfter(0, last)
	for i := 1; i <= n/2; i++ {
		if slices.Contains(tags, gormplugin.RowTag("users", i)) {
			replayed++
		}
	}
	t.Logf("the second listener invalidated %d of the %d writes made before the kill", replayed, n/2)
	if replayed == 0 {
		t.Fatal("the child had invalidated every write before it was killed: not mid-stream")
	}
}
