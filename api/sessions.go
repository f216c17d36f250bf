package api

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/meridian-vpn/meridian/internal/recordseal"
	"github.com/meridian-vpn/meridian/wg"
)

// SessionRecord is the attribution record of one session of a device on a
// gateway whose duties require it (Peer.Record): who (the device's key and
// tunnel addresses), from where (the endpoint it connected from), and where
// its traffic left (the exit addresses and the block of source ports it held
// on them, RFC 7422), from Start until End. The gateway that sends it is the
// gateway of the session.
//
// A session opens at the first handshake of a peer (or a new endpoint) and
// closes when no handshake has happened for WireGuard's reject-after time
// (180 s) or the peer is removed. A record is sent when the session opens
// (End zero) and again when it closes; the two share the ID.
type SessionRecord struct {
	ID         string         `json:"id"` // 32 lower-case hex digits, random, made by the gateway
	PublicKey  wg.Key         `json:"public_key"`
	TunnelIPv4 netip.Addr     `json:"tunnel_ipv4,omitzero"`
	TunnelIPv6 netip.Addr     `json:"tunnel_ipv6,omitzero"`
	Endpoint   netip.AddrPort `json:"endpoint"`
	// SealedEndpoint is Endpoint sealed on the gateway to the control
	// server's RecordSealKey (internal/recordseal): a gateway that has the
	// key sends this and no Endpoint, so that its disk, where records wait
	// for delivery, holds nothing readable. The control server opens it on
	// arrival; it is never stored.
	SealedEndpoint string     `json:"sealed_endpoint,omitempty"`
	ExitIPv4       netip.Addr `json:"exit_ipv4,omitzero"`
	ExitIPv6       netip.Addr `json:"exit_ipv6,omitzero"`
	PortLo         uint16     `json:"port_lo"`
	PortHi         uint16     `json:"port_hi"`
	Start          time.Time  `json:"start"`
	End            time.Time  `json:"end,omitzero"`
	// Clock is the gateway's clock sync state when the record was made: at
	// Start in the opening record, at End in the closing one. Nil when the
	// gateway runs no time monitor.
	Clock *ClockSync `json:"clock,omitempty"`
}

// RecordSealKey is the control server's X25519 public key that gateways
// seal session records' endpoints to (SessionRecord.SealedEndpoint). It
// comes with netmaps of gateways that owe records.
type RecordSealKey struct {
	Scheme string `json:"scheme"` // RecordSealScheme; a gateway does not seal to a scheme it does not know
	Key    []byte `json:"key"`    // 32 bytes
}

// RecordSealScheme is the one sealing scheme: ephemeral X25519 per
// gateway run, HKDF-SHA256, XChaCha20-Poly1305 (internal/recordseal).
const RecordSealScheme = recordseal.Scheme

// Validate checks a record's shape. Its errors name fields, never values:
// the values are personal data.
func (r SessionRecord) Validate() error {
	switch {
	case !validSessionID(r.ID):
		return errors.New("id must be 32 lower-case hex digits")
	case r.PublicKey.IsZero():
		return errors.New("public_key is missing")
	case !r.TunnelIPv4.IsValid() && !r.TunnelIPv6.IsValid():
		return errors.New("a tunnel address is required")
	case r.TunnelIPv4.IsValid() && !r.TunnelIPv4.Is4(), r.TunnelIPv6.IsValid() && (!r.TunnelIPv6.Is6() || r.TunnelIPv6.Is4In6()):
		return errors.New("tunnel addresses are of the wrong family")
	case !r.Endpoint.IsValid() || r.Endpoint.Port() == 0:
		return errors.New("endpoint must be an address and port")
	case !r.ExitIPv4.IsValid() && !r.ExitIPv6.IsValid():
		return errors.New("an exit address is required")
	case r.ExitIPv4.IsValid() && !r.ExitIPv4.Is4(), r.ExitIPv6.IsValid() && (!r.ExitIPv6.Is6() || r.ExitIPv6.Is4In6()):
		return errors.New("exit addresses are of the wrong family")
	case r.PortLo == 0 || r.PortHi < r.PortLo:
		return errors.New("port_lo and port_hi must be a range of ports")
	case r.Start.IsZero():
		return errors.New("start is missing")
	case !r.End.IsZero() && r.End.Before(r.Start):
		return errors.New("end is before start")
	}
	return nil
}

func validSessionID(id string) bool {
	if len(id) != 32 {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Bounds of one POST /gateway/sessions: records, and bytes of the body.
// Large batches are what make ingest fast: the control server's work per
// batch (a transaction, a few statements) is spread over many records.
const (
	MaxSessionBatch      = 1000
	MaxSessionBatchBytes = 1 << 20
)

// SessionBatch is the body of POST /gateway/sessions. Records are applied in
// order; sending a record again changes nothing (an open record after the
// closed one does not reopen it), so a gateway may resend a batch it is not
// sure arrived.
type SessionBatch struct {
	Records []SessionRecord `json:"records"`
}

// SessionBatchResult answers POST /gateway/sessions.
type SessionBatchResult struct {
	Stored int `json:"stored"` // records stored or already stored
	// Ignored counts records that no duty requires now (the gateway's
	// place, the jurisdiction or the device's tenant changed): they are
	// not kept.
	Ignored int `json:"ignored"`
	// IgnoredIDs are the ids of the ignored records, so that the gateway
	// sets them aside (SetAsideNoDuty) rather than drop them unaccounted.
	IgnoredIDs []string `json:"ignored_ids,omitempty"`
}

// PostSessions sends a batch of session records from a gateway.
func (c *Client) PostSessions(ctx context.Context, b SessionBatch) (SessionBatchResult, error) {
	var res SessionBatchResult
	return res, c.Do(ctx, "POST", "/gateway/sessions", b, &res)
}

// LookupSession is a session in a lawful lookup's answer.
type LookupSession struct {
	SessionRecord
	Gateway  string `json:"gateway"`
	DeviceID int64  `json:"device_id,omitempty"`
	User     string `json:"user,omitempty"`
	// EndClock is the gateway's clock sync state when it saw the session
	// end (Clock is the state at its start).
	EndClock *ClockSync `json:"end_clock,omitempty"`
	// EndSource says who says the session ended at End: EndReported, the
	// gateway; EndInferred, the control server, as the last time it heard
	// from the gateway, which then went silent (the session may have gone
	// on; the block was not given to anyone else before End). Empty while
	// the session is open.
	EndSource string `json:"end_source,omitempty"`
}

// Values of LookupSession.EndSource.
const (
	EndReported = "reported"
	EndInferred = "inferred-from-last-report"
)

// LookupResult answers GET /compliance/lookup.
type LookupResult struct {
	Case        string                      `json:"case"`
	Query       string                      `json:"query"`
	Sessions    []LookupSession             `json:"sessions"`
	Subscribers map[string]SubscriberRecord `json:"subscribers"`
}
