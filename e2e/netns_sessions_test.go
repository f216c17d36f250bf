package e2e

// TestNetnsSessionAttributionTUN: exit attribution with a TUN-mode gateway,
// in namespaces the test creates, with the real meridian binary and the
// upstream wireguard-go client:
//
//	host  `meridian control --listen 10.200.253.1:0`; the admin CLI
//	 | veth 10.200.253.1/30 -- 10.200.253.2/30 (mgmt, IPv4 only)
//	gw    `meridian gateway --mode tun`, SNAT to 203.0.113.1 and
//	 |      2001:db8:ee::1 (on lo), no default route, a guard that drops
//	 |      anything forwarded onto the mgmt link
//	 |\ veth 192.0.2.1/24 -- 192.0.2.2/24
//	 | cli  wireguard-go configured by wg from the config of `device add`
//	 | veth 198.51.100.1/24, 2001:db8:2::1/64 -- 198.51.100.2/24, 2001:db8:2::2/64
//	srv   this test binary as an HTTP server that answers with the address
//	        and port it was reached from
//
// The gateway first stands in Germany (no duty): its clients' connections
// leave from ports outside every block. Moved to India (cert-in-2022), it
// records the session, and the port the server sees leads, through the
// stored record, to the device. NETWORK SAFETY as in netns_test.go.

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/internal/netns"
	"github.com/meridian-vpn/meridian/portblock"
	"github.com/meridian-vpn/meridian/store"
	"github.com/meridian-vpn/meridian/wg"
)

// portServerEnv makes the test binary the port-reporting HTTP server of
// the sessions namespace test. It is checked before TestMain runs.
const portServerEnv = "MERIDIAN_E2E_PORT_SERVER"

func init() {
	if os.Getenv(portServerEnv) != "" {
		os.Exit(portServerChild())
	}
}

// portServerChild serves "/" with the address and port it was reached
// from, on nsSrvPort of every address.
func portServerChild() int {
	ln, err := net.Listen("tcp", fmt.Sprintf(":%d", nsSrvPort))
	if err != nil {
		fmt.Fprintln(os.Stderr, "srv:", err)
		return 1
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ap, err := netip.ParseAddrPort(r.RemoteAddr)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	})}
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

var (
	nsSessMgmtHost = netip.MustParsePrefix("10.200.253.1/30")
	nsSessMgmtGw   = netip.MustParsePrefix("10.200.253.2/30")
)

