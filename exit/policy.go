package exit

import (
	"net/netip"

	"github.com/meridian-vpn/meridian/egress"
)

// Policy decides which destinations a peer may reach through the exit.
//
// A rootless exit runs on the gateway host itself, so without a policy a peer
// could reach the host's localhost services, the private network around it
// and the cloud metadata endpoint. Policy denies what is not globally
// reachable (package egress: the IANA special-purpose registries, with
// every IPv6 form of a denied IPv4 address) and the gateway's own
// addresses, unless a destination is explicitly allowed. A Policy is
// immutable and safe for concurrent use.
type Policy struct {
	allow []netip.Prefix
	own   map[netip.Addr]bool
	local func(netip.Addr) bool // the host's own addresses, asked at each decision; nil: none
}

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
	// The netip predicates cover part of the table's ground; both are kept
	// so that neither is a single point of failure.
	return p.own[a] || netipDenied(a) || egress.Denied(a)
}

// netipDenied is the standard library's view of what an exit must not
// reach: loopback, unspecified, private, multicast and link-local
// addresses.
func netipDenied(a netip.Addr) bool {
	return a.IsLoopback() || a.IsUnspecified() || a.IsPrivate() || a.IsMulticast() ||
		a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast()
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
