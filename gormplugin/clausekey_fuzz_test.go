package gormplugin

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/callbacks"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/logger"
)

// FuzzClauseKeyCollisions builds GORM statements from fuzz input over
// the shapes Cached sees (string SQL with variables of many types, struct,
// map and clause conditions, Not/Or, Order, Limit/Offset, Unscoped,
// Select/Omit, Table, Model vs destination, soft delete, Preload, Find,
// First, Take, Last, Pluck) and checks the clause key against what GORM
// builds: one clause key never stands for two different SQL texts, typed
// variables, SQL keys, destination types or preload trees, in one input or
// across the inputs a fuzzing process has seen; and a statement built twice
// gets the same key.
func FuzzClauseKeyCollisions(f *testing.F) {
	for _, s := range []string{
		"", "\x00", "\x01\x02", "\x00\x00\x01\x00", "\x00\x01\x05", "\x03\x04\x05\x06",
		"\x00\x00\x00\x0d\x01", "\x00\x00\x00\x0d\x02", "\x00\x00\x00\x0e\x01",
		"\x01\x00\x09\x01\x02", "\x02\x01\x03\x00\x04\x01", "\x04\x02\x06\x05\x07",
		"\x05\x02\x00\x01\x01\x03\x01", "\x06\x03\x02\x02\x00", "\x07\x04\x01\x08\x00",
		"\x08\x05\x00\x00\x00\x10", "\x09\x06\x0c\x0d", "\x0a\x00\x0e\x0f\x03",
	} {
		f.Add([]byte(s), []byte(s+"\x01"))
	}
	dbs := fuzzKeyDBs(f)
	// GORM logs conditions whose types it cannot parse on its global
	// logger; fuzz targets run after the package's tests.
	prev := logger.Default
	logger.Default = logger.Discard
	f.Cleanup(func() { logger.Default = prev })
	f.Fuzz(func(t *testing.T, a, b []byte) {
		for _, db := range dbs {
			fuzzPair(t, db, a, b)
		}
	})
}

// fuzzPair checks the statements a and b build on db.
func fuzzPair(t *testing.T, db *gorm.DB, a, b []byte) {
	ra := fuzzStatement(t, db, a)
	rb := fuzzStatement(t, db, b)
	if again := fuzzStatement(t, db, a); ra.ok != again.ok || ra.key != again.key || ra.sql != again.sql {
		t.Fatalf("not deterministic: %+v\nagain %+v", ra, again)
	}
	compareKeyed(t, ra, rb)
	for _, r := range []keyedQuery{ra, rb} {
		if !r.ok {
			continue
		}
		fuzzSeenMu.Lock()
		prev, seen := fuzzSeen[r.key]
		if !seen {
			if len(fuzzSeen) > 1<<17 {
				clear(fuzzSeen)
			}
			fuzzSeen[r.key] = r
		}
		fuzzSeenMu.Unlock()
		if seen {
			compareKeyed(t, prev, r)
		}
	}
}

var (
	fuzzSeenMu sync.Mutex
	fuzzSeen   = map[string]keyedQuery{}
)

// keyedQuery is what one statement was keyed and built as.
type keyedQuery struct {
	in          string
	dialect     string
	key         string
	ok          bool
	sql, vars   string
	sqlKey      string
	dest, model string
	preloads    string
	staleVars   bool
}

func compareKeyed(t *testing.T, a, b keyedQuery) {
	t.Helper()
	if !a.ok || !b.ok || a.key != b.key {
		return
	}
	if a.dialect != b.dialect || a.sql != b.sql || a.vars != b.vars || a.sqlKey != b.sqlKey || a.dest != b.dest || a.model != b.model || a.preloads != b.preloads {
		t.Fatalf("one clause key for two queries:\n  %+v\n  %+v", a, b)
	}
}

var errFuzzStop = errors.New("fuzz: built, not run")

