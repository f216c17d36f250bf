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

// Session is the index row of an attribution record. The record itself is
// in the ledger (entry Seq): Endpoint is not stored here and is left zero.
type Session struct {
	api.SessionRecord
	Gateway       string
	DeviceID      int64  // 0: the device was gone when the record arrived
	User          string // "" likewise
	Seq           int64  // ledger seq of the "session" entry; 0 for rows stored before records were sealed
	EndpointIndex string // blind index of the endpoint address
}

// SessionOwner is the device a session record's key belongs to.
type SessionOwner struct {
	Known    bool // false: no device has the key (any more)
	DeviceID int64
	User     string
	Kind     api.TenantKind
}

// SessionHook puts session records in the ledger, inside SaveSessions'
// transaction, and computes the blind index of endpoint addresses. All
// three functions are required.
type SessionHook struct {
	// Index returns the blind index of an endpoint address.
	Index func(ip netip.Addr) string
	// Stored records a session when it is first stored and returns the
	// ledger seq of that entry.
	Stored func(tx *sql.Tx, r api.SessionRecord) (seq int64, err error)
	// Ended records that a stored open session ended and returns the
	// ledger seq of that entry.
	Ended func(tx *sql.Tx, id string, end time.Time) (seq int64, err error)
}

// SaveSessions stores session records sent by gateway, in one transaction.
// keep is asked, for each record, with the device its key belongs to, and
// a record it refuses is not stored (the duty may no longer apply). Saving
// is idempotent by record ID: a record seen again changes nothing, except
// that the end of a stored open session is set once; a record whose ID
// another gateway stored changes nothing either. stored counts the records
// that keep accepted. The table keeps only the index: the record itself
// goes through hook into the ledger, in the same transaction.
func (db *DB) SaveSessions(ctx context.Context, gateway string, recs []api.SessionRecord, keep func(SessionOwner) bool, hook SessionHook) (stored int, err error) {
	if hook.Index == nil || hook.Stored == nil || hook.Ended == nil {
		return 0, errors.New("store: SaveSessions needs a complete SessionHook")
	}
	err = db.Tx(ctx, func(tx *sql.Tx) error {
		stored = 0
		owners := map[wg.Key]SessionOwner{}
		// Prepared once per batch: preparing each statement per record
		// cost more than the work itself.
		find, err := tx.PrepareContext(ctx, `SELECT gateway, end_at FROM sessions WHERE id = ?`)
		if err != nil {
			return err
		}
		defer find.Close()
		insert, err := tx.PrepareContext(ctx, `INSERT INTO sessions (id, gateway, public_key, device_id, user_name, tunnel_ipv4, tunnel_ipv6,
				endpoint_index, exit_ipv4, exit_ipv6, port_lo, port_hi, start_at, end_at, seq)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
		if err != nil {
			return err
		}
		defer insert.Close()
		owner, err := tx.PrepareContext(ctx, `SELECT d.id, u.name, u.kind FROM devices d JOIN users u ON u.id = d.user_id WHERE d.public_key = ?`)
		if err != nil {
			return err
		}
		defer owner.Close()
		for _, r := range recs {
			o, seen := owners[r.PublicKey]
			if !seen {
				var err error
				if o, err = sessionOwner(ctx, owner, r.PublicKey); err != nil {
					return err
				}
				owners[r.PublicKey] = o
			}
			if !keep(o) {
				continue
			}
			stored++
			var gw string
			var end sql.NullInt64
			err := find.QueryRowContext(ctx, r.ID).Scan(&gw, &end)
			switch {
			case errors.Is(err, sql.ErrNoRows):
				seq, err := hook.Stored(tx, r)
				if err != nil {
					return fmt.Errorf("sealing a session record: %w", err)
				}
				var device, user any
				if o.Known {
					device, user = o.DeviceID, o.User
				}
				_, err = insert.ExecContext(ctx,
					r.ID, gateway, r.PublicKey.String(), device, user, addrOrNull(r.TunnelIPv4), addrOrNull(r.TunnelIPv6),
					hook.Index(r.Endpoint.Addr().Unmap()), addrOrNull(r.ExitIPv4), addrOrNull(r.ExitIPv6),
					int(r.PortLo), int(r.PortHi), r.Start.UnixNano(), timeOrNull(r.End), seq)
				if err != nil {
					return fmt.Errorf("storing a session record: %w", err)
				}
			case err != nil:
				return err
			case gw == gateway && !end.Valid && !r.End.IsZero():
				if r.End.UnixNano() < r.Start.UnixNano() {
					return fmt.Errorf("session record %s ends before it starts", r.ID)
				}
				seq, err := hook.Ended(tx, r.ID, r.End)
				if err != nil {
					return fmt.Errorf("sealing the end of a session: %w", err)
				}
				if _, err := tx.ExecContext(ctx, `UPDATE sessions SET end_at = ? WHERE id = ?`, r.End.UnixNano(), r.ID); err != nil {
					return fmt.Errorf("storing the end of a session: %w", err)
				}
				if _, err := tx.ExecContext(ctx, `INSERT INTO session_ends (session_id, seq) VALUES (?, ?)`, r.ID, seq); err != nil {
					return err
				}
			}
		}
		return nil
	})
	return stored, err
}

// SessionSeqsTx returns the ledger seqs ("session" and "session-end"
// entries) of the sessions of the devices of account userID, in tx.
func SessionSeqsTx(ctx context.Context, tx *sql.Tx, userID int64) ([]int64, error) {
	rows, err := tx.QueryContext(ctx, `SELECT s.seq FROM sessions s WHERE s.seq IS NOT NULL
			AND s.device_id IN (SELECT id FROM devices WHERE user_id = ?)
		UNION SELECT e.seq FROM session_ends e JOIN sessions s ON s.id = e.session_id
			WHERE s.device_id IN (SELECT id FROM devices WHERE user_id = ?)
		ORDER BY 1`, userID, userID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var seq int64
		if err := rows.Scan(&seq); err != nil {
			return nil, err
		}
		out = append(out, seq)
	}
	return out, rows.Err()
}

func sessionOwner(ctx context.Context, owner *sql.Stmt, key wg.Key) (SessionOwner, error) {
	o := SessionOwner{Known: true}
	var kind string
	err := owner.QueryRowContext(ctx, key.String()).Scan(&o.DeviceID, &o.User, &kind)
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
	// Index seeks only, whatever the number of sessions: the block that
	// holds the port is the one with the greatest port_lo at or below it,
	// and the session that held it at time at is among the last few of
	// that block to start before at (a block has one session at a time).
	x := exit.Unmap().String()
	return db.sessions(ctx, `rowid IN (SELECT rowid FROM sessions WHERE `+col+` = ? AND port_lo = (SELECT max(port_lo) FROM sessions WHERE `+col+` = ? AND port_lo <= ?)
		AND start_at <= ? ORDER BY start_at DESC LIMIT 8) AND port_hi >= ? AND (end_at IS NULL OR end_at > ?)`,
		x, x, int(port), at.UnixNano(), int(port), at.UnixNano())
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
// whose blind index (SessionHook.Index) is index, from any port, at some
// time between from and to.
func (db *DB) SessionsByEndpoint(ctx context.Context, index string, from, to time.Time) ([]Session, error) {
	return db.sessions(ctx, `endpoint_index = ? AND `+heldDuring, index, to.UnixNano(), from.UnixNano())
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
	coalesce(endpoint_index, ''), coalesce(seq, 0), coalesce(exit_ipv4, ''), coalesce(exit_ipv6, ''), port_lo, port_hi, start_at, end_at`

func (db *DB) sessions(ctx context.Context, where string, args ...any) ([]Session, error) {
	rows, err := db.QueryContext(ctx, `SELECT `+sessionCols+` FROM sessions WHERE `+where+` ORDER BY start_at, id`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Session
	for rows.Next() {
		var s Session
		var pub, t4, t6, x4, x6 string
		var lo, hi int
		var start int64
		var end sql.NullInt64
		if err := rows.Scan(&s.ID, &s.Gateway, &pub, &s.DeviceID, &s.User, &t4, &t6, &s.EndpointIndex, &s.Seq, &x4, &x6, &lo, &hi, &start, &end); err != nil {
			return nil, err
		}
		if s.PublicKey, err = wg.ParseKey(pub); err != nil {
			return nil, fmt.Errorf("session %s: %w", s.ID, err)
		}
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
