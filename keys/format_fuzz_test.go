package keys_test

import (
	"strings"
	"testing"

	"github.com/depcache/go-depcache/keys"
)

// FuzzFormatKey: the canonical key formatter that row tags use is
// injective on string keys of one and two values: splitting its output at
// unescaped ':' and unescaping gives the values back, and no key formats as
// the list marker "*" or as NilValue.
func FuzzFormatKey(f *testing.F) {
	f.Add("42", "")
	f.Add("*", `\*`)
	f.Add(`\N`, `\`)
	f.Add("a:b", "a\\:b")
	f.Add("", ":")
	f.Add("x\x00y", "::")
	f.Fuzz(func(t *testing.T, a, b string) {
		one := keys.FormatKey(a)
		if one == "*" || one == keys.NilValue {
			t.Fatalf("FormatKey(%q) = %q", a, one)
		}
		if got, ok := splitKey(one); !ok || len(got) != 1 || got[0] != a {
			t.Fatalf("FormatKey(%q) = %q reads back as %q (ok=%v)", a, one, got, ok)
		}
		two := keys.FormatKey(a, b)
		if got, ok := splitKey(two); !ok || len(got) != 2 || got[0] != a || got[1] != b {
			t.Fatalf("FormatKey(%q, %q) = %q reads back as %q (ok=%v)", a, b, two, got, ok)
		}
	})
}

// splitKey undoes FormatKey for string values: parts split at unescaped
// ':', each unescaped. A lone `\*` is "*". ok is false for a dangling '\'.
func splitKey(s string) ([]string, bool) {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			if i+1 == len(s) {
				return nil, false
			}
			i++
			cur.WriteByte(s[i])
		case ':':
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	return append(parts, cur.String()), true
}
