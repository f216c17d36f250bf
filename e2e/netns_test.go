package e2e

// Namespace end-to-end tests: the real meridian binary, the upstream
// wireguard-go client configured by wg-quick/wg, and network namespaces that
// the test creates and links:
//
//	host (this process's namespace): `meridian control --listen 10.200.254.1:0`,
//	 |     HTTPS with its own CA; the admin CLI (`--data DIR`)
//	 | veth 10.200.254.1/30 -- 10.200.254.2/30 ("mgmt", IPv4 only)
//	gw   `meridian gateway --mode tun|userspace`, joined with a join token
//	 |     that pins the control CA; no default route; TUN mode SNATs to
//	 |     203.0.113.1 and 2001:db8:ee::1 (on lo); an HTTP server of its own
//	 |     (a service on the gateway host that clients must not reach)
//	 |\ veth 192.0.2.1/24, 2001:db8:1::1/64 -- 192.0.2.2/24, 2001:db8:1::2/64
//	 | cli  wireguard-go + `wg setconf` with the config from `device add`
//	 | veth 198.51.100.1/24, 2001:db8:2::1/64 -- 198.51.100.2/24, 2001:db8:2::2/64
//	srv  an HTTP server (this test binary as a child) that answers with the
//	       source address it saw; routes the TUN exit block back to gw
//
// NETWORK SAFETY: the host namespace gets one veth end with 10.200.254.1/30
// (netns.Link refuses it if a host route covers that), runs only the control
// server and the admin CLI, which talk to 10.200.254.1 itself and answer
// the gateway at 10.200.254.2. A guard table in gw drops anything gw would
// forward onto the mgmt link, so no client packet can reach the host
// namespace (whose default route leads outside) even if the egress policy
// under test regressed; the test checks that the guard never fired.
// WireGuard runs only inside cli and gw.

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/internal/netns"
	"github.com/meridian-vpn/meridian/wg"
	_ "modernc.org/sqlite"
)

// netnsChildEnv makes the test binary an HTTP server child (see TestMain).
const netnsChildEnv = "MERIDIAN_E2E_NETNS_CHILD"

// TestMain lets the test binary double as the HTTP server that the
// namespace tests start inside their namespaces, and removes the meridian
// binary they built.
func TestMain(m *testing.M) {
	switch os.Getenv(netnsChildEnv) {
	case "":
	case "srv":
		os.Exit(nsServerChild())
	default:
		fmt.Fprintf(os.Stderr, "unknown %s=%q\n", netnsChildEnv, os.Getenv(netnsChildEnv))
		os.Exit(2)
	}
	code := m.Run()
	if nsBinDir != "" {
		os.RemoveAll(nsBinDir)
	}
	os.Exit(code)
}

const (
	nsSrvPort     = 8080
	nsGwPort      = 51820
	nsRevokeLimit = 5 * time.Second
)

var (
	nsMgmtHost = netip.MustParsePrefix("10.200.254.1/30")
	nsMgmtGw   = netip.MustParsePrefix("10.200.254.2/30")
	nsSrv4     = netip.MustParseAddr("198.51.100.2")
	nsSrv6     = netip.MustParseAddr("2001:db8:2::2")
	nsGwSrv4   = netip.MustParseAddr("198.51.100.1") // gw on the srv link: what a host socket dials from
	nsGwSrv6   = netip.MustParseAddr("2001:db8:2::1")
	nsExit4    = netip.MustParseAddr("203.0.113.1") // TUN mode SNAT addresses
	nsExit6    = netip.MustParseAddr("2001:db8:ee::1")
)

// nsEgressAllow lets clients reach the server, which stands in for the
// internet: its documentation-range addresses are not globally reachable,
// so the egress policy denies them unless allowed. Exactly those two, so
// that gw's own address on the same link stays out of reach.
var nsEgressAllow = []string{"--egress-allow", netip.PrefixFrom(nsSrv4, 32).String(), "--egress-allow", netip.PrefixFrom(nsSrv6, 128).String()}

var (
	nsBinOnce sync.Once
	nsBinDir  string
	nsBinPath string
	nsBinErr  error
)

