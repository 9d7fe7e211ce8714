package gormplugin

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"regexp"
	"sort"
	"sync"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/callbacks"
	"gorm.io/gorm/clause"

	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/internal/pluginapi"
	"github.com/depcache/go-depcache/keys"
)

const settingCached = "depcache:cached"

// Cached is a scope that caches the result of the query it is applied to:
//
//	db.WithContext(ctx).Scopes(gormplugin.Cached(time.Minute)).Where("author_id = ?", 7).Find(&posts)
//
// The entry is keyed by the dialect, the built SQL and its variables, the
// destination type and the preload tree, and tagged as any read is. It
// holds the rows the database returned (columns and driver values), its
// preloads' rows included, and a hit scans them through GORM's own code,
// preloads and all: the destination, RowsAffected, ErrRecordNotFound and
// AfterFind come out as the query would make them — for any destination
// (struct, slice, map, interface), Select and Omit, pre-filled structs, and
// fields a codec would drop (json:"-"). A ttl of 0 means the manager's
// default. It works with First, Take, Last, Find, Pluck and Count; Scan,
// Row and Rows cannot be served from a cache (an error says so). DryRun
// sessions and statements that already carry an error are never cached.
// Inside a transaction a Cached query never fills, and once the
// transaction has written it does not read the cache either.
func Cached(ttl time.Duration) func(*gorm.DB) *gorm.DB {
	// Made once, not in every query.
	s := &cachedSetting{ttl: ttl, opt: depcache.TTL(ttl)}
	return func(db *gorm.DB) *gorm.DB {
		if _, ok := db.Config.Plugins[pluginName]; !ok {
			withoutPlugin.Do(func() {
				slog.Warn("gormplugin: Cached() on a *gorm.DB without the plugin: its queries run uncached; install it with db.Use(gormplugin.New(m))")
			})
		}
		return db.Clauses(s)
	}
}

// withoutPlugin logs, once per process, a Cached() on a *gorm.DB the
// plugin was not installed on (nothing reads the clause there).
var withoutPlugin sync.Once

// cachedSetting is what Cached leaves in a statement: a clause of its own
// name that builds no SQL. A clause, not db.Set: a setting costs every
// query three allocations (the boxed key and sync.Map's nodes), a clause
// none (the statement's clause map has room).
type cachedSetting struct {
	ttl time.Duration
	opt depcache.MemoOption // depcache.TTL(ttl)
}

// ModifyStatement puts s in the statement's clauses (db.Clauses calls it).
func (s *cachedSetting) ModifyStatement(stmt *gorm.Statement) {
	if stmt.Clauses == nil {
		stmt.Clauses = map[string]clause.Clause{}
	}
	stmt.Clauses[settingCached] = clause.Clause{Name: settingCached, Expression: s}
}

// Build writes nothing: the clause is not SQL, and no statement names it
// in its BuildClauses.
func (*cachedSetting) Build(clause.Builder) {}

func cachedTTL(db *gorm.DB) (*cachedSetting, bool) {
	c, ok := db.Statement.Clauses[settingCached]
	if !ok {
		return nil, false
	}
	s, ok := c.Expression.(*cachedSetting)
	return s, ok
}

