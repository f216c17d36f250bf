package client

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"time"
)

// SOCKS5 (RFC 1928) constants.
const (
	socksVersion = 0x05

	methodNoAuth       = 0x00
	methodNoAcceptable = 0xFF

	cmdConnect      = 0x01
	cmdBind         = 0x02
	cmdUDPAssociate = 0x03

	atypIPv4   = 0x01
	atypDomain = 0x03
	atypIPv6   = 0x04
)

// socks4Rejected is a SOCKS4 "request rejected or failed" reply, sent to a
// SOCKS4 client so that it fails fast and clearly instead of on EOF.
var socks4Rejected = []byte{0x00, 0x5B, 0, 0, 0, 0, 0, 0}

// socksError is a request the server refuses, with the reply code to send.
type socksError struct {
	rep byte
	msg string
}

func (e *socksError) Error() string { return "socks5: " + e.msg }

// versionError is a greeting whose version byte is not 5.
type versionError byte

func (e versionError) Error() string { return fmt.Sprintf("socks5: version %d not supported", byte(e)) }

// socksAddr is a SOCKS5 address: an IP (ATYP 1 or 4) or a domain name
// (ATYP 3), and a port.
type socksAddr struct {
	IP   netip.Addr // as received; valid for ATYP IPv4 and IPv6
	Name string     // for ATYP domain name
	Port uint16
}

func (a socksAddr) atyp() byte {
	switch {
	case a.Name != "":
		return atypDomain
	case a.IP.Is4():
		return atypIPv4
	default:
		return atypIPv6
	}
}

// dialString is host:port for Tunnel.DialContext.
func (a socksAddr) dialString() string {
	host := a.Name
	if host == "" {
		host = a.IP.Unmap().String()
	}
	return net.JoinHostPort(host, strconv.Itoa(int(a.Port)))
}

// appendTo appends the wire form: ATYP, address, port.
func (a socksAddr) appendTo(b []byte) []byte {
	switch a.atyp() {
	case atypDomain:
		b = append(b, atypDomain, byte(len(a.Name)))
		b = append(b, a.Name...)
	case atypIPv4:
		ip := a.IP.As4()
		b = append(b, atypIPv4)
		b = append(b, ip[:]...)
	default:
		ip := a.IP.As16()
		b = append(b, atypIPv6)
		b = append(b, ip[:]...)
	}
	return binary.BigEndian.AppendUint16(b, a.Port)
}

// addrFromAddrPort is the SOCKS5 form of an IP address and port.
func addrFromAddrPort(ap netip.AddrPort) socksAddr {
	ip := ap.Addr()
	if !ip.IsValid() {
		ip = netip.IPv4Unspecified()
	}
	return socksAddr{IP: ip.Unmap(), Port: ap.Port()}
}

// readSOCKSAddr reads the address and port that follow an ATYP byte.
// Unsupported ATYPs and unusable names are *socksError.
func readSOCKSAddr(r io.Reader, atyp byte) (socksAddr, error) {
	var a socksAddr
	var buf [2 + 255]byte
	switch atyp {
	case atypIPv4:
		if _, err := io.ReadFull(r, buf[:4+2]); err != nil {
			return a, err
		}
		a.IP = netip.AddrFrom4([4]byte(buf[:4]))
		a.Port = binary.BigEndian.Uint16(buf[4:])
	case atypIPv6:
		var b [16 + 2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return a, err
		}
		a.IP = netip.AddrFrom16([16]byte(b[:16]))
		a.Port = binary.BigEndian.Uint16(b[16:])
	case atypDomain:
		if _, err := io.ReadFull(r, buf[:1]); err != nil {
			return a, err
		}
		n := int(buf[0])
		if _, err := io.ReadFull(r, buf[:n+2]); err != nil {
			return a, err
		}
		name := buf[:n]
		a.Port = binary.BigEndian.Uint16(buf[n:])
		if !validName(name) {
			return a, &socksError{repHostUnreachable, "unusable domain name"}
		}
		a.Name = string(name)
	default:
		return a, &socksError{repAddrNotSupported, fmt.Sprintf("address type %d not supported", atyp)}
	}
	return a, nil
}

