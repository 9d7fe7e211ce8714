#!/usr/bin/env bash
# Runs GORM's own test suite (gorm.io/gorm tests/) with the depcache GORM
# plugin installed on every *gorm.DB the suite opens, and prints every test
# whose outcome differs from the same suite without the plugin.
#
#   run.sh [-c CHECKOUT] [-m none|plugin|cached] [-d sqlite|postgres|mysql] [-a] [-B] [-k]
#
#   -c  depcache checkout (default: the checkout holding this script); only read, never written
#   -m  none: plugin not installed (what the baseline is)
#       plugin: installed; cached: installed and every query Cached(time.Minute)
#   -d  sqlite, postgres or mysql (MySQL/MariaDB)
#   -a  run plugin and cached on sqlite and postgres (four runs, one after another)
#   -B  recompute the baseline of the dialect(s) first
#   -k  keep the PostgreSQL/MySQL database of the run (dropped at the end by default)
#
# Environment:
#   GORM_SRC                 GORM v1.31.2 source tree (required); only read
#   GORMSUITE_BASELINE_DIR   where baseline-<dialect>.json lives (default ~/.cache/depcache-gormsuite)
#   GORMSUITE_WORK           parent of the per-run copies (default /tmp)
#   GORMSUITE_PG             libpq keywords of the PostgreSQL server (default
#                            "host=127.0.0.1 port=5432 user=postgres sslmode=disable")
#   GORMSUITE_MYSQL          go-sql-driver address of the MySQL/MariaDB server, no database
#                            (default "root@tcp(127.0.0.1:3306)/"); the mysql client
#                            creates and drops the run's database as user root on 127.0.0.1:3306
#                            unless GORMSUITE_MYSQL_CLI gives its arguments
#   DEPCACHE_SUITE_BACKEND   memory (default) or miniredis (in process)
#   DEPCACHE_SUITE_OPTIONS   plugin options to turn on, comma-separated (outbox, conjunction)
#   GORMSUITE_TIMEOUT        go test -timeout of one pass (default 20m)
#   DEPCACHE_MYSQL_NO_RETURNING  non-empty: -d mysql creates without RETURNING, as on
#                            MySQL proper (baseline kept apart: baseline-mysql-noreturning)
#   GORMSUITE_IGNORE         top-level tests whose differences are shown but not
#                            counted (GORM's lru_test.go tests always are: no database)
#
# Exit status: 0 no difference, 1 differences, 2 the harness itself failed.
set -uo pipefail
shopt -s nullglob

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
GORM_SRC=${GORM_SRC:-}
BASEDIR=${GORMSUITE_BASELINE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/depcache-gormsuite}
WORKROOT=${GORMSUITE_WORK:-/tmp}
PGCONN=${GORMSUITE_PG:-"host=127.0.0.1 port=5432 user=postgres sslmode=disable"}
MYCONN=${GORMSUITE_MYSQL:-"root@tcp(127.0.0.1:3306)/"}
MYCLI=${GORMSUITE_MYSQL_CLI:-"-h 127.0.0.1 -P 3306 -u root"}
TIMEOUT=${GORMSUITE_TIMEOUT:-20m}
export DEPCACHE_SUITE_BACKEND=${DEPCACHE_SUITE_BACKEND:-memory}

CHECKOUT=$(cd "$HERE/../.." && pwd)
MODE=plugin
DIALECT=sqlite
ALL=0
REBASE=0
KEEP=0

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 2; }
while getopts "c:m:d:aBkh" o; do
	case $o in
	c) CHECKOUT=$OPTARG ;;
	m) MODE=$OPTARG ;;
	d) DIALECT=$OPTARG ;;
	a) ALL=1 ;;
	B) REBASE=1 ;;
	k) KEEP=1 ;;
	*) usage ;;
	esac
done

die() { echo "gormsuite: $*" >&2; exit 2; }
log() { echo "gormsuite: $*" >&2; }

