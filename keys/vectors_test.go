package keys_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/depcache/go-depcache/keys"
)

var update = flag.Bool("update", false, "rewrite testdata/keys/vectors.json from the current code")

var vectorsFile = filepath.Join("..", "testdata", "keys", "vectors.json")

// vector is one golden key: Input is the Go expression of the arguments
// that args rebuilds; the file holds Name, Input and Key.
type vector struct {
	Name  string `json:"name"`
	Input string `json:"input"`
	Key   string `json:"key"`
	args  func() []any
}

func vectorCases() []vector {
	at := time.Date(2024, 5, 1, 12, 30, 0, 123456789, time.FixedZone("CEST", 2*3600))
	return []vector{
		{Name: "no args", Input: `Of()`, args: func() []any { return nil }},
		{Name: "nil", Input: `Of(nil)`, args: func() []any { return []any{nil} }},
		{Name: "int", Input: `Of(42)`, args: func() []any { return []any{42} }},
		{Name: "negative int8", Input: `Of(int8(-5))`, args: func() []any { return []any{int8(-5)} }},
		{Name: "uint", Input: `Of(uint(42))`, args: func() []any { return []any{uint(42)} }},
		{Name: "float", Input: `Of(2.5)`, args: func() []any { return []any{2.5} }},
		{Name: "inf", Input: `Of(math.Inf(-1))`, args: func() []any { return []any{math.Inf(-1)} }},
		{Name: "bool", Input: `Of(true, false)`, args: func() []any { return []any{true, false} }},
		{Name: "string", Input: `Of("bob")`, args: func() []any { return []any{"bob"} }},
		{Name: "string escapes", Input: `Of("a|b\n\"é")`, args: func() []any { return []any{"a|b\n\"é"} }},
		{Name: "long string", Input: `Of(strings.Repeat("x", 100))`, args: func() []any { return []any{strings.Repeat("x", 100)} }},
		{Name: "bytes", Input: `Of([]byte("bob"))`, args: func() []any { return []any{[]byte("bob")} }},
		{Name: "time", Input: `Of(time.Date(2024, 5, 1, 12, 30, 0, 123456789, CEST))`, args: func() []any { return []any{at} }},
		{Name: "several", Input: `Of(42, "bob", true, nil)`, args: func() []any { return []any{42, "bob", true, nil} }},
		{Name: "cache keyer", Input: `Of(&PtrKeyer{N: 4})`, args: func() []any { return []any{&PtrKeyer{N: 4}} }},
		{Name: "depcache key tag", Input: `Of(Article{ID: 1, Slug: "hello"})`, args: func() []any { return []any{Article{ID: 1, Slug: "hello"}} }},
		{Name: "gorm model", Input: `Of(User{Model: Model{ID: 42}, Name: "ann"})`, args: func() []any { return []any{User{Model: Model{ID: 42}, Name: "ann"}} }},
		{Name: "composite pk", Input: `Of(Membership{UserID: 3, GroupID: "g:7"})`, args: func() []any { return []any{Membership{UserID: 3, GroupID: "g:7"}} }},
		{Name: "Id field", Input: `Of(Legacy{Id: "*"})`, args: func() []any { return []any{Legacy{Id: "*"}} }},
		{Name: "identity hashed", Input: `Of(RawKeyer("i:1"))`, args: func() []any { return []any{RawKeyer("i:1")} }},
		{Name: "struct", Input: `Of(Pair{A: "a", B: "b"})`, args: func() []any { return []any{Pair{A: "a", B: "b"}} }},
		{Name: "map", Input: `Of(map[string]int{"a": 1, "b": 2, "c": 3})`, args: func() []any { return []any{map[string]int{"a": 1, "b": 2, "c": 3}} }},
		{Name: "nested", Input: `Of(Filter{Owner: User{Model: Model{ID: 1}}, Status: "open", Tags: []string{"x", "y"}, Limit: ptr(10)})`, args: func() []any {
			return []any{Filter{Owner: User{Model: Model{ID: 1}}, Status: "open", Tags: []string{"x", "y"}, Limit: ptr(10)}}
		}},
		{Name: "slice of any", Input: `Of([]any{1, "1", nil, 1.5, []byte{1}, map[int]bool{1: true}})`, args: func() []any {
			return []any{[]any{1, "1", nil, 1.5, []byte{1}, map[int]bool{1: true}}}
		}},
		{Name: "time in struct", Input: `Of(struct{ At time.Time }{At: time.Date(2024, 5, 1, 12, 30, 0, 123456789, CEST)})`, args: func() []any {
			return []any{struct{ At time.Time }{At: at}}
		}},
		{Name: "format value", Input: `FormatKey(3, "a:b", "*", time.Date(2024, 5, 1, 12, 30, 0, 123456789, CEST))`, args: nil},
	}
}

func (v vector) key() string {
	if v.args == nil { // the FormatKey vector
		at := time.Date(2024, 5, 1, 12, 30, 0, 123456789, time.FixedZone("CEST", 2*3600))
		return keys.FormatKey(3, "a:b", "*", at)
	}
	return keys.Of(v.args()...)
}

func TestVectors(t *testing.T) {
	cases := vectorCases()
	for i := range cases {
		cases[i].Key = cases[i].key()
	}
	if *update {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		if err := enc.Encode(cases); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(vectorsFile, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	data, err := os.ReadFile(vectorsFile)
	if err != nil {
		t.Fatalf("%v (run go test ./keys -run TestVectors -update)", err)
	}
	var golden []vector
	if err := json.Unmarshal(data, &golden); err != nil {
		t.Fatal(err)
	}
	want := map[string]vector{}
	for _, g := range golden {
		want[g.Name] = g
	}
	for _, c := range cases {
		g, ok := want[c.Name]
		switch {
		case !ok:
			t.Errorf("%s: not in %s (run with -update)", c.Name, vectorsFile)
		case g.Input != c.Input:
			t.Errorf("%s: input %q in the file, %q in the test", c.Name, g.Input, c.Input)
		case g.Key != c.Key:
			t.Errorf("%s: key %q, golden %q (a layout change must bump keys.Version)", c.Name, c.Key, g.Key)
		}
		delete(want, c.Name)
	}
	for name := range want {
		t.Errorf("%s: in %s but not in the test", name, vectorsFile)
	}
	for _, c := range cases {
		if c.args != nil && !strings.HasPrefix(c.Key, keys.Version) {
			t.Errorf("%s: key %q does not start with the version", c.Name, c.Key)
		}
	}
}