func TestNetnsSessionAttributionTUN(t *testing.T) {
	netns.Require(t, "nft", "conntrack", "wg", "wg-quick", "curl")
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

	gw := netns.New(t, "sgw")
	cli := netns.New(t, "scli")
	srv := netns.New(t, "ssrv")
	_, mgmt := netns.Link(t, host, gw, []netip.Prefix{nsSessMgmtHost}, []netip.Prefix{nsSessMgmtGw})
	netns.Link(t, cli, gw, []netip.Prefix{nsPfx("192.0.2.2/24")}, []netip.Prefix{nsPfx("192.0.2.1/24")})
	netns.Link(t, gw, srv,
		[]netip.Prefix{nsPfx("198.51.100.1/24"), nsPfx("2001:db8:2::1/64")},
		[]netip.Prefix{nsPfx("198.51.100.2/24"), nsPfx("2001:db8:2::2/64")})
	gw.Run(t, "nft", fmt.Sprintf(`add table inet e2e_guard
add chain inet e2e_guard forward { type filter hook forward priority 10; policy accept; }
add rule inet e2e_guard forward oifname %q counter drop`, mgmt))
	t.Cleanup(func() {
		if out, err := gw.Output("nft", "list", "chain", "inet", "e2e_guard", "forward"); err != nil || !strings.Contains(out, "packets 0 bytes 0") {
			t.Errorf("the guard in gw dropped packets headed for the host namespace (or could not be read: %v):\n%s", err, out)
		}
	})
	gw.Run(t, "ip", "addr", "add", nsExit4.String()+"/32", "dev", "lo")
	gw.Run(t, "ip", "addr", "add", nsExit6.String()+"/128", "dev", "lo")
	srv.Run(t, "ip", "route", "add", "203.0.113.0/24", "via", nsGwSrv4.String())
	srv.Run(t, "ip", "route", "add", "2001:db8:ee::/64", "via", nsGwSrv6.String())
	if err := srv.Start(t, "port server", "env", portServerEnv+"=1", self).WaitFor("READY", 10*time.Second); err != nil {
		t.Fatal(err)
	}

	data := t.TempDir()
	control := host.Start(t, "control", bin, "control", "--data", data, "--listen", netip.AddrPortFrom(nsSessMgmtHost.Addr(), 0).String(),
		"--ipv4-pool", "10.200.0.0/24", "--ipv6-pool", "2001:db8:200::/64")
	controlURL := nsWaitFile(t, control, filepath.Join(data, "control.url"))
	admin := func(args ...string) string {
		t.Helper()
		return host.Run(t, append([]string{bin}, append(args, "--data", data)...)...)
	}
	admin("user", "add", "alice") // before the gateway stands in India, where an account needs a subscriber record

	var tok api.JoinToken
	nsDecode(t, admin("gateway", "token", "--json"), &tok)
	gwState := t.TempDir()
	gateway := gw.Start(t, "gateway", bin, "gateway", "--ntp-source", nsNTPSource, "--control", controlURL, "--join-token", tok.Token, "--state", gwState,
		"--name", "gw-tun", "--mode", "tun", "--listen-port", fmt.Sprint(nsGwPort), "--endpoint", fmt.Sprintf("192.0.2.1:%d", nsGwPort),
		"--exit-ipv4", nsExit4.String(), "--exit-ipv6", nsExit6.String(), nsEgressAllow[0], nsEgressAllow[1], nsEgressAllow[2], nsEgressAllow[3])
	if err := gateway.WaitFor("following control server", 15*time.Second); err != nil {
		t.Fatal(err)
	}
	admin("gateway", "set-place", "gw-tun", "--country", "DE")

	conf := filepath.Join(t.TempDir(), "laptop.conf")
	m := regexp.MustCompile(`added device (\d+) `).FindStringSubmatch(admin("device", "add", "--user", "alice", "--name", "laptop", "--out", conf))
	if m == nil {
		t.Fatal("device add printed no device ID")
	}
	deviceID, _ := strconv.ParseInt(m[1], 10, 64)
	confText := nsReadFile(t, conf)
	wgIf := fmt.Sprintf("wgs%d%d", os.Getpid()%100000, nsWgSeq.Add(1))
	client := cli.Start(t, "cli wireguard-go", "env", "WG_PROCESS_FOREGROUND=1", wgGo, "-f", wgIf)
	nsWaitSocket(t, client, "/var/run/wireguard/"+wgIf+".sock")
	stripped := filepath.Join(t.TempDir(), "stripped.conf")
	nsWriteFile(t, stripped, cli.Run(t, "wg-quick", "strip", conf))
	cli.Run(t, "wg", "setconf", wgIf, stripped)
	var pub wg.Key
	for _, line := range strings.Split(confText, "\n") {
		k, v, _ := strings.Cut(line, "=")
		switch strings.TrimSpace(k) {
		case "Address":
			for _, f := range strings.Split(v, ",") {
				args := []string{"ip", "addr", "add", strings.TrimSpace(f), "dev", wgIf}
				if strings.Contains(f, ":") {
					args = append(args, "nodad")
				}
				cli.Run(t, args...)
			}
		case "MTU":
			cli.Run(t, "ip", "link", "set", wgIf, "mtu", strings.TrimSpace(v))
		case "PrivateKey":
			priv, err := wg.ParseKey(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			pub = priv.Public()
		}
	}
	cli.Run(t, "ip", "link", "set", wgIf, "up")
	for _, r := range []string{"198.51.100.0/24", "2001:db8:2::/64"} {
		cli.Run(t, "ip", "route", "add", r, "dev", wgIf)
	}
	fetch := func(srvAddr netip.Addr) (netip.AddrPort, error) {
		out, err := cli.Output("curl", "-sS", "--fail", "--connect-timeout", "3", "--max-time", "10", "-g",
			fmt.Sprintf("http://%s/", netip.AddrPortFrom(srvAddr, nsSrvPort)))
		if err != nil {
			return netip.AddrPort{}, err
		}
		return netip.ParseAddrPort(strings.TrimSpace(out))
	}
	layout := portblock.Default

	t.Run("no duty: ports outside every block", func(t *testing.T) {
		for _, a := range []netip.Addr{nsSrv4, nsSrv6} {
			var from netip.AddrPort
			eventually(t, 15*time.Second, "fetch through the tunnel", func() (err error) { from, err = fetch(a); return err })
			if _, inBlock := layout.Index(from.Port()); inBlock || (from.Addr() != nsExit4 && from.Addr() != nsExit6) {
				t.Errorf("without a duty the server saw %v: want an exit address and a port outside the blocks", from)
			}
		}
		for _, f := range []string{"sessions.spool", "sessions-open.json"} {
			if _, err := os.Stat(filepath.Join(gwState, f)); err == nil {
				t.Errorf("%s exists on a gateway without the duty", f)
			}
		}
	})

	// Moved to India, the gateway gets every peer again with its duty.
	admin("gateway", "set-place", "gw-tun", "--country", "IN")
	db, err := store.Open(context.Background(), filepath.Join(data, "control", "meridian.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	var session store.Session
	t.Run("cert-in-2022: the exit port leads to the device", func(t *testing.T) {
		for _, c := range []struct {
			srv, exit netip.Addr
		}{{nsSrv4, nsExit4}, {nsSrv6, nsExit6}} {
			var from netip.AddrPort
			eventually(t, 15*time.Second, "a connection from a session's block", func() error {
				var err error
				if from, err = fetch(c.srv); err != nil {
					return err
				}
				if _, inBlock := layout.Index(from.Port()); !inBlock {
					return fmt.Errorf("server saw %v, outside every block", from)
				}
				return nil
			})
			at := time.Now()
			if from.Addr() != c.exit {
				t.Fatalf("server saw %v, want exit address %v", from, c.exit)
			}
			eventually(t, 10*time.Second, "the session record", func() error {
				got, err := db.SessionsByExit(context.Background(), from.Addr(), from.Port(), at)
				if err != nil {
					return err
				}
				if len(got) != 1 {
					return fmt.Errorf("%d sessions hold %v", len(got), from)
				}
				session = got[0]
				return nil
			})
			t.Logf("server saw %v; session %s held %v/%v ports %d-%d", from, session.ID, session.ExitIPv4, session.ExitIPv6, session.PortLo, session.PortHi)
			if session.DeviceID != deviceID || session.User != "alice" || session.Gateway != "gw-tun" || session.PublicKey != pub ||
				session.Endpoint.IsValid() || session.Seq == 0 || session.EndpointIndex == "" || session.ExitIPv4 != nsExit4 || session.ExitIPv6 != nsExit6 {
				t.Fatalf("session %+v for %v", session, from)
			}
		}
	})

	t.Run("revoking the device closes the session", func(t *testing.T) {
		admin("device", "revoke", strconv.FormatInt(deviceID, 10))
		eventually(t, 10*time.Second, "the session closes", func() error {
			got, err := db.SessionsOfUser(context.Background(), "alice", session.Start, time.Now())
			if err != nil {
				return err
			}
			for _, s := range got {
				if s.ID == session.ID && !s.End.IsZero() {
					return nil
				}
			}
			return fmt.Errorf("session still open")
		})
		if out, err := gw.Output("nft", "list", "map", "inet", "meridian", "sess4"); err != nil || strings.Contains(out, "10.200.0.") {
			t.Errorf("the closed session's address is still mapped (%v):\n%s", err, out)
		}
	})

	t.Run("logs name no address of the client", func(t *testing.T) {
		for what, text := range map[string]string{"control log": control.Output(), "gateway log": gateway.Output()} {
			for _, secret := range []string{"192.0.2.2", "10.200.0.", "2001:db8:200::"} {
				if strings.Contains(text, secret) {
					t.Errorf("%s holds %s", what, secret)
				}
			}
		}
	})
	if err := gateway.Stop(10 * time.Second); err != nil {
		t.Errorf("gateway did not stop cleanly: %v", err)
	}
}
