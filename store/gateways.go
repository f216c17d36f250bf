package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/wg"
)

// AddJoinToken stores a join token's hash.
func (db *DB) AddJoinToken(ctx context.Context, id string, hash []byte, reusable bool, expires time.Time) error {
	_, err := db.ExecContext(ctx, `INSERT INTO join_tokens (id, hash, reusable, expires_at, created_at) VALUES (?, ?, ?, ?, ?)`,
		id, hash, reusable, expires.Unix(), db.now().Unix())
	return err
}

// JoinTokens lists join tokens, newest first.
func (db *DB) JoinTokens(ctx context.Context) ([]api.JoinToken, error) {
	rows, err := db.QueryContext(ctx, `SELECT id, reusable, expires_at, used_at, revoked FROM join_tokens ORDER BY created_at DESC, id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []api.JoinToken{}
	for rows.Next() {
		var t api.JoinToken
		var exp int64
		var used sql.NullInt64
		if err := rows.Scan(&t.ID, &t.Reusable, &exp, &used, &t.Revoked); err != nil {
			return nil, err
		}
		t.ExpiresAt = time.Unix(exp, 0).UTC()
		if used.Valid {
			t.UsedAt = time.Unix(used.Int64, 0).UTC()
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// RevokeJoinToken revokes a join token.
func (db *DB) RevokeJoinToken(ctx context.Context, id string) error {
	res, err := db.ExecContext(ctx, `UPDATE join_tokens SET revoked = 1 WHERE id = ?`, id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// TokenError says why a join token was refused.
type TokenError struct{ Reason string }

func (e *TokenError) Error() string { return "join token refused: " + e.Reason }

// NewGateway is a gateway joining with a token.
type NewGateway struct {
	TokenID   string
	TokenHash []byte
	Name      string
	PublicKey wg.Key
	Endpoint  string
	Mode      api.GatewayMode
	CredHash  []byte
}

// JoinGateway checks and consumes the join token and registers the gateway,
// in one transaction: a refused join leaves nothing behind.
func (db *DB) JoinGateway(ctx context.Context, g NewGateway, checkHash func(stored []byte) bool) error {
	now := db.now()
	return db.write(ctx, func(tx *sql.Tx) error {
		var hash []byte
		var reusable, revoked bool
		var exp int64
		var used sql.NullInt64
		err := tx.QueryRowContext(ctx, `SELECT hash, reusable, expires_at, used_at, revoked FROM join_tokens WHERE id = ?`, g.TokenID).Scan(&hash, &reusable, &exp, &used, &revoked)
		switch {
		case errors.Is(err, sql.ErrNoRows) || (err == nil && !checkHash(hash)):
			return &TokenError{Reason: "unknown token"}
		case err != nil:
			return err
		case revoked:
			return &TokenError{Reason: "token was revoked"}
		case now.Unix() >= exp:
			return &TokenError{Reason: fmt.Sprintf("token expired at %s", time.Unix(exp, 0).UTC().Format(time.RFC3339))}
		case !reusable && used.Valid:
			return &TokenError{Reason: "single-use token was already used"}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE join_tokens SET used_at = ? WHERE id = ?`, now.Unix(), g.TokenID); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO gateways (name, public_key, endpoint, mode, cred_hash, joined_at) VALUES (?, ?, ?, ?, ?, ?)`,
			g.Name, g.PublicKey.String(), g.Endpoint, string(g.Mode), g.CredHash, now.Unix())
		if isUnique(err) {
			return &ConflictError{What: fmt.Sprintf("a gateway named %q or with this public key has already joined", g.Name)}
		}
		return err
	})
}

// GatewayByCredential finds the gateway owning a credential hash.
func (db *DB) GatewayByCredential(ctx context.Context, hash []byte) (api.Gateway, error) {
	g, err := scanGateway(db.QueryRowContext(ctx, `SELECT `+gatewayCols+` FROM gateways WHERE cred_hash = ?`, hash))
	if errors.Is(err, sql.ErrNoRows) {
		return g, ErrNotFound
	}
	return g, err
}

// Gateways lists all gateways by name.
func (db *DB) Gateways(ctx context.Context) ([]api.Gateway, error) {
	rows, err := db.QueryContext(ctx, `SELECT `+gatewayCols+` FROM gateways ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []api.Gateway{}
	for rows.Next() {
		g, err := scanGateway(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, rows.Err()
}

const gatewayCols = `name, public_key, endpoint, mode, joined_at`

func scanGateway(row interface{ Scan(...any) error }) (api.Gateway, error) {
	var g api.Gateway
	var pub, mode string
	var joined int64
	if err := row.Scan(&g.Name, &pub, &g.Endpoint, &mode, &joined); err != nil {
		return g, err
	}
	var err error
	if g.PublicKey, err = wg.ParseKey(pub); err != nil {
		return g, err
	}
	g.Mode = api.GatewayMode(mode)
	g.JoinedAt = time.Unix(joined, 0).UTC()
	return g, nil
}

func addPeerChange(ctx context.Context, tx *sql.Tx, pub wg.Key, v4, v6 netip.Addr, removed bool) error {
	var a4, a6 any
	if v4.IsValid() {
		a4 = v4.String()
	}
	if v6.IsValid() {
		a6 = v6.String()
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO peer_changes (public_key, ipv4, ipv6, removed) VALUES (?, ?, ?, ?)`, pub.String(), a4, a6, removed)
	return err
}

// NetmapVersion returns the newest peer change version (0 if none).
func (db *DB) NetmapVersion(ctx context.Context) (int64, error) {
	var v sql.NullInt64
	err := db.QueryRowContext(ctx, `SELECT max(version) FROM peer_changes`).Scan(&v)
	return v.Int64, err
}

// FullNetmap returns every active device as a peer, with the current version.
func (db *DB) FullNetmap(ctx context.Context) (api.Netmap, error) {
	nm := api.Netmap{Full: true, Peers: []api.Peer{}}
	err := db.write(ctx, func(tx *sql.Tx) error {
		var v sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT max(version) FROM peer_changes`).Scan(&v); err != nil {
			return err
		}
		nm.Version = v.Int64
		rows, err := tx.QueryContext(ctx, `SELECT public_key, ipv4, ipv6 FROM devices WHERE status = 'active' ORDER BY id`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var pub, v4, v6 string
			if err := rows.Scan(&pub, &v4, &v6); err != nil {
				return err
			}
			p, err := peer(pub, v4, v6)
			if err != nil {
				return err
			}
			nm.Peers = append(nm.Peers, p)
		}
		return rows.Err()
	})
	return nm, err
}

