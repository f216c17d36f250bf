package control

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/internal/slowbody"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// serveTestServer runs a control server with cfg through Serve (the real
// listener, with its limits) on 127.0.0.1 and returns it with its URL.
func serveTestServer(t *testing.T, cfg Config) (*Server, string) {
	t.Helper()
	cfg.DataDir = t.TempDir()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	s, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l, nil) }()
	t.Cleanup(func() {
		cancel()
		<-done
		s.Close()
	})
	return s, URLFor(l)
}

// dialFrom opens a TCP connection to addr from the loopback address src.
func dialFrom(src, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return d.Dial("tcp", addr)
}

// refused reports whether the server closed c without answering a request.
func refused(c net.Conn) error {
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprint(c, "GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
	b, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return errors.New("connection still open after 5 s")
	}
	if len(b) > 0 {
		return fmt.Errorf("connection answered: %q", firstLine(b))
	}
	return nil
}

func firstLine(b []byte) string {
	l, _, _ := strings.Cut(string(b), "\n")
	return l
}

func metricLine(t *testing.T, url, prefix string) string {
	t.Helper()
	l, err := getMetric(url, prefix)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func getMetric(url, prefix string) (string, error) {
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), prefix+" ") {
			return sc.Text(), nil
		}
	}
	return "", sc.Err()
}

