package netstack

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"golang.zx2c4.com/wireguard/tun"
)

var (
	addrA4 = netip.MustParseAddr("10.200.0.2")
	addrA6 = netip.MustParseAddr("2001:db8::2")
	addrB4 = netip.MustParseAddr("10.200.0.1")
	addrB6 = netip.MustParseAddr("2001:db8::1")
	// noDNS is one of b's addresses where nothing serves DNS.
	noDNS = netip.MustParseAddr("10.200.0.3")
)

// offset is where packets start in the buffers, as wireguard-go leaves room
// for its header.
const offset = 16

func newStack(t *testing.T, cfg Config) *Stack {
	t.Helper()
	if cfg.MTU == 0 {
		cfg.MTU = 1420
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newBufs(n int) ([][]byte, []int) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, offset+65535)
	}
	return bufs, make([]int, n)
}

// link carries packets between two stacks in both directions, as a
// WireGuard tunnel would, until either is closed.
func link(t *testing.T, a, b *Stack) {
	var wg sync.WaitGroup
	pump := func(from, to tun.Device) {
		defer wg.Done()
		bufs, sizes := newBufs(from.BatchSize())
		for {
			n, err := from.Read(bufs, sizes, offset)
			if err != nil {
				return
			}
			out := make([][]byte, n)
			for i := range n {
				out[i] = bufs[i][:offset+sizes[i]]
			}
			if _, err := to.Write(out, offset); err != nil {
				return
			}
		}
	}
	wg.Add(2)
	go pump(a, b)
	go pump(b, a)
	t.Cleanup(func() {
		a.Close()
		b.Close()
		wg.Wait()
	})
}

// pair returns two linked stacks: a (the client: 10.200.0.2, 2001:db8::2)
// and b (the server: 10.200.0.1, 10.200.0.3, 2001:db8::1, and the loopback
// addresses, as a gateway's exit answers for them).
func pair(t *testing.T, dns ...netip.Addr) (a, b *Stack) {
	a = newStack(t, Config{Addresses: []netip.Addr{addrA4, addrA6}, DNS: dns})
	b = newStack(t, Config{Addresses: []netip.Addr{addrB4, noDNS, addrB6,
		netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()}})
	link(t, a, b)
	return a, b
}

