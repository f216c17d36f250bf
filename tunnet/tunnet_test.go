package tunnet

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/meridian-vpn/meridian/internal/netns"
	"github.com/meridian-vpn/meridian/portblock"
)

func TestRulesetSNAT(t *testing.T) {
	cfg := Config{
		Addresses: []netip.Prefix{
			netip.MustParsePrefix("10.200.0.1/16"),
			netip.MustParsePrefix("2001:db8:200::1/64"),
			netip.MustParsePrefix("10.200.0.2/16"), // same pool: one rule
		},
		ExitIPv4: netip.MustParseAddr("203.0.113.1"),
		ExitIPv6: netip.MustParseAddr("2001:db8:2::1"),
	}
	got := Ruleset("mrd0", cfg)
	for _, want := range []string{
		"table inet meridian\ndelete table inet meridian\ntable inet meridian {\n",
		"type nat hook postrouting priority srcnat;",
		`ip saddr 10.200.0.0/16 oifname != "mrd0" snat ip to 203.0.113.1`,
		`ip6 saddr 2001:db8:200::/64 oifname != "mrd0" snat ip6 to 2001:db8:2::1`,
		`iifname "mrd0" goto egress`,
		`oifname "mrd0" ct state established,related accept`,
		"\t\toifname \"mrd0\" drop\n\t}\n\tchain egress {\n\t\toifname \"mrd0\" drop\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, got)
		}
	}
	if n := strings.Count(got, "10.200.0.0/16"); n != 1 {
		t.Errorf("pool 10.200.0.0/16 appears %d times, want 1:\n%s", n, got)
	}
}

func TestRulesetMasquerade(t *testing.T) {
	cfg := Config{Addresses: []netip.Prefix{
		netip.MustParsePrefix("10.200.0.1/16"),
		netip.MustParsePrefix("2001:db8:200::1/64"),
	}}
	got := Ruleset("gw1", cfg)
	for _, want := range []string{
		`ip saddr 10.200.0.0/16 oifname != "gw1" masquerade`,
		`ip6 saddr 2001:db8:200::/64 oifname != "gw1" masquerade`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "snat") {
		t.Errorf("masquerade ruleset has an snat rule:\n%s", got)
	}
}

func TestConfigValidation(t *testing.T) {
	v4 := []netip.Prefix{netip.MustParsePrefix("10.200.0.1/16")}
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no addresses", Config{}, "no tunnel addresses"},
		{"long name", Config{Name: "averyveryverylongname", Addresses: v4}, "longer than 15"},
		{"bad name", Config{Name: `x";drop`, Addresses: v4}, "only letters"},
		{"mtu", Config{Addresses: v4, MTU: 100}, "MTU 100"},
		{"exit4 family", Config{Addresses: v4, ExitIPv4: netip.MustParseAddr("2001:db8::1")}, "not an IPv4"},
		{"exit6 without v6 pool", Config{Addresses: v4, ExitIPv6: netip.MustParseAddr("2001:db8::1")}, "no IPv6 tunnel address"},
	}
	for _, c := range cases {
		_, err := c.cfg.withDefaults()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want it to mention %q", c.name, err, c.want)
		}
	}
	got, err := Config{Addresses: v4}.withDefaults()
	if err != nil || got.Name != DefaultName || got.MTU != DefaultMTU {
		t.Errorf("defaults: %+v, %v", got, err)
	}
}

// TestOpenWithoutPrivilege: without CAP_NET_ADMIN, Open says what is
// missing and what to do instead. With it, the test runs itself again as
// nobody.
func TestOpenWithoutPrivilege(t *testing.T) {
	if hasNetAdmin() {
		netns.RunAsNobody(t)
		return
	}
	tn, err := Open(Config{Addresses: []netip.Prefix{netip.MustParsePrefix("10.200.0.1/16")}})
	if err == nil {
		tn.Close()
		t.Fatal("Open succeeded without CAP_NET_ADMIN")
	}
	if want := "tunnet: TUN mode needs CAP_NET_ADMIN: run as root or use --mode userspace"; err.Error() != want {
		t.Fatalf("Open without CAP_NET_ADMIN: %q, want %q", err, want)
	}
}

