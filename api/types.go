// Package api defines every shape that crosses a process boundary in Meridian:
// the JSON bodies of the control server's HTTP API, used by the control server,
// the gateways and the CLI alike, and the typed client for that API.
package api

import (
	"net/netip"
	"time"

	"github.com/meridian-vpn/meridian/wg"
)

// Prefix is the API path prefix.
const Prefix = "/api/v1"

// Error is the body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
}

// TenantKind says whether an account is a consumer of a VPN service or the
// staff of an organisation running its own VPN (enterprise).
type TenantKind string

const (
	Consumer   TenantKind = "consumer"
	Enterprise TenantKind = "enterprise"
)

// User is a subscriber account.
type User struct {
	Name      string     `json:"name"`
	Kind      TenantKind `json:"kind"`
	CreatedAt time.Time  `json:"created_at"`
	Devices   int        `json:"devices"`
}

// CreateUserRequest is the body of POST /users.
type CreateUserRequest struct {
	Name string     `json:"name"`
	Kind TenantKind `json:"kind,omitempty"` // default consumer
}

// DeviceStatus is active or revoked.
type DeviceStatus string

const (
	DeviceActive  DeviceStatus = "active"
	DeviceRevoked DeviceStatus = "revoked"
)

// Device is one WireGuard key of a user, with its tunnel addresses.
type Device struct {
	ID        int64        `json:"id"`
	User      string       `json:"user"`
	Name      string       `json:"name"`
	PublicKey wg.Key       `json:"public_key"`
	IPv4      netip.Addr   `json:"ipv4"`
	IPv6      netip.Addr   `json:"ipv6"`
	Status    DeviceStatus `json:"status"`
	CreatedAt time.Time    `json:"created_at"`
}

// CreateDeviceRequest is the body of POST /devices. PublicKey is the key
// generated on the client (preferred); when it is absent the server generates
// a key pair and returns the private key once, without storing it.
type CreateDeviceRequest struct {
	User      string  `json:"user"`
	Name      string  `json:"name"`
	PublicKey *wg.Key `json:"public_key,omitempty"`
}

// CreateDeviceResponse answers POST /devices.
type CreateDeviceResponse struct {
	Device Device `json:"device"`
	// PrivateKey is set only when the server generated the key. It is shown
	// once and never stored.
	PrivateKey *wg.Key `json:"private_key,omitempty"`
	// Tunnel describes the gateway side, enough to render a client config.
	Tunnel TunnelInfo `json:"tunnel"`
}

// TunnelInfo is what a client config needs from the server side.
type TunnelInfo struct {
	Gateway             string       `json:"gateway,omitempty"` // empty while no gateway has joined
	PublicKey           wg.Key       `json:"public_key,omitzero"`
	Endpoint            string       `json:"endpoint,omitempty"`
	DNS                 []netip.Addr `json:"dns,omitempty"`
	PersistentKeepalive int          `json:"persistent_keepalive"`
	MTU                 int          `json:"mtu,omitempty"`
}

// JoinTokenRequest is the body of POST /gateway-tokens.
type JoinTokenRequest struct {
	Reusable bool          `json:"reusable"`
	TTL      time.Duration `json:"ttl"` // nanoseconds; 0 means the default (24h)
}

// JoinToken describes a join token. Token is set only when it is created.
type JoinToken struct {
	ID        string    `json:"id"`
	Token     string    `json:"token,omitempty"`
	Reusable  bool      `json:"reusable"`
	ExpiresAt time.Time `json:"expires_at"`
	UsedAt    time.Time `json:"used_at,omitzero"`
	Revoked   bool      `json:"revoked"`
}

// GatewayMode is how a gateway forwards tunnel traffic.
type GatewayMode string

const (
	Userspace GatewayMode = "userspace"
	TUN       GatewayMode = "tun"
)

// JoinRequest is the body of POST /gateways/join, authenticated by the join token.
type JoinRequest struct {
	Name      string      `json:"name"`
	PublicKey wg.Key      `json:"public_key"`
	Endpoint  string      `json:"endpoint"` // host:port clients dial
	Mode      GatewayMode `json:"mode"`
}

// JoinResponse gives the gateway its own credential (shown once) and its
// tunnel addressing.
type JoinResponse struct {
	Name       string         `json:"name"`
	Credential string         `json:"credential"`
	Addresses  []netip.Prefix `json:"addresses"` // the gateway's own tunnel addresses with the pool prefix length
}

// Peer is one device as a gateway installs it.
type Peer struct {
	PublicKey  wg.Key         `json:"public_key"`
	AllowedIPs []netip.Prefix `json:"allowed_ips,omitempty"`
	Remove     bool           `json:"remove,omitempty"`
}

// Netmap is what a gateway must accept. A full netmap lists every peer;
// a delta (Full false) lists changes since the version the gateway asked from.
type Netmap struct {
	Version   int64          `json:"version"`
	Full      bool           `json:"full"`
	Peers     []Peer         `json:"peers"`
	Addresses []netip.Prefix `json:"addresses,omitempty"` // the gateway's tunnel addresses (full only)
}

// GatewayReport is what a gateway tells the control server about itself:
// health and aggregate load only, nothing per device.
type GatewayReport struct {
	ActivePeers int    `json:"active_peers"` // peers with a handshake in the last 180 s
	Peers       int    `json:"peers"`        // peers installed
	RxBytes     uint64 `json:"rx_bytes"`
	TxBytes     uint64 `json:"tx_bytes"`
	Version     int64  `json:"netmap_version"`
}

// Gateway is a gateway as the admin sees it.
type Gateway struct {
	Name      string        `json:"name"`
	PublicKey wg.Key        `json:"public_key"`
	Endpoint  string        `json:"endpoint"`
	Mode      GatewayMode   `json:"mode"`
	JoinedAt  time.Time     `json:"joined_at"`
	LastSeen  time.Time     `json:"last_seen,omitzero"`
	Healthy   bool          `json:"healthy"`
	Load      GatewayReport `json:"load"`
}

// Health answers GET /health.
type Health struct {
	Status  string `json:"status"`
	Version string `json:"version"`
}
