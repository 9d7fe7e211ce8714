package keys_test

import (
	"database/sql"
	"errors"
	"fmt"
	"math"
	"math/big"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/depcache/go-depcache/keys"
)

func TestArgRules(t *testing.T) {
	tests := []struct {
		name string
		arg  any
		want string
	}{
		{"rule1 value receiver", ValKeyer{3}, "ValKeyer::3"},
		{"rule1 value receiver via pointer", &ValKeyer{3}, "ValKeyer::3"},
		{"rule1 pointer receiver", &PtrKeyer{4}, "PtrKeyer::4"},
		{"rule1 pointer receiver on value", PtrKeyer{4}, "PtrKeyer::4"},
		{"rule1 pointer to pointer", func() any { p := &PtrKeyer{5}; return &p }(), "PtrKeyer::5"},
		{"rule1 nil pointer receiver", (*PtrKeyer)(nil), "nil"},
		{"rule1 nil pointer, value receiver", (*ValKeyer)(nil), "nil"},
		{"rule1 beats ID", KeyerWithID{ID: 1}, "custom"},
		{"rule2 beats ID", Article{ID: 1, Slug: "hello"}, "Article::hello"},
		{"rule3 primaryKey beats ID", Account{ID: 1, Code: "abc"}, "Account::abc"},
		{"rule3 PRIMARY_KEY", LegacyAccount{ID: 1, Code: "x"}, "LegacyAccount::x"},
		{"rule3 primaryKey:false", NotPK{ID: 1, Code: "x"}, "NotPK::1"},
		{"rule3 composite", Membership{UserID: 3, GroupID: "g:7", Role: "admin"}, `Membership::3:g\:7`},
		{"rule3 embedded model", User{Model: Model{ID: 42}, Name: "ann"}, "User::42"},
		{"rule3 embedded model via pointer", &User{Model: Model{ID: 42}}, "User::42"},
		{"rule3 embedded pointer model", PtrModelUser{Model: &Model{ID: 9}}, "PtrModelUser::9"},
		{"rule3 ID zero", User{}, "User::0"},
		{"rule4 Id", Legacy{Id: "a:b", Note: "x"}, `Legacy::a\:b`},
		{"unexported type name", thing{ID: 2}, "thing::2"},
		{"generic type name", Page[User]{ID: 1}, "Page[User]::1"},
		{"identity unfit: empty", RawKeyer(""), "k#"},
		{"identity unfit: reserved prefix", RawKeyer("i:1"), "k#"},
		{"identity unfit: nil", RawKeyer("nil"), "k#"},
		{"identity unfit: separator", RawKeyer("a|b"), "k#"},
		{"identity unfit: newline", RawKeyer("a\nb"), "k#"},
		{"identity unfit: long", RawKeyer(strings.Repeat("x", 200)), "k#"},
		{"identity fit", RawKeyer("Thing::i:1"), "Thing::i:1"},

		{"nil", nil, "nil"},
		{"nil pointer", (*int)(nil), "nil"},
		{"nil slice", []int(nil), "nil"},
		{"nil map", map[string]int(nil), "nil"},
		{"nil func", (func())(nil), "nil"},
		{"nil bytes", []byte(nil), "nil"},
		{"bool", true, "true"},
		{"int", 42, "i:42"},
		{"int8", int8(-8), "i:-8"},
		{"named int", time.Second, "i:1000000000"},
		{"uint", uint16(7), "u:7"},
		{"float", 1.5, "f:1.5"},
		{"float32 widened", float32(0.1), "f:0.10000000149011612"},
		{"nan", math.NaN(), "f:NaN"},
		{"complex", complex(1, 2), "c:(1+2i)"},
		{"string", "bob", `s:"bob"`},
		{"string quoted", "a\"b\n|", `s:"a\"b\n|"`},
		{"long string", strings.Repeat("a", 65), "s#"},
		{"bytes", []byte("bob"), "b:626f62"},
		{"long bytes", make([]byte, 33), "b#"},
		{"pointer to int", ptr(5), "i:5"},
		{"time", time.Date(2024, 5, 1, 12, 0, 0, 500, time.FixedZone("X", 2*3600)), "t:2024-05-01T10:00:00.0000005Z"},
		{"struct", Pair{"a", "b"}, "h:"},
		{"map", map[string]int{"a": 1}, "h:"},
		{"empty slice", []int{}, "h:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := keys.ArgErr(tt.arg)
			if err != nil {
				t.Fatalf("ArgErr: %v", err)
			}
			if strings.HasSuffix(tt.want, "#") || strings.HasSuffix(tt.want, "h:") {
				if !strings.HasPrefix(got, tt.want) || len(got) != len(tt.want)+32 {
					t.Fatalf("Arg = %q, want %q and a 32-digit hash", got, tt.want)
				}
				return
			}
			if got != tt.want {
				t.Fatalf("Arg = %q, want %q", got, tt.want)
			}
			if k := keys.Of(tt.arg); k != keys.Version+"|"+got {
				t.Fatalf("Of = %q, want Version|%q", k, got)
			}
		})
	}
}

