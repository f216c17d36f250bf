// Package tunnet is a gateway's TUN mode on Linux: a real TUN device for
// wireguard-go, the gateway's tunnel addresses on it, IP forwarding, and
// nftables NAT so that clients' traffic leaves the host from the exit
// addresses.
//
// It needs CAP_NET_ADMIN (in practice root), /dev/net/tun, iproute2's ip,
// the nft tool from nftables and the conntrack tool (CloseFlows). Open checks
// these first and says what is missing; a gateway without them runs in
// userspace mode instead. ip, nft and conntrack run as child processes, so a non-root gateway needs CAP_NET_ADMIN in its
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
//     to the exit address (or masquerades); a forward chain that lets
//     TUN -> other interfaces through, subject to the egress policy, lets
//     replies back in, and drops anything else headed into the TUN
//     (unsolicited inbound and client-to-client); and an input chain that
//     keeps clients off the gateway host itself.
//
// The egress policy is the userspace exit's (package egress), so both modes
// keep clients to the same destinations: traffic from the TUN to what is
// not globally reachable (loopback, link-local with the cloud metadata
// address, private, shared, documentation, benchmarking, multicast and
// reserved ranges, per the IANA special-purpose registries), and to the
// IPv6 forms of those (NAT64, 6to4), is refused (TCP with a reset, anything
// else dropped) unless Config.EgressAllow covers the destination. The
// host's own addresses are reached through the input hook, not forwarding:
// the kernel's own routing decides, per packet, that a destination is
// local, so every address the host has at that moment is covered, also one
// added after Open, without listing them: a client may answer connections
// the host opened, ping the gateway's tunnel addresses and reach
// EgressAllow destinations, and nothing else. (Loopback
// destinations stay unreachable from the TUN even when allowed: the kernel
// drops packets to them that arrive on another interface, for IPv4 unless
// route_localnet is set.)
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
//
// Session attribution (Config.PortBlocks, RFC 7422): when a duty requires
// attribution records, each session owns a block of source ports on the exit
// address. The table then has one chain per block (blk<N>_4, blk<N>_6) that
// SNATs TCP and UDP to the block's ports and marks the connection (ct mark
// N+1), and a verdict map from a session's tunnel address to its block's
// chain (sess4, sess6), filled by Attribute while the session is open.
// Traffic of no session leaves from ports outside every block. A connection
// marked for a block that its source no longer holds (a set of live tunnel
// address . mark pairs, live4 and live6) is dropped in both directions, so a
// connection cannot outlive its session into another session's block. The
// table thus owns the ct mark of connections from the TUN.
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

	"github.com/meridian-vpn/meridian/egress"
	"github.com/meridian-vpn/meridian/portblock"
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

	// EgressAllow lists destinations that clients may reach although the
	// egress policy denies them (DeniedPrefixes, or the host's own
	// addresses), e.g. 192.168.10.0/24 for an office LAN behind the gateway.
	// IPv4-mapped IPv6 prefixes count as their IPv4 form.
	EgressAllow []netip.Prefix

	// PortBlocks, if set, carves the exit addresses' source ports into
	// blocks for attributed sessions (see Attribute). Traffic of no session
	// then leaves from ports outside the blocks. Sessions can be attributed
	// only in a family with an exit address.
	PortBlocks portblock.Layout
}

// attributed reports whether the table carries session attribution.
func (c Config) attributed() bool { return c.PortBlocks != (portblock.Layout{}) }

// freePorts are the source ports outside every block, for traffic of no
// session: above the blocks, or else below them (not below 1024).
func (c Config) freePorts() (lo, hi uint16, ok bool) {
	first, last := c.PortBlocks.Span()
	switch {
	case last < 65535:
		return last + 1, 65535, true
	case first > 1024:
		return 1024, first - 1, true
	}
	return 0, 0, false
}

// DeniedPrefixes returns the destinations that clients may not reach through
// a TUN-mode gateway unless Config.EgressAllow covers them: the userspace
// exit's (package egress, what is not globally reachable, with the IPv6
// forms of denied IPv4 addresses), as sorted, disjoint prefixes. The host's
// own addresses are denied as well, by the input chain.
func DeniedPrefixes() []netip.Prefix { return slices.Clone(egress.Prefixes()) }

