package gormplugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gorm.io/gorm"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/internal/pluginapi"
)

// Schemes: the column sets of the conjunction tags in use, per table. A
// writer must know every scheme of its table to name the tags its rows
// enter, and readers run in other processes, so the schemes live in the
// backend (backends.Sets), one set per table, which only grows and is
// bounded (WithConjunctionTags). The protocol that keeps a scheme first
// seen during a write from making that write miss it:
//
//   - a reader adds its scheme to the set (or has seen it there) BEFORE
//     it sends its query to the database;
//   - a writer reads the set AFTER its write committed.
//
// If the writer's read sees the scheme, it invalidates the scheme's tags
// and the epoch protocol does the rest (the reader's E0 was read before
// its query). If it does not, the read happened before the reader's add,
// so the commit happened before the reader's query, which therefore saw
// the write. Either way no fill stores data from before the write. Since
// sets never shrink (not even on Clear), a process may remember a scheme
// it registered or saw for the life of the store.

// conjState is the plugin's state for WithConjunctionTags.
type conjState struct {
	maxSchemes int // per table
	maxTags    int // per read: beyond it, the list tag
	sets       backends.Sets
	ns         string
	known      sync.Map // table+"\x00"+scheme → bool: in the set (true) or refused for the bound (false)
	// readFailing: the last read of a table's schemes after a write
	// failed; logged once per outage, not per write.
	readFailing atomic.Bool
}

// WithConjunctionTags turns on conjunction tags (off by default): a read
// whose WHERE is a conjunction of equalities and IN lists on columns of
// its own table depends on the tags of the values it asks for
// ("posts:author_id=1") instead of ListTag, and writes invalidate the tags
// their rows enter. maxSchemes bounds the column sets per table (0, or
// less, means 32); queries of further column sets keep ListTag. The manager's backend
// must implement backends.Sets (the memory and Redis stores do);
// otherwise the option does nothing (logged once).
func WithConjunctionTags(maxSchemes int) Option {
	return func(c *config) {
		if maxSchemes <= 0 {
			maxSchemes = 32
		}
		c.conjSchemes = maxSchemes
	}
}

// maxConjTags bounds the tags of one read (an IN of many values, or the
// product of several): beyond it, the read depends on ListTag.
const maxConjTags = 256

// schemeOpTimeout bounds a scheme read or registration.
const schemeOpTimeout = 2 * time.Second

const settingConj = "depcache:conjunction"

func setName(table string) string { return "gorm-schemes:" + table }

// initConjunctions sets up conjunction tags at Initialize.
func (p *Plugin) initConjunctions() {
	if p.cfg.conjSchemes == 0 || p.conj != nil {
		return
	}
	sets, ok := p.m.Backend().(backends.Sets)
	if !ok {
		p.log.Warn("gormplugin: WithConjunctionTags needs a backend that implements backends.Sets; reads keep the list tag")
		return
	}
	p.conj = &conjState{maxSchemes: p.cfg.conjSchemes, maxTags: maxConjTags, sets: sets, ns: p.m.Prefix()}
}

// conjRead is a read's conjunction, derived and registered before its
// query ran.
type conjRead struct {
	scheme string
	tags   []string
	table  string
	sql    string // the query it was derived for
	vars   int
}

// prepareConjunction runs right before a query is sent: it derives the
// query's conjunction and makes sure its scheme is in the backend's set
// (schemes.go, top), so that readTags may use its tags. It does nothing
// outside a computation or inside a transaction (nothing is filled there).
func (p *Plugin) prepareConjunction(db *gorm.DB) {
	if p.conj == nil {
		return
	}
	ctx := db.Statement.Context
	if !pluginapi.InComputation(ctx) {
		return
	}
	db.InstanceSet(settingConj, (*conjRead)(nil))
	if db.Error != nil || db.DryRun || !p.m.Enabled() {
		return
	}
	if state, _ := txOf(db); state != noTx {
		return
	}
	c, ok := deriveConjunction(db)
	if !ok {
		return
	}
	tags, ok := c.tags(p.conj.maxTags)
	if !ok {
		return
	}
	scheme := c.scheme()
	if !p.registerScheme(ctx, c.table, scheme) {
		return
	}
	db.InstanceSet(settingConj, &conjRead{scheme: scheme, tags: tags, table: c.table, sql: db.Statement.SQL.String(), vars: len(db.Statement.Vars)})
}

