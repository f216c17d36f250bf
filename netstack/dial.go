package netstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
)

// DialContext connects to address through the tunnel. network is one of tcp,
// tcp4, tcp6, udp, udp4, udp6. The host of address is an IP literal or a
// name, which LookupNetIP resolves; its addresses are tried in turn, sharing
// ctx's deadline.
//
// Failures are *net.OpError values. Where the stack says why a connection
// failed, Err is a syscall.Errno: ECONNREFUSED, EHOSTUNREACH, ENETUNREACH,
// ECONNRESET or ETIMEDOUT.
func (s *Stack) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	var family string
	switch network {
	case "tcp", "udp":
		family = "ip"
	case "tcp4", "udp4":
		family = "ip4"
	case "tcp6", "udp6":
		family = "ip6"
	default:
		return nil, &net.OpError{Op: "dial", Net: network, Err: net.UnknownNetworkError(network)}
	}
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: fmt.Errorf("invalid port %q", port)}
	}
	ips, err := s.LookupNetIP(ctx, family, host)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	var first error
	for i, ip := range ips {
		dctx, cancel := partialDeadline(ctx, len(ips)-i)
		c, err := s.dial(dctx, network[:3], netip.AddrPortFrom(ip, uint16(p)))
		cancel()
		if err == nil {
			return c, nil
		}
		if first == nil {
			first = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, first
}

// partialDeadline gives one of n remaining dial attempts its share of ctx's
// deadline, at least 2 s (as the net package does).
func partialDeadline(ctx context.Context, n int) (context.Context, context.CancelFunc) {
	deadline, ok := ctx.Deadline()
	if !ok || n == 1 {
		return context.WithCancel(ctx)
	}
	left := time.Until(deadline)
	share := max(left/time.Duration(n), min(left, 2*time.Second))
	return context.WithTimeout(ctx, share)
}

// dial connects over TCP or UDP (proto "tcp" or "udp") to ap.
func (s *Stack) dial(ctx context.Context, proto string, ap netip.AddrPort) (net.Conn, error) {
	fa, pn := fullAddr(ap)
	if proto == "tcp" {
		c, err := gonet.DialContextTCP(ctx, s.stack, fa, pn)
		if err != nil {
			return nil, dialError(proto, ap, err)
		}
		return c, nil
	}
	c, err := gonet.DialUDP(s.stack, nil, &fa, pn)
	if err != nil {
		return nil, dialError(proto, ap, err)
	}
	return c, nil
}

func fullAddr(ap netip.AddrPort) (tcpip.FullAddress, tcpip.NetworkProtocolNumber) {
	fa := tcpip.FullAddress{NIC: NIC, Port: ap.Port()}
	if ap.Addr().IsValid() && !ap.Addr().IsUnspecified() {
		fa.Addr = tcpip.AddrFromSlice(ap.Addr().AsSlice())
	}
	return fa, protocol(ap.Addr())
}

// errnos maps the texts of gVisor's connection errors, which gonet passes
// on only as strings, to errnos.
var errnos = map[string]syscall.Errno{
	(&tcpip.ErrConnectionRefused{}).String():  syscall.ECONNREFUSED,
	(&tcpip.ErrHostUnreachable{}).String():    syscall.EHOSTUNREACH,
	(&tcpip.ErrNetworkUnreachable{}).String(): syscall.ENETUNREACH,
	(&tcpip.ErrConnectionReset{}).String():    syscall.ECONNRESET,
	(&tcpip.ErrTimeout{}).String():            syscall.ETIMEDOUT,
}

// dialError makes err a *net.OpError for ap whose Err is an errno where one
// is known.
func dialError(proto string, ap netip.AddrPort, err error) error {
	oe := &net.OpError{Op: "dial", Net: proto, Addr: net.TCPAddrFromAddrPort(ap), Err: err}
	if proto == "udp" {
		oe.Addr = net.UDPAddrFromAddrPort(ap)
	}
	var inner *net.OpError
	if errors.As(err, &inner) {
		oe.Err = inner.Err
	}
	if errno, ok := errnos[oe.Err.Error()]; ok {
		oe.Err = errno
	}
	return oe
}

// ListenTCP listens for TCP connections on addr, which is one of the
// stack's addresses or unspecified.
func (s *Stack) ListenTCP(addr netip.AddrPort) (*gonet.TCPListener, error) {
	fa, pn := fullAddr(addr)
	return gonet.ListenTCP(s.stack, fa, pn)
}

// ListenUDP opens a UDP socket on addr, which is one of the stack's
// addresses or unspecified.
func (s *Stack) ListenUDP(addr netip.AddrPort) (*gonet.UDPConn, error) {
	fa, pn := fullAddr(addr)
	return gonet.DialUDP(s.stack, &fa, nil, pn)
}