func TestPtrModelNilFallsThrough(t *testing.T) {
	// The promoted ID is behind a nil pointer: no identity, a hash of the fields.
	a := keys.Arg(PtrModelUser{Name: "a"})
	b := keys.Arg(PtrModelUser{Name: "b"})
	if !strings.HasPrefix(a, "h:") || a == b {
		t.Fatalf("got %q and %q, want two different hashes", a, b)
	}
}

func TestNestedIdentity(t *testing.T) {
	// Owner is keyed by its identity alone: its other fields do not matter.
	a := Filter{Owner: User{Model: Model{ID: 1}, Name: "ann"}, Status: "open"}
	b := Filter{Owner: User{Name: "bob", Model: Model{ID: 1, CreatedAt: time.Now()}}, Status: "open"}
	if keys.Of(a) != keys.Of(b) {
		t.Fatalf("nested identity ignored: %q != %q", keys.Of(a), keys.Of(b))
	}
	c := a
	c.Owner.ID = 2
	if keys.Of(a) == keys.Of(c) {
		t.Fatal("different owners share a key")
	}
	// Skipped field.
	d := a
	d.Skip = func() {}
	if k, err := keys.OfErr(d); err != nil || k != keys.Of(a) {
		t.Fatalf("depcache:\"-\" field not skipped: %q %v", k, err)
	}
	// Same fields, other type name.
	if keys.Of(a) == keys.Of(Filter2{Owner: a.Owner, Status: "open"}) {
		t.Fatal("struct type name not part of the key")
	}
	// Identity inside maps and slices.
	m1 := map[string]any{"u": &User{Model: Model{ID: 1}, Name: "x"}}
	m2 := map[string]any{"u": User{Model: Model{ID: 1}, Name: "y"}}
	if keys.Of(m1) != keys.Of(m2) {
		t.Fatal("identity in map value ignored")
	}
	s1 := []PtrKeyer{{1}, {2}}
	s2 := []*PtrKeyer{{1}, {2}}
	if keys.Of(s1) != keys.Of(s2) {
		t.Fatal("pointer-receiver identity in slice elements ignored")
	}
}

func TestMapOrder(t *testing.T) {
	const n = 200
	for range 20 {
		a := map[string]int{}
		b := map[string]int{}
		for i := range n {
			a[fmt.Sprint(i)] = i
			b[fmt.Sprint(n-1-i)] = n - 1 - i
		}
		if keys.Of(a) != keys.Of(b) {
			t.Fatal("map insertion order changes the key")
		}
	}
	// Mixed key types in map[any]any, and nested maps.
	build := func(rev bool) map[any]any {
		m := map[any]any{}
		items := []any{1, "1", uint(1), 1.0, true, nil, Pair{"a", "b"}, [2]int{1, 2}}
		for i := range items {
			j := i
			if rev {
				j = len(items) - 1 - i
			}
			m[items[j]] = map[int]string{j: "x", j + 1: "y", j + 2: "z"}
		}
		return m
	}
	if keys.Of(build(false)) != keys.Of(build(true)) {
		t.Fatal("map[any]any insertion order changes the key")
	}
	// Pointer keys with equal pointees: deterministic however they iterate.
	p := map[*int]string{ptr(1): "a", ptr(1): "b", ptr(1): "c"}
	want := keys.Of(p)
	for range 50 {
		if keys.Of(p) != want {
			t.Fatal("map with equal-looking keys is not deterministic")
		}
	}
}