func TestRulesetEgressPolicy(t *testing.T) {
	cfg := Config{
		Addresses: []netip.Prefix{
			netip.MustParsePrefix("10.200.0.1/24"),
			netip.MustParsePrefix("2001:db8:200::1/64"),
		},
		EgressAllow: []netip.Prefix{
			netip.MustParsePrefix("192.168.10.0/24"),
			netip.MustParsePrefix("192.168.10.128/25"),   // covered: dropped
			netip.MustParsePrefix("::ffff:10.9.0.0/112"), // IPv4-mapped: becomes 10.9.0.0/16
			netip.MustParsePrefix("fd00:1::5/64"),        // masked
		},
	}
	got := Ruleset("mrd0", cfg)
	for _, want := range []string{
		// The deny list, IPv4 and IPv6, with NAT64 and 6to4 forms and
		// without overlaps: what is not globally reachable.
		"elements = { 0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10, 127.0.0.0/8, 169.254.0.0/16, 172.16.0.0/12, 192.0.0.0/24, 192.0.2.0/24, 192.88.99.0/24, " +
			"192.168.0.0/16, 198.18.0.0/15, 198.51.100.0/24, 203.0.113.0/24, 224.0.0.0/4, 240.0.0.0/4 }",
		"elements = { ::/10, ",                                                 // unspecified, loopback, IPv4-mapped and -compatible
		" 64:ff9b::a9fe:0/112, ", " 64:ff9b::a00:0/104, ", " 64:ff9b:1::/48, ", // NAT64 of metadata and 10/8; local-use NAT64
		" 2001::/31, ", " 2001:db8::/32, ", " 3fff::/20, ", // Teredo, documentation
		" 2002:7f00::/24, ", " 2002:a9fe::/32, ", // 6to4 of loopback and link-local
		" 4000::/2, 8000::/1 }", // outside Global Unicast: ULA, link-local, multicast, ...
		"set egress_allow4 {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\telements = { 10.9.0.0/16, 192.168.10.0/24 }\n\t}",
		"set egress_allow6 {\n\t\ttype ipv6_addr\n\t\tflags interval\n\t\telements = { fd00:1::/64 }\n\t}",
		// Forwarded traffic from the TUN: isolation, exceptions, then the deny list.
		"\tchain egress {\n" +
			"\t\toifname \"mrd0\" drop\n" +
			"\t\tip daddr @egress_allow4 accept\n" +
			"\t\tip6 daddr @egress_allow6 accept\n" +
			"\t\tip daddr @egress_deny4 goto refuse\n" +
			"\t\tip6 daddr @egress_deny6 goto refuse\n" +
			"\t\taccept\n\t}\n",
		// Traffic from the TUN to the host itself.
		"type filter hook input priority filter; policy accept;\n\t\tiifname \"mrd0\" goto to_host\n",
		"\tchain to_host {\n" +
			"\t\tct state established,related accept\n" +
			"\t\tip daddr @egress_allow4 accept\n" +
			"\t\tip6 daddr @egress_allow6 accept\n" +
			"\t\tip daddr 10.200.0.1 icmp type echo-request accept\n" +
			"\t\tip6 daddr 2001:db8:200::1 icmpv6 type echo-request accept\n" +
			"\t\tgoto refuse\n\t}\n",
		"\tchain refuse {\n\t\tmeta l4proto tcp reject with tcp reset\n\t\tdrop\n\t}\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, got)
		}
	}
	for _, bad := range []string{"169.254.169.254", "fd00:ec2::254", "192.168.10.128"} {
		if strings.Contains(got, bad) {
			t.Errorf("ruleset has %s, which a wider element covers (nft rejects overlapping intervals):\n%s", bad, got)
		}
	}

	// No exceptions: the allow sets are declared, empty.
	got = Ruleset("mrd0", Config{Addresses: cfg.Addresses})
	if !strings.Contains(got, "set egress_allow4 {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t}") ||
		!strings.Contains(got, "set egress_allow6 {\n\t\ttype ipv6_addr\n\t\tflags interval\n\t}") {
		t.Errorf("without EgressAllow the allow sets should be empty:\n%s", got)
	}
}

