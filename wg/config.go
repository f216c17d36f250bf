package wg

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// Config is a wg-quick configuration: one interface and its peers.
type Config struct {
	PrivateKey Key
	Addresses  []netip.Prefix
	DNS        []netip.Addr
	DNSSearch  []string // DNS search domains; written on the DNS line after the addresses
	MTU        int
	ListenPort int
	Peers      []PeerConfig
}

// PeerConfig is one [Peer] section.
type PeerConfig struct {
	PublicKey           Key
	PresharedKey        Key
	Endpoint            string // host:port; host may be a name
	AllowedIPs          []netip.Prefix
	PersistentKeepalive int // seconds, 0 = off
}

// UAPI renders the configuration in the WireGuard UAPI "set" form for
// device.IpcSet, resolving endpoint host names. It replaces all peers.
func (c *Config) UAPI() (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "private_key=%s\n", c.PrivateKey.Hex())
	if c.ListenPort != 0 {
		fmt.Fprintf(&b, "listen_port=%d\n", c.ListenPort)
	}
	peers, err := c.PeersUAPI()
	if err != nil {
		return "", err
	}
	return b.String() + peers, nil
}

// PeersUAPI renders only the peers in the UAPI "set" form, replacing all
// peers of a running device and leaving its key and port alone.
func (c *Config) PeersUAPI() (string, error) {
	var b strings.Builder
	b.WriteString("replace_peers=true\n")
	for _, p := range c.Peers {
		fmt.Fprintf(&b, "public_key=%s\n", p.PublicKey.Hex())
		if !p.PresharedKey.IsZero() {
			fmt.Fprintf(&b, "preshared_key=%s\n", p.PresharedKey.Hex())
		}
		if p.Endpoint != "" {
			ap, err := resolveEndpoint(p.Endpoint)
			if err != nil {
				return "", err
			}
			fmt.Fprintf(&b, "endpoint=%s\n", ap)
		}
		if p.PersistentKeepalive != 0 {
			fmt.Fprintf(&b, "persistent_keepalive_interval=%d\n", p.PersistentKeepalive)
		}
		b.WriteString("replace_allowed_ips=true\n")
		for _, a := range p.AllowedIPs {
			fmt.Fprintf(&b, "allowed_ip=%s\n", a)
		}
	}
	return b.String(), nil
}

func resolveEndpoint(ep string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(ep); err == nil {
		return ap, nil
	}
	host, port, err := net.SplitHostPort(ep)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("endpoint %q: %v", ep, err)
	}
	ua, err := net.ResolveUDPAddr("udp", net.JoinHostPort(host, port))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("endpoint %q: %v", ep, err)
	}
	return ua.AddrPort(), nil
}