func TestPointersAndNil(t *testing.T) {
	x := 7
	px := &x
	equal(t, keys.Of(x), keys.Of(&x), keys.Of(&px))
	equal(t, keys.Of(Pair{"a", "b"}), keys.Of(&Pair{"a", "b"}))
	equal(t, keys.Of(nil), keys.Of((*int)(nil)), keys.Of((*Pair)(nil)), keys.Of([]int(nil)), "v1|nil")
	type P struct{ N *int }
	distinct(t, []any{P{}, P{N: ptr(0)}, P{N: ptr(1)}})
	equal(t, keys.Of(P{N: ptr(3)}), keys.Of(P{N: ptr(3)})) // addresses do not leak
	type S struct {
		L []int
		M map[string]int
		A any
	}
	distinct(t, []any{S{}, S{L: []int{}}, S{M: map[string]int{}}, S{A: 0}, S{A: ""}})
	// A typed nil in an interface is nil.
	equal(t, keys.Of(S{}), keys.Of(S{A: (*int)(nil)}), keys.Of(S{A: []int(nil)}))
}

func TestTimeZones(t *testing.T) {
	base := time.Date(2024, 1, 2, 3, 4, 5, 600, time.UTC)
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		ny = time.FixedZone("EST", -5*3600)
	}
	equal(t,
		keys.Of(base),
		keys.Of(base.In(ny)),
		keys.Of(base.In(time.FixedZone("Z+9", 9*3600))),
		keys.Of(base.Local()),
		`v1|t:2024-01-02T03:04:05.0000006Z`,
	)
	now := time.Now() // has a monotonic reading
	equal(t, keys.Of(now), keys.Of(now.Round(0)), keys.Of(now.UTC()))
	type Q struct{ At time.Time }
	equal(t, keys.Of(Q{base}), keys.Of(Q{base.In(ny)}))
	equal(t, keys.FormatValue(base.In(ny)), "2024-01-02T03:04:05.0000006Z")
	distinct(t, []any{base, base.Add(1), Q{base}, Q{base.Add(time.Nanosecond)}})
}

func TestCycles(t *testing.T) {
	ring := func(n int) *Node {
		first := &Node{Name: "0"}
		cur := first
		for i := 1; i < n; i++ {
			cur.Next = &Node{Name: fmt.Sprint(i)}
			cur = cur.Next
		}
		cur.Next = first
		return first
	}
	k1, err := keys.OfErr(ring(3))
	if err != nil {
		t.Fatal(err)
	}
	equal(t, k1, keys.Of(ring(3)))
	distinct(t, []any{ring(1), ring(2), ring(3), &Node{Name: "0"}})

	m := map[string]any{"a": 1}
	m["self"] = m
	m2 := map[string]any{"a": 1}
	m2["self"] = m2
	equal(t, keys.Of(m), keys.Of(m2))

	s := make([]any, 2)
	s[0] = "x"
	s[1] = s
	if k := keys.Of(s); !strings.HasPrefix(k, "v1|h:") {
		t.Fatalf("self-containing slice: %q", k)
	}

	// Shared, acyclic: not a cycle.
	shared := &Node{Name: "s"}
	type Two struct{ A, B *Node }
	equal(t, keys.Of(Two{shared, shared}), keys.Of(Two{&Node{Name: "s"}, &Node{Name: "s"}}))

	// A long chain is fine; a chain deeper than the limit is reported.
	chain := func(n int) *Node {
		var head *Node
		for i := range n {
			head = &Node{Name: fmt.Sprint(i), Next: head}
		}
		return head
	}
	if _, err := keys.OfErr(chain(500)); err != nil {
		t.Fatalf("chain of 500: %v", err)
	}
	k, err := keys.OfErr(chain(5000))
	if !errors.Is(err, keys.ErrUnsupported) {
		t.Fatalf("chain of 5000: err = %v", err)
	}
	equal(t, k, keys.Of(chain(5000)))
}

func TestUnsupported(t *testing.T) {
	ch := make(chan int)
	x := 1
	tests := []struct {
		name string
		arg  any
	}{
		{"func", func() {}},
		{"chan", ch},
		{"unsafe pointer", unsafe.Pointer(&x)},
		{"func in struct", WithFunc{Name: "a", Fn: func() {}}},
		{"func in map", map[string]any{"f": func() {}}},
		{"opaque struct", Opaque{secret: 1}},
		{"opaque in slice", []any{Opaque{}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := keys.OfErr(tt.arg)
			if !errors.Is(err, keys.ErrUnsupported) {
				t.Fatalf("err = %v, want ErrUnsupported", err)
			}
			if k != keys.Of(tt.arg) || k != keys.Of(tt.arg) {
				t.Fatal("key not deterministic")
			}
			if !strings.HasPrefix(k, "v1|h:") {
				t.Fatalf("key = %q", k)
			}
		})
	}
	// Documented collision: two different funcs share the placeholder.
	equal(t, keys.Of(func() {}), keys.Of(func() {}))
	if keys.Of(func() {}) == keys.Of(func(int) {}) {
		t.Fatal("placeholder does not name the type")
	}

	// Supported: nil func, complex, TextMarshaler structs.
	for _, v := range []any{
		WithFunc{Name: "a"}, complex64(1i),
		netip.MustParseAddr("10.0.0.1"), big.NewInt(12345), []any{netip.MustParseAddr("::1")},
		struct{}{},
	} {
		if _, err := keys.OfErr(v); err != nil {
			t.Errorf("OfErr(%#v): %v", v, err)
		}
	}
	distinct(t, []any{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), big.NewInt(1), big.NewInt(2)})
}

