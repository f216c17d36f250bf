package tunnet_test

// TestNetnsGateway runs a TUN-mode gateway end to end, in three
// network namespaces that the test creates and links:
//
//	cli  wgN (10.200.0.2, 2001:db8:200::2): the upstream wireguard-go binary
//	 |     from .bin (scripts/install-test-deps.sh), configured by `wg setconf`
//	 | veth 192.0.2.2/24 -- 192.0.2.1/24 (WireGuard UDP underlay)
//	gw   this test binary as a child (TUNNET_TEST_CHILD=gw): tunnet.Open +
//	 |     wireguard-go device.Device; exit addresses 203.0.113.1 and
//	 |     2001:db8:2::1 on lo
//	 | veth 198.51.100.1/24, 2001:db8:3::1/64 -- 198.51.100.2/24, 2001:db8:3::2/64
//	srv  this test binary as a child (TUNNET_TEST_CHILD=srv): an HTTP server
//	       that answers with the source address it saw; routes the exit
//	       block 203.0.113.0/24 and 2001:db8:2::/64 to gw, as a provider would;
//	       the egress policy subtest adds a private network (10.200.9.0/24,
//	       fd00:9::/64) on the same link, and the same HTTP server on gw
//
// The exit addresses differ from gw's address on the srv link, so the server
// tells SNAT (it sees 203.0.113.1) from masquerade (198.51.100.1) apart.
// No namespace has a default route or a link to the host's interfaces.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"

	"github.com/meridian-vpn/meridian/internal/netns"
	"github.com/meridian-vpn/meridian/tunnet"
	wgkey "github.com/meridian-vpn/meridian/wg"
)

const childEnv = "TUNNET_TEST_CHILD"

// TestMain lets the test binary double as the gateway and the HTTP server,
// started inside namespaces by the test itself.
func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "":
		os.Exit(m.Run())
	case "gw":
		os.Exit(gatewayChild())
	case "srv":
		os.Exit(serverChild())
	default:
		fmt.Fprintf(os.Stderr, "unknown %s=%q\n", childEnv, os.Getenv(childEnv))
		os.Exit(2)
	}
}

const (
	gwListenPort = 51820
	srvPort      = 8080
	bigSize      = 8 << 20 // bytes moved each way per family: enough for TSO/GRO batches
)

