// Package tunnet is a gateway's TUN mode on Linux: a real TUN device for
// wireguard-go, the gateway's tunnel addresses on it, IP forwarding, and
// nftables NAT so that clients' traffic leaves the host from the exit
// addresses.
//
// It needs CAP_NET_ADMIN (in practice root), /dev/net/tun, iproute2's ip and
// the nft tool from nftables. Open checks these first and says what is
// missing; a gateway without them runs in userspace mode instead. ip and nft
// run as child processes, so a non-root gateway needs CAP_NET_ADMIN in its
// ambient set (systemd: AmbientCapabilities=CAP_NET_ADMIN) and forwarding
// already enabled (sysctl.d), since only root can write /proc/sys; Open
// writes the forwarding sysctls only when they are not 1 already.
//
// The table name is fixed, so there is one TUN-mode gateway per network
// namespace. Its rules match the TUN by name, so a table left behind by a
// killed gateway is inert and the next Open replaces it.
//
// What Open changes on the host, and Close undoes:
//   - the TUN interface (Config.Name) with the tunnel addresses, up; the
//     kernel routes each pool (the addresses' prefixes) to it;
//   - the nftables table "inet meridian": a postrouting NAT chain that
//     rewrites the source of pool traffic leaving through any other interface
//     to the exit address (or masquerades), and a forward chain that lets
//     TUN -> other interfaces through, lets replies back in, and drops
//     anything else headed into the TUN (unsolicited inbound and
//     client-to-client).
//
// What Open changes and Close leaves: net.ipv4.ip_forward and
// net.ipv6.conf.all.forwarding are set to 1 (for the families in use), as
// Docker and libvirt do; something else on the host may rely on them by the
// time the gateway stops. Note that IPv6 forwarding makes the kernel ignore
// router advertisements on interfaces with accept_ra=1: a host that learns
// its IPv6 default route by SLAAC needs accept_ra=2 on its uplink.
//
// The forward chain accepts, but in nftables an accept in one table does not
// override a drop in another (Docker's iptables FORWARD policy is DROP, for
// instance): such a host needs its own rule for the TUN.
package tunnet

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.zx2c4.com/wireguard/tun"
)

// TableName is the nftables table (family inet) that Open installs.
const TableName = "meridian"

const (
	DefaultName = "mrd0"
	DefaultMTU  = 1420
)

// Config describes the gateway's TUN.
type Config struct {
	Name      string         // interface name, default "mrd0"
	Addresses []netip.Prefix // gateway tunnel addresses with pool prefix, e.g. 10.200.0.1/16 and 2001:db8:200::1/64
	MTU       int            // default 1420
	ExitIPv4  netip.Addr     // SNAT source for IPv4 traffic leaving the host; zero = masquerade
	ExitIPv6  netip.Addr     // same for IPv6
}

// TUN is an open TUN device with its addresses and NAT in place.
type TUN struct {
	dev       tun.Device
	name      string
	closeOnce sync.Once
	closeErr  error
}

// Open creates and configures the TUN, enables forwarding and installs the
// nftables table. On error nothing it made is left behind.
func Open(cfg Config) (*TUN, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := preflight(); err != nil {
		return nil, err
	}

	dev, err := tun.CreateTUN(cfg.Name, cfg.MTU)
	if err != nil {
		return nil, createError(cfg.Name, err)
	}
	name, err := dev.Name()
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("tunnet: TUN name: %w", err)
	}
	t := &TUN{dev: dev, name: name}
	if err := t.setup(cfg); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

