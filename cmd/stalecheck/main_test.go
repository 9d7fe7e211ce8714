package main

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/depcache/go-depcache/internal/pgtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestCDC runs the command's -cdc mode briefly against a PostgreSQL with
// wal_level=logical of its own; run fails on any violation.
func TestCDC(t *testing.T) {
	s := pgtest.Start(t, pgtest.Logical...)
	if err := run(2_000, 4, 1, 10, "guarded", "", s.CreateDatabase(t), 2); err != nil {
		t.Fatal(err)
	}
}

func TestCDCNeedsPostgres(t *testing.T) {
	if err := run(10, 1, 1, 10, "guarded", "", "", 2); err == nil {
		t.Fatal("-cdc without -postgres: no error")
	}
}
