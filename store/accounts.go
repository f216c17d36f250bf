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

// CreateUser adds an account.
func (db *DB) CreateUser(ctx context.Context, name string, kind api.TenantKind) (api.User, error) {
	return db.CreateUserWith(ctx, name, kind, nil)
}

// CreateUserWith adds an account and runs also (if not nil) in the same
// transaction, so that what is written with the account (a subscriber
// record) commits with it or not at all.
func (db *DB) CreateUserWith(ctx context.Context, name string, kind api.TenantKind, also func(tx *Tx, userID int64) error) (api.User, error) {
	now := db.now().UTC().Truncate(time.Second)
	err := db.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO users (name, kind, created_at) VALUES (?, ?, ?)`, name, string(kind), now.Unix())
		if isUnique(err) {
			return &ConflictError{What: fmt.Sprintf("user %q already exists", name)}
		}
		if err != nil {
			return err
		}
		id, err := res.LastInsertId()
		if err != nil || also == nil {
			return err
		}
		return also(&Tx{tx: tx}, id)
	})
	if err != nil {
		return api.User{}, err
	}
	return api.User{Name: name, Kind: kind, CreatedAt: now}, nil
}

const userCols = `u.name, u.kind, u.created_at, (SELECT count(*) FROM devices d WHERE d.user_id = u.id)`

func scanUser(row interface{ Scan(...any) error }) (api.User, error) {
	var u api.User
	var kind string
	var created int64
	if err := row.Scan(&u.Name, &kind, &created, &u.Devices); err != nil {
		return api.User{}, err
	}
	u.Kind = api.TenantKind(kind)
	u.CreatedAt = time.Unix(created, 0).UTC()
	return u, nil
}

// User returns one account.
func (db *DB) User(ctx context.Context, name string) (api.User, error) {
	u, err := scanUser(db.QueryRowContext(ctx, `SELECT `+userCols+` FROM users u WHERE u.name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return api.User{}, ErrNotFound
	}
	return u, err
}

// Users lists all accounts by name.
func (db *DB) Users(ctx context.Context) ([]api.User, error) {
	rows, err := db.QueryContext(ctx, `SELECT `+userCols+` FROM users u ORDER BY u.name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	users := []api.User{}
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, err
		}
		users = append(users, u)
	}
	return users, rows.Err()
}

// DeleteUser removes an account that has no devices left and no
// compliance records (a subscriber record or sessions) to keep.
func (db *DB) DeleteUser(ctx context.Context, name string) error {
	// Read before the transaction, in the index: an account without
	// devices gets no new session rows.
	sessions, err := db.HasSessions(ctx, name)
	if err != nil {
		return err
	}
	return db.write(ctx, func(tx *sql.Tx) error {
		var id int64
		var n, records int
		err := tx.QueryRowContext(ctx, `SELECT id, (SELECT count(*) FROM devices WHERE user_id = users.id), (SELECT count(*) FROM subscriber_entries WHERE user_id = users.id)
			FROM users WHERE name = ?`, name).Scan(&id, &n, &records)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if n > 0 {
			return &ConflictError{What: fmt.Sprintf("user %q still has %d device(s); delete them first", name, n)}
		}
		if records > 0 {
			return &ConflictError{What: fmt.Sprintf("user %q has a subscriber record, which must be kept: cancel the account instead ('meridian user cancel'); the record is purged when its retention ends", name)}
		}
		if sessions {
			// Kept until the account's retention ends; deleting the account
			// would orphan them, and a new account of the same name would
			// inherit them.
			return &ConflictError{What: fmt.Sprintf("user %q has session records, which must be kept: cancel the account instead ('meridian user cancel'); they are purged when their retention ends", name)}
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM users WHERE id = ?`, id)
		return err
	})
}

// NewDevice is a device about to be stored; its addresses are already allocated.
type NewDevice struct {
	User      string
	Name      string
	PublicKey wg.Key
	IPv4      netip.Addr
	IPv6      netip.Addr
	Location  string
}

