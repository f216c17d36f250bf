package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/wg"
)

// Audit records an admin action in the same transaction as the change.
func audit(ctx context.Context, tx *sql.Tx, at time.Time, actor, action string, detail any) error {
	b, err := json.Marshal(detail)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO audit_log (at, actor, action, detail) VALUES (?, ?, ?, ?)`, at.Unix(), actor, action, string(b))
	return err
}

// AuditEntry is one recorded admin action.
type AuditEntry struct {
	At     time.Time       `json:"at"`
	Actor  string          `json:"actor"`
	Action string          `json:"action"`
	Detail json.RawMessage `json:"detail"`
}

// AuditLog returns the recorded admin actions, oldest first.
func (db *DB) AuditLog(ctx context.Context) ([]AuditEntry, error) {
	rows, err := db.QueryContext(ctx, `SELECT at, actor, action, detail FROM audit_log ORDER BY id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []AuditEntry
	for rows.Next() {
		var e AuditEntry
		var at int64
		var detail string
		if err := rows.Scan(&at, &e.Actor, &e.Action, &detail); err != nil {
			return nil, err
		}
		e.At, e.Detail = time.Unix(at, 0).UTC(), json.RawMessage(detail)
		out = append(out, e)
	}
	return out, rows.Err()
}

// GatewayExists reports whether a gateway of that name has joined.
func (db *DB) GatewayExists(ctx context.Context, name string) (bool, error) {
	var n int
	err := db.QueryRowContext(ctx, `SELECT count(*) FROM gateways WHERE name = ?`, name).Scan(&n)
	return n > 0, err
}

// SetPlace declares where a node stands, recording the change (with the
// previous place) in the audit log.
func (db *DB) SetPlace(ctx context.Context, actor, node string, p api.Place) (api.Place, error) {
	now := db.now().UTC().Truncate(time.Second)
	p.UpdatedAt = now
	endpoints, _ := json.Marshal(nonNil(p.EntryEndpoints))
	exits, _ := json.Marshal(p.ExitAddresses)
	if p.ExitAddresses == nil {
		exits = []byte("[]")
	}
	err := db.write(ctx, func(tx *sql.Tx) error {
		old, err := place(ctx, tx, node)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO node_places (node, physical_country, city, provider, ownership, entry_endpoints, exit_addresses, advertised_country, capacity, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT(node) DO UPDATE SET physical_country = excluded.physical_country, city = excluded.city, provider = excluded.provider,
				ownership = excluded.ownership, entry_endpoints = excluded.entry_endpoints, exit_addresses = excluded.exit_addresses,
				advertised_country = excluded.advertised_country, capacity = excluded.capacity, updated_at = excluded.updated_at`,
			node, p.PhysicalCountry, p.City, p.Provider, string(p.Ownership), string(endpoints), string(exits), p.AdvertisedCountry, p.Capacity, now.Unix())
		if err != nil {
			return err
		}
		detail := map[string]any{"node": node, "place": p}
		if old != nil {
			detail["previous"] = old
		}
		return audit(ctx, tx, now, actor, "set-place", detail)
	})
	return p, err
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// Place returns where a node stands, or ErrNotFound if undeclared.
func (db *DB) Place(ctx context.Context, node string) (*api.Place, error) {
	return place(ctx, db, node)
}

type queryer interface {
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
}

func place(ctx context.Context, q queryer, node string) (*api.Place, error) {
	var p api.Place
	var ownership, endpoints, exits string
	var updated int64
	err := q.QueryRowContext(ctx, `SELECT physical_country, city, provider, ownership, entry_endpoints, exit_addresses, advertised_country, capacity, updated_at FROM node_places WHERE node = ?`, node).
		Scan(&p.PhysicalCountry, &p.City, &p.Provider, &ownership, &endpoints, &exits, &p.AdvertisedCountry, &p.Capacity, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	p.Ownership = api.Ownership(ownership)
	p.UpdatedAt = time.Unix(updated, 0).UTC()
	if err := json.Unmarshal([]byte(endpoints), &p.EntryEndpoints); err != nil {
		return nil, fmt.Errorf("node %s: stored entry endpoints: %w", node, err)
	}
	if err := json.Unmarshal([]byte(exits), &p.ExitAddresses); err != nil {
		return nil, fmt.Errorf("node %s: stored exit addresses: %w", node, err)
	}
	return &p, nil
}

// Places returns every declared place by node name.
func (db *DB) Places(ctx context.Context) (map[string]*api.Place, error) {
	rows, err := db.QueryContext(ctx, `SELECT node FROM node_places`)
	if err != nil {
		return nil, err
	}
	var nodes []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return nil, err
		}
		nodes = append(nodes, n)
	}
	rows.Close()
	out := make(map[string]*api.Place, len(nodes))
	for _, n := range nodes {
		if out[n], err = place(ctx, db, n); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// CreateLocation adds a location served by the given gateways.
func (db *DB) CreateLocation(ctx context.Context, actor string, l api.Location) error {
	now := db.now()
	return db.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO locations (code, country, city, created_at) VALUES (?, ?, ?, ?)`, l.Code, l.Country, l.City, now.Unix())
		if isUnique(err) {
			return &ConflictError{What: fmt.Sprintf("location %q already exists", l.Code)}
		}
		if err != nil {
			return err
		}
		for _, g := range l.Gateways {
			if _, err := tx.ExecContext(ctx, `INSERT INTO location_gateways (location, gateway) VALUES (?, ?)`, l.Code, g); err != nil {
				if isUnique(err) {
					return &ConflictError{What: fmt.Sprintf("gateway %q is listed twice", g)}
				}
				return err
			}
		}
		return audit(ctx, tx, now, actor, "location-add", l)
	})
}

