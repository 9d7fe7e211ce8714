package gormplugin

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"reflect"
	"sync"

	"gorm.io/gorm"
)

// A Cached() entry is keyed by its query, which names tables, not a
// database: two databases with the same tables (a tenant each, a schema
// each) whose plugins share a manager would serve each other's rows. So
// the key also names the database, as the database itself tells it, the
// same in every process that reaches it: SQLite's file, PostgreSQL's
// database and schema (and cluster, where the role may read it), MySQL's
// database, host name and port. WithDatabaseName names it instead.

// WithDatabaseName names the database of the *gorm.DB the plugin is
// installed on, in the keys of its Cached() entries, instead of asking
// the database (for a dialect the plugin does not know, or a role that
// may not run the query). Processes that share entries must give the same
// name, and each database its own. A plugin with it serves one database.
func WithDatabaseName(name string) Option {
	return func(c *config) {
		if name != "" {
			c.dbName = "n:" + name // as keys carry it, made once
		}
	}
}

// dbIdentities maps a *gorm.DB's connection pool to the identity of its
// database.
type dbIdentities struct {
	mu  sync.Mutex
	ids sync.Map // poolKey → string
}

// poolKey is what identifies db's database handle across its sessions:
// its root connection pool (a *sql.DB, GORM's prepared-statement pool),
// which sessions and transactions share, where every Session (each
// db.WithContext) copies the *gorm.Config; or else the Config.
func poolKey(db *gorm.DB) any {
	if pool := db.Config.ConnPool; pool != nil && reflect.TypeOf(pool).Kind() == reflect.Pointer {
		return pool
	}
	return db.Config
}

// identity returns the identity of db's database for keys, asking the
// database the first time; false if it cannot be told (the query runs
// uncached then, logged once).
func (p *Plugin) identity(db *gorm.DB) (string, bool) {
	if p.cfg.dbName != "" {
		return p.cfg.dbName, true
	}
	if name := db.Dialector.Name(); !askable[name] {
		// Nothing to ask, now or later: no lock, no retry per query.
		p.logOnce("identity:"+name, "gormplugin: cannot tell which database this is; Cached() queries run uncached (set WithDatabaseName)", "dialect", name)
		return "", false
	}
	key := poolKey(db)
	if id, ok := p.dbIDs.ids.Load(key); ok {
		return id.(string), true
	}
	p.dbIDs.mu.Lock()
	defer p.dbIDs.mu.Unlock()
	if id, ok := p.dbIDs.ids.Load(key); ok {
		return id.(string), true
	}
	id, err := askIdentity(db.Statement.Context, db)
	if err != nil {
		p.logOnce("identity:"+err.Error(), "gormplugin: cannot tell which database this is; Cached() queries run uncached until it can (or set WithDatabaseName)", "err", err)
		return "", false
	}
	p.dbIDs.ids.Store(key, id)
	return id, true
}

// askIdentity asks db's database what it is.
func askIdentity(ctx context.Context, db *gorm.DB) (string, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	sqlDB, err := db.DB()
	if err != nil {
		return "", fmt.Errorf("no *sql.DB to ask: %w", err)
	}
	row := func(query string, dest ...any) error {
		return sqlDB.QueryRowContext(ctx, query).Scan(dest...)
	}
	switch name := db.Dialector.Name(); name {
	case "sqlite":
		file, err := sqliteFile(ctx, sqlDB)
		if err != nil {
			return "", err
		}
		if file == "" {
			// In memory: this process's only, whatever its name.
			return "sqlite:memory:" + randomID(), nil
		}
		return "sqlite:" + file, nil
	case "postgres":
		var database, schema string
		if err := row("SELECT current_database(), coalesce(current_schema(), '')", &database, &schema); err != nil {
			return "", err
		}
		// The cluster, where the role may read it (superusers and
		// pg_monitor members): two servers can have databases of one name.
		var system sql.NullString
		if err := row("SELECT system_identifier::text FROM pg_control_system()", &system); err != nil || !system.Valid {
			var addr sql.NullString
			var port sql.NullInt64
			if err := row("SELECT host(inet_server_addr()), inet_server_port()", &addr, &port); err != nil {
				return "", err
			}
			system = sql.NullString{String: fmt.Sprintf("%s:%d", addr.String, port.Int64), Valid: true}
		}
		return fmt.Sprintf("postgres:%s:%s:%s", system.String, database, schema), nil
	case "mysql":
		var database sql.NullString
		var host string
		var port int64
		if err := row("SELECT DATABASE(), @@hostname, @@port", &database, &host, &port); err != nil {
			return "", err
		}
		return fmt.Sprintf("mysql:%s:%d:%s", host, port, database.String), nil
	default: // not in askable
		return "", fmt.Errorf("dialect %q: the plugin does not know how to ask it", name)
	}
}

// askable holds the dialects askIdentity knows how to ask.
var askable = map[string]bool{"sqlite": true, "postgres": true, "mysql": true}

// sqliteFile returns the file of SQLite's main database, "" in memory.
func sqliteFile(ctx context.Context, sqlDB *sql.DB) (string, error) {
	rows, err := sqlDB.QueryContext(ctx, "PRAGMA database_list")
	if err != nil {
		return "", err
	}
	defer rows.Close()
	for rows.Next() {
		var seq int
		var name string
		var file sql.NullString
		if err := rows.Scan(&seq, &name, &file); err != nil {
			return "", err
		}
		if name == "main" {
			return file.String, rows.Err()
		}
	}
	if err := rows.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("PRAGMA database_list names no main database")
}

func randomID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
