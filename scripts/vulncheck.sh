#!/usr/bin/env bash
# vulncheck.sh: govulncheck over the whole module, failing (exit 3) when the
# code can reach a known vulnerability in the Go toolchain's standard library
# or in a required module. Called by test.sh, so CI runs it.
#
# CI reaches no vulnerability service, only the Go module proxy, so the
# database comes from there too: the OSV files of the module
# golang.org/x/vulndb (the Go team's own database), pinned below and indexed
# into ./.bin/vulndb-VERSION by the Go team's indexdb tool. Both tools are
# pinned `go install`s into ./.bin.
#
# A pinned database sees only vulnerabilities published before its version.
# Take a newer one now and then (say, with every dependency update):
#   VULNDB_VERSION=latest bash scripts/vulncheck.sh     # try the newest
# and, when it passes or once the code is fixed, write the version it
# printed into VULNDB_VERSION below.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/.bin

GOVULNCHECK_VERSION=v1.9.0
VULNDB_VERSION=${VULNDB_VERSION:-v0.0.0-20261105234957-e22db6528018}

say() { printf 'vulncheck: %s\n' "$*"; }
mkdir -p "$BIN"

if [ "$VULNDB_VERSION" = latest ]; then
	VULNDB_VERSION=$(go list -m -f '{{.Version}}' golang.org/x/vulndb@latest)
	say "newest database: $VULNDB_VERSION"
fi

# The tools are built with the toolchain that builds Meridian: govulncheck
# loads the code with the go/packages of the Go it was built with.
gover=$(go env GOVERSION)
install() { # name module@version
	local stamp=$BIN/$1.version want="$2 $gover"
	if [ -x "$BIN/$1" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
		return
	fi
	say "building $2 with $gover (first run only)"
	GOBIN=$BIN GOFLAGS=-buildvcs=false go install "$2"
	printf '%s\n' "$want" >"$stamp"
}
install govulncheck "golang.org/x/vuln/cmd/govulncheck@$GOVULNCHECK_VERSION"
install indexdb "golang.org/x/vulndb/cmd/indexdb@$VULNDB_VERSION"

DB=$BIN/vulndb-$VULNDB_VERSION
if [ ! -f "$DB/index/db.json" ]; then
	src=$(GOFLAGS=-mod=mod go mod download -json "golang.org/x/vulndb@$VULNDB_VERSION" | awk -F'"' '$2 == "Dir" { print $4 }')
	if [ ! -d "$src/data/osv" ]; then
		say "no data/osv in golang.org/x/vulndb@$VULNDB_VERSION" >&2
		exit 1
	fi
	say "indexing $(ls "$src/data/osv" | wc -l) OSV entries of $VULNDB_VERSION"
	rm -rf "$DB.tmp"
	"$BIN/indexdb" -vulns "$src/data/osv" -out "$DB.tmp"
	rm -rf "$DB"
	mv "$DB.tmp" "$DB"
fi

say "govulncheck $GOVULNCHECK_VERSION, database $VULNDB_VERSION, $gover"
"$BIN/govulncheck" -db "file://$DB" ./...
