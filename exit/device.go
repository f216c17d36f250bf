package exit

import (
	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// device is the exit's netstack as wireguard-go's tun.Device; closing it
// closes the whole exit, for the device is its only way in and out.
type device struct {
	tun.Device
	e *Exit
}

func (d device) Close() error { return d.e.Close() }

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
