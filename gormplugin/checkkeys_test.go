package gormplugin

import (
	"os"
	"strings"
)

// Every test of the package checks each clause key against the SQL key
// (clausekey.go): a clause key that stood for two queries panics. Not
// when benchmarks run: they measure what users run.
func init() {
	checkClauseKeys = true
	for _, a := range os.Args[1:] {
		if v, ok := strings.CutPrefix(a, "-test.bench="); ok && v != "" {
			checkClauseKeys = false
		}
	}
}
