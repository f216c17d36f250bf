package timesync

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// packetLen is the length of an NTP header without extension fields.
const packetLen = 48

// ntpTime is an NTP timestamp: seconds since 1900 in the upper 32 bits,
// the fraction of a second in the lower 32.
type ntpTime uint64

// Leap is the leap indicator of an NTP header.
type Leap uint8

const (
	LeapNone   Leap = 0
	LeapInsert Leap = 1 // the last minute of the day has 61 seconds
	LeapDelete Leap = 2 // the last minute of the day has 59 seconds
	LeapAlarm  Leap = 3 // the server's clock is not synchronised
)

func (l Leap) String() string {
	switch l {
	case LeapNone:
		return "none"
	case LeapInsert:
		return "insert"
	case LeapDelete:
		return "delete"
	}
	return "unsynchronised"
}

// Modes of an NTP header.
const (
	modeClient = 3
	modeServer = 4
)

// packet is an NTP header (RFC 5905, figure 8).
type packet struct {
	Leap      Leap
	Version   uint8
	Mode      uint8
	Stratum   uint8
	Poll      int8
	Precision int8
	RootDelay uint32 // seconds, 16.16 fixed point
	RootDisp  uint32 // seconds, 16.16 fixed point
	RefID     [4]byte
	RefTime   ntpTime
	Origin    ntpTime // the client's transmit time, echoed by the server
	Receive   ntpTime // when the request reached the server
	Transmit  ntpTime // when the reply left the server
}

func (p *packet) marshal() []byte {
	b := make([]byte, packetLen)
	b[0] = byte(p.Leap)<<6 | (p.Version&7)<<3 | p.Mode&7
	b[1] = p.Stratum
	b[2] = byte(p.Poll)
	b[3] = byte(p.Precision)
	binary.BigEndian.PutUint32(b[4:], p.RootDelay)
	binary.BigEndian.PutUint32(b[8:], p.RootDisp)
	copy(b[12:16], p.RefID[:])
	binary.BigEndian.PutUint64(b[16:], uint64(p.RefTime))
	binary.BigEndian.PutUint64(b[24:], uint64(p.Origin))
	binary.BigEndian.PutUint64(b[32:], uint64(p.Receive))
	binary.BigEndian.PutUint64(b[40:], uint64(p.Transmit))
	return b
}

// parsePacket reads an NTP header. Extension fields and a MAC after the
// header are ignored.
func parsePacket(b []byte) (packet, error) {
	if len(b) < packetLen {
		return packet{}, fmt.Errorf("NTP packet of %d bytes: want at least %d", len(b), packetLen)
	}
	p := packet{
		Leap:      Leap(b[0] >> 6),
		Version:   b[0] >> 3 & 7,
		Mode:      b[0] & 7,
		Stratum:   b[1],
		Poll:      int8(b[2]),
		Precision: int8(b[3]),
		RootDelay: binary.BigEndian.Uint32(b[4:]),
		RootDisp:  binary.BigEndian.Uint32(b[8:]),
		RefTime:   ntpTime(binary.BigEndian.Uint64(b[16:])),
		Origin:    ntpTime(binary.BigEndian.Uint64(b[24:])),
		Receive:   ntpTime(binary.BigEndian.Uint64(b[32:])),
		Transmit:  ntpTime(binary.BigEndian.Uint64(b[40:])),
	}
	copy(p.RefID[:], b[12:16])
	return p, nil
}

// ntpEpoch is the Unix time of the NTP epoch, 1 January 1900.
const ntpEpoch = -2208988800

func toNTP(t time.Time) ntpTime {
	sec := uint64(t.Unix() - ntpEpoch) // wraps into the current era
	frac := uint64(t.Nanosecond()) << 32 / 1e9
	return ntpTime(sec<<32 | frac)
}

// time returns t as a wall time in the NTP era that puts it nearest to
// pivot (within 68 years), which carries it over the 2036 era change.
func (t ntpTime) time(pivot time.Time) time.Time {
	return pivot.Round(0).Add(fixedDuration(int64(t - toNTP(pivot))))
}

// fixedDuration converts a signed 32.32 fixed-point number of seconds.
func fixedDuration(f int64) time.Duration {
	sec := f >> 32
	frac := f & (1<<32 - 1)
	return time.Duration(sec)*time.Second + time.Duration(frac*1e9>>32)
}

// shortDuration converts an unsigned 16.16 fixed-point number of seconds.
func shortDuration(s uint32) time.Duration {
	return time.Duration(uint64(s) * 1e9 >> 16)
}

// refID renders a reference identifier: a short ASCII code for stratum 0
// (kiss code) and 1 (reference clock, e.g. GPS), otherwise the IPv4 address
// of the server's own source (or a hash standing for an IPv6 one).
func refID(stratum uint8, id [4]byte) string {
	if stratum > 1 {
		return netip.AddrFrom4(id).String()
	}
	var b strings.Builder
	for _, c := range id {
		switch {
		case c == 0:
		case c >= ' ' && c <= '~':
			b.WriteByte(c)
		default:
			b.WriteByte('?')
		}
	}
	return b.String()
}

// Sample is one usable answer of an NTP server.
type Sample struct {
	Offset    time.Duration // the server's clock minus ours
	Delay     time.Duration // round trip, less the server's processing time
	Stratum   int
	RefID     string
	Leap      Leap
	RootDelay time.Duration // the server's round trip to its primary reference
	RootDisp  time.Duration // the server's dispersion from its primary reference
	At        time.Time     // when the answer arrived
}

