package gormplugin

import (
	"context"
	"database/sql/driver"
	"encoding/binary"
	"fmt"
	"sync"
	"unsafe"

	"gorm.io/gorm"
	"gorm.io/gorm/callbacks"
	"gorm.io/gorm/clause"

	"github.com/depcache/go-depcache/keys"
)

// A Cached query with Preload stores, in its one entry, the rows of its own
// query and of every query its preloads ran, in order. A hit replays them
// all while GORM's preload code runs as it does on a miss: one cache read
// for the whole tree, and the associations GORM itself builds.
//
// The queries of one fill or one hit form a session, carried in the
// context that gorm:preload's queries inherit.

type sessionKey struct{}

// session is the queries a Cached query's preloads ran (recording) or are
// to be served (replaying).
type session struct {
	mu        sync.Mutex
	recording bool
	queries   []recordedQuery
	next      int    // replaying: the next query to serve
	refuse    string // recording: why the entry cannot be stored
}

type recordedQuery struct {
	fingerprint string // the SQL and its variables
	rs          *resultSet
	schemaless  bool // scanned without a model (column scan types matter)
}

func withSession(ctx context.Context, s *session) context.Context {
	return context.WithValue(ctx, sessionKey{}, s)
}

func sessionOf(ctx context.Context) *session {
	if ctx == nil {
		return nil
	}
	s, _ := ctx.Value(sessionKey{}).(*session)
	return s
}

// runPreloads runs GORM's preloads for a Cached query inside s, then keeps
// gorm:preload from running them again (restorePreloads puts them back
// for a reused statement).
func runPreloads(db *gorm.DB, ctx context.Context, s *session) {
	stmt := db.Statement
	if db.Error != nil || len(stmt.Preloads) == 0 {
		return
	}
	stmt.Context = withSession(context.WithValue(ctx, preloadKey{}, true), s)
	callbacks.Preload(db)
	stmt.Context = ctx
	if stmt.Clauses != nil {
		stmt.Clauses[clausePreloads] = clause.Clause{Expression: takenPreloads(stmt.Preloads)}
	}
	stmt.Preloads = nil
}

// clausePreloads holds the preloads runPreloads took away until
// restorePreloads, in a clause of its own that builds no SQL: not in the
// statement's Settings, which the preload queries copy, and whose first
// use costs every query an allocation.
const clausePreloads = "depcache:preloads"

type takenPreloads map[string][]interface{}

func (takenPreloads) Build(clause.Builder) {}

// restorePreloads runs after gorm:after_query: it gives back the preloads
// runPreloads took away, so that a reused statement still has them.
func restorePreloads(db *gorm.DB) {
	c, ok := db.Statement.Clauses[clausePreloads]
	if !ok {
		return
	}
	delete(db.Statement.Clauses, clausePreloads)
	if pre, ok := c.Expression.(takenPreloads); ok {
		db.Statement.Preloads = pre
	}
}

// sessionQuery runs a query of a preload inside s: recorded on a fill,
// served from the entry on a hit. A hit whose queries differ from the
// recorded ones (a hook that reads differently) runs the rest for real.
func (p *Plugin) sessionQuery(db *gorm.DB, s *session, raw bool) {
	stmt := db.Statement
	if db.Error != nil || db.DryRun {
		callbacks.Query(db)
		p.tagRead(db, raw, false)
		return
	}
	callbacks.BuildQuerySQL(db)
	if db.Error != nil {
		return
	}
	fp, err := fingerprint(stmt)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.recording {
		rs := p.runQuery(db)
		p.tagRead(db, raw, false)
		switch {
		case err != nil:
			s.refuse = "a preload's variables: " + err.Error()
		case rs == nil:
			s.refuse = "a preload's query failed"
		default:
			s.queries = append(s.queries, recordedQuery{fingerprint: fp, rs: rs, schemaless: stmt.Schema == nil})
		}
		return
	}
	if err == nil && s.next < len(s.queries) && s.queries[s.next].fingerprint == fp {
		q := s.queries[s.next]
		s.next++
		p.replay(db, q.rs)
		return
	}
	s.next = len(s.queries) // diverged: nothing after this can be trusted
	p.runQuery(db)
	p.tagRead(db, raw, false)
}

func fingerprint(stmt *gorm.Statement) (string, error) {
	vars, err := keys.OfErr(stmt.Vars...)
	if err != nil {
		return "", err
	}
	return stmt.SQL.String() + "\x00" + vars, nil
}

// An entry: a version byte, the number of queries, then each query's
// fingerprint (empty for the Cached query itself: the key holds it) and
// its encoded resultSet.
const entryVersion = 1

func encodeEntry(qs []recordedQuery) ([]byte, error) {
	b := []byte{entryVersion}
	b = binary.AppendUvarint(b, uint64(len(qs)))
	for _, q := range qs {
		rb, err := q.rs.encode()
		if err != nil {
			return nil, err
		}
		b = appendString(b, q.fingerprint)
		b = binary.AppendUvarint(b, uint64(len(rb)))
		b = append(b, rb...)
	}
	return b, nil
}

// decodeEntry reads what encodeEntry wrote. The decoded strings share b's
// memory, so nothing may modify b afterwards: a hit's bytes are the
// backend's reply (pluginapi.Bytes), which no one writes to. Byte values
// are copied (a Scanner may keep and modify them).
func decodeEntry(b []byte) ([]recordedQuery, error) {
	d := decoder{b: b, s: unsafe.String(unsafe.SliceData(b), len(b))}
	if v := d.byte(); v != entryVersion {
		return nil, fmt.Errorf("%w: entry version %d", errCorruptResult, v)
	}
	n := d.count()
	var qs []recordedQuery
	var rows [][]driver.Value // room for the first query's rows
	var first *resultSet
	var sub decoder // the decoder of each query's rows
	if n == 1 {
		// The common entry, one query of one row (a First) of up to 16
		// columns, in one allocation.
		one := new(struct {
			q    [1]recordedQuery
			rs   resultSet
			row  [1][]driver.Value
			vals [16]driver.Value
			strs [16]string
			ints [16]int64
		})
		qs, rows, first = one.q[:0], one.row[:], &one.rs
		sub.valBuf, sub.strs, sub.ints = one.vals[:0], one.strs[:0], one.ints[:0]
	} else {
		qs = make([]recordedQuery, 0, n)
	}
	for i := range n {
		fp := d.string()
		size := d.count()
		if d.err != nil {
			break
		}
		// The rows' strings share d's one copy of the entry.
		end := d.off + size
		sub.b, sub.s, sub.off = d.b[:end], d.s[:end], d.off
		rs := first
		if i > 0 || rs == nil {
			rs = &resultSet{}
		}
		if err := sub.resultSet(rs, rows); err != nil {
			return nil, err
		}
		rows = nil
		d.off = end
		qs = append(qs, recordedQuery{fingerprint: fp, rs: rs})
	}
	if d.err != nil || d.off != len(b) || len(qs) == 0 {
		return nil, errCorruptResult
	}
	return qs, nil
}
