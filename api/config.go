package api

import (
	"net/netip"

	"github.com/meridian-vpn/meridian/wg"
)

// Config is the standard WireGuard (wg-quick) config of a new device: its
// addresses, the gateway as its one peer, and a full tunnel.
func (r CreateDeviceResponse) Config(priv wg.Key) *wg.Config {
	return deviceConfig(r.Device, r.Tunnel, priv)
}

// Config is the device's WireGuard config for the location it was asked
// for, with the device's own private key.
func (r DeviceConfigResponse) Config(priv wg.Key) *wg.Config {
	return deviceConfig(r.Device, r.Tunnel, priv)
}

func deviceConfig(d Device, t TunnelInfo, priv wg.Key) *wg.Config {
	return &wg.Config{
		PrivateKey: priv,
		Addresses:  []netip.Prefix{netip.PrefixFrom(d.IPv4, 32), netip.PrefixFrom(d.IPv6, 128)},
		DNS:        t.DNS,
		MTU:        t.MTU,
		Peers: []wg.PeerConfig{{
			PublicKey:           t.PublicKey,
			Endpoint:            t.Endpoint,
			AllowedIPs:          []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")},
			PersistentKeepalive: t.PersistentKeepalive,
		}},
	}
}