// meridianBinary builds cmd/meridian once per test binary.
func meridianBinary(t *testing.T) string {
	t.Helper()
	nsBinOnce.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		if nsBinDir, nsBinErr = os.MkdirTemp("", "meridian-e2e-"); nsBinErr != nil {
			return
		}
		nsBinPath = filepath.Join(nsBinDir, "meridian")
		cmd := exec.Command(goTool, "build", "-o", nsBinPath, "./cmd/meridian")
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			nsBinErr = fmt.Errorf("go build ./cmd/meridian: %v\n%s", err, out)
		}
	})
	if nsBinErr != nil {
		t.Fatal(nsBinErr)
	}
	return nsBinPath
}

func TestNetnsGatewayTUN(t *testing.T)       { runNetnsGateway(t, api.TUN) }
func TestNetnsGatewayUserspace(t *testing.T) { runNetnsGateway(t, api.Userspace) }

var nsWgSeq atomic.Int32

func runNetnsGateway(t *testing.T, mode api.GatewayMode) {
	netns.Require(t, "nft", "wg", "wg-quick", "curl")
	if mode == api.TUN {
		netns.Require(t, "conntrack")
	}
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
	bin := meridianBinary(t)
	host := netns.Host()

	// Topology.
	gw := netns.New(t, "gw")
	cli := netns.New(t, "cli")
	srv := netns.New(t, "srv")
	_, mgmt := netns.Link(t, host, gw, []netip.Prefix{nsMgmtHost}, []netip.Prefix{nsMgmtGw})
	netns.Link(t, cli, gw,
		[]netip.Prefix{nsPfx("192.0.2.2/24"), nsPfx("2001:db8:1::2/64")},
		[]netip.Prefix{nsPfx("192.0.2.1/24"), nsPfx("2001:db8:1::1/64")})
	netns.Link(t, gw, srv,
		[]netip.Prefix{nsPfx("198.51.100.1/24"), nsPfx("2001:db8:2::1/64")},
		[]netip.Prefix{nsPfx("198.51.100.2/24"), nsPfx("2001:db8:2::2/64")})
	for _, fam := range []string{"-4", "-6"} {
		if out := gw.Run(t, "ip", fam, "route", "show", "default"); strings.TrimSpace(out) != "" {
			t.Fatalf("gw has a default route: %s", out)
		}
	}
	gw.Run(t, "nft", fmt.Sprintf(`add table inet e2e_guard
add chain inet e2e_guard forward { type filter hook forward priority 10; policy accept; }
add rule inet e2e_guard forward oifname %q counter drop`, mgmt))
	t.Cleanup(func() {
		if out, err := gw.Output("nft", "list", "chain", "inet", "e2e_guard", "forward"); err != nil || !strings.Contains(out, "packets 0 bytes 0") {
			t.Errorf("the guard in gw dropped packets headed for the host namespace (or could not be read: %v):\n%s", err, out)
		}
	})
	if mode == api.TUN {
		gw.Run(t, "ip", "addr", "add", nsExit4.String()+"/32", "dev", "lo")
		gw.Run(t, "ip", "addr", "add", nsExit6.String()+"/128", "dev", "lo")
		srv.Run(t, "ip", "route", "add", "203.0.113.0/24", "via", nsGwSrv4.String())
		srv.Run(t, "ip", "route", "add", "2001:db8:ee::/64", "via", nsGwSrv6.String())
	}
	var srvProc *netns.Proc
	for _, ns := range []*netns.NS{srv, gw} {
		p := ns.Start(t, "http server in "+ns.Name, "env", netnsChildEnv+"=srv", self)
		if err := p.WaitFor("READY", 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if ns == srv {
			srvProc = p
		}
	}

	// Control server on the host, HTTPS on the mgmt address.
	data := t.TempDir()
	control := host.Start(t, "control", bin, "control", "--data", data, "--listen", netip.AddrPortFrom(nsMgmtHost.Addr(), 0).String(),
		"--ipv4-pool", "10.200.0.0/24", "--ipv6-pool", "2001:db8:200::/64")
	controlURL := nsWaitFile(t, control, filepath.Join(data, "control.url"))
	if !strings.HasPrefix(controlURL, "https://"+nsMgmtHost.Addr().String()+":") {
		t.Fatalf("control.url = %q, want https on %s", controlURL, nsMgmtHost.Addr())
	}
	admin := func(args ...string) string {
		t.Helper()
		return host.Run(t, append([]string{bin}, append(args, "--data", data)...)...)
	}

	// Join a gateway with a token, through HTTPS pinned by the token alone.
	var tok api.JoinToken
	nsDecode(t, admin("gateway", "token", "--json"), &tok)
	gwName := "gw-" + string(mode)
	gwState := t.TempDir()
	gwArgs := []string{bin, "gateway", "--ntp-source", nsNTPSource, "--control", controlURL, "--join-token", tok.Token, "--state", gwState,
		"--metrics", "127.0.0.1:9586", "--name", gwName, "--mode", string(mode), "--listen-port", fmt.Sprint(nsGwPort), "--endpoint", fmt.Sprintf("192.0.2.1:%d", nsGwPort)}
	gwArgs = append(gwArgs, nsEgressAllow...)
	if mode == api.TUN {
		gwArgs = append(gwArgs, "--exit-ipv4", nsExit4.String(), "--exit-ipv6", nsExit6.String())
	}
	gateway := gw.Start(t, "gateway", gwArgs...)
	if err := gateway.WaitFor("following control server", 15*time.Second); err != nil {
		t.Fatal(err)
	}

	// A user, a device, and its config as a WireGuard user would get it.
	admin("user", "add", "alice")
	conf := filepath.Join(t.TempDir(), "laptop.conf")
	added := admin("device", "add", "--user", "alice", "--name", "laptop", "--out", conf)
	m := regexp.MustCompile(`added device (\d+) `).FindStringSubmatch(added)
	if m == nil {
		t.Fatalf("device add printed no device ID:\n%s", added)
	}
	deviceID := m[1]
	confText := nsReadFile(t, conf)
	if !strings.Contains(confText, fmt.Sprintf("Endpoint = 192.0.2.1:%d", nsGwPort)) {
		t.Errorf("config does not point at the gateway's endpoint:\n%s", confText)
	}

	// The standard client: upstream wireguard-go, wg-quick strip, wg setconf.
	// Its UAPI socket lives in the shared /var/run/wireguard: unique name.
	wgIf := fmt.Sprintf("wge%d%d", os.Getpid()%100000, nsWgSeq.Add(1))
	client := cli.Start(t, "cli wireguard-go", "env", "WG_PROCESS_FOREGROUND=1", wgGo, "-f", wgIf)
	nsWaitSocket(t, client, "/var/run/wireguard/"+wgIf+".sock")
	stripped := filepath.Join(t.TempDir(), "stripped.conf")
	nsWriteFile(t, stripped, cli.Run(t, "wg-quick", "strip", conf))
	cli.Run(t, "wg", "setconf", wgIf, stripped)
	var tunAddrs []netip.Prefix
	for _, line := range strings.Split(confText, "\n") {
		k, v, _ := strings.Cut(line, "=")
		switch strings.TrimSpace(k) {
		case "Address":
			for _, f := range strings.Split(v, ",") {
				tunAddrs = append(tunAddrs, nsPfx(strings.TrimSpace(f)))
			}
		case "MTU":
			cli.Run(t, "ip", "link", "set", wgIf, "mtu", strings.TrimSpace(v))
		}
	}
	if len(tunAddrs) != 2 {
		t.Fatalf("config has addresses %v, want one IPv4 and one IPv6:\n%s", tunAddrs, confText)
	}
	for _, p := range tunAddrs {
		args := []string{"ip", "addr", "add", p.String(), "dev", wgIf}
		if p.Addr().Is6() {
			args = append(args, "nodad")
		}
		cli.Run(t, args...)
	}
	cli.Run(t, "ip", "link", "set", wgIf, "up")
	// The srv networks through the tunnel, and the mgmt link too, so that
	// the tests below try to reach the control server and gw through it.
	for _, r := range []string{"198.51.100.0/24", "2001:db8:2::/64", nsMgmtHost.Masked().String()} {
		cli.Run(t, "ip", "route", "add", r, "dev", wgIf)
	}

	// Through the tunnel, the server sees the gateway's exit address: the
	// SNAT address in TUN mode, gw's own address on the srv link in
	// userspace mode (the exit dials from host sockets).
	want4, want6 := nsGwSrv4, nsGwSrv6
	if mode == api.TUN {
		want4, want6 = nsExit4, nsExit6
	}
	nsCheckSource(t, cli, nsSrv4, want4)
	nsCheckSource(t, cli, nsSrv6, want6)

	t.Run("gateway list", func(t *testing.T) {
		var gws []api.Gateway
		nsDecode(t, admin("gateway", "list", "--json"), &gws)
		for _, g := range gws {
			if g.Name == gwName {
				if !g.Healthy || g.Mode != mode || g.Endpoint != fmt.Sprintf("192.0.2.1:%d", nsGwPort) {
					t.Errorf("gateway list: %+v, want healthy, mode %s, endpoint 192.0.2.1:%d", g, mode, nsGwPort)
				}
				return
			}
		}
		t.Errorf("gateway %q not in gateway list: %+v", gwName, gws)
	})

	// The egress policy keeps clients off the control server (10/8) and off
	// services on the gateway host itself, here on its address on the srv
	// link, next to the allowed server.
	t.Run("control server unreachable from the tunnel", func(t *testing.T) {
		nsCheckRefused(t, cli, strings.Replace(controlURL, "https://", "http://", 1)+"/")
	})
	t.Run("gateway host unreachable from the tunnel", func(t *testing.T) {
		nsCheckRefused(t, cli, fmt.Sprintf("http://%s/", netip.AddrPortFrom(nsGwSrv4, nsSrvPort)))
		nsCheckRefused(t, cli, fmt.Sprintf("http://%s/", netip.AddrPortFrom(nsGwSrv6, nsSrvPort)))
	})

	// No duty, no data: this gateway carries no duties (no place, no
	// profile), so the address the client connected from must appear in
	// nothing the system wrote: database (with WAL), gateway state, logs,
	// metrics. Nor may the device's key appear in logs or metrics.
	t.Run("no duty, no data", func(t *testing.T) {
		// Wait until what could hold the address has been written: a load
		// report made after the client's handshake has reached the control
		// server, and the gateway has run a whole session round since now.
		gwRounds := func() int {
			out, err := gw.Output("curl", "-sS", "http://127.0.0.1:9586/metrics")
			if err != nil {
				t.Fatalf("gateway metrics: %v", err)
			}
			for _, line := range strings.Split(out, "\n") {
				if v, ok := strings.CutPrefix(line, "meridian_gateway_session_rounds_total "); ok {
					n, _ := strconv.ParseFloat(v, 64)
					return int(n)
				}
			}
			t.Fatalf("gateway metrics without meridian_gateway_session_rounds_total:\n%s", out)
			return 0
		}
		wantRounds := gwRounds() + 2
		eventually(t, 30*time.Second, "a load report with the client and a whole session round", func() error {
			var gws []api.Gateway
			nsDecode(t, admin("gateway", "list", "--json"), &gws)
			for _, g := range gws {
				if g.Name == gwName && g.Load.ActivePeers < 1 {
					return fmt.Errorf("the last load report has %d active peers", g.Load.ActivePeers)
				}
			}
			if n := gwRounds(); n < wantRounds {
				return fmt.Errorf("%d session rounds, want %d", n, wantRounds)
			}
			return nil
		})
		var pub string
		for _, line := range strings.Split(confText, "\n") {
			if k, v, ok := strings.Cut(line, "="); ok && strings.TrimSpace(k) == "PrivateKey" {
				k, err := wg.ParseKey(strings.TrimSpace(v))
				if err != nil {
					t.Fatal(err)
				}
				pub = k.Public().String()
			}
		}
		metricsControl, err := host.Output("curl", "-sS", "--insecure", controlURL+"/metrics")
		if err != nil {
			t.Fatal(err)
		}
		metricsGateway, err := gw.Output("curl", "-sS", "http://127.0.0.1:9586/metrics")
		if err != nil || !strings.Contains(metricsGateway, "meridian_gateway_peers") {
			t.Fatalf("gateway metrics: %v\n%s", err, metricsGateway)
		}
		written := map[string]string{
			"control log": control.Output(), "gateway log": gateway.Output(),
			"control metrics": metricsControl, "gateway metrics": metricsGateway,
		}
		for _, dir := range []string{data, gwState} {
			filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					b, _ := os.ReadFile(path)
					written[path] = string(b)
				}
				return nil
			})
		}
		for what, text := range written {
			for _, secret := range []string{"192.0.2.2", "2001:db8:1::2"} {
				if strings.Contains(text, secret) {
					t.Errorf("%s holds the client's connecting address %s", what, secret)
				}
			}
			if !strings.HasPrefix(what, "/") && strings.Contains(text, pub) {
				t.Errorf("%s names the device's public key", what)
			}
		}
		if len(written) < 8 {
			t.Fatalf("scanned only %d sources; the data directories look empty", len(written))
		}
		nsNoUsageColumns(t, filepath.Join(data, "control", "meridian.db"))
		nsNoUsageColumns(t, filepath.Join(data, "control", "meridian-sessions.db"))
	})

	// A flow the device holds open when it is revoked: the server streams
	// to it until the server's writes fail.
	cli.Start(t, "held flow", "curl", "-sS", "-N", "-o", "/dev/null", fmt.Sprintf("http://%s/hold", netip.AddrPortFrom(nsSrv4, nsSrvPort)))
	if err := srvProc.WaitFor("HOLD OPEN", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if mode == api.TUN {
		// The flow is in gw's connection tracking, under the device's
		// tunnel address (the original source).
		if n := nsConntrack(t, gw, "-s", tunAddrs[0].Addr()); n == 0 {
			t.Fatalf("no conntrack entry from %s while the device holds a flow", tunAddrs[0].Addr())
		}
	}

	// Revoking the device cuts it off within seconds.
	admin("device", "revoke", deviceID)
	revoked := time.Now()
	url := fmt.Sprintf("http://%s/", netip.AddrPortFrom(nsSrv4, nsSrvPort))
	for {
		_, err := cli.Output("curl", "-sS", "--fail", "--connect-timeout", "1", "--max-time", "1", url)
		if err != nil {
			t.Logf("revoked device's request failed %v after the revoke", time.Since(revoked).Round(10*time.Millisecond))
			break
		}
		if time.Since(revoked) > nsRevokeLimit {
			t.Fatalf("revoked device still reaches %s %v after the revoke", url, nsRevokeLimit)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out, err := cli.Output("curl", "-sS", "--fail", "--connect-timeout", "2", "--max-time", "2", url); err == nil {
		t.Errorf("revoked device reached %s again: %s", url, out)
	}
	// The flow it held is gone too: the server's writes fail (a reset
	// from gw), rather than vanishing into a tunnel that no longer has the
	// peer until the server's own retransmissions give up.
	if err := srvProc.WaitFor("HOLD CLOSED", nsRevokeLimit); err != nil {
		t.Errorf("the revoked device's flow still open at the server: %v", err)
	}
	if mode == api.TUN {
		for _, p := range tunAddrs {
			for _, dir := range []string{"-s", "-d"} {
				if n := nsConntrack(t, gw, dir, p.Addr()); n != 0 {
					t.Errorf("%d conntrack entries with %s %s left after the revoke", n, dir, p.Addr())
				}
			}
		}
	}
	if err := gateway.Stop(10 * time.Second); err != nil {
		t.Errorf("gateway did not stop cleanly on SIGTERM: %v", err)
	}
	if mode == api.TUN {
		if out, err := gw.Output("nft", "list", "tables"); err != nil || strings.Contains(out, "meridian") {
			t.Errorf("nft table left behind by the gateway (err %v):\n%s", err, out)
		}
	}
}

// nsConntrack counts the connection tracking entries in ns whose original
// source (dir "-s") or destination ("-d") is a.
func nsConntrack(t *testing.T, ns *netns.NS, dir string, a netip.Addr) int {
	t.Helper()
	fam := "ipv4"
	if a.Is6() {
		fam = "ipv6"
	}
	out, err := ns.Output("conntrack", "-L", "-f", fam, dir, a.String())
	if err != nil {
		t.Fatal(err)
	}
	return len(strings.Fields(strings.ReplaceAll(out, " ", "_"))) // one line per entry
}

// nsCheckSource fetches "/" from the server through the tunnel and checks
// the source address the server saw. The first request also waits for the
// handshake, so it is retried a few times.
func nsCheckSource(t *testing.T, cli *netns.NS, srv, want netip.Addr) {
	t.Helper()
	url := fmt.Sprintf("http://%s/", netip.AddrPortFrom(srv, nsSrvPort))
	var lastErr error
	for range 4 {
		out, err := cli.Output("curl", "-sS", "--fail", "--connect-timeout", "3", "--max-time", "10", url)
		if err == nil {
			if got := strings.TrimSpace(out); got != want.String() {
				t.Errorf("server %s saw the client as %q, want %s", srv, got, want)
			}
			return
		}
		lastErr = err
		time.Sleep(300 * time.Millisecond)
	}
	t.Fatal(lastErr)
}

// nsCheckRefused checks that a request from the client is refused with a
// TCP reset (both data planes refuse TCP to denied destinations so), rather
// than getting through or timing out.
func nsCheckRefused(t *testing.T, cli *netns.NS, url string) {
	t.Helper()
	out, err := cli.Output("curl", "-sS", "-v", "--connect-timeout", "3", "--max-time", "5", url)
	switch {
	case err == nil:
		t.Errorf("client reached %s through the gateway; the egress policy should refuse it:\n%s", url, out)
	case !strings.Contains(err.Error(), "Connection refused"):
		t.Errorf("request to %s failed, but not with a refusal (want a TCP reset: Connection refused): %v", url, err)
	}
}

// nsServerChild serves "/" with the client's address as seen here.
func nsServerChild() int {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		ap, err := netip.ParseAddrPort(r.RemoteAddr)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, ap.Addr().Unmap())
	})
	// /hold streams a byte every 100 ms until a write fails, and says so,
	// so that a test sees when the server learns that the flow has ended.
	mux.HandleFunc("GET /hold", func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		fmt.Println("HOLD OPEN")
		for {
			if _, err := w.Write([]byte{'.'}); err != nil {
				fmt.Println("HOLD CLOSED")
				return
			}
			if err := rc.Flush(); err != nil {
				fmt.Println("HOLD CLOSED")
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	ln, err := net.Listen("tcp", fmt.Sprintf(":%d", nsSrvPort))
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

// nsWaitFile waits for a file that p writes (atomically) and returns its
// trimmed content.
func nsWaitFile(t *testing.T, p *netns.Proc, path string) string {
	t.Helper()
	for range 200 {
		if b, err := os.ReadFile(path); err == nil {
			return strings.TrimSpace(string(b))
		}
		select {
		case <-p.Done():
			t.Fatalf("%s exited before writing %s:\n%s", p.Path, path, p.Output())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("%s not written within 10 s:\n%s", path, p.Output())
	return ""
}

func nsWaitSocket(t *testing.T, p *netns.Proc, path string) {
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

func nsDecode(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("decoding %T: %v\n%s", v, err, s)
	}
}

func nsPfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func nsReadFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func nsWriteFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// nsNoUsageColumns fails if any table that could link a device to a time
// of use (sessions, handshake or last-seen times) holds a row: on a
// gateway without duties such tables must stay empty.
func nsNoUsageColumns(t *testing.T, file string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+file+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT m.name, p.name FROM sqlite_master m JOIN pragma_table_info(m.name) p WHERE m.type = 'table'`)
	if err != nil {
		t.Fatal(err)
	}
	suspect := map[string]bool{}
	n := 0
	for rows.Next() {
		var table, col string
		if err := rows.Scan(&table, &col); err != nil {
			t.Fatal(err)
		}
		n++
		for _, bad := range []string{"session", "handshake", "last_seen", "endpoint_ip", "connected_from"} {
			if strings.Contains(table, bad) || strings.Contains(col, bad) {
				suspect[table] = true
			}
		}
	}
	rows.Close()
	if n == 0 {
		t.Fatal("no tables read")
	}
	for table := range suspect {
		var count int
		if err := db.QueryRow(`SELECT count(*) FROM "` + table + `"`).Scan(&count); err != nil {
			t.Fatal(err)
		}
		if count > 0 {
			t.Errorf("table %s holds %d row(s) of per-device use on a gateway without duties", table, count)
		}
	}
}

// nsNTPSource is the only NTP source the gateways of these tests may
// query: loopback inside their own namespace. A gateway the tests place in
// India would otherwise follow its clock-sync duty to NIC's servers.
const nsNTPSource = "127.0.0.1:123"
