package exit

import (
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// readLoop reads packets from d until it fails and delivers them on the
// returned channel, which is closed when Read returns an error.
func readLoop(t *testing.T, e *Exit) (<-chan []byte, <-chan error) {
	t.Helper()
	d := e.Device()
	pkts := make(chan []byte, 64)
	errc := make(chan error, 1)
	go func() {
		defer close(pkts)
		bufs := make([][]byte, d.BatchSize())
		for i := range bufs {
			bufs[i] = make([]byte, 16+65535)
		}
		sizes := make([]int, len(bufs))
		for {
			n, err := d.Read(bufs, sizes, 16)
			if err != nil {
				errc <- err
				return
			}
			for i := range n {
				pkts <- append([]byte(nil), bufs[i][16:16+sizes[i]]...)
			}
		}
	}()
	return pkts, errc
}

func echoRequest4(src, dst netip.Addr) []byte {
	const payload = "ping"
	pkt := make([]byte, header.IPv4MinimumSize+header.ICMPv4MinimumSize+len(payload))
	ip := header.IPv4(pkt)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(pkt)),
		TTL:         64,
		Protocol:    uint8(header.ICMPv4ProtocolNumber),
		SrcAddr:     tcpip.AddrFrom4(src.As4()),
		DstAddr:     tcpip.AddrFrom4(dst.As4()),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	icmp := header.ICMPv4(ip.Payload())
	icmp.SetType(header.ICMPv4Echo)
	icmp.SetIdent(7)
	icmp.SetSequence(1)
	copy(icmp.Payload(), payload)
	icmp.SetChecksum(^checksum.Checksum(icmp, 0))
	return pkt
}

func echoRequest6(src, dst netip.Addr) []byte {
	const payload = "ping"
	pkt := make([]byte, header.IPv6MinimumSize+header.ICMPv6EchoMinimumSize+len(payload))
	ip := header.IPv6(pkt)
	ip.Encode(&header.IPv6Fields{
		PayloadLength:     uint16(header.ICMPv6EchoMinimumSize + len(payload)),
		TransportProtocol: header.ICMPv6ProtocolNumber,
		HopLimit:          64,
		SrcAddr:           tcpip.AddrFrom16(src.As16()),
		DstAddr:           tcpip.AddrFrom16(dst.As16()),
	})
	icmp := header.ICMPv6(ip.Payload())
	icmp.SetType(header.ICMPv6EchoRequest)
	icmp.SetIdent(7)
	icmp.SetSequence(1)
	copy(icmp.Payload(), payload)
	icmp.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{
		Header: icmp,
		Src:    ip.SourceAddress(),
		Dst:    ip.DestinationAddress(),
	}))
	return pkt
}

// echoReplyFrom reports whether pkt is an ICMP echo reply from src.
func echoReplyFrom(pkt []byte, src netip.Addr) bool {
	switch pkt[0] >> 4 {
	case 4:
		ip := header.IPv4(pkt)
		return ip.TransportProtocol() == header.ICMPv4ProtocolNumber &&
			header.ICMPv4(ip.Payload()).Type() == header.ICMPv4EchoReply &&
			string(ip.SourceAddressSlice()) == string(src.AsSlice())
	case 6:
		ip := header.IPv6(pkt)
		return ip.TransportProtocol() == header.ICMPv6ProtocolNumber &&
			header.ICMPv6(ip.Payload()).Type() == header.ICMPv6EchoReply &&
			string(ip.SourceAddressSlice()) == string(src.AsSlice())
	}
	return false
}

// TestEcho: the netstack answers pings to the gateway's own addresses, and
// does not fake answers for every other address.
func TestEcho(t *testing.T) {
	own4, own6 := netip.MustParseAddr("10.200.0.1"), netip.MustParseAddr("fd00:200::1")
	peer4, peer6 := netip.MustParseAddr("10.200.0.2"), netip.MustParseAddr("fd00:200::2")
	e, err := New(Config{Addresses: []netip.Prefix{netip.PrefixFrom(own4, 16), netip.PrefixFrom(own6, 64)}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	d := e.Device()
	pkts, _ := readLoop(t, e)

	expect := func(req []byte, from netip.Addr, want bool) {
		t.Helper()
		if _, err := d.Write([][]byte{append(make([]byte, 16), req...)}, 16); err != nil {
			t.Fatal(err)
		}
		wait := 2 * time.Second
		if !want {
			wait = 300 * time.Millisecond
		}
		timeout := time.After(wait)
		for {
			select {
			case pkt := <-pkts:
				if echoReplyFrom(pkt, from) {
					if !want {
						t.Fatalf("echo reply from %v, which is not the gateway's", from)
					}
					return
				}
			case <-timeout:
				if want {
					t.Fatalf("no echo reply from %v", from)
				}
				return
			}
		}
	}
	foreign4, foreign6 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")
	expect(echoRequest4(peer4, foreign4), foreign4, false)
	expect(echoRequest6(peer6, foreign6), foreign6, false)
	expect(echoRequest4(peer4, own4), own4, true)
	expect(echoRequest6(peer6, own6), own6, true)
}

func TestDeviceClose(t *testing.T) {
	e, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	d := e.Device()
	if ev := <-d.Events(); ev != tun.EventUp {
		t.Fatalf("first event %v, want EventUp", ev)
	}
	_, errc := readLoop(t, e)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrClosed) {
			t.Fatalf("Read after Close: %v, want os.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read still blocked after Close")
	}
	if _, err := d.Write([][]byte{make([]byte, 40)}, 0); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Write after Close: %v, want os.ErrClosed", err)
	}
	if _, ok := <-d.Events(); ok {
		t.Fatal("Events still open after Close")
	}
	if err := e.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestNewValidates(t *testing.T) {
	for _, cfg := range []Config{
		{MTU: 100},
		{MTU: 70000},
		{MaxConns: -1},
		{MaxConnsPerPeer: -1},
		{UDPIdle: -time.Second},
		{Addresses: []netip.Prefix{{}}},
		{MTU: 1000, Addresses: []netip.Prefix{netip.MustParsePrefix("fd00::1/64")}},
	} {
		if e, err := New(cfg); err == nil {
			e.Close()
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
	e, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if e.cfg.MTU != 1420 || e.cfg.MaxConns != 8192 || e.cfg.MaxConnsPerPeer != 512 ||
		e.cfg.UDPIdle != time.Minute || e.cfg.DialTimeout != 10*time.Second {
		t.Fatalf("defaults %+v", e.cfg)
	}
}
