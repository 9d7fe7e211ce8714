package gormplugin

import (
	"testing"
	"time"

	"gorm.io/gorm/clause"
)

// Expressions GORM builds differently, or might, never encode alike: the
// encoding tags every item with its exact type and prefixes lengths.
func TestKeyEncoderDistinguishes(t *testing.T) {
	at := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Skip("no time zone data:", err)
	}
	exprs := []clause.Expression{
		clause.Eq{Column: "id", Value: 7},
		clause.Eq{Column: "id", Value: int64(7)},
		clause.Eq{Column: "id", Value: uint(7)},
		clause.Eq{Column: "id", Value: "7"},
		clause.Eq{Column: "id", Value: []byte("7")},
		clause.Eq{Column: "id", Value: 7.0},
		clause.Eq{Column: "id", Value: float32(7)},
		clause.Eq{Column: "id", Value: true},
		clause.Eq{Column: "id", Value: nil},
		clause.Eq{Column: "id", Value: []int{7}},
		clause.Eq{Column: "id", Value: []int32{7}},
		clause.Eq{Column: "id", Value: []any{7}},
		clause.Eq{Column: "id", Value: []int(nil)},
		clause.Eq{Column: "id", Value: []int{}},
		clause.Eq{Column: "id", Value: at},
		clause.Eq{Column: "id", Value: at.In(paris)},
		clause.Eq{Column: "id", Value: at.Add(time.Nanosecond)},
		clause.Neq{Column: "id", Value: 7},
		clause.Gt{Column: "id", Value: 7},
		clause.Gte{Column: "id", Value: 7},
		clause.Lt{Column: "id", Value: 7},
		clause.Lte{Column: "id", Value: 7},
		clause.Like{Column: "id", Value: 7},
		clause.Eq{Column: clause.Column{Name: "id"}, Value: 7},
		clause.Eq{Column: clause.Column{Name: "id", Raw: true}, Value: 7},
		clause.Eq{Column: clause.Column{Table: "t", Name: "id"}, Value: 7},
		clause.Eq{Column: clause.Column{Name: "t.id"}, Value: 7},
		clause.Eq{Column: clause.Column{Name: "id", Alias: "x"}, Value: 7},
		clause.Eq{Column: clause.PrimaryColumn, Value: 7},
		clause.IN{Column: "id", Values: []any{7}},
		clause.IN{Column: "id", Values: []any{[]any{7}}},
		clause.IN{Column: "id", Values: []any{7, 8}},
		clause.IN{Column: "id", Values: nil},
		clause.IN{Column: "id", Values: []any{}},
		clause.IN{Column: []clause.Column{{Name: "a"}, {Name: "b"}}, Values: []any{[]any{1, 2}}},
		clause.Expr{SQL: "id = ?", Vars: []any{7}},
		clause.Expr{SQL: "id = ?", Vars: []any{7}, WithoutParentheses: true},
		clause.Expr{SQL: "id = ?", Vars: []any{"7"}},
		clause.Expr{SQL: "id = ?7", Vars: nil},
		clause.Expr{SQL: "id = ?", Vars: []any{[]any{7, 8}}},
		clause.Expr{SQL: "id = ?", Vars: []any{[]any{[]any{7, 8}}}},
		clause.Expr{SQL: "a", Vars: []any{"b"}},
		clause.Expr{SQL: "ab"},
		clause.AndConditions{Exprs: []clause.Expression{clause.Eq{Column: "id", Value: 7}}},
		clause.OrConditions{Exprs: []clause.Expression{clause.Eq{Column: "id", Value: 7}}},
		clause.NotConditions{Exprs: []clause.Expression{clause.Eq{Column: "id", Value: 7}}},
		clause.AndConditions{Exprs: []clause.Expression{clause.Eq{Column: "id", Value: 7}, clause.Eq{Column: "id", Value: 8}}},
		clause.AndConditions{Exprs: []clause.Expression{clause.AndConditions{Exprs: []clause.Expression{clause.Eq{Column: "id", Value: 7}}}, clause.Eq{Column: "id", Value: 8}}},
	}
	seen := map[string]int{}
	for i, x := range exprs {
		e := keyEncoder{}
		if !e.expr(x, 0) {
			t.Fatalf("%d %#v: not encoded", i, x)
		}
		if j, ok := seen[string(e.b)]; ok {
			t.Errorf("%#v and %#v encode alike", exprs[j], x)
		}
		seen[string(e.b)] = i
	}
	// What the encoding must refuse: GORM calls methods on these or
	// builds them as SQL.
	for _, v := range []any{clause.Column{Name: "x"}, clause.Expr{SQL: "x"}, struct{ ID int }{1}, &at, [2]int{1, 2}, []any{[]any{[]any{1}}}, map[string]any{}} {
		e := keyEncoder{}
		if e.value(v, 0) {
			t.Errorf("%#v encoded as a value", v)
		}
	}
}
