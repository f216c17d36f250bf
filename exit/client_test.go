package exit_test

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"sync"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// clientTUN is the client side of the test tunnel: a tun.Device over a
// plain gVisor stack, written independently of the exit's device.
//
// It is wireguard-go's tun/netstack (CreateNetTUN) with one difference:
// that stack drops packets whose source is a loopback address arriving on a
// non-loopback NIC ("martian"), so replies from the 127.0.0.1 test servers
// would never reach the client. Here AllowExternalLoopbackTraffic is set.
type clientTUN struct {
	stack     *stack.Stack
	ep        *channel.Endpoint
	events    chan tun.Event
	ctx       context.Context
	cancel    context.CancelFunc
	closeOnce sync.Once

	mu     sync.RWMutex // orders Write against Close
	closed bool
}

func newClientTUN(addrs []netip.Addr, mtu int) (*clientTUN, error) {
	s := stack.New(stack.Options{
		NetworkProtocols: []stack.NetworkProtocolFactory{
			ipv4.NewProtocolWithOptions(ipv4.Options{AllowExternalLoopbackTraffic: true}),
			ipv6.NewProtocolWithOptions(ipv6.Options{AllowExternalLoopbackTraffic: true}),
		},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
	})
	ct := &clientTUN{stack: s, ep: channel.New(1024, uint32(mtu), ""), events: make(chan tun.Event, 1)}
	ct.ctx, ct.cancel = context.WithCancel(context.Background())
	if err := s.CreateNIC(1, ct.ep); err != nil {
		return nil, errFromTCPIP(err)
	}
	for _, a := range addrs {
		proto := ipv4.ProtocolNumber
		if a.Is6() {
			proto = ipv6.ProtocolNumber
		}
		pa := tcpip.ProtocolAddress{Protocol: proto, AddressWithPrefix: tcpip.AddrFromSlice(a.AsSlice()).WithPrefix()}
		if err := s.AddProtocolAddress(1, pa, stack.AddressProperties{}); err != nil {
			return nil, errFromTCPIP(err)
		}
	}
	s.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: 1},
		{Destination: header.IPv6EmptySubnet, NIC: 1},
	})
	ct.events <- tun.EventUp
	return ct, nil
}

func errFromTCPIP(err tcpip.Error) error { return errors.New(err.String()) }

func fullAddr(ap netip.AddrPort) (tcpip.FullAddress, tcpip.NetworkProtocolNumber) {
	proto := ipv4.ProtocolNumber
	if ap.Addr().Is6() {
		proto = ipv6.ProtocolNumber
	}
	return tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFromSlice(ap.Addr().AsSlice()), Port: ap.Port()}, proto
}

func (ct *clientTUN) DialTCP(ctx context.Context, ap netip.AddrPort) (*gonet.TCPConn, error) {
	fa, proto := fullAddr(ap)
	return gonet.DialContextTCP(ctx, ct.stack, fa, proto)
}

func (ct *clientTUN) DialUDP(ap netip.AddrPort) (*gonet.UDPConn, error) {
	fa, proto := fullAddr(ap)
	return gonet.DialUDP(ct.stack, nil, &fa, proto)
}

func (ct *clientTUN) File() *os.File           { return nil }
func (ct *clientTUN) Name() (string, error)    { return "client", nil }
func (ct *clientTUN) MTU() (int, error)        { return int(ct.ep.MTU()), nil }
func (ct *clientTUN) BatchSize() int           { return 1 }
func (ct *clientTUN) Events() <-chan tun.Event { return ct.events }

func (ct *clientTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	pkt := ct.ep.ReadContext(ct.ctx)
	if pkt == nil {
		return 0, os.ErrClosed
	}
	defer pkt.DecRef()
	v := pkt.ToView()
	defer v.Release()
	sizes[0] = copy(bufs[0][offset:], v.AsSlice())
	return 1, nil
}

func (ct *clientTUN) Write(bufs [][]byte, offset int) (int, error) {
	ct.mu.RLock()
	defer ct.mu.RUnlock()
	if ct.closed {
		return 0, os.ErrClosed
	}
	for _, b := range bufs {
		p := b[offset:]
		if len(p) == 0 {
			continue
		}
		proto := header.IPv4ProtocolNumber
		if p[0]>>4 == 6 {
			proto = header.IPv6ProtocolNumber
		}
		pkb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(p)})
		ct.ep.InjectInbound(proto, pkb)
		pkb.DecRef()
	}
	return len(bufs), nil
}

func (ct *clientTUN) Close() error {
	ct.closeOnce.Do(func() {
		ct.cancel()
		ct.mu.Lock()
		ct.closed = true
		ct.mu.Unlock()
		ct.stack.Close()
		ct.stack.Wait()
		ct.ep.Close()
		close(ct.events)
	})
	return nil
}
