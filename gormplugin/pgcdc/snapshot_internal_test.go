package pgcdc

import "testing"

// The newest transaction, committed in WAL but not yet ended, is at the
// snapshot's xmax and not in its xip list: it must count as running. The
// stale-read test met it about once in ten CI runs.
func TestSnapshotRunning(t *testing.T) {
	cases := []struct {
		snap    string
		xid     uint32
		running bool
	}{
		{"100:105:", 99, false},
		{"100:105:", 104, false},
		{"100:105:", 105, true},
		{"100:105:", 106, true},
		{"100:105:101,103", 101, true},
		{"100:105:101,103", 102, false},
		{"100:105:101,103", 103, true},
		// 64-bit xids past the first wraparound: the stream's 32-bit xid
		// compares modulo 2³².
		{"4294967290:4294967301:4294967295", 4, false},
		{"4294967290:4294967301:4294967295", 5, true},
		{"4294967290:4294967301:4294967295", 4294967295 & 0xffffffff, true},
		{"4294967290:4294967301:4294967295", 4294967294, false},
	}
	for _, c := range cases {
		s, err := parseSnapshot(c.snap)
		if err != nil {
			t.Fatalf("%s: %v", c.snap, err)
		}
		if got := s.running(c.xid); got != c.running {
			t.Errorf("snapshot %s, xid %d: running %v, want %v", c.snap, c.xid, got, c.running)
		}
	}
	for _, bad := range []string{"", "1:2", "1:x:", "1:2:3,y"} {
		if _, err := parseSnapshot(bad); err == nil {
			t.Errorf("parseSnapshot(%q) accepted", bad)
		}
	}
}
