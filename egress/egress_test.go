package egress

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// registry is every row of the two IANA special-purpose registries, and
// every row from other sources, with whether its addresses are denied, as
// written out here by hand from the registries: each is checked against the
// table (that it is there, with this prefix) and against Denied (at the
// row's first and last address). An embedding row's own first and last
// addresses embed 0.0.0.0 and 255.255.255.255, which are denied.
var registry = []struct {
	prefix string
	gr     string // the registry's Globally Reachable
	denied bool
}{
	// IPv4 Special-Purpose Address Registry.
	{"0.0.0.0/8", "False", true},
	{"0.0.0.0/32", "False", true},
	{"10.0.0.0/8", "False", true},
	{"100.64.0.0/10", "False", true},
	{"127.0.0.0/8", "False", true},
	{"169.254.0.0/16", "False", true},
	{"172.16.0.0/12", "False", true},
	{"192.0.0.0/24", "False", true},
	{"192.0.0.0/29", "False", true},
	{"192.0.0.8/32", "False", true},
	{"192.0.0.9/32", "True", true},  // PCP anycast: Meridian's deviation
	{"192.0.0.10/32", "True", true}, // TURN anycast: Meridian's deviation
	{"192.0.0.170/32", "False", true},
	{"192.0.0.171/32", "False", true},
	{"192.0.2.0/24", "False", true},
	{"192.31.196.0/24", "True", false},
	{"192.52.193.0/24", "True", false},
	{"192.88.99.0/24", "N/A", true},
	{"192.88.99.2/32", "False", true},
	{"192.168.0.0/16", "False", true},
	{"192.175.48.0/24", "True", false},
	{"198.18.0.0/15", "False", true},
	{"198.51.100.0/24", "False", true},
	{"203.0.113.0/24", "False", true},
	{"240.0.0.0/4", "False", true},
	{"255.255.255.255/32", "False", true},
	// IPv4, other sources.
	{"224.0.0.0/4", "", true},
	{"169.254.169.254/32", "", true},
	{"192.0.0.192/32", "", true},

	// IPv6 Special-Purpose Address Registry.
	{"::1/128", "False", true},
	{"::/128", "False", true},
	{"::ffff:0:0/96", "False", true},
	{"64:ff9b::/96", "True", true}, // embeds 0.0.0.0 and 255.255.255.255 at its edges
	{"64:ff9b:1::/48", "False", true},
	{"100::/64", "False", true},
	{"100:0:0:1::/64", "False", true},
	{"2001::/23", "False", true},
	{"2001::/32", "N/A", true},
	{"2001:1::1/128", "True", true}, // PCP anycast: Meridian's deviation
	{"2001:1::2/128", "True", true}, // TURN anycast: Meridian's deviation
	{"2001:1::3/128", "True", true}, // DNS-SD SRP anycast: Meridian's deviation
	{"2001:2::/48", "False", true},
	{"2001:3::/32", "True", false},
	{"2001:4:112::/48", "True", false},
	{"2001:10::/28", "N/A", true},
	{"2001:20::/28", "True", false},
	{"2001:30::/28", "True", false},
	{"2001:db8::/32", "False", true},
	{"2002::/16", "N/A", true}, // embeds 0.0.0.0 and 255.255.255.255 at its edges
	{"2620:4f:8000::/48", "True", false},
	{"3fff::/20", "False", true},
	{"5f00::/16", "False", true},
	{"fc00::/7", "False", true},
	{"fe80::/10", "False", true},
	// IPv6, other sources.
	{"::/3", "", true},
	{"4000::/2", "", true},
	{"8000::/1", "", true},
	{"::/96", "", true},
	{"fec0::/10", "", true},
	{"ff00::/8", "", true},
	{"fd00:ec2::254/128", "", true},
}

func TestEveryRegistryRow(t *testing.T) {
	if len(registry) != len(table) {
		t.Errorf("the test lists %d rows, the table has %d", len(registry), len(table))
	}
	for _, want := range registry {
		t.Run(want.prefix, func(t *testing.T) {
			pfx := netip.MustParsePrefix(want.prefix)
			i := slices.IndexFunc(table, func(r row) bool { return r.Prefix == pfx })
			if i < 0 {
				t.Fatalf("%s is not in the table", pfx)
			}
			r := table[i]
			if r.GloballyReachable != want.gr {
				t.Errorf("Globally Reachable %q, want %q", r.GloballyReachable, want.gr)
			}
			if r.Name == "" || (r.GloballyReachable != "" && r.Source == "") {
				t.Errorf("row without a name or an RFC: %+v", r)
			}
			for _, a := range []netip.Addr{pfx.Addr(), lastAddr(pfx)} {
				if got := Denied(a); got != want.denied {
					t.Errorf("Denied(%s) = %v, want %v", a, got, want.denied)
				}
			}
		})
	}
}

// TestVerdictsFollowTheRegistry: not globally reachable (False, N/A) is
// denied or judged by an embedded IPv4 address; globally reachable is
// passed, or denied with the reason in the row's name.
func TestVerdictsFollowTheRegistry(t *testing.T) {
	for _, r := range table {
		switch {
		case r.verdict == unwrap:
			if r.Prefix.Bits()%8 != 0 || r.Prefix.Bits() > 96 {
				t.Errorf("%s: an embedding row needs a byte-aligned prefix of at most /96", r.Prefix)
			}
		case r.GloballyReachable == "True" && r.verdict == deny:
			if !strings.Contains(r.Name, "(denied: ") {
				t.Errorf("%s is globally reachable but denied without a reason in its name", r.Prefix)
			}
		case r.GloballyReachable == "True":
			if r.verdict != pass {
				t.Errorf("%s is globally reachable but not passed", r.Prefix)
			}
		default:
			if r.verdict != deny {
				t.Errorf("%s (Globally Reachable %q) is not denied", r.Prefix, r.GloballyReachable)
			}
		}
	}
}

