package pgtest_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/goleak"

	"github.com/depcache/go-depcache/internal/pgtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The server runs with the settings asked for, and each test database is
// its own.
func TestStartLogical(t *testing.T) {
	s := pgtest.Start(t, pgtest.Logical...)
	dsn := s.CreateDatabase(t)
	ctx := context.Background()
	c, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	res, err := c.Exec(ctx, "SHOW wal_level").ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if got := string(res[0].Rows[0][0]); got != "logical" {
		t.Fatalf("wal_level = %q, want logical", got)
	}
	if dsn2 := s.CreateDatabase(t); dsn2 == dsn {
		t.Fatalf("two databases share the DSN %q", dsn)
	}
}
