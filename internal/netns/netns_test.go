package netns_test

import (
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/internal/netns"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestLinkRunSysctl(t *testing.T) {
	netns.Require(t, "ping")
	a := netns.New(t, "nsa")
	b := netns.New(t, "nsb")
	aIf, bIf := netns.Link(t, a, b,
		[]netip.Prefix{pfx("192.0.2.1/24"), pfx("2001:db8:1::1/64")},
		[]netip.Prefix{pfx("192.0.2.2/24"), pfx("2001:db8:1::2/64")})

	if out := a.Run(t, "ip", "-o", "addr", "show", "dev", aIf); !strings.Contains(out, "192.0.2.1/24") || !strings.Contains(out, "2001:db8:1::1/64") {
		t.Errorf("addresses on %s in %s:\n%s", aIf, a.Name, out)
	}
	a.Run(t, "ping", "-c", "1", "-W", "2", "192.0.2.2")
	b.Run(t, "ping", "-c", "1", "-W", "2", "2001:db8:1::1")

	// A namespace has no route beyond what the test links to it.
	if _, err := a.Output("ping", "-c", "1", "-W", "1", "198.51.100.1"); err == nil {
		t.Errorf("ping to an unlinked address succeeded from %s", a.Name)
	}
	if out := b.Run(t, "ip", "route", "show", "default"); strings.TrimSpace(out) != "" {
		t.Errorf("%s (%s) has a default route: %s", b.Name, bIf, out)
	}

	b.Sysctl(t, "net.ipv4.ip_forward", "1")
	if got := strings.TrimSpace(b.Run(t, "cat", "/proc/sys/net/ipv4/ip_forward")); got != "1" {
		t.Errorf("ip_forward in %s = %q, want 1", b.Name, got)
	}
	if got := strings.TrimSpace(a.Run(t, "cat", "/proc/sys/net/ipv4/ip_forward")); got != "0" {
		t.Errorf("ip_forward in %s = %q, want 0 (sysctls are per namespace)", a.Name, got)
	}
}

func TestStartAndCleanup(t *testing.T) {
	netns.Require(t)
	var name string
	var pid int
	t.Run("inner", func(t *testing.T) {
		n := netns.New(t, "nsc")
		name = n.Name
		p := n.Start(t, "echo", "sh", "-c", "echo hello; exec sleep 30")
		if err := p.WaitFor("hello", 5*time.Second); err != nil {
			t.Fatal(err)
		}
		pid = p.Process.Pid
		// A process Start did not track, left behind on purpose: the
		// namespace's cleanup must kill it too.
		n.Run(t, "sh", "-c", "sleep 30 >/dev/null 2>&1 &")

		q := n.Start(t, "stopme", "sleep", "30")
		if err := q.Stop(2 * time.Second); err == nil || !strings.Contains(err.Error(), "signal: terminated") {
			t.Errorf("Stop() = %v, want a SIGTERM exit", err)
		}
	})
	if name == "" {
		t.Fatal("inner test did not create a namespace")
	}
	if _, err := os.Stat("/var/run/netns/" + name); !os.IsNotExist(err) {
		t.Errorf("namespace %s still exists after cleanup (stat: %v)", name, err)
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("process %d still running after cleanup", pid)
	}
}

func TestWaitForExit(t *testing.T) {
	netns.Require(t)
	n := netns.New(t, "nsd")
	p := n.Start(t, "false", "sh", "-c", "echo bye; exit 3")
	err := p.WaitFor("never printed", 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), "exited") {
		t.Fatalf("WaitFor = %v, want an 'exited' error", err)
	}
	if err := p.Err(); err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("Err() = %v, want exit status 3", err)
	}
}

func TestLinkHost(t *testing.T) {
	netns.Require(t, "ping")
	var hostIf string
	t.Run("inner", func(t *testing.T) {
		n := netns.New(t, "nsh")
		var nIf string
		hostIf, nIf = netns.Link(t, netns.Host(), n, []netip.Prefix{pfx("10.200.253.1/30")}, []netip.Prefix{pfx("10.200.253.2/30")})
		if out := netns.Host().Run(t, "ip", "-o", "addr", "show", "dev", hostIf); !strings.Contains(out, "10.200.253.1/30") || strings.Contains(out, "inet6") {
			t.Errorf("host end %s: want 10.200.253.1/30 and no IPv6:\n%s", hostIf, out)
		}
		n.Run(t, "ping", "-c", "1", "-W", "2", "10.200.253.1")
		if out := n.Run(t, "ip", "route", "show", "default"); strings.TrimSpace(out) != "" {
			t.Errorf("%s (%s) has a default route: %s", n.Name, nIf, out)
		}
		p := netns.Host().Start(t, "host echo", "sh", "-c", "echo on-host")
		if err := p.WaitFor("on-host", 5*time.Second); err != nil {
			t.Error(err)
		}
	})
	if _, err := netns.Host().Output("ip", "link", "show", hostIf); err == nil {
		t.Errorf("host end %s still exists after cleanup", hostIf)
	}
}
