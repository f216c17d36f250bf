package tunnet_test

import (
	"net/netip"
	"testing"

	"github.com/meridian-vpn/meridian/exit"
	"github.com/meridian-vpn/meridian/tunnet"
)

// TestEgressPolicyMatchesExit keeps TUN mode's deny list in step with the
// userspace exit's policy: at both edges of every denied prefix, just
// outside them, at both ends of every /16, and at a few well-known
// addresses, tunnet's sets and
// exit.Policy give the same answer. (IPv4-mapped IPv6 destinations are the
// one deliberate difference: the exit unmaps them, TUN mode drops them, as
// they are never valid on the wire.)
func TestEgressPolicyMatchesExit(t *testing.T) {
	deny := tunnet.DeniedPrefixes()
	tunDenied := func(a netip.Addr) bool {
		for _, p := range deny {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	policy := exit.NewPolicy(nil, nil)
	mapped := netip.MustParsePrefix("::ffff:0:0/96")

	probes := []netip.Addr{}
	for _, s := range []string{
		"8.8.8.8", "1.1.1.1", "198.51.100.7", "203.0.113.9", "192.0.2.1", "169.254.169.254", "192.0.0.192",
		"100.63.255.255", "100.128.0.0", "172.15.255.255", "172.32.0.0", "11.0.0.0", "9.255.255.255",
		"2001:db8::1", "2606:4700::1111", "fd00:ec2::254", "fe80::1", "ff02::1", "::", "::1", "::2",
		"64:ff9b::808:808", "64:ff9b::a00:1", "64:ff9b::a9fe:a9fe", "64:ff9b::c0a8:101", "64:ff9b::7f00:1",
	} {
		probes = append(probes, netip.MustParseAddr(s))
	}
	// Both ends of every IPv4 /16 and every IPv6 /16, so that a prefix of
	// the exit's list that tunnet lacks shows up too.
	for i := range 1 << 16 {
		hi, lo := byte(i>>8), byte(i)
		probes = append(probes,
			netip.AddrFrom4([4]byte{hi, lo, 0, 0}), netip.AddrFrom4([4]byte{hi, lo, 255, 255}),
			netip.AddrFrom16([16]byte{hi, lo, 15: 1}),
			netip.AddrFrom16([16]byte{hi, lo, 2: 0xff, 3: 0xff, 4: 0xff, 5: 0xff, 6: 0xff, 7: 0xff, 8: 0xff, 9: 0xff, 10: 0xff, 11: 0xff, 12: 0xff, 13: 0xff, 14: 0xff, 15: 0xff}))
	}
	for _, p := range deny {
		first := p.Addr()
		last := lastAddr(p)
		probes = append(probes, first, last, first.Prev(), last.Next())
	}
	for _, a := range probes {
		if !a.IsValid() || mapped.Contains(a) {
			continue
		}
		if got, want := tunDenied(a), !policy.Allowed(a); got != want {
			t.Errorf("%v: TUN mode denied=%v, userspace exit denied=%v", a, got, want)
		}
	}
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := range b {
		bit := i * 8
		if bit+8 <= p.Bits() {
			continue
		}
		keep := max(p.Bits()-bit, 0)
		b[i] |= byte(0xff >> keep)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}
