package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/depcache/go-depcache/gormplugin/pgcdc"
)

// cdcSlot names the replication slot and publication -cdc creates, and
// drops when it ends: a slot left behind would make the server keep its
// WAL for good.
const cdcSlot = "depcache_blog_cdc"

// cdcTables are the tables the -cdc publication covers. Naming them (not
// FOR ALL TABLES, which needs superuser) needs only their ownership, which
// the user that migrated them has.
var cdcTables = []string{"users", "tags", "posts", "comments", "post_tags"}

// cdcMode runs the blog on the PostgreSQL of dsn with a pgcdc listener
// beside the plugin, and shows a write that bypasses GORM — an UPDATE on a
// connection of its own, as psql would make it — invalidating a cached
// page.
func cdcMode(ctx context.Context, in *infra, dsn string, o options, stdout io.Writer, log *slog.Logger) (err error) {
	raw, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("-cdc: connect: %w", err)
	}
	defer raw.Close(context.WithoutCancel(ctx))
	var walLevel string
	if err := raw.QueryRow(ctx, "SHOW wal_level").Scan(&walLevel); err != nil {
		return fmt.Errorf("-cdc: SHOW wal_level: %w", err)
	}
	if walLevel != "logical" {
		return fmt.Errorf("-cdc: the server's wal_level is %q: logical replication needs wal_level=logical "+
			"(in postgresql.conf or ALTER SYSTEM SET wal_level = logical, then restart the server): %w", walLevel, pgcdc.ErrNotLogical)
	}

	a, err := newApp(in, "blog", true, log)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, a.Close()) }()
	if err := a.prepare(ctx, o.seed); err != nil {
		return err
	}
	l, err := pgcdc.New(a.m, dsn,
		pgcdc.WithSlot(cdcSlot), pgcdc.WithPublication(cdcSlot), pgcdc.WithTables(cdcTables...),
		pgcdc.WithModels(a.db, models...), pgcdc.WithLogger(log))
	if err != nil {
		return err
	}
	// The slot must exist before the raw write, or the stream would start
	// after it. A Setup that fails half-way may leave the publication.
	defer func() { err = errors.Join(err, dropSlot(context.WithoutCancel(ctx), raw)) }()
	if err := l.Setup(ctx); err != nil {
		return err
	}
	runCtx, stopListener := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- l.Run(runCtx) }()
	defer func() {
		stopListener()
		err = errors.Join(err, <-runErr)
	}()

	srv, err := startServer("127.0.0.1:0", a.handler)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, srv.Shutdown()) }()
	fmt.Fprintf(stdout, "blog -cdc on %s (database: %s; cache: %s)\n", srv.URL, in.dbDesc, in.cacheDesc)
	fmt.Fprintf(stdout, "pgcdc listener on replication slot %s, publication %s\n\n", cdcSlot, cdcSlot)
	t := &tour{ctx: ctx, base: srv.URL, out: stdout, client: &http.Client{Timeout: 30 * time.Second}}
	defer t.client.CloseIdleConnections()
	listenerDone := func() error {
		select {
		case err := <-runErr:
			runErr <- err // for the deferred receive
			return fmt.Errorf("the listener stopped: %w", err)
		default:
			return nil
		}
	}

	fmt.Fprintln(stdout, "1. Cache a post's page and the front page (miss, then hit)")
	var list PostPage
	if err := t.missThenHit("/posts", &list, describePage); err != nil {
		return err
	}
	if len(list.Posts) == 0 {
		return errors.New("the blog has no posts: seed it (-seed)")
	}
	id := list.Posts[0].ID
	var before Post
	if err := t.missThenHit(fmt.Sprintf("/posts/%d", id), &before, describePost); err != nil {
		return err
	}

	title := fmt.Sprintf("Edited with plain SQL at %s", time.Now().UTC().Format("15:04:05.000"))
	fmt.Fprintln(stdout, "\n2. Update the title with plain SQL on a connection of its own, as psql would: GORM never sees it")
	if _, err := raw.Exec(ctx, "UPDATE posts SET title = $1 WHERE id = $2", title, id); err != nil {
		return fmt.Errorf("raw UPDATE: %w", err)
	}
	// Read after the commit, pg_current_wal_lsn is at or past the end of
	// its commit record: the position WaitFor takes.
	var lsnText string
	if err := raw.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsnText); err != nil {
		return err
	}
	lsn, err := pgcdc.ParseLSN(lsnText)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "   UPDATE posts SET title = %q WHERE id = %d   (committed; WAL at %s)\n", title, id, lsn)
	if err := listenerDone(); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "\n3. Wait until the listener has invalidated everything committed up to there")
	start := time.Now()
	waitCtx, cancel := context.WithTimeout(ctx, time.Minute)
	err = l.WaitFor(waitCtx, lsn)
	cancel()
	if err != nil {
		if lerr := listenerDone(); lerr != nil {
			return lerr
		}
		return fmt.Errorf("wait for the listener to reach %s: %w", lsn, err)
	}
	fmt.Fprintf(stdout, "   processed %s after %s\n", l.Processed(), time.Since(start).Round(time.Millisecond))

	fmt.Fprintln(stdout, "\n4. The post's page and the front page are misses that show the new title")
	var after Post
	if err := t.get(fmt.Sprintf("/posts/%d", id), "miss", &after, describePost); err != nil {
		return err
	}
	if after.Title != title {
		return fmt.Errorf("post %d's page shows title %q, want %q", id, after.Title, title)
	}
	var pg PostPage
	if err := t.get("/posts", "miss", &pg, describePage); err != nil {
		return err
	}
	if len(pg.Posts) == 0 || pg.Posts[0].Title != title {
		return fmt.Errorf("the front page does not show the new title %q", title)
	}
	fmt.Fprintln(stdout, "\nThe write bypassed GORM and still left the cache.")
	return nil
}

// dropSlot drops the -cdc slot and publication once the listener's
// replication connection has gone (PostgreSQL refuses to drop an active
// slot, and the server notices the connection's end a moment after it).
func dropSlot(ctx context.Context, c *pgx.Conn) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		var active bool
		err := c.QueryRow(ctx, "SELECT active FROM pg_replication_slots WHERE slot_name = $1", cdcSlot).Scan(&active)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			active = false
		case err != nil:
			return fmt.Errorf("drop slot %s: %w", cdcSlot, err)
		case !active:
			if _, err := c.Exec(ctx, "SELECT pg_drop_replication_slot($1)", cdcSlot); err != nil {
				return fmt.Errorf("drop slot %s: %w", cdcSlot, err)
			}
		}
		if !active {
			_, err := c.Exec(ctx, "DROP PUBLICATION IF EXISTS "+cdcSlot)
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("drop slot %s: still in use: %w", cdcSlot, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
