package client

import (
	"bufio"
	"bytes"
	"encoding/json"
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
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"

	"github.com/meridian-vpn/meridian/netstack"
	"github.com/meridian-vpn/meridian/wg"
)

// Addresses inside the test tunnel. They exist only on the two userspace
// network stacks; on the wire there is WireGuard over loopback UDP only.
var (
	serverIP4 = netip.MustParseAddr("10.200.0.1")
	serverIP6 = netip.MustParseAddr("2001:db8::1")
	clientIP4 = netip.MustParseAddr("10.200.0.2")
	clientIP6 = netip.MustParseAddr("2001:db8::2")
)

const (
	httpPort = 80
	tlsPort  = 443
	echoPort = 7
	deadPort = 81 // nothing listens there
)

// TestMain shortens the package's timeouts, and lets the test binary double
// as the processes that TestTUNInNamespaces starts in its namespaces.
func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "tun":
		os.Exit(tunChild())
	case "srv":
		os.Exit(serverChild())
	}
	handshakeTimeout = time.Second
	dialTimeout = 3 * time.Second
	lingerTimeout = 200 * time.Millisecond
	os.Exit(m.Run())
}

// testServer is the VPN server peer: a wireguard-go device on its own
// netstack, with services on it.
type testServer struct {
	key     wg.Key
	port    int // WireGuard UDP port on 127.0.0.1
	dev     *device.Device
	tlsSrv  *httptest.Server
	closers []io.Closer

	closeOnce sync.Once

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newTestServer(t *testing.T, clientPub wg.Key) *testServer {
	t.Helper()
	key, err := wg.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	ns, err := netstack.New(netstack.Config{Addresses: []netip.Addr{serverIP4, serverIP6}, MTU: 1420})
	if err != nil {
		t.Fatal(err)
	}
	dev := device.NewDevice(ns, conn.NewDefaultBind(), device.NewLogger(device.LogLevelSilent, ""))
	uapi := fmt.Sprintf("private_key=%s\nlisten_port=0\npublic_key=%s\nallowed_ip=%s/32\nallowed_ip=%s/128\n",
		key.Hex(), clientPub.Hex(), clientIP4, clientIP6)
	if err := dev.IpcSet(uapi); err != nil {
		t.Fatal(err)
	}
	if err := dev.Up(); err != nil {
		t.Fatal(err)
	}
	s := &testServer{key: key, dev: dev, conns: map[net.Conn]struct{}{}}
	get, err := dev.IpcGet()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(get, "\n") {
		if v, ok := strings.CutPrefix(line, "listen_port="); ok {
			s.port, _ = strconv.Atoi(v)
		}
	}
	if s.port == 0 {
		t.Fatal("server device has no listen port")
	}

	// HTTP on both addresses.
	mux := http.NewServeMux()
	mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from server, you are %s", r.RemoteAddr)
	})
	mux.HandleFunc("/headers", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(r.Header)
	})
	for _, ip := range []netip.Addr{serverIP4, serverIP6} {
		ln, err := ns.ListenTCP(netip.AddrPortFrom(ip, httpPort))
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: mux}
		s.closers = append(s.closers, srv)
		go srv.Serve(ln)
	}
	// HTTPS, for CONNECT through a standard client.
	tln, err := ns.ListenTCP(netip.AddrPortFrom(serverIP4, tlsPort))
	if err != nil {
		t.Fatal(err)
	}
	s.tlsSrv = httptest.NewUnstartedServer(mux)
	s.tlsSrv.Listener.Close()
	s.tlsSrv.Listener = tln
	s.tlsSrv.StartTLS()

	// TCP echo on both addresses.
	for _, ip := range []netip.Addr{serverIP4, serverIP6} {
		ln, err := ns.ListenTCP(netip.AddrPortFrom(ip, echoPort))
		if err != nil {
			t.Fatal(err)
		}
		s.closers = append(s.closers, ln)
		s.wg.Add(1)
		go s.echoTCP(ln)
	}
	// UDP echo and DNS.
	for _, ip := range []netip.Addr{serverIP4, serverIP6} {
		uc, err := ns.ListenUDP(netip.AddrPortFrom(ip, echoPort))
		if err != nil {
			t.Fatal(err)
		}
		s.closers = append(s.closers, uc)
		s.wg.Add(1)
		go s.echoUDP(uc)
	}
	dc, err := ns.ListenUDP(netip.AddrPortFrom(serverIP4, 53))
	if err != nil {
		t.Fatal(err)
	}
	s.closers = append(s.closers, dc)
	s.wg.Add(1)
	go s.serveDNS(dc)

	t.Cleanup(s.close)
	return s
}

func (s *testServer) close() { s.closeOnce.Do(s.doClose) }

func (s *testServer) doClose() {
	s.tlsSrv.Close()
	for _, c := range s.closers {
		c.Close()
	}
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	s.dev.Close()
}

func (s *testServer) echoTCP(ln net.Listener) {
	defer s.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			_, _ = io.Copy(c, c)
			if cw, ok := c.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
			}
			c.Close()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

func (s *testServer) echoUDP(c net.PacketConn) {
	defer s.wg.Done()
	buf := make([]byte, 65535)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		_, _ = c.WriteTo(buf[:n], from)
	}
}

