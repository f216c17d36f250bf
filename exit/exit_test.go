package exit_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"

	"github.com/meridian-vpn/meridian/exit"
	"github.com/meridian-vpn/meridian/netstack"
	"github.com/meridian-vpn/meridian/wg"
)

var (
	gwAddr4     = netip.MustParsePrefix("10.200.0.1/16")
	gwAddr6     = netip.MustParsePrefix("fd00:200::1/64")
	clientAddr4 = netip.MustParseAddr("10.200.0.2")
	clientAddr6 = netip.MustParseAddr("fd00:200::2")
)

// tunnel is a gateway wireguard-go device on an Exit and a client
// wireguard-go device on its own netstack, peered over loopback UDP.
type tunnel struct {
	t      *testing.T
	exit   *exit.Exit
	gw, cl *device.Device
	client *netstack.Stack
}

// newTunnel brings up the tunnel; t.Cleanup tears it down.
func newTunnel(t *testing.T, cfg exit.Config) *tunnel {
	t.Helper()
	tn := startTunnel(t, cfg)
	t.Cleanup(tn.close)
	return tn
}

func startTunnel(t *testing.T, cfg exit.Config) *tunnel {
	t.Helper()
	gwKey, err := wg.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	clKey, err := wg.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}

	cfg.Addresses = []netip.Prefix{gwAddr4, gwAddr6}
	logs := new(lockedBuffer)
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() { checkNoAddresses(t, logs.String()) })
	ex, err := exit.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tn := &tunnel{t: t, exit: ex}

	logger := device.NewLogger(device.LogLevelSilent, "")
	tn.gw = device.NewDevice(ex.Device(), conn.NewDefaultBind(), logger)
	if err := tn.gw.IpcSet(fmt.Sprintf("private_key=%s\nlisten_port=0\npublic_key=%s\nallowed_ip=%s/32\nallowed_ip=%s/128\n",
		gwKey.Hex(), clKey.Public().Hex(), clientAddr4, clientAddr6)); err != nil {
		t.Fatal(err)
	}
	if err := tn.gw.Up(); err != nil {
		t.Fatal(err)
	}

	tn.client, err = netstack.New(netstack.Config{Addresses: []netip.Addr{clientAddr4, clientAddr6}, MTU: 1420})
	if err != nil {
		t.Fatal(err)
	}
	tn.cl = device.NewDevice(tn.client, conn.NewDefaultBind(), logger)
	if err := tn.cl.IpcSet(fmt.Sprintf("private_key=%s\npublic_key=%s\nendpoint=127.0.0.1:%d\nallowed_ip=0.0.0.0/0\nallowed_ip=::/0\n",
		clKey.Hex(), gwKey.Public().Hex(), listenPort(t, tn.gw))); err != nil {
		t.Fatal(err)
	}
	if err := tn.cl.Up(); err != nil {
		t.Fatal(err)
	}
	return tn
}

// close closes both devices and the Exit, and fails the test if that
// takes long: Close waits for every flow, so a stuck flow would hang it.
func (tn *tunnel) close() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		tn.cl.Close()
		tn.gw.Close() // closes the Exit through its Device
		tn.exit.Close()
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		buf := make([]byte, 1<<20)
		tn.t.Fatalf("closing the tunnel hangs:\n%s", buf[:runtime.Stack(buf, true)])
	}
}

// lockedBuffer collects the exit's log output.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// checkNoAddresses fails if the exit logged a tunnel or destination address,
// at any level.
func checkNoAddresses(t *testing.T, logs string) {
	t.Helper()
	if !strings.Contains(logs, "exit ready") {
		t.Errorf("logger unused? got %q", logs)
	}
	for _, a := range []string{"127.0.0.1", "[::1]", "::1 ", "10.200.", "fd00:200:"} {
		if strings.Contains(logs, a) {
			t.Errorf("log output contains address %q:\n%s", a, logs)
		}
	}
}

