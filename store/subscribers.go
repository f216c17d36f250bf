package store

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/meridian-vpn/meridian/wg"
)

// UserID returns an account's id.
func (db *DB) UserID(ctx context.Context, name string) (int64, error) {
	var id int64
	err := db.QueryRowContext(ctx, `SELECT id FROM users WHERE name = ?`, name).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, ErrNotFound
	}
	return id, err
}

// AddSubscriberEntry indexes a ledger entry (records chain) under an account.
func (t *Tx) AddSubscriberEntry(ctx context.Context, userID, seq int64) error {
	tx := t.tx
	_, err := tx.ExecContext(ctx, `INSERT INTO subscriber_entries (user_id, seq) VALUES (?, ?)`, userID, seq)
	return err
}

// SubscriberSeqs returns the ledger entries of an account's subscriber
// record, oldest first (none if no record is kept).
func (db *DB) SubscriberSeqs(ctx context.Context, user string) ([]int64, error) {
	rows, err := db.QueryContext(ctx, `SELECT e.seq FROM subscriber_entries e JOIN users u ON u.id = e.user_id WHERE u.name = ? ORDER BY e.seq`, user)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var seqs []int64
	for rows.Next() {
		var s int64
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		seqs = append(seqs, s)
	}
	return seqs, rows.Err()
}

// CancelUser ends an account's period of hire at at (once), running also in
// the same transaction.
func (db *DB) CancelUser(ctx context.Context, user string, at time.Time, also func(tx *Tx, userID int64) error) error {
	return db.write(ctx, func(tx *sql.Tx) error {
		var id int64
		var cancelled sql.NullInt64
		err := tx.QueryRowContext(ctx, `SELECT id, cancelled_at FROM users WHERE name = ?`, user).Scan(&id, &cancelled)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if cancelled.Valid {
			return &ConflictError{What: fmt.Sprintf("user %q was already cancelled on %s", user, time.Unix(cancelled.Int64, 0).UTC().Format(time.DateOnly))}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE users SET cancelled_at = ? WHERE id = ?`, at.Unix(), id); err != nil {
			return err
		}
		// Its active devices are revoked, and the peer change log tells the
		// gateways to drop them.
		rows, err := tx.QueryContext(ctx, `UPDATE devices SET status = 'revoked' WHERE user_id = ? AND status = 'active' RETURNING public_key`, id)
		if err != nil {
			return err
		}
		var keys []string
		for rows.Next() {
			var k string
			if err := rows.Scan(&k); err != nil {
				rows.Close()
				return err
			}
			keys = append(keys, k)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, k := range keys {
			pub, err := wg.ParseKey(k)
			if err != nil {
				return err
			}
			if err := addPeerChange(ctx, tx, pub, netip.Addr{}, netip.Addr{}, true); err != nil {
				return err
			}
		}
		if also != nil {
			return also(&Tx{tx: tx}, id)
		}
		return nil
	})
}

// AddSubscriberRecord takes the subscriber record of an existing account
// that has none: also writes it (given the account's id and creation
// time) in the same transaction, and the account's active devices are
// sent to the gateways again (a peer change each), so that those left out
// for want of a record are served anew. An account that already has a
// record, or was cancelled, is a conflict.
func (db *DB) AddSubscriberRecord(ctx context.Context, user string, also func(tx *Tx, userID int64, created time.Time) error) error {
	return db.write(ctx, func(tx *sql.Tx) error {
		var id, created int64
		var cancelled sql.NullInt64
		var has bool
		err := tx.QueryRowContext(ctx, `SELECT id, created_at, cancelled_at, EXISTS (SELECT 1 FROM subscriber_entries e WHERE e.user_id = users.id) FROM users WHERE name = ?`, user).Scan(&id, &created, &cancelled, &has)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if cancelled.Valid {
			return &ConflictError{What: fmt.Sprintf("user %q was cancelled on %s: a cancelled account hires no service, so no subscriber record is taken", user, time.Unix(cancelled.Int64, 0).UTC().Format(time.DateOnly))}
		}
		if has {
			return &ConflictError{What: fmt.Sprintf("user %q already has a subscriber record; corrections are recorded as validations (POST /subscribers/{name}/validate)", user)}
		}
		if err := also(&Tx{tx: tx}, id, time.Unix(created, 0).UTC()); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `SELECT public_key, ipv4, ipv6 FROM devices WHERE user_id = ? AND status = 'active'`, id)
		if err != nil {
			return err
		}
		type peer struct{ pub, v4, v6 string }
		var peers []peer
		for rows.Next() {
			var p peer
			if err := rows.Scan(&p.pub, &p.v4, &p.v6); err != nil {
				rows.Close()
				return err
			}
			peers = append(peers, p)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, p := range peers {
			k, err := wg.ParseKey(p.pub)
			if err != nil {
				return err
			}
			a4, _ := netip.ParseAddr(p.v4)
			a6, _ := netip.ParseAddr(p.v6)
			if err := addPeerChange(ctx, tx, k, a4, a6, false); err != nil {
				return err
			}
		}
		return nil
	})
}

// SetEmailCode stores the hash of a one-time code for an account.
func (t *Tx) SetEmailCode(ctx context.Context, userID int64, hash []byte, expires time.Time) error {
	tx := t.tx
	_, err := tx.ExecContext(ctx, `INSERT INTO email_codes (user_id, code_hash, expires_at) VALUES (?, ?, ?)
		ON CONFLICT(user_id) DO UPDATE SET code_hash = excluded.code_hash, expires_at = excluded.expires_at, attempts = 0`, userID, hash, expires.Unix())
	return err
}

// maxCodeAttempts bounds guesses at a one-time code.
const maxCodeAttempts = 5

// CheckEmailCode compares hash with the account's pending code. A match
// consumes the code and runs also in the same transaction; a miss counts
// an attempt.
func (db *DB) CheckEmailCode(ctx context.Context, user string, hash []byte, now time.Time, also func(tx *Tx, userID int64) error) error {
	wrong := false
	err := db.write(ctx, func(tx *sql.Tx) error {
		var id, exp int64
		var attempts int
		var want []byte
		err := tx.QueryRowContext(ctx, `SELECT c.user_id, c.code_hash, c.expires_at, c.attempts FROM email_codes c JOIN users u ON u.id = c.user_id WHERE u.name = ?`, user).Scan(&id, &want, &exp, &attempts)
		if errors.Is(err, sql.ErrNoRows) {
			return &ConflictError{What: "no email code is pending for this account"}
		}
		if err != nil {
			return err
		}
		switch {
		case now.Unix() >= exp:
			return &ConflictError{What: "the email code has expired; ask for a new one"}
		case attempts >= maxCodeAttempts:
			return &ConflictError{What: "too many wrong codes; ask for a new one"}
		case subtle.ConstantTimeCompare(want, hash) != 1:
			// Count the attempt: commit, then report the miss.
			wrong = true
			_, err := tx.ExecContext(ctx, `UPDATE email_codes SET attempts = attempts + 1 WHERE user_id = ?`, id)
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM email_codes WHERE user_id = ?`, id); err != nil {
			return err
		}
		return also(&Tx{tx: tx}, id)
	})
	if err == nil && wrong {
		return errWrongCode
	}
	return err
}

// errWrongCode is returned (after the attempt is counted) for a wrong code.
var errWrongCode = &ConflictError{What: "wrong email code"}
