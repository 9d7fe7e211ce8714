// Package gormplugin makes GORM queries cacheable by depcache without
// hand-written dependencies or invalidations.
//
//	m, _ := depcache.GetOrCreate("app")
//	db.Use(gormplugin.New(m))
//
//	postsByAuthor := depcache.Memoize(func(ctx context.Context, author int) ([]Post, error) {
//		var posts []Post
//		err := gormplugin.DB(ctx, db).Where("author_id = ?", author).Find(&posts).Error
//		return posts, err // tagged posts::*, posts::<id> of each row, posts
//	}, depcache.Using(m), depcache.KeyName("postsByAuthor"))
//
//	db.Model(&post).Update("title", "new") // invalidates posts::<id> and posts::* after COMMIT
//
// # Tags on reads
//
// A GORM read made with DB(ctx, db) or db.WithContext(ctx), where ctx is
// the context a cached computation received, adds to that computation, as
// dependencies of the plugin's manager (Manager.AddDependency) whatever the
// computation's manager:
//
//   - a lookup by primary key (First(&u, 7), First(&User{ID: 7}), Where with
//     a set of keys): RowTag(table, key) for every key asked for — also when
//     nothing was found, so a cached "not found" dies when the row is created;
//   - any other query: ListTag(table) and the RowTag of every row returned;
//   - every read: TableTag(table);
//   - Preload: each preloaded table, by the same rules (its own queries);
//   - Joins and raw SQL (Raw, Table expressions): the list and table tags of
//     every table named. SQL the plugin cannot read with certainty (a table
//     function, an unknown join) is not cached at all.
//   - Scan, Row and Rows: list and table tags only.
//
// A computation of another manager on the same backend is registered under
// the plugin's tags, so the plugin's invalidations reach it; on another
// backend no store can register it, and it is not filled (logged once).
//
// # Cached queries
//
// Cached(ttl) caches one query's result without a memoized function. Its
// entry holds what the database returned — column names and the driver's
// values, for the query and for each query its preloads ran — not the
// filled destination, and a hit replays those rows through GORM's own scan
// and preload code. The rows reach GORM's scan converted as database/sql
// converts a driver's values (the conversions GORM meets are made in
// place, the others by database/sql itself, on a connection of the
// plugin's own that serves the stored rows). So a hit leaves the destination, RowsAffected, Error and
// the hooks as the query would: for structs, slices, maps and values held
// in an interface{}, with Select and Omit, into pre-filled structs (the
// fields not selected keep the caller's values), and for fields a codec
// would drop. A value of a type the entry cannot hold exactly (a driver's
// own type) is served and not stored. Scan, Row and Rows, which GORM scans
// after its callbacks, cannot be served: under Cached they fail with an
// error (for Row, the error its Scan returns).
//
// An entry is keyed by the dialect, the database (as it names itself the
// first time it is asked, or WithDatabaseName), the SQL GORM builds and its
// variables, the destination type and the preload tree. Where the statement is made
// only of what GORM builds predictably (WHERE, ORDER BY and LIMIT of the
// clause package's own expressions over plain values, SELECT * on the
// model's table, GORM's own soft delete), the key is read from the clauses
// instead, and a hit skips building the SQL: GORM's logger then traces no
// SQL for it. DEPCACHE_GORM_CHECK_KEYS=1 builds the SQL anyway and panics
// if such a key ever stands for two different queries (a debugging aid:
// the plugin's tests and its run of GORM's own suite set it).
//
// # Invalidation on writes
//
// Every Create, Save, Update(s), UpdateColumn(s), Delete (soft or Unscoped),
// association write and raw Exec invalidates the list tag of its table and
// the row tag of every row it touched. Rows are identified from the model's
// key, a WHERE that is a set of keys, or — for a mass UPDATE or DELETE on
// PostgreSQL and SQLite — by running the statement GORM built with
// RETURNING <key> into the plugin's own destination (the key qualified with
// the written table or its alias, for UPDATE … FROM and DELETE … USING).
// That variant is the plugin's and never the reason a write fails: where it
// cannot be built or the database rejects it, the statement runs once as
// the user wrote it and invalidates the table tag. Where rows cannot be
// identified (MySQL mass writes, upserts without RETURNING, statements that
// assign a key column, raw Exec) the table tag goes. Deletes and key updates
// also invalidate the tables that reference the written one with ON DELETE
// (ON UPDATE) CASCADE, SET NULL or SET DEFAULT among the models the plugin
// has seen, and so do updates of a column such a relationship references
// (references:Refer) with ON UPDATE CASCADE, SET NULL or SET DEFAULT,
// followed transitively.
//
// Raw Exec invalidates the list and table tags of every table it names
// after UPDATE, INSERT/REPLACE/MERGE INTO, DELETE FROM and JOIN (also with
// ONLY, LOW_PRIORITY, IGNORE, OR REPLACE, a WITH clause, comments, schema
// qualifiers and quotes), with the cascades of the models seen; an
// unquoted name also invalidates its lower-case spelling, since PostgreSQL
// folds it and MySQL may. SQL the plugin cannot read invalidates every
// table it has seen. Inside a transaction a raw write marks it as written,
// as a GORM write does. A write sent as a query (Raw("UPDATE … RETURNING
// …").Scan or Find) is treated as Exec is, and never served by Cached().
// DryRun and ToSQL run nothing and invalidate nothing.
//
// # Conjunction tags (WithConjunctionTags, off by default)
//
// Without them every insert, update and delete of a post invalidates
// posts::*, and with it every cached list of posts. With
// WithConjunctionTags a read whose WHERE is a conjunction of equalities
// and IN lists on columns of its own table depends, instead of ListTag,
// on one tag per combination of the values it asks for, with the columns
// sorted: Where("author_id = ?", 1) on a soft-deletable Post depends on
// "posts:author_id=1&deleted_at=\N" (ConjunctionTag), IN (1, 2) on one tag
// per value, plus SchemeTag(table, columns…), the table tag and the row
// tag of every row it returned. Understood: Where strings made of "col =
// ?", "col IN ?", "col IN (?)", "col IS NULL" joined by AND (columns
// optionally qualified by the table, quoted); struct and map conditions;
// clause.Eq and clause.IN; soft delete's deleted_at IS NULL; no condition
// at all; Preload's has-many and belongs-to queries (post_id IN (…)); a
// LIMIT or OFFSET with no ORDER BY or one by the primary key. Precise
// values: integers, booleans, and strings except on MySQL/MariaDB (whose
// collations compare loosely); other columns (times, floats, custom
// types) only as IS NULL; read-only columns ("->") and values longer than
// 128 bytes not at all. Everything else keeps ListTag: ranges, LIKE, OR,
// NOT, literals in the SQL, subqueries, joins, GROUP BY, DISTINCT, a page
// ordered by another column, Count and Pluck (no row tags), a Select
// without the key, raw SQL, values of another kind than the column's.
//
// A write invalidates, besides its row tags and ListTag, the tags its
// rows enter: an insert, the tag of each new row's values; an update that
// assigns a column of a scheme, the tag of the new values, with the other
// columns of the scheme taken from its WHERE (soft delete's IS NULL, an
// equality); a soft delete, nothing more (its rows leave every list, and
// lists depend on their row tags). Where the values are unknown (a SQL
// expression, an upsert, a Select/Omit insert, a column the WHERE does not
// name) the write invalidates the scheme's tag, so every list of that
// column set dies, never fewer. Writes that invalidate the table tag
// (raw SQL, unidentified rows) need nothing more.
//
// The column sets in use (schemes) are kept in the manager's backend
// (backends.Sets: the memory and Redis stores), one set per table, at most
// the bound WithConjunctionTags names (beyond it, new column sets keep
// ListTag). A reader puts its scheme there before its query runs; a
// writer reads the set after its COMMIT; schemes.go argues why a scheme
// first used during a write cannot make that write miss it. The cost: a
// write with conjunction tags reads its table's schemes once (one round
// trip) after it commits, and a process registers each scheme once. The
// sets survive Manager.Clear. Every process sharing a manager's prefix
// must run with the same setting: a process without it invalidates
// ListTag where lists of a process with it depend on conjunction tags, so
// while a fleet switches, reads may be stale: Clear once every process
// runs the new setting.
//
// # After commit
//
// GORM has no callback after an explicit transaction's COMMIT, so the plugin
// wraps the connection pool and owns the commit: writes inside db.Transaction
// or Begin/Commit queue their invalidations and run them right after Commit
// returns (also when it returned an error, since the commit may have
// happened); a plain Rollback drops them. Nothing is ever filled from inside
// a transaction, and once a transaction has written, its reads bypass the
// cache.
//
// The wrapping keeps the types GORM and other plugins look for: with
// gorm.Config{PrepareStmt: true} db.ConnPool stays a *gorm.PreparedStmtDB
// (the plugin's pool goes inside it), db.DB() returns the *sql.DB, and GORM
// opened on a *sql.Tx keeps it. Without PrepareStmt, db.ConnPool is the
// plugin's pool rather than the *sql.DB: use db.DB() to reach the latter.
//
// GORM's own per-statement transaction around a Create, Update or Delete is
// the plugin's wherever it is begun (also on db.Connection's connection or
// a pool another plugin swaps in): the write invalidates after its COMMIT.
// An explicit transaction the plugin did not begin (db.Connection(…).Begin
// or Transaction, GORM opened on a *sql.Tx, another plugin's pool) is
// detected: reads inside it never use the cache, and writes invalidate at
// statement time and once more after WithForeignTxDelay — which narrows,
// but cannot close, the window before its COMMIT. WithForeignTxError makes
// such writes fail instead. Transactions opened with Exec("BEGIN") are not
// seen: do not use them.
//
// # Memoized functions and transactions
//
// A memoized function cannot see a transaction its caller is in unless it
// is told: inside a transaction call it with TxContext(tx), and inside it
// query through DB(ctx, db) rather than db.WithContext(ctx). DB returns the
// transaction TxContext carries (so the function sees the transaction's own
// writes) and db outside one:
//
//	article := depcache.Memoize(func(ctx context.Context, id int) (Article, error) {
//		var a Article
//		err := gormplugin.DB(ctx, db).First(&a, id).Error
//		return a, err
//	}, depcache.Using(m), depcache.KeyName("article"))
//
//	db.Transaction(func(tx *gorm.DB) error {
//		tx.Model(&Article{ID: 1}).Update("title", "Draft")
//		a, err := article(gormplugin.TxContext(tx), 1) // "Draft", read through tx
//		…
//	})
//
// Under TxContext nothing is stored, and once tx has written nothing is
// read from the cache either. A function that queries through db.WithContext
// instead runs outside the transaction: it misses the transaction's
// uncommitted writes (and under SQLite may wait on its lock).
//
// # What is not tracked
//
// Writes that bypass GORM — another service, a SQL console, triggers,
// constraints that exist only in the database — invalidate nothing. After
// such a write, invalidate by hand:
//
//	m.InvalidateDependency(ctx, gormplugin.RowTag("users", 42), gormplugin.ListTag("users"))
//	m.InvalidateDependency(ctx, gormplugin.TableTag("users")) // everything that read users
//
// Invalidations that fail after a commit are logged, counted and retried by
// the manager; they never become the write's error. Without WithOutbox that
// retry lives in the writing process's memory only (see below).
//
// # Durable invalidations (WithOutbox)
//
// Without the outbox, a write committed while Redis is unreachable is
// invalidated only by the writing process's in-memory retry: if that
// process dies first, or Redis comes back from a snapshot that still holds
// the old entries, every process serves data from before the write until
// its TTL. With WithOutbox (off by default):
//
//   - Every write transaction that invalidates tags also inserts them into
//     the outbox table, in the same transaction, just before its COMMIT:
//     GORM's per-statement transaction, db.Transaction, Begin/Commit, raw
//     Exec, cascades — one multi-row INSERT per transaction, none for a
//     transaction that wrote nothing. A write outside any transaction
//     (SkipDefaultTransaction, a raw Exec outside a transaction) runs in a
//     transaction the plugin opens for it, so that its row commits with
//     it; where it cannot (a pool the plugin does not own, Exec of a
//     statement that cannot run in a transaction — one with CONCURRENTLY,
//     CALL — or a write sent as a query, Raw("UPDATE …").Scan), the row is
//     written just after the write, not atomically with it. Inside a
//     transaction the plugin did not begin, the row goes into that
//     transaction and is delivered by a flusher once it commits. If the
//     INSERT fails, the transaction is rolled back and Commit returns an
//     error wrapping ErrOutbox: nothing is committed that the outbox does
//     not hold.
//   - Once the invalidation after COMMIT has returned without error, the
//     rows are deleted, by id, by the process's flusher (one DELETE for the
//     rows delivered within 20 ms). A failed invalidation leaves them. On
//     SQLite, which has one writer at a time, the flusher never writes while
//     the application runs (a transaction of the application that read
//     before writing would fail at once with "database is locked" while it
//     commits): the next write transaction deletes them with the INSERT of
//     its own row, and Close and FlushOutbox delete them directly.
//   - The flusher of every process (one goroutine per plugin, stopped by
//     Close) delivers what is left: at Initialize a process that finds rows
//     for its manager's prefix holds the manager (nothing served from the
//     cache, nothing stored: depcache.Manager.Hold) until it has delivered
//     them; once the manager's circuit breaker has opened, it closes only
//     after the outbox has been delivered (depcache.Manager.AddRecoveryCheck),
//     so a process that saw Redis fail serves nothing from it until then;
//     and every WithOutboxPoll (default 1 s) it reads the table, and a row
//     seen by two polls in a row (not in flight: its writer would have
//     deleted it) holds the manager from that poll until it is delivered.
//     Delivering twice is harmless (an invalidation is idempotent), and
//     each process deletes only the rows it read, by id, so a later row
//     for the same tag is never lost. FlushOutbox delivers now (for a
//     readiness check, or a test).
//
// What it guarantees: a write committed while Redis was unreachable is
// invalidated before any process that noticed the outage (its breaker
// opened) or started during it or after it reads from the cache again,
// whether or not the writer is still alive. A process whose breaker did not
// open (it made fewer than WithBreaker's failures during the outage) can
// serve such an entry until its next two polls find the row. A Redis that
// loses invalidations it acknowledged (a restart from a snapshot older than
// a delivered invalidation) is still outside the guarantee: use AOF.
// Without the manager's breaker (depcache.WithoutBreaker) only the start
// hold and the poll apply.
//
// The table, created at Initialize if it does not exist (DefaultOutboxTable,
// or WithOutboxTable; SQLite, PostgreSQL and MySQL/MariaDB):
//
//	CREATE TABLE IF NOT EXISTS depcache_outbox (
//		prefix     VARCHAR(255) NOT NULL, -- the manager's key prefix (Manager.Prefix)
//		id         VARCHAR(32)  NOT NULL, -- random, 128 bits in hex
//		tags       TEXT NOT NULL,         -- a JSON array of up to 1000 tags (LONGTEXT on MySQL)
//		created_at BIGINT NOT NULL,       -- Unix milliseconds, for operators
//		PRIMARY KEY (prefix, id))
//
// Several applications may share it: each reads and deletes only the rows
// of its own prefix. A row that cannot be read (bad JSON, a tag the manager
// refuses) is replaced by a Clear of the manager's namespace, never dropped.
//
// The cost, measured with BenchmarkOutboxWrite (one Update by key in GORM's
// implicit transaction; go test -run '^$' -bench BenchmarkOutboxWrite
// -benchmem ./gormplugin/): one more statement in the transaction and one
// DELETE per batch (on SQLite, in the next write's transaction), +53
// allocations (+1.8 KB) per write on SQLite and +27 (+1.3 KB) on
// PostgreSQL; the time is in the README.
//
// Invalidations made by hand get the same durability through the plugin:
// Plugin.InvalidateDependency records the tags in the outbox (one INSERT
// on the plugin's database) before it invalidates. Without GORM,
// NewSQLOutbox opens the same outbox on a *sql.DB: its InvalidateDependency
// does the same, and InvalidateInTx records the tags of a database/sql
// write in that write's own transaction. The manager's own
// InvalidateDependency is retried in memory only.
package gormplugin
