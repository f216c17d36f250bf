package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"github.com/meridian-vpn/meridian/wg"
)

// (1) HTTP GET through the SOCKS5 proxy with golang.org/x/net/proxy, to IP
// literals (IPv4 and IPv6) and to a name resolved through the tunnel.
func TestSOCKS5HTTPGet(t *testing.T) {
	e := newEnv(t, Options{})
	d, err := proxy.SOCKS5("tcp", e.tun.SOCKS5Addr().String(), nil, proxy.Direct)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{DialContext: d.(proxy.ContextDialer).DialContext}
	for _, u := range []string{
		"http://10.200.0.1/hello",
		"http://[2001:db8::1]/hello",
		"http://web.test/hello",
	} {
		code, body := httpGet(t, tr, u)
		if code != http.StatusOK || !strings.HasPrefix(body, "hello from server, you are ") {
			t.Fatalf("GET %s = %d %q", u, code, body)
		}
		// The server sees the client's tunnel address.
		if !strings.Contains(body, clientIP4.String()) && !strings.Contains(body, clientIP6.String()) {
			t.Errorf("GET %s: server saw %q, not a tunnel address", u, body)
		}
	}
	if s := e.tun.Stats(); s.SOCKS5Connects < 3 || s.BytesIn == 0 || s.BytesOut == 0 {
		t.Errorf("stats = %+v", s)
	}
}

// Hand-written SOCKS5 CONNECT for each address type, with the reply's bound
// address and a half-close passed through to an echo server.
func TestSOCKS5ConnectAddressTypes(t *testing.T) {
	e := newEnv(t, Options{})
	for _, tc := range []struct {
		name string
		dst  socksAddr
	}{
		{"ipv4", ipDst(serverIP4, echoPort)},
		{"ipv6", ipDst(serverIP6, echoPort)},
		{"ipv4-mapped-ipv6", ipDst(netip.AddrFrom16(serverIP4.As16()), echoPort)},
		{"domain", socksAddr{Name: "echo.test", Port: echoPort}},
		{"domain-v4only", socksAddr{Name: "v4only.test", Port: echoPort}},
		{"domain-ip-literal", socksAddr{Name: "10.200.0.1", Port: echoPort}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := e.socksDial(t)
			if _, err := c.Write(socksConnectReq(tc.dst)); err != nil {
				t.Fatal(err)
			}
			rep, bnd := readSOCKSReply(t, c)
			if rep != repSucceeded {
				t.Fatalf("rep = %d", rep)
			}
			if bnd.IP != clientIP4 && bnd.IP != clientIP6 || bnd.Port == 0 {
				t.Errorf("BND = %v:%d, want a tunnel address", bnd.IP, bnd.Port)
			}
			msg := bytes.Repeat([]byte("meridian "), 20000) // 180 kB, several windows
			go func() {
				_, _ = c.Write(msg)
				_ = c.(*net.TCPConn).CloseWrite()
			}()
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, msg) {
				t.Fatalf("echo returned %d bytes, want %d", len(got), len(msg))
			}
		})
	}
}

