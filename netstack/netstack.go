// Package netstack is a userspace TCP/IP stack, gVisor's netstack, presented
// to wireguard-go as a tun.Device: packets that wireguard-go decrypts enter
// the stack, and packets the stack sends are read back by wireguard-go to be
// encrypted. Programs reach the tunnel through the stack's sockets
// (DialContext, ListenTCP, ListenUDP) without a kernel TUN, routes or root.
//
// It is what wireguard-go's tun/netstack is, with the settings Meridian needs
// on both ends of a tunnel:
//   - packets with a loopback source or destination are accepted on the
//     tunnel interface (gVisor drops them as martians by default), so a
//     client reaches a 127.0.0.1 service on a gateway that allows it, and
//     the gateway's exit can see and refuse such destinations itself;
//   - TCP SACK, reno congestion control and tailscale's buffer sizes;
//   - batched Read, and Close that waits for the stack's goroutines;
//   - names resolved by the configuration's DNS servers only, through the
//     tunnel, and dial errors that carry errnos.
//
// The gateway's exit (package exit) configures the stack further through
// GVisor: promiscuous mode, spoofing and forwarders.
package netstack

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// NIC is the ID of the stack's only network interface, the tunnel.
const NIC tcpip.NICID = 1

const (
	// batchSize is how many packets Read hands to wireguard-go at once.
	batchSize = 128
	// outQueueLen is how many packets the stack may queue towards
	// wireguard-go before it drops.
	outQueueLen = 1024

	// TCP buffer sizes, as tailscale sets them on non-mobile platforms: a
	// larger maximum than gVisor's default 4 MiB helps on long fat paths.
	tcpRXBufMax = 8 << 20
	tcpTXBufMax = 6 << 20
)

// Config configures a Stack.
type Config struct {
	// Addresses are the stack's own addresses on the tunnel. IPv4-mapped
	// IPv6 addresses are taken as IPv4; duplicates are ignored.
	Addresses []netip.Addr
	// MTU of the tunnel, 576..65535 (at least 1280 with an IPv6 address).
	MTU int
	// DNS are the name servers that DialContext and LookupNetIP ask,
	// through the stack; none means names cannot be resolved.
	DNS []netip.Addr
	// Accept, if set, sees every packet that wireguard-go writes and
	// decides whether it enters the stack.
	Accept func(pkt []byte) bool
}

// Stack is a gVisor network stack with one interface, the tunnel. It is the
// tun.Device to hand to wireguard-go's device.NewDevice; closing that device
// closes the Stack.
type Stack struct {
	stack  *stack.Stack
	ep     *channel.Endpoint
	mtu    int
	accept func([]byte) bool
	events chan tun.Event

	hasV4, hasV6 bool
	dns          []netip.Addr

	// ctx is cancelled by Close; it unblocks Read.
	ctx    context.Context
	cancel context.CancelFunc

	// mu orders Write against Close, so that nothing is injected into a
	// stack that is being torn down.
	mu     sync.RWMutex
	closed bool

	closeOnce sync.Once
}

var _ tun.Device = (*Stack)(nil)