// TestEmbeddingRowsHoldNoRows: compile relies on it.
func TestEmbeddingRowsHoldNoRows(t *testing.T) {
	for _, r := range table {
		if r.verdict != unwrap {
			continue
		}
		for _, s := range table {
			if s.Prefix.Bits() > r.Prefix.Bits() && r.Prefix.Contains(s.Prefix.Addr()) {
				t.Errorf("embedding row %s holds %s", r.Prefix, s.Prefix)
			}
		}
	}
}

// TestEmbeddings builds every IPv6 form that embeds an IPv4 address, for
// denied and public IPv4 addresses, and checks the verdict of each.
func TestEmbeddings(t *testing.T) {
	for _, tc := range []struct {
		v4     string
		denied bool
	}{
		{"1.1.1.1", false},
		{"8.8.8.8", false},
		{"192.31.196.1", false}, // AS112: globally reachable
		{"127.0.0.1", true},
		{"0.0.0.0", true},
		{"10.1.2.3", true},
		{"169.254.169.254", true},
		{"192.0.0.192", true},
		{"100.64.0.1", true},
		{"192.0.2.1", true},
		{"198.18.0.1", true},
		{"198.51.100.9", true},
		{"203.0.113.9", true},
		{"224.0.0.1", true},
		{"255.255.255.255", true},
	} {
		v4 := netip.MustParseAddr(tc.v4)
		if Denied(v4) != tc.denied {
			t.Errorf("Denied(%s) = %v, want %v", v4, !tc.denied, tc.denied)
		}
		b4 := v4.As4()
		forms := []struct {
			name   string
			addr   netip.Addr
			denied bool
		}{
			// Judged by the embedded address.
			{"NAT64 64:ff9b::/96", embed("64:ff9b::", 12, b4), tc.denied},
			{"6to4 2002::/16", embed("2002::", 2, b4), tc.denied},
			{"6to4 2002::/16, host part set", embed("2002::1:0:0:0:1", 2, b4), tc.denied},
			// Denied whatever they embed.
			{"IPv4-mapped ::ffff:0:0/96", netip.AddrFrom16(v4.As16()), true},
			{"IPv4-compatible ::/96", embed("::", 12, b4), true},
			{"local-use NAT64 64:ff9b:1::/48, /96 form", embed("64:ff9b:1::", 12, b4), true},
			{"local-use NAT64 64:ff9b:1::/48, /48 form", embed("64:ff9b:1::", 6, b4), true},
			{"Teredo server", embed("2001::", 4, b4), true},
			{"Teredo client (inverted)", embed("2001:0:4136:e378:8000:63bf::", 12, [4]byte{^b4[0], ^b4[1], ^b4[2], ^b4[3]}), true},
		}
		for _, f := range forms {
			if got := Denied(f.addr); got != f.denied {
				t.Errorf("%s of %s: Denied(%s) = %v, want %v", f.name, v4, f.addr, got, f.denied)
			}
		}
	}
}

func embed(prefix string, at int, v4 [4]byte) netip.Addr {
	b := netip.MustParseAddr(prefix).As16()
	copy(b[at:], v4[:])
	return netip.AddrFrom16(b)
}

// TestPrefixesMatchDenied: the prefix sets that TUN mode loads hold exactly
// the addresses that Denied denies, at the edges of every row and every
// prefix, just outside them, and at random addresses.
func TestPrefixesMatchDenied(t *testing.T) {
	ps := Prefixes()
	for i := 1; i < len(ps); i++ {
		a, b := ps[i-1], ps[i]
		if a.Addr().Is4() == b.Addr().Is4() && (a.Overlaps(b) || lastAddr(a).Compare(b.Addr()) >= 0) {
			t.Errorf("prefixes %s and %s overlap or are out of order", a, b)
		}
	}
	inSet := func(a netip.Addr) bool {
		for _, p := range ps {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	var probes []netip.Addr
	edges := func(p netip.Prefix) {
		first, last := p.Masked().Addr(), lastAddr(p)
		probes = append(probes, first, last, first.Prev(), last.Next())
	}
	for _, r := range table {
		edges(r.Prefix)
	}
	for _, p := range ps {
		edges(p)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		var b4 [4]byte
		var b16 [16]byte
		for i := range b16 {
			b16[i] = byte(rng.Uint32())
		}
		copy(b4[:], b16[:4])
		probes = append(probes, netip.AddrFrom4(b4), netip.AddrFrom16(b16))
		// Global unicast, NAT64 and 6to4, where most of the rows are.
		b16[0] = 0x20 | b16[0]&0x1f
		probes = append(probes, netip.AddrFrom16(b16), embed("64:ff9b::", 12, b4), embed("2002::", 2, b4))
	}
	for _, a := range probes {
		if a.IsValid() && inSet(a) != Denied(a) {
			t.Errorf("%s: in the prefix set %v, Denied %v", a, inSet(a), Denied(a))
		}
	}
}

func TestDeniedZoneAndZero(t *testing.T) {
	if !Denied(netip.Addr{}) {
		t.Error("the zero Addr is not denied")
	}
	if !Denied(netip.MustParseAddr("fe80::1%eth0")) {
		t.Error("a link-local address with a zone is not denied")
	}
	if Denied(netip.MustParseAddr("2606:4700:4700::1111")) || Denied(netip.MustParseAddr("1.1.1.1")) {
		t.Error("a public address is denied")
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