// registerScheme reports whether scheme is in table's set, adding it if
// the bound allows.
func (p *Plugin) registerScheme(ctx context.Context, table, scheme string) bool {
	k := table + "\x00" + scheme
	if in, ok := p.conj.known.Load(k); ok {
		return in.(bool)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), schemeOpTimeout)
	defer cancel()
	in, err := p.conj.sets.AddMember(ctx, p.conj.ns, setName(table), scheme, p.conj.maxSchemes)
	if err != nil {
		p.logOnce("scheme-add:"+table, "gormplugin: cannot register a conjunction scheme; the read keeps the list tag", "table", table, "scheme", scheme, "err", err)
		return false
	}
	if !in {
		p.logOnce("scheme-full:"+table, "gormplugin: the table has as many conjunction schemes as WithConjunctionTags allows; reads of new column sets keep the list tag", "table", table, "scheme", scheme)
	}
	p.conj.known.Store(k, in)
	return in
}

// conjunctionTags returns the tags that replace ListTag for a read whose
// row tags (rowTags of them) cover every row it returned, or nil.
func (p *Plugin) conjunctionTags(db *gorm.DB, rowTags int) []string {
	if p.conj == nil {
		return nil
	}
	v, ok := db.InstanceGet(settingConj)
	if !ok {
		return nil
	}
	c, _ := v.(*conjRead)
	if c == nil {
		return nil
	}
	db.InstanceSet(settingConj, (*conjRead)(nil))
	stmt := db.Statement
	if c.sql != stmt.SQL.String() || c.vars != len(stmt.Vars) || c.table != tableName(stmt.Table) {
		return nil // derived for another query of a reused statement
	}
	if int64(rowTags) < db.RowsAffected {
		// A row without its key (Select without the key): an update of
		// it would change the result and invalidate nothing it has.
		return nil
	}
	cols := []string{}
	if c.scheme != "" {
		cols = strings.Split(c.scheme, "&")
	}
	return append(slices.Clip(c.tags), SchemeTag(c.table, cols...))
}

// A write's conjunction part is resolved after its commit, when the
// plugin reads the table's schemes: until then it travels among the
// write's tags as a marker, which invalidate turns into tags.

const conjMarkerPrefix = "~depcache-conjunction~"

// conjWrite describes the rows a write may have put into lists. Values
// are "=" + the formatted value, "?" (unknown) or "!" (a non-NULL value in
// a column lists know only as NULL: no list of a scheme with it holds the
// row).
type conjWrite struct {
	Table string `json:"t"`
	// All: the values are unknown altogether: every scheme of the table.
	All bool `json:"a,omitempty"`
	// Rows: an INSERT's rows, column → value (a column left out is unknown).
	Rows []map[string]string `json:"r,omitempty"`
	// Set: an UPDATE's assignments, column → value, the same for every
	// row it changed; the other columns did not change.
	Set map[string]string `json:"s,omitempty"`
	// Where: for columns the UPDATE did not assign, the values its WHERE
	// confines them to (so known before and after).
	Where map[string][]string `json:"w,omitempty"`
}

func (w *conjWrite) marker() string {
	b, _ := json.Marshal(w) // strings and bools only: cannot fail
	return conjMarkerPrefix + string(b)
}

// resolveConjunctions replaces each write marker among tags by the tags
// of the table's schemes the write's rows entered. Where the schemes
// cannot be read, the table tag goes instead (every read depends on it).
func (p *Plugin) resolveConjunctions(ctx context.Context, tags []string) []string {
	has := false
	for _, t := range tags {
		if strings.HasPrefix(t, conjMarkerPrefix) {
			has = true
			break
		}
	}
	if !has {
		return tags
	}
	out := make([]string, 0, len(tags))
	schemes := map[string][]string{} // per table, read once per call
	for _, t := range tags {
		if !strings.HasPrefix(t, conjMarkerPrefix) {
			out = append(out, t)
			continue
		}
		var w conjWrite
		if err := json.Unmarshal([]byte(t[len(conjMarkerPrefix):]), &w); err != nil || w.Table == "" {
			p.log.Error("gormplugin: a corrupt conjunction marker; invalidating every table seen", "marker", t)
			out = append(out, p.everyTable(t)...)
			continue
		}
		out = append(out, p.conjWriteTags(ctx, &w, schemes)...)
	}
	return out
}