// fuzzKeyDB is a SQLite DB whose query callback keys, builds and stops.
func fuzzKeyDB(tb testing.TB) *gorm.DB {
	return fuzzKeyDBOn(tb, sqlite.Open("file::memory:"))
}

// fuzzKeyDBs are fuzzKeyDB and the same on PostgreSQL and MySQL, whose
// dialects build without a server (no query is run).
func fuzzKeyDBs(tb testing.TB) []*gorm.DB {
	return []*gorm.DB{
		fuzzKeyDB(tb),
		fuzzKeyDBOn(tb, postgres.New(postgres.Config{DSN: "host=127.0.0.1 port=1 user=none dbname=none sslmode=disable"})),
		fuzzKeyDBOn(tb, mysql.New(mysql.Config{DSN: "none@tcp(127.0.0.1:1)/none", SkipInitializeWithVersion: true})),
	}
}

func fuzzKeyDBOn(tb testing.TB, d gorm.Dialector) *gorm.DB {
	db, err := gorm.Open(d, &gorm.Config{Logger: logger.Discard, DisableAutomaticPing: true})
	if err != nil {
		tb.Fatal(err)
	}
	sqlDB, _ := db.DB()
	tb.Cleanup(func() { sqlDB.Close() })
	err = db.Callback().Query().Replace("gorm:query", func(db *gorm.DB) {
		out, _ := db.Statement.Context.Value(fuzzOutKey{}).(*keyedQuery)
		if db.Error != nil || out == nil {
			return
		}
		if out.staleVars {
			// A statement that arrives with variables but no SQL (as
			// GORM hands a subquery its parent's).
			db.Statement.Vars = append(db.Statement.Vars, "stale")
		}
		out.dialect = db.Dialector.Name()
		out.key, out.ok = clauseKey(db, "")
		callbacks.BuildQuerySQL(db)
		if db.Error != nil {
			out.ok = false // an error, not a query
			return
		}
		stmt := db.Statement
		out.sql = stmt.SQL.String()
		var vb strings.Builder
		for _, v := range stmt.Vars {
			vb.WriteString(typedRepr(v))
			vb.WriteByte(';')
		}
		out.vars = vb.String()
		if k, err := queryKey(db, ""); err == nil {
			out.sqlKey = k
		} else {
			out.sqlKey = "error: " + err.Error()
		}
		out.dest = string(appendDestTypes(nil, stmt))
		if stmt.Schema != nil {
			out.model = fmt.Sprint(stmt.Schema.ModelType)
		}
		pb, err := appendPreloads(nil, stmt)
		out.preloads = fmt.Sprint(string(pb), err)
		db.AddError(errFuzzStop) // no rows, no preloads
	})
	if err != nil {
		tb.Fatal(err)
	}
	return db
}

type fuzzOutKey struct{}

// typedRepr names a variable with its type; times with their zone.
func typedRepr(v any) string {
	if t, ok := v.(time.Time); ok {
		name, off := t.Zone()
		return fmt.Sprintf("time(%s %s %d %s)", t.Format(time.RFC3339Nano), name, off, t.Location())
	}
	return fmt.Sprintf("%T(%#v)", v, v)
}

// Models of the fuzzed statements: fzUser, fzAdmin, fzEmbedded and
// fzNamed share a table; fzPost (soft delete) and fzArchive (none) too.
type fzUser struct {
	ID   uint
	Name string
	Age  int
}

func (fzUser) TableName() string { return "fz_users" }

type fzAdmin struct {
	ID   uint
	Name string
	Age  int
}

func (fzAdmin) TableName() string { return "fz_users" }

type fzBase struct{ ID uint }

type fzEmbedded struct {
	fzBase
	Name string
	Age  int
}

func (fzEmbedded) TableName() string { return "fz_users" }

type fzID uint

type fzNamed struct {
	ID   fzID
	Name string
	Age  int
}

func (fzNamed) TableName() string { return "fz_users" }

type fzSmall struct {
	ID   uint
	Name string
}

