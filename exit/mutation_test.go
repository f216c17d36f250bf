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
