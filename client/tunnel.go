// Package client is the rootless Meridian client behind `meridian connect`.
//
// Start brings a WireGuard tunnel up entirely in userspace — wireguard-go
// over a gVisor network stack (package netstack), with the standard UDP bind —
// from a wg.Config, and exposes the tunnel on the local machine as a SOCKS5
// proxy, an HTTP proxy, or both. No root, no TUN device, no routing table
// changes: only the programs pointed at the proxies (or using
// Tunnel.DialContext) go through the VPN. StartTUN is the other mode: a kernel
// TUN with routes, for the whole machine, which needs CAP_NET_ADMIN.
//
// Privacy: destinations and the user's WireGuard endpoint are never logged.
// The package logs aggregate counts only; wireguard-go's own messages, which
// may carry endpoint addresses, are logged at Debug level.
package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/meridian-vpn/meridian/netstack"
	"github.com/meridian-vpn/meridian/wg"
)

// DefaultMTU is the tunnel MTU used when the configuration sets none (the
// wg-quick default for IPv4+IPv6 over an Ethernet-sized path).
const DefaultMTU = 1420

// DefaultMaxConns bounds the number of simultaneous proxy client connections
// (SOCKS5 and HTTP together) when Options.MaxConns is zero.
const DefaultMaxConns = 1024

// Timeouts, variables so that the package's tests can shorten them.
var (
	// handshakeTimeout bounds a SOCKS5 greeting+request, and the reading of
	// an HTTP proxy request's headers.
	handshakeTimeout = 10 * time.Second
	// dialTimeout bounds one connection attempt through the tunnel made on
	// behalf of a proxy client.
	dialTimeout = 30 * time.Second
	// lingerTimeout bounds how long a refused connection is drained after the
	// error reply, so the reply is not lost to a TCP reset.
	lingerTimeout = time.Second
)

// Options configures the local proxies of a Tunnel.
type Options struct {
	// SOCKS5 is the listen address of a SOCKS5 proxy, e.g. 127.0.0.1:1080;
	// "" = no SOCKS5 proxy. A missing host (":1080") means loopback.
	SOCKS5 string
	// HTTP is the listen address of an HTTP proxy (CONNECT and absolute-form
	// http:// requests); "" = no HTTP proxy. A missing host means loopback.
	HTTP string
	// Logger receives the tunnel's logs; nil = slog.Default().
	Logger *slog.Logger
	// MaxConns bounds simultaneous proxy client connections, over both
	// proxies; 0 = DefaultMaxConns. Connections over the bound are closed at
	// once.
	MaxConns int
}

// Tunnel is a running userspace WireGuard tunnel with its local proxies.
type Tunnel struct {
	log     *slog.Logger
	dev     *device.Device
	ns      *netstack.Stack
	dialTTL time.Duration

	ctx    context.Context // canceled by Close
	cancel context.CancelFunc

	peerMu sync.Mutex
	peer   wg.PeerConfig // the gateway in use; SwitchGateway replaces it

	socksLn   net.Listener
	httpLn    net.Listener
	httpSrv   *http.Server
	transport *http.Transport

	slots chan struct{} // proxy connection slots
	tr    tracker

	stats counters

	closeOnce sync.Once
	closeErr  error
}

// counters are aggregate, destination-free statistics.
type counters struct {
	socksConns   atomic.Uint64 // SOCKS5 client connections accepted
	socksConnect atomic.Uint64 // SOCKS5 CONNECTs that succeeded
	socksUDP     atomic.Uint64 // SOCKS5 UDP associations
	httpConnect  atomic.Uint64 // HTTP CONNECT tunnels that succeeded
	httpForward  atomic.Uint64 // absolute-form requests forwarded
	dialFailures atomic.Uint64 // dials through the tunnel that failed
	protoErrors  atomic.Uint64 // malformed or unsupported proxy requests
	rejected     atomic.Uint64 // connections refused over MaxConns
	bytesOut     atomic.Uint64 // bytes sent into the tunnel by the proxies
	bytesIn      atomic.Uint64 // bytes received from the tunnel by the proxies
}

