package exit

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// reply builds a netlink message of type typ with sequence number seq.
func reply(typ uint16, seq uint32, body []byte) []byte {
	b := make([]byte, unix.SizeofNlMsghdr+len(body))
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], typ)
	ne.PutUint32(b[8:], seq)
	copy(b[unix.SizeofNlMsghdr:], body)
	return b
}

func routeMsg(rtmType uint8) []byte {
	rt := make([]byte, unix.SizeofRtMsg)
	rt[0], rt[7] = unix.AF_INET, rtmType
	return rt
}

func errorMsg(errno unix.Errno) []byte {
	b := make([]byte, 4+unix.SizeofNlMsghdr)
	binary.NativeEndian.PutUint32(b, uint32(-int32(errno)))
	return b
}

func TestParseRouteReply(t *testing.T) {
	for _, tc := range []struct {
		name     string
		msg      []byte
		typ      uint8
		done     bool
		routeErr bool // a routeError: an answer
		failure  bool // any other error: no answer
	}{
		{"local route", reply(unix.RTM_NEWROUTE, 1, routeMsg(unix.RTN_LOCAL)), unix.RTN_LOCAL, true, false, false},
		{"unicast route", reply(unix.RTM_NEWROUTE, 1, routeMsg(unix.RTN_UNICAST)), unix.RTN_UNICAST, true, false, false},
		{"other sequence number", reply(unix.RTM_NEWROUTE, 2, routeMsg(unix.RTN_LOCAL)), 0, false, false, false},
		{"other, then ours", append(reply(unix.RTM_NEWROUTE, 2, routeMsg(unix.RTN_LOCAL)), reply(unix.RTM_NEWROUTE, 1, routeMsg(unix.RTN_UNICAST))...), unix.RTN_UNICAST, true, false, false},
		{"no route", reply(unix.NLMSG_ERROR, 1, errorMsg(unix.ENETUNREACH)), 0, true, true, false},
		{"prohibited", reply(unix.NLMSG_ERROR, 1, errorMsg(unix.EACCES)), 0, true, true, false},
		{"kernel out of memory", reply(unix.NLMSG_ERROR, 1, errorMsg(unix.ENOMEM)), 0, true, false, true},
		{"acknowledgement", reply(unix.NLMSG_ERROR, 1, errorMsg(0)), 0, true, false, true},
		{"short route message", reply(unix.RTM_NEWROUTE, 1, []byte{2, 32}), 0, true, false, true},
		{"short error message", reply(unix.NLMSG_ERROR, 1, []byte{1}), 0, true, false, true},
		{"unexpected type", reply(unix.RTM_NEWADDR, 1, routeMsg(unix.RTN_LOCAL)), 0, true, false, true},
		{"length beyond the buffer", reply(unix.RTM_NEWROUTE, 1, routeMsg(unix.RTN_LOCAL))[:20], 0, true, false, true},
		{"too short for a header", []byte{1, 2, 3}, 0, false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			typ, done, err := parseRouteReply(tc.msg, 1)
			var rerr routeError
			if typ != tc.typ || done != tc.done || errors.As(err, &rerr) != tc.routeErr || (err != nil && !tc.routeErr) != tc.failure {
				t.Errorf("= %d, %v, %v; want %d, %v, route error %v, failure %v", typ, done, err, tc.typ, tc.done, tc.routeErr, tc.failure)
			}
		})
	}
}

// TestRouteRequestLayout checks the request against the layout the kernel
// reads: header, rtmsg with the family and a full-length destination, and
// one RTA_DST attribute.
func TestRouteRequestLayout(t *testing.T) {
	ne := binary.NativeEndian
	for _, tc := range []struct {
		addr   string
		family uint8
	}{{"192.0.2.9", unix.AF_INET}, {"2001:db8::9", unix.AF_INET6}} {
		a := netip.MustParseAddr(tc.addr)
		b := routeRequest(a, 7)
		n := len(a.AsSlice())
		if len(b) != unix.SizeofNlMsghdr+unix.SizeofRtMsg+unix.SizeofRtAttr+n || int(ne.Uint32(b)) != len(b) {
			t.Fatalf("%s: length %d, header says %d", a, len(b), ne.Uint32(b))
		}
		if ne.Uint16(b[4:]) != unix.RTM_GETROUTE || ne.Uint16(b[6:]) != unix.NLM_F_REQUEST || ne.Uint32(b[8:]) != 7 {
			t.Errorf("%s: header %x", a, b[:unix.SizeofNlMsghdr])
		}
		rt := b[unix.SizeofNlMsghdr:]
		if rt[0] != tc.family || int(rt[1]) != 8*n {
			t.Errorf("%s: rtmsg family %d dst_len %d", a, rt[0], rt[1])
		}
		attr := rt[unix.SizeofRtMsg:]
		if int(ne.Uint16(attr)) != unix.SizeofRtAttr+n || ne.Uint16(attr[2:]) != unix.RTA_DST {
			t.Errorf("%s: attribute header %x", a, attr[:unix.SizeofRtAttr])
		}
		if got, _ := netip.AddrFromSlice(attr[unix.SizeofRtAttr:]); got != a {
			t.Errorf("%s: attribute holds %s", a, got)
		}
	}
}

// FuzzParseRouteReply: whatever the socket returns, the parser neither
// panics nor reads a route type from a message too short to hold one.
func FuzzParseRouteReply(f *testing.F) {
	f.Add(reply(unix.RTM_NEWROUTE, 1, routeMsg(unix.RTN_LOCAL)))
	f.Add(reply(unix.NLMSG_ERROR, 1, errorMsg(unix.ENETUNREACH)))
	f.Add(append(reply(unix.RTM_NEWROUTE, 2, routeMsg(unix.RTN_LOCAL)), reply(unix.RTM_NEWROUTE, 1, routeMsg(unix.RTN_UNICAST))...))
	f.Add([]byte{})
	f.Add(reply(unix.RTM_NEWROUTE, 1, nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		typ, done, err := parseRouteReply(b, 1)
		if !done && (typ != 0 || err != nil) {
			t.Fatalf("not done, yet %d, %v", typ, err)
		}
		if err != nil && typ != 0 {
			t.Fatalf("an error with a route type %d", typ)
		}
	})
}
