#!/usr/bin/env bash
# mutation.sh: mutation testing of the packages that guard people's data and
# access. Not part of CI (scripts/test.sh): run it by hand, as a habit, after
# changing one of these packages, and before calling a guard "tested".
#
#   bash scripts/mutation.sh                 # the fast targets (a few minutes each)
#   bash scripts/mutation.sh portblock ledger
#   bash scripts/mutation.sh all             # fast + slow targets (hours: see docs/testing.md)
#
# Tool: gremlins (github.com/go-gremlins/gremlins), pinned below, installed
# with `go install` from the Go module proxy into ./.bin. It runs the
# package's tests once with coverage, then for every covered mutant (a
# changed operator, a negated condition, an off-by-one boundary) rebuilds the
# package and runs its tests again: a mutant whose tests still pass LIVED,
# and shows a behaviour no test pins down. Efficacy = killed / (killed+lived).
#
# Each target is one package, optionally restricted to some of its files
# (gremlins -E excludes the others) and to the tests that exercise them
# (GOFLAGS=-run=..., which `go test` honours for the coverage run and for
# every mutant run alike: a mutant no selected test reaches counts as NOT
# COVERED, never as killed).
#
# Environment:
#   MUTATION_WORKERS    parallel mutant runs (default 1: the machine is shared)
#   MUTATION_THRESHOLD  minimum efficacy per target, percent (default 85)
#   MUTATION_TIMEOUT_COEFFICIENT  a mutant run may take this many times the
#                       coverage run before it counts as TIMED OUT (default 20: a
#                       mutant run recompiles and relinks, the coverage run
#                       may not, and the machine may be busy)
#   MUTATION_OUT        folder for each target's full log (default a temp dir)
#
# Exit status: 0 when every target reached the threshold, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export GOTOOLCHAIN=go1.27.3

GREMLINS_VERSION=v0.6.0
WORKERS=${MUTATION_WORKERS:-1}
THRESHOLD=${MUTATION_THRESHOLD:-85}
COEFF=${MUTATION_TIMEOUT_COEFFICIENT:-20}
OUT=${MUTATION_OUT:-$(mktemp -d /tmp/meridian-mutation.XXXXXX)}
mkdir -p "$OUT"

say() { printf 'mutation: %s\n' "$*"; }

# ---- the tool ---------------------------------------------------------------
BIN=$ROOT/.bin
STAMP=$BIN/gremlins.version
if [ -x "$BIN/gremlins" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$GREMLINS_VERSION" ]; then
	:
else
	say "installing gremlins $GREMLINS_VERSION into .bin/gremlins"
	mkdir -p "$BIN"
	rm -f "$BIN/gremlins" "$STAMP"
	GOBIN=$BIN GOFLAGS=-buildvcs=false go install "github.com/go-gremlins/gremlins/cmd/gremlins@$GREMLINS_VERSION"
	printf '%s\n' "$GREMLINS_VERSION" >"$STAMP"
fi
export PATH=$BIN:$PATH

# ---- targets ----------------------------------------------------------------
# name | package dir | files to mutate (empty: all of the package) | tests
# to run (go test -run regexp, empty: all). The other files are excluded
# with gremlins -E, one anchored name each.
#
# control's whole suite takes 30-50 s a run, so its targets keep only the
# files in question and the tests that drive them.
declare -A DIR KEEP RUN
FAST=(portblock ledger jurisdiction egress exit-policy)
SLOW=(control-auth control-retention gateway-spool)

DIR[portblock]=portblock
DIR[ledger]=ledger
DIR[jurisdiction]=jurisdiction
DIR[egress]=egress
DIR[exit-policy]=exit
KEEP[exit-policy]=policy.go
DIR[control-auth]=control
KEEP[control-auth]='auth.go tokens.go'
RUN[control-auth]='Token|Role|Auth|Operator|Login|Unauth|Forbidden|Credential|Require|Bearer|Admin|HeldCheckpoint'
DIR[control-retention]=control
KEEP[control-retention]=retention.go
RUN[control-retention]='Retention|Purge|Expire|Prune|Forget'
DIR[gateway-spool]=gateway
KEEP[gateway-spool]='spool.go sync.go'

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
	targets=("${FAST[@]}")
elif [ "${targets[0]}" = all ]; then
	targets=("${FAST[@]}" "${SLOW[@]}")
fi

summary=()
failed=0
for t in "${targets[@]}"; do
	if [ -z "${DIR[$t]:-}" ]; then
		say "unknown target $t (known: ${FAST[*]} ${SLOW[*]})" >&2
		exit 2
	fi
	# No --test-cpu: gremlins v0.6.0 passes it to go test as the single
	# argument "-cpu N", which go test rejects ("setup failed", exit 1), and
	# gremlins then counts every mutant as KILLED.
	args=(unleash --workers "$WORKERS" --timeout-coefficient "$COEFF"
		--invert-logical --threshold-efficacy "$THRESHOLD")
	if [ -n "${KEEP[$t]:-}" ]; then
		for f in "${DIR[$t]}"/*.go; do
			f=${f##*/}
			case " ${KEEP[$t]} " in *" $f "*) continue ;; esac
			case $f in *_test.go) continue ;; esac
			args+=(-E "^${f//./\\.}\$")
		done
	fi
	log=$OUT/$t.log
	say "$t: gremlins ${args[*]} ./${DIR[$t]}${RUN[$t]:+ (tests: -run ${RUN[$t]})}"
	start=$(date +%s)
	rc=0
	# -count=1: a cached coverage run would take milliseconds, and gremlins
	# times each mutant out at COEFF times the coverage run's duration.
	GOFLAGS="-count=1${RUN[$t]:+ -run=${RUN[$t]}}" gremlins "${args[@]}" "./${DIR[$t]}" >"$log" 2>&1 || rc=$?
	secs=$(($(date +%s) - start))
	eff=$(awk '/^Test efficacy:/ { print $3 }' "$log")
	counts=$(awk '/^Killed:/ { k=$2; l=$4; n=$7 } /^Timed out:/ { to=$3 } END { printf "killed %s, lived %s, timed out %s, not covered %s", k+0, l+0, to+0, n+0 }' "$log" | tr -d ,)
	line=$(printf '%-18s efficacy %-8s %s  (%ds)' "$t" "${eff:-?}" "$counts" "$secs")
	if [ "$rc" -ne 0 ]; then
		failed=1
		line="$line  BELOW ${THRESHOLD}% OR FAILED (log: $log)"
	fi
	summary+=("$line")
	grep -E '^ +LIVED ' "$log" | sed "s|^ *|  $t: |" || true
done

say "logs in $OUT"
for l in "${summary[@]}"; do
	say "$l"
done
exit "$failed"
