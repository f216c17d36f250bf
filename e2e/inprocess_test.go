// Package e2e holds end-to-end tests: a control server, gateways and
// clients together, carrying real WireGuard traffic.
package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/client"
	"github.com/meridian-vpn/meridian/control"
	"github.com/meridian-vpn/meridian/gateway"
	"github.com/meridian-vpn/meridian/wg"
)

// controlNode is a control server serving on a fixed loopback address, so a
// test can stop it and start it again where gateways expect it.
type controlNode struct {
	t      *testing.T
	dir    string
	addr   string
	srv    *control.Server
	cancel context.CancelFunc
	done   chan error
}

func startControl(t *testing.T, dir, addr string) *controlNode {
	return startControlWith(t, dir, addr, 0)
}

// startControlWith starts a control server with a heartbeat timeout (0 =
// the default), and the configuration changes of opts.
func startControlWith(t *testing.T, dir, addr string, heartbeat time.Duration, opts ...func(*control.Config)) *controlNode {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cfg := control.Config{
		DataDir:          dir,
		IPv4Pool:         netip.MustParsePrefix("10.200.0.0/24"),
		IPv6Pool:         netip.MustParsePrefix("2001:db8:200::/64"),
		HeartbeatTimeout: heartbeat,
		Logger:           testLogger(t),
	}
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := control.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var l net.Listener
	for i := 0; i < 50; i++ { // the port may linger briefly after a restart
		if l, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	n := &controlNode{t: t, dir: dir, addr: l.Addr().String(), srv: srv, cancel: cancel, done: make(chan error, 1)}
	go func() { n.done <- srv.Serve(ctx, l, nil) }()
	t.Cleanup(n.stop)
	return n
}

func (n *controlNode) url() string { return "http://" + n.addr }

func (n *controlNode) stop() {
	if n.cancel == nil {
		return
	}
	n.cancel()
	<-n.done
	n.srv.Close()
	n.cancel = nil
}

func (n *controlNode) admin(t *testing.T) *api.Client {
	t.Helper()
	tok, err := n.srv.CreateAdminToken(context.Background(), "test")
	if err != nil {
		t.Fatal(err)
	}
	c, err := api.NewClient(n.url(), tok, "")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// addDevice creates a device with a key generated here and returns its
// standard WireGuard config.
func addDevice(t *testing.T, c *api.Client, user, name string) (api.Device, *wg.Config) {
	t.Helper()
	priv, err := wg.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	pub := priv.Public()
	resp, err := c.CreateDevice(context.Background(), api.CreateDeviceRequest{User: user, Name: name, PublicKey: &pub})
	if err != nil {
		t.Fatal(err)
	}
	// Go through the file format, as a user's WireGuard app would.
	cfg, err := wg.ParseConfig(resp.Config(priv).Render())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Device, cfg
}

func connect(t *testing.T, cfg *wg.Config) *client.Tunnel {
	t.Helper()
	tun, err := client.Start(cfg, client.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tun.Close() })
	return tun
}

// httpGet fetches url through the tunnel, with a short timeout.
func httpGet(tun *client.Tunnel, url string) (string, error) {
	hc := &http.Client{
		Transport: &http.Transport{DialContext: tun.DialContext, DisableKeepAlives: true},
		Timeout:   3 * time.Second,
	}
	resp, err := hc.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// udpEcho sends msg to addr through the tunnel and returns the echo.
func udpEcho(tun *client.Tunnel, addr, msg string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := tun.DialContext(ctx, "udp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	return string(buf[:n]), err
}

func startUDPEcho(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	return pc.LocalAddr().String()
}

// eventually retries f every 100 ms until it succeeds or d passes.
func eventually(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: still failing after %s: %v", what, d, err)
}

func TestInProcessEndToEnd(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "hello through meridian")
	}))
	defer web.Close()
	echo := startUDPEcho(t)

	ctl := startControl(t, filepath.Join(dir, "control"), "127.0.0.1:0")
	admin := ctl.admin(t)
	tok, err := admin.CreateJoinToken(ctx, api.JoinTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.Start(ctx, gateway.Config{
		Control: ctl.url(), JoinToken: tok.Token, StateDir: filepath.Join(dir, "gateway"), Name: "gw1",
		ListenPort: freeUDPPort(t), EgressAllow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
		ReportInterval: 200 * time.Millisecond, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()

	if _, err := admin.CreateUser(ctx, api.CreateUserRequest{Name: "alice"}); err != nil {
		t.Fatal(err)
	}
	dev1, cfg1 := addDevice(t, admin, "alice", "laptop")
	_, cfg2 := addDevice(t, admin, "alice", "phone")
	tun1, tun2 := connect(t, cfg1), connect(t, cfg2)

	t.Run("http and udp through the tunnel", func(t *testing.T) {
		eventually(t, 10*time.Second, "HTTP GET through the tunnel", func() error {
			body, err := httpGet(tun1, web.URL)
			if err == nil && body != "hello through meridian" {
				return fmt.Errorf("body %q", body)
			}
			return err
		})
		got, err := udpEcho(tun1, echo, "ping-udp")
		if err != nil || got != "ping-udp" {
			t.Fatalf("UDP echo: %q, %v", got, err)
		}
		if _, err := httpGet(tun2, web.URL); err != nil {
			t.Fatalf("second device: %v", err)
		}
	})

	t.Run("gateway reports load", func(t *testing.T) {
		eventually(t, 5*time.Second, "gateway list shows the load", func() error {
			gws, err := admin.Gateways(ctx)
			if err != nil {
				return err
			}
			if len(gws) != 1 || !gws[0].Healthy || gws[0].Load.Peers != 2 || gws[0].Load.ActivePeers != 2 || gws[0].Load.RxBytes == 0 {
				return fmt.Errorf("gateways: %+v", gws)
			}
			return nil
		})
	})

	t.Run("revoked device stops working", func(t *testing.T) {
		if _, err := admin.RevokeDevice(ctx, dev1.ID); err != nil {
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, "revoked device still carries traffic", func() error {
			if _, err := httpGet(tun1, web.URL); err == nil {
				return fmt.Errorf("request succeeded")
			}
			return nil
		})
		if gw.Peers() != 1 {
			t.Fatalf("gateway holds %d peers, want 1", gw.Peers())
		}
		if _, err := httpGet(tun2, web.URL); err != nil {
			t.Fatalf("other device broken by the revocation: %v", err)
		}
	})

	t.Run("tunnel survives control server outage", func(t *testing.T) {
		ctl.stop()
		eventually(t, 10*time.Second, "gateway notices the outage", func() error {
			if gw.Connected() {
				return fmt.Errorf("still connected")
			}
			return nil
		})
		for i := 0; i < 3; i++ {
			if body, err := httpGet(tun2, web.URL); err != nil || body != "hello through meridian" {
				t.Fatalf("tunnel broken while control is down: %q %v", body, err)
			}
		}
	})

	t.Run("restarted control server reaches the gateway", func(t *testing.T) {
		ctl2 := startControl(t, filepath.Join(dir, "control"), ctl.addr)
		admin2 := ctl2.admin(t)
		_, cfg3 := addDevice(t, admin2, "alice", "tablet")
		tun3 := connect(t, cfg3)
		eventually(t, 15*time.Second, "new device after restart", func() error {
			_, err := httpGet(tun3, web.URL)
			return err
		})
		if _, err := httpGet(tun2, web.URL); err != nil {
			t.Fatalf("existing tunnel dropped by the resync: %v", err)
		}
		if _, err := httpGet(tun1, web.URL); err == nil {
			t.Fatal("revoked device came back after the resync")
		}
	})
}

func TestLoopbackDeniedWithoutAllow(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "secret") }))
	defer web.Close()
	ctl := startControl(t, filepath.Join(dir, "control"), "127.0.0.1:0")
	admin := ctl.admin(t)
	tok, err := admin.CreateJoinToken(ctx, api.JoinTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.Start(ctx, gateway.Config{Control: ctl.url(), JoinToken: tok.Token, StateDir: filepath.Join(dir, "gw"), Name: "gw", ListenPort: freeUDPPort(t), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	if _, err := admin.CreateUser(ctx, api.CreateUserRequest{Name: "bob"}); err != nil {
		t.Fatal(err)
	}
	_, cfg := addDevice(t, admin, "bob", "pc")
	tun := connect(t, cfg)
	eventually(t, 10*time.Second, "handshake", func() error {
		// A UDP packet to a denied address is dropped, but it still makes
		// the tunnel hand-shake.
		udpEcho(tun, "127.0.0.1:9", "x")
		if tun.LastHandshake().IsZero() {
			return fmt.Errorf("no handshake yet")
		}
		return nil
	})
	if body, err := httpGet(tun, web.URL); err == nil {
		t.Fatalf("the gateway's loopback was reachable through the tunnel: %q", body)
	}
}

// TestRevokeClosesFlows: a TCP flow that a device opened through the
// userspace exit before its revocation ends when the gateway removes the
// peer: the server at the far end sees the connection end at once, instead
// of holding it until it speaks or times out itself. A second device's flow
// through the same gateway is not touched.
func TestRevokeClosesFlows(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctl := startControl(t, filepath.Join(dir, "control"), "127.0.0.1:0")
	admin := ctl.admin(t)
	tok, err := admin.CreateJoinToken(ctx, api.JoinTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.Start(ctx, gateway.Config{
		Control: ctl.url(), JoinToken: tok.Token, StateDir: filepath.Join(dir, "gw"), Name: "gw", ListenPort: freeUDPPort(t),
		EgressAllow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	if _, err := admin.CreateUser(ctx, api.CreateUserRequest{Name: "carol"}); err != nil {
		t.Fatal(err)
	}
	dev, cfg := addDevice(t, admin, "carol", "laptop")
	_, cfgOther := addDevice(t, admin, "carol", "phone")

	// open connects through tun to ln and returns the client's and the
	// server's side of the connection, after a byte has passed.
	open := func(tun *client.Tunnel) (net.Conn, net.Conn) {
		t.Helper()
		var c net.Conn
		eventually(t, 10*time.Second, "TCP through the tunnel", func() error {
			dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			var err error
			c, err = tun.DialContext(dctx, "tcp", ln.Addr().String())
			return err
		})
		t.Cleanup(func() { c.Close() })
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		// An attempt that timed out on a loaded machine may have reached
		// ln before this one and been closed since: its server side reads
		// EOF. The flow is the one whose byte arrives.
		for deadline := time.Now().Add(10 * time.Second); ; {
			ln.(*net.TCPListener).SetDeadline(deadline)
			srv, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			srv.SetReadDeadline(deadline)
			if _, err := io.ReadFull(srv, make([]byte, 1)); err == io.EOF {
				srv.Close()
				continue
			} else if err != nil {
				t.Fatal(err)
			}
			srv.SetReadDeadline(time.Time{})
			t.Cleanup(func() { srv.Close() })
			return c, srv
		}
	}
	_, flow := open(connect(t, cfg))
	otherCli, otherSrv := open(connect(t, cfgOther))

	if _, err := admin.RevokeDevice(ctx, dev.ID); err != nil {
		t.Fatal(err)
	}
	// The server only reads: it learns of the end only if the gateway ends
	// the flow.
	flow.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := flow.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the revoked device's flow is still open at the server 10 s after the revoke (read %d, %v)", n, err)
	}
	if gw.Peers() != 1 {
		t.Fatalf("gateway holds %d peers, want 1", gw.Peers())
	}
	// The other device's flow still carries data.
	if _, err := otherSrv.Write([]byte("y")); err != nil {
		t.Fatalf("the other device's flow broke: %v", err)
	}
	otherCli.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(otherCli, make([]byte, 1)); err != nil {
		t.Fatalf("the other device's flow broke: %v", err)
	}
}