type fzPost struct {
	ID        uint
	AuthorID  uint
	Author    fzUser
	Title     string
	Comments  []fzComment `gorm:"foreignKey:PostID"`
	DeletedAt gorm.DeletedAt
}

func (fzPost) TableName() string { return "fz_posts" }

type fzArchive struct {
	ID       uint
	AuthorID uint
	Author   fzUser
	Title    string
	Comments []fzComment `gorm:"foreignKey:PostID"`
}

func (fzArchive) TableName() string { return "fz_posts" }

// fzRemoved has a soft delete of its own column on fzPost's table.
type fzRemoved struct {
	ID        uint
	AuthorID  uint
	Title     string
	RemovedAt gorm.DeletedAt
}

func (fzRemoved) TableName() string { return "fz_posts" }

type fzComment struct {
	ID     uint
	PostID uint
	Body   string
}

type fzVote struct {
	PostID uint `gorm:"primaryKey;autoIncrement:false"`
	UserID uint `gorm:"primaryKey;autoIncrement:false"`
	Value  int
}

type fzSetting struct {
	Name  string `gorm:"primaryKey"`
	Value string
}

// fzValuer is a driver.Valuer.
type fzValuer struct{ n int64 }

func (v fzValuer) Value() (any, error) { return v.n, nil }

// fuzzIn reads choices from fuzz input; zeros once it runs out.
type fuzzIn struct {
	b []byte
	i int
}

func (r *fuzzIn) byte() byte {
	if r.i >= len(r.b) {
		return 0
	}
	c := r.b[r.i]
	r.i++
	return c
}

func (r *fuzzIn) n(k int) int { return int(r.byte()) % k }

var fuzzZones = func() []*time.Location {
	zs := []*time.Location{time.UTC, time.FixedZone("", 0), time.FixedZone("CET", 3600), time.FixedZone("X", 7200), time.Local}
	if l, err := time.LoadLocation("Europe/Paris"); err == nil {
		zs = append(zs, l)
	}
	return zs
}()

var fuzzStrings = []string{"1", "a", "", "7", "x?y", "a b", "id", "?", "name = ?", "O'Reilly", "\x00"}

// val is a variable of one of many types, from a small domain so that
// values of different types look alike.
func (r *fuzzIn) val(depth int) any {
	small := int(r.byte() % 3)
	switch r.n(40) {
	case 0:
		return small
	case 1:
		return int8(small)
	case 2:
		return int16(small)
	case 3:
		return int32(small)
	case 4:
		return int64(small)
	case 5:
		return uint(small)
	case 6:
		return uint8(small)
	case 7:
		return uint16(small)
	case 8:
		return uint32(small)
	case 9:
		return uint64(small)
	case 10:
		return float32(small)
	case 11:
		return float64(small) + float64(r.n(2))/2
	case 12:
		return small == 1
	case 13:
		return fuzzStrings[r.n(len(fuzzStrings))]
	case 14:
		return []byte(fuzzStrings[r.n(len(fuzzStrings))])
	case 15:
		base := time.Date(2024, 5, 1, 12, 0, small, r.n(2), time.UTC)
		return base.In(fuzzZones[r.n(len(fuzzZones))])
	case 16:
		return nil
	case 17:
		return &small
	case 18:
		return fzID(small)
	case 19:
		return sql.NullInt64{Int64: int64(small), Valid: r.n(2) == 0}
	case 20:
		return fzValuer{int64(small)}
	case 21:
		return []int{small, small + 1}[:r.n(3)]
	case 22:
		return []string{fuzzStrings[r.n(len(fuzzStrings))]}
	case 23:
		if depth > 2 {
			return small
		}
		xs := make([]any, r.n(3))
		for i := range xs {
			xs[i] = r.val(depth + 1)
		}
		return xs
	case 24:
		return [][]int{{small, 1}}
	case 25:
		return fzUser{ID: uint(small), Name: "a"}
	case 26:
		return map[string]any{"name": r.val(depth + 1)}
	case 27:
		return []fzID{fzID(small)}
	case 28:
		return clause.Expr{SQL: "? + 1", Vars: []any{small}}
	case 29:
		return []int32{int32(small)}
	case 30:
		return []int64{int64(small)}
	case 31:
		return []uint{uint(small)}
	case 32:
		return []uint64{uint64(small)}
	case 33:
		return []float64{float64(small)}
	case 34:
		return []int(nil)
	case 35:
		return []any{}
	case 36:
		return sql.Named("name", small)
	case 37:
		return &fzUser{ID: uint(small)}
	case 38:
		return []byte(nil)
	default:
		return [2]int{small, 1}
	}
}

