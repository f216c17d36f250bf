package client

// TestTUNInNamespaces runs StartTUN end to end, in two network namespaces
// that the test creates and links:
//
//	cli  this test binary as a child (MERIDIAN_CLIENT_TEST_CHILD=tun):
//	 |     StartTUN on mrdc0 (10.200.0.2, 2001:db8:200::2); default routes
//	 |     via gw, as a LAN router would be
//	 | veth 192.0.2.2/24, 2001:db8:1::2/64 -- 192.0.2.1/24, 2001:db8:1::1/64
//	gw   the upstream wireguard-go binary from .bin
//	       (scripts/install-test-deps.sh), configured by `wg setconf`, on wgt*
//	       (10.200.0.1/24, 2001:db8:200::1/64); on lo the WireGuard endpoint
//	       addresses 198.51.100.1 and 2001:db8:2::1, and 203.0.113.1 and
//	       2001:db8:3::1, which cli reaches through the tunnel only while
//	       the full-tunnel routes are there; an HTTP server (this test binary
//	       as a child) that answers with the client address it saw
//
// gw has no link but the one to cli and no route out, so nothing leaves the
// two namespaces.

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/internal/netns"
	"github.com/meridian-vpn/meridian/wg"
)

// childEnv makes the test binary one of the namespace test's processes (see
// TestMain): "tun" (the client) or "srv" (the HTTP server).
const childEnv = "MERIDIAN_CLIENT_TEST_CHILD"

const (
	gwPort  = 51820
	srvPort = 8080
)

