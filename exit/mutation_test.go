package exit

import (
	"net/netip"
	"testing"
)

// Found by scripts/mutation.sh: with `bits > 0` in normalizePrefix, an
// IPv4-mapped allow prefix of exactly /96 (every IPv4 address) stayed an
// IPv6 prefix and matched no destination, since Allowed compares unmapped
// addresses. It must mean what 0.0.0.0/0 means, and no more.
func TestMappedAllowPrefixOfAllIPv4(t *testing.T) {
	p := NewPolicy([]netip.Prefix{netip.MustParsePrefix("::ffff:0.0.0.0/96")}, nil)
	for _, tt := range []struct {
		dst  string
		want bool
	}{
		{"127.0.0.1", true},
		{"169.254.169.254", true},
		{"::ffff:10.0.0.1", true},
		{"::1", false},
		{"fe80::1", false},
	} {
		if got := p.Allowed(netip.MustParseAddr(tt.dst)); got != tt.want {
			t.Errorf("allow ::ffff:0.0.0.0/96: Allowed(%s) = %v, want %v", tt.dst, got, tt.want)
		}
	}
}

// The policy denies through two independent checks, the netip predicates
// and package egress's table, so that neither is a single point of
// failure. scripts/mutation.sh showed that the tests could not tell when
// the netip half was broken (egress hid it); this checks that half on its
// own, one address for each predicate.
func TestNetipHalfDeniesOnItsOwn(t *testing.T) {
	for _, dst := range []string{
		"127.0.0.1", "::1", // loopback
		"0.0.0.0", "::", // unspecified
		"10.1.2.3", "172.16.0.1", "192.168.1.1", "fd12::1", // private
		"239.1.2.3", "ff0e::1", // multicast (not link- or interface-local)
		"169.254.169.254", "fe80::1", // link-local unicast
	} {
		if !netipDenied(netip.MustParseAddr(dst)) {
			t.Errorf("netipDenied(%s) = false", dst)
		}
	}
	for _, dst := range []string{"1.1.1.1", "2606:4700:4700::1111", "100.64.0.1"} {
		if netipDenied(netip.MustParseAddr(dst)) {
			t.Errorf("netipDenied(%s) = true, want false (egress's table decides it)", dst)
		}
	}
}
