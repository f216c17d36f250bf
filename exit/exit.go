// Package exit is the rootless userspace exit of a gateway.
//
// wireguard-go runs on a tun.Device that is a gVisor netstack (package
// netstack) instead of a kernel TUN. Packets from peers arrive decrypted in
// the netstack, which terminates their TCP and UDP flows; each flow is relayed
// to an ordinary host socket, so the gateway needs no root, no TUN and no NAT
// rules. An egress Policy keeps peers away from the host itself and the
// networks around it.
//
// Where a duty requires attribution records, each session owns a block of
// source ports (Config.SourcePorts): its flows leave from those ports on the
// exit address and from no other, so that an exit address, port and time
// lead to the session (RFC 7422) without a record per connection.
package exit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/meridian-vpn/meridian/netstack"
)

// Config configures an Exit. Zero values get the documented defaults.
type Config struct {
	// Addresses are the gateway's own tunnel addresses (e.g. 10.200.0.1/16,
	// fd00::1/64). The netstack answers on them, and they are denied as
	// egress targets.
	Addresses []netip.Prefix
	// MTU of the tunnel; default 1420.
	MTU int
	// Allow lists destinations that are reachable even though the deny list
	// matches them or they are the host's own (e.g. 127.0.0.1/32 for tests,
	// or a local resolver). Any other address of the host is denied, as the
	// host has it at the time of each flow.
	Allow []netip.Prefix
	// MaxConns caps in-flight forwarded flows (TCP and UDP); default 8192.
	MaxConns int
	// MaxConnsPerPeer caps flows per source tunnel address; default 512.
	MaxConnsPerPeer int
	// UDPIdle closes a UDP flow after this long without traffic in either
	// direction; default 60s.
	UDPIdle time.Duration
	// TCPIdle resets a TCP flow after this long without data in either
	// direction; default DefaultTCPIdle. Keepalive probes, which the exit answers on each leg itself, do
	// not count as data: they only end the flows of peers and destinations
	// that have gone away.
	TCPIdle time.Duration
	// DialTimeout bounds connecting to a TCP destination; default 10s.
	DialTimeout time.Duration
	// ExitIPv4 and ExitIPv6, if set, are the host addresses that flows of
	// their family leave from; otherwise the host picks one by route. They
	// must be addresses of this host.
	ExitIPv4, ExitIPv6 netip.Addr
	// SourcePorts, if set, is asked for each new flow from a peer's tunnel
	// address src. A flow that is not attributed leaves from an ephemeral
	// port, as without the hook. An attributed flow (a session that owes an
	// attribution record) leaves from a port in lo..hi on the exit address
	// of its family, and from no other port: it is refused, and counted in
	// Stats.Unattributed, when lo is 0 (the session holds no block), when
	// that family has no exit address, or when every port is busy.
	SourcePorts func(src netip.Addr) (lo, hi uint16, attributed bool)
	// Logger gets aggregate events only: it never sees a tunnel or
	// destination address, at any level. Default: discard.
	Logger *slog.Logger
}

// DefaultTCPIdle is the default of Config.TCPIdle: 2h4m, the least that
// RFC 5382 (REQ-5) lets a NAT wait before it ends an idle TCP connection.
const DefaultTCPIdle = 2*time.Hour + 4*time.Minute

// Stats are aggregate counters; they hold no addresses.
type Stats struct {
	TCPOpen, UDPOpen int64  // flows being relayed now
	TCPTotal         uint64 // TCP flows relayed since New
	UDPTotal         uint64 // UDP flows relayed since New
	Denied           uint64 // flows (for UDP: datagrams) refused by the egress policy
	Refused          uint64 // flows whose destination could not be reached
	CapHit           uint64 // flows (for UDP: datagrams) refused by MaxConns or MaxConnsPerPeer
	Unattributed     uint64 // flows (for UDP: datagrams) of attributed sessions refused for want of a source port of their block
}