CHECKOUT=$(cd "$CHECKOUT" 2>/dev/null && pwd) || die "no checkout at $CHECKOUT"
[ -f "$CHECKOUT/go.mod" ] || die "$CHECKOUT has no go.mod"
[ -n "$GORM_SRC" ] || die "set GORM_SRC to a GORM v1.31.2 source tree (see .ci/gormsuite/README.md)"
[ -f "$GORM_SRC/tests/tests_test.go" ] || die "GORM_SRC=$GORM_SRC is not a GORM source tree"
GORM_SRC=$(cd "$GORM_SRC" && pwd)
mkdir -p "$BASEDIR" || die "cannot create $BASEDIR"
case $MODE in none | plugin | cached) ;; *) die "unknown mode $MODE" ;; esac
case $DIALECT in sqlite | postgres | mysql) ;; *) die "unknown dialect $DIALECT" ;; esac
TOOLDIR=$(mktemp -d)
trap 'rm -rf "$TOOLDIR"' EXIT
go build -o "$TOOLDIR/suitediff" "$HERE/suitediff.go" || die "cannot build suitediff.go"
SUITEDIFF=$TOOLDIR/suitediff

# basekey DIALECT: the name of the dialect's baseline, and the suffix of
# its work dirs. MySQL without RETURNING creates rows another way (keys from
# LastInsertId): its baseline is kept apart from the one with RETURNING.
basekey() {
	if [ "$1" = mysql ] && [ -n "${DEPCACHE_MYSQL_NO_RETURNING:-}" ]; then
		echo mysql-noreturning
	else
		echo "$1"
	fi
}

# psql_admin runs SQL on the server's postgres database.
psql_admin() { PGOPTIONS='-c client_min_messages=warning' psql "$PGCONN dbname=postgres" -v ON_ERROR_STOP=1 -qAtc "$1"; }
# mysql_admin runs SQL on the MySQL/MariaDB server, no database selected.
mysql_admin() { mysql $MYCLI -Nse "$1"; }

