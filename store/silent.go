package store

import (
	"context"
	"database/sql"
	"time"
)

// GatewaysHeard returns when the control server last heard from each
// gateway, as SaveGatewaysHeard kept it; gateways never kept are absent.
// Gateways that have open sessions but were never kept (the sessions
// arrived before this was kept) are given the start of their latest open
// session: the last evidence there is of them.
func (db *DB) GatewaysHeard(ctx context.Context) (map[string]time.Time, error) {
	out := map[string]time.Time{}
	rows, err := db.QueryContext(ctx, `SELECT gateway, heard_at FROM gateway_heard`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var gw string
		var at int64
		if err := rows.Scan(&gw, &at); err != nil {
			return nil, err
		}
		out[gw] = time.Unix(0, at).UTC()
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if err := db.FlushSessionIndex(ctx); err != nil {
		return nil, err
	}
	// A scan of the index, once per start of the control server.
	open, err := db.index.QueryContext(ctx, `SELECT gateway, max(start_at) FROM sessions WHERE end_at IS NULL GROUP BY gateway`)
	if err != nil {
		return nil, err
	}
	defer open.Close()
	for open.Next() {
		var gw string
		var at int64
		if err := open.Scan(&gw, &at); err != nil {
			return nil, err
		}
		if _, ok := out[gw]; !ok {
			out[gw] = time.Unix(0, at).UTC()
		}
	}
	return out, open.Err()
}

// SaveGatewaysHeard keeps when the control server last heard from
// gateways; a time earlier than the one kept changes nothing.
func (db *DB) SaveGatewaysHeard(ctx context.Context, heard map[string]time.Time) error {
	if len(heard) == 0 {
		return nil
	}
	return db.write(ctx, func(tx *sql.Tx) error {
		for gw, at := range heard {
			if _, err := tx.ExecContext(ctx, `INSERT INTO gateway_heard (gateway, heard_at) VALUES (?, ?)
				ON CONFLICT (gateway) DO UPDATE SET heard_at = max(heard_at, excluded.heard_at)`, gw, at.UnixNano()); err != nil {
				return err
			}
		}
		return nil
	})
}

// EndOpenSessions ends, as inferred (SessionEnd.Inferred), the sessions of
// gateway gw that are open in the records: the gateway went silent, and
// at is the last time the control server heard from it. A session that
// started after at (by the gateway's clock) ends at its start. The ends
// go through hook into the ledger and the index, as SaveSessions'; it
// returns how many sessions it ended.
//
// Finding them scans the index (there is no index of open sessions, which
// session ingest would pay for at every record): this runs once each time
// a gateway goes silent.
func (db *DB) EndOpenSessions(ctx context.Context, gw string, at time.Time, hook SessionHook) (int, error) {
	db.index.writing.Lock()
	defer db.index.writing.Unlock()
	if db.index.behind.Load() {
		return 0, ErrSessionIndexBehind
	}
	x := db.index
	var err error
	if x.open == nil {
		if x.open, err = x.writer.BeginTx(ctx, nil); err != nil {
			return 0, err
		}
	}
	rows, err := x.open.QueryContext(ctx, `SELECT id, start_at FROM sessions WHERE gateway = ? AND end_at IS NULL ORDER BY start_at, id`, gw)
	if err != nil {
		db.abandonIndexLocked()
		return 0, err
	}
	var ends []SessionEnd
	for rows.Next() {
		var id string
		var start int64
		if err := rows.Scan(&id, &start); err != nil {
			rows.Close()
			db.abandonIndexLocked()
			return 0, err
		}
		end := at.UTC()
		if s := time.Unix(0, start).UTC(); s.After(end) {
			end = s
		}
		ends = append(ends, SessionEnd{ID: id, End: end, Inferred: true})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		db.abandonIndexLocked()
		return 0, err
	}
	if len(ends) == 0 {
		return 0, nil
	}
	if err := db.writeSessions(ctx, x, nil, nil, ends, hook); err != nil {
		return 0, err
	}
	return len(ends), db.flushIndexLocked()
}