const (
	defaultMTU             = 1420
	defaultMaxConns        = 8192
	defaultMaxConnsPerPeer = 512
	defaultUDPIdle         = 60 * time.Second
	defaultDialTimeout     = 10 * time.Second

	// maxUDPPacket is the largest UDP payload relayed in either direction.
	maxUDPPacket = 65535

	// Keepalive on both legs of a TCP flow, so that flows to vanished peers
	// or hosts end and free their slot under the caps.
	keepAliveIdle     = 60 * time.Second
	keepAliveInterval = 15 * time.Second
	keepAliveCount    = 4
)

// Exit is a netstack-backed tun.Device that forwards peers' TCP and UDP flows
// to host sockets.
type Exit struct {
	cfg      Config
	log      *slog.Logger
	policy   *Policy
	tunAddrs []netip.Addr
	dialer   net.Dialer

	ns *netstack.Stack

	// ctx is cancelled by Close; it stops pending dials and all flows.
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	closed   bool
	open     int
	perPeer  map[netip.Addr]*peerFlows
	udpBound map[udpBinding]bool // attributed UDP flows: a block's port is shared, never towards the same destination
	flows    sync.WaitGroup      // one per acquired slot

	closeOnce sync.Once

	tcpOpen, udpOpen                                          atomic.Int64
	tcpTotal, udpTotal, denied, refused, capHit, unattributed atomic.Uint64
}

// peerFlows are the flows of one tunnel address: how many, and a context
// that ends them all (CloseFlows).
type peerFlows struct {
	src    netip.Addr
	n      int
	ctx    context.Context
	cancel context.CancelFunc
}

type udpBinding struct{ from, to netip.AddrPort }

// New builds the netstack and its forwarders. Hand Device to
// device.NewDevice; Close (or closing the wireguard-go device) tears it down.
func New(cfg Config) (*Exit, error) {
	if cfg.MTU == 0 {
		cfg.MTU = defaultMTU
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = defaultMaxConns
	}
	if cfg.MaxConnsPerPeer == 0 {
		cfg.MaxConnsPerPeer = defaultMaxConnsPerPeer
	}
	if cfg.UDPIdle == 0 {
		cfg.UDPIdle = defaultUDPIdle
	}
	if cfg.TCPIdle == 0 {
		cfg.TCPIdle = DefaultTCPIdle
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = defaultDialTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case cfg.MaxConns < 0 || cfg.MaxConnsPerPeer < 0:
		return nil, errors.New("exit: connection caps must not be negative")
	case cfg.UDPIdle < 0 || cfg.TCPIdle < 0 || cfg.DialTimeout < 0:
		return nil, errors.New("exit: timeouts must not be negative")
	}

	e := &Exit{
		cfg:      cfg,
		log:      cfg.Logger,
		perPeer:  make(map[netip.Addr]*peerFlows),
		udpBound: make(map[udpBinding]bool),
		dialer: net.Dialer{
			KeepAliveConfig: net.KeepAliveConfig{
				Enable:   true,
				Idle:     keepAliveIdle,
				Interval: keepAliveInterval,
				Count:    keepAliveCount,
			},
		},
	}
	if err := checkExitAddrs(cfg.ExitIPv4, cfg.ExitIPv6); err != nil {
		return nil, err
	}
	for _, p := range cfg.Addresses {
		if !p.IsValid() {
			return nil, errors.New("exit: invalid tunnel address")
		}
		e.tunAddrs = append(e.tunAddrs, p.Addr().Unmap().WithZone(""))
	}
	e.policy = NewHostPolicy(cfg.Allow, e.tunAddrs)

	ns, err := netstack.New(netstack.Config{Addresses: e.tunAddrs, MTU: cfg.MTU, Accept: func(pkt []byte) bool { return !e.foreignEcho(pkt) }})
	if err != nil {
		return nil, fmt.Errorf("exit: %w", err)
	}
	e.ns = ns
	if err := e.initStack(); err != nil {
		ns.Close()
		return nil, err
	}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	e.log.Info("exit ready", "mtu", cfg.MTU, "max_conns", cfg.MaxConns, "max_conns_per_peer", cfg.MaxConnsPerPeer)
	return e, nil
}