// (2) The HTTP proxy: absolute-form GET with a standard client, hop-by-hop
// headers, CONNECT with raw bytes (with early data), and CONNECT by a
// standard client to an HTTPS server.
func TestHTTPProxy(t *testing.T) {
	e := newEnv(t, Options{})
	proxyURL := &url.URL{Scheme: "http", Host: e.tun.HTTPAddr().String()}

	t.Run("absolute-form", func(t *testing.T) {
		for _, u := range []string{"http://10.200.0.1/hello", "http://[2001:db8::1]/hello", "http://web.test/hello"} {
			code, body := httpGet(t, &http.Transport{Proxy: http.ProxyURL(proxyURL)}, u)
			if code != http.StatusOK || !strings.HasPrefix(body, "hello from server") {
				t.Fatalf("GET %s via HTTP proxy = %d %q", u, code, body)
			}
		}
	})

	t.Run("hop-by-hop", func(t *testing.T) {
		resp, body, _, _ := e.rawHTTPProxy(t, "GET http://10.200.0.1/headers HTTP/1.1\r\n"+
			"Host: 10.200.0.1\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\n"+
			"Connection: keep-alive, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\nX-Keep: kept\r\n\r\n")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		var h http.Header
		if err := json.Unmarshal([]byte(body), &h); err != nil {
			t.Fatalf("%v: %q", err, body)
		}
		for _, k := range []string{"Proxy-Connection", "Proxy-Authorization", "X-Hop", "Keep-Alive", "X-Forwarded-For"} {
			if v := h.Get(k); v != "" {
				t.Errorf("origin received hop-by-hop header %s: %q", k, v)
			}
		}
		if h.Get("X-Keep") != "kept" {
			t.Errorf("end-to-end header lost: %v", h)
		}
	})

	t.Run("connect-raw", func(t *testing.T) {
		// CONNECT and early data in one write.
		resp, _, c, br := e.rawHTTPProxy(t, "CONNECT 10.200.0.1:7 HTTP/1.1\r\nHost: 10.200.0.1:7\r\n\r\nearly ")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("CONNECT status %d", resp.StatusCode)
		}
		if _, err := io.WriteString(c, "late"); err != nil {
			t.Fatal(err)
		}
		_ = c.(*net.TCPConn).CloseWrite()
		got, err := io.ReadAll(br)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != "early late" {
			t.Fatalf("echo over CONNECT = %q", got)
		}
	})

	t.Run("connect-https", func(t *testing.T) {
		tr := e.srv.tlsSrv.Client().Transport.(*http.Transport).Clone()
		tr.Proxy = http.ProxyURL(proxyURL)
		tr.TLSClientConfig.ServerName = "example.com" // a name in httptest's certificate
		code, body := httpGet(t, tr, "https://10.200.0.1/hello")
		if code != http.StatusOK || !strings.HasPrefix(body, "hello from server") {
			t.Fatalf("HTTPS via CONNECT = %d %q", code, body)
		}
	})

	t.Run("not-a-proxy-request", func(t *testing.T) {
		resp, body, _, _ := e.rawHTTPProxy(t, "GET /hello HTTP/1.1\r\nHost: 10.200.0.1\r\n\r\n")
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("origin-form request: %d %q", resp.StatusCode, body)
		}
		resp, _, _, _ = e.rawHTTPProxy(t, "CONNECT 10.200.0.1 HTTP/1.1\r\nHost: 10.200.0.1\r\n\r\n")
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("CONNECT without port: %d", resp.StatusCode)
		}
		resp, _, _, _ = e.rawHTTPProxy(t, "GET https://10.200.0.1/ HTTP/1.1\r\nHost: 10.200.0.1\r\n\r\n")
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("absolute-form https: %d", resp.StatusCode)
		}
	})

	t.Run("stalled-client", func(t *testing.T) {
		c, err := net.Dial("tcp", e.tun.HTTPAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = io.WriteString(c, "GET http://10.200.0.1/hello HTTP/1.1\r\nHost: 10.200.0.1\r\n") // never finished
		_ = c.SetReadDeadline(time.Now().Add(4 * handshakeTimeout))
		if _, err := io.ReadAll(c); err != nil {
			t.Fatalf("stalled request not dropped: %v", err)
		}
	})

	if s := e.tun.Stats(); s.HTTPConnects < 2 || s.HTTPForwarded < 4 {
		t.Errorf("stats = %+v", s)
	}
}

