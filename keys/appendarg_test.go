package keys

import (
	"math"
	"strings"
	"testing"
)

// appendArg writes exactly the atom ArgErr returns, for the kinds it
// writes in place and for those it hands to ArgErr.
func TestAppendArgIsArgErr(t *testing.T) {
	type named string
	long := strings.Repeat("x", maxStringAtom+1)
	quoted := strings.Repeat("\x00", maxStringAtom) // fits as a string, not once quoted
	for _, v := range []any{
		0, 42, -7, math.MaxInt, math.MinInt, int64(math.MinInt64), int32(-3), uint(9), uint64(math.MaxUint64), uint32(5),
		true, false, "", "a", "a|b\nc", "é", long, quoted, strings.Repeat("y", maxStringAtom),
		named("n"), 1.5, []byte("b"), nil, int8(3), struct{ A int }{1},
	} {
		want, wantErr := ArgErr(v)
		got, err := appendArg([]byte("pre"), v)
		if string(got) != "pre"+want || (err == nil) != (wantErr == nil) {
			t.Errorf("%T %v: appendArg %q, %v; ArgErr %q, %v", v, v, got, err, want, wantErr)
		}
	}
}

func FuzzAppendArg(f *testing.F) {
	f.Add("s", int64(1), uint64(2), true)
	f.Fuzz(func(t *testing.T, s string, i int64, u uint64, b bool) {
		for _, v := range []any{s, i, int(i), int32(i), u, uint(u), uint32(u), b} {
			want, _ := ArgErr(v)
			if got, _ := appendArg(nil, v); string(got) != want {
				t.Fatalf("%T %v: appendArg %q, ArgErr %q", v, v, got, want)
			}
		}
	})
}

// A memoized call's key for an integer or a short string allocates nothing
// but the buffer it is given.
func TestAppendOfCommonArgumentsAllocateNothing(t *testing.T) {
	buf := make([]byte, 0, 128)
	for _, args := range [][]any{{12345}, {"user-42"}, {int64(7), true, uint(3)}} {
		if allocs := testing.AllocsPerRun(100, func() { AppendOf(buf[:0], args...) }); allocs != 0 {
			t.Errorf("AppendOf(%v) allocates %v times, want 0", args, allocs)
		}
	}
}