func listenPort(t *testing.T, d *device.Device) int {
	t.Helper()
	s, err := d.IpcGet()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(line, "listen_port="); ok {
			p, err := strconv.Atoi(v)
			if err != nil {
				t.Fatal(err)
			}
			return p
		}
	}
	t.Fatal("no listen_port in IpcGet")
	return 0
}

func (tn *tunnel) dial(t *testing.T, ap netip.AddrPort) (*gonet.TCPConn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := tn.client.DialContext(ctx, "tcp", ap.String())
	if err != nil {
		return nil, err
	}
	return c.(*gonet.TCPConn), nil
}

func (tn *tunnel) dialUDP(ap netip.AddrPort) (net.Conn, error) {
	return tn.client.DialContext(context.Background(), "udp", ap.String())
}

func (tn *tunnel) httpClient() *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext:       tn.client.DialContext,
		},
	}
}

var (
	allowLoopback4 = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	allowLoopback6 = []netip.Prefix{netip.MustParsePrefix("::1/128")}
)

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// echoServer is a TCP server that echoes until EOF, then closes. It counts
// accepted connections.
type echoServer struct {
	ln       net.Listener
	accepted atomic.Int64
	wg       sync.WaitGroup
}

func newEchoServer(t *testing.T, network, addr string) *echoServer {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &echoServer{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	return s
}

func (s *echoServer) addr() netip.AddrPort { return s.ln.Addr().(*net.TCPAddr).AddrPort() }

// udpEchoServer echoes datagrams until closed.
func udpEchoServer(t *testing.T, network, addr string) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenPacket(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

// echoOnce writes msg and expects it back.
func echoOnce(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read: %v", err)
	}
	if string(got) != msg {
		t.Fatalf("echo %q, want %q", got, msg)
	}
	c.SetDeadline(time.Time{})
}

// udpRoundTrip sends msg until an answer arrives (the first datagram may be
// queued behind the WireGuard handshake) and returns the answer.
func udpRoundTrip(c net.Conn, msg string, tries int, wait time.Duration) (string, error) {
	buf := make([]byte, 2048)
	var err error
	for range tries {
		if _, err = io.WriteString(c, msg); err != nil {
			return "", err
		}
		c.SetReadDeadline(time.Now().Add(wait))
		var n int
		if n, err = c.Read(buf); err == nil {
			return string(buf[:n]), nil
		}
	}
	return "", err
}

func TestHTTPThroughTunnel(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello through the exit")
	}))
	defer srv.Close()

	tn := newTunnel(t, exit.Config{Allow: allowLoopback4})
	resp, err := tn.httpClient().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if string(body) != "hello through the exit" {
		t.Fatalf("body %q", body)
	}
	waitFor(t, "the flow to end", func() bool { return tn.exit.Stats().TCPOpen == 0 })
	if s := tn.exit.Stats(); s.TCPTotal != 1 || s.Denied != 0 || s.Refused != 0 || s.CapHit != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// noIPv6Loopback skips a test that needs ::1 where the machine has none,
// and fails it in CI, where IPv6 is part of what must be tested.
func noIPv6Loopback(t *testing.T, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI: no IPv6 loopback: %v", err)
	}
	t.Skipf("no IPv6 loopback: %v", err)
}

func TestHTTPThroughTunnelIPv6(t *testing.T) {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		noIPv6Loopback(t, err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello over v6")
	}))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	defer srv.Close()

	tn := newTunnel(t, exit.Config{Allow: allowLoopback6})
	resp, err := tn.httpClient().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "hello over v6" {
		t.Fatalf("body %q", body)
	}
}

// TestLargeTransfer moves a few MiB both ways, across many MTU-sized packets
// and several batches.
func TestLargeTransfer(t *testing.T) {
	srv := newEchoServer(t, "tcp4", "127.0.0.1:0")
	tn := newTunnel(t, exit.Config{Allow: allowLoopback4})
	c, err := tn.dial(t, srv.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))

	data := make([]byte, 2<<20)
	rand.Read(data)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("echoed %d bytes, not the %d sent", len(got), len(data))
	}
}