var (
	gwTunAddrs = []netip.Prefix{netip.MustParsePrefix("10.200.0.1/16"), netip.MustParsePrefix("2001:db8:200::1/64")}
	cliTun4    = netip.MustParsePrefix("10.200.0.2/32")
	cliTun6    = netip.MustParsePrefix("2001:db8:200::2/128")
	exit4      = netip.MustParseAddr("203.0.113.1")
	exit6      = netip.MustParseAddr("2001:db8:2::1")
	srv4       = netip.MustParseAddr("198.51.100.2")
	srv6       = netip.MustParseAddr("2001:db8:3::2")
	gwSrvSide4 = netip.MustParseAddr("198.51.100.1") // what masquerade picks
	gwSrvSide6 = netip.MustParseAddr("2001:db8:3::1")
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestNetnsGateway(t *testing.T) {
	netns.Require(t, "nft", "conntrack", "wg", "curl", "ping")
	wgGo, err := filepath.Abs("../.bin/wireguard-go")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(wgGo); err != nil {
		msg := "needs the upstream wireguard-go at .bin/wireguard-go: run scripts/install-test-deps.sh"
		if os.Getenv("CI") == "true" {
			t.Fatal("CI: " + msg)
		}
		t.Skip(msg)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	hostFwd4, hostFwd6 := readFile(t, "/proc/sys/net/ipv4/ip_forward"), readFile(t, "/proc/sys/net/ipv6/conf/all/forwarding")

	cli := netns.New(t, "cli")
	gw := netns.New(t, "gw")
	srv := netns.New(t, "srv")
	netns.Link(t, cli, gw, []netip.Prefix{pfx("192.0.2.2/24")}, []netip.Prefix{pfx("192.0.2.1/24")})
	netns.Link(t, gw, srv,
		[]netip.Prefix{pfx("198.51.100.1/24"), pfx("2001:db8:3::1/64")},
		[]netip.Prefix{pfx("198.51.100.2/24"), pfx("2001:db8:3::2/64")})
	gw.Run(t, "ip", "addr", "add", exit4.String()+"/32", "dev", "lo")
	gw.Run(t, "ip", "addr", "add", exit6.String()+"/128", "dev", "lo")
	srv.Run(t, "ip", "route", "add", "203.0.113.0/24", "via", gwSrvSide4.String())
	srv.Run(t, "ip", "route", "add", "2001:db8:2::/64", "via", gwSrvSide6.String())

	gwKey, cliKey := newKey(t), newKey(t)

	server := srv.Start(t, "srv", "env", childEnv+"=srv", self)
	if err := server.WaitFor("READY", 10*time.Second); err != nil {
		t.Fatal(err)
	}

	// The standard client: upstream wireguard-go in the foreground; its UAPI
	// socket lives in the shared /var/run/wireguard, so the name is unique.
	wgIf := fmt.Sprintf("wgt%d", os.Getpid()%1000000)
	client := cli.Start(t, "cli wireguard-go", "env", "LOG_LEVEL=verbose", "WG_PROCESS_FOREGROUND=1", wgGo, "-f", wgIf)
	sock := "/var/run/wireguard/" + wgIf + ".sock"
	waitFile(t, client, sock)
	conf := filepath.Join(t.TempDir(), "cli.conf")
	writeFile(t, conf, fmt.Sprintf("[Interface]\nPrivateKey = %s\n\n[Peer]\nPublicKey = %s\nEndpoint = 192.0.2.1:%d\nAllowedIPs = 0.0.0.0/0, ::/0\n",
		cliKey, gwKey.Public(), gwListenPort))
	cli.Run(t, "ip", "addr", "add", cliTun4.String(), "dev", wgIf)
	cli.Run(t, "ip", "addr", "add", cliTun6.String(), "dev", wgIf, "nodad")
	cli.Run(t, "ip", "link", "set", wgIf, "up")
	cli.Run(t, "ip", "route", "add", "198.51.100.0/24", "dev", wgIf)
	cli.Run(t, "ip", "route", "add", "2001:db8:3::/64", "dev", wgIf)

	// startGateway starts the gateway child, then (re)configures the client.
	// Configuring the client only once the gateway listens keeps its first
	// handshake from going unanswered (a 5 s retry). Re-applying it after a
	// gateway restart also replaces the peer, dropping the session the old
	// gateway held, so the next packet starts a fresh handshake (otherwise
	// the client would take ~15 s to notice).
	//
	// The server stands in for the internet, but its documentation-range
	// addresses are not globally reachable, so the gateway always allows
	// exactly those two (and nothing else on the srv link).
	startGateway := func(t *testing.T, name string, exit4, exit6 netip.Addr, allow ...string) *netns.Proc {
		t.Helper()
		allow = append([]string{netip.PrefixFrom(srv4, 32).String(), netip.PrefixFrom(srv6, 128).String()}, allow...)
		p := gw.Start(t, name, "env", childEnv+"=gw",
			"GW_KEY="+gwKey.Hex(), "GW_PEER="+cliKey.Public().Hex(),
			"GW_EXIT4="+addrString(exit4), "GW_EXIT6="+addrString(exit6),
			"GW_ALLOW="+strings.Join(allow, ","), self)
		if err := p.WaitFor("READY", 15*time.Second); err != nil {
			t.Fatal(err)
		}
		cli.Run(t, "wg", "setconf", wgIf, conf)
		return p
	}

	t.Run("snat", func(t *testing.T) {
		gwProc := startGateway(t, "gw (snat)", exit4, exit6)

		if out := gw.Run(t, "ip", "-o", "addr", "show", "dev", "mrd0"); !strings.Contains(out, "10.200.0.1/16") || !strings.Contains(out, "2001:db8:200::1/64") {
			t.Errorf("mrd0 addresses:\n%s", out)
		}
		table := gw.Run(t, "nft", "list", "table", "inet", "meridian")
		for _, want := range []string{"snat ip to 203.0.113.1", "snat ip6 to 2001:db8:2::1"} {
			if !strings.Contains(table, want) {
				t.Errorf("nft table lacks %q:\n%s", want, table)
			}
		}
		for _, f := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
			if got := strings.TrimSpace(gw.Run(t, "cat", f)); got != "1" {
				t.Errorf("gw %s = %s, want 1", f, got)
			}
		}

		checkSource(t, cli, srv4, exit4)
		checkSource(t, cli, srv6, exit6)
		cli.Run(t, "ping", "-c", "1", "-W", "2", srv4.String()) // ICMP through NAT
		cli.Run(t, "ping", "-c", "1", "-W", "2", srv6.String())

		// The forward chain lets replies into the TUN but nothing
		// unsolicited, even from a neighbour that routes the pool to gw.
		srv.Run(t, "ip", "route", "add", "10.200.0.0/16", "via", gwSrvSide4.String())
		srv.Run(t, "ip", "route", "add", "2001:db8:200::/64", "via", gwSrvSide6.String())
		for _, dst := range []netip.Prefix{cliTun4, cliTun6} {
			if _, err := srv.Output("ping", "-c", "1", "-W", "0.5", dst.Addr().String()); err == nil {
				t.Errorf("unsolicited ping from srv reached the client at %s", dst.Addr())
			}
		}

		checkBulk(t, cli, srv4)
		checkBulk(t, cli, srv6)

		if err := gwProc.Stop(10 * time.Second); err != nil {
			t.Fatalf("gateway did not shut down cleanly: %v\n%s", err, gwProc.Output())
		}
		if _, err := gw.Output("ip", "link", "show", "mrd0"); err == nil {
			t.Error("mrd0 still exists after Close")
		}
		if out, err := gw.Output("nft", "list", "tables"); err != nil || strings.Contains(out, "meridian") {
			t.Errorf("nft table left after Close (err %v):\n%s", err, out)
		}
	})

	t.Run("masquerade", func(t *testing.T) {
		// A stale table from a crashed run: Open must replace it whole.
		gw.Run(t, "nft", "add table inet meridian; add chain inet meridian stale { type filter hook input priority 0; policy accept; }")
		startGateway(t, "gw (masquerade)", netip.Addr{}, netip.Addr{})
		if table := gw.Run(t, "nft", "list", "table", "inet", "meridian"); strings.Contains(table, "stale") || !strings.Contains(table, "masquerade") {
			t.Errorf("table after Open:\n%s", table)
		}
		checkSource(t, cli, srv4, gwSrvSide4)
		checkSource(t, cli, srv6, gwSrvSide6)
	})

	t.Run("egress policy", func(t *testing.T) {
		// A private network behind gw (10.200.9.0/24, fd00:9::/64 on srv),
		// and an HTTP server on gw itself, listening on all of its
		// addresses: on the srv link (198.51.100.1, where only the input
		// chain keeps clients off it: the deny list applies to forwarded
		// traffic), on the exit address and on the tunnel addresses.
		gwLink := gw.Run(t, "sh", "-c", "ip -o addr show to 198.51.100.1 | awk '{print $2}'")
		srvLink := srv.Run(t, "sh", "-c", "ip -o addr show to 198.51.100.2 | awk '{print $2}'")
		gw.Run(t, "ip", "addr", "add", "10.200.9.1/24", "dev", strings.TrimSpace(gwLink))
		gw.Run(t, "ip", "addr", "add", "fd00:9::1/64", "dev", strings.TrimSpace(gwLink), "nodad")
		srv.Run(t, "ip", "addr", "add", "10.200.9.2/24", "dev", strings.TrimSpace(srvLink))
		srv.Run(t, "ip", "addr", "add", "fd00:9::2/64", "dev", strings.TrimSpace(srvLink), "nodad")
		for _, r := range []string{"10.200.9.0/24", "fd00:9::/64", "10.200.0.1/32", "2001:db8:200::1/128", "203.0.113.1/32"} {
			cli.Run(t, "ip", "route", "add", r, "dev", wgIf)
		}
		onGw := gw.Start(t, "http server on gw", "env", childEnv+"=srv", self)
		if err := onGw.WaitFor("READY", 10*time.Second); err != nil {
			t.Fatal(err)
		}
		private := []string{"10.200.9.2", "fd00:9::2"}
		host := []string{"198.51.100.1", "2001:db8:3::1", "203.0.113.1", "10.200.0.1", "2001:db8:200::1"}

		gwProc := startGateway(t, "gw (egress default)", exit4, exit6)
		checkSource(t, cli, srv4, exit4) // the tunnel works, and public destinations are reachable
		checkSource(t, cli, srv6, exit6)
		for _, dst := range append(private, host...) {
			checkRefused(t, cli, dst)
		}
		// The userspace exit answers pings on the gateway's tunnel
		// addresses; so does TUN mode.
		cli.Run(t, "ping", "-c", "1", "-W", "2", "10.200.0.1")
		cli.Run(t, "ping", "-c", "1", "-W", "2", "2001:db8:200::1")
		// An address the host gains while the gateway runs (DHCP, an IPv6
		// privacy address, a floating IP) is the host's own at once: the
		// input hook sees every locally delivered packet, whatever the
		// address. The server on gw listens on all addresses.
		for _, a := range []string{"203.0.113.77", "2001:db8:77::1"} {
			args := []string{"ip", "addr", "add", a, "dev", "lo"}
			if strings.Contains(a, ":") {
				args = append(args, "nodad")
			}
			gw.Run(t, args...)
			cli.Run(t, "ip", "route", "add", a, "dev", wgIf)
			checkRefused(t, cli, a)
		}
		if err := gwProc.Stop(10 * time.Second); err != nil {
			t.Fatalf("gateway did not shut down cleanly: %v", err)
		}

		startGateway(t, "gw (egress allow)", exit4, exit6, "10.200.9.0/24", "fd00:9::/64", "198.51.100.1/32")
		checkSource(t, cli, netip.MustParseAddr("10.200.9.2"), exit4)
		checkSource(t, cli, netip.MustParseAddr("fd00:9::2"), exit6)
		// Allowing the host's own address lets clients reach it there,
		// unNATed (the input hook comes before any SNAT), and only there.
		checkSource(t, cli, gwSrvSide4, cliTun4.Addr())
		for _, dst := range []string{"2001:db8:3::1", "203.0.113.1", "10.200.0.1"} {
			checkRefused(t, cli, dst)
		}
	})

	if got := readFile(t, "/proc/sys/net/ipv4/ip_forward"); got != hostFwd4 {
		t.Errorf("host ip_forward changed: %s -> %s", hostFwd4, got)
	}
	if got := readFile(t, "/proc/sys/net/ipv6/conf/all/forwarding"); got != hostFwd6 {
		t.Errorf("host ipv6 forwarding changed: %s -> %s", hostFwd6, got)
	}
}

// checkSource fetches "/" from the server through the tunnel and checks the
// source address the server saw.
func checkSource(t *testing.T, cli *netns.NS, srv, want netip.Addr) {
	t.Helper()
	got := strings.TrimSpace(curl(t, cli, fmt.Sprintf("http://%s/", netip.AddrPortFrom(srv, srvPort))))
	if got != want.String() {
		t.Errorf("server %s saw the client as %q, want %s", srv, got, want)
	}
}

// checkRefused checks that an HTTP request from the client to dst is
// refused with a TCP reset (curl: Connection refused), as the egress policy
// refuses it, rather than timing out or getting through.
func checkRefused(t *testing.T, cli *netns.NS, dst string) {
	t.Helper()
	url := fmt.Sprintf("http://%s/", netip.AddrPortFrom(netip.MustParseAddr(dst), srvPort))
	out, err := cli.Output("curl", "-sS", "-v", "--fail", "--connect-timeout", "3", "--max-time", "5", url)
	switch {
	case err == nil:
		t.Errorf("client reached %s through the gateway; the egress policy should refuse it:\n%s", url, out)
	case !strings.Contains(err.Error(), "Connection refused"):
		t.Errorf("client request to %s failed, but not with a refusal (want a TCP reset: Connection refused): %v", url, err)
	}
}

// checkBulk moves bigSize bytes each way and compares SHA-256 sums, which
// exercises wireguard-go's TUN offloads (TSO/GRO batches, checksums) on
// both sides and the gateway's forwarding and NAT of full-size segments.
func checkBulk(t *testing.T, cli *netns.NS, srv netip.Addr) {
	t.Helper()
	dir := t.TempDir()
	base := fmt.Sprintf("http://%s", netip.AddrPortFrom(srv, srvPort))

	down := filepath.Join(dir, "down")
	curl(t, cli, "-o", down, fmt.Sprintf("%s/bytes?n=%d&seed=7", base, bigSize))
	gotSum := sha256.Sum256(readBytes(t, down))
	if want := sha256.Sum256(pattern(bigSize, 7)); gotSum != want {
		t.Errorf("download from %s: %d bytes, sha256 mismatch", srv, len(readBytes(t, down)))
	}

	up := filepath.Join(dir, "up")
	body := pattern(bigSize, 9)
	if err := os.WriteFile(up, body, 0o600); err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(body)
	got := strings.TrimSpace(curl(t, cli, "--data-binary", "@"+up, base+"/sum"))
	if got != hex.EncodeToString(want[:]) {
		t.Errorf("upload to %s: server sum %s, want %x", srv, got, want)
	}
}

// curl runs curl in the client namespace, retrying a few times: the first
// request also waits for the WireGuard handshake.
func curl(t *testing.T, cli *netns.NS, args ...string) string {
	t.Helper()
	var lastErr error
	for range 4 {
		out, err := cli.Output(append([]string{"curl", "-sS", "--fail", "--connect-timeout", "3", "--max-time", "20"}, args...)...)
		if err == nil {
			return out
		}
		lastErr = err
		time.Sleep(300 * time.Millisecond)
	}
	t.Fatal(lastErr)
	return ""
}

// gatewayChild is the gateway: TUN mode with a wireguard-go device and one
// peer, until SIGTERM.
func gatewayChild() int {
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "gw:", err); return 1 }
	exit4, _ := netip.ParseAddr(os.Getenv("GW_EXIT4"))
	exit6, _ := netip.ParseAddr(os.Getenv("GW_EXIT6"))
	var allow []netip.Prefix
	for _, s := range strings.FieldsFunc(os.Getenv("GW_ALLOW"), func(r rune) bool { return r == ',' }) {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return fail(err)
		}
		allow = append(allow, p)
	}
	tn, err := tunnet.Open(tunnet.Config{Addresses: gwTunAddrs, ExitIPv4: exit4, ExitIPv6: exit6, EgressAllow: allow})
	if err != nil {
		return fail(err)
	}
	defer tn.Close()
	dev := device.NewDevice(tn.Device(), conn.NewDefaultBind(), device.NewLogger(device.LogLevelVerbose, "gw: "))
	uapi := fmt.Sprintf("private_key=%s\nlisten_port=%d\npublic_key=%s\nallowed_ip=%s\nallowed_ip=%s\n",
		os.Getenv("GW_KEY"), gwListenPort, os.Getenv("GW_PEER"), cliTun4, cliTun6)
	if err := dev.IpcSet(uapi); err != nil {
		dev.Close()
		return fail(err)
	}
	if err := dev.Up(); err != nil {
		dev.Close()
		return fail(err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	fmt.Printf("READY %s batch=%d\n", tn.Name(), tn.Device().BatchSize())
	<-sig
	dev.Close()
	if err := tn.Close(); err != nil {
		return fail(err)
	}
	fmt.Println("CLOSED")
	return 0
}

// serverChild serves "/" (the client's address as seen here), "/bytes"
// (n pattern bytes) and "/sum" (SHA-256 of the request body).
func serverChild() int {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		ap, err := netip.ParseAddrPort(r.RemoteAddr)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprintln(w, ap.Addr().Unmap())
	})
	mux.HandleFunc("GET /bytes", func(w http.ResponseWriter, r *http.Request) {
		n, err1 := strconv.Atoi(r.URL.Query().Get("n"))
		seed, err2 := strconv.ParseUint(r.URL.Query().Get("seed"), 10, 64)
		if err1 != nil || err2 != nil || n < 0 || n > 64<<20 {
			http.Error(w, "bad n or seed", 400)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(n))
		io.Copy(w, bytes.NewReader(pattern(n, seed)))
	})
	mux.HandleFunc("POST /sum", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		if _, err := io.Copy(h, io.LimitReader(r.Body, 64<<20)); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprintf(w, "%x\n", h.Sum(nil))
	})
	ln, err := net.Listen("tcp", fmt.Sprintf(":%d", srvPort))
	if err != nil {
		fmt.Fprintln(os.Stderr, "srv:", err)
		return 1
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		srv.Close()
	}()
	fmt.Println("READY")
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "srv:", err)
		return 1
	}
	return 0
}

// pattern returns n deterministic pseudo-random bytes (incompressible, so
// no layer can shortcut them).
func pattern(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed)})
	r.Read(b)
	return b
}

func newKey(t *testing.T) wgkey.Key {
	t.Helper()
	k, err := wgkey.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func waitFile(t *testing.T, p *netns.Proc, path string) {
	t.Helper()
	for range 100 {
		if _, err := os.Stat(path); err == nil {
			return
		}
		select {
		case <-p.Done():
			t.Fatalf("%s exited before creating %s:\n%s", p.Path, path, p.Output())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("%s not created within 5 s:\n%s", path, p.Output())
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	return strings.TrimSpace(string(readBytes(t, path)))
}

func readBytes(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}
