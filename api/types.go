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
	// Missing lists required fields that were not given, when that is
	// what is wrong.
	Missing []string `json:"missing,omitempty"`
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
	// Subscriber is required when a duty requires a subscriber record for
	// this kind of tenant (see GET /subscribers/required).
	Subscriber *SubscriberDetails `json:"subscriber,omitempty"`
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
	Location  string       `json:"location,omitempty"`
	CreatedAt time.Time    `json:"created_at"`
}

// CreateDeviceRequest is the body of POST /devices. PublicKey is the key
// generated on the client (preferred); when it is absent the server generates
// a key pair and returns the private key once, without storing it.
type CreateDeviceRequest struct {
	User      string  `json:"user"`
	Name      string  `json:"name"`
	PublicKey *wg.Key `json:"public_key,omitempty"`
	// Location is a location code, "auto" for the least-loaded healthy
	// gateway anywhere, or empty for any healthy gateway.
	Location string `json:"location,omitempty"`
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

// DeviceConfigResponse answers GET /devices/{id}/config: the server side of
// the device's config for a location (the device roams with the same key
// and addresses).
type DeviceConfigResponse struct {
	Device Device     `json:"device"`
	Tunnel TunnelInfo `json:"tunnel"`
}

// TunnelInfo is what a client config needs from the server side.
type TunnelInfo struct {
	Location            string       `json:"location,omitempty"`
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
	// Record is set when the gateway's duties require session records for
	// this device (SessionRecord); a gateway without such a duty never sees
	// it set.
	Record bool `json:"record,omitempty"`
}

// Netmap is what a gateway must accept. A full netmap lists every peer;
// a delta (Full false) lists changes since the version the gateway asked from.
type Netmap struct {
	Version   int64          `json:"version"`
	Full      bool           `json:"full"`
	Peers     []Peer         `json:"peers"`
	Addresses []netip.Prefix `json:"addresses,omitempty"` // the gateway's tunnel addresses (full only)
	// RecordSealKey is set for a gateway that owes session records (in
	// netmaps with peers): the key it seals their endpoints to.
	RecordSealKey *RecordSealKey `json:"record_seal_key,omitempty"`
}

// GatewayReport is what a gateway tells the control server about itself:
// health and aggregate load only, nothing per device.
type GatewayReport struct {
	ActivePeers int    `json:"active_peers"` // peers with a handshake in the last 180 s
	Peers       int    `json:"peers"`        // peers installed
	RxBytes     uint64 `json:"rx_bytes"`
	TxBytes     uint64 `json:"tx_bytes"`
	Version     int64  `json:"netmap_version"`
	// Time is the gateway's clock at the report; nil when it is not watched.
	Time *TimeStatus `json:"time,omitempty"`
	// Counters are running totals the control server turns into ICT log
	// events and incident candidates (ictlog.go).
	Counters *GatewayCounters `json:"counters,omitempty"`
	// Records is what the gateway holds of session records not delivered:
	// nil from gateways older than the field.
	Records *GatewayHeldRecords `json:"records,omitempty"`
}

// GatewayHeldRecords is the part of a gateway's report about the session
// records it holds: counts and ids only.
type GatewayHeldRecords struct {
	Spooled  int             `json:"spooled"`
	SetAside []SetAsideGroup `json:"set_aside,omitempty"`
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
	Place     *Place        `json:"place,omitempty"` // nil until the operator declares it
	// InService is false when the gateway's physical country is
	// virtual-only: it then carries no tunnels.
	InService          bool   `json:"in_service"`
	OutOfServiceReason string `json:"out_of_service_reason,omitempty"`
}

// Ownership says whether the operator owns or rents a machine.
type Ownership string

const (
	Owned  Ownership = "owned"
	Rented Ownership = "rented"
)

// Place is where a node physically stands and where its exit addresses
// appear to be. Countries are ISO 3166-1 alpha-2 codes.
type Place struct {
	PhysicalCountry   string       `json:"physical_country"`
	City              string       `json:"city,omitempty"`
	Provider          string       `json:"provider,omitempty"`
	Ownership         Ownership    `json:"ownership"`
	EntryEndpoints    []string     `json:"entry_endpoints,omitempty"`
	ExitAddresses     []netip.Addr `json:"exit_addresses,omitempty"`
	AdvertisedCountry string       `json:"advertised_country"` // where the exit addresses geolocate
	Capacity          int          `json:"capacity"`           // active peers at 100 % load
	UpdatedAt         time.Time    `json:"updated_at,omitzero"`
}

// ControlNode is the node name of the control server in places and duties.
const ControlNode = "control"

// Location is what subscribers choose: an advertised country (and city),
// served by one or more gateways.
type Location struct {
	Code     string   `json:"code"`
	Country  string   `json:"country"`
	City     string   `json:"city,omitempty"`
	Gateways []string `json:"gateways"`
}

// Jurisdiction is the operator's setting for one country.
type Jurisdiction struct {
	Country string `json:"country"`
	Profile string `json:"profile"`
	Stance  string `json:"stance"` // comply or virtual-only
	// Triggers are the readings under which the profile applies:
	// placement, establishment, market (jurisdiction.Trigger). Empty in a
	// request keeps the current ones; stored ones are never empty.
	Triggers  []string  `json:"triggers,omitempty"`
	UpdatedAt time.Time `json:"updated_at,omitzero"`
	// OutOfService names the gateways a virtual-only stance takes out of
	// service (in answers to a change only).
	OutOfService []string `json:"out_of_service,omitempty"`
	// Confirm, in a request, applies a change even though it leaves
	// accounts without a subscriber record their locations now need
	// (their devices lose those locations until the records exist).
	Confirm bool `json:"confirm,omitempty"`
	// Preview, in answers to a change, is what it changed.
	Preview *DutyPreview `json:"preview,omitempty"`
}

// Operator is what the operator declares about itself: the countries it
// is established in (for the establishment trigger).
type Operator struct {
	Established []string `json:"established"`
	// Confirm: as in Jurisdiction.
	Confirm bool         `json:"confirm,omitempty"`
	Preview *DutyPreview `json:"preview,omitempty"`
}

// DutyChange is one duty a gateway gains or loses for sessions on a
// location ("" for its node duties and sessions on no location).
type DutyChange struct {
	Gateway  string     `json:"gateway"`
	Location string     `json:"location,omitempty"`
	Tenant   TenantKind `json:"tenant_kind,omitempty"`
	Kind     string     `json:"kind"`
	Change   string     `json:"change"` // gain or lose
	Why      string     `json:"why"`
}

// DutyPreview answers POST /jurisdictions/{country}/preview and
// POST /operator/preview: what a change of duties would change.
type DutyPreview struct {
	Changes []DutyChange `json:"changes"`
	// NewlyNeedRecords is how many accounts without a subscriber record
	// would need one for a location their devices use; Stopped lists
	// those locations (their service stops there until records exist).
	NewlyNeedRecords int      `json:"accounts_newly_needing_records"`
	Stopped          []string `json:"stopped_locations"`
	// Recorded lists where sessions would newly be recorded:
	// "gateway sg1, location IN, consumer".
	Recorded []string `json:"newly_recorded"`
	Text     string   `json:"text"`
}

// Duty is one duty that applies, and why.
type Duty struct {
	Kind   string `json:"kind"`
	Why    string `json:"why"`    // e.g. "IN / cert-in-2022 / direction (v)"
	Detail string `json:"detail"` // for people
}

// Explanation answers GET /jurisdictions/explain.
type Explanation struct {
	Node            string     `json:"node"`
	PhysicalCountry string     `json:"physical_country,omitempty"`
	Profile         string     `json:"profile,omitempty"`
	Stance          string     `json:"stance,omitempty"`
	TenantKind      TenantKind `json:"tenant_kind,omitempty"`
	Duties          []Duty     `json:"duties"`
	Text            string     `json:"text"`
}

// ServerList is what clients poll to choose where to connect.
type ServerList struct {
	Locations []ServerLocation `json:"locations"`
}

// ServerLocation is one location in the server list. A location is
// virtual when a serving gateway stands in another country than the one
// advertised; Label says so in words.
type ServerLocation struct {
	Code        string `json:"code"`
	Country     string `json:"country"`
	CountryName string `json:"country_name"`
	City        string `json:"city,omitempty"`
	Label       string `json:"label"` // e.g. "India — virtual, served from Singapore"
	Virtual     bool   `json:"virtual"`
	// SubscriberRecords: a consumer using this location needs a subscriber
	// record (a duty some reading brings to it applies).
	SubscriberRecords bool     `json:"subscriber_records,omitempty"`
	HostCountries     []string `json:"host_countries"`
	Load              int      `json:"load"`  // 0-100, over healthy servers
	Score             int      `json:"score"` // 0-100, higher is better; 0 when no server is healthy
	Features          []string `json:"features"`
	Servers           []Server `json:"servers"`
}

// Server is one gateway serving a location.
type Server struct {
	Name        string `json:"name"`
	Endpoint    string `json:"endpoint"`
	PublicKey   wg.Key `json:"public_key"`
	HostCountry string `json:"host_country"`
	Load        int    `json:"load"`
	Healthy     bool   `json:"healthy"`
}

// Loads is the light "loads only" server list: location and server loads.
type Loads struct {
	Locations map[string]int `json:"locations"`
	Servers   map[string]int `json:"servers"`
}

// Health answers GET /health.
type Health struct {
	Status  string `json:"status"`
	Version string `json:"version"`
}