// TestHalfClose checks that a client's FIN reaches the server while the
// other direction stays open, and the server's answer and FIN come back.
func TestHalfClose(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srvErr := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srvErr <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		req, err := io.ReadAll(c) // until the client's FIN
		if err != nil {
			srvErr <- err
			return
		}
		_, err = fmt.Fprintf(c, "got %d bytes", len(req))
		srvErr <- err
	}()

	tn := newTunnel(t, exit.Config{Allow: allowLoopback4})
	c, err := tn.dial(t, ln.Addr().(*net.TCPAddr).AddrPort())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "twelve bytes")
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	resp, err := io.ReadAll(c) // until the server's FIN
	if err != nil {
		t.Fatal(err)
	}
	if string(resp) != "got 12 bytes" {
		t.Fatalf("response %q", resp)
	}
	if err := <-srvErr; err != nil {
		t.Fatal(err)
	}
}

func TestUDPThroughTunnel(t *testing.T) {
	echo := udpEchoServer(t, "udp4", "127.0.0.1:0")
	tn := newTunnel(t, exit.Config{Allow: allowLoopback4, UDPIdle: 200 * time.Millisecond})
	c, err := tn.dialUDP(echo)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := udpRoundTrip(c, "ping", 10, 500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if got != "ping" {
		t.Fatalf("echo %q", got)
	}
	// Further datagrams use the same flow. An echo of an earlier message
	// may still come: the first one was sent again until it was answered.
	earlier := map[string]bool{"ping": true}
	for i := range 5 {
		msg := fmt.Sprintf("ping %d", i)
		got, err := udpRoundTrip(c, msg, 1, 2*time.Second)
		for buf := make([]byte, 2048); err == nil && got != msg && earlier[got]; {
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			var n int
			n, err = c.Read(buf)
			got = string(buf[:n])
		}
		if err != nil || got != msg {
			t.Fatalf("echo %q, %v; want %q", got, err, msg)
		}
		earlier[msg] = true
	}
	if s := tn.exit.Stats(); s.UDPTotal != 1 || s.UDPOpen != 1 {
		t.Fatalf("stats %+v, want one open UDP flow", s)
	}
	// The idle timeout ends the flow; a new datagram starts another.
	waitFor(t, "the idle UDP flow to close", func() bool { return tn.exit.Stats().UDPOpen == 0 })
	if got, err := udpRoundTrip(c, "again", 5, time.Second); err != nil || got != "again" {
		t.Fatalf("echo after idle close %q, %v", got, err)
	}
	if s := tn.exit.Stats(); s.UDPTotal != 2 {
		t.Fatalf("UDPTotal %d, want 2", s.UDPTotal)
	}
}

func TestUDPThroughTunnelIPv6(t *testing.T) {
	pc, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		noIPv6Loopback(t, err)
	}
	pc.Close()
	echo := udpEchoServer(t, "udp6", "[::1]:0")
	tn := newTunnel(t, exit.Config{Allow: allowLoopback6})
	c, err := tn.dialUDP(echo)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, err := udpRoundTrip(c, "ping6", 10, 500*time.Millisecond); err != nil || got != "ping6" {
		t.Fatalf("echo %q, %v", got, err)
	}
}

