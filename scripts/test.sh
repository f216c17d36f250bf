#!/usr/bin/env bash
# test.sh: the whole test suite. Installs what the tests need first
# (Debian packages, the upstream wireguard-go client), then runs every Go
# test, including the network-namespace tests when run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
# Meridian builds with Go 1.27.3 (go.mod): the go command fetches that
# toolchain from the Go module proxy when the machine's Go is older.
export GOTOOLCHAIN=go1.27.3

bash scripts/install-test-deps.sh
export PATH="$PWD/.bin:$PATH"

echo "test: go vet ./..."
go vet ./...
echo "test: govulncheck (known vulnerabilities the code can reach)"
bash scripts/vulncheck.sh
echo "test: go test ./... (namespace tests need root; they skip otherwise, and fail under CI=true)"
go test -count=1 -timeout 25m "$@" ./...