// Locations lists locations by code, with their gateways.
func (db *DB) Locations(ctx context.Context) ([]api.Location, error) {
	rows, err := db.QueryContext(ctx, `SELECT l.code, l.country, l.city, coalesce(g.gateway, '') FROM locations l LEFT JOIN location_gateways g ON g.location = l.code ORDER BY l.code, g.gateway`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []api.Location{}
	for rows.Next() {
		var l api.Location
		var gw string
		if err := rows.Scan(&l.Code, &l.Country, &l.City, &gw); err != nil {
			return nil, err
		}
		if n := len(out); n > 0 && out[n-1].Code == l.Code {
			out[n-1].Gateways = append(out[n-1].Gateways, gw)
			continue
		}
		l.Gateways = []string{}
		if gw != "" {
			l.Gateways = append(l.Gateways, gw)
		}
		out = append(out, l)
	}
	return out, rows.Err()
}

// RemoveLocation deletes a location that no device uses.
func (db *DB) RemoveLocation(ctx context.Context, actor, code string) error {
	return db.write(ctx, func(tx *sql.Tx) error {
		var n, used int
		if err := tx.QueryRowContext(ctx, `SELECT count(*), (SELECT count(*) FROM devices WHERE location = ?) FROM locations WHERE code = ?`, code, code).Scan(&n, &used); err != nil {
			return err
		}
		if n == 0 {
			return ErrNotFound
		}
		if used > 0 {
			return &ConflictError{What: fmt.Sprintf("location %q is used by %d device(s); move them to another location first ('meridian device config ID --location CODE')", code, used)}
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM locations WHERE code = ?`, code); err != nil {
			return err
		}
		return audit(ctx, tx, db.now(), actor, "location-remove", map[string]string{"code": code})
	})
}

// SetDeviceLocation records which location a device's config points at.
// The device's peer is sent to the gateways again (a peer change): the
// duties of its sessions follow its location.
func (db *DB) SetDeviceLocation(ctx context.Context, id int64, location string) error {
	return db.write(ctx, func(tx *sql.Tx) error {
		var pub, v4, v6, status string
		err := tx.QueryRowContext(ctx, `UPDATE devices SET location = ? WHERE id = ? RETURNING public_key, ipv4, ipv6, status`, location, id).Scan(&pub, &v4, &v6, &status)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil || status != string(api.DeviceActive) {
			return err
		}
		k, err := wg.ParseKey(pub)
		if err != nil {
			return err
		}
		a4, _ := netip.ParseAddr(v4)
		a6, _ := netip.ParseAddr(v6)
		return addPeerChange(ctx, tx, k, a4, a6, false)
	})
}

// SetEstablished replaces the countries the operator is established in,
// audited (with whether the change was confirmed).
func (db *DB) SetEstablished(ctx context.Context, actor string, countries []string, confirmed bool) error {
	return db.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM operator_establishment`); err != nil {
			return err
		}
		for _, c := range countries {
			if _, err := tx.ExecContext(ctx, `INSERT INTO operator_establishment (country) VALUES (?)`, c); err != nil {
				return err
			}
		}
		return audit(ctx, tx, db.now(), actor, "operator-established", map[string]any{"countries": countries, "confirmed": confirmed})
	})
}

// Established lists the countries the operator is established in.
func (db *DB) Established(ctx context.Context) ([]string, error) {
	rows, err := db.QueryContext(ctx, `SELECT country FROM operator_establishment ORDER BY country`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// SetJurisdiction stores the operator's setting for a country, audited.
func (db *DB) SetJurisdiction(ctx context.Context, actor string, j api.Jurisdiction) (api.Jurisdiction, error) {
	now := db.now().UTC().Truncate(time.Second)
	j.UpdatedAt = now
	err := db.write(ctx, func(tx *sql.Tx) error {
		triggers := strings.Join(j.Triggers, ",")
		if triggers == "" {
			triggers = "placement"
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO jurisdictions (country, profile, stance, triggers, updated_at) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT(country) DO UPDATE SET profile = excluded.profile, stance = excluded.stance, triggers = excluded.triggers, updated_at = excluded.updated_at`,
			j.Country, j.Profile, j.Stance, triggers, now.Unix())
		if err != nil {
			return err
		}
		return audit(ctx, tx, now, actor, "jurisdiction-set", j)
	})
	return j, err
}

// Jurisdictions lists the countries the operator has configured.
func (db *DB) Jurisdictions(ctx context.Context) ([]api.Jurisdiction, error) {
	rows, err := db.QueryContext(ctx, `SELECT country, profile, stance, triggers, updated_at FROM jurisdictions ORDER BY country`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []api.Jurisdiction{}
	for rows.Next() {
		var j api.Jurisdiction
		var at int64
		var triggers string
		if err := rows.Scan(&j.Country, &j.Profile, &j.Stance, &triggers, &at); err != nil {
			return nil, err
		}
		j.Triggers = strings.Split(triggers, ",")
		j.UpdatedAt = time.Unix(at, 0).UTC()
		out = append(out, j)
	}
	return out, rows.Err()
}

// SaveProfile stores an operator-defined duty profile (JSON), audited.
func (db *DB) SaveProfile(ctx context.Context, actor, name string, body []byte) error {
	return db.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO duty_profiles (name, body) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET body = excluded.body`, name, string(body))
		if err != nil {
			return err
		}
		return audit(ctx, tx, db.now(), actor, "profile-set", json.RawMessage(body))
	})
}

// Profiles returns the stored operator-defined profiles (JSON by name).
func (db *DB) Profiles(ctx context.Context) (map[string][]byte, error) {
	rows, err := db.QueryContext(ctx, `SELECT name, body FROM duty_profiles`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string][]byte{}
	for rows.Next() {
		var name, body string
		if err := rows.Scan(&name, &body); err != nil {
			return nil, err
		}
		out[name] = []byte(body)
	}
	return out, rows.Err()
}

// DeviceWithoutRecord is an active device of an account that has no
// subscriber record: what a change of duties may leave without service.
type DeviceWithoutRecord struct {
	User     string
	Kind     api.TenantKind
	Location string
}

// DevicesWithoutRecord lists the active devices of accounts without a
// subscriber record.
func (db *DB) DevicesWithoutRecord(ctx context.Context) ([]DeviceWithoutRecord, error) {
	rows, err := db.QueryContext(ctx, `SELECT u.name, u.kind, d.location FROM devices d JOIN users u ON u.id = d.user_id
		WHERE d.status = 'active' AND NOT EXISTS (SELECT 1 FROM subscriber_entries e WHERE e.user_id = u.id) ORDER BY d.id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []DeviceWithoutRecord
	for rows.Next() {
		var d DeviceWithoutRecord
		var kind string
		if err := rows.Scan(&d.User, &kind, &d.Location); err != nil {
			return nil, err
		}
		d.Kind = api.TenantKind(kind)
		out = append(out, d)
	}
	return out, rows.Err()
}
