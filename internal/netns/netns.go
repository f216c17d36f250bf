// Package netns makes throwaway Linux network namespaces for integration
// tests: hosts joined by veth pairs, commands and long-running processes run
// inside them, and everything removed when the test ends.
//
// It shells out to iproute2's ip (ip netns, ip link, ip addr), so the tests
// read like the commands an operator would type. It needs root; tests call
// Require (or Available) first and skip when the machine cannot do it.
//
// NETWORK SAFETY: namespaces made here start with nothing but a loopback
// interface. They reach only what a test links to them, so give them no link
// to the host's interfaces and no route out; use 10.200.0.0/16 and the
// documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24,
// 2001:db8::/32) inside.
//
// Run, Link, Sysctl, New and Start report failures with t.Fatalf, so call
// them from the test's own goroutine.
package netns

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var (
	availOnce sync.Once
	availErr  error
)

// Available reports whether this process can make network namespaces and
// veth pairs: nil if so, else the reason, phrased for t.Skip. It tries once
// (creating and deleting a probe namespace) and caches the answer.
func Available() error {
	availOnce.Do(func() { availErr = probe() })
	return availErr
}

func probe() error {
	if os.Geteuid() != 0 {
		return errors.New("needs root to create network namespaces (CI runs these tests as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("needs the ip tool from iproute2: run scripts/install-test-deps.sh (or apt-get install iproute2)")
	}
	name := "probe-" + suffix()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return fmt.Errorf("cannot create a network namespace (ip netns add): %v: %s", err, bytes.TrimSpace(out))
	}
	defer exec.Command("ip", "netns", "del", name).Run()
	if out, err := exec.Command("ip", "-n", name, "link", "add", "pa", "type", "veth", "peer", "name", "pb").CombinedOutput(); err != nil {
		return fmt.Errorf("cannot create a veth pair in a network namespace: %v: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// Require skips the test unless Available and every named tool is on PATH.
// Under CI (CI=true), where scripts/install-test-deps.sh has run as root, a
// missing piece fails the test instead, so CI cannot go green by skipping.
func Require(t testing.TB, tools ...string) {
	t.Helper()
	var reason string
	if err := Available(); err != nil {
		reason = err.Error()
	} else {
		var missing []string
		for _, tool := range tools {
			if _, err := exec.LookPath(tool); err != nil {
				missing = append(missing, tool)
			}
		}
		if len(missing) > 0 {
			reason = fmt.Sprintf("needs %s on PATH: run scripts/install-test-deps.sh", strings.Join(missing, ", "))
		}
	}
	if reason == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI: %s", reason)
	}
	t.Skip(reason)
}

// NS is a network namespace made by New, or the process's own namespace
// (Host).
type NS struct {
	Name string // empty for Host
}

// Host returns the namespace this process runs in (on a test machine, the
// host's root namespace) as an NS, so that a test can run a process there
// (Start, Run) and link it to a namespace of its own (Link), as when a
// control server on the host serves gateways in namespaces. Host is never
// deleted.
//
// NETWORK SAFETY: the host namespace has real interfaces and routes to the
// outside world. Run nothing there that sends packets anywhere but loopback
// and the links the test made, never set sysctls or routes there, and give a
// host end of a link only addresses that no route of the host already covers
// (Link checks).
func Host() *NS { return &NS{} }

// IsHost reports whether n is the process's own namespace (Host).
func (n *NS) IsHost() bool { return n.Name == "" }

func (n *NS) label() string {
	if n.IsHost() {
		return "host"
	}
	return n.Name
}

// New creates a namespace named prefix-<pid><random>, brings its loopback
// up, and registers a cleanup that stops the processes started in it and
// deletes it. Keep prefix short and free of '/'.
func New(t testing.TB, prefix string) *NS {
	t.Helper()
	if err := Available(); err != nil {
		t.Fatalf("netns.New: %v", err)
	}
	n := &NS{Name: prefix + "-" + suffix()}
	if out, err := exec.Command("ip", "netns", "add", n.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", n.Name, err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() { n.destroy(t) })
	// No duplicate address detection here: the test assigns every address.
	// With DAD on, a new link's link-local address stays tentative for 1-2 s,
	// and until then the kernel sends no neighbour solicitation for packets
	// it forwards, which stalls the first forwarded IPv6 packet by ~2 s.
	n.Run(t, "sh", "-c", `ip link set lo up &&
		echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad &&
		echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad`)
	return n
}

// destroy kills whatever still runs in the namespace (every such process was
// started by this test, directly or as a child of one it started) and
// deletes the namespace.
func (n *NS) destroy(t testing.TB) {
	for range 3 {
		out, _ := exec.Command("ip", "netns", "pids", n.Name).Output()
		pids := strings.Fields(string(out))
		if len(pids) == 0 {
			break
		}
		for _, p := range pids {
			if pid, err := strconv.Atoi(p); err == nil && pid > 1 && pid != os.Getpid() {
				t.Logf("netns %s: killing leftover process %d", n.Name, pid)
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
		t.Errorf("ip netns del %s: %v: %s", n.Name, err, bytes.TrimSpace(out))
	}
}

var linkSeq atomic.Uint32

// Link joins a and b with a veth pair, gives each end its addresses (IPv6
// ones with nodad, so they are usable at once), and sets both ends up. The
// ends are created directly inside their namespaces, so their names never
// meet the host's interfaces. It returns the interface names in a and in b.
//
// One of a and b may be Host. The host end then gets a name unique to this
// process, IPv6 is disabled on it unless it is given IPv6 addresses (so it
// sends no router solicitations or MLD reports), Link fails the test if a
// route of the host other than the default covers, or lies inside, one of
// its addresses' prefixes, and the pair is deleted when the test ends.
func Link(t testing.TB, a, b *NS, aAddrs, bAddrs []netip.Prefix) (aIf, bIf string) {
	t.Helper()
	if a.IsHost() && b.IsHost() {
		t.Fatal("netns.Link: both ends in the host namespace")
	}
	if b.IsHost() {
		bIf, aIf = Link(t, b, a, bAddrs, aAddrs)
		return aIf, bIf
	}
	seq := linkSeq.Add(1)
	aIf = fmt.Sprintf("veth%da", seq)
	bIf = fmt.Sprintf("veth%db", seq)
	if a.IsHost() {
		aIf = fmt.Sprintf("mh%s%d", suffixHex(), seq)
		checkHostPrefixes(t, aAddrs)
	}
	a.Run(t, "ip", "link", "add", aIf, "type", "veth", "peer", "name", bIf, "netns", b.Name)
	if a.IsHost() {
		t.Cleanup(func() { exec.Command("ip", "link", "del", aIf).Run() }) // gone already if b was deleted first
		has6 := false
		for _, p := range aAddrs {
			has6 = has6 || p.Addr().Is6()
		}
		if !has6 {
			a.Run(t, "sh", "-c", `printf '1\n' > "/proc/sys/net/ipv6/conf/$1/disable_ipv6"`, "sh", aIf)
		}
	}
	// Up first, addresses second: IPv6 addresses added (even with nodad)
	// while the link is down make the first neighbour discovery across it
	// take 1-2.5 s once it is up; added after, it is immediate.
	a.Run(t, "ip", "link", "set", aIf, "up")
	b.Run(t, "ip", "link", "set", bIf, "up")
	for _, side := range []struct {
		ns    *NS
		ifc   string
		addrs []netip.Prefix
	}{{a, aIf, aAddrs}, {b, bIf, bAddrs}} {
		for _, p := range side.addrs {
			args := []string{"ip", "addr", "add", p.String(), "dev", side.ifc}
			if p.Addr().Is6() {
				args = append(args, "nodad")
			}
			side.ns.Run(t, args...)
		}
	}
	return aIf, bIf
}

// checkHostPrefixes fails the test if a host route other than a default
// route covers or lies inside one of the prefixes: a host end of a link
// must not take over traffic meant for the host's real networks.
func checkHostPrefixes(t testing.TB, addrs []netip.Prefix) {
	t.Helper()
	for _, p := range addrs {
		fam := "-4"
		if p.Addr().Is6() {
			fam = "-6"
		}
		for _, sel := range []string{"match", "root"} {
			out, err := exec.Command("ip", fam, "route", "show", "table", "all", sel, p.Masked().String()).Output()
			if err != nil {
				t.Fatalf("ip route show %s %s: %v", sel, p.Masked(), err)
			}
			for _, line := range strings.Split(string(out), "\n") {
				f := strings.Fields(line)
				if len(f) == 0 || f[0] == "default" || f[0] == "local" || f[0] == "broadcast" || f[0] == "unreachable" ||
					f[0] == "multicast" || (len(f) > 1 && f[0] == "anycast") {
					continue
				}
				t.Fatalf("netns.Link: host address %v collides with the host route %q: pick another prefix", p, strings.TrimSpace(line))
			}
		}
	}
}

// Command returns an unstarted command that runs args inside the namespace.
func (n *NS) Command(args ...string) *exec.Cmd {
	if n.IsHost() {
		return exec.Command(args[0], args[1:]...)
	}
	return exec.Command("ip", append([]string{"netns", "exec", n.Name}, args...)...)
}

// Output runs args inside the namespace and returns its standard output; the
// error, if any, carries the standard error too. For commands expected to fail.
func (n *NS) Output(args ...string) (string, error) {
	cmd := n.Command(args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("[%s] %s: %v\nstdout:\n%s\nstderr:\n%s",
			n.label(), strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// Run runs args inside the namespace, fails the test with its output if it
// fails, and returns its standard output.
func (n *NS) Run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := n.Output(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Sysctl sets a sysctl inside the namespace (key in dotted form, such as
// net.ipv4.ip_forward). Network sysctls are per namespace. It refuses Host.
func (n *NS) Sysctl(t testing.TB, key, value string) {
	t.Helper()
	if n.IsHost() {
		t.Fatalf("netns: refusing to set %s in the host namespace", key)
	}
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	n.Run(t, "sh", "-c", `printf '%s\n' "$1" > "$2"`, "sysctl", value, path)
}

// Proc is a long-running process started inside a namespace by Start.
type Proc struct {
	*exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error // Wait's result, set before done is closed
}

// Start starts args inside the namespace and returns at once. Standard output
// and error go to one buffer (Output, WaitFor), which the test log shows with
// logPrefix when the test ends. At cleanup the process gets SIGTERM, then
// SIGKILL if it has not exited within 5 seconds. `ip netns exec` execs the
// command itself, so the PID is the command's own.
func (n *NS) Start(t testing.TB, logPrefix string, args ...string) *Proc {
	t.Helper()
	p := &Proc{Cmd: n.Command(args...), out: new(syncBuffer), done: make(chan struct{})}
	p.Stdout, p.Stderr = p.out, p.out
	if err := p.Cmd.Start(); err != nil {
		t.Fatalf("[%s] start %s: %v", n.label(), strings.Join(args, " "), err)
	}
	go func() {
		p.err = p.Cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		err := p.Stop(5 * time.Second)
		status := "exited"
		if err != nil {
			status = err.Error()
		}
		t.Logf("%s (pid %d, %s) output:\n%s", logPrefix, p.Process.Pid, status, indent(p.Output()))
	})
	return p
}

// Output returns what the process has written so far.
func (p *Proc) Output() string { return p.out.String() }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err returns the process's exit error once Done is closed (nil for exit 0).
func (p *Proc) Err() error {
	<-p.done
	return p.err
}

// WaitFor waits until the process's output contains substr. It fails if the
// process exits first or timeout passes.
func (p *Proc) WaitFor(substr string, timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if strings.Contains(p.Output(), substr) {
			return nil
		}
		select {
		case <-p.done:
			if strings.Contains(p.Output(), substr) {
				return nil
			}
			return fmt.Errorf("%s exited (%v) before printing %q; output:\n%s", p.Path, p.err, substr, p.Output())
		case <-deadline.C:
			return fmt.Errorf("%q not printed within %v; output so far:\n%s", substr, timeout, p.Output())
		case <-tick.C:
		}
	}
}

// Stop sends SIGTERM, waits up to grace for the process to exit, then sends
// SIGKILL. It returns the process's exit error (nil if it exited with 0).
// Calling it again, or on a process that has exited, just returns that.
func (p *Proc) Stop(grace time.Duration) error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	p.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(grace):
	}
	p.Process.Kill()
	<-p.done
	return fmt.Errorf("did not exit within %v of SIGTERM, killed: %v", grace, p.err)
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func suffix() string {
	var r [3]byte
	rand.Read(r[:])
	return strconv.Itoa(os.Getpid()) + hex.EncodeToString(r[:])
}

func suffixHex() string {
	var r [3]byte
	rand.Read(r[:])
	return hex.EncodeToString(r[:])
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return "\t(none)"
	}
	return "\t" + strings.ReplaceAll(s, "\n", "\n\t")
}
