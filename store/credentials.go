package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/meridian-vpn/meridian/api"
)

// AdminToken is a stored admin credential (hash only), as authentication
// needs it.
type AdminToken struct {
	ID       string
	Name     string
	Role     string
	LastUsed time.Time // zero: never
}

// NewAdminToken is an admin token to store: its hash, never the token.
type NewAdminToken struct {
	ID, Name, Role string
	Hash           []byte
	Expires        time.Time // zero: never
}

// AddAdminToken stores the hash of a new admin token, audited under actor.
func (db *DB) AddAdminToken(ctx context.Context, actor string, t NewAdminToken) error {
	now := db.now()
	var exp any
	detail := map[string]any{"id": t.ID, "name": t.Name, "role": t.Role}
	if !t.Expires.IsZero() {
		exp = t.Expires.Unix()
		detail["expires_at"] = t.Expires.UTC().Truncate(time.Second)
	}
	return db.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO admin_tokens (id, hash, name, role, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)`,
			t.ID, t.Hash, t.Name, t.Role, now.Unix(), exp)
		if err != nil {
			return err
		}
		return audit(ctx, tx, now, actor, "admin-token-create", detail)
	})
}

// AdminTokenByHash finds a live admin token: neither revoked nor expired.
func (db *DB) AdminTokenByHash(ctx context.Context, hash []byte) (AdminToken, error) {
	var t AdminToken
	var used sql.NullInt64
	err := db.QueryRowContext(ctx, `SELECT id, name, role, last_used_at FROM admin_tokens
		WHERE hash = ? AND revoked = 0 AND (expires_at IS NULL OR expires_at > ?)`, hash, db.now().Unix()).Scan(&t.ID, &t.Name, &t.Role, &used)
	if errors.Is(err, sql.ErrNoRows) {
		return t, ErrNotFound
	}
	if used.Valid {
		t.LastUsed = time.Unix(used.Int64, 0)
	}
	return t, err
}

// TouchAdminToken records that a token was used at.
func (db *DB) TouchAdminToken(ctx context.Context, id string, at time.Time) error {
	_, err := db.ExecContext(ctx, `UPDATE admin_tokens SET last_used_at = ? WHERE id = ?`, at.Unix(), id)
	return err
}

// AdminTokens lists every admin token, oldest first, without hashes.
func (db *DB) AdminTokens(ctx context.Context) ([]api.AdminToken, error) {
	rows, err := db.QueryContext(ctx, `SELECT id, name, role, created_at, expires_at, last_used_at, revoked, revoked_at FROM admin_tokens ORDER BY created_at, id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []api.AdminToken{}
	unix := func(v sql.NullInt64) time.Time {
		if !v.Valid {
			return time.Time{}
		}
		return time.Unix(v.Int64, 0).UTC()
	}
	for rows.Next() {
		var t api.AdminToken
		var created int64
		var exp, used, revoked sql.NullInt64
		if err := rows.Scan(&t.ID, &t.Name, &t.Role, &created, &exp, &used, &t.Revoked, &revoked); err != nil {
			return nil, err
		}
		t.CreatedAt, t.ExpiresAt, t.LastUsedAt, t.RevokedAt = time.Unix(created, 0).UTC(), unix(exp), unix(used), unix(revoked)
		out = append(out, t)
	}
	return out, rows.Err()
}

// RevokeAdminToken revokes an admin token at once, audited under actor. It
// refuses to revoke the last live token of role admin, which would leave
// nobody able to manage the server through the API.
func (db *DB) RevokeAdminToken(ctx context.Context, actor, id string) error {
	now := db.now()
	return db.write(ctx, func(tx *sql.Tx) error {
		var name, role string
		var revoked bool
		err := tx.QueryRowContext(ctx, `SELECT name, role, revoked FROM admin_tokens WHERE id = ?`, id).Scan(&name, &role, &revoked)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if revoked {
			return &ConflictError{What: fmt.Sprintf("admin token %s was already revoked", id)}
		}
		if role == api.RoleAdmin {
			var others int
			err := tx.QueryRowContext(ctx, `SELECT count(*) FROM admin_tokens WHERE role = ? AND id != ? AND revoked = 0 AND (expires_at IS NULL OR expires_at > ?)`,
				api.RoleAdmin, id, now.Unix()).Scan(&others)
			if err != nil {
				return err
			}
			if others == 0 {
				return &ConflictError{What: fmt.Sprintf("admin token %s is the last live token of role admin: create another first ('meridian token create --role admin'); revoking it would leave nobody able to manage the server through the API", id)}
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE admin_tokens SET revoked = 1, revoked_at = ? WHERE id = ?`, now.Unix(), id); err != nil {
			return err
		}
		return audit(ctx, tx, now, actor, "admin-token-revoke", map[string]string{"id": id, "name": name, "role": role})
	})
}

// GatewayRemoval says what removing a gateway changed.
type GatewayRemoval struct {
	Locations []string // the locations it served, by code
	Emptied   []string // those of them left with no gateway
}

// RemoveGateway deletes a gateway, audited under actor: its credential,
// its place and its membership of locations go with it, in one
// transaction. Its session records stay (they are the ledger's). A
// location it served alone is kept, with no gateway, for the operator to
// give another or remove: removing a gateway whose credential leaked must
// never wait on that.
func (db *DB) RemoveGateway(ctx context.Context, actor, name string) (GatewayRemoval, error) {
	now := db.now()
	var out GatewayRemoval
	err := db.write(ctx, func(tx *sql.Tx) error {
		var pub string
		err := tx.QueryRowContext(ctx, `SELECT public_key FROM gateways WHERE name = ?`, name).Scan(&pub)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `SELECT location, (SELECT count(*) FROM location_gateways o WHERE o.location = m.location AND o.gateway != m.gateway)
			FROM location_gateways m WHERE gateway = ? ORDER BY location`, name)
		if err != nil {
			return err
		}
		out = GatewayRemoval{Locations: []string{}, Emptied: []string{}}
		for rows.Next() {
			var code string
			var others int
			if err := rows.Scan(&code, &others); err != nil {
				rows.Close()
				return err
			}
			out.Locations = append(out.Locations, code)
			if others == 0 {
				out.Emptied = append(out.Emptied, code)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, q := range []string{`DELETE FROM location_gateways WHERE gateway = ?`, `DELETE FROM node_places WHERE node = ?`, `DELETE FROM gateways WHERE name = ?`} {
			if _, err := tx.ExecContext(ctx, q, name); err != nil {
				return err
			}
		}
		return audit(ctx, tx, now, actor, "gateway-remove", map[string]any{"name": name, "public_key": pub, "locations": out.Locations, "emptied_locations": out.Emptied})
	})
	return out, err
}

// RotateGatewayCredential replaces a gateway's credential hash, if it is
// still old (ErrNotFound if not), audited as the gateway's own action.
func (db *DB) RotateGatewayCredential(ctx context.Context, name string, old, hash []byte) error {
	now := db.now()
	return db.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE gateways SET cred_hash = ? WHERE name = ? AND cred_hash = ?`, hash, name, old)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return audit(ctx, tx, now, "gateway:"+name, "gateway-credential-rotate", map[string]string{"name": name})
	})
}
