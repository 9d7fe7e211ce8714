package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/depcache/go-depcache/gormplugin/pgcdc"
	"github.com/depcache/go-depcache/internal/pgtest"
	"github.com/depcache/go-depcache/internal/redistest"
)

// cdcPrefix gives the command's manager a prefix of the test's own, so that
// a shared Redis stays apart and the test removes what it wrote.
func cdcPrefix(t *testing.T) {
	prefix := fmt.Sprintf("dctest-blogcdc-%d", time.Now().UnixNano())
	t.Setenv("DEP_CACHE_PREFIX", prefix)
	if url := os.Getenv("REDIS_URL"); url != "" {
		redistest.RemoveNamespaceAtEnd(t, url, prefix+":blog")
	}
}

// TestRunCDC runs `-cdc` against a PostgreSQL of its own with
// wal_level=logical: an UPDATE on a raw connection must turn the cached
// post page and front page into misses with the new title, and the slot
// must be gone afterwards.
func TestRunCDC(t *testing.T) {
	s := pgtest.Start(t, pgtest.Logical...)
	dsn := s.CreateDatabase(t)
	cdcPrefix(t)
	var out, errs bytes.Buffer
	if err := run(context.Background(), []string{"-cdc", dsn, "-seed", seedPath}, &out, &errs); err != nil {
		t.Fatalf("%v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errs.String())
	}
	t.Logf("stdout:\n%s", out.String())
	for _, want := range []string{"UPDATE posts SET title", "processed", "The write bypassed GORM and still left the cache."} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("stdout lacks %q:\n%s", want, out.String())
		}
	}
	c, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	var slots, pubs int
	if err := c.QueryRow(context.Background(),
		"SELECT (SELECT count(*) FROM pg_replication_slots), (SELECT count(*) FROM pg_publication)").Scan(&slots, &pubs); err != nil {
		t.Fatal(err)
	}
	if slots != 0 || pubs != 0 {
		t.Errorf("after -cdc: %d replication slots and %d publications left", slots, pubs)
	}
}

// TestRunCDCNotLogical: on a server with wal_level=replica (PostgreSQL's
// default, and the shared test server's) -cdc fails naming the setting.
func TestRunCDCNotLogical(t *testing.T) {
	s := pgtest.Start(t)
	cdcPrefix(t)
	var out, errs bytes.Buffer
	err := run(context.Background(), []string{"-cdc", s.DSN("postgres"), "-seed", seedPath}, &out, &errs)
	if !errors.Is(err, pgcdc.ErrNotLogical) || !strings.Contains(err.Error(), "wal_level=logical") {
		t.Fatalf("err = %v, want ErrNotLogical naming wal_level=logical", err)
	}
}

func TestCDCFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-cdc", "host=127.0.0.1", "-demo"},
		{"-cdc", "host=127.0.0.1", "-load"},
		{"-cdc", "host=127.0.0.1", "-db", "host=other"},
		{"-cdc", "blog.db"},
	} {
		var out, errs bytes.Buffer
		if err := run(context.Background(), args, &out, &errs); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
}