func (p *Plugin) cachedQuery(db *gorm.DB, cached *cachedSetting, raw bool) {
	stmt := db.Statement
	ctx := stmt.Context
	if db.Error != nil || db.DryRun {
		// GORM runs nothing (DryRun only builds the SQL): there is no
		// result to store, and a stored one must not be served.
		callbacks.Query(db)
		p.tagRead(db, raw, false)
		return
	}
	switch state, t := txOf(db); {
	case state == foreignTx, state == ownTx && t.written.Load(), lockingRead(stmt, raw):
		// Never read or fill: the transaction must see its own writes; a
		// SELECT … FOR UPDATE/SHARE asked for a lock, which only the
		// database can give.
		callbacks.Query(db)
		p.tagRead(db, raw, false)
		return
	case state == ownTx:
		ctx = pluginapi.Restrict(ctx, func() (bool, bool) { return !t.written.Load(), false })
	}
	// A key read from the clauses lets a hit skip building the SQL
	// (clausekey.go); the SQL is built when it is run or keyed.
	dbID, known := p.identity(db)
	if !known {
		p.runQuery(db)
		p.tagRead(db, raw, false)
		return
	}
	key, fromClauses := clauseKey(db, dbID)
	built := false
	if !fromClauses || checkClauseKeys {
		callbacks.BuildQuerySQL(db)
		built = true
		if db.Error != nil {
			return
		}
		sqlKey, err := queryKey(db, dbID)
		switch {
		case !fromClauses && err != nil:
			p.logOnce("key:"+err.Error(), "gormplugin: Cached query runs uncached", "err", err)
			p.runQuery(db)
			p.tagRead(db, raw, false)
			return
		case !fromClauses:
			key = sqlKey
		case err == nil:
			checkClauseKey(key, sqlKey, fmt.Sprint(stmt.SQL.String(), " ", stmt.Vars))
		}
	}
	// build builds the SQL where the clause key spared it.
	build := func() bool {
		if !built {
			built = true
			callbacks.BuildQuerySQL(db)
		}
		return db.Error == nil
	}

	ran := false
	// pluginapi.Bytes: a hit gets the entry as the backend returned it,
	// uncopied; decodeEntry only reads it.
	blob, err := depcache.Fetch(ctx, p.m, key, func(fctx context.Context) (pluginapi.Bytes, error) {
		ran = true
		if !build() {
			depcache.SkipFill(fctx, "the statement failed")
			return nil, nil // db.Error says why
		}
		stmt.Context = fctx
		defer func() { stmt.Context = ctx }()
		rs := p.runQuery(db)
		p.tagRead(db, raw, false)
		if db.Error != nil && !errors.Is(db.Error, gorm.ErrRecordNotFound) {
			return nil, db.Error
		}
		s := &session{recording: true}
		if rs != nil {
			s.queries = []recordedQuery{{rs: rs, schemaless: stmt.Schema == nil}}
		}
		// The preloads run now, inside the computation, so that the entry
		// holds their rows and depends on their tables.
		runPreloads(db, fctx, s)
		if db.Error != nil && !errors.Is(db.Error, gorm.ErrRecordNotFound) {
			return nil, db.Error
		}
		b, reason := p.storable(s)
		if reason != "" {
			depcache.SkipFill(fctx, reason)
		}
		return b, nil
	}, cached.opt)
	if ran {
		return // the queries ran: dest, RowsAffected and errors are GORM's own
	}
	if err != nil {
		db.AddError(err)
		return
	}
	var qs []recordedQuery
	if p.m.LocalCacheEnabled() {
		qs, err = p.memo.decode([]byte(blob)) // the tier hands back the same bytes
	} else {
		qs, err = decodeEntry([]byte(blob))
	}
	if err != nil {
		// Not ours, or from another version: run the query instead.
		p.m.Delete(context.WithoutCancel(ctx), key)
		if build() {
			p.runQuery(db)
			p.tagRead(db, raw, false)
		}
		return
	}
	p.replay(db, qs[0].rs)
	if len(stmt.Preloads) > 0 { // (a session costs an allocation)
		runPreloads(db, ctx, &session{queries: qs[1:]})
	}
}

// runQuery does what gorm:query does with the built statement, except
// that it reads the rows into a resultSet first and scans them from there:
// a miss then fills the destination through the very path a hit takes.
func (p *Plugin) runQuery(db *gorm.DB) *resultSet {
	stmt := db.Statement
	p.prepareConjunction(db)
	rows, err := stmt.ConnPool.QueryContext(stmt.Context, stmt.SQL.String(), stmt.Vars...)
	if err != nil {
		db.AddError(err)
		return nil
	}
	rs, closeErr := recordRows(rows)
	if rs != nil {
		p.replay(db, rs)
	}
	db.AddError(closeErr)
	return rs
}

// replay scans rs into the statement's destination as gorm:query scans
// the database's rows.
func (p *Plugin) replay(db *gorm.DB, rs *resultSet) {
	if !scanStruct(db, rs) {
		rows := newHitRows(rs, len(db.Statement.ColumnMapping) > 0)
		gorm.Scan(rows, db, 0)
		if rows.err != nil {
			db.AddError(fmt.Errorf("gormplugin: replay a cached result: %w", rows.err))
		}
		db.AddError(rows.release())
	}
	if rs.err != nil && errors.Is(rs.err, driver.ErrBadConn) {
		db.AddError(rs.err) // kept from the replay connection (replayDriverRows.Next)
	}
	if db.Statement.Result != nil {
		db.Statement.Result.RowsAffected = db.RowsAffected
	}
}