// (3) Malformed and unsupported SOCKS5 input: the right reply, then close,
// never a hang.
func TestSOCKS5BadInput(t *testing.T) {
	e := newEnv(t, Options{})
	raw := func(t *testing.T) net.Conn {
		c, err := net.DialTimeout("tcp", e.tun.SOCKS5Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	greetingCases := []struct {
		name  string
		send  []byte
		reply []byte
	}{
		{"socks4-client", []byte{4, 1, 0, 80, 10, 200, 0, 1, 0}, socks4Rejected},
		{"http-client", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), nil},
		{"only-user-pass", []byte{5, 1, 2}, []byte{5, 0xFF}},
		{"only-gssapi-and-unknown", []byte{5, 2, 1, 0x80}, []byte{5, 0xFF}},
		{"zero-methods", []byte{5, 0}, []byte{5, 0xFF}},
	}
	for _, tc := range greetingCases {
		t.Run("greeting/"+tc.name, func(t *testing.T) {
			c := raw(t)
			if _, err := c.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			if tc.reply != nil {
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				got := make([]byte, len(tc.reply))
				if _, err := io.ReadFull(c, got); err != nil {
					t.Fatalf("no reply: %v", err)
				}
				if !bytes.Equal(got, tc.reply) {
					t.Fatalf("reply %x, want %x", got, tc.reply)
				}
			}
			expectEOF(t, c, 5*time.Second)
		})
	}

	v4 := ipDst(serverIP4, echoPort).appendTo(nil) // ATYP+ADDR+PORT
	requestCases := []struct {
		name string
		send []byte
		rep  byte
	}{
		{"wrong-version", append([]byte{4, cmdConnect, 0}, v4...), repGeneralFailure},
		{"bind", append([]byte{5, cmdBind, 0}, v4...), repCmdNotSupported},
		{"unknown-command", append([]byte{5, 9, 0}, v4...), repCmdNotSupported},
		{"reserved-not-zero", append([]byte{5, cmdConnect, 1}, v4...), repGeneralFailure},
		{"atyp-2", []byte{5, cmdConnect, 0, 2, 1, 2, 3, 4, 0, 80}, repAddrNotSupported},
		{"atyp-255", []byte{5, cmdConnect, 0, 255}, repAddrNotSupported},
		{"empty-domain", []byte{5, cmdConnect, 0, atypDomain, 0, 0, 80}, repHostUnreachable},
		{"domain-with-nul", append([]byte{5, cmdConnect, 0, atypDomain, 4, 'a', 0, 'b', 'c'}, 0, 80), repHostUnreachable},
		{"port-zero", []byte{5, cmdConnect, 0, atypIPv4, 10, 200, 0, 1, 0, 0}, repGeneralFailure},
		{"unresolvable-name", socksConnectReq(socksAddr{Name: "nosuch.test", Port: 80}), repHostUnreachable},
	}
	for _, tc := range requestCases {
		t.Run("request/"+tc.name, func(t *testing.T) {
			c := e.socksDial(t)
			if _, err := c.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			rep, bnd := readSOCKSReply(t, c)
			if rep != tc.rep {
				t.Fatalf("rep = %#x, want %#x", rep, tc.rep)
			}
			if bnd.IP != netip.IPv4Unspecified() || bnd.Port != 0 {
				t.Errorf("BND on failure = %v:%d", bnd.IP, bnd.Port)
			}
			expectEOF(t, c, 5*time.Second)
		})
	}

	// Clients that stall are dropped after the handshake timeout.
	for _, tc := range []struct {
		name string
		send []byte
	}{
		{"silent", nil},
		{"partial-greeting", []byte{5, 3, 0}},
		{"partial-request", []byte{5, 1, 0, 5, 1, 0, atypDomain, 200, 'a'}},
	} {
		t.Run("stall/"+tc.name, func(t *testing.T) {
			c := raw(t)
			start := time.Now()
			if _, err := c.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			if len(tc.send) >= 3 { // the method selection comes back first
				var sel [2]byte
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.ReadFull(c, sel[:]); err != nil && !strings.HasPrefix(tc.name, "partial-greeting") {
					t.Fatal(err)
				}
			}
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("not closed: %v", err)
			}
			if d := time.Since(start); d < handshakeTimeout/2 || d > 4*handshakeTimeout {
				t.Errorf("closed after %v, handshake timeout is %v", d, handshakeTimeout)
			}
		})
	}
	if e.tun.Stats().ProtocolErrors == 0 {
		t.Error("protocol errors not counted")
	}
}

// (4) LastHandshake is set after traffic, and is recent.
func TestLastHandshake(t *testing.T) {
	e := newEnv(t, Options{})
	c, err := e.tun.DialContext(context.Background(), "tcp", "10.200.0.1:7")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, b[:]); err != nil {
		t.Fatal(err)
	}
	hs := e.tun.LastHandshake()
	if hs.IsZero() {
		t.Fatal("LastHandshake is zero after traffic")
	}
	if age := time.Since(hs); age < 0 || age > time.Minute {
		t.Fatalf("LastHandshake %v is %v old", hs, age)
	}
}