# prepare CHECKOUT MODE DIALECT → sets WORK; a fresh copy of tests/ that
# builds against GORM_SRC and CHECKOUT, compiled into $WORK/tests/suite.test.
prepare() {
	local checkout=$1 mode=$2 dialect=$3 hash
	hash=$(printf '%s' "$checkout" | sha1sum | cut -c1-8)
	WORK=$WORKROOT/gormsuite-$hash-$mode-$(basekey "$dialect")
	[ "$DEPCACHE_SUITE_BACKEND" = memory ] || WORK=$WORK-$DEPCACHE_SUITE_BACKEND
	[ -z "${DEPCACHE_SUITE_OPTIONS:-}" ] || WORK=$WORK-${DEPCACHE_SUITE_OPTIONS//,/-}
	# Two identical runs at once (same checkout, mode, dialect) take turns.
	exec 8>"$WORK.lock" && flock 8
	rm -rf "$WORK" && mkdir -p "$WORK/tmp" || return 1
	cp -r "$GORM_SRC/tests" "$WORK/tests" || return 1
	(
		cd "$WORK/tests" || exit 1
		# Every gorm.Open of the suite goes through depcacheOpen (the overlay).
		sed -i 's/\bgorm\.Open(/depcacheOpen(/g' ./*_test.go
		# A file whose only use of package gorm was gorm.Open keeps its import used.
		for f in $(grep -L '\bgorm\.[A-Z]' ./*_test.go); do
			grep -q '"gorm.io/gorm"$' "$f" && echo 'var _ = gorm.Open' >>"$f"
		done
		cp "$HERE/zz_depcache_test.go.tmpl" zz_depcache_test.go
		go mod edit -replace "gorm.io/gorm=$GORM_SRC" \
			-replace "github.com/depcache/go-depcache=$checkout" \
			-require github.com/depcache/go-depcache@v0.0.0-00010101000000-000000000000 &&
			go mod tidy >"$WORK/build.log" 2>&1 &&
			go test -c -o suite.test . >>"$WORK/build.log" 2>&1 &&
			{ grep -ho '^func Test[A-Za-z0-9_]*(t \*testing\.T)' ./*_test.go | sed 's/^func //; s/(.*//' | sort -u >list.txt; } &&
			{ # Tests that open no database (GORM's LRU, with 5ms expiries) cannot
			  # see the plugin; under load they fail now and then.
			  { grep -ho '^func Test[A-Za-z0-9_]*(t \*testing\.T)' ./lru_test.go | sed 's/^func //; s/(.*//'
			    printf '%s\n' ${GORMSUITE_IGNORE:-}; } >"$WORK/ignore.txt"; } &&
			go list -m all 2>/dev/null | grep -v '^github.com/depcache/go-depcache\|^gorm.io/gorm/tests' >"$WORK/mods.txt"
	) || { cat "$WORK/build.log" >&2; return 1; }
}

# runsuite: runs the compiled suite until every top-level test has an
# outcome (a panic kills the binary; the tests after it run in a new pass).
runsuite() (
	# A subshell: the environment of the suite stays out of later builds.
	local mode=$1 dialect=$2 pass=0 db="" rest regex ev
	export DEPCACHE_SUITE_MODE=$mode DEPCACHE_SUITE_STATS=$WORK/stats.txt DEPCACHE_SUITE_LOG=$WORK/plugin.log
	# Cached queries keyed by their clauses are checked against their SQL
	# key: one clause key standing for two queries panics (a crash).
	export DEPCACHE_GORM_CHECK_KEYS=1
	export TMPDIR=$WORK/tmp # SQLite file is $TMPDIR/gorm.db: one per run
	unset GORM_DSN
	if [ "$dialect" = postgres ]; then
		# Unique per invocation: nobody else's run can drop it under ours.
		db=gorm_suite_$(basename "$WORK" | sed 's/^gormsuite-//; s/-/_/g')_$$
		[ "$KEEP" = 1 ] || trap 'psql_admin "drop database if exists $db with (force)"' EXIT
		export GORM_DIALECT=postgres
		export GORM_DSN="$PGCONN dbname=$db TimeZone=Asia/Shanghai"
	elif [ "$dialect" = mysql ]; then
		db=gorm_suite_$(basename "$WORK" | sed 's/^gormsuite-//; s/-/_/g')_$$
		[ "$KEEP" = 1 ] || trap 'mysql_admin "drop database if exists $db"' EXIT
		export GORM_DIALECT=mysql
		# GORM's own DSN for MySQL (tests_test.go), on a database of the run.
		export GORM_DSN="$MYCONN$db?charset=utf8&parseTime=True&loc=Local"
	else
		export GORM_DIALECT=sqlite
	fi
	rm -f "$WORK"/events-*.jsonl "$WORK"/stats.txt*
	while :; do
		pass=$((pass + 1))
		rest=$($SUITEDIFF remaining "$WORK/tests/list.txt" "$WORK"/events-*.jsonl 2>/dev/null)
		[ -n "$rest" ] || break
		[ "$pass" -le 30 ] || { log "giving up after 30 passes"; break; }
		regex=""
		[ "$pass" -gt 1 ] && regex="^($(echo "$rest" | paste -sd'|'))\$"
		# A fresh database for the first pass only: tests after a crash rely
		# on tables earlier tests created, as they do on SQLite's file.
		if [ -n "$db" ] && [ "$pass" = 1 ]; then
			if [ "$dialect" = mysql ]; then
				mysql_admin "drop database if exists $db; create database $db" || exit 1
			else
				psql_admin "drop database if exists $db with (force)" && psql_admin "create database $db" || exit 1
			fi
		fi
		[ "$pass" -gt 1 ] && log "pass $pass: $(echo "$rest" | wc -l) tests left after a crash"
		ev=$WORK/events-$(printf %02d $pass).jsonl
		(cd "$WORK/tests" && go tool test2json -t ./suite.test -test.v=test2json -test.count=1 \
			-test.timeout="$TIMEOUT" ${regex:+-test.run "$regex"}) >"$ev" 2>"$WORK/stderr-$pass.txt"
		if ! grep -q '"Action":"run"' "$ev"; then
			# init() failed (no database?): no test ran, another pass would not either.
			log "pass $pass ran no test; the suite's output:"
			grep -o '"Output":"[^"]*' "$ev" | sed 's/"Output":"/    /' | head -20 >&2
			exit 1
		fi
	done
	$SUITEDIFF summarize "$WORK/summary.json" "$WORK"/events-*.jsonl
)

# totals sums the key=value counters of the per-pass stats files.
totals() {
	[ $# -gt 0 ] || { echo "none (no stats written)"; return; }
	cat "$@" | tr ' ' '\n' | awk -F= 'NF==2 { if (!($1 in s)) o[n++]=$1; s[$1]+=$2 } END { for (i=0;i<n;i++) printf "%s=%d ", o[i], s[o[i]]; print "" }'
}

baseline() {
	local dialect=$1 file key
	key=$(basekey "$dialect")
	file=$BASEDIR/baseline-$key.json
	exec 9>"$BASEDIR/.baseline-$key.lock" && flock 9
	if [ "$REBASE" = 1 ] || [ ! -f "$file" ]; then
		log "computing the $key baseline (mode none) → $file"
		local t0=$SECONDS
		prepare "$CHECKOUT" none "$dialect" || die "build failed (baseline)"
		runsuite none "$dialect" || die "run failed (baseline)"
		cp "$WORK/summary.json" "$file" && cp "$WORK/mods.txt" "$BASEDIR/baseline-$key.mods"
		log "baseline $key took $((SECONDS - t0))s"
	fi
	exec 9>&-
}

# one MODE DIALECT: prints the differences; returns 1 if any.
one() {
	local mode=$1 dialect=$2 t0 rc key
	key=$(basekey "$dialect")
	[ "$mode" = none ] || baseline "$dialect"
	t0=$SECONDS
	log "running mode=$mode dialect=$key checkout=$CHECKOUT"
	prepare "$CHECKOUT" "$mode" "$dialect" || die "build failed"
	local tb=$((SECONDS - t0))
	runsuite "$mode" "$dialect" || die "run failed"
	if [ "$mode" = none ]; then
		log "mode none: $(grep -c '"outcome"' "$WORK/summary.json") outcomes in $WORK/summary.json"
		return 0
	fi
	if ! diff -q "$BASEDIR/baseline-$key.mods" "$WORK/mods.txt" >/dev/null 2>&1; then
		log "warning: module versions differ from the baseline's (rerun with -B):"
		diff "$BASEDIR/baseline-$key.mods" "$WORK/mods.txt" | sed 's/^/    /' >&2
	fi
	echo "=== mode=$mode dialect=$key checkout=$CHECKOUT (work dir $WORK)"
	{
		$SUITEDIFF diff "$BASEDIR/baseline-$key.json" "$WORK/summary.json" "$WORK/ignore.txt"
		rc=$?
		local stats
		stats=$(totals "$WORK"/stats.txt.*)
		echo "depcache stats over $(ls "$WORK"/stats.txt.* 2>/dev/null | wc -l) pass(es): $stats"
		# An in-process backend never fails: errors mean the suite's
		# manager is misconfigured and the run did not test what it says.
		if grep -Eq '(^| )errors=[1-9]' <<<"$stats"; then
			echo "warning: the manager counted backend errors; see $WORK/plugin.log"
		fi
		# In mode cached the suite must really go through the cache: no hit
		# means the harness no longer marks queries as Cached does.
		if [ "$mode" = cached ] && ! grep -Eq '(^| )hits=[1-9]' <<<"$stats"; then
			echo "mode cached served no query from the cache: the harness does not exercise the plugin's cache"
			exit 2
		fi
		exit $rc
	} | tee "$WORK/diff.txt"
	rc=${PIPESTATUS[0]}
	echo "=== mode=$mode dialect=$key: build ${tb}s, run $((SECONDS - t0 - tb))s"
	return "$rc"
}

status=0
if [ "$ALL" = 1 ]; then
	baseline sqlite
	baseline postgres
	REBASE=0
	for d in sqlite postgres; do
		for m in plugin cached; do
			one "$m" "$d" || status=1
		done
	done
else
	one "$MODE" "$DIALECT" || status=1
fi
exit $status
