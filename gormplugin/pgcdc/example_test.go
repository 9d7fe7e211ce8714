package pgcdc_test

import (
	"context"
	"log"
	"os"
	"os/signal"

	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/gormplugin/pgcdc"
)

// A listener beside the application's GORM plugin, on the same manager:
// rows changed by psql, a migration or another service are invalidated as
// if GORM had written them. (It needs a server with wal_level=logical, so
// it has no output to check here.)
func Example() {
	m := depcache.New(memory.New(), depcache.WithName("app")) // the plugin's manager
	defer m.Close()
	l, err := pgcdc.New(m, "host=127.0.0.1 user=cdc dbname=app",
		pgcdc.WithSlot("depcache_app"), pgcdc.WithPublication("depcache_app"))
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	// Setup fails fast (no retries): a server that does not answer, a
	// missing table, privileges, wal_level.
	if err := l.Setup(ctx); err != nil {
		log.Fatal(err)
	}
	// Run retries what waiting can fix until ctx ends; it returns an error
	// for what it cannot, or when ctx ended while it was failing.
	if err := l.Run(ctx); err != nil {
		log.Fatal(err)
	}
}