// validName accepts 1 to 255 printable ASCII bytes: host names, their
// punycode forms and IP literals. Anything else could never resolve.
func validName(b []byte) bool {
	if len(b) == 0 || len(b) > 255 {
		return false
	}
	for _, c := range b {
		if c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

// readSOCKSGreeting reads the version/method-selection message and returns
// the offered methods.
func readSOCKSGreeting(r io.Reader) ([]byte, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:1]); err != nil {
		return nil, err
	}
	if hdr[0] != socksVersion {
		return nil, versionError(hdr[0])
	}
	if _, err := io.ReadFull(r, hdr[1:]); err != nil {
		return nil, err
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(r, methods); err != nil {
		return nil, err
	}
	return methods, nil
}

// socksRequest is a parsed SOCKS5 request.
type socksRequest struct {
	Cmd byte
	Dst socksAddr
}

// appendTo appends the request's wire form.
func (q socksRequest) appendTo(b []byte) []byte {
	b = append(b, socksVersion, q.Cmd, 0x00)
	return q.Dst.appendTo(b)
}

// readSOCKSRequest reads one request: VER CMD RSV ATYP DST.ADDR DST.PORT.
// It reads no byte past the request. A request the server refuses is a
// *socksError carrying the reply code; other errors are I/O errors, after
// which no reply is due. Only CONNECT and UDP ASSOCIATE are accepted.
func readSOCKSRequest(r io.Reader) (socksRequest, error) {
	var q socksRequest
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return q, err
	}
	if hdr[0] != socksVersion {
		return q, &socksError{repGeneralFailure, fmt.Sprintf("request version %d", hdr[0])}
	}
	if hdr[2] != 0x00 {
		return q, &socksError{repGeneralFailure, "reserved byte not zero"}
	}
	dst, err := readSOCKSAddr(r, hdr[3])
	if err != nil {
		return q, err
	}
	switch hdr[1] {
	case cmdConnect, cmdUDPAssociate:
	default:
		return q, &socksError{repCmdNotSupported, fmt.Sprintf("command %d not supported", hdr[1])}
	}
	q.Cmd, q.Dst = hdr[1], dst
	return q, nil
}

// writeSOCKSReply writes VER REP RSV ATYP BND.ADDR BND.PORT.
func writeSOCKSReply(w io.Writer, rep byte, bnd netip.AddrPort) error {
	b := make([]byte, 0, 22)
	b = append(b, socksVersion, rep, 0x00)
	b = addrFromAddrPort(bnd).appendTo(b)
	_, err := w.Write(b)
	return err
}

// addrPortOf extracts the IP and port of a TCP or UDP net.Addr.
func addrPortOf(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort()
	case *net.UDPAddr:
		return a.AddrPort()
	}
	if a != nil {
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			return ap
		}
	}
	return netip.AddrPort{}
}

func (t *Tunnel) serveSOCKS(ln net.Listener) {
	defer t.tr.end()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || t.ctx.Err() != nil {
				return
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			t.log.Warn("socks5 accept failed", "err", err)
			select {
			case <-time.After(backoff):
				continue
			case <-t.ctx.Done():
				return
			}
		}
		backoff = 0
		if !t.tr.begin() {
			c.Close()
			return
		}
		go func() {
			defer t.tr.end()
			t.handleSOCKS(c)
		}()
	}
}

func (t *Tunnel) handleSOCKS(c net.Conn) {
	t.stats.socksConns.Add(1)
	if !t.tr.add(c) {
		c.Close()
		return
	}
	defer func() {
		t.tr.remove(c)
		c.Close()
	}()
	_ = c.SetDeadline(time.Now().Add(handshakeTimeout))

	methods, err := readSOCKSGreeting(c)
	if err != nil {
		t.stats.protoErrors.Add(1)
		var ve versionError
		if errors.As(err, &ve) {
			if ve == 4 {
				_, _ = c.Write(socks4Rejected)
			}
			lingerClose(c)
		}
		t.log.Debug("socks5 greeting refused", "err", err)
		return
	}
	if !bytes.Contains(methods, []byte{methodNoAuth}) {
		t.stats.protoErrors.Add(1)
		_, _ = c.Write([]byte{socksVersion, methodNoAcceptable})
		lingerClose(c)
		t.log.Debug("socks5 client offers no supported authentication method")
		return
	}
	if _, err := c.Write([]byte{socksVersion, methodNoAuth}); err != nil {
		return
	}

	req, err := readSOCKSRequest(c)
	if err != nil {
		var se *socksError
		if errors.As(err, &se) {
			t.stats.protoErrors.Add(1)
			_ = writeSOCKSReply(c, se.rep, netip.AddrPort{})
			lingerClose(c)
		}
		t.log.Debug("socks5 request refused", "err", err)
		return
	}
	switch req.Cmd {
	case cmdConnect:
		t.socksConnect(c, req)
	case cmdUDPAssociate:
		t.socksUDPAssociate(c, req)
	}
}

func (t *Tunnel) socksConnect(c net.Conn, req socksRequest) {
	ctx, cancel := context.WithTimeout(t.ctx, t.dialTTL)
	remote, err := t.DialContext(ctx, "tcp", req.Dst.dialString())
	cancel()
	_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
	if err != nil {
		t.stats.dialFailures.Add(1)
		rep, why := dialFailure(err)
		t.log.Debug("socks5 connect failed", "reason", why)
		_ = writeSOCKSReply(c, rep, netip.AddrPort{})
		lingerClose(c)
		return
	}
	if !t.tr.add(remote) {
		remote.Close()
		return
	}
	defer func() {
		t.tr.remove(remote)
		remote.Close()
	}()
	if err := writeSOCKSReply(c, repSucceeded, addrPortOf(remote.LocalAddr())); err != nil {
		return
	}
	_ = c.SetDeadline(time.Time{})
	t.stats.socksConnect.Add(1)
	t.relay(c, remote)
}