// CreateDevice stores a device and records it in the peer change log, in
// one transaction.
func (db *DB) CreateDevice(ctx context.Context, nd NewDevice) (api.Device, error) {
	now := db.now().UTC().Truncate(time.Second)
	var d api.Device
	err := db.write(ctx, func(tx *sql.Tx) error {
		var uid int64
		var cancelled sql.NullInt64
		err := tx.QueryRowContext(ctx, `SELECT id, cancelled_at FROM users WHERE name = ?`, nd.User).Scan(&uid, &cancelled)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("user %q: %w", nd.User, ErrNotFound)
		}
		if err != nil {
			return err
		}
		if cancelled.Valid {
			return cancelledConflict(nd.User, cancelled.Int64)
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO devices (user_id, name, public_key, ipv4, ipv6, status, location, created_at) VALUES (?, ?, ?, ?, ?, 'active', ?, ?)`,
			uid, nd.Name, nd.PublicKey.String(), nd.IPv4.String(), nd.IPv6.String(), nd.Location, now.Unix())
		if isUnique(err) {
			return uniqueDeviceConflict(ctx, tx, uid, nd)
		}
		if err != nil {
			return err
		}
		id, _ := res.LastInsertId()
		if err := (&Tx{tx: tx}).ConfirmUser(ctx, uid); err != nil { // a device is service: the sign-up is confirmed
			return err
		}
		if err := addPeerChange(ctx, tx, nd.PublicKey, nd.IPv4, nd.IPv6, false); err != nil {
			return err
		}
		d = api.Device{ID: id, User: nd.User, Name: nd.Name, PublicKey: nd.PublicKey, IPv4: nd.IPv4, IPv6: nd.IPv6, Status: api.DeviceActive, Location: nd.Location, CreatedAt: now}
		return nil
	})
	return d, err
}

// cancelledConflict refuses to give a cancelled account a working device.
func cancelledConflict(user string, at int64) error {
	return &ConflictError{What: fmt.Sprintf("user %q was cancelled on %s: a cancelled account gets no devices", user, time.Unix(at, 0).UTC().Format(time.DateOnly))}
}

func uniqueDeviceConflict(ctx context.Context, tx *sql.Tx, uid int64, nd NewDevice) error {
	var n int
	tx.QueryRowContext(ctx, `SELECT count(*) FROM devices WHERE public_key = ?`, nd.PublicKey.String()).Scan(&n)
	if n > 0 {
		return &ConflictError{What: "a device with this public key already exists"}
	}
	tx.QueryRowContext(ctx, `SELECT count(*) FROM devices WHERE user_id = ? AND name = ?`, uid, nd.Name).Scan(&n)
	if n > 0 {
		return &ConflictError{What: fmt.Sprintf("user %q already has a device named %q", nd.User, nd.Name)}
	}
	return &ConflictError{What: "tunnel address already in use"}
}

const deviceCols = `d.id, u.name, d.name, d.public_key, d.ipv4, d.ipv6, d.status, d.location, d.created_at`

func scanDevice(row interface{ Scan(...any) error }) (api.Device, error) {
	var d api.Device
	var pub, v4, v6, status string
	var created int64
	if err := row.Scan(&d.ID, &d.User, &d.Name, &pub, &v4, &v6, &status, &d.Location, &created); err != nil {
		return api.Device{}, err
	}
	var err error
	if d.PublicKey, err = wg.ParseKey(pub); err != nil {
		return api.Device{}, fmt.Errorf("device %d: stored key: %w", d.ID, err)
	}
	d.IPv4, _ = netip.ParseAddr(v4)
	d.IPv6, _ = netip.ParseAddr(v6)
	d.Status = api.DeviceStatus(status)
	d.CreatedAt = time.Unix(created, 0).UTC()
	return d, nil
}

// Device returns one device by id.
func (db *DB) Device(ctx context.Context, id int64) (api.Device, error) {
	d, err := scanDevice(db.QueryRowContext(ctx, `SELECT `+deviceCols+` FROM devices d JOIN users u ON u.id = d.user_id WHERE d.id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return api.Device{}, ErrNotFound
	}
	return d, err
}

// Devices lists devices, of one user if user is not empty.
func (db *DB) Devices(ctx context.Context, user string) ([]api.Device, error) {
	q := `SELECT ` + deviceCols + ` FROM devices d JOIN users u ON u.id = d.user_id`
	var args []any
	if user != "" {
		q += ` WHERE u.name = ?`
		args = append(args, user)
	}
	rows, err := db.QueryContext(ctx, q+` ORDER BY d.id`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	devs := []api.Device{}
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, err
		}
		devs = append(devs, d)
	}
	return devs, rows.Err()
}

// RevokeDevice marks a device revoked; gateways drop it. Its addresses stay
// allocated until it is deleted.
func (db *DB) RevokeDevice(ctx context.Context, id int64) (api.Device, error) {
	var d api.Device
	err := db.write(ctx, func(tx *sql.Tx) error {
		var err error
		d, err = scanDevice(tx.QueryRowContext(ctx, `SELECT `+deviceCols+` FROM devices d JOIN users u ON u.id = d.user_id WHERE d.id = ?`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if d.Status == api.DeviceRevoked {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `UPDATE devices SET status = 'revoked' WHERE id = ?`, id); err != nil {
			return err
		}
		d.Status = api.DeviceRevoked
		return addPeerChange(ctx, tx, d.PublicKey, netip.Addr{}, netip.Addr{}, true)
	})
	return d, err
}

// DeleteDevice removes a device; its addresses become free again.
func (db *DB) DeleteDevice(ctx context.Context, id int64) (api.Device, error) {
	var d api.Device
	err := db.write(ctx, func(tx *sql.Tx) error {
		var err error
		d, err = scanDevice(tx.QueryRowContext(ctx, `SELECT `+deviceCols+` FROM devices d JOIN users u ON u.id = d.user_id WHERE d.id = ?`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM devices WHERE id = ?`, id); err != nil {
			return err
		}
		if d.Status == api.DeviceActive {
			return addPeerChange(ctx, tx, d.PublicKey, netip.Addr{}, netip.Addr{}, true)
		}
		return nil
	})
	return d, err
}

// AllocatedAddresses returns the tunnel addresses of every stored device,
// to seed the address pools at startup.
func (db *DB) AllocatedAddresses(ctx context.Context) ([]netip.Addr, error) {
	rows, err := db.QueryContext(ctx, `SELECT ipv4, ipv6 FROM devices`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []netip.Addr
	for rows.Next() {
		var v4, v6 string
		if err := rows.Scan(&v4, &v6); err != nil {
			return nil, err
		}
		for _, s := range []string{v4, v6} {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("stored tunnel address %q: %w", s, err)
			}
			out = append(out, a)
		}
	}
	return out, rows.Err()
}