// disjoint drops every prefix covered by another one (nftables interval sets
// refuse overlapping elements) and sorts the rest.
func disjoint(ps []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for i, p := range ps {
		covered := false
		for j, q := range ps {
			if i != j && q.Bits() <= p.Bits() && q.Contains(p.Addr()) && (q.Bits() < p.Bits() || j < i) {
				covered = true
				break
			}
		}
		if !covered {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return out
}

// TUN is an open TUN device with its addresses and NAT in place.
type TUN struct {
	dev       tun.Device
	name      string
	cfg       Config
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
	t := &TUN{dev: dev, name: name, cfg: cfg}
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
// cfg is expected to have passed Open's validation.
func Ruleset(tunName string, cfg Config) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s\ndelete table inet %s\n", TableName, TableName)
	fmt.Fprintf(&b, "table inet %s {\n", TableName)

	// Sets: what the egress policy denies, and the operator's exceptions.
	allow := normalizeAllow(cfg.EgressAllow)
	deny := DeniedPrefixes()
	writeSet(&b, "egress_deny4", "ipv4_addr", "denied destinations (exit policy)", filterFamily(deny, true))
	writeSet(&b, "egress_deny6", "ipv6_addr", "", filterFamily(deny, false))
	writeSet(&b, "egress_allow4", "ipv4_addr", "exceptions (EgressAllow)", filterFamily(allow, true))
	writeSet(&b, "egress_allow6", "ipv6_addr", "", filterFamily(allow, false))

	if cfg.attributed() {
		writeAttribution(&b, cfg)
	}

	b.WriteString("\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n")
	for _, pool := range Pools(cfg.Addresses) {
		fam, exit := "ip", cfg.ExitIPv4
		if pool.Addr().Is6() {
			fam, exit = "ip6", cfg.ExitIPv6
		}
		match := fmt.Sprintf("%s saddr %s oifname != %q", fam, pool, tunName)
		action := "masquerade"
		if exit.IsValid() {
			action = fmt.Sprintf("snat %s to %s", fam, exit)
		}
		if cfg.attributed() {
			// A session's connections leave from its block; all others
			// from ports outside the blocks.
			if exit.IsValid() {
				fmt.Fprintf(&b, "\t\t%s %s saddr vmap @sess%s\n", match, fam, familySuffix(exit))
			}
			lo, hi, _ := cfg.freePorts()
			fmt.Fprintf(&b, "\t\t%s meta l4proto { tcp, udp } %s\n", match, portAction(fam, exit, lo, hi))
		}
		fmt.Fprintf(&b, "\t\t%s %s\n", match, action)
	}
	b.WriteString("\t}\n")

	b.WriteString("\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n")
	if cfg.attributed() {
		for _, exit := range []netip.Addr{cfg.ExitIPv4, cfg.ExitIPv6} {
			if exit.IsValid() {
				fam, sfx := familyOf(exit), familySuffix(exit)
				fmt.Fprintf(&b, "\t\tiifname %q ct mark != 0 %s saddr . ct mark != @live%s drop\n", tunName, fam, sfx)
				fmt.Fprintf(&b, "\t\toifname %q ct mark != 0 %s daddr . ct mark != @live%s drop\n", tunName, fam, sfx)
			}
		}
	}
	fmt.Fprintf(&b, "\t\tiifname %q goto egress\n", tunName)
	fmt.Fprintf(&b, "\t\toifname %q ct state established,related accept\n", tunName)
	fmt.Fprintf(&b, "\t\toifname %q drop\n", tunName)
	b.WriteString("\t}\n")

	// Every packet from a client that the host forwards: no client-to-client,
	// then exceptions, then the deny list. Checked per packet, not only for
	// new connections, so a replaced table cuts flows it no longer allows.
	b.WriteString("\tchain egress {\n")
	fmt.Fprintf(&b, "\t\toifname %q drop\n", tunName)
	b.WriteString("\t\tip daddr @egress_allow4 accept\n")
	b.WriteString("\t\tip6 daddr @egress_allow6 accept\n")
	b.WriteString("\t\tip daddr @egress_deny4 goto refuse\n")
	b.WriteString("\t\tip6 daddr @egress_deny6 goto refuse\n")
	b.WriteString("\t\taccept\n")
	b.WriteString("\t}\n")

	// Packets from a client to any of the host's own addresses.
	b.WriteString("\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n")
	fmt.Fprintf(&b, "\t\tiifname %q goto to_host\n", tunName)
	b.WriteString("\t}\n")
	b.WriteString("\tchain to_host {\n")
	b.WriteString("\t\tct state established,related accept\n")
	b.WriteString("\t\tip daddr @egress_allow4 accept\n")
	b.WriteString("\t\tip6 daddr @egress_allow6 accept\n")
	for _, a := range cfg.Addresses {
		if a.Addr().Is4() {
			fmt.Fprintf(&b, "\t\tip daddr %s icmp type echo-request accept\n", a.Addr())
		} else {
			fmt.Fprintf(&b, "\t\tip6 daddr %s icmpv6 type echo-request accept\n", a.Addr())
		}
	}
	b.WriteString("\t\tgoto refuse\n")
	b.WriteString("\t}\n")

	// Refused like the userspace exit refuses: TCP with a reset, so the
	// client fails at once, anything else silently.
	b.WriteString("\tchain refuse {\n")
	b.WriteString("\t\tmeta l4proto tcp reject with tcp reset\n")
	b.WriteString("\t\tdrop\n")
	b.WriteString("\t}\n}\n")
	return b.String()
}

// writeAttribution writes, for each family with an exit address, the chain
// of every port block, the map from a session's tunnel address to its
// block's chain, and the set of live tunnel address . mark pairs.
func writeAttribution(b *strings.Builder, cfg Config) {
	l := cfg.PortBlocks
	for _, exit := range []netip.Addr{cfg.ExitIPv4, cfg.ExitIPv6} {
		if !exit.IsValid() {
			continue
		}
		fam, sfx := familyOf(exit), familySuffix(exit)
		fmt.Fprintf(b, "\t# session attribution (IPv%s): tunnel address -> its port block\n", sfx)
		fmt.Fprintf(b, "\tmap sess%s {\n\t\ttype ipv%s_addr : verdict\n\t}\n", sfx, sfx)
		fmt.Fprintf(b, "\tset live%s {\n\t\ttype ipv%s_addr . mark\n\t}\n", sfx, sfx)
		for i := range l.Count() {
			blk := l.Block(i)
			fmt.Fprintf(b, "\tchain %s {\n\t\tct mark set %d\n\t\tmeta l4proto { tcp, udp } %s\n\t\tsnat %s to %s\n\t}\n",
				blockChain(i, exit), blockMark(i), portAction(fam, exit, blk.Lo, blk.Hi), fam, exit)
		}
	}
}

func familyOf(a netip.Addr) string {
	if a.Is4() {
		return "ip"
	}
	return "ip6"
}

func familySuffix(a netip.Addr) string {
	if a.Is4() {
		return "4"
	}
	return "6"
}

func blockChain(i int, exit netip.Addr) string { return fmt.Sprintf("blk%d_%s", i, familySuffix(exit)) }

// blockMark is the ct mark of connections in block i (0 is no block).
func blockMark(i int) int { return i + 1 }

// portAction translates the source to ports lo-hi of exit, or of the
// outgoing interface's address when exit is not set.
func portAction(fam string, exit netip.Addr, lo, hi uint16) string {
	switch {
	case !exit.IsValid():
		return fmt.Sprintf("masquerade to :%d-%d", lo, hi)
	case exit.Is6():
		return fmt.Sprintf("snat %s to [%s]:%d-%d", fam, exit, lo, hi)
	}
	return fmt.Sprintf("snat %s to %s:%d-%d", fam, exit, lo, hi)
}

// Attribution ties the tunnel address of an open session to its port block.
type Attribution struct {
	Tunnel netip.Addr
	Block  portblock.Block
}

// Attribute updates, in one transaction, which tunnel addresses hold which
// port block: from then on new connections from an added address leave
// from its block, and connections marked for a removed one are dropped.
// Errors never name the addresses.
func (t *TUN) Attribute(add, remove []Attribution) error {
	if len(add)+len(remove) == 0 {
		return nil
	}
	script, err := attributionScript(t.cfg, add, remove)
	if err != nil {
		return err
	}
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	// nft echoes the failing line, which holds a tunnel address: its
	// output is not passed on.
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("tunnet: updating session attribution (%d added, %d removed): nft: %v", len(add), len(remove), err)
	}
	return nil
}

func attributionScript(cfg Config, add, remove []Attribution) (string, error) {
	if !cfg.attributed() {
		return "", errors.New("tunnet: session attribution needs Config.PortBlocks")
	}
	var b strings.Builder
	line := func(verb string, a Attribution, withChain bool) error {
		exit := cfg.ExitIPv4
		if a.Tunnel.Is6() {
			exit = cfg.ExitIPv6
		}
		if !exit.IsValid() {
			return fmt.Errorf("tunnet: no exit address for IPv%s: its sessions cannot be attributed", familySuffix(a.Tunnel))
		}
		if a.Block.Index < 0 || a.Block.Index >= cfg.PortBlocks.Count() {
			return fmt.Errorf("tunnet: no port block %d", a.Block.Index)
		}
		sfx := familySuffix(exit)
		elem := a.Tunnel.String()
		if withChain {
			elem += " : goto " + blockChain(a.Block.Index, exit)
		}
		fmt.Fprintf(&b, "%s element inet %s sess%s { %s }\n", verb, TableName, sfx, elem)
		fmt.Fprintf(&b, "%s element inet %s live%s { %s . %d }\n", verb, TableName, sfx, a.Tunnel, blockMark(a.Block.Index))
		return nil
	}
	for _, a := range remove {
		if err := line("delete", a, false); err != nil {
			return "", err
		}
	}
	for _, a := range add {
		if err := line("add", a, true); err != nil {
			return "", err
		}
	}
	return b.String(), nil
}

// CloseFlows deletes the connection tracking entries of the tunnel
// addresses addrs, as when their peer has been removed: entries whose
// original source or destination is one of them. Without its entry, the NAT
// of a flow is gone: the far end's next packet reaches the host, not the
// TUN, and the host answers it with a reset. (The peer's own packets no
// longer arrive: wireguard-go has dropped the peer.) Errors never name the
// addresses.
func (t *TUN) CloseFlows(addrs []netip.Addr) error {
	failed := 0
	var first error
	for _, a := range addrs {
		a = a.Unmap().WithZone("")
		fam := "ipv4"
		if a.Is6() {
			fam = "ipv6"
		}
		for _, dir := range []string{"--orig-src", "--orig-dst"} {
			if err := deleteConntrack(fam, dir, a); err != nil {
				failed++
				if first == nil {
					first = err
				}
			}
		}
	}
	if failed > 0 {
		return fmt.Errorf("tunnet: deleting the connection tracking entries of %d removed addresses: %d of %d conntrack runs failed, the first: %w",
			len(addrs), failed, 2*len(addrs), first)
	}
	return nil
}

// deleteConntrack deletes the conntrack entries of one address in one
// direction. conntrack fails when it deleted nothing, which is no error
// here. Its output names the address and is not passed on.
func deleteConntrack(fam, dir string, a netip.Addr) error {
	cmd := exec.Command("conntrack", "-D", "-f", fam, dir, a.String())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if err != nil && strings.Contains(stderr.String(), " 0 flow entries have been deleted") {
		return nil
	}
	return err
}

func writeSet(b *strings.Builder, name, typ, comment string, elems []netip.Prefix) {
	if comment != "" {
		fmt.Fprintf(b, "\t# %s\n", comment)
	}
	fmt.Fprintf(b, "\tset %s {\n\t\ttype %s\n\t\tflags interval\n", name, typ)
	if len(elems) > 0 {
		s := make([]string, len(elems))
		for i, p := range elems {
			s[i] = p.String()
		}
		fmt.Fprintf(b, "\t\telements = { %s }\n", strings.Join(s, ", "))
	}
	b.WriteString("\t}\n")
}

func filterFamily(ps []netip.Prefix, v4 bool) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if p.Addr().Is4() == v4 {
			out = append(out, p)
		}
	}
	return out
}