func (t *TUN) setup(cfg Config) error {
	for _, p := range cfg.Addresses {
		args := []string{"addr", "add", p.String(), "dev", t.name}
		if p.Addr().Is6() {
			args = append(args, "nodad") // the TUN is point-to-point: no one to clash with
		}
		if err := run(nil, "ip", args...); err != nil {
			return err
		}
	}
	if err := run(nil, "ip", "link", "set", "dev", t.name, "up"); err != nil {
		return err
	}
	v4, v6 := families(cfg.Addresses)
	if v4 {
		if err := writeSysctl("net/ipv4/ip_forward", "1"); err != nil {
			return err
		}
	}
	if v6 {
		if err := writeSysctl("net/ipv6/conf/all/forwarding", "1"); err != nil {
			return err
		}
	}
	return run(strings.NewReader(Ruleset(t.name, cfg)), "nft", "-f", "-")
}

// Device returns the TUN for device.NewDevice. Closing the wireguard-go
// device closes it; Close is still needed to remove the nftables table.
func (t *TUN) Device() tun.Device { return t.dev }

// Name returns the interface name.
func (t *TUN) Name() string { return t.name }

// Close removes the nftables table and the TUN interface (closing the TUN
// deletes it). It is safe to call more than once, and after the wireguard-go
// device has been closed.
func (t *TUN) Close() error {
	t.closeOnce.Do(func() {
		var errs []error
		// Delete the table only if present; declaring it first makes the
		// delete a no-op rather than an error when it is already gone.
		if err := run(strings.NewReader(fmt.Sprintf("table inet %s\ndelete table inet %s\n", TableName, TableName)), "nft", "-f", "-"); err != nil {
			errs = append(errs, err)
		}
		if err := t.dev.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
			errs = append(errs, fmt.Errorf("tunnet: close TUN %s: %w", t.name, err))
		}
		t.closeErr = errors.Join(errs...)
	})
	return t.closeErr
}

// Ruleset renders the nftables script that Open feeds to `nft -f -` for the
// TUN named tunName. Declaring and then deleting the table before defining it
// replaces any previous "meridian" table in the same atomic transaction.
func Ruleset(tunName string, cfg Config) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s\ndelete table inet %s\n", TableName, TableName)
	fmt.Fprintf(&b, "table inet %s {\n", TableName)
	b.WriteString("\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n")
	for _, pool := range Pools(cfg.Addresses) {
		fam, exit := "ip", cfg.ExitIPv4
		if pool.Addr().Is6() {
			fam, exit = "ip6", cfg.ExitIPv6
		}
		action := "masquerade"
		if exit.IsValid() {
			action = fmt.Sprintf("snat %s to %s", fam, exit)
		}
		fmt.Fprintf(&b, "\t\t%s saddr %s oifname != %q %s\n", fam, pool, tunName, action)
	}
	b.WriteString("\t}\n")
	b.WriteString("\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n")
	fmt.Fprintf(&b, "\t\tiifname %q oifname != %q accept\n", tunName, tunName)
	fmt.Fprintf(&b, "\t\toifname %q ct state established,related accept\n", tunName)
	fmt.Fprintf(&b, "\t\toifname %q drop\n", tunName)
	b.WriteString("\t}\n}\n")
	return b.String()
}

// Pools returns the distinct networks of the given interface addresses, in
// order: the address pools whose traffic is NATed.
func Pools(addrs []netip.Prefix) []netip.Prefix {
	var pools []netip.Prefix
	for _, a := range addrs {
		p := a.Masked()
		if !slices.Contains(pools, p) {
			pools = append(pools, p)
		}
	}
	return pools
}

