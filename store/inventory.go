package store

import (
	"context"
	"database/sql"
	"time"
)

// Holding is how much of one category of personal data the databases
// hold: how many items, and when the oldest was made (zero if none).
type Holding struct {
	Count  int
	Oldest time.Time
}

// Categories of personal data the control server's databases hold (the
// inventory adds what gateways report).
const (
	HoldSubscriberRecords = "subscriber-records"       // ledger entries of subscriber records and their validations
	HoldSessionRecords    = "session-records"          // session index rows (with their ledger entries)
	HoldEndpointIndex     = "endpoint-blind-index"     // session rows carrying the blind index of the connecting address
	HoldEmailCodes        = "email-codes"              // email validation codes waiting to be used
	HoldPendingSignups    = "pending-signups"          // self-service sign-ups not yet confirmed
	HoldICTLog            = "ict-log"                  // ICT log entries (they name gateways, actors and outcomes)
	HoldIncidentReports   = "incident-report-versions" // incident report versions (sealed), which may name suspected source addresses
	HoldExports           = "exports"                  // export requests (the sealed query names a person)
)

// holdingQueries count each category and give its oldest time, with the
// unit of that time. Adding a category is a line here (and one in the
// inventory's table of duties).
var holdingQueries = []struct {
	category string
	index    bool // in the session index, not the main database
	query    string
	nanos    bool // times in Unix nanoseconds, not seconds
}{
	{HoldSubscriberRecords, false, `SELECT count(*), min(l.at) FROM subscriber_entries e JOIN ledger_entries l ON l.chain = 'records' AND l.seq = e.seq WHERE l.body IS NOT NULL`, true},
	{HoldSessionRecords, true, `SELECT count(*), min(start_at) FROM sessions`, true},
	{HoldEndpointIndex, true, `SELECT count(*), min(start_at) FROM sessions WHERE endpoint_index IS NOT NULL AND endpoint_index <> ''`, true},
	{HoldEmailCodes, false, `SELECT count(*), min(expires_at) FROM email_codes`, false},
	{HoldPendingSignups, false, `SELECT count(*), min(created_at) FROM users WHERE unconfirmed = 1 AND cancelled_at IS NULL`, false},
	{HoldICTLog, false, `SELECT count(*), min(at) FROM ict_log`, true},
	{HoldIncidentReports, false, `SELECT count(*), min(v.at) FROM incident_versions v JOIN ledger_entries l ON l.chain = 'records' AND l.seq = v.seq WHERE l.body IS NOT NULL`, false},
	{HoldExports, false, `SELECT count(*), min(requested_at) FROM exports`, false},
}

// Holdings counts every category of personal data in the databases.
func (db *DB) Holdings(ctx context.Context) (map[string]Holding, error) {
	out := map[string]Holding{}
	for _, q := range holdingQueries {
		var h Holding
		var oldest sql.NullInt64
		conn := db.DB
		if q.index {
			conn = db.index.DB
		}
		if err := conn.QueryRowContext(ctx, q.query).Scan(&h.Count, &oldest); err != nil {
			return nil, err
		}
		if oldest.Valid {
			if q.nanos {
				h.Oldest = time.Unix(0, oldest.Int64).UTC()
			} else {
				h.Oldest = time.Unix(oldest.Int64, 0).UTC()
			}
		}
		out[q.category] = h
	}
	return out, nil
}

// Cutoffs are the times before which items are past their retention.
type Cutoffs struct {
	Now       time.Time
	Cancelled time.Time // subscriber and session records: accounts cancelled before it; orphan sessions ended before it
	Signups   time.Time // sign-ups unconfirmed since before it (zero: sign-ups do not expire)
	ICTDays   int       // the longest ICT log retention any duty sets now
}

// Overdue counts, by category, the items past their retention at c.
func (db *DB) Overdue(ctx context.Context, c Cutoffs) (map[string]int, error) {
	out := map[string]int{}
	one := func(category string, conn *sql.DB, query string, args ...any) error {
		var n int
		if err := conn.QueryRowContext(ctx, query, args...).Scan(&n); err != nil {
			return err
		}
		out[category] += n
		return nil
	}
	cut := c.Cancelled.Unix()
	if err := one(HoldSubscriberRecords, db.DB, `SELECT count(*) FROM subscriber_entries e JOIN users u ON u.id = e.user_id
		WHERE u.cancelled_at IS NOT NULL AND u.cancelled_at < ?`, cut); err != nil {
		return nil, err
	}
	// Session rows of accounts cancelled before the cutoff (the index is
	// another database: the names are read first), and orphans.
	rows, err := db.QueryContext(ctx, `SELECT name FROM users WHERE cancelled_at IS NOT NULL AND cancelled_at < ?`, cut)
	if err != nil {
		return nil, err
	}
	var names []any
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return nil, err
		}
		names = append(names, n)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for _, n := range names {
		if err := one(HoldSessionRecords, db.index.DB, `SELECT count(*) FROM sessions WHERE user_name = ?`, n); err != nil {
			return nil, err
		}
		if err := one(HoldEndpointIndex, db.index.DB, `SELECT count(*) FROM sessions WHERE user_name = ? AND endpoint_index IS NOT NULL AND endpoint_index <> ''`, n); err != nil {
			return nil, err
		}
	}
	orphan := c.Cancelled.UnixNano()
	if err := one(HoldSessionRecords, db.index.DB, `SELECT count(*) FROM sessions WHERE `+orphanRows, orphan); err != nil {
		return nil, err
	}
	if err := one(HoldEndpointIndex, db.index.DB, `SELECT count(*) FROM sessions WHERE `+orphanRows+` AND endpoint_index IS NOT NULL AND endpoint_index <> ''`, orphan); err != nil {
		return nil, err
	}
	if err := one(HoldEmailCodes, db.DB, `SELECT count(*) FROM email_codes WHERE expires_at < ?`, c.Now.Unix()); err != nil {
		return nil, err
	}
	if !c.Signups.IsZero() {
		if err := one(HoldPendingSignups, db.DB, `SELECT count(*) FROM users u WHERE u.unconfirmed = 1 AND u.cancelled_at IS NULL AND u.created_at < ?
			AND NOT EXISTS (SELECT 1 FROM devices d WHERE d.user_id = u.id)`, c.Signups.Unix()); err != nil {
			return nil, err
		}
	}
	n := c.Now.UnixNano()
	if err := one(HoldICTLog, db.DB, `SELECT count(*) FROM ict_log WHERE at < ? - max(keep_days, ?) * ?`, n, c.ICTDays, day); err != nil {
		return nil, err
	}
	return out, nil
}

// PurgeExpiredEmailCodes removes the email codes that expired before now:
// they can no longer be used, so nothing requires them.
func (db *DB) PurgeExpiredEmailCodes(ctx context.Context, now time.Time) (int64, error) {
	res, err := db.ExecContext(ctx, `DELETE FROM email_codes WHERE expires_at < ?`, now.Unix())
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}