var fuzzColumns = []any{
	"id", "name", "age", "fz_users.id",
	clause.Column{Name: "id"}, clause.Column{Name: "name"},
	clause.Column{Table: clause.CurrentTable, Name: "id"},
	clause.PrimaryColumn, clause.Column{Name: clause.PrimaryKey, Table: "fz_users"},
	clause.Column{Name: "id", Raw: true}, clause.Column{Table: "fz_users", Name: "id"},
	clause.Column{Name: "id", Alias: "x"}, clause.Column{Name: "deleted_at"},
	[]clause.Column{{Name: "id"}, {Name: "name"}},
}

func (r *fuzzIn) expr(depth int) clause.Expression {
	col := fuzzColumns[r.n(len(fuzzColumns))]
	n := 11
	if depth > 2 {
		n = 8
	}
	switch r.n(n) {
	case 0:
		return clause.Eq{Column: col, Value: r.val(0)}
	case 1:
		return clause.Neq{Column: col, Value: r.val(0)}
	case 2:
		return clause.Gt{Column: col, Value: r.val(0)}
	case 3:
		return clause.Lte{Column: col, Value: r.val(0)}
	case 4:
		return clause.Like{Column: col, Value: r.val(0)}
	case 5:
		vs := make([]any, r.n(3))
		for i := range vs {
			vs[i] = r.val(0)
		}
		if r.n(4) == 0 {
			vs = nil
		}
		return clause.IN{Column: col, Values: vs}
	case 6:
		vars := make([]any, r.n(3))
		for i := range vars {
			vars[i] = r.val(0)
		}
		return clause.Expr{SQL: fuzzSQL[r.n(len(fuzzSQL))], Vars: vars, WithoutParentheses: r.n(2) == 0}
	case 7:
		return clause.Gte{Column: col, Value: r.val(0)}
	case 8:
		return clause.And(r.expr(depth+1), r.expr(depth+1))
	case 9:
		return clause.Or(r.expr(depth + 1))
	default:
		return clause.Not(r.expr(depth+1), r.expr(depth+1))
	}
}

var fuzzSQL = []string{
	"id = ?", "name = ?", "id IN ?", "id = ? OR name = ?", "(id, name) IN ?", "age > ?",
	"name = @name", "id", "1", "7", "", "name LIKE ?", "?", "id = ?  ", "a", "ab",
	"id = ? AND age = ?", "id IN (?)", "name = ? OR 1 = 1", "id = ?7", "deleted_at IS NOT NULL",
}

// cond is a query and its arguments for Where, Not, Or or a finisher.
func (r *fuzzIn) cond(db *gorm.DB) (any, []any) {
	switch r.n(10) {
	case 0, 1, 2:
		q := fuzzSQL[r.n(len(fuzzSQL))]
		args := make([]any, r.n(3))
		for i := range args {
			args[i] = r.val(0)
		}
		return q, args
	case 3:
		v := r.val(0) // a key, a struct, a map, a slice of keys
		if _, named := v.(sql.NamedArg); named {
			v = 1 // GORM logs what it cannot parse
		}
		return v, nil
	case 4:
		return fzUser{Name: fuzzStrings[r.n(len(fuzzStrings))], Age: r.n(3)}, nil
	case 5:
		return &fzUser{ID: uint(r.n(3))}, nil
	case 6:
		return map[string]any{"name": r.val(0), "age": r.val(0)}, nil
	case 7:
		return r.expr(0), nil
	case 8:
		return db.Where(r.expr(1)).Or(r.expr(1)), nil // a group
	default:
		if r.n(2) == 0 {
			return clause.And(r.expr(0), r.expr(0)), nil
		}
		return []clause.Expression{r.expr(0)}, nil
	}
}