// distance is the root synchronisation distance: how far off the sample
// may be, counting the path to the primary reference. Less is better.
func (s Sample) distance() time.Duration { return (s.Delay+s.RootDelay)/2 + s.RootDisp }

// maxDistance is MAXDISP of RFC 5905: a server claiming a larger root
// distance is not synchronised.
const maxDistance = 16 * time.Second

var (
	// ErrUnsynchronised means that the server answered but its own clock
	// is not synchronised (leap indicator 3, stratum 16 or more, or a root
	// distance over 16 s): its time is not used.
	ErrUnsynchronised = errors.New("NTP server is not synchronised")
	// ErrBogus means that a reply to our request was implausible.
	ErrBogus = errors.New("bogus NTP reply")
)

// KissError is a kiss-o'-death (RFC 5905, section 7.4): a reply with
// stratum 0 whose reference identifier is an ASCII code. RATE asks the
// client to query less often; DENY and RSTR to stop.
type KissError struct{ Code string }

func (e *KissError) Error() string { return "NTP kiss-o'-death " + e.Code }

// DefaultPort is the NTP port.
const DefaultPort = 123

// splitSource reads "host", "host:port", an IP address or "[IPv6]:port",
// and returns the host and port (DefaultPort when none is given).
func splitSource(s string) (host string, port int, err error) {
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return s, DefaultPort, nil
	}
	host, port = s, DefaultPort
	if strings.HasPrefix(s, "[") || strings.Count(s, ":") == 1 {
		h, p, err := net.SplitHostPort(s)
		if err != nil {
			return "", 0, fmt.Errorf("NTP source %q: %v", s, err)
		}
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return "", 0, fmt.Errorf("NTP source %q: port must be a number from 1 to 65535", s)
		}
		host, port = h, n
	}
	if !validHost(host) {
		return "", 0, fmt.Errorf("NTP source %q: want HOST or HOST:PORT, with a host name or IP address", s)
	}
	return host, port, nil
}

func validHost(h string) bool {
	if a, err := netip.ParseAddr(h); err == nil {
		return a.Zone() == ""
	}
	if h == "" || len(h) > 253 {
		return false
	}
	for _, l := range strings.Split(h, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range []byte(l) {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// Query asks the NTP server source ("host" or "host:port") for the time
// once, in RFC 5905 client mode, waiting at most timeout for the answer.
// The request's transmit timestamp is a random nonce (it tells the server
// nothing about our clock); replies that do not echo it, are not server
// replies or do not parse are ignored, as a spoofed packet would be.
// A reply to our request is refused with a *KissError, ErrUnsynchronised
// or ErrBogus when its time must not be used.
func Query(ctx context.Context, source string, timeout time.Duration) (Sample, error) {
	host, port, err := splitSource(source)
	if err != nil {
		return Sample{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return Sample{}, err
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()

	var nonce [8]byte
	rand.Read(nonce[:])
	req := packet{Version: 4, Mode: modeClient, Transmit: ntpTime(binary.BigEndian.Uint64(nonce[:]))}
	t1 := time.Now()
	if _, err := conn.Write(req.marshal()); err != nil {
		return Sample{}, err
	}
	buf := make([]byte, 1024)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return Sample{}, ctx.Err()
			}
			return Sample{}, err
		}
		rtt := time.Since(t1) // monotonic: a clock step during the query does not count
		p, err := parsePacket(buf[:n])
		if err != nil || p.Mode != modeServer || p.Origin != req.Transmit {
			continue
		}
		return sample(p, t1, rtt)
	}
}

// sample checks a reply to a request sent at t1 and answered after rtt,
// and computes the offset and delay of RFC 5905 section 8.
func sample(p packet, t1 time.Time, rtt time.Duration) (Sample, error) {
	switch {
	case p.Version < 1 || p.Version > 4:
		return Sample{}, fmt.Errorf("%w: version %d", ErrBogus, p.Version)
	case p.Stratum == 0 && refID(0, p.RefID) != "":
		return Sample{}, &KissError{Code: refID(0, p.RefID)}
	case p.Stratum == 0:
		return Sample{}, fmt.Errorf("%w: stratum 0 without a kiss code", ErrUnsynchronised)
	case p.Leap == LeapAlarm || p.Stratum >= 16:
		return Sample{}, fmt.Errorf("%w: leap indicator %d, stratum %d", ErrUnsynchronised, p.Leap, p.Stratum)
	case p.Receive == 0 || p.Transmit == 0:
		return Sample{}, fmt.Errorf("%w: zero timestamp", ErrBogus)
	}
	t1 = t1.Round(0) // wall clock only from here
	t4 := t1.Add(rtt)
	t2, t3 := p.Receive.time(t1), p.Transmit.time(t1)
	if t3.Before(t2) {
		return Sample{}, fmt.Errorf("%w: sent before it was received", ErrBogus)
	}
	s := Sample{
		Offset:    (t2.Sub(t1) + t3.Sub(t4)) / 2,
		Delay:     max(rtt-t3.Sub(t2), 0),
		Stratum:   int(p.Stratum),
		RefID:     refID(p.Stratum, p.RefID),
		Leap:      p.Leap,
		RootDelay: shortDuration(p.RootDelay),
		RootDisp:  shortDuration(p.RootDisp),
		At:        t4,
	}
	if s.distance() > maxDistance {
		return Sample{}, fmt.Errorf("%w: root distance %s", ErrUnsynchronised, s.distance())
	}
	return s, nil
}