func TestTUNInNamespaces(t *testing.T) {
	netns.Require(t, "wg", "curl")
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

	cli := netns.New(t, "cli")
	gw := netns.New(t, "gw")
	cliIf, _ := netns.Link(t, cli, gw,
		[]netip.Prefix{netip.MustParsePrefix("192.0.2.2/24"), netip.MustParsePrefix("2001:db8:1::2/64")},
		[]netip.Prefix{netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("2001:db8:1::1/64")})
	cli.Run(t, "ip", "route", "add", "default", "via", "192.0.2.1")
	cli.Run(t, "ip", "-6", "route", "add", "default", "via", "2001:db8:1::1")
	for _, a := range []string{"198.51.100.1/32", "2001:db8:2::1/128", "203.0.113.1/32", "2001:db8:3::1/128"} {
		gw.Run(t, "ip", "addr", "add", a, "dev", "lo")
	}

	gwKey, cliKey := newKey(t), newKey(t)
	// The UAPI socket lives in the shared /var/run/wireguard: a unique name.
	wgIf := fmt.Sprintf("wgt%d", os.Getpid()%1000000)
	server := gw.Start(t, "gw wireguard-go", "env", "WG_PROCESS_FOREGROUND=1", wgGo, "-f", wgIf)
	waitFile(t, server, "/var/run/wireguard/"+wgIf+".sock")
	dir := t.TempDir()
	gwConf := filepath.Join(dir, "gw.conf")
	writeFile(t, gwConf, fmt.Sprintf("[Interface]\nPrivateKey = %s\nListenPort = %d\n\n[Peer]\nPublicKey = %s\nAllowedIPs = 10.200.0.2/32, 2001:db8:200::2/128\n",
		gwKey, gwPort, cliKey.Public()))
	gw.Run(t, "wg", "setconf", wgIf, gwConf)
	gw.Run(t, "ip", "addr", "add", "10.200.0.1/24", "dev", wgIf)
	gw.Run(t, "ip", "addr", "add", "2001:db8:200::1/64", "dev", wgIf, "nodad")
	gw.Run(t, "ip", "link", "set", wgIf, "up")
	web := gw.Start(t, "gw http server", "env", childEnv+"=srv", self)
	if err := web.WaitFor("READY", 10*time.Second); err != nil {
		t.Fatal(err)
	}

	// connect starts the client with a configuration for endpoint and
	// allowed, and returns it once its routes are in place.
	connect := func(t *testing.T, endpoint, allowed string) *netns.Proc {
		t.Helper()
		conf := filepath.Join(t.TempDir(), "cli.conf")
		writeFile(t, conf, fmt.Sprintf("[Interface]\nPrivateKey = %s\nAddress = 10.200.0.2/32, 2001:db8:200::2/128\n\n[Peer]\nPublicKey = %s\nEndpoint = %s\nAllowedIPs = %s\n",
			cliKey, gwKey.Public(), endpoint, allowed))
		p := cli.Start(t, "cli (StartTUN)", "env", childEnv+"=tun", "TUN_CONF="+conf, self)
		if err := p.WaitFor("READY", 10*time.Second); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// disconnect stops the client and checks that it left nothing behind.
	disconnect := func(t *testing.T, p *netns.Proc) {
		t.Helper()
		if err := p.Stop(10 * time.Second); err != nil || !strings.Contains(p.Output(), "CLOSED") {
			t.Fatalf("client did not shut down cleanly: %v\n%s", err, p.Output())
		}
		if _, err := cli.Output("ip", "link", "show", "mrdc0"); err == nil {
			t.Error("mrdc0 still exists after Close")
		}
		routes := cli.Run(t, "ip", "-4", "route") + cli.Run(t, "ip", "-6", "route")
		for _, gone := range []string{"mrdc0", "198.51.100.1", "2001:db8:2::1"} {
			if strings.Contains(routes, gone) {
				t.Errorf("routes after Close still mention %s:\n%s", gone, routes)
			}
		}
		for _, kept := range []string{"default via 192.0.2.1 dev " + cliIf, "default via 2001:db8:1::1 dev " + cliIf} {
			if !strings.Contains(routes, kept) {
				t.Errorf("routes after Close lack %q:\n%s", kept, routes)
			}
		}
		// Without the tunnel, the addresses on gw's lo are reached directly.
		checkSource(t, cli, "203.0.113.1", "192.0.2.2")
	}

	// The IPv6 endpoint comes first: the upstream wireguard-go pinned in
	// go.mod corrupts IPv6 destinations after it has sent to an IPv4 one
	// (conn/bind_std.go, StdNetBind.Send copies into a pooled net.UDPAddr
	// before resizing its IP; WireGuard/wireguard-go#135), so gw would
	// answer this handshake to the wrong address until a retry.
	t.Run("full tunnel, IPv6 endpoint", func(t *testing.T) {
		p := connect(t, "[2001:db8:2::1]:51820", "0.0.0.0/0, ::/0")
		if routes := cli.Run(t, "ip", "-6", "route"); !strings.Contains(routes, "2001:db8:2::1 via 2001:db8:1::1 dev "+cliIf) {
			t.Errorf("no host route for the endpoint:\n%s", routes)
		}
		checkSource(t, cli, "203.0.113.1", "10.200.0.2")
		checkSource(t, cli, "2001:db8:3::1", "2001:db8:200::2")
		disconnect(t, p)
	})

	t.Run("full tunnel", func(t *testing.T) {
		p := connect(t, "198.51.100.1:51820", "0.0.0.0/0, ::/0")
		routes := cli.Run(t, "ip", "-4", "route") + cli.Run(t, "ip", "-6", "route")
		for _, want := range []string{
			"0.0.0.0/1 dev mrdc0", "128.0.0.0/1 dev mrdc0", "::/1 dev mrdc0", "8000::/1 dev mrdc0",
			"198.51.100.1 via 192.0.2.1 dev " + cliIf, // the endpoint, around the tunnel
			"default via 192.0.2.1 dev " + cliIf,      // left alone
		} {
			if !strings.Contains(routes, want) {
				t.Errorf("routes lack %q:\n%s", want, routes)
			}
		}
		checkSource(t, cli, "10.200.0.1", "10.200.0.2")
		checkSource(t, cli, "203.0.113.1", "10.200.0.2")
		checkSource(t, cli, "2001:db8:3::1", "2001:db8:200::2")
		disconnect(t, p)
	})

	t.Run("split tunnel", func(t *testing.T) {
		p := connect(t, "198.51.100.1:51820", "10.200.0.0/24, 2001:db8:3::/64")
		routes := cli.Run(t, "ip", "-4", "route") + cli.Run(t, "ip", "-6", "route")
		if !strings.Contains(routes, "10.200.0.0/24 dev mrdc0") || !strings.Contains(routes, "2001:db8:3::/64 dev mrdc0") ||
			strings.Contains(routes, "198.51.100.1") {
			t.Errorf("routes:\n%s", routes)
		}
		checkSource(t, cli, "10.200.0.1", "10.200.0.2")
		checkSource(t, cli, "2001:db8:3::1", "2001:db8:200::2")
		checkSource(t, cli, "203.0.113.1", "192.0.2.2") // not in AllowedIPs
		disconnect(t, p)
	})
}

// checkSource fetches "/" from the HTTP server at host through whatever
// route cli has, and checks the client address the server saw. The first
// request also waits for the WireGuard handshake, so it is retried.
func checkSource(t *testing.T, cli *netns.NS, host, want string) {
	t.Helper()
	url := fmt.Sprintf("http://%s/", net.JoinHostPort(host, fmt.Sprint(srvPort)))
	var out string
	var err error
	for range 4 {
		if out, err = cli.Output("curl", "-sS", "--fail", "--connect-timeout", "3", "--max-time", "10", url); err == nil {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(out); got != want {
		t.Errorf("%s saw the client as %q, want %s", url, got, want)
	}
}

func TestTUNRoutes(t *testing.T) {
	cfg := &wg.Config{
		Addresses: []netip.Prefix{netip.MustParsePrefix("10.200.0.2/24"), netip.MustParsePrefix("2001:db8:200::2/128")},
		Peers: []wg.PeerConfig{
			{AllowedIPs: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("10.200.0.0/24"), netip.MustParsePrefix("2001:db8:200::5/64")}},
			{AllowedIPs: []netip.Prefix{netip.MustParsePrefix("::/0"), netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("198.51.100.7/32")}},
		},
	}
	got := fmt.Sprint(tunRoutes(cfg))
	// 10.200.0.0/24 is the kernel's already: the address's own prefix.
	if want := "[0.0.0.0/1 128.0.0.0/1 2001:db8:200::/64 ::/1 8000::/1 198.51.100.7/32]"; got != want {
		t.Errorf("tunRoutes = %s, want %s", got, want)
	}
	uapi := "private_key=00\nlisten_port=1\npublic_key=aa\nendpoint=198.51.100.1:51820\npublic_key=bb\npublic_key=cc\nendpoint=[2001:db8:2::1]:51820\n"
	if got, want := fmt.Sprint(endpoints(uapi)), "[198.51.100.1 2001:db8:2::1]"; got != want {
		t.Errorf("endpoints = %s, want %s", got, want)
	}
}

// Without CAP_NET_ADMIN, StartTUN says what is missing. As root, the test
// runs itself again as nobody.
func TestStartTUNWithoutPrivilege(t *testing.T) {
	if err := createTUNError("mrdc0", syscall.EPERM); !strings.Contains(err.Error(), "--tun needs CAP_NET_ADMIN: run as root or use --socks5") {
		t.Errorf("EPERM: %v", err)
	}
	if os.Geteuid() == 0 {
		netns.RunAsNobody(t)
		return
	}
	ck, pk := newKey(t), newKey(t)
	cfg := &wg.Config{
		PrivateKey: ck,
		Addresses:  []netip.Prefix{netip.MustParsePrefix("10.200.0.2/32")},
		Peers:      []wg.PeerConfig{{PublicKey: pk.Public(), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.200.0.0/24")}}},
	}
	tn, err := StartTUN(cfg, TUNOptions{Logger: discardLogger()})
	if err == nil {
		tn.Close()
		t.Fatal("StartTUN succeeded without root")
	}
	want := "client: --tun needs CAP_NET_ADMIN: run as root or use --socks5"
	if _, lerr := exec.LookPath("ip"); lerr != nil {
		want = "client: --tun needs the ip tool: apt-get install iproute2"
	}
	if err.Error() != want {
		t.Fatalf("StartTUN without root: %q, want %q", err, want)
	}
}

// tunChild is the client of TestTUNInNamespaces: StartTUN with the
// configuration in $TUN_CONF until SIGTERM.
func tunChild() int {
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "tun:", err); return 1 }
	b, err := os.ReadFile(os.Getenv("TUN_CONF"))
	if err != nil {
		return fail(err)
	}
	cfg, err := wg.ParseConfig(b)
	if err != nil {
		return fail(err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	tn, err := StartTUN(cfg, TUNOptions{})
	if err != nil {
		return fail(err)
	}
	fmt.Println("READY", tn.Name())
	<-sig
	if err := tn.Close(); err != nil {
		return fail(err)
	}
	fmt.Println("CLOSED")
	return 0
}

// serverChild serves "/" with the client address it saw, until SIGTERM.
func serverChild() int {
	ln, err := net.Listen("tcp", fmt.Sprintf(":%d", srvPort))
	if err != nil {
		fmt.Fprintln(os.Stderr, "srv:", err)
		return 1
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ap, _ := netip.ParseAddrPort(r.RemoteAddr)
		io.WriteString(w, ap.Addr().Unmap().String()+"\n")
	})}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		srv.Close()
	}()
	fmt.Println("READY")
	srv.Serve(ln)
	return 0
}

func newKey(t *testing.T) wg.Key {
	t.Helper()
	k, err := wg.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// waitFile waits for p to create path.
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
