package gormplugin

import (
	"math/rand/v2"
	"testing"
)

func TestZZStats(t *testing.T) {
	db := fuzzKeyDB(t)
	rng := rand.New(rand.NewPCG(1, 2))
	ok, total := 0, 0
	keys := map[string]keyedQuery{}
	sqls := map[string]bool{}
	dup := 0
	for i := 0; i < 30000; i++ {
		b := make([]byte, rng.IntN(40))
		for j := range b {
			b[j] = byte(rng.IntN(256))
		}
		r := fuzzStatement(t, db, b)
		total++
		if !r.ok {
			continue
		}
		ok++
		sqls[r.sqlKey] = true
		if p, seen := keys[r.key]; seen {
			dup++
			compareKeyed(t, p, r)
		} else {
			keys[r.key] = r
		}
	}
	t.Logf("total %d keyed %d distinct keys %d distinct sql keys %d same-key pairs compared %d", total, ok, len(keys), len(sqls), dup)
}
