package exit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// hostLocal reports whether the kernel would deliver a packet for dst to
// this host itself instead of sending it out: it asks the kernel for its
// route to dst (RTM_GETROUTE, as `ip route get` does) and checks the route's
// type. Asked at the moment of each decision, the answer follows every
// address the host gains or loses after the exit started (DHCP, IPv6
// privacy addresses, floating IPs, `ip addr add`) and covers what no
// address list shows: routes of type local (AnyIP), subnet broadcast and
// IPv6 anycast addresses.
//
// Local (true) are routes of type local, broadcast, anycast and multicast.
// A destination without a route (the kernel answers with an error) is not
// local: the exit's own dial does the same lookup and fails. When the
// kernel cannot be asked at all, the answer is true, so the destination is
// refused rather than let through unchecked.
//
// The host's routing rules are assumed to consult the local table before
// any rule that selects by source address, as Linux does by default
// (priority 0, "from all lookup local"); the lookup carries no source.
func hostLocal(dst netip.Addr) bool {
	typ, err := routeType(dst)
	if err != nil {
		var rerr routeError
		return !errors.As(err, &rerr)
	}
	switch typ {
	case unix.RTN_LOCAL, unix.RTN_BROADCAST, unix.RTN_ANYCAST, unix.RTN_MULTICAST:
		return true
	}
	return false
}

// routeError is the kernel's refusal to route a destination (no route,
// unreachable, prohibit or blackhole routes): an answer, unlike a failure
// to ask.
type routeError struct{ errno unix.Errno }

func (e routeError) Error() string { return "no route: " + e.errno.Error() }

// routeType asks the kernel for its route to dst and returns the route's
// type (unix.RTN_*). Each call uses its own netlink socket, so concurrent
// calls share nothing.
func routeType(dst netip.Addr) (uint8, error) {
	dst = dst.Unmap().WithZone("")
	if !dst.IsValid() {
		return 0, errors.New("invalid address")
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return 0, fmt.Errorf("netlink socket: %w", err)
	}
	defer unix.Close(fd)
	// The kernel answers within the send; the timeout only bounds a kernel
	// that does not.
	tv := unix.Timeval{Sec: 1}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return 0, fmt.Errorf("netlink timeout: %w", err)
	}
	const seq = 1
	if err := unix.Sendto(fd, routeRequest(dst, seq), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("netlink send: %w", err)
	}
	buf := make([]byte, 4096)
	for {
		n, from, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return 0, fmt.Errorf("netlink receive: %w", err)
		}
		if nl, ok := from.(*unix.SockaddrNetlink); !ok || nl.Pid != 0 {
			continue // not from the kernel
		}
		typ, done, err := parseRouteReply(buf[:n], seq)
		if done {
			return typ, err
		}
	}
}

// routeRequest is an RTM_GETROUTE request for the route to dst: a netlink
// header, an rtmsg and one RTA_DST attribute.
func routeRequest(dst netip.Addr, seq uint32) []byte {
	addr := dst.AsSlice()
	family := byte(unix.AF_INET6)
	if dst.Is4() {
		family = unix.AF_INET
	}
	attrLen := unix.SizeofRtAttr + len(addr)
	total := unix.SizeofNlMsghdr + unix.SizeofRtMsg + attrLen
	b := make([]byte, total)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(total))
	ne.PutUint16(b[4:], unix.RTM_GETROUTE)
	ne.PutUint16(b[6:], unix.NLM_F_REQUEST)
	ne.PutUint32(b[8:], seq)
	rt := b[unix.SizeofNlMsghdr:]
	rt[0] = family              // rtm_family
	rt[1] = byte(len(addr)) * 8 // rtm_dst_len
	attr := rt[unix.SizeofRtMsg:]
	ne.PutUint16(attr[0:], uint16(attrLen))
	ne.PutUint16(attr[2:], unix.RTA_DST)
	copy(attr[unix.SizeofRtAttr:], addr)
	return b
}

// parseRouteReply reads the kernel's answer to request seq: the route's
// type, or a routeError. done is false for messages that are not the
// answer (another sequence number).
func parseRouteReply(b []byte, seq uint32) (typ uint8, done bool, err error) {
	ne := binary.NativeEndian
	for len(b) >= unix.SizeofNlMsghdr {
		l := int(ne.Uint32(b[0:]))
		if l < unix.SizeofNlMsghdr || l > len(b) {
			return 0, true, errors.New("netlink: malformed message")
		}
		msg := b[:l]
		b = b[min(nlmAlign(l), len(b)):]
		if ne.Uint32(msg[8:]) != seq {
			continue
		}
		body := msg[unix.SizeofNlMsghdr:]
		switch ne.Uint16(msg[4:]) {
		case unix.NLMSG_ERROR:
			if len(body) < 4 {
				return 0, true, errors.New("netlink: short error message")
			}
			code := int32(ne.Uint32(body))
			if code == 0 {
				return 0, true, errors.New("netlink: acknowledgement instead of a route")
			}
			switch errno := unix.Errno(-code); errno {
			case unix.ENETUNREACH, unix.EHOSTUNREACH, unix.EACCES, unix.EINVAL:
				return 0, true, routeError{errno}
			default:
				return 0, true, fmt.Errorf("netlink: %w", errno)
			}
		case unix.RTM_NEWROUTE:
			if len(body) < unix.SizeofRtMsg {
				return 0, true, errors.New("netlink: short route message")
			}
			return body[7], true, nil // rtm_type
		default:
			return 0, true, fmt.Errorf("netlink: unexpected message type %d", ne.Uint16(msg[4:]))
		}
	}
	return 0, false, nil
}

func nlmAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }
