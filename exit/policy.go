package exit

import "net/netip"

// Policy decides which destinations a peer may reach through the exit.
//
// A rootless exit runs on the gateway host itself, so without a policy a peer
// could reach the host's localhost services, the private network around it
// and the cloud metadata endpoint. Policy denies those unless a destination is
// explicitly allowed. A Policy is immutable and safe for concurrent use.
type Policy struct {
	allow []netip.Prefix
	own   map[netip.Addr]bool
	local func(netip.Addr) bool // the host's own addresses, asked at each decision; nil: none
}

// denyPrefixes are never reachable unless an Allow prefix covers the address.
var denyPrefixes = []netip.Prefix{
	// IPv4.
	netip.MustParsePrefix("0.0.0.0/8"),          // "this network"; connecting to 0.0.0.0 reaches the local host
	netip.MustParsePrefix("10.0.0.0/8"),         // private
	netip.MustParsePrefix("100.64.0.0/10"),      // carrier-grade NAT
	netip.MustParsePrefix("127.0.0.0/8"),        // loopback
	netip.MustParsePrefix("169.254.0.0/16"),     // link-local
	netip.MustParsePrefix("169.254.169.254/32"), // cloud metadata (AWS, GCP, Azure, ...); inside link-local, named on purpose
	netip.MustParsePrefix("172.16.0.0/12"),      // private
	netip.MustParsePrefix("192.0.0.0/24"),       // IETF protocol assignments; holds Oracle Cloud's metadata 192.0.0.192
	netip.MustParsePrefix("192.168.0.0/16"),     // private
	netip.MustParsePrefix("224.0.0.0/4"),        // multicast
	netip.MustParsePrefix("240.0.0.0/4"),        // reserved, and the limited broadcast 255.255.255.255

	// IPv6. IPv4-mapped addresses are unmapped before they get here.
	netip.MustParsePrefix("::/128"),            // unspecified; connecting to it reaches the local host
	netip.MustParsePrefix("::1/128"),           // loopback
	netip.MustParsePrefix("fc00::/7"),          // unique local, holds AWS's IPv6 metadata fd00:ec2::254
	netip.MustParsePrefix("fd00:ec2::254/128"), // cloud metadata (AWS, IPv6); inside fc00::/7, named on purpose
	netip.MustParsePrefix("fe80::/10"),         // link-local
	netip.MustParsePrefix("fec0::/10"),         // deprecated site-local
	netip.MustParsePrefix("ff00::/8"),          // multicast
}

// nat64 is the well-known NAT64 prefix (RFC 6052). On a host behind NAT64 an
// address in it reaches the IPv4 address in its last four bytes, so that
// embedded address is judged too.
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// NewPolicy returns a policy that denies the fixed deny list and the given own
// addresses (such as the gateway's tunnel addresses), except for
// destinations inside one of the allow prefixes.
func NewPolicy(allow []netip.Prefix, own []netip.Addr) *Policy {
	p := &Policy{own: make(map[netip.Addr]bool, len(own))}
	for _, pfx := range allow {
		if pfx = normalizePrefix(pfx); pfx.IsValid() {
			p.allow = append(p.allow, pfx)
		}
	}
	for _, a := range own {
		if a.IsValid() {
			p.own[a.Unmap().WithZone("")] = true
		}
	}
	return p
}

// NewHostPolicy is NewPolicy for an exit that dials from this host: it also
// denies every destination that the host would deliver to itself, which it
// asks at each decision (hostLocal), not once at start, so that an address
// the host gains later (DHCP, IPv6 privacy addresses, floating IPs) is
// denied as soon as the host has it.
func NewHostPolicy(allow []netip.Prefix, own []netip.Addr) *Policy {
	p := NewPolicy(allow, own)
	p.local = hostLocal
	return p
}

// Allowed reports whether traffic to dst may leave through the exit.
func (p *Policy) Allowed(dst netip.Addr) bool {
	dst = dst.Unmap().WithZone("")
	if !dst.IsValid() {
		return false
	}
	for _, pfx := range p.allow {
		if pfx.Contains(dst) {
			return true
		}
	}
	// The fixed list first: it needs no system call.
	return !p.denied(dst) && (p.local == nil || !p.local(dst))
}

func (p *Policy) denied(a netip.Addr) bool {
	if p.own[a] {
		return true
	}
	// The netip predicates cover the same ground as most of denyPrefixes;
	// both are kept so that neither is a single point of failure.
	if a.IsLoopback() || a.IsUnspecified() || a.IsPrivate() || a.IsMulticast() ||
		a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast() {
		return true
	}
	for _, pfx := range denyPrefixes {
		if pfx.Contains(a) {
			return true
		}
	}
	if nat64.Contains(a) {
		b := a.As16()
		return p.denied(netip.AddrFrom4([4]byte(b[12:])))
	}
	return false
}

// normalizePrefix turns an IPv4-mapped IPv6 prefix into its IPv4 form, since
// Allowed compares against unmapped addresses.
func normalizePrefix(pfx netip.Prefix) netip.Prefix {
	if !pfx.IsValid() {
		return netip.Prefix{}
	}
	a := pfx.Addr().WithZone("")
	if a.Is4In6() {
		bits := pfx.Bits() - 96
		if bits >= 0 {
			return netip.PrefixFrom(a.Unmap(), bits).Masked()
		}
	}
	return netip.PrefixFrom(a, pfx.Bits()).Masked()
}
