#!/usr/bin/env bash
# throughput.sh: TCP throughput through a Meridian gateway, side by side with
# the paths it is built from. Run as root from anywhere in the repository:
#
#   sudo bench/throughput.sh            # iperf3 -t 10, 1 and 4 streams
#
# It builds cmd/meridian, uses the upstream wireguard-go at .bin/wireguard-go
# (scripts/install-test-deps.sh builds it), and makes three network
# namespaces:
#
#   cli  192.0.2.2/24    --veth--  192.0.2.1/24     gw  198.51.100.1/24 --veth-- 198.51.100.2/24  srv
#        iperf3 client                              forwards / gateway                         iperf3 -s
#
# and measures iperf3 from cli to srv (cli sends) over:
#   (a) raw:        the veths, routed by gw, no tunnel;
#   (b) wg pair:    two standalone wireguard-go processes (cli and gw)
#                   configured with `wg`, gw routing to srv without NAT;
#   (c) meridian tun:       `meridian gateway --mode tun` (kernel TUN,
#                   nftables NAT and egress policy) with the client config
#                   from `meridian device add`, loaded by `wg setconf`;
#   (d) meridian userspace: `meridian gateway --mode userspace` (gVisor
#                   netstack exit dialing host sockets), same client.
# For (c) and (d) a control server runs in gw on 127.0.0.1.
#
# NETWORK SAFETY: the namespaces have no link to the host's interfaces and no
# default route; every address is in 192.0.2.0/24, 198.51.100.0/24,
# 10.200.0.0/16 or 127.0.0.1 inside gw. Nothing is configured or sent in the
# host's own namespace. Each iperf3 run is bounded (-t, and `timeout`).
# Everything the script made (processes by PID, namespaces, files) is removed
# on exit, also on error or Ctrl-C.
#
# Environment: BENCH_SECONDS (default 10, at most 60) is iperf3's -t;
# BENCH_REPEAT (default 1, at most 5) runs each measurement that many times
# (1 and 4 streams alternating) and reports the median, with the range. On a
# small or shared machine single runs vary by tens of percent.
set -euo pipefail

SECONDS_PER_RUN=${BENCH_SECONDS:-10}
if ! [[ $SECONDS_PER_RUN =~ ^[0-9]+$ ]] || [ "$SECONDS_PER_RUN" -lt 1 ] || [ "$SECONDS_PER_RUN" -gt 60 ]; then
	echo "throughput: BENCH_SECONDS must be 1..60" >&2
	exit 2
fi
REPEAT=${BENCH_REPEAT:-1}
if ! [[ $REPEAT =~ ^[0-9]+$ ]] || [ "$REPEAT" -lt 1 ] || [ "$REPEAT" -gt 5 ]; then
	echo "throughput: BENCH_REPEAT must be 1..5" >&2
	exit 2
fi

cd "$(dirname "$0")/.."
ROOT=$PWD
say() { printf 'throughput: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, TUN)"
if [ -x /usr/local/go/bin/go ]; then PATH=/usr/local/go/bin:$PATH; fi
for tool in ip nft wg wg-quick iperf3 go timeout; do
	command -v "$tool" >/dev/null || die "needs $tool: run scripts/install-test-deps.sh"
done
WGGO=$ROOT/.bin/wireguard-go
[ -x "$WGGO" ] || die "needs .bin/wireguard-go: run scripts/install-test-deps.sh"

# ---- cleanup ------------------------------------------------------------
ID=$$
NS_CLI=mbench-cli-$ID
NS_GW=mbench-gw-$ID
NS_SRV=mbench-srv-$ID
WORK=$(mktemp -d /tmp/meridian-bench.XXXXXX)
PIDS=()
WGIFS=()

# alive PID: the process exists and is not a zombie waiting to be reaped.
alive() {
	local st
	st=$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null) || return 1
	[ -n "$st" ] && [ "$st" != Z ]
}

# stop PID: SIGTERM, wait up to 10 s, then SIGKILL, and reap it. Only for
# PIDs this script started (children of this shell).
stop() {
	local pid=$1
	if alive "$pid"; then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
		if alive "$pid"; then
			say "pid $pid did not exit within 10 s of SIGTERM; killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	wait "$pid" 2>/dev/null || true
	# Forget it, so that cleanup never signals a recycled PID.
	local kept=() p
	for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done
	PIDS=("${kept[@]}")
}