func (c Config) withDefaults() (Config, error) {
	if c.Name == "" {
		c.Name = DefaultName
	}
	if c.MTU == 0 {
		c.MTU = DefaultMTU
	}
	if err := validName(c.Name); err != nil {
		return c, err
	}
	if c.MTU < 576 || c.MTU > 65535 {
		return c, fmt.Errorf("tunnet: MTU %d out of range (576..65535)", c.MTU)
	}
	if len(c.Addresses) == 0 {
		return c, errors.New("tunnet: no tunnel addresses configured")
	}
	for _, p := range c.Addresses {
		if !p.IsValid() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
			return c, fmt.Errorf("tunnet: invalid tunnel address %v", p)
		}
	}
	v4, v6 := families(c.Addresses)
	if c.ExitIPv4.IsValid() {
		if !c.ExitIPv4.Is4() {
			return c, fmt.Errorf("tunnet: ExitIPv4 %v is not an IPv4 address", c.ExitIPv4)
		}
		if !v4 {
			return c, fmt.Errorf("tunnet: ExitIPv4 %v set but no IPv4 tunnel address", c.ExitIPv4)
		}
	}
	if c.ExitIPv6.IsValid() {
		if !c.ExitIPv6.Is6() || c.ExitIPv6.Is4In6() || c.ExitIPv6.Zone() != "" {
			return c, fmt.Errorf("tunnet: ExitIPv6 %v is not a global IPv6 address", c.ExitIPv6)
		}
		if !v6 {
			return c, fmt.Errorf("tunnet: ExitIPv6 %v set but no IPv6 tunnel address", c.ExitIPv6)
		}
	}
	return c, nil
}

// validName accepts what Linux accepts as an interface name that is also
// safe to quote into an nftables script.
func validName(name string) error {
	if len(name) > 15 {
		return fmt.Errorf("tunnet: interface name %q longer than 15 bytes", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("tunnet: interface name %q: only letters, digits, '-', '_' and '.' are allowed", name)
		}
	}
	return nil
}

func families(addrs []netip.Prefix) (v4, v6 bool) {
	for _, p := range addrs {
		if p.Addr().Is4() {
			v4 = true
		} else if p.Addr().Is6() {
			v6 = true
		}
	}
	return v4, v6
}

// preflight checks what TUN mode needs and says how to get what is missing.
func preflight() error {
	if !hasNetAdmin() {
		return errors.New("tunnet: TUN mode needs CAP_NET_ADMIN: run as root or use --mode userspace")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return errors.New("tunnet: TUN mode needs /dev/net/tun: load the tun module (modprobe tun), or in a container pass the device (docker run --device /dev/net/tun --cap-add NET_ADMIN), or use --mode userspace")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("tunnet: TUN mode needs the ip tool: apt-get install iproute2")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		return errors.New("tunnet: TUN mode needs the nft tool: apt-get install nftables (or use --mode userspace)")
	}
	return nil
}

// hasNetAdmin reports whether CAP_NET_ADMIN is in the effective set.
func hasNetAdmin() bool {
	const capNetAdmin = 12
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return os.Geteuid() == 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if hex, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
			return err == nil && caps&(1<<capNetAdmin) != 0
		}
	}
	return os.Geteuid() == 0
}

func createError(name string, err error) error {
	switch {
	case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES):
		return fmt.Errorf("tunnet: create TUN %s: %w (TUN mode needs CAP_NET_ADMIN and access to /dev/net/tun: run as root or use --mode userspace)", name, err)
	case errors.Is(err, syscall.EBUSY), errors.Is(err, syscall.EEXIST), errors.Is(err, syscall.EINVAL):
		return fmt.Errorf("tunnet: create TUN %s: %w (is another gateway running, or does a non-TUN interface of that name exist? `ip link show %s`)", name, err, name)
	}
	return fmt.Errorf("tunnet: create TUN %s: %w", name, err)
}

// writeSysctl writes a sysctl under /proc/sys. Network sysctls belong to the
// network namespace of the writing process.
func writeSysctl(path, value string) error {
	full := "/proc/sys/" + path
	if cur, err := os.ReadFile(full); err == nil && strings.TrimSpace(string(cur)) == value {
		return nil
	}
	if err := os.WriteFile(full, []byte(value+"\n"), 0o644); err != nil {
		return fmt.Errorf("tunnet: enable forwarding: %w", err)
	}
	return nil
}

// run runs a tool and turns a failure into an error carrying its output.
func run(stdin *strings.Reader, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("tunnet: %s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}
