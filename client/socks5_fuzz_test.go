package client

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"testing"
)

func socksRequestSeeds() [][]byte {
	return [][]byte{
		socksConnectReq(ipDst(serverIP4, 80)),
		socksConnectReq(ipDst(serverIP6, 443)),
		socksConnectReq(ipDst(netip.AddrFrom16(serverIP4.As16()), 80)),
		socksConnectReq(socksAddr{Name: "example.com", Port: 80}),
		socksRequest{Cmd: cmdUDPAssociate, Dst: ipDst(netip.IPv4Unspecified(), 0)}.appendTo(nil),
		{5, cmdBind, 0, atypIPv4, 1, 2, 3, 4, 0, 80},
		{5, cmdConnect, 0, atypDomain, 0, 0, 80},
		{5, cmdConnect, 0, atypDomain, 255},
		{5, cmdConnect, 0, 9},
		{4, cmdConnect, 0, atypIPv4},
		{5, cmdConnect, 1, atypIPv4, 1, 2, 3, 4, 0, 80},
		{5},
		{},
	}
}

// FuzzSOCKS5Request: readSOCKSRequest never panics, never reads past the
// request, and what it accepts re-encodes to exactly the bytes it read.
func FuzzSOCKS5Request(f *testing.F) {
	for _, s := range socksRequestSeeds() {
		f.Add(s)
		f.Add(append(append([]byte{}, s...), "trailing payload"...))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		q, err := readSOCKSRequest(r)
		consumed := data[:len(data)-r.Len()]
		var se *socksError
		switch {
		case err == nil:
			if q.Cmd != cmdConnect && q.Cmd != cmdUDPAssociate {
				t.Fatalf("accepted command %d", q.Cmd)
			}
			if enc := q.appendTo(nil); !bytes.Equal(enc, consumed) {
				t.Fatalf("re-encoded %x, read %x", enc, consumed)
			}
			checkSOCKSAddr(t, q.Dst, consumed[3])
			if q.Dst.dialString() == "" {
				t.Fatal("empty dial string")
			}
		case errors.As(err, &se):
			switch se.rep {
			case repGeneralFailure, repHostUnreachable, repCmdNotSupported, repAddrNotSupported:
			default:
				t.Fatalf("refusal with reply code %d", se.rep)
			}
			if se.rep == repCmdNotSupported && (len(data) < 2 || data[1] == cmdConnect || data[1] == cmdUDPAssociate) {
				t.Fatalf("command not supported for %x", data)
			}
			if se.rep == repAddrNotSupported && len(data) >= 4 &&
				(data[3] == atypIPv4 || data[3] == atypIPv6 || data[3] == atypDomain) {
				t.Fatalf("address type not supported for %x", data)
			}
			if q != (socksRequest{}) {
				t.Fatalf("refused request has content %+v", q)
			}
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
			if r.Len() != 0 {
				t.Fatalf("EOF with %d bytes left", r.Len())
			}
		default:
			t.Fatalf("unexpected error type %T: %v", err, err)
		}
	})
}

// checkSOCKSAddr checks that an accepted address is what its ATYP says.
func checkSOCKSAddr(t *testing.T, a socksAddr, atyp byte) {
	t.Helper()
	if a.atyp() != atyp {
		t.Fatalf("ATYP %d parsed as %d (%+v)", atyp, a.atyp(), a)
	}
	switch atyp {
	case atypIPv4:
		if !a.IP.Is4() || a.Name != "" {
			t.Fatalf("IPv4 address parsed as %+v", a)
		}
	case atypIPv6:
		if !a.IP.Is6() || a.IP.Zone() != "" || a.Name != "" {
			t.Fatalf("IPv6 address parsed as %+v", a)
		}
	case atypDomain:
		if a.IP.IsValid() || !validName([]byte(a.Name)) {
			t.Fatalf("domain parsed as %+v", a)
		}
	default:
		t.Fatalf("accepted ATYP %d", atyp)
	}
}

// FuzzSOCKS5UDPHeader: parseSOCKSUDP never panics and what it accepts
// re-encodes to the input.
func FuzzSOCKS5UDPHeader(f *testing.F) {
	f.Add(append(appendSOCKSUDP(nil, ipDst(serverIP4, 53)), "query"...))
	f.Add(append(appendSOCKSUDP(nil, ipDst(serverIP6, 53)), "query"...))
	f.Add(appendSOCKSUDP(nil, socksAddr{Name: "echo.test", Port: 7}))
	f.Add([]byte{0, 0, 1, atypIPv4, 1, 2, 3, 4, 0, 53, 'x'})
	f.Add([]byte{0, 1, 0, atypIPv4})
	f.Add([]byte{0, 0, 0, atypDomain, 200, 'a'})
	f.Fuzz(func(t *testing.T, data []byte) {
		frag, dst, payload, err := parseSOCKSUDP(data)
		if err != nil {
			var se *socksError
			if !errors.Is(err, errUDPHeader) && !errors.As(err, &se) {
				t.Fatalf("unexpected error %T: %v", err, err)
			}
			return
		}
		checkSOCKSAddr(t, dst, data[3])
		enc := append([]byte{0, 0, frag}, dst.appendTo(nil)...)
		enc = append(enc, payload...)
		if !bytes.Equal(enc, data) {
			t.Fatalf("re-encoded %x, input %x", enc, data)
		}
	})
}

// FuzzSOCKS5Greeting: readSOCKSGreeting never panics, reads exactly the
// greeting (VER NMETHODS METHODS) and nothing past it, returns the offered
// methods as sent, and refuses any version but 5 after its first byte.
func FuzzSOCKS5Greeting(f *testing.F) {
	f.Add([]byte{5, 1, 0})                      // curl: no authentication
	f.Add([]byte{5, 2, 0, 2})                   // no authentication or username/password
	f.Add([]byte{5, 1, 0, 5, 1, 0, 1, 1, 2, 3}) // greeting with the request behind it
	f.Add([]byte{5, 0})
	f.Add([]byte{5, 255, 0})
	f.Add([]byte{4, 1, 0, 80, 127, 0, 0, 1, 0}) // SOCKS4
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Add([]byte{5})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		methods, err := readSOCKSGreeting(r)
		consumed := len(data) - r.Len()
		var ve versionError
		switch {
		case err == nil:
			if data[0] != socksVersion || len(methods) != int(data[1]) || consumed != 2+len(methods) ||
				!bytes.Equal(methods, data[2:consumed]) {
				t.Fatalf("greeting %x read as %x, %d bytes consumed", data, methods, consumed)
			}
		case errors.As(err, &ve):
			if len(data) == 0 || data[0] == socksVersion || byte(ve) != data[0] || consumed != 1 {
				t.Fatalf("version error %v for %x after %d bytes", err, data, consumed)
			}
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
			if r.Len() != 0 || (len(data) >= 2 && data[0] == socksVersion && len(data) >= 2+int(data[1])) {
				t.Fatalf("EOF for %x with %d bytes left", data, r.Len())
			}
		default:
			t.Fatalf("unexpected error %T: %v", err, err)
		}
	})
}