// NetmapSince returns the changes after version since, collapsed so that
// each key appears once with its latest state. ok is false when those
// changes are no longer kept, and the caller must send a full netmap.
func (db *DB) NetmapSince(ctx context.Context, since int64) (nm api.Netmap, ok bool, err error) {
	var oldest sql.NullInt64
	if err := db.QueryRowContext(ctx, `SELECT min(version) FROM peer_changes`).Scan(&oldest); err != nil {
		return nm, false, err
	}
	if oldest.Valid && since < oldest.Int64-1 {
		return nm, false, nil
	}
	rows, err := db.QueryContext(ctx, `SELECT version, public_key, coalesce(ipv4, ''), coalesce(ipv6, ''), removed FROM peer_changes WHERE version > ? ORDER BY version`, since)
	if err != nil {
		return nm, false, err
	}
	defer rows.Close()
	nm.Version = since
	index := map[string]int{}
	nm.Peers = []api.Peer{}
	for rows.Next() {
		var pub, v4, v6 string
		var removed bool
		if err := rows.Scan(&nm.Version, &pub, &v4, &v6, &removed); err != nil {
			return nm, false, err
		}
		var p api.Peer
		if removed {
			k, err := wg.ParseKey(pub)
			if err != nil {
				return nm, false, err
			}
			p = api.Peer{PublicKey: k, Remove: true}
		} else if p, err = peer(pub, v4, v6); err != nil {
			return nm, false, err
		}
		if i, seen := index[pub]; seen {
			nm.Peers[i] = p
		} else {
			index[pub] = len(nm.Peers)
			nm.Peers = append(nm.Peers, p)
		}
	}
	return nm, true, rows.Err()
}

// CompactPeerChanges drops change-log entries older than the newest keep
// ones; gateways further behind get a full netmap.
func (db *DB) CompactPeerChanges(ctx context.Context, keep int64) error {
	_, err := db.ExecContext(ctx, `DELETE FROM peer_changes WHERE version <= (SELECT max(version) FROM peer_changes) - ?`, keep)
	return err
}

func peer(pub, v4, v6 string) (api.Peer, error) {
	k, err := wg.ParseKey(pub)
	if err != nil {
		return api.Peer{}, err
	}
	p := api.Peer{PublicKey: k}
	for _, s := range []string{v4, v6} {
		if s == "" {
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return api.Peer{}, err
		}
		p.AllowedIPs = append(p.AllowedIPs, netip.PrefixFrom(a, a.BitLen()))
	}
	return p, nil
}
