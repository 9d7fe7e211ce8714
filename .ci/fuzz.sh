#!/usr/bin/env bash
# Runs every fuzz target of the module for a bounded time each (FUZZTIME,
# default 2s; the seed corpora, f.Add and <pkg>/testdata/fuzz/FuzzXxx, run
# first within it). Each package's test binary is built once with fuzzing
# instrumentation and run once per target, which keeps the whole run under
# a minute on 2 cores. A failure leaves its input in
# <pkg>/testdata/fuzz/FuzzXxx/ and fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."

fuzztime="${FUZZTIME:-2s}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
module=$(go list -m)
cache="$(go env GOCACHE)/fuzz"

for dir in $(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do
	bin="$tmp/$(echo "$dir" | tr / _).test"
	go test -c -fuzz=. -o "$bin" "$dir"
	rel=${dir#./}
	for target in $(grep -h '^func Fuzz' "$dir"/*_test.go | sed -E 's/^func (Fuzz[A-Za-z0-9_]*).*/\1/'); do
		echo "== $rel $target ($fuzztime)"
		(cd "$dir" && "$bin" -test.run='^$' -test.fuzz="^${target}\$" -test.fuzztime="$fuzztime" \
			-test.fuzzcachedir="$cache/$module/$rel" 2>&1) | grep -v '^fuzz: elapsed' || {
			echo "fuzz: $rel $target failed" >&2
			exit 1
		}
	done
done
