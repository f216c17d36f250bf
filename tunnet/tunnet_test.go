package tunnet

import (
	"net/netip"
	"os"
	"strings"
	"testing"
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
		`iifname "mrd0" oifname != "mrd0" accept`,
		`oifname "mrd0" ct state established,related accept`,
		`oifname "mrd0" drop`,
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

func TestOpenWithoutPrivilege(t *testing.T) {
	if hasNetAdmin() {
		t.Skip("has CAP_NET_ADMIN; this checks the error for callers without it")
	}
	_, err := Open(Config{Addresses: []netip.Prefix{netip.MustParsePrefix("10.200.0.1/16")}})
	if err == nil || !strings.Contains(err.Error(), "CAP_NET_ADMIN") || !strings.Contains(err.Error(), "userspace") {
		t.Fatalf("Open without CAP_NET_ADMIN: %v", err)
	}
	if os.Geteuid() == 0 {
		t.Log("root without CAP_NET_ADMIN")
	}
}