func TestNewValidates(t *testing.T) {
	for _, cfg := range []Config{
		{MTU: 100},
		{MTU: 70000},
		{MTU: 1000, Addresses: []netip.Addr{addrA6}},
		{MTU: 1420, Addresses: []netip.Addr{{}}},
	} {
		if s, err := New(cfg); err == nil {
			s.Close()
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
	// Duplicates (also in IPv4-mapped form) are one address.
	newStack(t, Config{MTU: 1000, Addresses: []netip.Addr{addrA4, addrA4, netip.AddrFrom16(addrA4.As16())}})
}

// TestDeviceReadWrite: Read hands over every queued packet in one batch,
// and Write delivers packets into the stack.
func TestDeviceReadWrite(t *testing.T) {
	a := newStack(t, Config{Addresses: []netip.Addr{addrA4}})
	b := newStack(t, Config{Addresses: []netip.Addr{addrB4}})
	if ev := <-a.Events(); ev != tun.EventUp {
		t.Fatalf("first event %v, want EventUp", ev)
	}
	if mtu, _ := a.MTU(); mtu != 1420 {
		t.Fatalf("MTU %d", mtu)
	}

	ln, err := b.ListenUDP(netip.AddrPortFrom(addrB4, 9))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := a.DialContext(context.Background(), "udp", "10.200.0.1:9")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const count = 5
	for i := range count {
		if _, err := c.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	bufs, sizes := newBufs(8)
	n, err := a.Read(bufs, sizes, offset)
	if err != nil {
		t.Fatal(err)
	}
	if n != count {
		t.Fatalf("Read returned %d packets, want all %d queued", n, count)
	}
	pkts := make([][]byte, n)
	for i := range n {
		p := bufs[i][offset : offset+sizes[i]]
		if p[0]>>4 != 4 || p[9] != 17 || !bytes.Equal(p[16:20], addrB4.AsSlice()) {
			t.Fatalf("packet %d is not UDP to %v: %x", i, addrB4, p)
		}
		pkts[i] = bufs[i][:offset+sizes[i]]
	}
	// Junk and empty buffers are skipped, and count as written.
	junk := append(make([]byte, offset), 0x00, 1, 2, 3)
	if w, err := b.Write(append([][]byte{junk, make([]byte, offset)}, pkts...), offset); err != nil || w != n+2 {
		t.Fatalf("Write = %d, %v", w, err)
	}
	ln.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i := range count {
		var got [8]byte
		if m, _, err := ln.ReadFrom(got[:]); err != nil || m != 1 || got[0] != byte(i) {
			t.Fatalf("datagram %d: %x, %v", i, got[:m], err)
		}
	}
}

func TestAccept(t *testing.T) {
	var mu sync.Mutex
	seen := 0
	a := newStack(t, Config{Addresses: []netip.Addr{addrA4}})
	b := newStack(t, Config{Addresses: []netip.Addr{addrB4}, Accept: func(pkt []byte) bool {
		mu.Lock()
		defer mu.Unlock()
		seen++
		return false
	}})
	link(t, a, b)
	ln, err := b.ListenTCP(netip.AddrPortFrom(addrB4, 80))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if c, err := a.DialContext(ctx, "tcp", "10.200.0.1:80"); err == nil {
		c.Close()
		t.Fatal("connected through a stack that accepts no packet")
	}
	mu.Lock()
	defer mu.Unlock()
	if seen == 0 {
		t.Fatal("Accept saw no packet")
	}
}

func TestDeviceClose(t *testing.T) {
	s, err := New(Config{Addresses: []netip.Addr{addrA4}, MTU: 1420})
	if err != nil {
		t.Fatal(err)
	}
	<-s.Events()
	errc := make(chan error, 1)
	go func() {
		bufs, sizes := newBufs(s.BatchSize())
		_, err := s.Read(bufs, sizes, offset)
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond) // let Read block
	if err := s.Close(); err != nil {
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
	if _, err := s.Write([][]byte{make([]byte, 40)}, 0); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Write after Close: %v, want os.ErrClosed", err)
	}
	if _, ok := <-s.Events(); ok {
		t.Fatal("Events still open after Close")
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.DialContext(context.Background(), "tcp", "10.200.0.1:80"); err == nil {
		t.Fatal("dial on a closed stack succeeded")
	}
}

// serveEcho echoes TCP and UDP on ap until the test ends.
func serveEcho(t *testing.T, s *Stack, ap netip.AddrPort) {
	t.Helper()
	ln, err := s.ListenTCP(ap)
	if err != nil {
		t.Fatal(err)
	}
	uc, err := s.ListenUDP(ap)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
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
				io.Copy(c, c)
			}()
		}
	}()
	go func() {
		defer wg.Done()
		buf := make([]byte, 65535)
		for {
			n, from, err := uc.ReadFrom(buf)
			if err != nil {
				return
			}
			uc.WriteTo(buf[:n], from)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		uc.Close()
		wg.Wait()
	})
}

// TestDial: TCP and UDP between two stacks, to IPv4, IPv6 and loopback
// addresses (replies from 127.0.0.1 and ::1 arrive on the tunnel, which
// gVisor's default settings drop as martians).
func TestDial(t *testing.T) {
	a, b := pair(t)
	for _, host := range []string{"10.200.0.1", "2001:db8::1", "127.0.0.1", "::1"} {
		serveEcho(t, b, netip.AddrPortFrom(netip.MustParseAddr(host), 7))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tc := range []struct{ network, addr string }{
		{"tcp", "10.200.0.1:7"},
		{"tcp6", "[2001:db8::1]:7"},
		{"tcp", "[::ffff:10.200.0.1]:7"},
		{"tcp4", "127.0.0.1:7"},
		{"tcp", "[::1]:7"},
		{"udp", "10.200.0.1:7"},
		{"udp6", "[2001:db8::1]:7"},
		{"udp", "127.0.0.1:7"},
		{"udp", "[::1]:7"},
	} {
		c, err := a.DialContext(ctx, tc.network, tc.addr)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.network, tc.addr, err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		msg := []byte("ping " + tc.network + " " + tc.addr)
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("%s %s: echo %q, %v", tc.network, tc.addr, got, err)
		}
		c.Close()
	}

	// Several MiB over TCP: many windows and full batches.
	c, err := a.DialContext(ctx, "tcp", "10.200.0.1:7")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	data := make([]byte, 4<<20)
	rand.Read(data)
	go func() {
		c.Write(data)
		c.(interface{ CloseWrite() error }).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("bulk echo: %d of %d bytes, %v", len(got), len(data), err)
	}
}

func TestDialErrors(t *testing.T) {
	a, _ := pair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	_, err := a.DialContext(ctx, "tcp", "10.200.0.1:81")
	var oe *net.OpError
	if !errors.Is(err, syscall.ECONNREFUSED) || !errors.As(err, &oe) || oe.Addr.String() != "10.200.0.1:81" {
		t.Fatalf("dial to a closed port: %v, want ECONNREFUSED for 10.200.0.1:81", err)
	}
	v4only := newStack(t, Config{Addresses: []netip.Addr{addrA4}})
	if _, err := v4only.DialContext(ctx, "tcp", "[2001:db8::1]:80"); !errors.Is(err, syscall.ENETUNREACH) && !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Fatalf("IPv6 dial without an IPv6 address: %v, want unreachable", err)
	}
	for _, tc := range []struct{ network, addr, want string }{
		{"ip4", "10.200.0.1:80", "unknown network"},
		{"tcp", "10.200.0.1", "missing port"},
		{"tcp", "10.200.0.1:http", "invalid port"},
		{"udp", "10.200.0.1:65536", "invalid port"},
		{"tcp", "[fe80::1%eth0]:80", "zoned"},
		{"tcp6", "10.200.0.1:80", "no suitable address"},
		{"udp4", "[2001:db8::1]:80", "no suitable address"},
		{"tcp", "web.test:80", "no DNS server"},
	} {
		_, err := a.DialContext(ctx, tc.network, tc.addr)
		if !errors.As(err, &oe) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("DialContext(%s, %s) = %v, want an OpError about %q", tc.network, tc.addr, err, tc.want)
		}
	}
	var de *net.DNSError
	if _, err := a.DialContext(ctx, "tcp", "web.test:80"); !errors.As(err, &de) || !de.IsNotFound {
		t.Errorf("name without DNS servers: %v, want a not-found DNSError", err)
	}
}

