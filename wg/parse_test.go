package wg

import (
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

// Fixed keys so that rendered text is stable. They are test values only.
const (
	testPriv  = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
	testPub1  = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
	testPub2  = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0="
	testPSK   = "FpCyhws9cxwWoV4xELtfJvjJN+zQVRPISllRWgeopVE="
	otherPriv = "4Nqa3nH4Ac3DIrbyx8XAH1UzpIRMQq6Cn0VZ8hpGTEQ="
)

func mustKey(t testing.TB, s string) Key {
	t.Helper()
	k, err := ParseKey(s)
	if err != nil {
		t.Fatalf("ParseKey(%q): %v", s, err)
	}
	return k
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

func sampleConfig(t testing.TB) *Config {
	return &Config{
		PrivateKey: mustKey(t, testPriv),
		Addresses:  []netip.Prefix{pfx("10.8.0.2/32"), pfx("fd00:8::2/128")},
		DNS:        []netip.Addr{addr("10.8.0.1"), addr("fd00:8::1")},
		DNSSearch:  []string{"corp.example.com"},
		MTU:        1420,
		Peers: []PeerConfig{
			{
				PublicKey:           mustKey(t, testPub1),
				PresharedKey:        mustKey(t, testPSK),
				Endpoint:            "vpn.example.com:51820",
				AllowedIPs:          []netip.Prefix{pfx("0.0.0.0/0"), pfx("::/0")},
				PersistentKeepalive: 25,
			},
			{
				PublicKey:  mustKey(t, testPub2),
				Endpoint:   "[2001:db8::7]:443",
				AllowedIPs: []netip.Prefix{pfx("10.9.0.0/16"), pfx("fd00:9::/64")},
			},
		},
	}
}

func TestRenderGolden(t *testing.T) {
	c := sampleConfig(t)
	c.ListenPort = 51821
	// Given IPv6 first: Render writes IPv4 first.
	c.Addresses = []netip.Prefix{pfx("fd00:8::2/128"), pfx("10.8.0.2/32")}
	got := c.Render()
	golden := filepath.Join("testdata", "render.golden")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("Render() =\n%s\nwant\n%s", got, want)
	}
}

func TestRenderParseRoundTrip(t *testing.T) {
	for name, c := range map[string]*Config{
		"full": sampleConfig(t),
		"minimal": {
			PrivateKey: mustKey(t, testPriv),
		},
		"server": {
			PrivateKey: mustKey(t, testPriv),
			Addresses:  []netip.Prefix{pfx("10.8.0.1/24"), pfx("fd00:8::1/64")},
			ListenPort: 51820,
			Peers: []PeerConfig{
				{PublicKey: mustKey(t, testPub1), AllowedIPs: []netip.Prefix{pfx("10.8.0.2/32"), pfx("fd00:8::2/128")}},
				{PublicKey: mustKey(t, testPub2)},
			},
		},
		"v6 only, search domains only": {
			PrivateKey: mustKey(t, testPriv),
			Addresses:  []netip.Prefix{pfx("fd00::5/128")},
			DNSSearch:  []string{"a.example", "b.example."},
			Peers: []PeerConfig{{
				PublicKey:           mustKey(t, testPub1),
				Endpoint:            "192.0.2.1:51820",
				AllowedIPs:          []netip.Prefix{pfx("::/0")},
				PersistentKeepalive: 65535,
			}},
		},
	} {
		t.Run(name, func(t *testing.T) {
			if err := c.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			text := c.Render()
			got, err := ParseConfig(text)
			if err != nil {
				t.Fatalf("ParseConfig(Render()): %v\n%s", err, text)
			}
			if !reflect.DeepEqual(got, c) {
				t.Errorf("round trip changed the config:\n got %+v\nwant %+v\ntext:\n%s", got, c, text)
			}
		})
	}
}

func TestParseConfigLenient(t *testing.T) {
	in := "\ufeff# exported by hand\r\n" +
		"; INI-style comment\n" +
		"\n" +
		"[interface]\r\n" +
		"  privatekey=" + testPriv + "   # trailing comment\n" +
		"ADDRESS = fd00:8::2 , 10.8.0.2\n" +
		"Address = 10.8.0.3/24\n" +
		"DNS = 10.8.0.1,corp.example.com\n" +
		"dns=fd00:8::1 home.arpa\n" +
		"Table = off\n" +
		"PostUp = iptables -A FORWARD -i %i -j ACCEPT; echo done\n" +
		"PostUp = echo again\n" +
		"PreUp = true\n" +
		"PreDown = true\n" +
		"PostDown = true\n" +
		"SaveConfig = false\n" +
		"FwMark = 0x1234\n" +
		"MTU = 1280\n" +
		"ListenPort=0\n" +
		"\n" +
		"[ Peer ]\n" +
		"PublicKey = " + testPub1 + "\n" +
		"AllowedIPs = 0.0.0.0/0\n" +
		"AllowedIPs = ::/0,\n" +
		"PersistentKeepalive = off\n" +
		"[PEER]\n" +
		"PublicKey = " + testPub2 + "\n" +
		"PresharedKey = AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n" +
		"Endpoint = [fe80::1%eth0]:51820\n" +
		"AllowedIPs = 10.0.0.1\n" +
		"PersistentKeepalive = 0025"
	got, err := ParseConfig([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		PrivateKey: mustKey(t, testPriv),
		Addresses:  []netip.Prefix{pfx("10.8.0.2/32"), pfx("10.8.0.3/24"), pfx("fd00:8::2/128")},
		DNS:        []netip.Addr{addr("10.8.0.1"), addr("fd00:8::1")},
		DNSSearch:  []string{"corp.example.com", "home.arpa"},
		MTU:        1280,
		Peers: []PeerConfig{
			{PublicKey: mustKey(t, testPub1), AllowedIPs: []netip.Prefix{pfx("0.0.0.0/0"), pfx("::/0")}},
			{
				PublicKey:           mustKey(t, testPub2),
				Endpoint:            "[fe80::1%eth0]:51820",
				AllowedIPs:          []netip.Prefix{pfx("10.0.0.1/32")},
				PersistentKeepalive: 25,
			},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

const goodIface = "[Interface]\nPrivateKey = " + testPriv + "\n"

func TestParseConfigErrors(t *testing.T) {
	peer := "[Peer]\nPublicKey = " + testPub1 + "\n"
	for _, tc := range []struct {
		name, in, want string
	}{
		{"empty", "", "no [Interface] section"},
		{"comments only", "# nothing\n; here\n", "no [Interface] section"},
		{"too large", goodIface + "# " + strings.Repeat("x", MaxConfigSize) + "\n", "the limit is 1048576 bytes (1 MiB)"},
		{"bad allowed ip", goodIface + "Address = 10.0.0.2/32\nDNS = 10.0.0.1\n" + peer + "AllowedIPs = 10.0.0.300/32\n",
			`line 7: AllowedIPs: "10.0.0.300/32" is not an IP prefix`},
		{"bad allowed ip in list", goodIface + peer + "AllowedIPs = 10.0.0.0/8, 1.2.3.4/33\n", `line 5: AllowedIPs: "1.2.3.4/33" is not an IP prefix`},
		{"bad address", goodIface + "Address = 10.0.0.256\n", `line 3: Address: "10.0.0.256" is not an IP address`},
		{"address with zone", goodIface + "Address = fe80::1%eth0\n", `line 3: Address: "fe80::1%eth0": an address with a zone is not allowed here`},
		{"bad dns address", goodIface + "DNS = 10.0.0.300\n", `line 3: DNS: "10.0.0.300" is not an IP address`},
		{"bad dns v6", goodIface + "DNS = fd00::g\n", `line 3: DNS: "fd00::g" is not an IP address`},
		{"bad search domain", goodIface + "DNS = exa$mple.com\n", `line 3: DNS: "exa$mple.com" is neither an IP address nor a search domain`},
		{"mtu not a number", goodIface + "MTU = big\n", `line 3: MTU: "big" is not a whole number from 68 to 65535`},
		{"mtu too small", goodIface + "MTU = 67\n", `line 3: MTU: "67" is not a whole number from 68 to 65535`},
		{"mtu negative", goodIface + "MTU = -1420\n", `line 3: MTU: "-1420" is not a whole number`},
		{"listen port", goodIface + "ListenPort = 65536\n", `line 3: ListenPort: "65536" is not a whole number from 0 to 65535`},
		{"empty listen port", goodIface + "ListenPort =\n", `line 3: ListenPort: no value`},
		{"keepalive", goodIface + peer + "PersistentKeepalive = 1e3\n", `line 5: PersistentKeepalive: "1e3" is not a whole number from 0 to 65535`},
		{"no private key", "[Interface]\nAddress = 10.0.0.2/32\n" + peer, "line 1: [Interface] has no PrivateKey"},
		{"no public key", goodIface + "\n[Peer]\nEndpoint = 192.0.2.1:51820\n", "line 4: [Peer] has no PublicKey"},
		{"no public key, last", goodIface + peer + "[Peer]\nAllowedIPs = ::/0", "line 5: [Peer] has no PublicKey"},
		{"duplicate peer", goodIface + peer + "\n" + peer, "line 6: [Peer] has the same PublicKey as the [Peer] on line 3"},
		{"bad private key", "[Interface]\nPrivateKey = abc\n", "line 2: PrivateKey: not a valid WireGuard key"},
		{"zero private key", "[Interface]\nPrivateKey = AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n", "line 2: PrivateKey: key is all zeroes"},
		{"short public key", goodIface + "[Peer]\nPublicKey = " + testPub1[:40] + "\n", "line 4: PublicKey: not a valid WireGuard key"},
		{"bad psk", goodIface + peer + "PresharedKey = " + testPSK[1:] + "\n", "line 5: PresharedKey: not a valid WireGuard key"},
		{"private key twice", goodIface + "PrivateKey = " + otherPriv + "\n", "line 3: PrivateKey is set twice in this section (first on line 2)"},
		{"endpoint twice", goodIface + peer + "Endpoint = a.example:1\nEndpoint = b.example:1\n", "line 6: Endpoint is set twice in this section (first on line 5)"},
		{"endpoint without port", goodIface + peer + "Endpoint = vpn.example.com\n", `line 5: Endpoint: "vpn.example.com" is not host:port`},
		{"endpoint v6 no brackets", goodIface + peer + "Endpoint = 2001:db8::1:51820\n", `line 5: Endpoint: "2001:db8::1:51820" is not host:port`},
		{"endpoint port 0", goodIface + peer + "Endpoint = 192.0.2.1:0\n", `line 5: Endpoint: "192.0.2.1:0": port "0" is not a whole number from 1 to 65535`},
		{"endpoint named port", goodIface + peer + "Endpoint = 192.0.2.1:wireguard\n", `port "wireguard" is not a whole number`},
		{"endpoint bad ipv4", goodIface + peer + "Endpoint = 192.0.2.300:51820\n", `line 5: Endpoint: "192.0.2.300:51820": "192.0.2.300" is not an IP address`},
		{"endpoint bad host", goodIface + peer + "Endpoint = bad_host!:51820\n", `"bad_host!" is neither an IP address nor a host name`},
		{"endpoint empty", goodIface + peer + "Endpoint =\n", `line 5: Endpoint: no value`},
		{"unknown key", goodIface + "Foo = bar\n", `line 3: unknown key "Foo" in [Interface]`},
		{"unknown peer key", goodIface + peer + "Bar = 1\n", `line 5: unknown key "Bar" in [Peer]`},
		{"android-only key", goodIface + "ExcludedApplications = com.example\n", `line 3: unknown key "ExcludedApplications" in [Interface]`},
		{"peer key in interface", goodIface + "Endpoint = 192.0.2.1:51820\n", "line 3: Endpoint belongs in a [Peer] section, not in [Interface]"},
		{"interface key in peer", goodIface + peer + "DNS = 10.0.0.1\n", "line 5: DNS belongs in the [Interface] section, not in [Peer]"},
		{"wg-quick key in peer", goodIface + peer + "PostUp = true\n", "line 5: PostUp belongs in the [Interface] section, not in [Peer]"},
		{"unknown section", goodIface + "[Wireguard]\n", "line 3: unknown section [Wireguard]: want [Interface] or [Peer]"},
		{"malformed section", goodIface + "[Peer\n", "line 3: malformed section header"},
		{"key before section", "PrivateKey = " + testPriv + "\n", "line 1: PrivateKey comes before any section; start with [Interface]"},
		{"peer but no interface", peer, "no [Interface] section"},
		{"two interfaces", goodIface + goodIface, "line 3: second [Interface] section (the first is on line 1)"},
		{"no equals sign", goodIface + "Address 10.0.0.2\n", "line 3: expected a [Section] header or a Key = Value line"},
		{"empty key", goodIface + " = 10.0.0.2\n", "line 3: unknown line with an empty key in [Interface]"},
		// A secret in the wrong place must not be echoed.
		{"key pasted alone", goodIface + otherPriv + "\n", "line 3: unknown line (not a known Key = Value) in [Interface]"},
		{"key as address", goodIface + "Address = " + otherPriv + "\n", "line 3: Address: (value not shown: it looks like a key) is not an IP address"},
		{"key as endpoint", goodIface + peer + "Endpoint = " + testPriv + ":1\n", "line 5: Endpoint: (value not shown: it looks like a key)"},
		{"key as dns", goodIface + "DNS = " + otherPriv + "\n", "line 3: DNS: (value not shown: it looks like a key)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tc.in))
			if err == nil {
				t.Fatalf("ParseConfig succeeded: %+v", c)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q\ndoes not contain %q", err, tc.want)
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Errorf("error is %T, want *ParseError", err)
			}
			for _, secret := range []string{testPriv, otherPriv, testPSK, otherPriv[:43], testPriv[:43]} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q contains a key", err)
				}
			}
		})
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"no private key", func(c *Config) { c.PrivateKey = Key{} }, "PrivateKey is not set"},
		{"invalid address", func(c *Config) { c.Addresses = append(c.Addresses, netip.Prefix{}) }, "interface: Address: invalid prefix"},
		{"zoned dns", func(c *Config) { c.DNS = []netip.Addr{addr("fe80::1%eth0")} }, `"fe80::1%eth0" is not an IP address without a zone`},
		{"bad search", func(c *Config) { c.DNSSearch = []string{"a b"} }, `DNS: "a b" is not a search domain`},
		{"numeric search", func(c *Config) { c.DNSSearch = []string{"1.2.3.4"} }, `is not a search domain`},
		{"mtu", func(c *Config) { c.MTU = 10 }, "MTU 10 is outside 68-65535"},
		{"port", func(c *Config) { c.ListenPort = -1 }, "ListenPort -1 is outside"},
		{"peer key", func(c *Config) { c.Peers[1].PublicKey = Key{} }, "peer 2: PublicKey is not set"},
		{"dup peer", func(c *Config) { c.Peers[1].PublicKey = c.Peers[0].PublicKey }, "peer 2: same PublicKey as peer 1"},
		{"endpoint injection", func(c *Config) { c.Peers[0].Endpoint = "a.example:1\n[Peer]" }, "peer 1: Endpoint:"},
		{"allowed ip", func(c *Config) { c.Peers[0].AllowedIPs = []netip.Prefix{{}} }, "peer 1: AllowedIPs: invalid prefix"},
		{"keepalive", func(c *Config) { c.Peers[0].PersistentKeepalive = 70000 }, "peer 1: PersistentKeepalive 70000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := sampleConfig(t)
			tc.mutate(c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestRenderCannotInjectLines(t *testing.T) {
	c := sampleConfig(t)
	c.Peers[0].Endpoint = "evil.example:1\n[Peer]\nPublicKey = " + testPub2 + " # x"
	c.DNSSearch = []string{"a.example\nPostUp = rm -rf /"}
	out := string(c.Render())
	if n := strings.Count(out, "\n[Peer]\n"); n != 2 {
		t.Errorf("rendered %d [Peer] sections, want 2:\n%s", n, out)
	}
	if strings.Contains(out, "\nPostUp") {
		t.Errorf("a DNSSearch value added a line:\n%s", out)
	}
	if _, err := ParseConfig([]byte(out)); err == nil {
		// The mangled endpoint is no valid host:port, so parsing must fail
		// rather than silently produce a different peer list.
		t.Errorf("ParseConfig accepted a config with a mangled endpoint:\n%s", out)
	}
}

func TestParseConfigAnyOrderAndShowconf(t *testing.T) {
	// `wg showconf` output (FwMark, keys in its order), with the peer first.
	in := "[Peer]\nPublicKey = " + testPub1 + "\nAllowedIPs = 10.9.0.0/16, fd00:9::/64\nEndpoint = [::1]:51999\n\n" +
		"[Interface]\nListenPort = 51821\nFwMark = 0xca6c\nPrivateKey = " + testPriv + "\n"
	c, err := ParseConfig([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		PrivateKey: mustKey(t, testPriv),
		ListenPort: 51821,
		Peers: []PeerConfig{{
			PublicKey:  mustKey(t, testPub1),
			Endpoint:   "[::1]:51999",
			AllowedIPs: []netip.Prefix{pfx("10.9.0.0/16"), pfx("fd00:9::/64")},
		}},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got  %+v\nwant %+v", c, want)
	}
}