// serveDNS answers A/AAAA for web.test and echo.test, A only for
// v4only.test, and NXDOMAIN for anything else.
func (s *testServer) serveDNS(c net.PacketConn) {
	defer s.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:n])
		if err != nil {
			continue
		}
		q, err := p.Question()
		if err != nil {
			continue
		}
		b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionAvailable: true})
		b.EnableCompression()
		name := strings.ToLower(q.Name.String())
		known := name == "web.test." || name == "echo.test." || name == "v4only.test."
		if !known {
			b = dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RCode: dnsmessage.RCodeNameError})
		}
		_ = b.StartQuestions()
		_ = b.Question(q)
		_ = b.StartAnswers()
		rh := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}
		if known && q.Type == dnsmessage.TypeA {
			_ = b.AResource(rh, dnsmessage.AResource{A: serverIP4.As4()})
		}
		if known && q.Type == dnsmessage.TypeAAAA && name != "v4only.test." {
			_ = b.AAAAResource(rh, dnsmessage.AAAAResource{AAAA: serverIP6.As16()})
		}
		msg, err := b.Finish()
		if err != nil {
			continue
		}
		_, _ = c.WriteTo(msg, from)
	}
}

// env is a server peer plus a started client tunnel.
type env struct {
	srv  *testServer
	tun  *Tunnel
	cfg  *wg.Config
	logs *syncBuffer
}

// syncBuffer collects log output from concurrent goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// clientConfig is the client's wg-quick configuration for srv.
func clientConfig(t *testing.T, clientKey wg.Key, srv *testServer) *wg.Config {
	return &wg.Config{
		PrivateKey: clientKey,
		Addresses:  []netip.Prefix{netip.PrefixFrom(clientIP4, 32), netip.PrefixFrom(clientIP6, 128)},
		DNS:        []netip.Addr{serverIP4},
		MTU:        1420,
		Peers: []wg.PeerConfig{{
			PublicKey:           srv.key.Public(),
			Endpoint:            fmt.Sprintf("127.0.0.1:%d", srv.port),
			AllowedIPs:          []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")},
			PersistentKeepalive: 25,
		}},
	}
}

// newEnv starts a server peer and a client tunnel with both proxies on
// loopback port 0. The client is closed at cleanup.
func newEnv(t *testing.T, opts Options) *env {
	t.Helper()
	ck, err := wg.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	srv := newTestServer(t, ck.Public())
	cfg := clientConfig(t, ck, srv)
	logs := &syncBuffer{}
	if opts.SOCKS5 == "" {
		opts.SOCKS5 = "127.0.0.1:0"
	}
	if opts.HTTP == "" {
		opts.HTTP = "127.0.0.1:0"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	tun, err := Start(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tun.Close() })
	return &env{srv: srv, tun: tun, cfg: cfg, logs: logs}
}

// socksDial opens a TCP connection to the SOCKS5 proxy and completes the
// no-auth method negotiation.
func (e *env) socksDial(t *testing.T) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", e.tun.SOCKS5Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte{5, 1, 0}); err != nil {
		t.Fatal(err)
	}
	var sel [2]byte
	if _, err := io.ReadFull(c, sel[:]); err != nil {
		t.Fatal(err)
	}
	if sel != [2]byte{5, 0} {
		t.Fatalf("method selection = %x, want 0500", sel)
	}
	return c
}

// readSOCKSReply reads a full SOCKS5 reply and returns REP and BND.
func readSOCKSReply(t *testing.T, c net.Conn) (byte, socksAddr) {
	t.Helper()
	var hdr [4]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		t.Fatalf("reading SOCKS5 reply: %v", err)
	}
	if hdr[0] != 5 || hdr[2] != 0 {
		t.Fatalf("bad reply header %x", hdr)
	}
	bnd, err := readSOCKSAddr(c, hdr[3])
	if err != nil {
		t.Fatalf("reading reply address: %v", err)
	}
	return hdr[1], bnd
}

// socksConnectReq is a CONNECT request to dst.
func socksConnectReq(dst socksAddr) []byte {
	return socksRequest{Cmd: cmdConnect, Dst: dst}.appendTo(nil)
}

func ipDst(ip netip.Addr, port uint16) socksAddr { return socksAddr{IP: ip, Port: port} }

// expectEOF asserts that the peer closes c (within the deadline), reading
// at most a few bytes that must not be there.
func expectEOF(t *testing.T, c net.Conn, within time.Duration) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(within))
	var b [64]byte
	n, err := c.Read(b[:])
	if n != 0 {
		t.Fatalf("unexpected %d bytes %x before close", n, b[:n])
	}
	if err == nil || isTimeout(err) {
		t.Fatalf("connection not closed within %v: %v", within, err)
	}
}

// httpGetVia fetches url with a transport using dial.
func httpGet(t *testing.T, tr *http.Transport, url string) (int, string) {
	t.Helper()
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: 15 * time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s body: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// rawHTTPProxy sends raw (a complete request) to the HTTP proxy and reads
// one response.
func (e *env) rawHTTPProxy(t *testing.T, raw string) (*http.Response, string, net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", e.tun.HTTPAddr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading proxy response: %v", err)
	}
	var body string
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(raw, "CONNECT") {
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		resp.Body.Close()
	}
	return resp, body, c, br
}

// waitGoroutines waits for the goroutine count to fall to at most n.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := runtime.NumGoroutine()
		if got <= n {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("goroutines: %d, want <= %d\n%s", got, n, buf)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
