package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/wg"
)

// Session is a stored attribution record.
type Session struct {
	api.SessionRecord
	Gateway  string
	DeviceID int64  // 0: the device was gone when the record arrived
	User     string // "" likewise
}

// SessionOwner is the device a session record's key belongs to.
type SessionOwner struct {
	Known    bool // false: no device has the key (any more)
	DeviceID int64
	User     string
	Kind     api.TenantKind
}

// SaveSessions stores session records sent by gateway, in one transaction.
// keep is asked, for each record, with the device its key belongs to, and
// a record it refuses is not stored (the duty may no longer apply). Saving
// is idempotent by record ID: a record seen again changes nothing, except
// that the end of a stored open session is set once; a record whose ID
// another gateway stored changes nothing either. stored counts the records
// that keep accepted.
func (db *DB) SaveSessions(ctx context.Context, gateway string, recs []api.SessionRecord, keep func(SessionOwner) bool) (stored int, err error) {
	err = db.Tx(ctx, func(tx *sql.Tx) error {
		stored = 0
		owners := map[wg.Key]SessionOwner{}
		for _, r := range recs {
			o, seen := owners[r.PublicKey]
			if !seen {
				var err error
				if o, err = sessionOwner(ctx, tx, r.PublicKey); err != nil {
					return err
				}
				owners[r.PublicKey] = o
			}
			if !keep(o) {
				continue
			}
			var device, user any
			if o.Known {
				device, user = o.DeviceID, o.User
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO sessions (id, gateway, public_key, device_id, user_name, tunnel_ipv4, tunnel_ipv6,
					endpoint_ip, endpoint_port, exit_ipv4, exit_ipv6, port_lo, port_hi, start_at, end_at)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
				ON CONFLICT (id) DO UPDATE SET end_at = excluded.end_at
				WHERE sessions.gateway = excluded.gateway AND sessions.end_at IS NULL AND excluded.end_at IS NOT NULL`,
				r.ID, gateway, r.PublicKey.String(), device, user, addrOrNull(r.TunnelIPv4), addrOrNull(r.TunnelIPv6),
				r.Endpoint.Addr().Unmap().String(), int(r.Endpoint.Port()), addrOrNull(r.ExitIPv4), addrOrNull(r.ExitIPv6),
				int(r.PortLo), int(r.PortHi), r.Start.UnixNano(), timeOrNull(r.End))
			if err != nil {
				return fmt.Errorf("storing a session record: %w", err)
			}
			stored++
		}
		return nil
	})
	return stored, err
}

func sessionOwner(ctx context.Context, tx *sql.Tx, key wg.Key) (SessionOwner, error) {
	o := SessionOwner{Known: true}
	var kind string
	err := tx.QueryRowContext(ctx, `SELECT d.id, u.name, u.kind FROM devices d JOIN users u ON u.id = d.user_id WHERE d.public_key = ?`,
		key.String()).Scan(&o.DeviceID, &o.User, &kind)
	if errors.Is(err, sql.ErrNoRows) {
		return SessionOwner{}, nil
	}
	o.Kind = api.TenantKind(kind)
	return o, err
}

// TenantKinds returns the tenant kind of each device key that belongs to a
// device; unknown keys are left out.
func (db *DB) TenantKinds(ctx context.Context, keys []wg.Key) (map[wg.Key]api.TenantKind, error) {
	out := make(map[wg.Key]api.TenantKind, len(keys))
	const chunk = 500 // well below SQLite's limit on query parameters
	for len(keys) > 0 {
		n := min(chunk, len(keys))
		args := make([]any, n)
		for i, k := range keys[:n] {
			args[i] = k.String()
		}
		keys = keys[n:]
		rows, err := db.QueryContext(ctx, `SELECT d.public_key, u.kind FROM devices d JOIN users u ON u.id = d.user_id
			WHERE d.public_key IN (?`+strings.Repeat(", ?", n-1)+`)`, args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var pub, kind string
			if err := rows.Scan(&pub, &kind); err != nil {
				rows.Close()
				return nil, err
			}
			k, err := wg.ParseKey(pub)
			if err != nil {
				rows.Close()
				return nil, err
			}
			out[k] = api.TenantKind(kind)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// SessionsByExit returns the sessions that held port on the exit address
// exit at time at: the session whose block holds the port. More than one
// means the records contradict each other.
func (db *DB) SessionsByExit(ctx context.Context, exit netip.Addr, port uint16, at time.Time) ([]Session, error) {
	col := "exit_ipv4"
	if exit.Unmap().Is6() {
		col = "exit_ipv6"
	}
	return db.sessions(ctx, col+` = ? AND port_lo <= ? AND port_hi >= ? AND `+heldDuring,
		exit.Unmap().String(), int(port), int(port), at.UnixNano(), at.UnixNano())
}

// SessionsByTunnelAddr returns the sessions that held the tunnel address
// addr at time at.
func (db *DB) SessionsByTunnelAddr(ctx context.Context, addr netip.Addr, at time.Time) ([]Session, error) {
	col := "tunnel_ipv4"
	if addr.Unmap().Is6() {
		col = "tunnel_ipv6"
	}
	return db.sessions(ctx, col+` = ? AND `+heldDuring, addr.Unmap().String(), at.UnixNano(), at.UnixNano())
}

// SessionsByEndpoint returns the sessions that connected from the address
// ip (any port) at some time between from and to.
func (db *DB) SessionsByEndpoint(ctx context.Context, ip netip.Addr, from, to time.Time) ([]Session, error) {
	return db.sessions(ctx, `endpoint_ip = ? AND `+heldDuring, ip.Unmap().String(), to.UnixNano(), from.UnixNano())
}

// SessionsOfUser returns the sessions of a user's devices at some time
// between from and to.
func (db *DB) SessionsOfUser(ctx context.Context, user string, from, to time.Time) ([]Session, error) {
	return db.sessions(ctx, `user_name = ? AND `+heldDuring, user, to.UnixNano(), from.UnixNano())
}

// heldDuring selects sessions that started at or before its first argument
// and had not ended by its second: for a time t, (t, t); for a window, (its
// end, its start).
const heldDuring = `start_at <= ? AND (end_at IS NULL OR end_at > ?)`

const sessionCols = `id, gateway, public_key, coalesce(device_id, 0), coalesce(user_name, ''), coalesce(tunnel_ipv4, ''), coalesce(tunnel_ipv6, ''),
	endpoint_ip, endpoint_port, coalesce(exit_ipv4, ''), coalesce(exit_ipv6, ''), port_lo, port_hi, start_at, end_at`

func (db *DB) sessions(ctx context.Context, where string, args ...any) ([]Session, error) {
	rows, err := db.QueryContext(ctx, `SELECT `+sessionCols+` FROM sessions WHERE `+where+` ORDER BY start_at, id`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Session
	for rows.Next() {
		var s Session
		var pub, t4, t6, ep, x4, x6 string
		var epPort, lo, hi int
		var start int64
		var end sql.NullInt64
		if err := rows.Scan(&s.ID, &s.Gateway, &pub, &s.DeviceID, &s.User, &t4, &t6, &ep, &epPort, &x4, &x6, &lo, &hi, &start, &end); err != nil {
			return nil, err
		}
		if s.PublicKey, err = wg.ParseKey(pub); err != nil {
			return nil, fmt.Errorf("session %s: %w", s.ID, err)
		}
		epAddr, err := netip.ParseAddr(ep)
		if err != nil {
			return nil, fmt.Errorf("session %s: endpoint address unreadable", s.ID)
		}
		s.Endpoint = netip.AddrPortFrom(epAddr, uint16(epPort))
		for _, f := range []struct {
			text string
			addr *netip.Addr
		}{{t4, &s.TunnelIPv4}, {t6, &s.TunnelIPv6}, {x4, &s.ExitIPv4}, {x6, &s.ExitIPv6}} {
			if f.text == "" {
				continue
			}
			if *f.addr, err = netip.ParseAddr(f.text); err != nil {
				return nil, fmt.Errorf("session %s: address unreadable", s.ID)
			}
		}
		s.PortLo, s.PortHi = uint16(lo), uint16(hi)
		s.Start = time.Unix(0, start).UTC()
		if end.Valid {
			s.End = time.Unix(0, end.Int64).UTC()
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

func addrOrNull(a netip.Addr) any {
	if !a.IsValid() {
		return nil
	}
	return a.Unmap().String()
}

func timeOrNull(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixNano()
}