func TestDeniedPrefixesDisjoint(t *testing.T) {
	ps := DeniedPrefixes()
	for i, p := range ps {
		if p != p.Masked() {
			t.Errorf("%v is not masked", p)
		}
		for j, q := range ps {
			if i != j && q.Overlaps(p) {
				t.Errorf("%v overlaps %v", p, q)
			}
		}
	}
}

func TestEgressAllowValidation(t *testing.T) {
	cfg := Config{
		Addresses:   []netip.Prefix{netip.MustParsePrefix("10.200.0.1/16")},
		EgressAllow: []netip.Prefix{{}},
	}
	if _, err := cfg.withDefaults(); err == nil || !strings.Contains(err.Error(), "EgressAllow") {
		t.Errorf("invalid EgressAllow prefix: err = %v", err)
	}
	cfg.EgressAllow = []netip.Prefix{netip.MustParsePrefix("::ffff:0:0/80")} // wider than the mapped range
	if _, err := cfg.withDefaults(); err == nil {
		t.Error("IPv4-mapped prefix shorter than /96 accepted")
	}
}

func attributedConfig() Config {
	return Config{
		Addresses: []netip.Prefix{
			netip.MustParsePrefix("10.200.0.1/16"),
			netip.MustParsePrefix("2001:db8:200::1/64"),
		},
		ExitIPv4:   netip.MustParseAddr("203.0.113.1"),
		ExitIPv6:   netip.MustParseAddr("2001:db8:2::1"),
		PortBlocks: portblock.Layout{First: 1024, Last: 2047, Size: 256},
	}
}

func TestRulesetAttribution(t *testing.T) {
	cfg := attributedConfig()
	got := Ruleset("mrd0", cfg)
	for _, want := range []string{
		"map sess4 {\n\t\ttype ipv4_addr : verdict\n\t}",
		"set live6 {\n\t\ttype ipv6_addr . mark\n\t}",
		"chain blk0_4 {\n\t\tct mark set 1\n\t\tmeta l4proto { tcp, udp } snat ip to 203.0.113.1:1024-1279\n\t\tsnat ip to 203.0.113.1\n\t}",
		"chain blk3_6 {\n\t\tct mark set 4\n\t\tmeta l4proto { tcp, udp } snat ip6 to [2001:db8:2::1]:1792-2047\n\t\tsnat ip6 to 2001:db8:2::1\n\t}",
		// Sessions first, then everything else outside the blocks.
		"\t\tip saddr 10.200.0.0/16 oifname != \"mrd0\" ip saddr vmap @sess4\n" +
			"\t\tip saddr 10.200.0.0/16 oifname != \"mrd0\" meta l4proto { tcp, udp } snat ip to 203.0.113.1:2048-65535\n" +
			"\t\tip saddr 10.200.0.0/16 oifname != \"mrd0\" snat ip to 203.0.113.1\n",
		"ip6 saddr 2001:db8:200::/64 oifname != \"mrd0\" meta l4proto { tcp, udp } snat ip6 to [2001:db8:2::1]:2048-65535",
		// Connections outliving their session's block are cut both ways.
		"type filter hook forward priority filter; policy accept;\n" +
			"\t\tiifname \"mrd0\" ct mark != 0 ip saddr . ct mark != @live4 drop\n" +
			"\t\toifname \"mrd0\" ct mark != 0 ip daddr . ct mark != @live4 drop\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, got)
		}
	}
	if n := strings.Count(got, "chain blk"); n != 8 {
		t.Errorf("%d block chains, want 4 per family", n)
	}

	// Without an IPv6 exit address, IPv6 sessions cannot be attributed:
	// no map, and the rest masquerades outside the blocks.
	cfg.ExitIPv6 = netip.Addr{}
	got = Ruleset("mrd0", cfg)
	if strings.Contains(got, "sess6") || strings.Contains(got, "_6 {") {
		t.Errorf("IPv6 attribution without an IPv6 exit address:\n%s", got)
	}
	if !strings.Contains(got, "ip6 saddr 2001:db8:200::/64 oifname != \"mrd0\" meta l4proto { tcp, udp } masquerade to :2048-65535\n") {
		t.Errorf("IPv6 traffic not kept outside the blocks:\n%s", got)
	}
	if _, err := attributionScript(cfg, []Attribution{{Tunnel: netip.MustParseAddr("2001:db8:200::5"), Block: cfg.PortBlocks.Block(0)}}, nil); err == nil {
		t.Error("attributed an IPv6 session without an IPv6 exit address")
	}
}

