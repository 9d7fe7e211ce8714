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
// own type) is served and not stored.
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
// the manager; they never become the write's error.
package gormplugin
