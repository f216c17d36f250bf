package client

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// hijackRecorder is a ResponseRecorder that can be hijacked, as the proxy's
// real connections can; the proxy hijacks only after its dial succeeded,
// which a closed tunnel never lets happen.
type hijackRecorder struct{ *httptest.ResponseRecorder }

func (hijackRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return nil, nil, errors.New("hijack after a dial through a closed tunnel")
}

// closedTunnel is a Tunnel whose every dial fails at once (it has been
// closed), with a transport that records the addresses the proxy asked it
// to dial.
func closedTunnel(dialed *[]string, mu *sync.Mutex) *Tunnel {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	t := &Tunnel{log: slog.New(slog.DiscardHandler), ctx: ctx, cancel: cancel, dialTTL: time.Second}
	t.transport = &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			mu.Lock()
			*dialed = append(*dialed, addr)
			mu.Unlock()
			return t.DialContext(ctx, network, addr)
		},
	}
	return t
}

// validAuthority is an independent statement of what CONNECT may dial:
// a non-empty host and a decimal port 1-65535.
func validAuthority(a string) bool {
	host, port, err := net.SplitHostPort(a)
	if err != nil || host == "" || port == "" {
		return false
	}
	for _, c := range port {
		if c < '0' || c > '9' {
			return false
		}
	}
	n, err := strconv.Atoi(port)
	return err == nil && n >= 1 && n <= 65535
}

// FuzzHTTPProxyRequest: whatever request line and headers a client sends,
// the proxy never panics; it dials (here: fails with 502, the tunnel being
// closed) only a CONNECT authority with a host and a port 1-65535, or an
// absolute-form http:// URL with a host, and answers anything else 400
// with its own words, counted as a protocol error.
func FuzzHTTPProxyRequest(f *testing.F) {
	for _, s := range []string{
		"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
		"CONNECT 198.51.100.7:443 HTTP/1.1\r\nHost: 198.51.100.7:443\r\n\r\n",
		"CONNECT [2001:db8::1]:443 HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n\r\n",
		"CONNECT example.com HTTP/1.1\r\nHost: example.com\r\n\r\n",
		"CONNECT example.com:0 HTTP/1.1\r\nHost: example.com:0\r\n\r\n",
		"CONNECT example.com:65536 HTTP/1.1\r\n\r\n",
		"CONNECT :443 HTTP/1.1\r\nHost: :443\r\n\r\n",
		"CONNECT /x HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
		"CONNECT example.com:+443 HTTP/1.1\r\n\r\n",
		"GET http://example.com/index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nProxy-Authorization: Basic eDp5\r\n\r\n",
		"GET http://198.51.100.7:8080/ HTTP/1.0\r\n\r\n",
		"POST http://[2001:db8::1]/form HTTP/1.1\r\nHost: [2001:db8::1]\r\nContent-Length: 3\r\n\r\nabc",
		"GET https://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n",
		"GET ftp://example.com/ HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
		"GET http:/// HTTP/1.1\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(data)))
		if err != nil {
			return // net/http answers 400 itself before the proxy sees it
		}
		var mu sync.Mutex
		var dialed []string
		tun := closedTunnel(&dialed, &mu)
		h := tun.newHTTPServer().Handler
		rec := hijackRecorder{httptest.NewRecorder()}
		h.ServeHTTP(rec, r)
		io.Copy(io.Discard, r.Body)

		body := rec.Body.String()
		if !strings.HasPrefix(body, "meridian proxy: ") {
			t.Fatalf("%d answer not in the proxy's words: %q", rec.Code, body)
		}
		st := tun.Stats()
		switch rec.Code {
		case http.StatusBadRequest:
			if st.ProtocolErrors != 1 || st.DialFailures != 0 || len(dialed) != 0 {
				t.Fatalf("400 with stats %+v, dialed %q", st, dialed)
			}
			if r.Method == http.MethodConnect {
				target := r.URL.Host
				if target == "" {
					target = r.Host
				}
				if validAuthority(target) {
					t.Fatalf("CONNECT %q refused", target)
				}
			} else if r.URL.IsAbs() && r.URL.Scheme == "http" && validAuthority(urlAuthority(r.URL)) {
				t.Fatalf("absolute-form %q refused", r.URL)
			}
		case http.StatusBadGateway:
			if st.ProtocolErrors != 0 || st.DialFailures != 1 {
				t.Fatalf("502 with stats %+v", st)
			}
			if r.Method == http.MethodConnect {
				target := r.URL.Host
				if target == "" {
					target = r.Host
				}
				if !validAuthority(target) {
					t.Fatalf("CONNECT dialed %q", target)
				}
				return
			}
			if r.URL.Scheme != "http" || r.URL.Host == "" {
				t.Fatalf("forwarded %q", r.URL)
			}
			for _, a := range dialed {
				if !validAuthority(a) {
					t.Fatalf("forwarding %q dialed %q", r.URL, a)
				}
			}
		default:
			t.Fatalf("answer %d %q", rec.Code, body)
		}
	})
}