// A flood of slow request bodies from a few sources: every one is closed
// once its body falls behind, a source's connections beyond its cap are
// refused, and /health answers meanwhile.
func TestSlowBodyFlood(t *testing.T) {
	const sources, perSource = 12, 100
	s, url := serveTestServer(t, Config{Limits: Limits{MaxConns: sources*perSource + 100, MaxConnsPerSource: perSource, BodyTimeout: 3 * time.Second, BodyMinRate: 1024}})
	addr := strings.TrimPrefix(url, "http://")

	start := time.Now()
	var flood []*slowbody.Conn
	t.Cleanup(func() {
		for _, sb := range flood {
			sb.Close()
		}
	})
	for i := 0; i < sources; i++ {
		src := fmt.Sprintf("127.0.0.%d", 2+i)
		for j := 0; j < perSource; j++ {
			sb, err := slowbody.Open(src, addr, "/api/v1/gateways/join", 250*time.Millisecond, 30*time.Second)
			if err != nil {
				t.Fatalf("slow connection %d from %s: %v", j, src, err)
			}
			flood = append(flood, sb)
		}
	}

	t.Run("a source's connections beyond its cap are refused", func(t *testing.T) {
		c, err := dialFrom("127.0.0.2", addr)
		if err != nil {
			return // refused before it was accepted: as good
		}
		if err := refused(c); err != nil {
			t.Fatalf("connection %d from one source: %v", perSource+1, err)
		}
		if err := dialRefused("127.0.0.2", addr); err != nil {
			t.Fatalf("another connection from the capped source: %v", err)
		}
	})

	t.Run("health answers during the flood", func(t *testing.T) {
		hc := &http.Client{Timeout: 10 * time.Second}
		resp, err := hc.Get(url + "/api/v1/health")
		if err != nil {
			t.Fatalf("/health during the flood: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("/health during the flood: %s", resp.Status)
		}
	})

	t.Run("slow bodies are cut off", func(t *testing.T) {
		timeout := time.After(20 * time.Second) // the deadline is 3 s; the flood would trickle for 30 s
		open := len(flood)
		for _, sb := range flood {
			select {
			case <-sb.Closed():
				open--
			case <-timeout:
				t.Fatalf("%d of %d slow connections still open %s after they began", open, len(flood), time.Since(start).Round(time.Second))
			}
		}
		if got := metricLine(t, url, "meridian_control_api_slow_bodies_total"); got != fmt.Sprintf("meridian_control_api_slow_bodies_total %d", len(flood)) {
			t.Errorf("metric: %q, want %d slow bodies", got, len(flood))
		}
		if got := metricLine(t, url, `meridian_control_api_connections_refused_total{reason="per_source"}`); got == "" || strings.HasSuffix(got, " 0") {
			t.Errorf("metric of refused connections: %q", got)
		}
	})

	t.Run("the source may connect again", func(t *testing.T) {
		eventually(t, func() error {
			if n := s.conns.openConns(); n > 1 {
				return fmt.Errorf("%v connections still counted", n)
			}
			return nil
		})
		c := mustDial(t, "127.0.0.2", addr)
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprint(c, "GET /api/v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		b, _ := io.ReadAll(c)
		if !strings.HasPrefix(string(b), "HTTP/1.1 200") {
			t.Fatalf("after the flood: %q", firstLine(b))
		}
	})
}

// dialRefused connects from src to addr and reports an error unless the
// server refuses the connection: reset as it is accepted, which the
// client sees either in connect (when the reset beats the handshake's end
// on loopback) or when it first reads.
func dialRefused(src, addr string) error {
	c, err := dialFrom(src, addr)
	if errors.Is(err, syscall.ECONNRESET) {
		return nil
	}
	if err != nil {
		return err
	}
	return refused(c)
}

func mustDial(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	c, err := dialFrom(src, addr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// eventually retries f every 50 ms for up to 10 s.
func eventually(t *testing.T, f func() error) {
	t.Helper()
	var err error
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if err = f(); err == nil {
			return
		}
	}
	t.Fatal(err)
}

// At the global cap a connection from a light source takes the place of
// the heaviest source's oldest; when no source is heavier it is refused.
// Trusted proxies have no per-source cap and are not evicted.
func TestConnCaps(t *testing.T) {
	s, url := serveTestServer(t, Config{
		Limits:         Limits{MaxConns: 20, MaxConnsPerSource: 5},
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.9/32")},
	})
	addr := strings.TrimPrefix(url, "http://")
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	hold := func(src string) net.Conn {
		c := mustDial(t, src, addr)
		held = append(held, c)
		return c
	}
	health := func(c net.Conn) error {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprint(c, "GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
	// 10 from a trusted proxy, over the per-source cap it does not have;
	// each answers, so each has been accepted.
	for i := 0; i < 10; i++ {
		if err := health(hold("127.0.0.9")); err != nil {
			t.Fatalf("trusted proxy's connection %d: %v", i+1, err)
		}
	}
	heavy := map[net.Conn]bool{}
	for i := 0; i < 5; i++ {
		heavy[hold("127.0.0.10")] = true
	}
	for i := 0; i < 4; i++ {
		hold("127.0.0.11")
	}
	eventually(t, func() error {
		if n := s.conns.openConns(); n != 19 {
			return fmt.Errorf("%v connections open, want 19", n)
		}
		return nil
	})
	hold("127.0.0.13") // the 20th: the cap; 127.0.0.10 is the heaviest source
	if err := health(hold("127.0.0.12")); err != nil {
		t.Fatalf("a fresh source at the cap: %v", err)
	}
	if n := counterValue(s.limitMetrics.refused.WithLabelValues("evicted")); n != 1 {
		t.Fatalf("%v connections evicted, want 1", n)
	}
	closed := 0
	for c := range heavy {
		c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := c.Read(make([]byte, 1)); err != nil && !isTimeout(err) {
			closed++
		}
	}
	if closed != 1 {
		t.Fatalf("%d connections of the heaviest source closed, want its oldest", closed)
	}
	if n := s.conns.openConns(); n != 20 {
		t.Fatalf("%v connections counted, want 20", n)
	}

	// Three sources with one connection each fill a cap of 3: nobody is
	// heavier than a newcomer, so it is refused.
	s2, url2 := serveTestServer(t, Config{Limits: Limits{MaxConns: 3, MaxConnsPerSource: 5}})
	addr = strings.TrimPrefix(url2, "http://")
	for i := 0; i < 3; i++ {
		if err := health(hold(fmt.Sprintf("127.0.0.%d", 20+i))); err != nil {
			t.Fatal(err)
		}
	}
	for _, src := range []string{"127.0.0.23", "127.0.0.20"} {
		if err := dialRefused(src, addr); err != nil {
			t.Fatalf("a connection from %s over the cap of 3: %v", src, err)
		}
	}
	if n := counterValue(s2.limitMetrics.refused.WithLabelValues("max_conns")); n != 2 {
		t.Fatalf("%v connections refused at the cap, want 2", n)
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	c.Write(&m)
	return m.GetCounter().GetValue()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// A request body that arrives in time is not cut off, and once it has been
// read the deadline is lifted: a handler may take longer than
// BodyTimeout, with its context alive, and so may a GET without a body.
func TestBodyDeadlineLiftedAfterBody(t *testing.T) {
	s, _ := serveTestServer(t, Config{Limits: Limits{BodyTimeout: 300 * time.Millisecond, BodyMinRate: 1024}})
	h := s.limitBodies(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			writeError(w, http.StatusRequestTimeout, err.Error())
			return
		}
		select {
		case <-time.After(time.Second):
		case <-r.Context().Done():
			writeError(w, http.StatusInternalServerError, "request context ended: "+context.Cause(r.Context()).Error())
			return
		}
		fmt.Fprintf(w, "%d", len(b))
	}))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(l)
	defer hs.Close()
	hc := &http.Client{Timeout: 10 * time.Second}
	for _, method := range []string{"POST", "GET"} {
		var body io.Reader
		if method == "POST" {
			body = strings.NewReader(strings.Repeat("x", 5000))
		}
		req, _ := http.NewRequest(method, "http://"+l.Addr().String()+"/", body)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %s %s", method, resp.Status, b)
		}
	}
}

// Failed credentials from one source get 429 with Retry-After after a few;
// a valid token from that source still works, another source is not
// affected, and an untrusted peer's X-Forwarded-For does not move it to
// another source.
func TestAuthFailureBackoff(t *testing.T) {
	s, url := serveTestServer(t, Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.9/32")}})
	tok, err := s.CreateAdminToken(context.Background(), "ops")
	if err != nil {
		t.Fatal(err)
	}
	client := func(src string) *http.Client {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
	}
	get := func(hc *http.Client, token, xff string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", url+api.Prefix+"/users", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("Retry-After")
	}
	bad := adminTokenPrefix + "not-a-token"
	attacker := client("127.0.0.2")
	codes := map[int]int{}
	var retry string
	for i := 0; i < 30; i++ {
		code, ra := get(attacker, bad, fmt.Sprintf("198.51.100.%d", i)) // untrusted XFF: ignored
		codes[code]++
		if code == http.StatusTooManyRequests {
			retry = ra
		}
	}
	if codes[http.StatusUnauthorized] != authFree || codes[http.StatusTooManyRequests] != 30-authFree {
		t.Fatalf("30 bad tokens from one source: %v, want %d × 401 then 429", codes, authFree)
	}
	if retry == "" || retry == "0" {
		t.Fatalf("429 without a Retry-After: %q", retry)
	}
	if code, _ := get(attacker, tok, ""); code != http.StatusOK {
		t.Fatalf("valid token from the source in backoff: %d", code)
	}
	if code, _ := get(client("127.0.0.3"), bad, ""); code != http.StatusUnauthorized {
		t.Fatalf("bad token from another source: %d, want 401", code)
	}
	// Behind a trusted proxy the source is the forwarded address.
	proxy := client("127.0.0.9")
	for i := 0; i < authFree; i++ {
		get(proxy, bad, "203.0.113.7")
	}
	if code, _ := get(proxy, bad, "203.0.113.7"); code != http.StatusTooManyRequests {
		t.Fatalf("forwarded source past its failures: %d, want 429", code)
	}
	if code, _ := get(proxy, bad, "203.0.113.8"); code != http.StatusUnauthorized {
		t.Fatalf("another forwarded source behind the same proxy: %d, want 401", code)
	}
	if got := metricLine(t, url, "meridian_control_auth_backoff_total"); got != fmt.Sprintf("meridian_control_auth_backoff_total %d", 30-authFree+1) {
		t.Fatalf("metric: %q", got)
	}
}

// The table of failing sources stays bounded.
func TestAuthLimiterBounded(t *testing.T) {
	a := newAuthLimiter()
	now := time.Now()
	for i := 0; i < authSources+500; i++ {
		a.fail(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), now)
	}
	if len(a.bySrc) > authSources {
		t.Fatalf("%d sources remembered, want at most %d", len(a.bySrc), authSources)
	}
	// IPv6 sources are counted by /64.
	for i := 0; i < authFree; i++ {
		a.fail(netip.MustParseAddr(fmt.Sprintf("2001:db8::%x", i+1)), now)
	}
	if wait := a.fail(netip.MustParseAddr("2001:db8::ffff"), now); wait != authBaseWait {
		t.Fatalf("failure %d from one /64: wait %s, want %s", authFree+1, wait, authBaseWait)
	}
	if wait := a.fail(netip.MustParseAddr("2001:db8::ffff"), now.Add(authForget+time.Second)); wait != 0 {
		t.Fatalf("after %s without failures: wait %s, want 0", authForget, wait)
	}
}