func TestAttributionScript(t *testing.T) {
	cfg := attributedConfig()
	add := []Attribution{{Tunnel: netip.MustParseAddr("10.200.0.5"), Block: cfg.PortBlocks.Block(2)}}
	remove := []Attribution{{Tunnel: netip.MustParseAddr("2001:db8:200::7"), Block: cfg.PortBlocks.Block(1)}}
	got, err := attributionScript(cfg, add, remove)
	if err != nil {
		t.Fatal(err)
	}
	want := "delete element inet meridian sess6 { 2001:db8:200::7 }\n" +
		"delete element inet meridian live6 { 2001:db8:200::7 . 2 }\n" +
		"add element inet meridian sess4 { 10.200.0.5 : goto blk2_4 }\n" +
		"add element inet meridian live4 { 10.200.0.5 . 3 }\n"
	if got != want {
		t.Errorf("script:\n%s\nwant:\n%s", got, want)
	}
	if _, err := attributionScript(cfg, []Attribution{{Tunnel: netip.MustParseAddr("10.200.0.5"), Block: portblock.Block{Index: 4}}}, nil); err == nil {
		t.Error("attributed a block the layout does not have")
	}
	if _, err := attributionScript(Config{}, add, nil); err == nil {
		t.Error("attributed without port blocks")
	}
}

func TestPortBlocksValidation(t *testing.T) {
	cfg := attributedConfig()
	cfg.PortBlocks = portblock.Layout{First: 1024, Last: 65535, Size: 256}
	if _, err := cfg.withDefaults(); err == nil || !strings.Contains(err.Error(), "no ports") {
		t.Errorf("blocks covering every port: err = %v", err)
	}
	cfg.PortBlocks = portblock.Layout{First: 2048, Last: 65535, Size: 256}
	if lo, hi, ok := cfg.freePorts(); !ok || lo != 1024 || hi != 2047 {
		t.Errorf("free ports below the blocks: %d-%d %v", lo, hi, ok)
	}
	cfg.PortBlocks = portblock.Layout{First: 1024, Last: 1000, Size: 256}
	if _, err := cfg.withDefaults(); err == nil {
		t.Error("invalid port blocks accepted")
	}
}

// TestAttributionLoads feeds the ruleset and attribution updates to the
// real nft, in a namespace of its own: nft accepts what Ruleset and
// Attribute write (the traffic itself is tested end to end in e2e).
func TestAttributionLoads(t *testing.T) {
	netns.Require(t, "nft")
	ns := netns.New(t, "nft")
	cfg := attributedConfig()
	nft := func(script string) error {
		cmd := ns.Command("nft", "-f", "-")
		cmd.Stdin = strings.NewReader(script)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	if err := nft(Ruleset("mrd0", cfg)); err != nil {
		t.Fatalf("ruleset: %v", err)
	}
	a4 := Attribution{Tunnel: netip.MustParseAddr("10.200.0.5"), Block: cfg.PortBlocks.Block(1)}
	a6 := Attribution{Tunnel: netip.MustParseAddr("2001:db8:200::5"), Block: cfg.PortBlocks.Block(3)}
	for _, step := range []struct{ add, remove []Attribution }{
		{add: []Attribution{a4, a6}},
		{remove: []Attribution{a4}},
		{add: []Attribution{a4}, remove: []Attribution{a6}},
	} {
		script, err := attributionScript(cfg, step.add, step.remove)
		if err != nil {
			t.Fatal(err)
		}
		if err := nft(script); err != nil {
			t.Fatalf("%q: %v", script, err)
		}
	}
	out := ns.Run(t, "nft", "list", "table", "inet", TableName)
	for _, want := range []string{"10.200.0.5 : goto blk1_4", "10.200.0.5 . 0x00000002"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "2001:db8:200::5") {
		t.Errorf("removed IPv6 session still mapped:\n%s", out)
	}
}
