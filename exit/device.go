package exit

import (
	"os"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// batchSize is how many packets Read hands to wireguard-go at once.
const batchSize = 128

// device is the tun.Device wireguard-go reads from and writes to. Packets that
// wireguard-go decrypts are injected into the netstack; packets the netstack
// sends are queued on the channel endpoint and read back by wireguard-go.
type device struct {
	e *Exit
}

var _ tun.Device = (*device)(nil)

func (d *device) File() *os.File           { return nil }
func (d *device) Name() (string, error)    { return "meridian-exit", nil }
func (d *device) MTU() (int, error)        { return d.e.cfg.MTU, nil }
func (d *device) BatchSize() int           { return batchSize }
func (d *device) Events() <-chan tun.Event { return d.e.events }

// Close closes the whole exit: the device is its only way in and out.
func (d *device) Close() error { return d.e.Close() }

// Read blocks until the netstack has at least one packet to send, then
// returns as many queued packets as fit in bufs.
func (d *device) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	pkt := d.e.ep.ReadContext(d.e.ctx)
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
		pkt = d.e.ep.Read()
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
	for _, s := range pkt.AsSlices() {
		n += copy(dst[n:], s)
	}
	return n
}

// Write injects packets that arrived from peers into the netstack.
func (d *device) Write(bufs [][]byte, offset int) (int, error) {
	e := d.e
	e.devMu.RLock()
	defer e.devMu.RUnlock()
	if e.devClosed {
		return 0, os.ErrClosed
	}
	for _, buf := range bufs {
		pkt := buf[offset:]
		if len(pkt) == 0 {
			continue
		}
		var proto = header.IPv4ProtocolNumber
		switch pkt[0] >> 4 {
		case 4:
		case 6:
			proto = header.IPv6ProtocolNumber
		default:
			continue // wireguard-go only delivers IP packets; drop anything else
		}
		if e.foreignEcho(pkt) {
			continue
		}
		pb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
		e.ep.InjectInbound(proto, pb)
		pb.DecRef()
	}
	return len(bufs), nil
}

// foreignEcho reports whether pkt is an ICMP echo request to an address that
// is not one of the gateway's own. In promiscuous mode gVisor answers echo
// requests to any address itself, which would make every host on the
// Internet look reachable; those requests are dropped instead.
func (e *Exit) foreignEcho(pkt []byte) bool {
	var dst []byte
	switch pkt[0] >> 4 {
	case 4:
		h := header.IPv4(pkt)
		if !h.IsValid(len(pkt)) || h.TransportProtocol() != header.ICMPv4ProtocolNumber || h.FragmentOffset() != 0 {
			return false
		}
		icmp := header.ICMPv4(h.Payload())
		if len(icmp) < header.ICMPv4MinimumSize || icmp.Type() != header.ICMPv4Echo {
			return false
		}
		dst = h.DestinationAddressSlice()
	case 6:
		h := header.IPv6(pkt)
		if !h.IsValid(len(pkt)) || h.TransportProtocol() != header.ICMPv6ProtocolNumber {
			return false
		}
		icmp := header.ICMPv6(h.Payload())
		if len(icmp) < header.ICMPv6MinimumSize || icmp.Type() != header.ICMPv6EchoRequest {
			return false
		}
		dst = h.DestinationAddressSlice()
	default:
		return false
	}
	for _, a := range e.tunAddrs {
		if string(a.AsSlice()) == string(dst) {
			return false
		}
	}
	return true
}