// New builds the stack: IPv4, IPv6, TCP, UDP and ICMP, cfg's addresses, and
// default routes for both families through the tunnel.
func New(cfg Config) (*Stack, error) {
	if cfg.MTU < 576 || cfg.MTU > 65535 {
		return nil, fmt.Errorf("netstack: MTU %d out of range 576..65535", cfg.MTU)
	}
	s := &Stack{
		mtu:    cfg.MTU,
		accept: cfg.Accept,
		events: make(chan tun.Event, 1),
	}
	var addrs []netip.Addr
	seen := map[netip.Addr]bool{}
	for _, a := range cfg.Addresses {
		a = a.Unmap().WithZone("")
		if !a.IsValid() {
			return nil, errors.New("netstack: invalid address")
		}
		if seen[a] {
			continue
		}
		seen[a] = true
		addrs = append(addrs, a)
		if a.Is4() {
			s.hasV4 = true
		} else {
			s.hasV6 = true
		}
	}
	if s.hasV6 && cfg.MTU < 1280 {
		return nil, fmt.Errorf("netstack: MTU %d is below the IPv6 minimum 1280", cfg.MTU)
	}
	for _, a := range cfg.DNS {
		if a.IsValid() {
			s.dns = append(s.dns, a.Unmap().WithZone(""))
		}
	}

	// Loopback addresses must be able to arrive on the tunnel NIC: replies
	// from a gateway's 127.0.0.1 services on a client, and such destinations
	// on the gateway, whose egress policy decides about them.
	s.stack = stack.New(stack.Options{
		NetworkProtocols: []stack.NetworkProtocolFactory{
			ipv4.NewProtocolWithOptions(ipv4.Options{AllowExternalLoopbackTraffic: true}),
			ipv6.NewProtocolWithOptions(ipv6.Options{AllowExternalLoopbackTraffic: true}),
		},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
	})
	if err := s.init(addrs); err != nil {
		s.stack.Destroy()
		return nil, err
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.events <- tun.EventUp
	return s, nil
}

func (s *Stack) init(addrs []netip.Addr) error {
	fail := func(what string, err tcpip.Error) error { return fmt.Errorf("netstack: %s: %v", what, err) }

	sack := tcpip.TCPSACKEnabled(true)
	if err := s.stack.SetTransportProtocolOption(tcp.ProtocolNumber, &sack); err != nil {
		return fail("enable TCP SACK", err)
	}
	// Pin reno like tailscale does: gVisor's default may change, and cubic
	// has hit an overflow in netstack's congestion window arithmetic.
	reno := tcpip.CongestionControlOption("reno")
	if err := s.stack.SetTransportProtocolOption(tcp.ProtocolNumber, &reno); err != nil {
		return fail("set TCP congestion control", err)
	}
	rx := tcpip.TCPReceiveBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: tcp.DefaultReceiveBufferSize, Max: tcpRXBufMax}
	if err := s.stack.SetTransportProtocolOption(tcp.ProtocolNumber, &rx); err != nil {
		return fail("set TCP receive buffer", err)
	}
	tx := tcpip.TCPSendBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: tcp.DefaultSendBufferSize, Max: tcpTXBufMax}
	if err := s.stack.SetTransportProtocolOption(tcp.ProtocolNumber, &tx); err != nil {
		return fail("set TCP send buffer", err)
	}

	s.ep = channel.New(outQueueLen, uint32(s.mtu), "")
	if err := s.stack.CreateNIC(NIC, s.ep); err != nil {
		return fail("create NIC", err)
	}
	for _, a := range addrs {
		pa := tcpip.ProtocolAddress{Protocol: protocol(a), AddressWithPrefix: tcpip.AddrFromSlice(a.AsSlice()).WithPrefix()}
		if err := s.stack.AddProtocolAddress(NIC, pa, stack.AddressProperties{}); err != nil {
			return fail("add address", err)
		}
	}
	s.stack.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: NIC},
		{Destination: header.IPv6EmptySubnet, NIC: NIC},
	})
	return nil
}

func protocol(a netip.Addr) tcpip.NetworkProtocolNumber {
	if a.Is4() {
		return ipv4.ProtocolNumber
	}
	return ipv6.ProtocolNumber
}

// GVisor returns the underlying gVisor stack, for settings this package does
// not make (the tunnel interface is NIC).
func (s *Stack) GVisor() *stack.Stack { return s.stack }

func (s *Stack) File() *os.File           { return nil }
func (s *Stack) Name() (string, error)    { return "netstack", nil }
func (s *Stack) MTU() (int, error)        { return s.mtu, nil }
func (s *Stack) BatchSize() int           { return batchSize }
func (s *Stack) Events() <-chan tun.Event { return s.events }

// Read blocks until the stack has at least one packet to send, then returns
// as many queued packets as fit in bufs. After Close it returns
// os.ErrClosed.
func (s *Stack) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	pkt := s.ep.ReadContext(s.ctx)
	if pkt == nil {
		return 0, os.ErrClosed
	}
	n := 0
	for pkt != nil {
		if size := copyPacket(bufs[n][offset:], pkt); size > 0 {
			sizes[n] = size
			n++
		}
		if n == len(bufs) {
			break
		}
		pkt = s.ep.Read()
	}
	return n, nil
}

// copyPacket copies pkt into dst, releases it and returns its size, or 0 if
// it does not fit (it is dropped then; wireguard-go's buffers hold any packet
// of the configured MTU).
func copyPacket(dst []byte, pkt *stack.PacketBuffer) int {
	defer pkt.DecRef()
	if pkt.Size() > len(dst) {
		return 0
	}
	n := 0
	for _, b := range pkt.AsSlices() {
		n += copy(dst[n:], b)
	}
	return n
}

// Write injects packets from wireguard-go into the stack. Anything but IPv4
// and IPv6 is dropped, as is what Config.Accept refuses. After Close it
// returns os.ErrClosed.
func (s *Stack) Write(bufs [][]byte, offset int) (int, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, os.ErrClosed
	}
	for _, buf := range bufs {
		pkt := buf[offset:]
		if len(pkt) == 0 {
			continue
		}
		var proto tcpip.NetworkProtocolNumber
		switch pkt[0] >> 4 {
		case 4:
			proto = header.IPv4ProtocolNumber
		case 6:
			proto = header.IPv6ProtocolNumber
		default:
			continue
		}
		if s.accept != nil && !s.accept(pkt) {
			continue
		}
		pb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
		s.ep.InjectInbound(proto, pb)
		pb.DecRef()
	}
	return len(bufs), nil
}

// Close stops Read and Write, aborts every connection of the stack, waits
// for the stack's goroutines and closes Events. It is safe to call more than
// once.
func (s *Stack) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		s.mu.Lock()
		s.closed = true // waits for Writes in progress
		s.mu.Unlock()
		s.stack.Close()
		s.stack.Wait()
		s.ep.Close()
		close(s.events)
	})
	return nil
}
