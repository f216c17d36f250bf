// Package check validates input that the control server stores or acts on
// and the command line passes to it: free text, case references, times,
// endpoints, tunnel pools and ids. Its errors say what is wrong and where,
// never the value itself, which may be personal data.
package check

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/meridian-vpn/meridian/ipam"
)

// Text checks free text that is stored and shown again (names, labels,
// places, incident and order text): valid UTF-8 without control characters
// (newlines and tabs allowed when multiline), without format characters
// (Unicode Cf: bidirectional overrides and isolates, zero-width spaces,
// byte order marks) and without line or paragraph separators. Zero-width
// (non-)joiners stay allowed: Indian scripts need them in ordinary words.
func Text(s string, multiline bool) error {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, n := utf8.DecodeRuneInString(s[i:]); n <= 1 {
				return fmt.Errorf("is not valid UTF-8 (byte %d)", i)
			}
		}
		switch {
		case multiline && (r == '\n' || r == '\t'):
		case r == '\u200c' || r == '\u200d': // ZWNJ, ZWJ
		case unicode.Is(unicode.Cc, r):
			if multiline {
				return fmt.Errorf("has a control character (%U at byte %d); only newlines and tabs are allowed", r, i)
			}
			return fmt.Errorf("must be one line without control characters (%U at byte %d)", r, i)
		case unicode.Is(unicode.Bidi_Control, r):
			return fmt.Errorf("has a bidirectional control character (%U at byte %d), which can make text display other than it is stored", r, i)
		case unicode.Is(unicode.Cf, r), unicode.Is(unicode.Zl, r), unicode.Is(unicode.Zp, r):
			return fmt.Errorf("has an invisible format or separator character (%U at byte %d)", r, i)
		}
	}
	return nil
}

// MaxCaseRef is the longest case reference, in characters.
const MaxCaseRef = 128

// CaseRef checks a case reference, under which every read of compliance
// data is recorded: 1 to MaxCaseRef printable characters (letters, marks,
// digits, punctuation, symbols and the ASCII space; no control, format or
// separator characters, no other spaces), at least one of them a letter or
// a digit, and matching pattern (the whole reference) when one is set.
func CaseRef(s string, pattern *regexp.Regexp) error {
	if !utf8.ValidString(s) {
		return errors.New("case reference is not valid UTF-8")
	}
	n, alnum := 0, false
	for i, r := range s {
		n++
		if !unicode.IsPrint(r) {
			return fmt.Errorf("case reference has a character that is not printable (%U at byte %d)", r, i)
		}
		alnum = alnum || unicode.IsLetter(r) || unicode.IsDigit(r)
	}
	switch {
	case n == 0:
		return errors.New("a case reference is required (case=REF): every read of compliance data is recorded under one")
	case n > MaxCaseRef:
		return fmt.Errorf("case reference is %d characters long; at most %d", n, MaxCaseRef)
	case !alnum:
		return errors.New("case reference needs at least one letter or digit")
	case pattern != nil && !pattern.MatchString(s):
		return fmt.Errorf("case reference does not match this server's case pattern %s", pattern)
	}
	return nil
}

// CasePattern compiles an operator's pattern for case references; it must
// match the whole reference.
func CasePattern(p string) (*regexp.Regexp, error) {
	if p == "" {
		return nil, nil
	}
	if _, err := regexp.Compile(p); err != nil {
		return nil, fmt.Errorf("case pattern: %w", err)
	}
	return regexp.MustCompile(`^(?:` + p + `)$`), nil
}

// Times Meridian accepts lie in [MinYear, MaxYear]. Nothing it records
// (sessions, incidents, CERT-In orders: the directions are of 2022) is older
// than 2000, so an earlier year is a typo (0000, 0026); and the end keeps
// the distance between any two accepted times and now within what a Go
// time.Duration holds (about 292 years), so deadlines and "overdue by" never
// overflow.
const (
	MinYear = 2000
	MaxYear = 2199
)

// Time checks that t lies in the years MinYear to MaxYear.
func Time(t time.Time) error {
	if y := t.UTC().Year(); y < MinYear || y > MaxYear {
		return fmt.Errorf("year %04d is outside %d-%d", y, MinYear, MaxYear)
	}
	return nil
}

// Endpoint checks a host:port that something dials: a host, and a port
// written as a decimal number from 1 to 65535.
func Endpoint(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" {
		return errors.New("must be host:port")
	}
	if Text(host, false) != nil || len(host) > 253 {
		return errors.New("host must be a name or address of at most 253 printable characters")
	}
	if _, err := Port(port); err != nil {
		return err
	}
	return nil
}

// Port parses a port number: decimal digits only, 1 to 65535.
func Port(s string) (uint16, error) {
	n, err := ID(s)
	if err != nil || n > 65535 {
		return 0, errors.New("port must be a number from 1 to 65535")
	}
	return uint16(n), nil
}

// ID parses a positive decimal id: digits only (no sign, no spaces).
func ID(s string) (int64, error) {
	if s == "" || len(s) > 18 {
		return 0, errors.New("not a positive number")
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, errors.New("not a positive number")
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, errors.New("not a positive number")
	}
	return n, nil
}

// Addresses a tunnel pool may not overlap: devices given them could not be
// routed (unspecified, loopback, link-local, multicast, reserved), or would
// shadow the host's own networking.
var notPool = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/3"), // multicast and reserved, broadcast
	netip.MustParsePrefix("::/127"),      // unspecified and loopback
	netip.MustParsePrefix("::ffff:0:0/96"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("ff00::/8"),
}

// Pool checks a tunnel address pool of the given family (4 or 6): a
// canonical prefix of room for at least one device, with no unspecified,
// loopback, link-local, multicast or reserved addresses (so not
// 0.0.0.0/0 or ::/0 either).
func Pool(p netip.Prefix, family int) error {
	if !p.IsValid() {
		return errors.New("not a CIDR prefix")
	}
	if (family == 4) != p.Addr().Is4() {
		return fmt.Errorf("%s is not an IPv%d prefix", p, family)
	}
	for _, bad := range notPool {
		if p.Overlaps(bad) {
			return fmt.Errorf("%s overlaps %s (unspecified, loopback, link-local, multicast or reserved addresses); choose a private range such as 10.200.0.0/16 or a ULA /64", p, bad)
		}
	}
	if _, err := ipam.NewPool(p); err != nil {
		return err
	}
	return nil
}
