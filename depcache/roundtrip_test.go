package depcache_test

import (
	"context"
	"encoding/gob"
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/depcache/go-depcache/depcache"
)

type rtUser struct {
	Name string
	Big  int64
}

type rtShape interface{ Area() int }

type rtSquare struct{ Side int }

func (s rtSquare) Area() int { return s.Side * s.Side }

type rtUnregistered struct{ N int }

type rtWithAny struct {
	Name  string
	Extra map[string]any
}

type rtHidden struct {
	Name    string
	Skipped any `json:"-" msgpack:"-"`
	private any
	rtShape // embedded but unexported: not encoded
}

// rtSelfDecoding holds an interface but decodes itself.
type rtSelfDecoding struct{ V any }

func (r *rtSelfDecoding) UnmarshalJSON(b []byte) error {
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		return err
	}
	r.V = n
	return nil
}

func (r rtSelfDecoding) MarshalJSON() ([]byte, error) { return json.Marshal(r.V) }

func init() { gob.Register(rtSquare{}) }

// memoTwice wraps fn on m, calls it twice with the same argument and
// returns both results and how often fn ran.
func memoTwice[R any](t *testing.T, m *depcache.Manager, name string, fn func() R) (first, second R, runs int) {
	t.Helper()
	ctx := context.Background()
	var calls counter
	f := depcache.Memoize(func(ctx context.Context, x int) (R, error) {
		calls.n.Add(1)
		depcache.AddDependency(ctx, "t")
		return fn(), nil
	}, depcache.Using(m), depcache.KeyName(name))
	a, err := f(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := f(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	return a, b, calls.calls()
}

// A hit returns exactly what the miss returned, or the function is never
// cached: a miss returning a User and a hit a map[string]any is a bug that
// shows only in production.
func TestResultTypesRoundTripOrAreRefused(t *testing.T) {
	const big = int64(1)<<60 + 1 // float64 would round it
	t.Run("json any is refused", func(t *testing.T) {
		var ev events
		m, _ := newManager(t, depcache.WithObserver(ev.observe))
		a, b, runs := memoTwice(t, m, "any", func() any { return rtUser{"ann", big} })
		if runs != 2 {
			t.Fatalf("cached an interface result: %d runs", runs)
		}
		if reflect.TypeOf(a) != reflect.TypeOf(b) || a != b {
			t.Fatalf("miss %#v, then %#v", a, b)
		}
		e, ok := ev.last(depcache.EventError)
		if !ok || !errors.Is(e.Err, depcache.ErrCodecType) {
			t.Fatalf("refusal not reported: %v", e.Err)
		}
		memoTwice(t, m, "any", func() any { return rtUser{"ann", big} })
		if n := ev.count(depcache.EventError); n != 1 {
			t.Fatalf("refusal reported %d times, want once", n)
		}
	})
	t.Run("json map of any inside a struct is refused", func(t *testing.T) {
		m, _ := newManager(t)
		_, b, runs := memoTwice(t, m, "withany", func() rtWithAny {
			return rtWithAny{"ann", map[string]any{"n": big}}
		})
		if runs != 2 || b.Extra["n"] != big {
			t.Fatalf("runs=%d, second %#v", runs, b.Extra["n"])
		}
	})
	t.Run("msgpack any is refused", func(t *testing.T) {
		m, _ := newManager(t, depcache.WithCodec(depcache.Msgpack))
		_, b, runs := memoTwice(t, m, "any", func() any { return rtUser{"ann", big} })
		if _, ok := b.(rtUser); runs != 2 || !ok {
			t.Fatalf("runs=%d, second %#v", runs, b)
		}
	})
	for _, c := range []depcache.Codec{depcache.JSON, depcache.Msgpack, depcache.Gob} {
		t.Run(c.Name()+" typed int64 is exact", func(t *testing.T) {
			m, _ := newManager(t, depcache.WithCodec(c))
			_, b, runs := memoTwice(t, m, "user", func() rtUser { return rtUser{"ann", big} })
			if runs != 1 || b.Big != big {
				t.Fatalf("runs=%d, second %d", runs, b.Big)
			}
		})
	}
	for _, c := range []depcache.Codec{depcache.JSON, depcache.Msgpack} {
		t.Run(c.Name()+" fields it does not encode are no obstacle", func(t *testing.T) {
			m, _ := newManager(t, depcache.WithCodec(c))
			_, b, runs := memoTwice(t, m, "hidden", func() rtHidden { return rtHidden{Name: "ann", Skipped: 1, private: 2} })
			if runs != 1 || b.Name != "ann" {
				t.Fatalf("runs=%d, second %#v", runs, b)
			}
		})
	}
	t.Run("json type that decodes itself is trusted", func(t *testing.T) {
		m, _ := newManager(t)
		_, b, runs := memoTwice(t, m, "self", func() rtSelfDecoding { return rtSelfDecoding{V: big} })
		if runs != 1 || b.V != big {
			t.Fatalf("runs=%d, second %#v", runs, b.V)
		}
	})
	t.Run("gob interface with a registered type round-trips", func(t *testing.T) {
		var ev events
		m, _ := newManager(t, depcache.WithCodec(depcache.Gob), depcache.WithObserver(ev.observe))
		_, b, runs := memoTwice(t, m, "shape", func() rtShape { return rtSquare{3} })
		if runs != 1 || b != (rtSquare{3}) {
			t.Fatalf("runs=%d, second %#v", runs, b)
		}
		if n := ev.count(depcache.EventError); n != 0 {
			t.Fatalf("%d errors", n)
		}
	})
	t.Run("gob interface with an unregistered type is not stored", func(t *testing.T) {
		var ev events
		m, _ := newManager(t, depcache.WithCodec(depcache.Gob), depcache.WithObserver(ev.observe))
		_, b, runs := memoTwice(t, m, "unregistered", func() any { return rtUnregistered{4} })
		if runs != 2 || b != (rtUnregistered{4}) {
			t.Fatalf("runs=%d, second %#v", runs, b)
		}
		if ev.count(depcache.EventSet) != 0 || ev.count(depcache.EventDelete) != 0 {
			t.Fatal("an unreadable value was stored")
		}
	})
}

// Fetch calls without options share their manager's spec whatever their
// result type: each type keeps its own verdict, in any order of calls.
func TestFetchResultTypesKeepTheirOwnVerdicts(t *testing.T) {
	ctx := context.Background()
	m, _ := newManager(t)
	const big = int64(1)<<60 + 1
	var refusedRuns, typedRuns counter
	refused := func(ctx context.Context) (any, error) {
		refusedRuns.n.Add(1)
		depcache.AddDependency(ctx, "t")
		return rtUser{"ann", big}, nil
	}
	typed := func(ctx context.Context) (rtUser, error) {
		typedRuns.n.Add(1)
		depcache.AddDependency(ctx, "t")
		return rtUser{"bob", big}, nil
	}
	for range 3 {
		if v, err := depcache.Fetch(ctx, m, "typed", typed); err != nil || v.Big != big {
			t.Fatalf("typed: %#v, %v", v, err)
		}
		if v, err := depcache.Fetch(ctx, m, "refused", refused); err != nil || v != (rtUser{"ann", big}) {
			t.Fatalf("refused: %#v, %v", v, err)
		}
	}
	if n := typedRuns.calls(); n != 1 {
		t.Errorf("the typed result ran %d times, want once (then hits)", n)
	}
	if n := refusedRuns.calls(); n != 3 {
		t.Errorf("the interface result ran %d times, want every time (never cached)", n)
	}
}

type rtNode struct {
	Name     string
	Children []*rtNode
}

type rtDeep struct {
	Pages []map[string][]*struct{ Meta error }
}

func TestBuiltinCodecsCheckTypes(t *testing.T) {
	cases := []struct {
		t         reflect.Type
		json, gob bool // accepted
		msgpack   bool
	}{
		{reflect.TypeFor[rtUser](), true, true, true},
		{reflect.TypeFor[*rtNode](), true, true, true}, // recursive
		{reflect.TypeFor[rtDeep](), false, true, false},
		{reflect.TypeFor[[]any](), false, true, false},
		{reflect.TypeFor[error](), false, true, false},
		{reflect.TypeFor[json.RawMessage](), true, true, true},
		{reflect.TypeFor[rtSelfDecoding](), true, true, false},
	}
	for _, c := range cases {
		for codec, want := range map[depcache.Codec]bool{depcache.JSON: c.json, depcache.Gob: c.gob, depcache.Msgpack: c.msgpack} {
			err := codec.(depcache.TypeChecker).CheckType(c.t)
			if (err == nil) != want {
				t.Errorf("%s.CheckType(%v) = %v, want accepted=%v", codec.Name(), c.t, err, want)
			}
			if err != nil && !errors.Is(err, depcache.ErrCodecType) {
				t.Errorf("%s.CheckType(%v) = %v, not ErrCodecType", codec.Name(), c.t, err)
			}
		}
	}
}
