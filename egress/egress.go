// Package egress is the table of destinations that tunnel clients may not
// reach through a gateway by default, shared by both data planes: the
// userspace exit asks Denied for each flow, TUN mode loads Prefixes into
// nftables sets.
//
// The table is the IANA IPv4 Special-Purpose Address Registry
// (https://www.iana.org/assignments/iana-ipv4-special-registry) and the
// IANA IPv6 Special-Purpose Address Registry
// (https://www.iana.org/assignments/iana-ipv6-special-registry), every
// row with its "Globally Reachable" value (RFC 8190), as of 2025, plus
// what those registries leave to others: multicast, the IPv6 address space
// outside Global Unicast, deprecated site-local and IPv4-compatible
// addresses, and the cloud metadata addresses, named on purpose.
//
// The rule: a destination is denied unless it is globally reachable. Like
// the registries, the most specific row that contains an address decides
// (192.0.0.0/24 is not globally reachable, 192.0.0.9/32 is). Meridian
// departs from the registry in one way, and says so in the row: the
// anycast service addresses (PCP, TURN, DNS-SD SRP) are denied although
// globally reachable, as they reach the nearest such server, which is the
// gateway's own provider's (PCP could open ports on its NAT).
//
// IPv4 embedded in IPv6:
//   - IPv4-mapped (::ffff:0:0/96) is never valid on the wire and is denied
//     here; the userspace exit unmaps such destinations first, since its
//     host sockets dial them as IPv4.
//   - IPv4-compatible (::/96, deprecated by RFC 4291 §2.5.5.1) is denied,
//     as all of ::/3 is: a host with a sit tunnel would send it as IPv4.
//   - NAT64 (64:ff9b::/96, RFC 6052) is globally reachable and is judged
//     by the IPv4 address in its last 32 bits: where a NAT64 exists, that
//     is the address it reaches. Local-use NAT64 (64:ff9b:1::/48, RFC 8215)
//     is not globally reachable and is denied whole: its operator picks the
//     embedding, so where the IPv4 address sits is not known.
//   - 6to4 (2002::/16, RFC 3056; "N/A" in the registry) is judged by the
//     IPv4 address in bits 16-47, the 6to4 router it reaches: a host with a
//     6to4 tunnel would send 2002:7f00:1:: to 127.0.0.1.
//   - Teredo (2001::/32, RFC 4380; "N/A") is denied whole. Its client
//     address is stored inverted in the last 32 bits behind a server
//     address and a port, a form no prefix set can judge, and the Teredo
//     service is all but retired. An operator who needs it allows it.
//
// Network-specific NAT64 prefixes (RFC 6052 §2.2) are the operator's own
// and are not known here; an operator who runs one denies it or relies on
// its translator's own policy.
package egress

import (
	"net/netip"
	"slices"
	"sync"
)

// verdict is what a row decides for the addresses it holds.
type verdict uint8

const (
	deny   verdict = iota + 1 // not to be reached
	pass                      // globally reachable
	unwrap                    // judged by the IPv4 address embedded right after the prefix
)

// row is one row of the table.
type row struct {
	Prefix netip.Prefix
	Name   string
	// Source names the RFC that defines the range, and the registry when it
	// is not one of the two special-purpose registries.
	Source string
	// GloballyReachable is the registry's value: "True", "False", "N/A", or
	// "" for a row that the special-purpose registries do not hold.
	GloballyReachable string
	verdict           verdict
}