// Stats is a snapshot of aggregate proxy statistics. It holds no addresses.
type Stats struct {
	SOCKS5Conns, SOCKS5Connects, SOCKS5UDPAssociations uint64
	HTTPConnects, HTTPForwarded                        uint64
	DialFailures, ProtocolErrors, Rejected             uint64
	BytesOut, BytesIn                                  uint64
}

// Stats returns aggregate counts since Start.
func (t *Tunnel) Stats() Stats {
	s := &t.stats
	return Stats{
		SOCKS5Conns: s.socksConns.Load(), SOCKS5Connects: s.socksConnect.Load(),
		SOCKS5UDPAssociations: s.socksUDP.Load(),
		HTTPConnects:          s.httpConnect.Load(), HTTPForwarded: s.httpForward.Load(),
		DialFailures: s.dialFailures.Load(), ProtocolErrors: s.protoErrors.Load(),
		Rejected: s.rejected.Load(), BytesOut: s.bytesOut.Load(), BytesIn: s.bytesIn.Load(),
	}
}

// Start brings the WireGuard device up in userspace with cfg and starts the
// proxies that opts asks for. Close releases everything.
func Start(cfg *wg.Config, opts Options) (*Tunnel, error) {
	addrs, mtu, uapi, err := checkConfig(cfg)
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	maxConns := opts.MaxConns
	if maxConns <= 0 {
		maxConns = DefaultMaxConns
	}

	var ips []netip.Addr
	for _, p := range addrs {
		ips = append(ips, p.Addr())
	}
	ns, err := netstack.New(netstack.Config{Addresses: ips, MTU: mtu, DNS: cfg.DNS})
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	dev, err := startDevice(ns, uapi, log)
	if err != nil {
		return nil, err
	}

	ctx, cancel := context.WithCancel(context.Background())
	t := &Tunnel{
		log:     log,
		dev:     dev,
		ns:      ns,
		peer:    cfg.Peers[0],
		dialTTL: dialTimeout,
		ctx:     ctx,
		cancel:  cancel,
		slots:   make(chan struct{}, maxConns),
	}
	t.transport = &http.Transport{
		Proxy: nil, // never chain to the environment's proxy
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, t.dialTTL)
			defer cancel()
			return t.DialContext(ctx, network, addr)
		},
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true, // pass Accept-Encoding and bodies through untouched
	}

	if opts.SOCKS5 != "" {
		ln, err := listenLocal(opts.SOCKS5)
		if err != nil {
			t.abort()
			return nil, fmt.Errorf("client: SOCKS5 listener: %w", err)
		}
		t.socksLn = &limitListener{Listener: ln, t: t}
	}
	if opts.HTTP != "" {
		ln, err := listenLocal(opts.HTTP)
		if err != nil {
			t.abort()
			return nil, fmt.Errorf("client: HTTP proxy listener: %w", err)
		}
		t.httpLn = &limitListener{Listener: ln, t: t}
	}

	if t.socksLn != nil {
		t.warnIfExposed("socks5", t.socksLn.Addr())
		t.tr.begin()
		go t.serveSOCKS(t.socksLn)
	}
	if t.httpLn != nil {
		t.warnIfExposed("http", t.httpLn.Addr())
		t.httpSrv = t.newHTTPServer()
		t.tr.begin()
		go func() {
			defer t.tr.end()
			_ = t.httpSrv.Serve(t.httpLn)
		}()
	}

	attrs := []any{"peers", len(cfg.Peers), "addresses", len(addrs), "dns_servers", len(cfg.DNS), "mtu", mtu}
	if t.socksLn != nil {
		attrs = append(attrs, "socks5", t.socksLn.Addr().String())
	}
	if t.httpLn != nil {
		attrs = append(attrs, "http", t.httpLn.Addr().String())
	}
	log.Info("tunnel up", attrs...)
	return t, nil
}

