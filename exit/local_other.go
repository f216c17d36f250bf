//go:build !linux

package exit

import (
	"net"
	"net/netip"
)

// hostLocal reports whether dst is one of this host's addresses, read
// afresh at each call so that it follows addresses added after the exit
// started. When they cannot be read, the answer is true, so the
// destination is refused rather than let through unchecked. (On Linux the
// kernel's route lookup answers instead; see local_linux.go.)
func hostLocal(dst netip.Addr) bool {
	dst = dst.Unmap().WithZone("")
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return true
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok && ip.Unmap() == dst {
				return true
			}
		}
	}
	return false
}
