package taglist

import (
	"fmt"
	"strings"
	"testing"
)

func TestQuote(t *testing.T) {
	few := []string{"a", `b"c`}
	if got, want := Quote(few), fmt.Sprintf("%q", few); got != want {
		t.Errorf("Quote(%v) = %s, want %s", few, got, want)
	}
	many := make([]string, 60000)
	for i := range many {
		many[i] = fmt.Sprint("users::", i)
	}
	got := Quote(many)
	if !strings.HasPrefix(got, `["users::0" "users::1"`) || !strings.HasSuffix(got, `"users::9" … and 59990 more]`) || len(got) > 200 {
		t.Errorf("Quote of 60,000 tags = %s", got)
	}
}