// checkConfig validates cfg and returns the interface addresses, the MTU
// (DefaultMTU if unset) and the UAPI configuration.
func checkConfig(cfg *wg.Config) (addrs []netip.Prefix, mtu int, uapi string, err error) {
	if cfg == nil {
		return nil, 0, "", errors.New("client: nil config")
	}
	if cfg.PrivateKey.IsZero() {
		return nil, 0, "", errors.New("client: config has no private key")
	}
	if len(cfg.Peers) == 0 {
		return nil, 0, "", errors.New("client: config has no peer")
	}
	for _, p := range cfg.Addresses {
		if p.IsValid() {
			addrs = append(addrs, p)
		}
	}
	if len(addrs) == 0 {
		return nil, 0, "", errors.New("client: config has no interface address")
	}
	mtu = cfg.MTU
	if mtu == 0 {
		mtu = DefaultMTU
	}
	if mtu < 576 || mtu > 65535 {
		return nil, 0, "", fmt.Errorf("client: MTU %d out of range 576..65535", mtu)
	}
	if uapi, err = cfg.UAPI(); err != nil {
		return nil, 0, "", fmt.Errorf("client: %w", err)
	}
	return addrs, mtu, uapi, nil
}

// startDevice runs a wireguard-go device with the standard UDP bind on
// tunDev, configured by uapi. On error tunDev is closed.
func startDevice(tunDev tun.Device, uapi string, log *slog.Logger) (*device.Device, error) {
	dev := device.NewDevice(tunDev, conn.NewDefaultBind(), deviceLogger(log))
	if err := dev.IpcSet(uapi); err != nil {
		dev.Close()
		return nil, fmt.Errorf("client: configuring WireGuard device: %w", err)
	}
	if err := dev.Up(); err != nil {
		dev.Close()
		return nil, fmt.Errorf("client: bringing WireGuard device up: %w", err)
	}
	return dev, nil
}

// abort undoes a partial Start.
func (t *Tunnel) abort() {
	t.cancel()
	if t.socksLn != nil {
		t.socksLn.Close()
	}
	if t.httpLn != nil {
		t.httpLn.Close()
	}
	t.dev.Close()
}

func (t *Tunnel) warnIfExposed(proxy string, a net.Addr) {
	if ta, ok := a.(*net.TCPAddr); ok && !ta.IP.IsLoopback() {
		t.log.Warn("proxy listens beyond loopback and has no authentication: anyone who can reach it can use the VPN",
			"proxy", proxy, "listen", a.String())
	}
}

// listenLocal listens on TCP addr; an empty host means the IPv4 loopback.
func listenLocal(addr string) (net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.Listen("tcp", net.JoinHostPort(host, port))
}

// deviceLogger routes wireguard-go's messages to Debug: they may name the
// peer's endpoint, which is personal data.
func deviceLogger(log *slog.Logger) *device.Logger {
	logf := func(level string) func(string, ...any) {
		return func(format string, args ...any) {
			if !log.Enabled(context.Background(), slog.LevelDebug) {
				return
			}
			log.Debug(fmt.Sprintf(format, args...), "component", "wireguard", "wg_level", level)
		}
	}
	return &device.Logger{Verbosef: logf("verbose"), Errorf: logf("error")}
}

// SOCKS5Addr is the SOCKS5 proxy's actual listen address, or nil.
func (t *Tunnel) SOCKS5Addr() net.Addr {
	if t.socksLn == nil {
		return nil
	}
	return t.socksLn.Addr()
}

// HTTPAddr is the HTTP proxy's actual listen address, or nil.
func (t *Tunnel) HTTPAddr() net.Addr {
	if t.httpLn == nil {
		return nil
	}
	return t.httpLn.Addr()
}

// LastHandshake is the most recent completed handshake over all peers, or
// the zero time if there has been none.
func (t *Tunnel) LastHandshake() time.Time { return deviceHandshake(t.dev) }

func deviceHandshake(dev *device.Device) time.Time {
	s, err := dev.IpcGet()
	if err != nil {
		return time.Time{}
	}
	return lastHandshake(s)
}