func TestFormatValue(t *testing.T) {
	type ID int64
	type Code string
	zone := time.FixedZone("X", -3*3600)
	tests := []struct {
		in   any
		want string
	}{
		{42, "42"},
		{int8(-3), "-3"},
		{ID(7), "7"},
		{uint64(math.MaxUint64), "18446744073709551615"},
		{"plain", "plain"},
		{"a:b", `a\:b`},
		{`a\b`, `a\\b`},
		{`\:`, `\\\:`},
		{"*", `\*`},
		{"a*", "a*"},
		{"**", "**"},
		{"", ""},
		{Code("x:y"), `x\:y`},
		{[]byte("k:1"), `k\:1`},
		{true, "true"},
		{1.25, "1.25"},
		{float32(0.1), "0.1"},
		{time.Date(2024, 1, 1, 21, 0, 0, 1, zone), "2024-01-02T00:00:00.000000001Z"},
		{ptr(9), "9"},
		{(*int)(nil), `\N`},
		{nil, `\N`},
		{sql.NullInt64{Int64: 5, Valid: true}, "5"},
		{sql.NullInt64{}, `\N`},
		{sql.NullString{String: "a:b", Valid: true}, `a\:b`},
		{&sql.NullString{String: "*", Valid: true}, `\*`},
		{(*sql.NullString)(nil), `\N`},
		{sql.NullTime{Time: time.Date(2024, 1, 1, 0, 0, 0, 0, zone), Valid: true}, "2024-01-01T03:00:00Z"},
		{netip.MustParseAddr("::1"), `\:\:1`},
	}
	for _, tt := range tests {
		if got := keys.FormatValue(tt.in); got != tt.want {
			t.Errorf("FormatValue(%#v) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if got := keys.FormatValue(Pair{"a", "b"}); !strings.HasPrefix(got, "#") || len(got) != 33 {
		t.Errorf("FormatValue(struct) = %q", got)
	}
	for _, tc := range []struct {
		in   []any
		want string
	}{
		{[]any{3, 7}, "3:7"},
		{[]any{3}, "3"},
		{[]any{"a:b", "c"}, `a\:b:c`},
		{[]any{"a", "b:c"}, `a:b\:c`},
		{[]any{"*", 1}, `\*:1`},
		{[]any{}, ""},
	} {
		if got := keys.FormatKey(tc.in...); got != tc.want {
			t.Errorf("FormatKey(%#v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestDistinct(t *testing.T) {
	long := strings.Repeat("a", 100)
	args := [][]any{
		{}, {nil}, {nil, nil}, {""}, {"", ""}, {"nil"}, {"true"}, {true}, {false},
		{0}, {1}, {uint(1)}, {1.0}, {"1"}, {complex(1, 0)}, {[]byte("1")}, {[]byte{}}, {[]int{}}, {[]int{1}},
		{-1}, {math.Copysign(0, -1)}, {0.0},
		{"a", "b"}, {"a|b"}, {"a", "|b"}, {`a"`, "b"}, {"ab"}, {"a b"},
		{[]string{"a", "b"}}, {[]string{"ab"}}, {[]string{"a|b"}}, {[]any{"a", []string{"b"}}},
		{[]int{1, 2}}, {[]int{12}}, {[]int{2, 1}},
		{map[string]int{"a": 1}}, {map[string]int{"a": 2}}, {map[string]string{"a": "1"}}, {map[string]int{"b": 1}},
		{map[string]int{}}, {map[string]int{"a": 1, "b": 2}},
		{Pair{"a", "b"}}, {Pair{"b", "a"}}, {Pair{"a:b", ""}}, {Pair{"a", ":b"}}, {Pair{"ab", ""}},
		{User{Model: Model{ID: 1}}}, {User{Model: Model{ID: 2}}}, {Legacy{Id: "1"}},
		{Membership{UserID: 1, GroupID: "23"}}, {Membership{UserID: 12, GroupID: "3"}},
		{Membership{UserID: 1, GroupID: "2:3"}},
		{ValKeyer{1}}, {PtrKeyer{1}}, {RawKeyer("i:1")}, {RawKeyer("nil")}, {RawKeyer("")},
		{time.Unix(0, 0)}, {time.Unix(0, 1)}, {"1970-01-01T00:00:00Z"},
		{long}, {long + "b"}, {[]byte(long)}, {RawKeyer(long)}, {RawKeyer(long + "b")},
		{1, 2}, {12}, {"1", "2"}, {[]any{1, "2"}},
	}
	seen := map[string]int{}
	for i, a := range args {
		k := keys.Of(a...)
		if j, ok := seen[k]; ok {
			t.Errorf("Of(%#v) == Of(%#v) == %q", args[j], a, k)
		}
		seen[k] = i
	}
}

func TestEqual(t *testing.T) {
	equal(t, keys.Of(int8(1)), keys.Of(int64(1)), keys.Of(1))
	equal(t, keys.Of(uint8(1)), keys.Of(uint64(1)))
	equal(t, keys.Of(User{Model: Model{ID: 7}}), keys.Of(RawKeyer("User::7")))
	equal(t, keys.Of([2]int{1, 2}), keys.Of([]int{1, 2}), keys.Of([]any{1, 2}))
	type Named []string
	equal(t, keys.Of(Named{"a"}), keys.Of([]string{"a"}))
}

func TestKeyShape(t *testing.T) {
	many := make([]any, 50)
	for i := range many {
		many[i] = fmt.Sprint("argument-", i)
	}
	k := keys.Of(many...)
	if !strings.HasPrefix(k, keys.Version+"#") || len(k) != len(keys.Version)+1+32 {
		t.Fatalf("long key not hashed: %q", k)
	}
	many[49] = "changed"
	if keys.Of(many...) == k {
		t.Fatal("hashed long keys collide")
	}
	for _, a := range []any{"a\nb", "\r\x00\u2028", RawKeyer("x\ny"), []byte("\n"), map[string]string{"\n": "\n"}} {
		if k := keys.Of(a); strings.ContainsAny(k, "\n\r\x00\u2028") || len(k) > keys.MaxLen {
			t.Errorf("Of(%q) = %q", a, k)
		}
	}
	if keys.Of() != keys.Version {
		t.Fatalf("Of() = %q", keys.Of())
	}
}

func TestConcurrent(t *testing.T) {
	type fresh struct {
		ID int
		M  map[string][]int
	}
	var wg sync.WaitGroup
	res := make([]string, 16)
	for i := range res {
		wg.Go(func() {
			res[i] = keys.Of(fresh{ID: 1}, map[string]fresh{"a": {ID: 2}}, &PtrKeyer{1})
		})
	}
	wg.Wait()
	equal(t, res...)
}

func ptr[T any](v T) *T { return &v }

func equal(t *testing.T, ks ...string) {
	t.Helper()
	for _, k := range ks[1:] {
		if k != ks[0] {
			t.Fatalf("keys differ: %q", ks)
		}
	}
}

func distinct(t *testing.T, args []any) {
	t.Helper()
	seen := map[string]int{}
	for i, a := range args {
		k := keys.Of(a)
		if j, ok := seen[k]; ok {
			t.Fatalf("Of(%#v) == Of(%#v) == %q", args[j], a, k)
		}
		seen[k] = i
	}
}

// AppendOf appends exactly the key OfErr returns, also when the key is
// hashed for its length, and reports the same error.
func TestAppendOfIsOfAfterAPrefix(t *testing.T) {
	long, s60 := strings.Repeat("x", 300), strings.Repeat("y", 60)
	for _, args := range [][]any{nil, {42}, {"a", 1.5, true}, {long}, {s60, s60, s60, s60, s60, s60}, {make(chan int)}} {
		want, wantErr := keys.OfErr(args...)
		got, err := keys.AppendOf([]byte("fn:"), args...)
		if len(args) == 6 && !strings.Contains(want, "#") {
			t.Fatalf("key of 6 long strings %q is not hashed; the case tests nothing", want)
		}
		if string(got) != "fn:"+want || (err == nil) != (wantErr == nil) {
			t.Errorf("AppendOf(%v) = %q, %v; want %q, %v", args, got, err, "fn:"+want, wantErr)
		}
	}
}
