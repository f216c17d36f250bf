package client

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// UDP ASSOCIATE limits.
var (
	udpFlowIdle       = 2 * time.Minute // a destination unused this long is dropped
	udpResolveTimeout = 5 * time.Second
)

const (
	maxUDPFlows     = 64  // destinations per association
	maxUDPNameCache = 256 // resolved names per association
	maxUDPDatagram  = 65535
)

var errUDPHeader = errors.New("socks5: malformed UDP request header")

// parseSOCKSUDP parses a SOCKS5 UDP request header, RSV(2) FRAG(1) ATYP
// DST.ADDR DST.PORT, and returns the datagram's payload (aliasing b).
func parseSOCKSUDP(b []byte) (frag byte, dst socksAddr, payload []byte, err error) {
	if len(b) < 4 || b[0] != 0 || b[1] != 0 {
		return 0, dst, nil, errUDPHeader
	}
	r := bytes.NewReader(b[4:])
	dst, err = readSOCKSAddr(r, b[3])
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			err = errUDPHeader
		}
		return 0, socksAddr{}, nil, err
	}
	return b[2], dst, b[len(b)-r.Len():], nil
}

// appendSOCKSUDP appends a SOCKS5 UDP header for src, unfragmented.
func appendSOCKSUDP(b []byte, src socksAddr) []byte {
	b = append(b, 0, 0, 0)
	return src.appendTo(b)
}

// udpAssoc relays one SOCKS5 UDP association: datagrams from the client's
// address to connected UDP sockets in the tunnel, one per destination, and
// their answers back.
type udpAssoc struct {
	t        *Tunnel
	local    *net.UDPConn
	clientIP netip.Addr
	wantPort uint16 // client source port named in the request, or 0

	client netip.AddrPort // learned from the first accepted datagram; fromClient only

	mu     sync.Mutex
	closed bool
	flows  map[netip.AddrPort]*udpFlow
	names  map[string]netip.Addr // fromClient only
	wg     sync.WaitGroup
}

type udpFlow struct {
	conn     net.Conn
	lastUsed atomic.Int64 // unix nanoseconds
}

func (t *Tunnel) socksUDPAssociate(c net.Conn, req socksRequest) {
	local := addrPortOf(c.LocalAddr()).Addr()
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, 0)))
	if err != nil {
		t.log.Debug("socks5 udp associate: cannot listen", "err", err)
		_ = writeSOCKSReply(c, repGeneralFailure, netip.AddrPort{})
		lingerClose(c)
		return
	}
	a := &udpAssoc{
		t:        t,
		local:    pc,
		clientIP: addrPortOf(c.RemoteAddr()).Addr().Unmap(),
		flows:    make(map[netip.AddrPort]*udpFlow),
		names:    make(map[string]netip.Addr),
	}
	if req.Dst.Name == "" {
		a.wantPort = req.Dst.Port
	}
	defer a.close()
	if err := writeSOCKSReply(c, repSucceeded, pc.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
		return
	}
	_ = c.SetDeadline(time.Time{})
	t.stats.socksUDP.Add(1)

	a.wg.Add(1)
	go a.fromClient()
	// The association lives as long as its TCP connection (RFC 1928 §7).
	_, _ = io.Copy(io.Discard, c)
}

func (a *udpAssoc) close() {
	a.mu.Lock()
	a.closed = true
	flows := a.flows
	a.flows = nil
	a.mu.Unlock()
	a.local.Close()
	for _, f := range flows {
		f.conn.Close()
	}
	a.wg.Wait()
}

func (a *udpAssoc) fromClient() {
	defer a.wg.Done()
	buf := make([]byte, maxUDPDatagram)
	for {
		n, src, err := a.local.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		if src.Addr() != a.clientIP {
			continue // RFC 1928 §7: only the client's address may use the relay
		}
		if !a.client.IsValid() {
			if a.wantPort != 0 && src.Port() != a.wantPort {
				continue
			}
			a.client = src
		} else if src != a.client {
			continue
		}
		frag, dst, payload, err := parseSOCKSUDP(buf[:n])
		if err != nil || frag != 0 { // fragmentation is optional; unsupported
			a.t.stats.protoErrors.Add(1)
			continue
		}
		ip, ok := a.resolve(dst)
		if !ok || dst.Port == 0 {
			a.t.stats.dialFailures.Add(1)
			continue
		}
		f := a.flow(netip.AddrPortFrom(ip, dst.Port))
		if f == nil {
			continue
		}
		f.lastUsed.Store(time.Now().UnixNano())
		if _, err := f.conn.Write(payload); err == nil {
			a.t.stats.bytesOut.Add(uint64(len(payload)))
		}
	}
}

// resolve returns the IP to send to, resolving names through the tunnel.
func (a *udpAssoc) resolve(dst socksAddr) (netip.Addr, bool) {
	if dst.Name == "" {
		return dst.IP.Unmap(), true
	}
	if ip, err := netip.ParseAddr(dst.Name); err == nil {
		return ip.Unmap(), ip.Zone() == ""
	}
	if ip, ok := a.names[dst.Name]; ok {
		return ip, true
	}
	ctx, cancel := context.WithTimeout(a.t.ctx, udpResolveTimeout)
	defer cancel()
	ips, err := a.t.ns.LookupNetIP(ctx, "ip", dst.Name)
	if err != nil || len(ips) == 0 {
		return netip.Addr{}, false
	}
	if len(a.names) >= maxUDPNameCache {
		clear(a.names)
	}
	a.names[dst.Name] = ips[0]
	return ips[0], true
}

// flow returns the tunnel socket for dst, opening it if need be; nil when
// the association is closing or full.
func (a *udpAssoc) flow(dst netip.AddrPort) *udpFlow {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil
	}
	if f := a.flows[dst]; f != nil {
		return f
	}
	if len(a.flows) >= maxUDPFlows {
		return nil
	}
	ctx, cancel := context.WithTimeout(a.t.ctx, udpResolveTimeout)
	defer cancel()
	c, err := a.t.DialContext(ctx, "udp", dst.String())
	if err != nil {
		a.t.stats.dialFailures.Add(1)
		return nil
	}
	f := &udpFlow{conn: c}
	f.lastUsed.Store(time.Now().UnixNano())
	a.flows[dst] = f
	a.wg.Add(1)
	go a.fromTunnel(dst, f, a.client) // a.client is set once, before any flow opens
	return f
}

func (a *udpAssoc) fromTunnel(dst netip.AddrPort, f *udpFlow, client netip.AddrPort) {
	defer a.wg.Done()
	defer func() {
		a.mu.Lock()
		if a.flows[dst] == f {
			delete(a.flows, dst)
		}
		a.mu.Unlock()
		f.conn.Close()
	}()
	hdr := appendSOCKSUDP(nil, addrFromAddrPort(dst))
	buf := make([]byte, len(hdr)+maxUDPDatagram)
	copy(buf, hdr)
	for {
		_ = f.conn.SetReadDeadline(time.Now().Add(udpFlowIdle))
		n, err := f.conn.Read(buf[len(hdr):])
		if err != nil {
			if isTimeout(err) && time.Since(time.Unix(0, f.lastUsed.Load())) < udpFlowIdle {
				continue
			}
			return
		}
		f.lastUsed.Store(time.Now().UnixNano())
		if _, err := a.local.WriteToUDPAddrPort(buf[:len(hdr)+n], client); err == nil {
			a.t.stats.bytesIn.Add(uint64(n))
		}
	}
}