func TestLastHandshakeParse(t *testing.T) {
	const uapi = "private_key=00\nlisten_port=1\n" +
		"public_key=aa\nlast_handshake_time_sec=0\nlast_handshake_time_nsec=0\n" +
		"public_key=bb\nlast_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\n" +
		"public_key=cc\nlast_handshake_time_sec=1600000000\nlast_handshake_time_nsec=0\n"
	if got, want := lastHandshake(uapi), time.Unix(1700000000, 5); !got.Equal(want) {
		t.Fatalf("lastHandshake = %v, want %v", got, want)
	}
	if got := lastHandshake("public_key=aa\nlast_handshake_time_sec=0\nlast_handshake_time_nsec=0\n"); !got.IsZero() {
		t.Fatalf("never = %v, want zero", got)
	}
}

// (5) Destinations that cannot be reached.
func TestUnreachable(t *testing.T) {
	e := newEnv(t, Options{})
	dead := fmt.Sprintf("10.200.0.1:%d", deadPort)

	t.Run("socks5-refused", func(t *testing.T) {
		c := e.socksDial(t)
		_, _ = c.Write(socksConnectReq(ipDst(serverIP4, deadPort)))
		if rep, _ := readSOCKSReply(t, c); rep != repConnRefused {
			t.Fatalf("rep = %#x, want connection refused", rep)
		}
		expectEOF(t, c, 5*time.Second)
	})
	t.Run("socks5-no-route", func(t *testing.T) {
		// Nobody answers for this address inside the tunnel: the dial
		// times out (dialTimeout is shortened for the tests).
		c := e.socksDial(t)
		_, _ = c.Write(socksConnectReq(ipDst(netip.MustParseAddr("10.200.0.99"), 80)))
		start := time.Now()
		if rep, _ := readSOCKSReply(t, c); rep != repHostUnreachable {
			t.Fatalf("rep = %#x, want host unreachable", rep)
		}
		if d := time.Since(start); d > dialTimeout+2*time.Second {
			t.Errorf("took %v", d)
		}
	})
	t.Run("http-forward-502", func(t *testing.T) {
		resp, body, _, _ := e.rawHTTPProxy(t, "GET http://"+dead+"/ HTTP/1.1\r\nHost: "+dead+"\r\n\r\n")
		if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "connection refused") {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
	})
	t.Run("http-forward-timeout-502", func(t *testing.T) {
		resp, body, _, _ := e.rawHTTPProxy(t, "GET http://10.200.0.99/ HTTP/1.1\r\nHost: 10.200.0.99\r\n\r\n")
		if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "timed out") {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
	})
	t.Run("http-connect-502", func(t *testing.T) {
		resp, body, _, _ := e.rawHTTPProxy(t, "CONNECT "+dead+" HTTP/1.1\r\nHost: "+dead+"\r\n\r\n")
		if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "connection refused") {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
	})
	t.Run("http-unknown-name-502", func(t *testing.T) {
		resp, body, _, _ := e.rawHTTPProxy(t, "GET http://nosuch.test/ HTTP/1.1\r\nHost: nosuch.test\r\n\r\n")
		if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "name not resolved") {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
	})
	t.Run("dial-errors", func(t *testing.T) {
		_, err := e.tun.DialContext(context.Background(), "tcp", dead)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("err = %v, want ECONNREFUSED", err)
		}
		if _, err := e.tun.DialContext(context.Background(), "ip4", "10.200.0.1:7"); err == nil {
			t.Fatal("network ip4 accepted")
		}
		if _, err := e.tun.DialContext(context.Background(), "tcp", "10.200.0.1:0"); err == nil {
			t.Fatal("port 0 accepted")
		}
		var dnsErr *net.DNSError
		if _, err := e.tun.DialContext(context.Background(), "tcp", "nosuch.test:80"); !errors.As(err, &dnsErr) {
			t.Fatalf("unknown name: %v", err)
		}
	})
	if e.tun.Stats().DialFailures < 5 {
		t.Errorf("dial failures = %d", e.tun.Stats().DialFailures)
	}
}