// lastHandshake finds the latest last_handshake_time in IpcGet output.
func lastHandshake(uapi string) time.Time {
	var latest time.Time
	var sec, nsec int64
	flush := func() {
		if sec == 0 && nsec == 0 {
			return
		}
		if ts := time.Unix(sec, nsec); ts.After(latest) {
			latest = ts
		}
		sec, nsec = 0, 0
	}
	sc := bufio.NewScanner(strings.NewReader(uapi))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		switch k {
		case "public_key":
			flush()
		case "last_handshake_time_sec":
			sec, _ = strconv.ParseInt(v, 10, 64)
		case "last_handshake_time_nsec":
			nsec, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	flush()
	return latest
}

// DialContext connects to addr through the tunnel. network is one of tcp,
// tcp4, tcp6, udp, udp4, udp6. The host of addr is an IP literal or a name
// resolved over the tunnel by the configuration's DNS servers.
//
// Failures are *net.OpError values; where the tunnel's stack reports it,
// Err is syscall.ECONNREFUSED, syscall.EHOSTUNREACH or syscall.ENETUNREACH.
func (t *Tunnel) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if t.ctx.Err() != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: net.ErrClosed}
	}
	if _, port, err := net.SplitHostPort(addr); err == nil {
		if p, err := strconv.ParseUint(port, 10, 16); err == nil && p == 0 {
			return nil, &net.OpError{Op: "dial", Net: network, Err: errors.New("port 0 is not a destination")}
		}
	}
	// Close cancels dials in progress.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(t.ctx, cancel)
	defer stop()
	return t.ns.DialContext(ctx, network, addr)
}

// Close stops the proxies, closes every connection they carry, closes the
// WireGuard device and waits for the package's goroutines to end.
func (t *Tunnel) Close() error {
	t.closeOnce.Do(func() {
		t.cancel()
		var errs []error
		if t.socksLn != nil {
			if err := t.socksLn.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				errs = append(errs, err)
			}
		}
		if t.httpSrv != nil {
			// Closes the listener and the connections it still owns;
			// hijacked CONNECT connections are in t.tr.
			if err := t.httpSrv.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				errs = append(errs, err)
			}
		} else if t.httpLn != nil {
			t.httpLn.Close()
		}
		t.tr.shutdown()
		t.transport.CloseIdleConnections()
		t.dev.Close()
		<-t.dev.Wait()
		s := t.Stats()
		t.log.Info("tunnel closed",
			"socks5_conns", s.SOCKS5Conns, "socks5_connects", s.SOCKS5Connects,
			"socks5_udp", s.SOCKS5UDPAssociations,
			"http_connects", s.HTTPConnects, "http_forwarded", s.HTTPForwarded,
			"dial_failures", s.DialFailures, "protocol_errors", s.ProtocolErrors,
			"rejected", s.Rejected, "bytes_out", s.BytesOut, "bytes_in", s.BytesIn)
		t.closeErr = errors.Join(errs...)
	})
	return t.closeErr
}

// tracker holds the goroutines and connections that Close must end.
type tracker struct {
	mu     sync.Mutex
	closed bool
	conns  map[closer]struct{}
	wg     sync.WaitGroup
}

type closer interface{ Close() error }

// begin registers a goroutine; false once shutdown has started.
func (tr *tracker) begin() bool {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.closed {
		return false
	}
	tr.wg.Add(1)
	return true
}

func (tr *tracker) end() { tr.wg.Done() }

// add registers c to be closed by shutdown; false (and c is left alone)
// once shutdown has started.
func (tr *tracker) add(c closer) bool {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.closed {
		return false
	}
	if tr.conns == nil {
		tr.conns = make(map[closer]struct{})
	}
	tr.conns[c] = struct{}{}
	return true
}

func (tr *tracker) remove(c closer) {
	tr.mu.Lock()
	delete(tr.conns, c)
	tr.mu.Unlock()
}

// shutdown closes every registered connection and waits for every
// registered goroutine.
func (tr *tracker) shutdown() {
	tr.mu.Lock()
	tr.closed = true
	conns := tr.conns
	tr.conns = nil
	tr.mu.Unlock()
	for c := range conns {
		c.Close()
	}
	tr.wg.Wait()
}

// limitListener closes connections beyond the tunnel's MaxConns at once.
type limitListener struct {
	net.Listener
	t *Tunnel
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.t.slots <- struct{}{}:
			return &limitConn{Conn: c, slots: l.t.slots}, nil
		default:
			l.t.stats.rejected.Add(1)
			c.Close()
		}
	}
}

// limitConn frees its slot on the first Close.
type limitConn struct {
	net.Conn
	slots chan struct{}
	once  sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { <-c.slots })
	return err
}

// CloseWrite half-closes the underlying TCP connection.
func (c *limitConn) CloseWrite() error {
	return closeWrite(c.Conn)
}