func (p *Plugin) conjWriteTags(ctx context.Context, w *conjWrite, read map[string][]string) []string {
	if p.conj == nil {
		return []string{TableTag(w.Table)}
	}
	schemes, ok := read[w.Table]
	if !ok {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), schemeOpTimeout)
		defer cancel()
		var err error
		if schemes, err = p.conj.sets.Members(rctx, p.conj.ns, setName(w.Table)); err != nil {
			if p.conj.readFailing.CompareAndSwap(false, true) {
				p.log.Error("gormplugin: cannot read the table's conjunction schemes after a write; invalidating its table tag (for every write until a read succeeds; logged once)", "table", w.Table, "err", err)
			}
			return []string{TableTag(w.Table)}
		}
		if p.conj.readFailing.CompareAndSwap(true, false) {
			p.log.Info("gormplugin: the tables' conjunction schemes are readable again")
		}
		read[w.Table] = schemes
	}
	var tags []string
	for _, scheme := range schemes {
		var cols []string
		if scheme != "" {
			cols = strings.Split(scheme, "&")
		}
		tags = append(tags, enteredTags(w, cols)...)
	}
	return tags
}

// enteredTags returns the tags of scheme cols that the write's rows may
// have entered: the tag of each row's values when they are all known,
// nothing for a row that cannot be in any list of the scheme (an update
// that changed none of its columns, a non-NULL value where lists know only
// NULL), else the scheme's tag. A row leaving a list needs no tag here:
// every list with conjunction tags depends on the row tags of the rows it
// holds, which the write invalidates.
func enteredTags(w *conjWrite, cols []string) []string {
	whole := []string{SchemeTag(w.Table, cols...)}
	if w.All {
		return whole
	}
	if w.Set != nil {
		changed := false
		vals := make([][]string, len(cols))
		for i, col := range cols {
			if v, ok := w.Set[col]; ok {
				changed = true
				vals[i] = []string{v}
			} else if vs, ok := w.Where[col]; ok {
				vals[i] = vs
			} else {
				vals[i] = []string{"?"}
			}
		}
		if !changed {
			return nil
		}
		tags, ok := combinationTags(w.Table, cols, vals)
		if !ok {
			return whole
		}
		return tags
	}
	var tags []string
	for _, row := range w.Rows {
		vals := make([][]string, len(cols))
		for i, col := range cols {
			v, ok := row[col]
			if !ok {
				v = "?"
			}
			vals[i] = []string{v}
		}
		t, ok := combinationTags(w.Table, cols, vals)
		if !ok {
			return whole
		}
		tags = append(tags, t...)
	}
	return tags
}

// combinationTags names the tag of every combination of vals (per column,
// its possible values as conjWrite carries them), skipping combinations
// with a "!"; false when one has a "?" or there are too many.
func combinationTags(table string, cols []string, vals [][]string) ([]string, bool) {
	n := 1
	for _, vs := range vals {
		if n *= len(vs); n > maxConjTags {
			return nil, false
		}
	}
	var tags []string
	idx := make([]int, len(cols))
	for range n {
		gone, unknown := false, false
		for i := range cols {
			switch vals[i][idx[i]] {
			case "!":
				gone = true
			case "?":
				unknown = true
			}
		}
		switch {
		case gone: // in no list of the scheme
		case unknown:
			return nil, false
		default:
			var b strings.Builder
			b.WriteString(table)
			b.WriteByte(':')
			for i, col := range cols {
				if i > 0 {
					b.WriteByte('&')
				}
				b.WriteString(col)
				b.WriteByte('=')
				b.WriteString(strings.TrimPrefix(vals[i][idx[i]], "="))
			}
			tags = append(tags, b.String())
		}
		for i := len(idx) - 1; i >= 0; i-- {
			if idx[i]++; idx[i] < len(vals[i]) {
				break
			}
			idx[i] = 0
		}
	}
	return tags, true
}

// SchemeTags returns the SchemeTag of every conjunction scheme registered
// for table under m's prefix: what a write the plugin did not see (a
// change read from the database's log by gormplugin/pgcdc, a script)
// invalidates so that no list with conjunction tags misses a row it
// entered. Call it after the write has committed — the schemes protocol
// above, with the caller as the writer. None when m's backend keeps no
// schemes (it does not implement backends.Sets).
func SchemeTags(ctx context.Context, m *depcache.Manager, table string) ([]string, error) {
	if m == nil {
		return nil, errors.New("gormplugin: SchemeTags needs a manager (nil)")
	}
	ctx = orBackground(ctx)
	sets, ok := m.Backend().(backends.Sets)
	if !ok {
		return nil, nil
	}
	schemes, err := sets.Members(ctx, m.Prefix(), setName(table))
	if err != nil {
		return nil, fmt.Errorf("gormplugin: read the conjunction schemes of %q: %w", table, err)
	}
	tags := make([]string, 0, len(schemes))
	for _, scheme := range schemes {
		var cols []string
		if scheme != "" {
			cols = strings.Split(scheme, "&")
		}
		tags = append(tags, SchemeTag(table, cols...))
	}
	return tags, nil
}
