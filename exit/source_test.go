package exit_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/exit"
)

var loopback4 = netip.MustParseAddr("127.0.0.1")

// whoServer answers each TCP connection with the address it came from, then
// holds it open until the peer closes.
func whoServer(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				io.WriteString(c, c.RemoteAddr().String()+"\n")
				c.SetDeadline(time.Now().Add(30 * time.Second))
				io.Copy(io.Discard, c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// udpWhoServer answers each datagram with the address it came from.
func udpWhoServer(t *testing.T) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo([]byte(from.String()), from)
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

// seenFrom dials srv through the tunnel and returns the source address the
// server saw, keeping the connection open (closed at cleanup).
func seenFrom(t *testing.T, tn *tunnel, srv netip.AddrPort) (netip.AddrPort, error) {
	t.Helper()
	c, err := tn.dial(t, srv)
	if err != nil {
		return netip.AddrPort{}, err
	}
	t.Cleanup(func() { c.Close() })
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.ParseAddrPort(line[:len(line)-1])
}

func TestAttributedFlowsLeaveFromTheirBlock(t *testing.T) {
	srv := whoServer(t)
	udpSrv := udpWhoServer(t)
	const lo, hi = 20000, 20003
	tn := newTunnel(t, exit.Config{Allow: allowLoopback4, ExitIPv4: loopback4,
		SourcePorts: func(src netip.Addr) (uint16, uint16, bool) { return lo, hi, src == clientAddr4 }})

	// Four connections to one destination take the four ports of the block.
	ports := map[uint16]bool{}
	for range 4 {
		from, err := seenFrom(t, tn, srv)
		if err != nil {
			t.Fatal(err)
		}
		if from.Addr() != loopback4 || from.Port() < lo || from.Port() > hi {
			t.Fatalf("flow left from %v, want 127.0.0.1:%d-%d", from, lo, hi)
		}
		ports[from.Port()] = true
	}
	if len(ports) != 4 {
		t.Fatalf("four open flows to one destination share ports: %v", ports)
	}
	// A fifth is refused rather than sent from another port.
	if c, err := tn.dial(t, srv); err == nil {
		c.Close()
		t.Fatal("a fifth flow to the same destination got through a block of four ports")
	}
	if s := tn.exit.Stats(); s.Unattributed != 1 || s.Refused != 0 {
		t.Fatalf("stats %+v, want Unattributed 1", s)
	}
	// Another destination may reuse the block's ports.
	other := whoServer(t)
	if from, err := seenFrom(t, tn, other); err != nil || from.Port() < lo || from.Port() > hi {
		t.Fatalf("flow to another destination: from %v, %v", from, err)
	}

	// UDP: two flows to one destination get two ports of the block.
	udpPorts := map[string]bool{}
	for range 2 {
		u, err := tn.dialUDP(udpSrv)
		if err != nil {
			t.Fatal(err)
		}
		defer u.Close()
		got, err := udpRoundTrip(u, "who", 10, 500*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		from, err := netip.ParseAddrPort(got)
		if err != nil || from.Addr() != loopback4 || from.Port() < lo || from.Port() > hi {
			t.Fatalf("UDP flow left from %q (%v), want 127.0.0.1:%d-%d", got, err, lo, hi)
		}
		udpPorts[got] = true
	}
	if len(udpPorts) != 2 {
		t.Fatalf("two UDP flows to one destination share a port: %v", udpPorts)
	}
}

func TestUnattributedFlowsAvoidBlocks(t *testing.T) {
	srv := whoServer(t)
	tn := newTunnel(t, exit.Config{Allow: allowLoopback4, ExitIPv4: loopback4,
		SourcePorts: func(netip.Addr) (uint16, uint16, bool) { return 0, 0, false }})
	from, err := seenFrom(t, tn, srv)
	if err != nil {
		t.Fatal(err)
	}
	// The kernel's ephemeral range, which the default blocks stay below.
	if from.Addr() != loopback4 || from.Port() < 32768 {
		t.Fatalf("unattributed flow left from %v, want 127.0.0.1 and an ephemeral port", from)
	}
}

func TestAttributedFlowWithoutBlockIsRefused(t *testing.T) {
	srv := whoServer(t)
	udpSrv := udpWhoServer(t)
	tn := newTunnel(t, exit.Config{Allow: allowLoopback4, ExitIPv4: loopback4,
		SourcePorts: func(netip.Addr) (uint16, uint16, bool) { return 0, 0, true }})
	if c, err := tn.dial(t, srv); err == nil {
		c.Close()
		t.Fatal("attributed flow without a block got through")
	}
	u, err := tn.dialUDP(udpSrv)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if got, err := udpRoundTrip(u, "who", 3, 200*time.Millisecond); err == nil {
		t.Fatalf("attributed UDP flow without a block got an answer from %s", got)
	}
	if s := tn.exit.Stats(); s.Unattributed < 2 || s.TCPTotal != 0 || s.UDPTotal != 0 {
		t.Fatalf("stats %+v, want refused flows counted in Unattributed", s)
	}
}

func TestAttributedFlowWithoutExitAddressIsRefused(t *testing.T) {
	srv := whoServer(t)
	tn := newTunnel(t, exit.Config{Allow: allowLoopback4, // no ExitIPv4: the block has no address
		SourcePorts: func(netip.Addr) (uint16, uint16, bool) { return 20000, 20255, true }})
	if c, err := tn.dial(t, srv); err == nil {
		c.Close()
		t.Fatal("attributed flow left without a known exit address")
	}
	if s := tn.exit.Stats(); s.Unattributed != 1 {
		t.Fatalf("stats %+v, want Unattributed 1", s)
	}
}

func TestCloseFlows(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tn := newTunnel(t, exit.Config{Allow: allowLoopback4})
	c, err := tn.dial(t, ln.Addr().(*net.TCPAddr).AddrPort())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hostSide, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer hostSide.Close()

	tn.exit.CloseFlows(clientAddr6) // another address: no effect
	hostSide.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := hostSide.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("flow ended by CloseFlows of another address: %v", err)
	}

	tn.exit.CloseFlows(clientAddr4)
	hostSide.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := hostSide.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("host side still open after CloseFlows: %v", err)
	}
	waitFor(t, "the flow to end", func() bool { return tn.exit.Stats().TCPOpen == 0 })

	// Later flows from the same address work.
	c2, err := tn.dial(t, ln.Addr().(*net.TCPAddr).AddrPort())
	if err != nil {
		t.Fatalf("flow after CloseFlows: %v", err)
	}
	defer c2.Close()
	hostSide2, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer hostSide2.Close()
	io.WriteString(hostSide2, "x")
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c2, make([]byte, 1)); err != nil {
		t.Fatalf("flow after CloseFlows: %v", err)
	}
}

func TestExitAddressMustBeLocal(t *testing.T) {
	_, err := exit.New(exit.Config{Addresses: []netip.Prefix{gwAddr4}, ExitIPv4: netip.MustParseAddr("192.0.2.77")})
	if err == nil {
		t.Fatal("exit address that is not on this host accepted")
	}
	_, err = exit.New(exit.Config{Addresses: []netip.Prefix{gwAddr4}, ExitIPv4: netip.MustParseAddr("::1")})
	if err == nil {
		t.Fatal("IPv6 address accepted as ExitIPv4")
	}
}