// initStack makes the netstack a forwarding exit: promiscuous, so that it
// accepts packets for any destination, not only its own addresses; spoofing,
// so that it replies from those destinations' addresses; and forwarders that
// relay each new TCP and UDP flow to a host socket.
func (e *Exit) initStack() error {
	s := e.ns.GVisor()
	if err := s.SetPromiscuousMode(netstack.NIC, true); err != nil {
		return fmt.Errorf("exit: set promiscuous mode: %v", err)
	}
	if err := s.SetSpoofing(netstack.NIC, true); err != nil {
		return fmt.Errorf("exit: set spoofing: %v", err)
	}
	tcpFwd := tcp.NewForwarder(s, tcp.DefaultReceiveBufferSize, e.cfg.MaxConns, e.forwardTCP)
	s.SetTransportProtocolHandler(tcp.ProtocolNumber, tcpFwd.HandlePacket)
	udpFwd := udp.NewForwarder(s, e.forwardUDP)
	s.SetTransportProtocolHandler(udp.ProtocolNumber, udpFwd.HandlePacket)
	return nil
}

// Device returns the tun.Device to hand to device.NewDevice. Closing it
// closes the Exit.
func (e *Exit) Device() tun.Device { return device{Device: e.ns, e: e} }

// Stats returns aggregate counters.
func (e *Exit) Stats() Stats {
	return Stats{
		TCPOpen:  e.tcpOpen.Load(),
		UDPOpen:  e.udpOpen.Load(),
		TCPTotal: e.tcpTotal.Load(),
		UDPTotal: e.udpTotal.Load(),
		Denied:   e.denied.Load(),
		Refused:  e.refused.Load(),
		CapHit:   e.capHit.Load(),

		Unattributed: e.unattributed.Load(),
	}
}

// Close stops the device, aborts every flow and waits until all of their
// goroutines have returned. It is safe to call more than once.
func (e *Exit) Close() error {
	e.closeOnce.Do(func() {
		e.mu.Lock()
		e.closed = true // no new flows
		e.mu.Unlock()
		e.cancel() // aborts pending dials and running flows
		// Once the flows have ended nothing creates endpoints any more, so
		// closing the stack waits for all of them.
		e.flows.Wait()
		e.ns.Close()
		s := e.Stats()
		e.log.Info("exit closed", "tcp_total", s.TCPTotal, "udp_total", s.UDPTotal,
			"denied", s.Denied, "refused", s.Refused, "cap_hit", s.CapHit)
	})
	return nil
}

// acquire takes a flow slot for src. It fails when the exit is closed or a
// cap is reached (counted in CapHit). Each success must be paired with
// release. The flow ends when the returned context does.
func (e *Exit) acquire(src netip.Addr) (*peerFlows, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, false
	}
	pf := e.perPeer[src]
	if e.open >= e.cfg.MaxConns || (pf != nil && pf.n >= e.cfg.MaxConnsPerPeer) {
		e.capHit.Add(1)
		return nil, false
	}
	if pf == nil {
		pf = &peerFlows{src: src}
		pf.ctx, pf.cancel = context.WithCancel(e.ctx)
		e.perPeer[src] = pf
	}
	e.open++
	pf.n++
	e.flows.Add(1)
	return pf, true
}

func (e *Exit) release(pf *peerFlows) {
	e.mu.Lock()
	e.open--
	if pf.n--; pf.n <= 0 {
		pf.cancel()
		if e.perPeer[pf.src] == pf {
			delete(e.perPeer, pf.src)
		}
	}
	e.mu.Unlock()
	e.flows.Done()
}

// CloseFlows ends every flow from the tunnel address src, as when its peer
// has been removed, or the session that owned them has ended and its source
// ports may pass to another session. Later flows from src are not affected.
func (e *Exit) CloseFlows(src netip.Addr) {
	src = src.Unmap().WithZone("")
	e.mu.Lock()
	defer e.mu.Unlock()
	if pf := e.perPeer[src]; pf != nil {
		pf.cancel()
		delete(e.perPeer, src)
	}
}

