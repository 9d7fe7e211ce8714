package main

import (
	"fmt"
	"io"
	"math"

	"github.com/depcache/go-depcache/bench"
)

// printLatency prints one workload's table: per contender the median ns/op
// with its p10–p90 spread, the ratio to the baseline (per round, then the
// median), allocations, bytes and round trips per op.
func printLatency(w io.Writer, title, baseline string, rows []*sample) {
	fmt.Fprintf(w, "\n### %s\n\n", title)
	fmt.Fprintf(w, "| contender | ns/op median (p10–p90) | × %s median (p10–p90) | allocs/op | B/op | round trips/op |\n", baseline)
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	for _, s := range rows {
		ns, r := bench.SpreadOf(s.nsPerOp), bench.SpreadOf(s.ratio)
		fmt.Fprintf(w, "| %s | %s (%s–%s) | %.2f (%.2f–%.2f) | %.0f | %.0f | %s |\n",
			s.name, num(ns.Median), num(ns.P10), num(ns.P90), r.Median, r.P10, r.P90,
			s.allocs, s.bytes, trips(s.trips))
	}
}

func trips(v float64) string {
	if math.Abs(v-math.Round(v)) < 0.005 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// num prints an integer with thousands separators, as the README does.
func num(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	n := int64(math.Round(v))
	s := fmt.Sprint(n)
	out := ""
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out += ","
		}
		out += string(c)
	}
	return out
}