// dest returns a model (or nil) and a destination.
func (r *fuzzIn) dest() (model, dest any) {
	switch r.n(24) {
	case 22:
		return nil, &fzRemoved{ID: uint(r.n(3))}
	case 23:
		return nil, &[]fzRemoved{}
	case 0:
		return nil, &fzUser{}
	case 1:
		return nil, &fzUser{ID: uint(r.n(3))}
	case 2:
		return nil, &[]fzUser{}
	case 3:
		return nil, &[]*fzUser{}
	case 4:
		return nil, &fzAdmin{ID: uint(r.n(3))}
	case 5:
		return nil, &[]fzAdmin{}
	case 6:
		return nil, &fzEmbedded{fzBase: fzBase{ID: uint(r.n(3))}}
	case 7:
		return nil, &fzNamed{ID: fzID(r.n(3))}
	case 8:
		return &fzUser{}, &fzSmall{}
	case 9:
		return &fzUser{}, &[]map[string]any{}
	case 10:
		return &fzUser{}, &map[string]any{}
	case 11:
		return nil, &fzPost{ID: uint(r.n(3))}
	case 12:
		return nil, &[]fzPost{}
	case 13:
		return nil, &fzArchive{ID: uint(r.n(3))}
	case 14:
		return nil, &[]fzArchive{}
	case 15:
		return nil, &fzVote{PostID: uint(r.n(3)), UserID: uint(r.n(3))}
	case 16:
		return nil, &fzSetting{Name: fuzzStrings[r.n(len(fuzzStrings))]}
	case 17:
		return &fzAdmin{}, &[]fzUser{}
	case 18:
		return &fzUser{ID: 1}, &fzUser{}
	case 19:
		return &fzPost{}, &[2]fzPost{}
	case 20:
		var x any = &fzUser{ID: uint(r.n(3))}
		return nil, &x
	default:
		return &fzArchive{}, &[]fzPost{}
	}
}

