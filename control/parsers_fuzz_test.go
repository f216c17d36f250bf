package control

import (
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/internal/check"
)

// fuzzProxies are the trusted proxies of FuzzClientIP: a loopback proxy
// and a documentation range for a proxy tier.
var fuzzProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.9/32"), netip.MustParsePrefix("2001:db8:ffff::/48")}

// FuzzClientIP: the registration IP that goes into the subscriber record is
// the connection's peer, or, only when the peer is a trusted proxy, an
// address from X-Forwarded-For every hop to the right of which is a trusted
// proxy. It is always a plain address (valid, unmapped, without a zone) and
// clientIP never panics.
func FuzzClientIP(f *testing.F) {
	proxy := netip.MustParseAddr("127.0.0.9").As16()
	other := netip.MustParseAddr("127.0.0.1").As16()
	tier := netip.MustParseAddr("2001:db8:ffff::2").As16()
	for _, c := range []struct {
		peer [16]byte
		xff  string
	}{
		{proxy, "198.51.100.7"},
		{proxy, "203.0.113.5, 198.51.100.7"},
		{proxy, "198.51.100.7, 2001:db8:ffff::1"},
		{proxy, "  198.51.100.7 ,2001:db8:ffff::1 "},
		{proxy, "::ffff:198.51.100.7"},
		{proxy, "fe80::1%eth0"},
		{proxy, "198.51.100.7, garbage"},
		{proxy, "198.51.100.7:4444"},
		{proxy, ""},
		{proxy, ",,,"},
		{proxy, "127.0.0.9, 127.0.0.9"},
		{other, "198.51.100.7"},
		{tier, "2001:db8::7"},
	} {
		f.Add(c.peer[:], false, c.xff)
	}
	f.Add(netip.MustParseAddr("fe80::7").AsSlice(), true, "")
	f.Fuzz(func(t *testing.T, peerBytes []byte, peerZone bool, xff string) {
		if len(peerBytes) != 16 {
			return
		}
		peer := netip.AddrFrom16([16]byte(peerBytes)).Unmap()
		s := &Server{cfg: Config{TrustedProxies: fuzzProxies}}
		r := httptest.NewRequest("POST", "/signup", nil)
		r.RemoteAddr = netip.AddrPortFrom(peer, 40000).String()
		if peerZone && peer.Is6() {
			// A link-local peer, as the listener reports it.
			r.RemoteAddr = netip.AddrPortFrom(peer.WithZone("eth0"), 40000).String()
		}
		r.Header.Set("X-Forwarded-For", xff)
		got := s.clientIP(r)

		if !got.IsValid() || got.Zone() != "" || got.Is4In6() {
			t.Fatalf("peer %s, X-Forwarded-For %q: registration IP %q", peer, xff, got)
		}
		if again, err := netip.ParseAddr(got.String()); err != nil || again != got {
			t.Fatalf("registration IP %q does not parse back (%v)", got, err)
		}
		if got == peer {
			return
		}
		if !s.trusted(peer) {
			t.Fatalf("untrusted peer %s, X-Forwarded-For %q: took %s from the header", peer, xff, got)
		}
		// got is a hop of the header, and every hop right of it is a
		// trusted proxy.
		hops := strings.Split(r.Header.Get("X-Forwarded-For"), ",")
		for i := len(hops) - 1; i >= 0; i-- {
			a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
			if err != nil {
				t.Fatalf("X-Forwarded-For %q: took %s from beyond the malformed hop %q", xff, got, hops[i])
			}
			if a.Unmap() == got {
				return
			}
			if !s.trusted(a.Unmap()) {
				t.Fatalf("X-Forwarded-For %q: took %s from beyond the untrusted hop %s", xff, got, a)
			}
		}
		t.Fatalf("X-Forwarded-For %q: %s is not in it", xff, got)
	})
}

// FuzzParseTime: the lookup's at, from and to (which the CLI passes as
// given) are accepted only as RFC 3339 times with a zone in the years the
// records can hold; what is accepted reads back as the same instant, and
// what is refused is refused naming the parameter, not echoing it.
func FuzzParseTime(f *testing.F) {
	for _, s := range []string{
		"2026-05-01T14:30:00+05:30",
		"2026-05-01T09:00:00Z",
		"2026-05-01T09:00:00.123456789Z",
		"2026-05-01T14:30:00",
		"2026-05-01",
		"0001-01-01T00:00:00Z",
		"9999-12-31T23:59:59+23:59",
		"2026-02-30T00:00:00Z",
		"2026-05-01T24:00:00Z",
		"2026-05-01t09:00:00z",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		got, err := parseTime("at", v)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "at ") {
				t.Fatalf("parseTime(%q): error %q does not name the parameter", v, err)
			}
			return
		}
		if check.Time(got) != nil {
			t.Fatalf("parseTime(%q) = %v, outside the years records hold", v, got)
		}
		if _, err := time.Parse("2006-01-02T15:04:05", v); err == nil {
			t.Fatalf("parseTime(%q) accepted a time without a zone", v)
		}
		back, err := parseTime("at", got.Format(time.RFC3339Nano))
		if err != nil || !back.Equal(got) {
			t.Fatalf("parseTime(%q) = %v reads back as %v, %v", v, got, back, err)
		}
	})
}