// serveDNS answers on b's 10.200.0.1:53, over UDP and TCP: web.test has A
// and AAAA records, v4only.test only A, big.test 60 A records (too many for
// UDP: the answer there is truncated), anything else is NXDOMAIN.
func serveDNS(t *testing.T, b *Stack) {
	t.Helper()
	answer := func(req []byte, udp bool) []byte {
		var p dnsmessage.Parser
		h, err := p.Start(req)
		if err != nil {
			return nil
		}
		q, err := p.Question()
		if err != nil {
			return nil
		}
		rh := dnsmessage.Header{ID: h.ID, Response: true, RecursionAvailable: true}
		var as []netip.Addr
		switch strings.ToLower(q.Name.String()) {
		case "web.test.":
			as = []netip.Addr{addrB4, addrB6}
		case "v4only.test.":
			as = []netip.Addr{addrB4}
		case "big.test.":
			for i := range 60 {
				as = append(as, netip.AddrFrom4([4]byte{10, 200, 1, byte(i)}))
			}
			if udp {
				rh.Truncated, as = true, nil
			}
		default:
			rh.RCode = dnsmessage.RCodeNameError
		}
		bld := dnsmessage.NewBuilder(nil, rh)
		bld.StartQuestions()
		bld.Question(q)
		bld.StartAnswers()
		for _, a := range as {
			hdr := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}
			if a.Is4() && q.Type == dnsmessage.TypeA {
				bld.AResource(hdr, dnsmessage.AResource{A: a.As4()})
			} else if a.Is6() && q.Type == dnsmessage.TypeAAAA {
				bld.AAAAResource(hdr, dnsmessage.AAAAResource{AAAA: a.As16()})
			}
		}
		msg, _ := bld.Finish()
		return msg
	}
	ap := netip.AddrPortFrom(addrB4, 53)
	uc, err := b.ListenUDP(ap)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := b.ListenTCP(ap)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		buf := make([]byte, 1500)
		for {
			n, from, err := uc.ReadFrom(buf)
			if err != nil {
				return
			}
			uc.WriteTo(answer(buf[:n], true), from)
		}
	}()
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			var n [2]byte
			if _, err := io.ReadFull(c, n[:]); err == nil {
				req := make([]byte, binary.BigEndian.Uint16(n[:]))
				if _, err := io.ReadFull(c, req); err == nil {
					resp := answer(req, false)
					c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(resp))), resp...))
				}
			}
			c.Close()
		}
	}()
	t.Cleanup(func() {
		uc.Close()
		ln.Close()
		wg.Wait()
	})
}

