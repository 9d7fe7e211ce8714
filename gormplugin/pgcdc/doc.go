// Package pgcdc invalidates the GORM plugin's tags for writes that bypass
// GORM — another service, a migration, a cron job in another language,
// psql — from PostgreSQL's logical replication stream, as Facebook's
// mcsqueal replays memcache invalidations from MySQL's commit log.
//
// # Model
//
// A Listener holds a logical replication slot with the built-in pgoutput
// plugin and a publication (names are options; Run creates both when
// missing). PostgreSQL sends it every committed transaction, once, in
// commit order; rolled-back transactions are never sent. For each row
// change the listener computes the tags gormplugin invalidates for the same
// write, with gormplugin's own RowTag, ListTag and TableTag so names match:
//
//   - insert, update, delete: the row tag of the key (the old and the new
//     key when an update changes it) and the table's list tag;
//   - TRUNCATE, and a change whose key is unknown (a table with no primary
//     key and no model, an unchanged TOASTed key): the list and table tags.
//
// It gathers a transaction's tags and invalidates them in one call at its
// commit. Deletes and key updates that cascade through foreign keys arrive
// as changes of the referencing rows and are invalidated as such.
//
// # Nothing lost
//
// The listener confirms a position to PostgreSQL (a standby status update,
// which advances the slot's confirmed_flush_lsn) only after the
// invalidations of every transaction that committed before it have
// returned without error. A failed invalidation is retried with backoff
// (WithBackoff) and nothing past it is confirmed meanwhile, so a crash, a
// Redis outage or a restart makes the next session replay from the slot:
// delivery is at least once, and a replayed invalidation is harmless.
// Processed reports that position and WaitFor waits for it: a read that
// begins after Processed passed a commit (the value of pg_current_wal_lsn()
// read after it) never returns data from before it — the package's tests
// check this with a writer on raw SQL and readers through the plugin, and
// the stale-read harness (internal/stalecheck, go run ./cmd/stalecheck
// -postgres DSN -cdc 2) with raw writers beside GORM's.
//
// PostgreSQL writes a commit record, and may stream it, a moment before the
// transaction becomes visible to other sessions' snapshots. Invalidating in
// that moment would let a reader start after the invalidation, read the old
// row and store it for good; so before each invalidation the listener
// checks, in a snapshot it takes, that the transactions are no longer
// running (pg_current_snapshot, PostgreSQL 13 or later). Without that
// check the package's stale-read test failed in about one run in six.
//
// # Errors and retries
//
// Setup connects once, checks the server and creates what is missing,
// without retrying: call it before Run to fail fast at start. Run returns
// at once what waiting cannot fix — a closed manager, a bad password or
// missing privileges, an unknown database, wal_level (ErrNotLogical), a
// table of WithTables that does not exist (ErrTableNotFound), an existing
// publication that would leave changes out or was dropped
// (ErrPublication), a slot dropped after the listener streamed from it
// (ErrSlotLost: the changes since are lost, clear the prefix) — and retries
// with backoff what waiting can: a server that refuses connections or
// does not answer, a lost connection, a failing invalidation. Each
// connection attempt is bounded (the DSN's connect_timeout, else 10s), and
// so is each of the listener's queries (30s), and a replication
// connection that stays silent after a status that asked for a reply
// (twice WithStatusInterval) is taken for lost: a partition or a dead host
// ends in a reconnection, not a listener waiting for good. Nothing is
// lost while it retries (the slot keeps what is not confirmed). When its
// context ends Run returns nil if it was working, and otherwise an error
// wrapping both the context's error and the failure it was retrying; a
// WaitFor whose context ends meanwhile names that failure too.
//
// One listener streams from a slot at a time; PostgreSQL enforces it. Run
// two for availability: the second finds the slot busy, waits
// (EventSlotBusy) and takes over from the confirmed position when the first
// one's connection ends, also after a kill -9.
//
// # Keys
//
// Row tags must be formatted exactly as the plugin formats them. With
// WithModels the listener reads each model with its *gorm.DB's naming
// strategy and keys rows by the model's primary-key fields, in the model's
// order, each value converted to its field's Go type — as the plugin does.
// Tables without a model are keyed by their primary key in the database,
// and each value as the plugin formats the Go type GORM maps its column
// type to: smallint, integer, bigint as integers; real as a float32 and
// double precision and numeric (GORM's column for a float64) as a float64
// — so a numeric(10,2) key of 100.00 is "100" and a float key of 1000000
// is "1e+06", as in the plugin's tags; boolean; bytea as bytes; date and
// timestamps as time.Time in UTC; everything else (text, varchar, uuid,
// enums, and domains whatever their base type) as its text. The session
// fixes the text forms these are read from (TimeZone, DateStyle,
// bytea_output, extra_float_digits). A
// model whose key field formats otherwise (a string field on an integer
// column, a decimal type on numeric, a custom type) needs WithModels; with
// it a numeric reaches the field as text, not rounded to a float64.
// Table names follow the plugin: the schema is dropped ("app.users" and
// "users" are both tagged users).
//
// # Setting up PostgreSQL
//
// The server needs wal_level=logical (a restart), and a free slot and WAL
// sender (max_replication_slots, max_wal_senders). The DSN's user needs:
//
//   - the REPLICATION attribute (ALTER ROLE … REPLICATION) or superuser,
//     and pg_hba.conf entries that let it connect to the database (a
//     logical replication connection matches the database's name, not the
//     "replication" keyword);
//   - to create the publication, CREATE on the database; FOR ALL TABLES
//     (the default) needs superuser, FOR TABLE (WithTables) ownership of
//     the tables — or create the publication beforehand and name it with
//     WithPublication;
//   - to create the slot, REPLICATION again; it is created once.
//
// A publication that publishes updates and deletes makes PostgreSQL reject
// UPDATE and DELETE on a published table with no replica identity (no
// primary key): give such tables REPLICA IDENTITY FULL or leave them out
// with WithTables. The publication is created with
// publish_via_partition_root, so changes to a partitioned table carry its
// name, not its partitions'.
//
// A slot keeps the WAL from its confirmed position on. While the backend
// is down and the listener retries, WithMaxRetainedWAL bounds it: past the
// bound the listener records in PostgreSQL (table depcache_pgcdc_debt) that
// the manager's prefix must be cleared, confirms the failed commits so the
// slot lets their WAL go, and clears the prefix (after invalidating the
// tags it skipped) once the backend answers — also from the next listener,
// if this one dies first. Until the Clear has run, the listener's own
// manager is held (depcache.Manager.Hold: it serves and stores nothing);
// other processes are not told. Without the option the WAL grows until the
// invalidations succeed. While no listener runs at all, nothing bounds it
// but the server's max_slot_wal_keep_size; a slot PostgreSQL invalidated
// for it is an error from Run, and the cache must then be cleared by hand,
// since changes were lost.
//
// # Limits
//
// Only PostgreSQL: MySQL/MariaDB binlog replication is out of scope.
//
// A write made through GORM is invalidated twice, by the plugin and by the
// listener, on purpose. The plugin invalidates after COMMIT, from the
// writing process's memory: if that process dies in between, or its
// invalidation fails and it dies before the retry, the listener's is the
// only one. Skipping the plugin's tags (told apart by a logical message, or
// by the outbox row WithOutbox inserts in the same transaction, which the
// stream carries anyway) would lose exactly those writes without
// WithOutbox. With it they are not lost, but they would be invalidated by
// whichever process's outbox poll finds the row, not before Processed
// passes the commit: Processed and WaitFor would no longer mean what they
// say. A sound skip would hold Processed at such a commit until the
// stream shows the outbox row's DELETE (the plugin deletes it only after
// its invalidation returned): that holds every later commit, raw ones
// included, for the flusher's batch (20 ms) and, when the writer died,
// for another process's outbox poll (seconds) — a worse price than the
// Redis call it saves, so it is not built. The cost of the second
// invalidation, one Update by key at a time (BenchmarkGORMWrite, the local
// Redis, a throwaway PostgreSQL on the same 2-core machine): the listener
// makes one invalidation call of 2 tags per write when writes come one at
// a time (it batches the commits waiting in its queue), and the process
// makes 184 allocations per write with the plugin alone, 318 with the
// listener as well; writes/s fell from 2,600–3,000 to about 1,600, most of
// it the CPU the server's WAL sender and the listener take from the writer
// on two cores — a skip would save the Redis call, not the decoding.
//
// A transaction that writes more than 10,000 rows of a table invalidates
// the table tag (which every read of the table depends on) for the rest,
// not a row tag per row.
//
// Schema changes (DDL) produce no changes: a dropped table's entries live
// until their TTL.
//
// # Conjunction tags
//
// With the plugin's WithConjunctionTags, a list read by column values
// (Where("author_id = ?", 1)) depends on tags of those values and the
// scheme tag of its column set, not on the list tag. For every
// transaction that inserted or updated rows of a table, the listener also
// invalidates the scheme tag (gormplugin.SchemeTag) of each of the table's
// column sets in use, which it reads from the manager's backend (the set
// the plugin keeps, backends.Sets) once the commit is visible — as the
// plugin reads it after its COMMIT. That is coarser than the plugin, which
// names the values a row entered: a raw insert or update drops every
// conjunction list of its table, as the list tag did without conjunction
// tags. Deletes need nothing more (lists depend on the row tags of their
// rows). It costs one read of the set per table per batch of commits,
// where the backend keeps sets (the memory and Redis stores). Old and new
// values are given to WithChangeTags for finer tags of your own.
//
// A Listener is safe for concurrent use; Run runs once at a time.
package pgcdc
