package main

import (
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/depcache/go-depcache/bench"
)

// printLatency prints one workload's table: per contender the median ns/op
// with its p10–p90 spread, the ratio to the baseline (per round, then the
// median), allocations, bytes and round trips per op. Each also names a
// second baseline among rows (by name, "" for none) and gets a column of
// ratios to it, per round as well.
func printLatency(w io.Writer, title, baseline string, rows []*sample, also ...string) {
	var extra []*sample
	for _, name := range also {
		for _, s := range rows {
			if s.name == name {
				extra = append(extra, s)
			}
		}
	}
	fmt.Fprintf(w, "\n### %s\n\n", title)
	fmt.Fprintf(w, "| contender | ns/op median (p10–p90) | × %s median (p10–p90) |", baseline)
	for _, e := range extra {
		fmt.Fprintf(w, " × %s median |", e.name)
	}
	fmt.Fprintln(w, " allocs/op | B/op | round trips/op |")
	fmt.Fprintln(w, "|---|---|---|"+strings.Repeat("---|", len(extra))+"---|---|---|")
	for _, s := range rows {
		ns, r := bench.SpreadOf(s.nsPerOp), bench.SpreadOf(s.ratio)
		fmt.Fprintf(w, "| %s | %s (%s–%s) | %.2f (%.2f–%.2f) |",
			s.name, num(ns.Median), num(ns.P10), num(ns.P90), r.Median, r.P10, r.P90)
		for _, e := range extra {
			fmt.Fprintf(w, " %.2f |", bench.SpreadOf(ratiosTo(s, e)).Median)
		}
		fmt.Fprintf(w, " %.0f | %.0f | %s |\n", s.allocs, s.bytes, trips(s.trips))
	}
}

// ratiosTo divides s's batch times by base's of the same round.
func ratiosTo(s, base *sample) []float64 {
	out := make([]float64, min(len(s.nsPerOp), len(base.nsPerOp)))
	for i := range out {
		out[i] = s.nsPerOp[i] / base.nsPerOp[i]
	}
	return out
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