cleanup() {
	local pid ifc ns
	for pid in "${PIDS[@]}"; do stop "$pid"; done # stop edits PIDS; the loop has its own copy
	# Anything still inside our namespaces was started by this script too
	# (a child of one of its processes): kill it before deleting them.
	for ns in "$NS_CLI" "$NS_GW" "$NS_SRV"; do
		for pid in $(ip netns pids "$ns" 2>/dev/null); do
			[ "$pid" != $$ ] && kill -KILL "$pid" 2>/dev/null || true
		done
	done
	for ifc in "${WGIFS[@]}"; do rm -f "/var/run/wireguard/$ifc.sock"; done
	for ns in "$NS_CLI" "$NS_GW" "$NS_SRV"; do
		ip netns del "$ns" 2>/dev/null || true
	done
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Commands inside a namespace. Long-running ones are started as
# `ip netns exec NS CMD &` directly (never through these functions), so that
# $! is the command itself: `ip netns exec` execs it.
in_cli() { ip netns exec "$NS_CLI" "$@"; }
in_gw() { ip netns exec "$NS_GW" "$@"; }
in_srv() { ip netns exec "$NS_SRV" "$@"; }

# wait_for WHAT SECONDS COMMAND...: poll until COMMAND succeeds.
wait_for() {
	local what=$1 secs=$2
	shift 2
	for _ in $(seq $((secs * 10))); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.1
	done
	say "timed out waiting for $what"
	return 1
}

# ---- build ----------------------------------------------------------------
say "building meridian"
GOFLAGS=-buildvcs=false go build -o "$WORK/meridian" ./cmd/meridian
MERIDIAN=$WORK/meridian

# ---- topology ---------------------------------------------------------------
say "creating namespaces $NS_CLI, $NS_GW, $NS_SRV"
for ns in "$NS_CLI" "$NS_GW" "$NS_SRV"; do
	ip netns add "$ns"
	ip -n "$ns" link set lo up
done
ip -n "$NS_CLI" link add veth0 type veth peer name veth-cli netns "$NS_GW"
ip -n "$NS_GW" link add veth-srv type veth peer name veth0 netns "$NS_SRV"
ip -n "$NS_CLI" link set veth0 up
ip -n "$NS_GW" link set veth-cli up
ip -n "$NS_GW" link set veth-srv up
ip -n "$NS_SRV" link set veth0 up
ip -n "$NS_CLI" addr add 192.0.2.2/24 dev veth0
ip -n "$NS_GW" addr add 192.0.2.1/24 dev veth-cli
ip -n "$NS_GW" addr add 198.51.100.1/24 dev veth-srv
ip -n "$NS_SRV" addr add 198.51.100.2/24 dev veth0
in_gw sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'
# srv answers the routed paths (a) and (b); (c) and (d) arrive NATed from 198.51.100.1.
ip -n "$NS_SRV" route add 192.0.2.0/24 via 198.51.100.1
ip -n "$NS_SRV" route add 10.200.0.0/16 via 198.51.100.1
for ns in "$NS_CLI" "$NS_GW" "$NS_SRV"; do
	if [ -n "$(ip -n "$ns" route show default)" ]; then die "namespace $ns has a default route"; fi
done

ip netns exec "$NS_SRV" iperf3 -s -p 5201 >"$WORK/iperf3-server.log" 2>&1 &
PIDS+=($!)
# A second server only for reachability probes, so that probe connections
# never meet the measuring one.
ip netns exec "$NS_SRV" iperf3 -s -p 5202 >"$WORK/iperf3-probe.log" 2>&1 &
PIDS+=($!)
wait_for "iperf3 servers" 10 in_srv sh -c 'ss -ltn | grep -q ":5201 " && ss -ltn | grep -q ":5202 "'

# measure STREAMS: prints Mbit/s received by srv, or "n/a".
measure() {
	local streams=$1 out
	if ! out=$(timeout $((SECONDS_PER_RUN + 20)) ip netns exec "$NS_CLI" \
		iperf3 -c 198.51.100.2 -p 5201 -t "$SECONDS_PER_RUN" -P "$streams" -f m --connect-timeout 3000 2>&1); then
		say "iperf3 -P $streams failed: $(printf '%s' "$out" | tail -n 3)"
		echo "n/a"
		return
	fi
	printf '%s\n' "$out" >>"$WORK/iperf3-client.log"
	printf '%s\n' "$out" | awk '/receiver/ { for (i = 1; i < NF; i++) if ($(i+1) == "Mbits/sec") v = $i } END { if (v == "") print "n/a"; else print v }'
}

declare -A R

# reachable: a short check that cli reaches srv's iperf3 port.
reachable() {
	in_cli timeout 5 bash -c 'exec 3<>/dev/tcp/198.51.100.2/5202' 2>/dev/null
}

# summarize VALUES...: the value, or with several "median (min-max)";
# "n/a" if any run failed.
summarize() {
	local v
	for v in "$@"; do [ "$v" != n/a ] || { echo n/a; return; }; done
	if [ $# -eq 1 ]; then echo "$1"; return; fi
	printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END {
		m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
		printf "%.0f (%.0f-%.0f)\n", m, v[1], v[NR] }'
}

# median VALUE: the first number of a summarize result.
median() { echo "${1%% *}"; }

run_case() {
	local key=$1 i one=() four=()
	if ! wait_for "cli to reach srv over $key" 10 reachable; then
		R[$key,1]="n/a"
		R[$key,4]="n/a"
		return
	fi
	for i in $(seq "$REPEAT"); do
		say "$key: 1 stream, ${SECONDS_PER_RUN}s (run $i/$REPEAT)"
		one+=("$(measure 1)")
		say "$key: 4 streams, ${SECONDS_PER_RUN}s (run $i/$REPEAT)"
		four+=("$(measure 4)")
	done
	R[$key,1]=$(summarize "${one[@]}")
	R[$key,4]=$(summarize "${four[@]}")
	say "$key: ${R[$key,1]} / ${R[$key,4]} Mbit/s"
}

# start_wg IFNAME: the upstream wireguard-go in the foreground inside cli or gw.
start_wg() {
	local ns=$1 ifc=$2
	WGIFS+=("$ifc")
	ip netns exec "$ns" env WG_PROCESS_FOREGROUND=1 "$WGGO" -f "$ifc" >"$WORK/$ifc.log" 2>&1 &
	PIDS+=($!)
	wait_for "wireguard-go $ifc" 10 test -S "/var/run/wireguard/$ifc.sock"
}

# ---- (a) raw ----------------------------------------------------------------
ip -n "$NS_CLI" route replace 198.51.100.0/24 via 192.0.2.1
run_case raw

# ---- (b) plain wireguard-go pair -------------------------------------------
CLI_WG=mbc${ID}b
GW_WG=mbg${ID}b
umask 077
in_cli wg genkey >"$WORK/b-cli.key"
in_gw wg genkey >"$WORK/b-gw.key"
B_CLI_PUB=$(in_cli wg pubkey <"$WORK/b-cli.key")
B_GW_PUB=$(in_gw wg pubkey <"$WORK/b-gw.key")
start_wg "$NS_GW" "$GW_WG"
B_GW_PID=${PIDS[-1]}
in_gw wg set "$GW_WG" listen-port 51821 private-key "$WORK/b-gw.key" peer "$B_CLI_PUB" allowed-ips 10.200.1.2/32
ip -n "$NS_GW" addr add 10.200.1.1/24 dev "$GW_WG"
ip -n "$NS_GW" link set "$GW_WG" up
start_wg "$NS_CLI" "$CLI_WG"
B_CLI_PID=${PIDS[-1]}
in_cli wg set "$CLI_WG" private-key "$WORK/b-cli.key" peer "$B_GW_PUB" endpoint 192.0.2.1:51821 allowed-ips 0.0.0.0/0
ip -n "$NS_CLI" addr add 10.200.1.2/32 dev "$CLI_WG"
ip -n "$NS_CLI" link set "$CLI_WG" up
ip -n "$NS_CLI" route replace 198.51.100.0/24 dev "$CLI_WG"
run_case wgpair
stop "$B_CLI_PID"
stop "$B_GW_PID"

# ---- (c), (d) meridian --------------------------------------------------------
# meridian_case MODE PORT: a control server and a gateway in gw, a device,
# its config in cli's wireguard-go; measure; tear the meridian side down.
meridian_case() {
	local mode=$1 port=$2 data=$WORK/data-$1 state=$WORK/gw-$1 ifc=mbc${ID}${1:0:1}
	local ctl gwp cli tok conf addrs a
	ip netns exec "$NS_GW" "$MERIDIAN" control --data "$data" --listen "127.0.0.1:$port" \
		--ipv4-pool 10.200.0.0/24 --ipv6-pool 2001:db8:200::/64 >"$WORK/control-$mode.log" 2>&1 &
	ctl=$!
	PIDS+=("$ctl")
	if ! wait_for "control server ($mode)" 15 test -s "$data/control.url"; then
		cat "$WORK/control-$mode.log" >&2
		R[$mode,1]="n/a"; R[$mode,4]="n/a"; stop "$ctl"; return
	fi
	tok=$(in_gw "$MERIDIAN" gateway token --json --data "$data" | sed -n 's/^ *"token": *"\([^"]*\)".*/\1/p')
	ip netns exec "$NS_GW" "$MERIDIAN" gateway --control "http://127.0.0.1:$port" --join-token "$tok" --state "$state" \
		--name "bench-$mode" --mode "$mode" --listen-port 51820 --endpoint 192.0.2.1:51820 >"$WORK/gateway-$mode.log" 2>&1 &
	gwp=$!
	PIDS+=("$gwp")
	if ! wait_for "gateway ($mode)" 20 grep -q "following control server" "$WORK/gateway-$mode.log"; then
		say "meridian $mode gateway did not come up:"
		cat "$WORK/gateway-$mode.log" >&2
		R[$mode,1]="n/a"; R[$mode,4]="n/a"; stop "$gwp"; stop "$ctl"; return
	fi
	in_gw "$MERIDIAN" user add bench --data "$data" >/dev/null
	conf=$WORK/cli-$mode.conf
	in_gw "$MERIDIAN" device add --user bench --name "cli-$mode" --out "$conf" --data "$data" >/dev/null

	start_wg "$NS_CLI" "$ifc"
	cli=${PIDS[-1]}
	in_cli wg-quick strip "$conf" >"$WORK/cli-$mode.stripped"
	in_cli wg setconf "$ifc" "$WORK/cli-$mode.stripped"
	addrs=$(sed -n 's/^Address *= *//p' "$conf" | tr ',' ' ')
	for a in $addrs; do
		case $a in
		*:*) ip -n "$NS_CLI" addr add "$a" dev "$ifc" nodad ;;
		*) ip -n "$NS_CLI" addr add "$a" dev "$ifc" ;;
		esac
	done
	ip -n "$NS_CLI" link set "$ifc" up
	ip -n "$NS_CLI" route replace 198.51.100.0/24 dev "$ifc"
	run_case "$mode"
	stop "$cli"
	stop "$gwp"
	stop "$ctl"
}
meridian_case tun 8421
meridian_case userspace 8422