// endpoints returns the peer's tunnel address and the destination of a flow.
func endpoints(id stack.TransportEndpointID) (src netip.Addr, dst netip.AddrPort) {
	src, _ = netip.AddrFromSlice(id.RemoteAddress.AsSlice())
	d, _ := netip.AddrFromSlice(id.LocalAddress.AsSlice())
	return src.Unmap(), netip.AddrPortFrom(d.Unmap(), id.LocalPort)
}

// forwardTCP handles a SYN from a peer. It connects to the destination
// first and completes the handshake with the peer only once that worked, so
// the peer sees the destination's refusal as a reset. Every path calls
// r.Complete exactly once.
func (e *Exit) forwardTCP(r *tcp.ForwarderRequest) {
	src, dst := endpoints(r.ID())
	if !e.policy.Allowed(dst.Addr()) {
		e.denied.Add(1)
		e.log.Debug("tcp flow denied by egress policy")
		r.Complete(true)
		return
	}
	from, ok := e.source(src, dst)
	if !ok {
		e.log.Debug("tcp flow refused: its session holds no source port block")
		r.Complete(true)
		return
	}
	pf, ok := e.acquire(src)
	if !ok {
		e.log.Debug("tcp flow refused: connection cap reached or exit closed")
		r.Complete(true)
		return
	}
	defer e.release(pf)

	ctx, cancel := context.WithTimeout(pf.ctx, e.cfg.DialTimeout)
	c, err := e.dialTCP(ctx, from, dst)
	cancel()
	if errors.Is(err, errBlockBusy) {
		e.unattributed.Add(1)
		e.log.Debug("tcp flow refused: every port of its session's block is busy")
		r.Complete(true)
		return
	}
	if err != nil {
		e.refused.Add(1)
		e.logDialError("tcp dial failed", err)
		r.Complete(true)
		return
	}
	host := c.(*net.TCPConn)

	// Counted before the handshake, which the peer may see complete before
	// CreateEndpoint returns.
	e.tcpOpen.Add(1)
	defer e.tcpOpen.Add(-1)
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		// The peer went away during the handshake.
		host.Close()
		r.Complete(true)
		return
	}
	r.Complete(false)
	e.tcpTotal.Add(1)

	ep.SocketOptions().SetKeepAlive(true)
	idle := tcpip.KeepaliveIdleOption(keepAliveIdle)
	ep.SetSockOpt(&idle)
	intvl := tcpip.KeepaliveIntervalOption(keepAliveInterval)
	ep.SetSockOpt(&intvl)
	ep.SetSockOptInt(tcpip.KeepaliveCountOption, keepAliveCount)

	e.spliceTCP(pf.ctx, gonet.NewTCPConn(&wq, ep), ep, host)
}

// spliceTCP copies both directions until both have ended. An orderly close
// (EOF) in one direction is passed on as a half-close; an error in either
// direction, TCPIdle without data, or the end of ctx (Close, CloseFlows),
// resets both legs.
func (e *Exit) spliceTCP(ctx context.Context, peer *gonet.TCPConn, ep tcpip.Endpoint, host *net.TCPConn) {
	abort := sync.OnceFunc(func() {
		ep.Abort()
		host.SetLinger(0) // reset, not FIN
		host.Close()
	})
	stop := context.AfterFunc(ctx, abort)
	defer stop()
	idle, touch := idleTimer(e.cfg.TCPIdle, abort)
	defer idle.Stop()

	errc := make(chan error, 1)
	go func() { errc <- pipe(host, touchReader{peer, touch}) }()
	if err := pipe(peer, touchReader{host, touch}); err != nil {
		abort()
	}
	if err := <-errc; err != nil {
		abort()
	}
	peer.Close()
	host.Close()
}

type halfCloser interface {
	io.Writer
	CloseWrite() error
}

// touchReader calls touch after every read that returned data.
type touchReader struct {
	r     io.Reader
	touch func()
}

func (t touchReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if n > 0 {
		t.touch()
	}
	return n, err
}

