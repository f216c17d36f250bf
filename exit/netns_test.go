package exit_test

import (
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/exit"
	"github.com/meridian-vpn/meridian/internal/netns"
)

// inNetnsEnv tells a test binary re-executed by inNetns that it runs inside
// the namespace made for it.
const inNetnsEnv = "EXIT_TEST_IN_NETNS"

// inNetns runs the calling test again in a child of this test binary inside
// a network namespace of its own (only loopback, no link out), so that it
// may add addresses to the host it runs on. It returns true in the child,
// which then runs the test's body; in the parent it waits for the child,
// fails if the child failed or did not run the test, and returns false.
func inNetns(t *testing.T) bool {
	t.Helper()
	if os.Getenv(inNetnsEnv) != "" {
		return true
	}
	netns.Require(t, "ip")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ns := netns.New(t, "exit")
	out, err := ns.Output("env", inNetnsEnv+"=1", self, "-test.run", "^"+t.Name()+"$", "-test.count=1", "-test.v")
	if err != nil {
		t.Fatalf("the test failed inside the namespace: %v", err)
	}
	t.Logf("in netns %s:\n%s", ns.Name, out)
	if !strings.Contains(out, "--- PASS: "+t.Name()) {
		t.Fatal("the test did not run inside the namespace")
	}
	return false
}

// TestAddressAddedAfterStartIsRefused: an address that the host gains
// after the exit started (DHCP, an IPv6 privacy address, a floating IP) is
// the host's own like any other, and a service bound to all interfaces
// must not become reachable through it from the tunnel. The test adds an
// IPv4 and an IPv6 address to the namespace's loopback while the exit runs,
// serves TCP and UDP on them, shows that the host itself reaches those
// services, and that a tunnel client is refused.
func TestAddressAddedAfterStartIsRefused(t *testing.T) {
	if !inNetns(t) {
		return
	}
	tn := newTunnel(t, exit.Config{Allow: allowLoopback4})

	// The tunnel works: an allowed destination is reached.
	lo := newEchoServer(t, "tcp4", "127.0.0.1:0")
	c, err := tn.dial(t, lo.addr())
	if err != nil {
		t.Fatal(err)
	}
	echoOnce(t, c, "through the exit")
	c.Close()

	for _, a := range []struct{ addr, family string }{
		{"203.0.113.77", "4"}, // documentation ranges: nothing outside the namespace
		{"2001:db8:77::1", "6"},
	} {
		addr := netip.MustParseAddr(a.addr)
		args := []string{"addr", "add", netip.PrefixFrom(addr, addr.BitLen()).String(), "dev", "lo"}
		if addr.Is6() {
			args = append(args, "nodad")
		}
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
		// The kernel installs an IPv6 address's local route from a work
		// queue, a moment after `ip addr add` returns.
		waitFor(t, "the kernel to route "+a.addr+" locally", func() bool { return exit.HostLocal(addr) })
		srv := newEchoServer(t, "tcp"+a.family, netip.AddrPortFrom(addr, 0).String())
		udp := udpEchoServer(t, "udp"+a.family, netip.AddrPortFrom(addr, 0).String())

		// The services are there: the host reaches them.
		hc, err := net.DialTimeout("tcp", srv.addr().String(), 5*time.Second)
		if err != nil {
			t.Fatalf("the host cannot reach its own new address: %v", err)
		}
		hc.Close()
		waitFor(t, "the host's own connection", func() bool { return srv.accepted.Load() == 1 })

		before := tn.exit.Stats()
		if c, err := tn.dial(t, srv.addr()); err == nil {
			c.Close()
			t.Errorf("a tunnel client reached TCP on %s, an address the host gained after the exit started", addr)
		} else if !strings.Contains(err.Error(), "refused") && !strings.Contains(err.Error(), "reset") {
			t.Errorf("dial to %s: %v, want connection refused or reset", addr, err)
		}
		if s := tn.exit.Stats(); s.Denied != before.Denied+1 || s.TCPTotal != before.TCPTotal {
			t.Errorf("%s: stats %+v after %+v, want one more Denied and no flow", addr, s, before)
		}

		uc, err := tn.dialUDP(udp)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(uc, "ping"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the datagram to be denied", func() bool { return tn.exit.Stats().Denied == before.Denied+2 })
		uc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if n, err := uc.Read(make([]byte, 64)); err == nil {
			t.Errorf("UDP on %s answered %d bytes through the tunnel", addr, n)
		}
		uc.Close()
		if n := srv.accepted.Load(); n != 1 {
			t.Errorf("the service on %s accepted %d connections, want only the host's own", addr, n)
		}
	}
}

// TestHostLocalFollowsAddresses asks the kernel check itself, apart from
// the fixed deny list: it answers for addresses as the host has them at the
// moment of asking (added, then removed), for a subnet's broadcast address,
// and says "not local" for a destination without a route.
func TestHostLocalFollowsAddresses(t *testing.T) {
	if !inNetns(t) {
		return
	}
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	// An interface like an uplink (one end of a veth pair whose other end
	// is in the same namespace): on loopback a whole prefix would be local.
	ip("link", "add", "up0", "type", "veth", "peer", "name", "up1")
	ip("link", "set", "up0", "up")
	ip("link", "set", "up1", "up")
	for _, s := range []string{"127.0.0.1", "::1"} {
		if !exit.HostLocal(netip.MustParseAddr(s)) {
			t.Errorf("HostLocal(%s) = false, want true", s)
		}
	}
	for _, tc := range []struct{ addr, prefix string }{
		{"198.51.100.7", "198.51.100.7/24"},
		{"2001:db8:78::1", "2001:db8:78::1/64"},
	} {
		a := netip.MustParseAddr(tc.addr)
		if exit.HostLocal(a) {
			t.Errorf("HostLocal(%s) = true before the address was added", a)
		}
		add := []string{"addr", "add", tc.prefix, "dev", "up0"}
		if a.Is6() {
			add = append(add, "nodad")
		}
		ip(add...)
		// The kernel installs an IPv6 address's local route from a work
		// queue, a moment after `ip addr add` returns.
		waitFor(t, "HostLocal to see the new address "+a.String(), func() bool { return exit.HostLocal(a) })
		if other := a.Next(); exit.HostLocal(other) {
			t.Errorf("HostLocal(%s) = true: a neighbour on the new subnet is not the host", other)
		}
		if a.Is4() && !exit.HostLocal(netip.MustParseAddr("198.51.100.255")) {
			t.Error("HostLocal(198.51.100.255) = false: the subnet's broadcast address reaches the host")
		}
		ip("addr", "del", tc.prefix, "dev", "up0")
		waitFor(t, "HostLocal to forget the removed address "+a.String(), func() bool { return !exit.HostLocal(a) })
	}
}