// TestDenied: without an allow entry, loopback targets are unreachable, as
// are the gateway's own addresses, and nothing reaches the server.
func TestDenied(t *testing.T) {
	srv := newEchoServer(t, "tcp4", "127.0.0.1:0")
	udpEcho := udpEchoServer(t, "udp4", "127.0.0.1:0")
	tn := newTunnel(t, exit.Config{})

	if c, err := tn.dial(t, srv.addr()); err == nil {
		c.Close()
		t.Fatal("dial to 127.0.0.1 through the exit succeeded without an allow entry")
	} else if !strings.Contains(err.Error(), "refused") && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("dial error %v, want connection refused or reset", err)
	}
	if s := tn.exit.Stats(); s.Denied != 1 || s.TCPTotal != 0 {
		t.Fatalf("stats %+v, want Denied 1 and no flow", s)
	}

	// The gateway's own tunnel address, on the port of a real host service.
	if c, err := tn.dial(t, netip.AddrPortFrom(gwAddr4.Addr(), srv.addr().Port())); err == nil {
		c.Close()
		t.Fatal("dial to the gateway's own tunnel address succeeded")
	}
	if s := tn.exit.Stats(); s.Denied != 2 {
		t.Fatalf("Denied %d, want 2", s.Denied)
	}

	c, err := tn.dialUDP(udpEcho)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "ping"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the datagram to be denied", func() bool { return tn.exit.Stats().Denied == 3 })
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := c.Read(make([]byte, 64)); err == nil {
		t.Fatalf("UDP to 127.0.0.1 answered %d bytes without an allow entry", n)
	}
	if s := tn.exit.Stats(); s.UDPTotal != 0 {
		t.Fatalf("stats %+v, want no UDP flow", s)
	}
	if n := srv.accepted.Load(); n != 0 {
		t.Fatalf("server accepted %d connections", n)
	}
}

// TestRefused: an allowed destination that refuses the connection is
// passed on to the client as a refusal.
func TestRefused(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close()

	tn := newTunnel(t, exit.Config{Allow: allowLoopback4})
	if c, err := tn.dial(t, closed); err == nil {
		c.Close()
		t.Fatal("dial to a closed port succeeded")
	}
	if s := tn.exit.Stats(); s.Refused != 1 || s.Denied != 0 || s.TCPOpen != 0 {
		t.Fatalf("stats %+v, want Refused 1", s)
	}
}

func TestPerPeerCap(t *testing.T) {
	srv := newEchoServer(t, "tcp4", "127.0.0.1:0")
	tn := newTunnel(t, exit.Config{Allow: allowLoopback4, MaxConnsPerPeer: 2})

	var held []net.Conn
	for i := range 2 {
		c, err := tn.dial(t, srv.addr())
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		defer c.Close()
		echoOnce(t, c, fmt.Sprintf("conn %d", i))
		held = append(held, c)
	}
	if s := tn.exit.Stats(); s.TCPOpen != 2 || s.CapHit != 0 {
		t.Fatalf("stats %+v, want 2 open", s)
	}

	if c, err := tn.dial(t, srv.addr()); err == nil {
		c.Close()
		t.Fatal("third connection succeeded over a per-peer cap of 2")
	}
	if s := tn.exit.Stats(); s.CapHit != 1 || s.TCPTotal != 2 {
		t.Fatalf("stats %+v, want CapHit 1", s)
	}
	if n := srv.accepted.Load(); n != 2 {
		t.Fatalf("server accepted %d connections, want 2", n)
	}

	// Closing one frees its slot.
	held[0].Close()
	waitFor(t, "the closed flow to end", func() bool { return tn.exit.Stats().TCPOpen == 1 })
	c, err := tn.dial(t, srv.addr())
	if err != nil {
		t.Fatalf("connection after one closed: %v", err)
	}
	defer c.Close()
	echoOnce(t, c, "again")
}