// idleTimer calls expire once d has passed without a call of touch. Touch
// only stores a timestamp; the timer checks it when it fires and re-arms
// itself for the remainder, so the hot path takes no lock.
func idleTimer(d time.Duration, expire func()) (*time.Timer, func()) {
	start := time.Now()
	var last atomic.Int64 // time.Since(start) at the latest touch
	var idle *time.Timer
	idle = time.AfterFunc(d, func() {
		if left := d - (time.Since(start) - time.Duration(last.Load())); left > 0 {
			idle.Reset(left)
			return
		}
		expire()
	})
	return idle, func() { last.Store(int64(time.Since(start))) }
}

// pipe copies src to dst and half-closes dst when src ends cleanly.
func pipe(dst halfCloser, src io.Reader) error {
	if _, err := io.Copy(dst, src); err != nil {
		return err
	}
	return dst.CloseWrite()
}

// forwardUDP handles the first datagram of a new UDP flow. It runs inside
// the netstack's receive path, so it must not block: it only opens sockets
// and leaves the relaying to a goroutine. Later datagrams of the flow go
// straight to the endpoint created here.
func (e *Exit) forwardUDP(r *udp.ForwarderRequest) {
	src, dst := endpoints(r.ID())
	if !e.policy.Allowed(dst.Addr()) {
		e.denied.Add(1)
		e.log.Debug("udp datagram denied by egress policy")
		return
	}
	from, ok := e.source(src, dst)
	if !ok {
		e.log.Debug("udp datagram dropped: its session holds no source port block")
		return
	}
	pf, ok := e.acquire(src)
	if !ok {
		e.log.Debug("udp datagram dropped: connection cap reached or exit closed")
		return
	}
	host, unbind, err := e.dialUDP(from, dst)
	if errors.Is(err, errBlockBusy) {
		e.unattributed.Add(1)
		e.log.Debug("udp datagram dropped: every port of its session's block is busy")
		e.release(pf)
		return
	}
	if err != nil {
		e.refused.Add(1)
		e.logDialError("udp socket failed", err)
		e.release(pf)
		return
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		host.Close()
		unbind()
		e.release(pf)
		return
	}
	e.udpTotal.Add(1)
	e.udpOpen.Add(1)
	go func() {
		defer e.release(pf)
		defer unbind()
		defer e.udpOpen.Add(-1)
		e.relayUDP(pf.ctx, gonet.NewUDPConn(&wq, ep), host)
	}()
}

// relayUDP copies datagrams both ways until the flow has been idle for
// UDPIdle, either socket fails, or ctx ends (Close, CloseFlows).
func (e *Exit) relayUDP(ctx context.Context, peer *gonet.UDPConn, host *net.UDPConn) {
	closeBoth := sync.OnceFunc(func() {
		peer.Close()
		host.Close()
	})
	stop := context.AfterFunc(ctx, closeBoth)
	defer stop()

	idle, touch := idleTimer(e.cfg.UDPIdle, closeBoth)
	defer idle.Stop()

	done := make(chan struct{})
	go func() {
		defer close(done)
		copyDatagrams(host, peer, touch)
		closeBoth()
	}()
	copyDatagrams(peer, host, touch)
	closeBoth()
	<-done
}

// copyDatagrams copies datagrams from src to dst until either fails.
func copyDatagrams(dst io.Writer, src io.Reader, touch func()) {
	buf := make([]byte, maxUDPPacket)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		touch()
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

// logDialError logs a failed dial without its destination. Running out of
// file descriptors is the gateway's problem, not the destination's, so it is
// a warning.
func (e *Exit) logDialError(msg string, err error) {
	class := dialErrorClass(err)
	if class == "out of file descriptors" {
		e.log.Warn(msg, "reason", class)
		return
	}
	e.log.Debug(msg, "reason", class)
}

// dialErrorClass names the kind of a dial error for logs. The error itself
// is never logged: its text carries the destination address.
func dialErrorClass(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH):
		return "unreachable"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "out of file descriptors"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	default:
		return "other"
	}
}
