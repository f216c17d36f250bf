package wg

import (
	"bytes"
	"fmt"
	"net/netip"
	"strconv"
)

// Render writes c as a wg-quick file, the form the official WireGuard apps
// import and that wg-quick(8) and, after `wg-quick strip`, wg(8) setconf
// read:
//
//	[Interface]
//	PrivateKey = ...
//	Address = 10.8.0.2/32, fd00:8::2/128
//	DNS = 10.8.0.1, example.internal
//	MTU = 1420
//	ListenPort = 51820
//
//	[Peer]
//	PublicKey = ...
//	PresharedKey = ...
//	Endpoint = vpn.example.com:51820
//	AllowedIPs = 0.0.0.0/0, ::/0
//	PersistentKeepalive = 25
//
// Addresses are written IPv4 first, then IPv6. Empty and zero fields are left
// out. Render does not check c: call Validate for that. So that no value can
// add lines or comments to the file, it drops control characters, blanks,
// '#', ',' and non-ASCII bytes from Endpoint and DNSSearch values, which a
// valid Config never has.
func (c *Config) Render() []byte {
	var b bytes.Buffer
	b.WriteString("[Interface]\n")
	writeKV(&b, "PrivateKey", c.PrivateKey.String())
	if len(c.Addresses) > 0 {
		var v4, v6 []netip.Prefix
		for _, a := range c.Addresses {
			if a.Addr().Is4() {
				v4 = append(v4, a)
			} else {
				v6 = append(v6, a)
			}
		}
		writeList(&b, "Address", append(v4, v6...))
	}
	if len(c.DNS)+len(c.DNSSearch) > 0 {
		var dns []string
		for _, a := range c.DNS {
			dns = append(dns, a.String())
		}
		for _, d := range c.DNSSearch {
			if d = sanitize(d); d != "" {
				dns = append(dns, d)
			}
		}
		writeList(&b, "DNS", dns)
	}
	if c.MTU != 0 {
		writeKV(&b, "MTU", strconv.Itoa(c.MTU))
	}
	if c.ListenPort != 0 {
		writeKV(&b, "ListenPort", strconv.Itoa(c.ListenPort))
	}
	for _, p := range c.Peers {
		b.WriteString("\n[Peer]\n")
		writeKV(&b, "PublicKey", p.PublicKey.String())
		if !p.PresharedKey.IsZero() {
			writeKV(&b, "PresharedKey", p.PresharedKey.String())
		}
		if ep := sanitize(p.Endpoint); ep != "" {
			writeKV(&b, "Endpoint", ep)
		}
		if len(p.AllowedIPs) > 0 {
			writeList(&b, "AllowedIPs", p.AllowedIPs)
		}
		if p.PersistentKeepalive != 0 {
			writeKV(&b, "PersistentKeepalive", strconv.Itoa(p.PersistentKeepalive))
		}
	}
	return b.Bytes()
}

func writeKV(b *bytes.Buffer, k, v string) {
	b.WriteString(k)
	b.WriteString(" = ")
	b.WriteString(v)
	b.WriteByte('\n')
}

func writeList[T any](b *bytes.Buffer, k string, items []T) {
	b.WriteString(k)
	b.WriteString(" = ")
	for i, it := range items {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprint(b, it)
	}
	b.WriteByte('\n')
}

// sanitize keeps only printable ASCII other than blank, '#', ',' and ';'.
func sanitize(s string) string {
	ok := true
	for i := 0; i < len(s) && ok; i++ {
		ok = safeByte(s[i])
	}
	if ok {
		return s
	}
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if safeByte(s[i]) {
			out = append(out, s[i])
		}
	}
	return string(out)
}

func safeByte(c byte) bool {
	return c > ' ' && c < 0x7f && c != '#' && c != ',' && c != ';'
}

// Validate reports the first problem that would make c an invalid
// configuration, by the rules ParseConfig applies: keys set, addresses and
// prefixes valid and without zones, DNS search domains plausible names, MTU
// 0 or MinMTU-MaxMTU, ports and keepalive 0-65535, endpoints host:port, and
// no two peers with the same public key. Its errors never contain a key.
func (c *Config) Validate() error {
	if c.PrivateKey.IsZero() {
		return fmt.Errorf("interface: PrivateKey is not set")
	}
	for _, a := range c.Addresses {
		if err := checkPrefix(a); err != nil {
			return fmt.Errorf("interface: Address: %v", err)
		}
	}
	for _, a := range c.DNS {
		if !a.IsValid() || a.Zone() != "" {
			return fmt.Errorf("interface: DNS: %s is not an IP address without a zone", show(a.String()))
		}
	}
	for _, d := range c.DNSSearch {
		if _, search, err := parseDNSItem(d); err != nil || search == "" {
			return fmt.Errorf("interface: DNS: %s is not a search domain", show(d))
		}
	}
	if c.MTU != 0 && (c.MTU < MinMTU || c.MTU > MaxMTU) {
		return fmt.Errorf("interface: MTU %d is outside %d-%d", c.MTU, MinMTU, MaxMTU)
	}
	if c.ListenPort < 0 || c.ListenPort > 65535 {
		return fmt.Errorf("interface: ListenPort %d is outside 0-65535", c.ListenPort)
	}
	seen := make(map[Key]int, len(c.Peers))
	for i, p := range c.Peers {
		n := i + 1
		if p.PublicKey.IsZero() {
			return fmt.Errorf("peer %d: PublicKey is not set", n)
		}
		if first, dup := seen[p.PublicKey]; dup {
			return fmt.Errorf("peer %d: same PublicKey as peer %d", n, first)
		}
		seen[p.PublicKey] = n
		if p.Endpoint != "" {
			if err := checkEndpoint(p.Endpoint); err != nil {
				return fmt.Errorf("peer %d: Endpoint: %v", n, err)
			}
		}
		for _, a := range p.AllowedIPs {
			if err := checkPrefix(a); err != nil {
				return fmt.Errorf("peer %d: AllowedIPs: %v", n, err)
			}
		}
		if p.PersistentKeepalive < 0 || p.PersistentKeepalive > 65535 {
			return fmt.Errorf("peer %d: PersistentKeepalive %d is outside 0-65535", n, p.PersistentKeepalive)
		}
	}
	return nil
}

func checkPrefix(p netip.Prefix) error {
	if !p.IsValid() {
		return fmt.Errorf("invalid prefix")
	}
	return nil
}