func p(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// table is in registry order, IPv4 then IPv6, each followed by the rows
// from other sources.
var table = []row{
	// IANA IPv4 Special-Purpose Address Registry.
	{p("0.0.0.0/8"), `"This network"`, "RFC 791 §3.2", "False", deny},
	{p("0.0.0.0/32"), `"This host on this network"`, "RFC 1122 §3.2.1.3", "False", deny},
	{p("10.0.0.0/8"), "Private-Use", "RFC 1918", "False", deny},
	{p("100.64.0.0/10"), "Shared Address Space", "RFC 6598", "False", deny},
	{p("127.0.0.0/8"), "Loopback", "RFC 1122 §3.2.1.3", "False", deny},
	{p("169.254.0.0/16"), "Link Local", "RFC 3927", "False", deny},
	{p("172.16.0.0/12"), "Private-Use", "RFC 1918", "False", deny},
	{p("192.0.0.0/24"), "IETF Protocol Assignments", "RFC 6890 §2.1", "False", deny},
	{p("192.0.0.0/29"), "IPv4 Service Continuity Prefix", "RFC 7335", "False", deny},
	{p("192.0.0.8/32"), "IPv4 dummy address", "RFC 7600", "False", deny},
	{p("192.0.0.9/32"), "Port Control Protocol Anycast (denied: reaches the provider's PCP server)", "RFC 7723", "True", deny},
	{p("192.0.0.10/32"), "Traversal Using Relays around NAT Anycast (denied: reaches the provider's TURN server)", "RFC 8155", "True", deny},
	{p("192.0.0.170/32"), "NAT64/DNS64 Discovery", "RFC 8880, RFC 7050 §2.2", "False", deny},
	{p("192.0.0.171/32"), "NAT64/DNS64 Discovery", "RFC 8880, RFC 7050 §2.2", "False", deny},
	{p("192.0.2.0/24"), "Documentation (TEST-NET-1)", "RFC 5737", "False", deny},
	{p("192.31.196.0/24"), "AS112-v4", "RFC 7535", "True", pass},
	{p("192.52.193.0/24"), "AMT", "RFC 7450", "True", pass},
	{p("192.88.99.0/24"), "Deprecated (6to4 Relay Anycast)", "RFC 7526", "N/A", deny},
	{p("192.88.99.2/32"), "6a44-relay anycast address", "RFC 6751", "False", deny},
	{p("192.168.0.0/16"), "Private-Use", "RFC 1918", "False", deny},
	{p("192.175.48.0/24"), "Direct Delegation AS112 Service", "RFC 7534", "True", pass},
	{p("198.18.0.0/15"), "Benchmarking", "RFC 2544", "False", deny},
	{p("198.51.100.0/24"), "Documentation (TEST-NET-2)", "RFC 5737", "False", deny},
	{p("203.0.113.0/24"), "Documentation (TEST-NET-3)", "RFC 5737", "False", deny},
	{p("240.0.0.0/4"), "Reserved", "RFC 1112 §4", "False", deny},
	{p("255.255.255.255/32"), "Limited Broadcast", "RFC 8190, RFC 919 §7", "False", deny},
	// IPv4, other sources.
	{p("224.0.0.0/4"), "Multicast", "RFC 5771, IANA IPv4 Multicast Address Space Registry", "", deny},
	{p("169.254.169.254/32"), "Cloud metadata (AWS, GCP, Azure, ...); inside Link Local, named on purpose", "", "", deny},
	{p("192.0.0.192/32"), "Oracle Cloud metadata; inside IETF Protocol Assignments, named on purpose", "", "", deny},

	// IANA IPv6 Special-Purpose Address Registry.
	{p("::1/128"), "Loopback Address", "RFC 4291", "False", deny},
	{p("::/128"), "Unspecified Address", "RFC 4291", "False", deny},
	{p("::ffff:0:0/96"), "IPv4-mapped Address", "RFC 4291", "False", deny},
	{p("64:ff9b::/96"), "IPv4-IPv6 Translat. (NAT64, judged by its IPv4 address)", "RFC 6052", "True", unwrap},
	{p("64:ff9b:1::/48"), "IPv4-IPv6 Translat. (local-use NAT64)", "RFC 8215", "False", deny},
	{p("100::/64"), "Discard-Only Address Block", "RFC 6666", "False", deny},
	{p("100:0:0:1::/64"), "Dummy IPv6 Prefix", "RFC 9780", "False", deny},
	{p("2001::/23"), "IETF Protocol Assignments", "RFC 2928", "False", deny},
	{p("2001::/32"), "TEREDO", "RFC 4380, RFC 8190", "N/A", deny},
	{p("2001:1::1/128"), "Port Control Protocol Anycast (denied: reaches the provider's PCP server)", "RFC 7723", "True", deny},
	{p("2001:1::2/128"), "Traversal Using Relays around NAT Anycast (denied: reaches the provider's TURN server)", "RFC 8155", "True", deny},
	{p("2001:1::3/128"), "DNS-SD Service Registration Protocol Anycast (denied: reaches the provider's registrar)", "RFC 9665", "True", deny},
	{p("2001:2::/48"), "Benchmarking", "RFC 5180, RFC Errata 1752", "False", deny},
	{p("2001:3::/32"), "AMT", "RFC 7450", "True", pass},
	{p("2001:4:112::/48"), "AS112-v6", "RFC 7535", "True", pass},
	{p("2001:10::/28"), "Deprecated (previously ORCHID)", "RFC 4843", "N/A", deny},
	{p("2001:20::/28"), "ORCHIDv2", "RFC 7343", "True", pass},
	{p("2001:30::/28"), "Drone Remote ID Protocol Entity Tags (DETs) Prefix", "RFC 9374", "True", pass},
	{p("2001:db8::/32"), "Documentation", "RFC 3849", "False", deny},
	{p("2002::/16"), "6to4 (judged by its IPv4 address)", "RFC 3056", "N/A", unwrap},
	{p("2620:4f:8000::/48"), "Direct Delegation AS112 Service", "RFC 7534", "True", pass},
	{p("3fff::/20"), "Documentation", "RFC 9637", "False", deny},
	{p("5f00::/16"), "Segment Routing (SRv6) SIDs", "RFC 9602", "False", deny},
	{p("fc00::/7"), "Unique-Local", "RFC 4193, RFC 8190", "False", deny},
	{p("fe80::/10"), "Link-Local Unicast", "RFC 4291", "False", deny},
	// IPv6, other sources. Only 2000::/3 is Global Unicast (RFC 4291 §2.4,
	// IANA IPv6 Address Space registry); the rest is reserved by the IETF,
	// or one of the ranges above and below.
	{p("::/3"), "Not Global Unicast (IANA IPv6 Address Space)", "RFC 4291 §2.4", "", deny},
	{p("4000::/2"), "Not Global Unicast (IANA IPv6 Address Space)", "RFC 4291 §2.4", "", deny},
	{p("8000::/1"), "Not Global Unicast (IANA IPv6 Address Space)", "RFC 4291 §2.4", "", deny},
	{p("::/96"), "IPv4-compatible Address (deprecated)", "RFC 4291 §2.5.5.1", "", deny},
	{p("fec0::/10"), "Site-Local (deprecated)", "RFC 3879", "", deny},
	{p("ff00::/8"), "Multicast", "RFC 4291 §2.7", "", deny},
	{p("fd00:ec2::254/128"), "Cloud metadata (AWS); inside Unique-Local, named on purpose", "", "", deny},
}

// match returns the most specific row that holds a.
func match(a netip.Addr) (row, bool) {
	var best row
	found := false
	for _, r := range table {
		if r.Prefix.Contains(a) && (!found || r.Prefix.Bits() > best.Prefix.Bits()) {
			best, found = r, true
		}
	}
	return best, found
}

// embedded returns the IPv4 address right after an embedding row's prefix.
func embedded(r row, a netip.Addr) netip.Addr {
	b := a.As16()
	at := r.Prefix.Bits() / 8
	return netip.AddrFrom4([4]byte(b[at : at+4]))
}

// Denied reports whether a is denied by default: not globally reachable,
// or an IPv6 form of a denied IPv4 address. The zone is ignored; the zero
// Addr is denied.
func Denied(a netip.Addr) bool {
	a = a.WithZone("")
	if !a.IsValid() {
		return true
	}
	r, ok := match(a)
	if !ok {
		return false
	}
	switch r.verdict {
	case deny:
		return true
	case unwrap:
		return Denied(embedded(r, a))
	}
	return false
}

// Prefixes returns the denied destinations as sorted, disjoint prefixes,
// IPv4 first, with the IPv6 forms of denied IPv4 addresses in the
// embedding rows: exactly the addresses for which Denied is true.
var Prefixes = sync.OnceValue(func() []netip.Prefix {
	var v4 []netip.Prefix
	compile(netip.PrefixFrom(netip.IPv4Unspecified(), 0), nil, &v4)
	out := slices.Clone(v4)
	compile(netip.PrefixFrom(netip.IPv6Unspecified(), 0), v4, &out)
	return out
})

// compile appends the denied parts of q to out. Where no row inside q
// decides differently from the row that decides q, q is denied or passed
// whole (an embedding row gets the images of the denied IPv4 prefixes);
// otherwise its halves are compiled.
func compile(q netip.Prefix, v4 []netip.Prefix, out *[]netip.Prefix) {
	// The row that decides q: the most specific one that holds all of q.
	r := row{verdict: pass}
	for _, s := range table {
		if s.Prefix.Bits() <= q.Bits() && s.Prefix.Contains(q.Addr()) && (r.Prefix == netip.Prefix{} || s.Prefix.Bits() > r.Prefix.Bits()) {
			r = s
		}
	}
	split := false
	for _, s := range table {
		if s.Prefix.Bits() > q.Bits() && q.Contains(s.Prefix.Addr()) && s.verdict != r.verdict {
			split = true
			break
		}
	}
	if !split {
		switch r.verdict {
		case deny:
			*out = append(*out, q)
		case unwrap:
			// An embedding row holds no other row (TestEmbeddingrowsHoldNorows),
			// so q is the row itself.
			b := q.Addr().As16()
			for _, e := range v4 {
				a4 := e.Addr().As4()
				copy(b[q.Bits()/8:], a4[:])
				*out = append(*out, netip.PrefixFrom(netip.AddrFrom16(b), q.Bits()+e.Bits()))
			}
		}
		return
	}
	lo := netip.PrefixFrom(q.Addr(), q.Bits()+1)
	hiBytes := q.Addr().AsSlice()
	hiBytes[q.Bits()/8] |= 0x80 >> (q.Bits() % 8)
	hiAddr, _ := netip.AddrFromSlice(hiBytes)
	compile(lo, v4, out)
	compile(netip.PrefixFrom(hiAddr, q.Bits()+1), v4, out)
}
