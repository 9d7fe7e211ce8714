package gormplugin

import (
	"os"
	"strings"
)

// Every test of the package checks each clause key against the SQL key
// (clausekey.go): a clause key that stood for two queries panics. Not
// when benchmarks run: they measure what users run.
func init() {
	checkClauseKeys = !benchmarking(os.Args[1:])
}

// benchmarking reports whether args ask the test binary to run
// benchmarks (-test.bench=x or -test.bench x, as go test or a user
// passes them); flags are not parsed yet when init runs.
func benchmarking(args []string) bool {
	for i, a := range args {
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if name != "test.bench" {
			continue
		}
		if !hasValue && i+1 < len(args) {
			value = args[i+1]
		}
		if value != "" {
			return true
		}
	}
	return false
}