func TestGlobalCap(t *testing.T) {
	srv := newEchoServer(t, "tcp4", "127.0.0.1:0")
	udpEcho := udpEchoServer(t, "udp4", "127.0.0.1:0")
	tn := newTunnel(t, exit.Config{Allow: allowLoopback4, MaxConns: 1})

	c, err := tn.dial(t, srv.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echoOnce(t, c, "one")

	// TCP and UDP share the cap.
	u, err := tn.dialUDP(udpEcho)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if _, err := io.WriteString(u, "ping"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the datagram to hit the cap", func() bool { return tn.exit.Stats().CapHit == 1 })
	u.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := u.Read(make([]byte, 64)); err == nil {
		t.Fatalf("UDP answered %d bytes over a global cap of 1", n)
	}
	if c2, err := tn.dial(t, srv.addr()); err == nil {
		c2.Close()
		t.Fatal("second TCP connection succeeded over a global cap of 1")
	}
	if s := tn.exit.Stats(); s.CapHit != 2 || s.UDPTotal != 0 || s.TCPTotal != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// TestCloseEndsFlows: closing the tunnel aborts open flows, the host side
// sees them end, and no goroutine is left behind.
func TestCloseEndsFlows(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	udpEcho := udpEchoServer(t, "udp4", "127.0.0.1:0")
	before := runtime.NumGoroutine()

	tn := startTunnel(t, exit.Config{Allow: allowLoopback4})
	c, err := tn.dial(t, ln.Addr().(*net.TCPAddr).AddrPort())
	if err != nil {
		tn.close()
		t.Fatal(err)
	}
	hostSide, err := ln.Accept()
	if err != nil {
		tn.close()
		t.Fatal(err)
	}
	defer hostSide.Close()
	u, err := tn.dialUDP(udpEcho)
	if err != nil {
		tn.close()
		t.Fatal(err)
	}
	if _, err := udpRoundTrip(u, "ping", 10, 500*time.Millisecond); err != nil {
		tn.close()
		t.Fatal(err)
	}
	if s := tn.exit.Stats(); s.TCPOpen != 1 || s.UDPOpen != 1 {
		tn.close()
		t.Fatalf("stats %+v", s)
	}

	tn.close()
	c.Close()
	u.Close()

	hostSide.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := hostSide.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("host side of the flow still open after Close: %v", err)
	}
	if s := tn.exit.Stats(); s.TCPOpen != 0 || s.UDPOpen != 0 {
		t.Fatalf("stats after Close %+v", s)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after Close:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTCPIdleTimeout: a TCP flow without data for TCPIdle is reset at both
// ends; a flow that carries data now and then stays open however long it
// lasts.
func TestTCPIdleTimeout(t *testing.T) {
	const idle = 400 * time.Millisecond
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tn := newTunnel(t, exit.Config{Allow: allowLoopback4, TCPIdle: idle})
	open := func() (*gonet.TCPConn, net.Conn) {
		t.Helper()
		c, err := tn.dial(t, ln.Addr().(*net.TCPAddr).AddrPort())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return c, s
	}
	start := time.Now() // before the idle flow's timer starts
	idleCli, idleSrv := open()
	busyCli, busySrv := open()

	// The busy flow sends a byte every idle/4, in both directions in turn.
	stop := make(chan struct{})
	busyErr := make(chan error, 1)
	var exchanged atomic.Int64 // bytes the busy flow carried
	go func() {
		tick := time.NewTicker(idle / 4)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				busyErr <- nil
				return
			case <-tick.C:
			}
			from, to := net.Conn(busyCli), busySrv
			if i%2 == 1 {
				from, to = busySrv, busyCli
			}
			if _, err := from.Write([]byte{byte(i)}); err != nil {
				busyErr <- err
				return
			}
			to.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(to, make([]byte, 1)); err != nil {
				busyErr <- fmt.Errorf("busy flow, byte %d: %w", i, err)
				return
			}
			exchanged.Add(1)
		}
	}()

	idleSrv.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = idleSrv.Read(make([]byte, 1))
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("idle flow still open at the server %v after it went idle: %v", time.Since(start), err)
	}
	if took := time.Since(start); took < idle {
		t.Fatalf("idle flow ended after %v, before the idle timeout of %v", took, idle)
	}
	idleCli.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := idleCli.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("idle flow still open at the client: %v", err)
	}
	// Keep the busy flow going for several idle timeouts: sixteen bytes,
	// one per idle/4 at most, however long they take to pass.
	for deadline := time.Now().Add(30 * time.Second); exchanged.Load() < 16; {
		select {
		case err := <-busyErr:
			t.Fatalf("flow with traffic was closed after %d bytes: %v", exchanged.Load(), err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the busy flow carried %d bytes in 30 s", exchanged.Load())
		}
	}
	close(stop)
	if err := <-busyErr; err != nil {
		t.Fatalf("flow with traffic was closed: %v", err)
	}
	if s := tn.exit.Stats(); s.TCPOpen != 1 {
		t.Fatalf("stats %+v, want the busy flow open", s)
	}
}