# ---- report -------------------------------------------------------------------
ratio() {
	awk -v a="$(median "$1")" -v b="$(median "$2")" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.2f", a / b; else print "n/a" }'
}
CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
WGVER=$(cat "$ROOT/.bin/wireguard-go.version" 2>/dev/null || echo unknown)
cat <<EOF

## TCP throughput, cli -> srv, iperf3 -t $SECONDS_PER_RUN (Mbit/s received$([ "$REPEAT" -gt 1 ] && echo ", median (min-max) of $REPEAT runs"))

machine: $(nproc) CPUs ($CPU), kernel $(uname -r); all three namespaces share them.
wireguard-go $WGVER; meridian $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo "+dirty")

| path | 1 stream | 4 streams |
| --- | ---: | ---: |
| (a) raw veth, routed by gw | ${R[raw,1]} | ${R[raw,4]} |
| (b) wireguard-go pair (wg) | ${R[wgpair,1]} | ${R[wgpair,4]} |
| (c) meridian gateway, TUN mode | ${R[tun,1]} | ${R[tun,4]} |
| (d) meridian gateway, userspace mode | ${R[userspace,1]} | ${R[userspace,4]} |

| ratio$([ "$REPEAT" -gt 1 ] && echo " (of medians)") | 1 stream | 4 streams |
| --- | ---: | ---: |
| TUN / wireguard-go pair | $(ratio "${R[tun,1]}" "${R[wgpair,1]}") | $(ratio "${R[tun,4]}" "${R[wgpair,4]}") |
| userspace / TUN | $(ratio "${R[userspace,1]}" "${R[tun,1]}") | $(ratio "${R[userspace,4]}" "${R[tun,4]}") |
| wireguard-go pair / raw | $(ratio "${R[wgpair,1]}" "${R[raw,1]}") | $(ratio "${R[wgpair,4]}" "${R[raw,4]}") |
EOF
for k in tun userspace; do
	if [ "${R[$k,1]}" = "n/a" ] && [ "${R[$k,4]}" = "n/a" ]; then
		echo
		echo "note: meridian $k mode did not reach the iperf3 server (see the messages above)."
	fi
done