// normalizeAllow masks the allow prefixes, turns IPv4-mapped ones into IPv4
// (as the userspace exit does), and drops duplicates and covered ones.
func normalizeAllow(allow []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range allow {
		if p = normalizePrefix(p); p.IsValid() {
			out = append(out, p)
		}
	}
	return disjoint(out)
}

func normalizePrefix(p netip.Prefix) netip.Prefix {
	if !p.IsValid() {
		return netip.Prefix{}
	}
	a := p.Addr().WithZone("")
	if a.Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{} // spans more than the mapped range
		}
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96).Masked()
	}
	return netip.PrefixFrom(a, p.Bits()).Masked()
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
	for _, p := range c.EgressAllow {
		if !normalizePrefix(p).IsValid() {
			return c, fmt.Errorf("tunnet: invalid EgressAllow prefix %v", p)
		}
	}
	if c.attributed() {
		if err := c.PortBlocks.Validate(); err != nil {
			return c, fmt.Errorf("tunnet: %w", err)
		}
		if _, _, ok := c.freePorts(); !ok {
			return c, errors.New("tunnet: the port blocks leave no ports for traffic of no session")
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
	if _, err := exec.LookPath("conntrack"); err != nil {
		return errors.New("tunnet: TUN mode needs the conntrack tool, to end the flows of removed peers: apt-get install conntrack (or use --mode userspace)")
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
