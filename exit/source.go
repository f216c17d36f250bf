package exit

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"syscall"
)

// errBlockBusy means that no port of an attributed session's block could be
// used for a flow. The flow is refused: leaving from another port would
// make it untraceable.
var errBlockBusy = errors.New("every source port of the session's block is busy")

// source is where a flow leaves from.
type source struct {
	addr   netip.Addr // exit address; invalid: the host picks one by route
	lo, hi uint16     // source ports; 0: an ephemeral port
}

// source decides where a flow from the tunnel address src to dst leaves
// from. ok is false when the flow must be refused: it is attributed, but
// its session holds no block or the destination's family has no exit
// address (counted in Unattributed).
func (e *Exit) source(src netip.Addr, dst netip.AddrPort) (s source, ok bool) {
	s.addr = e.cfg.ExitIPv4
	if dst.Addr().Is6() {
		s.addr = e.cfg.ExitIPv6
	}
	if e.cfg.SourcePorts == nil {
		return s, true
	}
	lo, hi, attributed := e.cfg.SourcePorts(src)
	if !attributed {
		return s, true
	}
	if lo == 0 || hi < lo || !s.addr.IsValid() {
		e.unattributed.Add(1)
		return source{}, false
	}
	s.lo, s.hi = lo, hi
	return s, true
}

// ports returns the ports of s's block, starting at a random one, so that
// flows spread over the block instead of all probing its first ports.
func (s source) ports() []uint16 {
	n := int(s.hi-s.lo) + 1
	first := rand.IntN(n)
	out := make([]uint16, n)
	for i := range out {
		out[i] = s.lo + uint16((first+i)%n)
	}
	return out
}

// dialTCP connects to dst from s. From a block, it tries its ports until one
// connects: SO_REUSEADDR lets flows to different destinations share a port
// (the kernel refuses only an identical connection, EADDRNOTAVAIL), and
// lets a port in TIME_WAIT be bound again.
func (e *Exit) dialTCP(ctx context.Context, s source, dst netip.AddrPort) (net.Conn, error) {
	d := e.dialer
	if s.lo == 0 {
		if s.addr.IsValid() {
			d.LocalAddr = &net.TCPAddr{IP: s.addr.AsSlice()}
		}
		return d.DialContext(ctx, "tcp", dst.String())
	}
	d.Control = reuseAddr
	for _, port := range s.ports() {
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(s.addr, port))
		c, err := d.DialContext(ctx, "tcp", dst.String())
		if !portTaken(err) {
			return c, err
		}
	}
	return nil, errBlockBusy
}

// dialUDP opens a connected UDP socket to dst from s. From a block, flows
// share a port as long as their destinations differ (the kernel delivers a
// datagram to the socket connected to its sender); unbind gives the port
// back for that destination.
func (e *Exit) dialUDP(s source, dst netip.AddrPort) (c *net.UDPConn, unbind func(), err error) {
	if s.lo == 0 {
		var laddr *net.UDPAddr
		if s.addr.IsValid() {
			laddr = &net.UDPAddr{IP: s.addr.AsSlice()}
		}
		c, err := net.DialUDP("udp", laddr, net.UDPAddrFromAddrPort(dst))
		return c, func() {}, err
	}
	d := net.Dialer{Control: reuseAddr}
	for _, port := range s.ports() {
		b := udpBinding{from: netip.AddrPortFrom(s.addr, port), to: dst}
		e.mu.Lock()
		taken := e.udpBound[b]
		e.udpBound[b] = true
		e.mu.Unlock()
		if taken {
			continue
		}
		unbind := func() {
			e.mu.Lock()
			delete(e.udpBound, b)
			e.mu.Unlock()
		}
		d.LocalAddr = net.UDPAddrFromAddrPort(b.from)
		c, err := d.Dial("udp", dst.String())
		if err == nil {
			return c.(*net.UDPConn), unbind, nil
		}
		unbind()
		if !portTaken(err) {
			return nil, nil, err
		}
	}
	return nil, nil, errBlockBusy
}

func portTaken(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || errors.Is(err, syscall.EADDRNOTAVAIL)
}

func reuseAddr(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	}); err != nil {
		return err
	}
	return serr
}

// checkExitAddrs checks that the exit addresses are of their family and
// belong to this host (binding to them works). Binding sends nothing.
func checkExitAddrs(v4, v6 netip.Addr) error {
	for _, c := range []struct {
		name string
		a    netip.Addr
		is4  bool
	}{{"ExitIPv4", v4, true}, {"ExitIPv6", v6, false}} {
		if !c.a.IsValid() {
			continue
		}
		if c.a.Is4() != c.is4 || c.a.Is4In6() || c.a.Zone() != "" || c.a.IsUnspecified() {
			return fmt.Errorf("exit: %s %v is not an IPv%s unicast address", c.name, c.a, map[bool]string{true: "4", false: "6"}[c.is4])
		}
		l, err := net.ListenPacket("udp", netip.AddrPortFrom(c.a, 0).String())
		if err != nil {
			return fmt.Errorf("exit: %s %v is not an address of this host: %w", c.name, c.a, err)
		}
		l.Close()
	}
	return nil
}
