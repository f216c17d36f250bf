#!/usr/bin/env bash
# install-test-deps.sh: install what Meridian's tests and benchmarks need on a
# Debian 12 machine (CI runs it as root before the tests).
#
#   - Debian packages (apt-get, --no-install-recommends), skipped when all are
#     already installed;
#   - the upstream wireguard-go binary, built from the module version pinned
#     in go.mod, into ./.bin/wireguard-go (the "standard client" that the
#     namespace tests drive with `wg` from wireguard-tools).
#
# Idempotent: a second run does nothing but check. Without root the apt step is
# skipped with a note (tests that need root skip themselves).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

say() { printf 'install-test-deps: %s\n' "$*"; }

PACKAGES=(
	iproute2        # ip, ip netns, veth
	nftables        # nft: NAT in TUN mode
	conntrack       # conntrack: TUN mode ends a removed peer's flows
	wireguard-tools # wg: configures the upstream wireguard-go client
	iperf3          # throughput benchmarks
	chrony          # real NTP server on loopback for timesync tests
	curl            # HTTP client inside namespaces
	iputils-ping    # ping: reachability checks between namespaces
	ca-certificates
	procps          # sysctl, pgrep/ps for debugging
	python3-aiosmtpd # a real SMTP server on loopback for mail tests
)

# ---- Debian packages -------------------------------------------------------
missing=()
for p in "${PACKAGES[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
		missing+=("$p")
	fi
done

if [ ${#missing[@]} -eq 0 ]; then
	say "apt: all ${#PACKAGES[@]} packages already installed"
elif [ "$(id -u)" -ne 0 ]; then
	say "apt: not root, skipping install of: ${missing[*]} (tests that need them will skip)"
else
	say "apt: installing ${missing[*]}"
	# Never let a package's postinst start a daemon here: chrony's default
	# configuration would contact public NTP pools. Tests start their own
	# servers with their own configuration.
	policy=/usr/sbin/policy-rc.d
	added_policy=
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 0755 "$policy"
		added_policy=1
	fi
	cleanup_policy() { if [ -n "$added_policy" ]; then rm -f "$policy"; fi; }
	trap cleanup_policy EXIT
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q --no-install-recommends "${missing[@]}"
	cleanup_policy
	added_policy=
	trap - EXIT
	say "apt: done"
fi

# ---- upstream wireguard-go -------------------------------------------------
if [ -x /usr/local/go/bin/go ]; then
	export PATH=/usr/local/go/bin:$PATH
fi
if ! command -v go >/dev/null 2>&1; then
	say "go not found (expected at /usr/local/go/bin/go); skipping wireguard-go build"
	exit 0
fi

# The version comes from go.mod's require line, so client and gateway run the
# same wireguard-go.
WGVER=$(awk '$1 == "golang.zx2c4.com/wireguard" { print $2; exit }' go.mod)
if [ -z "$WGVER" ]; then
	say "golang.zx2c4.com/wireguard not found in go.mod" >&2
	exit 1
fi

BIN=$ROOT/.bin
STAMP=$BIN/wireguard-go.version
if [ -x "$BIN/wireguard-go" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$WGVER" ]; then
	say "wireguard-go $WGVER already built at .bin/wireguard-go"
else
	say "building wireguard-go $WGVER into .bin/wireguard-go"
	mkdir -p "$BIN"
	rm -f "$BIN/wireguard-go" "$BIN/wireguard" "$STAMP"
	# `go install pkg@version` ignores the current module's go.mod, so it
	# builds exactly the pinned upstream release with its own dependencies.
	# The main package is the module root, so the binary is named "wireguard".
	GOBIN=$BIN GOFLAGS=-buildvcs=false go install "golang.zx2c4.com/wireguard@$WGVER"
	if [ -x "$BIN/wireguard" ]; then
		mv -f "$BIN/wireguard" "$BIN/wireguard-go"
	fi
	if [ ! -x "$BIN/wireguard-go" ]; then
		say "build finished but no binary found in $BIN" >&2
		ls -l "$BIN" >&2
		exit 1
	fi
	printf '%s\n' "$WGVER" >"$STAMP"
	say "built: $("$BIN/wireguard-go" --version | head -n 1)"
fi
say "ok"