// DialContext directly: TCP over v4/v6 and names, UDP.
func TestDialContext(t *testing.T) {
	e := newEnv(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for _, tc := range []struct{ network, addr string }{
		{"tcp", "10.200.0.1:7"},
		{"tcp4", "echo.test:7"},
		{"tcp6", "echo.test:7"},
		{"tcp", "[2001:db8::1]:7"},
		{"tcp", "[::ffff:10.200.0.1]:7"},
		{"udp", "10.200.0.1:7"},
		{"udp4", "echo.test:7"},
		{"udp", "echo.test:7"},
		{"udp6", "[2001:db8::1]:7"},
	} {
		c, err := e.tun.DialContext(ctx, tc.network, tc.addr)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.network, tc.addr, err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		msg := []byte("ping " + tc.network)
		var got []byte
		for i := 0; i < 5 && got == nil; i++ { // UDP may need a retry while the handshake completes
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			buf := make([]byte, 64)
			n, err := c.Read(buf)
			if err == nil {
				got = buf[:n]
			}
		}
		c.Close()
		if !bytes.Equal(got, msg) {
			t.Fatalf("%s %s: echo %q", tc.network, tc.addr, got)
		}
	}
}

// A configuration without DNS servers still dials IP literals and refuses
// names clearly.
func TestNoDNS(t *testing.T) {
	ck, _ := wg.NewPrivateKey()
	srv := newTestServer(t, ck.Public())
	cfg := clientConfig(t, ck, srv)
	cfg.DNS = nil
	tun, err := Start(cfg, Options{Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer tun.Close()
	if tun.SOCKS5Addr() != nil || tun.HTTPAddr() != nil {
		t.Fatal("proxies started without being asked for")
	}
	c, err := tun.DialContext(context.Background(), "tcp", "10.200.0.1:7")
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	_, err = tun.DialContext(context.Background(), "tcp", "echo.test:7")
	var dnsErr *net.DNSError
	if !errors.As(err, &dnsErr) || !strings.Contains(err.Error(), "no DNS server") {
		t.Fatalf("err = %v", err)
	}
}

func TestStartErrors(t *testing.T) {
	ck, _ := wg.NewPrivateKey()
	pk, _ := wg.NewPrivateKey()
	good := func() *wg.Config {
		return &wg.Config{
			PrivateKey: ck,
			Addresses:  []netip.Prefix{netip.MustParsePrefix("10.200.0.2/32")},
			Peers:      []wg.PeerConfig{{PublicKey: pk.Public(), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}}},
		}
	}
	for name, mut := range map[string]func(*wg.Config){
		"no-key":     func(c *wg.Config) { c.PrivateKey = wg.Key{} },
		"no-peer":    func(c *wg.Config) { c.Peers = nil },
		"no-address": func(c *wg.Config) { c.Addresses = nil },
		"bad-mtu":    func(c *wg.Config) { c.MTU = 100 },
	} {
		cfg := good()
		mut(cfg)
		if tun, err := Start(cfg, Options{Logger: discardLogger()}); err == nil {
			tun.Close()
			t.Errorf("%s: Start succeeded", name)
		}
	}
	if _, err := Start(nil, Options{}); err == nil {
		t.Error("nil config accepted")
	}
	// A listener that cannot be opened fails Start and releases the device.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if tun, err := Start(good(), Options{HTTP: ln.Addr().String(), Logger: discardLogger()}); err == nil {
		tun.Close()
		t.Error("Start on a busy port succeeded")
	}
	// A host-less listen address means loopback.
	tun, err := Start(good(), Options{SOCKS5: ":0", Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer tun.Close()
	if ip := tun.SOCKS5Addr().(*net.TCPAddr).IP; !ip.IsLoopback() {
		t.Errorf("SOCKS5 listens on %v, want loopback", ip)
	}
}

// Connections over MaxConns are closed at once; freed slots are reused.
func TestMaxConns(t *testing.T) {
	e := newEnv(t, Options{MaxConns: 2})
	a := e.socksDial(t)
	b := e.socksDial(t)
	c, err := net.Dial("tcp", e.tun.SOCKS5Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	expectEOF(t, c, 5*time.Second)
	if got := e.tun.Stats().Rejected; got != 1 {
		t.Fatalf("rejected = %d", got)
	}
	// Both slots are in use until a client leaves.
	a.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		d, err := net.Dial("tcp", e.tun.SOCKS5Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_ = d.SetDeadline(time.Now().Add(2 * time.Second))
		_, _ = d.Write([]byte{5, 1, 0})
		var sel [2]byte
		_, err = io.ReadFull(d, sel[:])
		d.Close()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("slot not freed after a client left")
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = b
}

// SOCKS5 UDP ASSOCIATE to an echo server, by IP and by name.
func TestSOCKS5UDPAssociate(t *testing.T) {
	e := newEnv(t, Options{})
	c := e.socksDial(t)
	if _, err := c.Write(socksRequest{Cmd: cmdUDPAssociate, Dst: ipDst(netip.IPv4Unspecified(), 0)}.appendTo(nil)); err != nil {
		t.Fatal(err)
	}
	rep, bnd := readSOCKSReply(t, c)
	if rep != repSucceeded || !bnd.IP.IsLoopback() || bnd.Port == 0 {
		t.Fatalf("UDP ASSOCIATE reply %d %v:%d", rep, bnd.IP, bnd.Port)
	}
	uc, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(bnd.IP, bnd.Port)))
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	for _, dst := range []socksAddr{
		ipDst(serverIP4, echoPort),
		{Name: "echo.test", Port: echoPort},
	} {
		payload := []byte("udp via socks " + dst.dialString())
		dgram := append(appendSOCKSUDP(nil, dst), payload...)
		var got []byte
		var src socksAddr
		for i := 0; i < 10 && got == nil; i++ {
			if _, err := uc.Write(dgram); err != nil {
				t.Fatal(err)
			}
			_ = uc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			buf := make([]byte, 2048)
			n, err := uc.Read(buf)
			if err != nil {
				continue
			}
			frag, s, p, err := parseSOCKSUDP(buf[:n])
			if err != nil || frag != 0 {
				t.Fatalf("bad reply datagram: %v", err)
			}
			got, src = p, s
		}
		if !bytes.Equal(got, payload) {
			t.Fatalf("echo %q, want %q", got, payload)
		}
		if src.IP != serverIP4 && src.IP != serverIP6 || src.Port != echoPort {
			t.Errorf("reply source %v:%d", src.IP, src.Port)
		}
	}
	// Fragments are dropped: once the relay has counted the fragment as a
	// protocol error, nothing of it has gone into the tunnel.
	before := e.tun.Stats()
	if _, err := uc.Write(append([]byte{0, 0, 1}, append(ipDst(serverIP4, echoPort).appendTo(nil), 'x')...)); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if s := e.tun.Stats(); s.ProtocolErrors != before.ProtocolErrors || s.BytesOut != before.BytesOut {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the relay did not take the fragment in 10 s")
		}
	}
	if s := e.tun.Stats(); s.BytesOut != before.BytesOut || s.ProtocolErrors != before.ProtocolErrors+1 {
		t.Fatalf("fragment relayed: stats before %+v, after %+v", before, s)
	}
	if s := e.tun.Stats(); s.SOCKS5UDPAssociations != 1 {
		t.Errorf("stats %+v", s)
	}
	// Closing the TCP connection ends the association: its relay socket
	// closes, so a datagram to it is answered with ICMP port unreachable
	// (ECONNREFUSED on the client's connected socket), not relayed.
	c.Close()
	dgram := append(appendSOCKSUDP(nil, ipDst(serverIP4, echoPort)), "after close"...)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if time.Now().After(deadline) {
			t.Fatal("the association still relays 10 s after its TCP connection closed")
		}
		if _, err := uc.Write(dgram); err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatal(err)
		}
		_ = uc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := uc.Read(make([]byte, 2048)); errors.Is(err, syscall.ECONNREFUSED) {
			break
		}
	}
}