// TestLookup resolves names through the tunnel; the first server has
// nothing listening, so every query also fails over to the second.
func TestLookup(t *testing.T) {
	defer func(d time.Duration) { dnsTimeout = d }(dnsTimeout)
	dnsTimeout = 300 * time.Millisecond
	a, b := pair(t, noDNS, addrB4)
	serveDNS(t, b)
	serveEcho(t, b, netip.AddrPortFrom(addrB4, 7))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for _, tc := range []struct {
		network, host string
		want          []netip.Addr
	}{
		{"ip", "web.test", []netip.Addr{addrB6, addrB4}},
		{"ip", "WEB.test.", []netip.Addr{addrB6, addrB4}},
		{"ip4", "web.test", []netip.Addr{addrB4}},
		{"ip6", "web.test", []netip.Addr{addrB6}},
		{"ip", "v4only.test", []netip.Addr{addrB4}},
		{"ip", "::ffff:10.200.0.1", []netip.Addr{addrB4}},
	} {
		got, err := a.LookupNetIP(ctx, tc.network, tc.host)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("LookupNetIP(%s, %s) = %v, %v; want %v", tc.network, tc.host, got, err, tc.want)
		}
	}
	big, err := a.LookupNetIP(ctx, "ip4", "big.test")
	if err != nil || len(big) != 60 {
		t.Errorf("big.test (over TCP): %d addresses, %v", len(big), err)
	}
	for _, host := range []string{"nosuch.test", "bad name.test", "a..test", strings.Repeat("a", 64) + ".test"} {
		_, err := a.LookupNetIP(ctx, "ip", host)
		var de *net.DNSError
		if !errors.As(err, &de) || !de.IsNotFound || de.Name != host {
			t.Errorf("LookupNetIP(%q) = %v, want a not-found DNSError", host, err)
		}
	}

	c, err := a.DialContext(ctx, "tcp4", "web.test:7")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.RemoteAddr().String(); got != "10.200.0.1:7" {
		t.Errorf("tcp4 web.test:7 connected to %s", got)
	}
}

// TestDialFallback: when the first address of a name refuses, the next one
// is tried.
func TestDialFallback(t *testing.T) {
	a, b := pair(t, addrB4)
	serveDNS(t, b)
	serveEcho(t, b, netip.AddrPortFrom(addrB4, 8))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := a.DialContext(ctx, "tcp", "web.test:8") // [2001:db8::1]:8 refuses
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.RemoteAddr().String(); got != "10.200.0.1:8" {
		t.Errorf("connected to %s", got)
	}
}
