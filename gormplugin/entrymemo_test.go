package gormplugin

import (
	"bytes"
	"database/sql/driver"
	"reflect"
	"testing"
)

// The memo returns what decodeEntry returns; it keeps a decoding only for
// the same bytes seen twice, and never serves it for other bytes, even
// equal ones at another address.
func TestEntryMemo(t *testing.T) {
	entry := func(title string) []byte {
		rs := &resultSet{
			columns:   []string{"id", "title"},
			scanTypes: []reflect.Type{nil, nil},
			rows:      [][]driver.Value{{int64(7), title}},
		}
		b, err := encodeEntry([]recordedQuery{{fingerprint: "q", rs: rs}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	title := func(qs []recordedQuery) any { return qs[0].rs.rows[0][1] }
	var m entryMemo
	a := entry("a")
	qs1, err := m.decode(a)
	if err != nil || title(qs1) != "a" {
		t.Fatalf("first decode: %v %v", qs1, err)
	}
	qs2, _ := m.decode(a) // second sighting: kept
	qs3, _ := m.decode(a)
	if title(qs2) != "a" || &qs3[0] != &qs2[0] {
		t.Fatalf("third decode of the same bytes did not come from the memo")
	}
	same := bytes.Clone(a) // equal bytes elsewhere: decoded on their own
	qs4, _ := m.decode(same)
	if &qs4[0] == &qs2[0] || title(qs4) != "a" {
		t.Fatalf("bytes at another address served from the memo")
	}
	b := entry("b")
	for range 3 {
		if qs, err := m.decode(b); err != nil || title(qs) != "b" {
			t.Fatalf("decode b: %v %v", qs, err)
		}
	}
	// Same address, other length (a shorter slice of the same bytes):
	// never the kept decoding.
	if _, err := m.decode(a[:len(a)-1]); err == nil {
		t.Fatalf("a truncated entry decoded")
	}
	if _, err := m.decode([]byte{0xff}); err == nil {
		t.Fatalf("a corrupt entry decoded")
	}
}
