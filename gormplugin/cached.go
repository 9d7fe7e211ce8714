package gormplugin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/callbacks"

	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/internal/pluginapi"
	"github.com/depcache/go-depcache/keys"
)

const (
	settingCached   = "depcache:cached"
	settingPreloads = "depcache:preloads"
)

// Cached is a scope that caches the result of the query it is applied to:
//
//	db.WithContext(ctx).Scopes(gormplugin.Cached(time.Minute)).Where("author_id = ?", 7).Find(&posts)
//
// The entry is keyed by the dialect, the built SQL and its variables, the
// destination type and the preload tree, and tagged as any read is. A hit
// fills the destination as the database would, with RowsAffected, AfterFind
// hooks and ErrRecordNotFound for First. A ttl of 0 means the manager's
// default. It works with First, Take, Last, Find, Pluck and Count; Scan,
// Row and Rows cannot be served from a cache (an error says so).
// Inside a transaction a Cached query never fills, and once the
// transaction has written it does not read the cache either.
func Cached(ttl time.Duration) func(*gorm.DB) *gorm.DB {
	return func(db *gorm.DB) *gorm.DB {
		return db.Set(settingCached, ttl)
	}
}

func cachedTTL(db *gorm.DB) (time.Duration, bool) {
	v, ok := db.Get(settingCached)
	if !ok {
		return 0, false
	}
	ttl, ok := v.(time.Duration)
	return ttl, ok
}

// cachedRows is what a Cached query stores.
type cachedRows struct {
	Dest         json.RawMessage `json:"d" msgpack:"d"`
	RowsAffected int64           `json:"n" msgpack:"n"`
	NotFound     bool            `json:"nf,omitempty" msgpack:"nf"`
}

func (p *Plugin) cachedQuery(db *gorm.DB, ttl time.Duration, raw bool) {
	stmt := db.Statement
	ctx := stmt.Context
	switch state, t := txOf(db); {
	case state == foreignTx, state == ownTx && t.written.Load():
		// Never read or fill: the transaction must see its own writes.
		callbacks.Query(db)
		p.tagRead(db, raw, false)
		return
	case state == ownTx:
		ctx = pluginapi.Restrict(ctx, func() (bool, bool) { return !t.written.Load(), false })
	}
	callbacks.BuildQuerySQL(db)
	if db.Error != nil {
		return
	}
	key, err := queryKey(db)
	if err != nil {
		p.logOnce("key:"+err.Error(), "gormplugin: Cached query runs uncached", "err", err)
		callbacks.Query(db)
		p.tagRead(db, raw, false)
		return
	}

	ran := false
	res, err := depcache.Fetch(ctx, p.m, key, func(fctx context.Context) (cachedRows, error) {
		ran = true
		stmt.Context = fctx
		defer func() { stmt.Context = ctx }()
		callbacks.Query(db)
		p.tagRead(db, raw, false)
		if db.Error != nil && !errors.Is(db.Error, gorm.ErrRecordNotFound) {
			return cachedRows{}, db.Error
		}
		// Preload now, inside the computation, so that the entry holds the
		// associations and depends on their tables.
		if db.Error == nil && len(stmt.Preloads) > 0 {
			stmt.Context = context.WithValue(fctx, preloadKey{}, true)
			callbacks.Preload(db)
			stmt.Context = fctx
			suspendPreloads(db)
			if db.Error != nil {
				return cachedRows{}, db.Error
			}
		}
		b, err := json.Marshal(stmt.Dest)
		if err != nil {
			depcache.SkipFill(fctx, "destination cannot be encoded: "+err.Error())
		}
		return cachedRows{Dest: b, RowsAffected: db.RowsAffected, NotFound: errors.Is(db.Error, gorm.ErrRecordNotFound)}, nil
	}, depcache.TTL(ttl))
	if ran {
		return // the query ran: dest, RowsAffected and errors are GORM's own
	}
	if err != nil {
		db.AddError(err)
		return
	}
	// A hit: fill dest as the query would have.
	dest := reflect.ValueOf(stmt.Dest)
	if dest.Kind() != reflect.Pointer || dest.IsNil() {
		db.AddError(fmt.Errorf("gormplugin: Cached query needs a pointer destination, got %T", stmt.Dest))
		return
	}
	fresh := reflect.New(dest.Elem().Type())
	if err := json.Unmarshal(res.Dest, fresh.Interface()); err != nil {
		// Entry from an older model layout: run the query instead.
		p.m.Delete(context.WithoutCancel(ctx), key)
		callbacks.Query(db)
		p.tagRead(db, raw, false)
		return
	}
	dest.Elem().Set(fresh.Elem())
	db.RowsAffected = res.RowsAffected
	if stmt.Result != nil {
		stmt.Result.RowsAffected = res.RowsAffected
	}
	suspendPreloads(db) // the entry holds the associations
	if res.NotFound && stmt.RaiseErrorOnNotFound {
		db.AddError(gorm.ErrRecordNotFound)
	}
}

// suspendPreloads stops gorm:preload from running again for this query;
// restorePreloads puts them back at the end of the chain, for a statement
// that is reused.
func suspendPreloads(db *gorm.DB) {
	if len(db.Statement.Preloads) == 0 {
		return
	}
	db.InstanceSet(settingPreloads, db.Statement.Preloads)
	db.Statement.Preloads = nil
}

func restorePreloads(db *gorm.DB) {
	if v, ok := db.InstanceGet(settingPreloads); ok {
		if pre, ok := v.(map[string][]interface{}); ok && pre != nil {
			db.Statement.Preloads = pre
			db.InstanceSet(settingPreloads, map[string][]interface{}(nil))
		}
	}
}

// queryKey identifies a query's result: the dialect, the SQL, its
// variables, the destination type and the preload tree (gorm-notes.md).
func queryKey(db *gorm.DB) (string, error) {
	stmt := db.Statement
	vars, err := keys.OfErr(stmt.Vars...)
	if err != nil {
		return "", fmt.Errorf("query variables: %w", err)
	}
	names := make([]string, 0, len(stmt.Preloads))
	for n := range stmt.Preloads {
		names = append(names, n)
	}
	sort.Strings(names)
	var pre strings.Builder
	for _, n := range names {
		conds, err := keys.OfErr(stmt.Preloads[n]...)
		if err != nil {
			return "", fmt.Errorf("preload %s: %w", n, err)
		}
		fmt.Fprintf(&pre, "%q=%s;", n, conds)
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s\x00%s\x00%v", db.Dialector.Name(), stmt.SQL.String(), vars,
		reflect.TypeOf(stmt.Dest), pre.String(), stmt.RaiseErrorOnNotFound)
	table := stmt.Table
	if table == "" {
		table = "raw"
	}
	return "gorm:" + tableName(table) + ":" + hex.EncodeToString(h.Sum(nil)[:16]), nil
}