// storable encodes a fill's queries for the cache, or says why they
// cannot be stored.
func (p *Plugin) storable(s *session) ([]byte, string) {
	if s.refuse != "" {
		return nil, s.refuse
	}
	if len(s.queries) == 0 {
		return nil, "the query failed"
	}
	for _, q := range s.queries {
		if q.rs.err != nil {
			return nil, "the rows ended with an error"
		}
		if q.schemaless && q.rs.hasUncodedTypes() {
			// GORM fills a map without a model by the driver's scan types.
			return nil, "a column's scan type has no code in the cache's encoding"
		}
	}
	b, err := encodeEntry(s.queries)
	if err != nil {
		p.logOnce("encode:"+err.Error(), "gormplugin: Cached query not stored", "err", err)
		return nil, err.Error()
	}
	return b, ""
}

// resultKeyVersion changes whenever what an entry holds does, so that a
// shared Redis never serves another version's entries.
// rows2: the entry is stored as raw bytes (depcache's kindBytes), which a
// process of the rows1 era would read as corrupt and delete.
const resultKeyVersion = "rows2"

// queryKey identifies a query's result: the dialect, the database
// (identity.go), the SQL, its variables, the destination type and the
// preload tree (gorm-notes.md).
// The rows themselves depend on the SQL alone; the destination and the
// model decide how GORM reads the column types (a map without a model
// uses the driver's), and keep the key as DESIGN.md fixes it.
func queryKey(db *gorm.DB, dbID string) (string, error) {
	stmt := db.Statement
	bp := keyBuffers.Get().(*[]byte)
	defer keyBuffers.Put(bp)
	b := (*bp)[:0]
	for _, part := range []string{resultKeyVersion, db.Dialector.Name(), dbID, stmt.SQL.String()} {
		b = append(append(b, part...), 0)
	}
	// The variables as keys.Of writes them, in place (no string of them).
	b, err := keys.AppendOf(b, stmt.Vars...)
	if err != nil {
		return "", fmt.Errorf("query variables: %w", err)
	}
	b = append(b, 0)
	b = appendDestTypes(b, stmt)
	if len(stmt.Preloads) > 0 {
		if b, err = appendPreloads(b, stmt); err != nil {
			return "", err
		}
	}
	if cap(b) <= 64<<10 { // a huge statement's buffer is not kept
		*bp = b
	}
	return hashedKey(stmt.Table, b), nil
}

// appendPreloads writes the statement's preload tree.
func appendPreloads(b []byte, stmt *gorm.Statement) ([]byte, error) {
	names := make([]string, 0, len(stmt.Preloads))
	for n := range stmt.Preloads {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		conds, err := keys.OfErr(stmt.Preloads[n]...)
		if err != nil {
			return b, fmt.Errorf("preload %s: %w", n, err)
		}
		b = fmt.Appendf(b, "\x00%q=%s;", n, conds)
	}
	return b, nil
}

// keyBuffers hold what queryKey hashes, so that a key costs no buffer.
var keyBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// appendDestTypes names the destination's type, the type an interface{}
// in it holds (decided at run time), and the model's type.
func appendDestTypes(b []byte, stmt *gorm.Statement) []byte {
	if t := reflect.TypeOf(stmt.Dest); t != nil {
		b = appendType(b, t)
	}
	v := reflect.ValueOf(stmt.Dest)
	for v.Kind() == reflect.Pointer && !v.IsNil() {
		v = v.Elem()
	}
	if v.Kind() == reflect.Interface && !v.IsNil() {
		b = appendType(append(b, '|'), v.Elem().Type())
	}
	if stmt.Schema != nil {
		b = appendType(append(b, '|'), stmt.Schema.ModelType)
	}
	return b
}

// appendType writes t with the import path of the type it is made of:
// String alone names packages, and two packages may share a name.
func appendType(b []byte, t reflect.Type) []byte {
	b = append(b, t.String()...)
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array || t.Kind() == reflect.Map {
		t = t.Elem()
	}
	if p := t.PkgPath(); p != "" {
		b = append(append(b, '@'), p...)
	}
	return b
}

// lockingSQL matches the row-locking clauses of a SELECT: PostgreSQL's and
// MySQL's FOR UPDATE/SHARE (NO KEY UPDATE, KEY SHARE) and MySQL's LOCK IN
// SHARE MODE.
var lockingSQL = regexp.MustCompile(`(?i)\bFOR\s+(NO\s+KEY\s+UPDATE|KEY\s+SHARE|UPDATE|SHARE)\b|\bLOCK\s+IN\s+SHARE\s+MODE\b`)

// lockingRead reports a read that locks rows: a clause.Locking, or raw SQL
// with a locking clause.
func lockingRead(stmt *gorm.Statement, raw bool) bool {
	if _, ok := stmt.Clauses["FOR"]; ok {
		return true
	}
	return raw && lockingSQL.MatchString(stmt.SQL.String())
}
