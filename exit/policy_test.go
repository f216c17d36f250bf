package exit

import (
	"net/netip"
	"testing"

	"github.com/meridian-vpn/meridian/egress"
)

func TestPolicy(t *testing.T) {
	pfx := netip.MustParsePrefix
	addr := netip.MustParseAddr
	own := []netip.Addr{addr("10.200.0.1"), addr("fd00:200::1"), addr("9.9.9.7")}

	tests := []struct {
		name  string
		allow []netip.Prefix
		dst   string
		want  bool
	}{
		{"public v4", nil, "1.1.1.1", true},
		{"public v6", nil, "2606:4700:4700::1111", true},
		{"AS112, globally reachable", nil, "192.31.196.1", true},
		{"AMT v6, globally reachable", nil, "2001:3::1", true},
		{"just outside 172.16/12", nil, "172.32.0.1", true},
		{"just outside CGNAT", nil, "100.128.0.1", true},

		{"loopback", nil, "127.0.0.1", false},
		{"loopback elsewhere in 127/8", nil, "127.1.2.3", false},
		{"loopback v6", nil, "::1", false},
		{"unspecified v4", nil, "0.0.0.0", false},
		{"this network", nil, "0.1.2.3", false},
		{"unspecified v6", nil, "::", false},
		{"private 10/8", nil, "10.1.2.3", false},
		{"private 172.16/12", nil, "172.31.255.255", false},
		{"private 192.168/16", nil, "192.168.1.1", false},
		{"CGNAT", nil, "100.100.100.200", false},
		{"unique local v6", nil, "fd12:3456::1", false},
		{"link-local v4", nil, "169.254.1.1", false},
		{"link-local v6", nil, "fe80::1", false},
		{"link-local v6 with zone", nil, "fe80::1%eth0", false},
		{"cloud metadata", nil, "169.254.169.254", false},
		{"cloud metadata v6", nil, "fd00:ec2::254", false},
		{"oracle metadata", nil, "192.0.0.192", false},
		{"multicast v4", nil, "224.0.0.1", false},
		{"multicast v6", nil, "ff02::1", false},
		{"broadcast", nil, "255.255.255.255", false},
		{"reserved 240/4", nil, "240.0.0.1", false},

		{"own tunnel address v4", nil, "10.200.0.1", false},
		{"own tunnel address v6", nil, "fd00:200::1", false},
		{"host address (public)", nil, "9.9.9.7", false},
		{"host neighbour is fine", nil, "9.9.9.8", true},

		{"documentation v4 TEST-NET-1", nil, "192.0.2.1", false},
		{"documentation v4 TEST-NET-2", nil, "198.51.100.1", false},
		{"documentation v4 TEST-NET-3", nil, "203.0.113.1", false},
		{"documentation v6", nil, "2001:db8::1", false},
		{"documentation v6 3fff::/20", nil, "3fff::1", false},
		{"benchmarking", nil, "198.18.0.1", false},
		{"benchmarking, top", nil, "198.19.255.255", false},
		{"PCP anycast", nil, "192.0.0.9", false},
		{"6to4 relay anycast", nil, "192.88.99.1", false},
		{"discard-only v6", nil, "100::1", false},
		{"SRv6 SIDs", nil, "5f00::1", false},
		{"Teredo", nil, "2001::1", false},
		{"IETF protocol assignments v6", nil, "2001:2::1", false},
		{"reserved v6 outside 2000::/3", nil, "4000::1", false},
		{"6to4 of loopback", nil, "2002:7f00:1::1", false},
		{"6to4 of metadata", nil, "2002:a9fe:a9fe::", false},
		{"6to4 of public", nil, "2002:101:101::1", true},
		{"local-use NAT64 of public", nil, "64:ff9b:1::101:101", false},
		{"IPv4-compatible of loopback", nil, "::7f00:1", false},
		{"IPv4-compatible of public", nil, "::101:101", false},
		{"NAT64 of documentation", nil, "64:ff9b::c000:201", false},

		{"v4-mapped loopback", nil, "::ffff:127.0.0.1", false},
		{"v4-mapped metadata", nil, "::ffff:169.254.169.254", false},
		{"v4-mapped private", nil, "::ffff:10.0.0.1", false},
		{"v4-mapped own", nil, "::ffff:10.200.0.1", false},
		{"v4-mapped public", nil, "::ffff:1.1.1.1", true},
		{"NAT64 of metadata", nil, "64:ff9b::a9fe:a9fe", false},
		{"NAT64 of loopback", nil, "64:ff9b::7f00:1", false},
		{"NAT64 of public", nil, "64:ff9b::101:101", true},

		{"loopback allowed", []netip.Prefix{pfx("127.0.0.1/32")}, "127.0.0.1", true},
		{"allow is exact", []netip.Prefix{pfx("127.0.0.1/32")}, "127.0.0.2", false},
		{"allowed loopback via v4-mapped dst", []netip.Prefix{pfx("127.0.0.1/32")}, "::ffff:127.0.0.1", true},
		{"v4-mapped allow prefix", []netip.Prefix{pfx("::ffff:127.0.0.1/128")}, "127.0.0.1", true},
		{"v6 loopback allowed", []netip.Prefix{pfx("::1/128")}, "::1", true},
		{"private subnet allowed", []netip.Prefix{pfx("192.168.50.0/24")}, "192.168.50.9", true},
		{"private subnet allow does not leak", []netip.Prefix{pfx("192.168.50.0/24")}, "192.168.51.9", false},
		{"own address allowed explicitly", []netip.Prefix{pfx("10.200.0.1/32")}, "10.200.0.1", true},
		{"unmasked allow prefix", []netip.Prefix{pfx("127.0.0.1/8")}, "127.9.9.9", true},
		{"documentation allowed", []netip.Prefix{pfx("198.51.100.0/24")}, "198.51.100.2", true},
		{"6to4 allowed", []netip.Prefix{pfx("2002::/16")}, "2002:7f00:1::1", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewPolicy(tt.allow, own)
			if got := p.Allowed(addr(tt.dst)); got != tt.want {
				t.Errorf("Allowed(%s) = %v, want %v", tt.dst, got, tt.want)
			}
		})
	}
}

func TestPolicyInvalid(t *testing.T) {
	p := NewPolicy([]netip.Prefix{{}}, []netip.Addr{{}})
	if p.Allowed(netip.Addr{}) {
		t.Error("the zero Addr must not be allowed")
	}
	if !p.Allowed(netip.MustParseAddr("1.1.1.1")) {
		t.Error("invalid entries must be ignored, not deny everything")
	}
}

// TestDenyListIsDenied checks every denied prefix of the table directly,
// so that an entry cannot silently stop working.
func TestDenyListIsDenied(t *testing.T) {
	p := NewPolicy(nil, nil)
	for _, pfx := range egress.Prefixes() {
		if pfx.Addr().Is4In6() {
			continue // the exit unmaps these and judges the IPv4 address
		}
		if p.Allowed(pfx.Addr()) {
			t.Errorf("%v: first address allowed", pfx)
		}
		if p.Allowed(lastAddr(pfx)) {
			t.Errorf("%v: last address allowed", pfx)
		}
	}
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}
