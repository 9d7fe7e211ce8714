package keys_test

import (
	"math"
	"strings"
	"testing"

	"github.com/depcache/go-depcache/keys"
)

func FuzzOf(f *testing.F) {
	f.Add("a", "b", int64(1), 1.5, []byte("x"), true)
	f.Add("", "|", int64(-1), math.NaN(), []byte(nil), false)
	f.Add("s:\"x\"", "a\nb", int64(0), math.Inf(1), []byte{0, 0xff}, true)
	f.Add("User::1", "\\:*", int64(math.MinInt64), -0.0, []byte(strings.Repeat("z", 40)), false)
	f.Fuzz(func(t *testing.T, s1, s2 string, i int64, fl float64, b []byte, flag bool) {
		build := func(rev bool) []any {
			m := map[string]any{}
			entries := []struct {
				k string
				v any
			}{{"1:" + s1, i}, {"2:" + s2, fl}, {"b", b}, {"flag", flag}}
			if rev {
				for j := len(entries) - 1; j >= 0; j-- {
					m[entries[j].k] = entries[j].v
				}
			} else {
				for _, e := range entries {
					m[e.k] = e.v
				}
			}
			return []any{
				s1, s2, i, fl, b, flag, m,
				Pair{s1, s2}, RawKeyer(s1), Legacy{Id: s1}, Membership{UserID: int(i), GroupID: s2},
				[]any{s1, i, []string{s2}}, &fl, map[float64]string{fl: s1, -fl: s2},
			}
		}
		k1, err1 := keys.OfErr(build(false)...)
		k2, err2 := keys.OfErr(build(true)...)
		if k1 != k2 || (err1 == nil) != (err2 == nil) {
			t.Fatalf("not deterministic: %q vs %q", k1, k2)
		}
		if err1 != nil {
			t.Fatalf("unexpected error: %v", err1)
		}
		if strings.ContainsAny(k1, "\n\r") || len(k1) > keys.MaxLen {
			t.Fatalf("bad key shape %q", k1)
		}
		for _, a := range build(false) {
			k := keys.Of(a)
			if strings.ContainsAny(k, "\n\r") || len(k) > keys.MaxLen {
				t.Fatalf("bad key shape %q", k)
			}
		}
		// Strings are keyed injectively, alone and in pairs.
		if (keys.Of(s1) == keys.Of(s2)) != (s1 == s2) {
			t.Fatalf("Of(%q) vs Of(%q)", s1, s2)
		}
		if s1 != s2 && keys.Of(s1, s2) == keys.Of(s2, s1) {
			t.Fatalf("argument order lost for %q, %q", s1, s2)
		}
		if keys.Of(s1, s2) == keys.Of(s1+s2) {
			t.Fatalf("Of(%q, %q) == Of(%q)", s1, s2, s1+s2)
		}
		if (keys.FormatKey(s1, s2) == keys.FormatKey(s2, s1)) != (s1 == s2) {
			t.Fatalf("FormatKey not injective for %q, %q", s1, s2)
		}
		if keys.Of(i) == keys.Of(s1) || keys.Of(fl) == keys.Of(i) {
			t.Fatal("kinds not distinguished")
		}
	})
}
