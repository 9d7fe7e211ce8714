package keys_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/depcache/go-depcache/keys"
)

// captureLog sends slog's default logger to a buffer for the test.
func captureLog(t *testing.T) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&buf, nil)))
	t.Cleanup(func() { slog.SetDefault(old) })
	return &buf
}

type queryWithID struct {
	ID   int
	Page int
}

type queryWithTaggedKey struct {
	ID   int `depcache:"key"`
	Page int
}

type onlyID struct{ ID int }

type idAndSkipped struct {
	ID   int
	Note string `depcache:"-"`
}

type queryWithKeyer struct {
	ID   int
	Page int
}

func (q queryWithKeyer) CacheKey() string { return "q" }

// A struct keyed by its ID field alone while it has other exported fields
// gets a warning, once per type; the key stays the ID's.
func TestIDKeyedStructWithOtherFieldsWarnsOnce(t *testing.T) {
	buf := captureLog(t)
	a, b := keys.Of(queryWithID{ID: 1, Page: 1}), keys.Of(queryWithID{ID: 1, Page: 2})
	keys.Of(queryWithID{ID: 2, Page: 3})
	if a != b {
		t.Fatalf("keys %q and %q differ: the ID rule changed", a, b)
	}
	if n := strings.Count(buf.String(), "queryWithID is keyed by its ID field alone"); n != 1 {
		t.Fatalf("warned %d times; want once:\n%s", n, buf)
	}
	if !strings.Contains(buf.String(), "ignored_fields=Page") {
		t.Fatalf("the warning does not name the field left out:\n%s", buf)
	}
}

// Explicit choices, and structs whose only field is the ID, never warn.
func TestIDKeyWithoutOtherFieldsOrExplicitDoesNotWarn(t *testing.T) {
	buf := captureLog(t)
	keys.Of(queryWithTaggedKey{ID: 1, Page: 2})
	keys.Of(onlyID{ID: 1})
	keys.Of(idAndSkipped{ID: 1, Note: "x"})
	keys.Of(queryWithKeyer{ID: 1, Page: 2})
	if buf.Len() > 0 {
		t.Fatalf("unexpected warning:\n%s", buf)
	}
}