// fuzzStatement builds one statement from in and returns how it was keyed
// and built.
func fuzzStatement(t *testing.T, db *gorm.DB, in []byte) keyedQuery {
	r := &fuzzIn{b: in}
	out := &keyedQuery{in: fmt.Sprintf("%q", in)}
	ctx := t.Context()
	q := db.Session(&gorm.Session{NewDB: true, Context: context.WithValue(ctx, fuzzOutKey{}, out)})
	model, dest := r.dest()
	if model != nil {
		q = q.Model(model)
	}
	switch r.n(8) {
	case 0, 1, 2, 3:
		q = q.Scopes(Cached(time.Minute))
	case 4:
		out.staleVars = true
	}
	for steps := r.n(6); steps > 0; steps-- {
		switch r.n(16) {
		case 0, 1, 2:
			c, args := r.cond(db.Session(&gorm.Session{NewDB: true}))
			q = q.Where(c, args...)
		case 3:
			c, args := r.cond(db.Session(&gorm.Session{NewDB: true}))
			q = q.Not(c, args...)
		case 4:
			c, args := r.cond(db.Session(&gorm.Session{NewDB: true}))
			q = q.Or(c, args...)
		case 5:
			switch r.n(4) {
			case 0:
				q = q.Order([]string{"id", "id desc", "name", "age, id", ""}[r.n(5)])
			case 1:
				q = q.Order(clause.OrderByColumn{Column: fuzzColumns[4+r.n(8)].(clause.Column), Desc: r.n(2) == 0, Reorder: r.n(3) == 0})
			case 2:
				q = q.Order(clause.OrderBy{Expression: clause.Expr{SQL: "FIELD(id, ?)", Vars: []any{r.val(0)}}})
			default:
				q = q.Order(clause.OrderBy{Columns: []clause.OrderByColumn{{Column: clause.Column{Name: "name"}}}})
			}
		case 6:
			q = q.Limit(r.n(4) - 1)
		case 7:
			q = q.Offset(r.n(4) - 1)
		case 8:
			q = q.Unscoped()
		case 9:
			if r.n(2) == 0 {
				q = q.Select("id")
			} else {
				q = q.Omit("name")
			}
		case 10:
			q = q.Table([]string{"fz_users", "fz_posts", "fz_users u"}[r.n(3)])
		case 11:
			switch r.n(4) {
			case 0:
				q = q.Preload("Author")
			case 1:
				q = q.Preload("Comments", "body = ?", r.val(0))
			case 2:
				q = q.Preload(clause.Associations)
			default:
				q = q.Preload("Comments")
			}
		case 12:
			q = q.Distinct()
		case 13:
			q = q.Joins("Author")
		case 14:
			switch r.n(6) {
			case 0:
				q = q.Group("name")
			case 1:
				q = q.Clauses(clause.Where{Exprs: []clause.Expression{r.expr(0)}})
			case 2:
				q = q.Clauses(clause.OrderBy{Columns: []clause.OrderByColumn{{Column: clause.Column{Name: "id"}, Desc: r.n(2) == 0}}})
			case 3:
				n := r.n(3)
				q = q.Clauses(clause.Limit{Limit: &n, Offset: r.n(3)})
			case 4:
				q = q.Clauses(r.expr(0)) // a condition
			default:
				// A clause GORM writes with another name or more around it.
				q = q.Clauses(clause.Where{Exprs: []clause.Expression{clause.Expr{SQL: "1 = 1"}}})
				c := q.Statement.Clauses["WHERE"]
				if r.n(2) == 0 {
					c.Name = "WHERE NOT"
				} else {
					c.AfterNameExpression = clause.Expr{SQL: "1 = 1 AND"}
				}
				q.Statement.Clauses["WHERE"] = c
			}
		default:
			q = q.Limit(r.n(3)).Offset(r.n(3))
		}
	}
	var conds []any
	if r.n(3) == 0 {
		c, args := r.cond(db.Session(&gorm.Session{NewDB: true}))
		conds = append([]any{c}, args...)
	}
	switch r.n(6) {
	case 0, 1:
		q.Find(dest, conds...)
	case 2:
		q.First(dest, conds...)
	case 3:
		q.Take(dest, conds...)
	case 4:
		q.Last(dest, conds...)
	default:
		var names []string
		q.Model(dest).Pluck("name", &names)
	}
	return *out
}

// A statement that arrives with variables but no SQL (as GORM hands a
// subquery its parent's) builds its own after them: the same clauses then
// make other variables (and, on PostgreSQL, other placeholders), so it
// keeps the SQL key. FuzzClauseKeyCollisions found both sharing a key:
// Last(&[]fzPost{}) with the variable "stale" and without.
func TestClauseKeyStatementWithVars(t *testing.T) {
	db := fuzzKeyDB(t)
	run := func(stale bool) keyedQuery {
		out := &keyedQuery{staleVars: stale}
		var ps []fzPost
		db.Session(&gorm.Session{NewDB: true, Context: context.WithValue(t.Context(), fuzzOutKey{}, out)}).Last(&ps)
		return *out
	}
	clean, stale := run(false), run(true)
	if !clean.ok {
		t.Fatalf("%s: not keyed from its clauses", clean.sql)
	}
	if stale.ok {
		t.Fatalf("%s %s: keyed from its clauses as %s, as is %s without the variable", stale.sql, stale.vars, stale.key, clean.key)
	}
}
