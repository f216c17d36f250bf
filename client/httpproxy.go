package client

import (
	"context"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"time"
)

func (t *Tunnel) newHTTPServer() *http.Server {
	p := &httpProxy{t: t}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			// The request is already absolute-form; keep URL and Host as the
			// client sent them. Rewrite mode strips hop-by-hop headers
			// (including those named in Connection, and Proxy-*) and adds
			// no X-Forwarded-For.
			pr.Out.Host = pr.In.Host
		},
		Transport:    t.transport,
		ErrorHandler: p.forwardError,
		ErrorLog:     debugLog(t.log, "http proxy"),
	}
	return &http.Server{
		Handler:           p,
		ReadHeaderTimeout: handshakeTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          debugLog(t.log, "http proxy"),
		BaseContext:       func(net.Listener) context.Context { return t.ctx },
	}
}

// debugLog adapts net/http's error log to slog at Debug level: its lines may
// carry remote addresses.
func debugLog(l *slog.Logger, component string) *log.Logger {
	return log.New(debugWriter{l, component}, "", 0)
}

type debugWriter struct {
	l         *slog.Logger
	component string
}

func (w debugWriter) Write(p []byte) (int, error) {
	w.l.Debug(string(p), "component", w.component)
	return len(p), nil
}

type httpProxy struct {
	t  *Tunnel
	rp *httputil.ReverseProxy
}

func (p *httpProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !p.t.tr.begin() {
		http.Error(w, "meridian proxy: shutting down", http.StatusServiceUnavailable)
		return
	}
	defer p.t.tr.end()
	switch {
	case r.Method == http.MethodConnect:
		p.connect(w, r)
	case r.URL.IsAbs() && r.URL.Scheme == "http" && dialable(urlAuthority(r.URL)):
		p.t.stats.httpForward.Add(1)
		p.rp.ServeHTTP(w, r)
	case r.URL.IsAbs():
		p.t.stats.protoErrors.Add(1)
		http.Error(w, "meridian proxy: only http:// URLs can be forwarded; use CONNECT for https", http.StatusBadRequest)
	default:
		p.t.stats.protoErrors.Add(1)
		http.Error(w, "meridian proxy: this is an HTTP proxy; send CONNECT or an absolute-form http:// request", http.StatusBadRequest)
	}
}

// dialable reports whether authority is a host and a port 1-65535, the
// only destinations the proxy dials.
func dialable(authority string) bool {
	host, port, err := net.SplitHostPort(authority)
	n, perr := strconv.ParseUint(port, 10, 16)
	return err == nil && perr == nil && n != 0 && host != ""
}

// urlAuthority is the host:port an absolute-form http:// URL is fetched
// from, port 80 unless it names one.
func urlAuthority(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "80"
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// forwardError answers a failed forwarded request.
func (p *httpProxy) forwardError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil && p.t.ctx.Err() == nil {
		return // the client went away; nobody to answer
	}
	p.t.stats.dialFailures.Add(1)
	_, why := dialFailure(err)
	p.t.log.Debug("http proxy request failed", "reason", why)
	badGateway(w, why)
}

func badGateway(w http.ResponseWriter, why string) {
	http.Error(w, "meridian proxy: cannot reach the destination through the VPN tunnel: "+why, http.StatusBadGateway)
}

// connect serves CONNECT host:port by splicing the client's connection to a
// tunnel connection.
func (p *httpProxy) connect(w http.ResponseWriter, r *http.Request) {
	target := r.URL.Host
	if target == "" {
		target = r.Host
	}
	if !dialable(target) {
		p.t.stats.protoErrors.Add(1)
		http.Error(w, "meridian proxy: CONNECT needs host:port", http.StatusBadRequest)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "meridian proxy: CONNECT is not supported on this connection", http.StatusHTTPVersionNotSupported)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), p.t.dialTTL)
	remote, err := p.t.DialContext(ctx, "tcp", target)
	cancel()
	if err != nil {
		p.t.stats.dialFailures.Add(1)
		_, why := dialFailure(err)
		p.t.log.Debug("http proxy connect failed", "reason", why)
		badGateway(w, why)
		return
	}
	if !p.t.tr.add(remote) {
		remote.Close()
		http.Error(w, "meridian proxy: shutting down", http.StatusServiceUnavailable)
		return
	}
	defer func() {
		p.t.tr.remove(remote)
		remote.Close()
	}()
	c, brw, err := hj.Hijack()
	if err != nil {
		return
	}
	if !p.t.tr.add(c) {
		c.Close()
		return
	}
	defer func() {
		p.t.tr.remove(c)
		c.Close()
	}()
	_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	// Bytes the client sent after its request (e.g. a TLS ClientHello) may
	// already sit in the server's read buffer.
	if n := brw.Reader.Buffered(); n > 0 {
		early, _ := brw.Reader.Peek(n)
		if _, err := remote.Write(early); err != nil {
			return
		}
		p.t.stats.bytesOut.Add(uint64(n))
	}
	_ = c.SetDeadline(time.Time{})
	p.t.stats.httpConnect.Add(1)
	p.t.relay(c, remote)
}