// Info-level logs carry no destination, tunnel address or endpoint.
func TestLogsHoldNoDestinations(t *testing.T) {
	e := newEnv(t, Options{})
	d, _ := proxy.SOCKS5("tcp", e.tun.SOCKS5Addr().String(), nil, proxy.Direct)
	httpGet(t, &http.Transport{DialContext: d.(proxy.ContextDialer).DialContext}, "http://web.test/hello")
	httpGet(t, &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: e.tun.HTTPAddr().String()})}, "http://10.200.0.1/hello")
	c := e.socksDial(t)
	_, _ = c.Write(socksConnectReq(ipDst(serverIP4, deadPort)))
	readSOCKSReply(t, c)
	e.tun.Close()
	logs := e.logs.String()
	if !strings.Contains(logs, "tunnel up") || !strings.Contains(logs, "tunnel closed") {
		t.Fatalf("logs:\n%s", logs)
	}
	for _, secret := range []string{"10.200.", "2001:db8", "web.test", fmt.Sprintf(":%d", e.srv.port), e.cfg.PrivateKey.String(), e.cfg.PrivateKey.Hex()} {
		if strings.Contains(logs, secret) {
			t.Errorf("Info logs contain %q:\n%s", secret, logs)
		}
	}
}

// Close ends listeners, connections in flight and every goroutine the
// tunnel started; it is idempotent.
func TestCloseNoLeaks(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		ck, _ := wg.NewPrivateKey()
		srv := newTestServer(t, ck.Public())
		tun, err := Start(clientConfig(t, ck, srv), Options{SOCKS5: "127.0.0.1:0", HTTP: "127.0.0.1:0", Logger: discardLogger()})
		if err != nil {
			t.Fatal(err)
		}
		// Traffic of every kind, and connections left open.
		d, _ := proxy.SOCKS5("tcp", tun.SOCKS5Addr().String(), nil, proxy.Direct)
		tr := &http.Transport{DialContext: d.(proxy.ContextDialer).DialContext}
		httpGet(t, tr, "http://10.200.0.1/hello")
		htr := &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: tun.HTTPAddr().String()})}
		httpGet(t, htr, "http://10.200.0.1/hello")
		open, err := d.Dial("tcp", "10.200.0.1:7")
		if err != nil {
			t.Fatal(err)
		}
		defer open.Close()
		resp, _, hc, _ := (&env{tun: tun}).rawHTTPProxy(t, "CONNECT 10.200.0.1:7 HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp.StatusCode != 200 {
			t.Fatal(resp.Status)
		}
		u, err := net.Dial("tcp", tun.SOCKS5Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer u.Close()
		_, _ = u.Write(append([]byte{5, 1, 0}, socksRequest{Cmd: cmdUDPAssociate, Dst: ipDst(netip.IPv4Unspecified(), 0)}.appendTo(nil)...))
		direct, err := tun.DialContext(context.Background(), "tcp", "10.200.0.1:7")
		if err != nil {
			t.Fatal(err)
		}
		defer direct.Close()
		idle, err := net.Dial("tcp", tun.SOCKS5Addr().String()) // mid-handshake
		if err != nil {
			t.Fatal(err)
		}
		defer idle.Close()
		time.Sleep(100 * time.Millisecond)

		done := make(chan error)
		go func() { done <- tun.Close() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Close: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Close hangs")
		}
		if err := tun.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		// Proxy connections were closed by the tunnel.
		expectEOF(t, hc, 5*time.Second)
		_ = open.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := open.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Fatalf("SOCKS5 connection survives Close: %v", err)
		}
		if _, err := tun.DialContext(context.Background(), "tcp", "10.200.0.1:7"); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("DialContext after Close: %v", err)
		}
		if c, err := net.DialTimeout("tcp", tun.SOCKS5Addr().String(), time.Second); err == nil {
			c.Close()
			t.Fatal("SOCKS5 listener still open")
		}
		tr.CloseIdleConnections()
		htr.CloseIdleConnections()
		srv.close()
	}()
	waitGoroutines(t, before)
}
