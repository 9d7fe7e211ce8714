//go:build ignore

// suitediff reads `go test -json` (test2json) streams of GORM's suite and
// compares per-test outcomes. Used by run.sh; stdlib only, run with
// `go run suitediff.go <command> ...`.
//
//	summarize OUT.json EVENTS.jsonl...   merge event streams into a summary
//	remaining LIST.txt EVENTS.jsonl...   top-level tests of LIST with no outcome yet
//	diff BASELINE.json CURRENT.json [IGNORE.txt]
//	                                     print the differences; exit 1 if any
//	                                     outside the top-level tests IGNORE lists
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
)

type event struct {
	Action string
	Test   string
	Output string
}

// Result of one test (or subtest).
type Result struct {
	Outcome string   `json:"outcome"` // pass, fail, skip, crash (started, never finished: the binary died)
	Output  []string `json:"output,omitempty"`
}

type Summary struct {
	Tests map[string]*Result `json:"tests"`
	Extra []string           `json:"extra,omitempty"` // package-level output (panics, stats)
}

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: suitediff summarize|remaining|diff ...")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "summarize":
		s := summarize(os.Args[3:])
		b, _ := json.MarshalIndent(s, "", " ")
		must(os.WriteFile(os.Args[2], b, 0o644))
	case "remaining":
		remaining(os.Args[2], os.Args[3:])
	case "diff":
		ignore := map[string]bool{}
		if len(os.Args) > 4 {
			b, err := os.ReadFile(os.Args[4])
			must(err)
			for _, n := range strings.Fields(string(b)) {
				ignore[n] = true
			}
		}
		os.Exit(diff(load(os.Args[2]), load(os.Args[3]), ignore))
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(2)
	}
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
}

func load(path string) *Summary {
	b, err := os.ReadFile(path)
	must(err)
	var s Summary
	must(json.Unmarshal(b, &s))
	return &s
}

func readEvents(path string, fn func(event)) {
	f, err := os.Open(path)
	must(err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var e event
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue
		}
		fn(e)
	}
}

// summarize merges streams in order: a later stream's outcome for a test
// wins (reruns after a crash only run the tests that had none).
func summarize(paths []string) *Summary {
	s := &Summary{Tests: map[string]*Result{}}
	for _, p := range paths {
		started := map[string]bool{}
		out := map[string][]string{}
		readEvents(p, func(e event) {
			switch {
			case e.Test == "" && e.Action == "output":
				s.Extra = append(s.Extra, strings.TrimRight(e.Output, "\n"))
			case e.Test == "":
			case e.Action == "run":
				started[e.Test] = true
			case e.Action == "output":
				out[e.Test] = append(out[e.Test], strings.TrimRight(e.Output, "\n"))
			case e.Action == "pass" || e.Action == "fail" || e.Action == "skip":
				delete(started, e.Test)
				r := &Result{Outcome: e.Action}
				if e.Action != "pass" {
					r.Output = trim(out[e.Test])
				}
				s.Tests[e.Test] = r
			}
		})
		for t := range started {
			s.Tests[t] = &Result{Outcome: "crash", Output: trim(out[t])}
		}
	}
	return s
}

// trim keeps the informative part of a test's output.
func trim(lines []string) []string {
	var keep []string
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "=== RUN") || strings.HasPrefix(t, "=== PAUSE") || strings.HasPrefix(t, "=== CONT") || strings.HasPrefix(t, "=== NAME") {
			continue
		}
		keep = append(keep, l)
	}
	if len(keep) > 60 {
		keep = append(append(keep[:30:30], fmt.Sprintf("    ... %d lines ...", len(keep)-50)), keep[len(keep)-20:]...)
	}
	return keep
}

func remaining(listPath string, paths []string) {
	done := map[string]bool{}
	for _, p := range paths {
		readEvents(p, func(e event) {
			if e.Test != "" && (e.Action == "pass" || e.Action == "fail" || e.Action == "skip") {
				done[e.Test] = true
			}
			if e.Test != "" && e.Action == "run" && !strings.Contains(e.Test, "/") {
				// A test that started counts as done: if it crashed the
				// binary it must not run again.
				done[e.Test] = true
			}
		})
	}
	b, err := os.ReadFile(listPath)
	must(err)
	for _, name := range strings.Fields(string(b)) {
		if strings.HasPrefix(name, "Test") && !done[name] {
			fmt.Println(name)
		}
	}
}

func diff(base, cur *Summary, ignore map[string]bool) int {
	names := map[string]bool{}
	for n := range base.Tests {
		names[n] = true
	}
	for n := range cur.Tests {
		names[n] = true
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	outcome := func(s *Summary, n string) (string, *Result) {
		if r, ok := s.Tests[n]; ok {
			return r.Outcome, r
		}
		return "absent", nil
	}
	count := 0
	for _, n := range sorted {
		bo, _ := outcome(base, n)
		co, cr := outcome(cur, n)
		if bo == co {
			continue
		}
		// A subtest absent on one side because its parent failed earlier
		// is reported through the parent.
		if (bo == "absent" || co == "absent") && strings.Contains(n, "/") {
			parent := n[:strings.LastIndex(n, "/")]
			pb, _ := outcome(base, parent)
			pc, _ := outcome(cur, parent)
			if pb != pc {
				continue
			}
		}
		if top, _, _ := strings.Cut(n, "/"); ignore[top] {
			fmt.Printf("--- %s: baseline %s, now %s (ignored: no database, timing-dependent)\n", n, bo, co)
			continue
		}
		count++
		fmt.Printf("--- %s: baseline %s, now %s\n", n, bo, co)
		if cr != nil {
			for _, l := range cr.Output {
				fmt.Printf("    | %s\n", l)
			}
		}
	}
	var stats []string
	for _, l := range cur.Extra {
		if strings.HasPrefix(strings.TrimSpace(l), "panic:") {
			stats = append(stats, l)
		}
	}
	tally := func(s *Summary) string {
		c := map[string]int{}
		for _, r := range s.Tests {
			c[r.Outcome]++
		}
		return fmt.Sprintf("pass=%d fail=%d skip=%d crash=%d", c["pass"], c["fail"], c["skip"], c["crash"])
	}
	fmt.Printf("baseline: %s\nthis run: %s\n", tally(base), tally(cur))
	for _, l := range stats {
		fmt.Println(l)
	}
	fmt.Printf("%d difference(s)\n", count)
	if count > 0 {
		return 1
	}
	return 0
}
