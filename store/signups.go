package store

import (
	"context"
	"database/sql"
	"errors"
	"time"
)

// MarkUnconfirmed marks a new account as a self-service sign-up that has
// not yet been confirmed by use (see ConfirmUser).
func (t *Tx) MarkUnconfirmed(ctx context.Context, userID int64) error {
	tx := t.tx
	_, err := tx.ExecContext(ctx, `UPDATE users SET unconfirmed = 1 WHERE id = ?`, userID)
	return err
}

// ConfirmUser marks an account confirmed: its email was verified or an
// operator validated its record. Getting a device confirms it too
// (CreateDevice).
func (t *Tx) ConfirmUser(ctx context.Context, userID int64) error {
	tx := t.tx
	_, err := tx.ExecContext(ctx, `UPDATE users SET unconfirmed = 0 WHERE id = ? AND unconfirmed = 1`, userID)
	return err
}

// ReserveSignupMail counts one verification mail to the address whose
// keyed hash is key, in its rolling window of length window, unless limit
// mails were already counted in it. When refused, it returns when the
// window ends.
func (t *Tx) ReserveSignupMail(ctx context.Context, key []byte, now time.Time, window time.Duration, limit int) (ok bool, until time.Time, err error) {
	tx := t.tx
	var start int64
	var sent int
	err = tx.QueryRowContext(ctx, `SELECT window_start, sent FROM signup_mails WHERE addr_key = ?`, key).Scan(&start, &sent)
	switch {
	case errors.Is(err, sql.ErrNoRows) || err == nil && now.Unix() >= start+int64(window/time.Second):
		start, sent = now.Unix(), 0
	case err != nil:
		return false, time.Time{}, err
	}
	if sent >= limit {
		return false, time.Unix(start, 0).Add(window), nil
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO signup_mails (addr_key, window_start, sent) VALUES (?, ?, 1)
		ON CONFLICT(addr_key) DO UPDATE SET window_start = excluded.window_start, sent = ?`, key, start, sent+1)
	return err == nil, time.Time{}, err
}

// TrimSignupMails deletes the mail counters whose window started before
// before, and returns how many.
func (db *DB) TrimSignupMails(ctx context.Context, before time.Time) (int64, error) {
	var n int64
	err := db.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM signup_mails WHERE window_start < ?`, before.Unix())
		if err == nil {
			n, err = res.RowsAffected()
		}
		return err
	})
	return n, err
}

// UnconfirmedAccount is a self-service sign-up never confirmed by use.
type UnconfirmedAccount struct {
	ID   int64
	Name string
	Seqs []int64 // the ledger entries of its subscriber record, if any
}

// UnconfirmedBefore lists the sign-ups created before cutoff that are
// still unconfirmed, not cancelled, and hold no device.
func (db *DB) UnconfirmedBefore(ctx context.Context, cutoff time.Time) ([]UnconfirmedAccount, error) {
	rows, err := db.QueryContext(ctx, `SELECT u.id, u.name, e.seq FROM users u LEFT JOIN subscriber_entries e ON e.user_id = u.id
		WHERE u.unconfirmed = 1 AND u.cancelled_at IS NULL AND u.created_at < ?
		AND NOT EXISTS (SELECT 1 FROM devices d WHERE d.user_id = u.id) ORDER BY u.id, e.seq`, cutoff.Unix())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []UnconfirmedAccount
	for rows.Next() {
		var id int64
		var name string
		var seq sql.NullInt64
		if err := rows.Scan(&id, &name, &seq); err != nil {
			return nil, err
		}
		if n := len(out); n == 0 || out[n-1].ID != id {
			out = append(out, UnconfirmedAccount{ID: id, Name: name})
		}
		if seq.Valid {
			out[len(out)-1].Seqs = append(out[len(out)-1].Seqs, seq.Int64)
		}
	}
	return out, rows.Err()
}

// ErrConfirmed is returned by DeleteUnconfirmed when the account was
// confirmed (or got a device, or was cancelled) since it was listed.
var ErrConfirmed = errors.New("the account is no longer an unconfirmed sign-up")

// DeleteUnconfirmed removes an unconfirmed sign-up with its email code and
// the index of its subscriber record, checking in tx that it is still
// unconfirmed, uncancelled and without devices.
func (t *Tx) DeleteUnconfirmed(ctx context.Context, userID int64) error {
	tx := t.tx
	var still bool
	err := tx.QueryRowContext(ctx, `SELECT unconfirmed = 1 AND cancelled_at IS NULL AND NOT EXISTS (SELECT 1 FROM devices WHERE user_id = users.id)
		FROM users WHERE id = ?`, userID).Scan(&still)
	if errors.Is(err, sql.ErrNoRows) || err == nil && !still {
		return ErrConfirmed
	}
	if err != nil {
		return err
	}
	for _, q := range []string{
		`DELETE FROM subscriber_entries WHERE user_id = ?`,
		`DELETE FROM email_codes WHERE user_id = ?`,
		`DELETE FROM users WHERE id = ?`,
	} {
		if _, err := tx.ExecContext(ctx, q, userID); err != nil {
			return err
		}
	}
	return nil
}
