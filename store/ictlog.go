package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/meridian-vpn/meridian/api"
)

// AppendICTLog adds entries to the ICT log in one transaction.
func (db *DB) AppendICTLog(ctx context.Context, entries []api.ICTLogEntry) error {
	return db.write(ctx, func(tx *sql.Tx) error {
		st, err := tx.PrepareContext(ctx, `INSERT INTO ict_log (at, node, country, category, event, outcome, actor, details, keep_days) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`)
		if err != nil {
			return err
		}
		defer st.Close()
		for _, e := range entries {
			details := string(e.Details)
			if details == "" {
				details = "{}"
			}
			if _, err := st.ExecContext(ctx, e.At.UnixNano(), e.Node, e.Country, e.Category, e.Event, e.Outcome, e.Actor, details, e.KeepDays); err != nil {
				return fmt.Errorf("ICT log: %w", err)
			}
		}
		return nil
	})
}

// ictPage bounds the rows one query of ICTLogRange reads, so that a slow
// reader never holds the database's one connection for long.
const ictPage = 1000

// ICTLogRange calls fn for every ICT log entry with from <= at < to, in
// time order. It reads a page at a time and holds no query open while fn
// runs.
func (db *DB) ICTLogRange(ctx context.Context, from, to time.Time, fn func(api.ICTLogEntry) error) error {
	afterAt, afterID := from.UnixNano()-1, int64(1<<63-1)
	for {
		page, err := db.ictLogPage(ctx, afterAt, afterID, to.UnixNano())
		if err != nil {
			return err
		}
		for _, e := range page {
			if err := fn(e); err != nil {
				return err
			}
		}
		if len(page) < ictPage {
			return nil
		}
		last := page[len(page)-1]
		afterAt, afterID = last.At.UnixNano(), last.ID
	}
}

// ictLogPage reads the entries after (afterAt, afterID) in (at, id) order,
// before to.
func (db *DB) ictLogPage(ctx context.Context, afterAt, afterID, to int64) ([]api.ICTLogEntry, error) {
	rows, err := db.QueryContext(ctx, `SELECT id, at, node, country, category, event, outcome, actor, details, keep_days FROM ict_log
		WHERE (at > ? OR (at = ? AND id > ?)) AND at < ? ORDER BY at, id LIMIT ?`, afterAt, afterAt, afterID, to, ictPage)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var page []api.ICTLogEntry
	for rows.Next() {
		var e api.ICTLogEntry
		var at int64
		var details string
		if err := rows.Scan(&e.ID, &at, &e.Node, &e.Country, &e.Category, &e.Event, &e.Outcome, &e.Actor, &details, &e.KeepDays); err != nil {
			return nil, err
		}
		e.At, e.Details = time.Unix(0, at).UTC(), json.RawMessage(details)
		page = append(page, e)
	}
	return page, rows.Err()
}

const day = int64(24 * time.Hour)

// PurgeICTLog removes the entries whose retention has ended at now: each is
// kept for the longer of the retention it was recorded under and keepDays
// (the longest any duty sets now, or 0). It returns how many it removed.
func (db *DB) PurgeICTLog(ctx context.Context, now time.Time, keepDays int) (int64, error) {
	n := now.UnixNano()
	// The first condition is implied by the second; it lets the index on
	// at skip the entries every retention keeps.
	res, err := db.ExecContext(ctx, `DELETE FROM ict_log WHERE at < ? AND at < ? - max(keep_days, ?) * ?`, n-int64(keepDays)*day, n, keepDays, day)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// ICTLogStats counts the ICT log's entries and gives the oldest and newest
// times (zero when it is empty).
func (db *DB) ICTLogStats(ctx context.Context) (n int64, oldest, newest time.Time, err error) {
	var lo, hi sql.NullInt64
	if err = db.QueryRowContext(ctx, `SELECT count(*), min(at), max(at) FROM ict_log`).Scan(&n, &lo, &hi); err != nil {
		return
	}
	if lo.Valid {
		oldest, newest = time.Unix(0, lo.Int64).UTC(), time.Unix(0, hi.Int64).UTC()
	}
	return
}

// RaiseCandidate records c (kind, node, types, summary, details, detected
// at) as a pending incident candidate. If one of the same kind and node is
// already pending, this sighting is added to it instead: its last seen time
// and count move, what it first recorded stays. It returns the candidate
// as stored and whether it is new.
func (db *DB) RaiseCandidate(ctx context.Context, c api.IncidentCandidate) (api.IncidentCandidate, bool, error) {
	types, err := json.Marshal(c.Types)
	if err != nil {
		return c, false, err
	}
	details := string(c.Details)
	if details == "" {
		details = "{}"
	}
	clock, err := stampJSON(c.Clock)
	if err != nil {
		return c, false, err
	}
	at := c.DetectedAt.Unix()
	var id int64
	var fresh bool
	err = db.write(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `UPDATE incident_candidates SET last_seen_at = max(last_seen_at, ?), sightings = sightings + 1
			WHERE kind = ? AND node = ? AND state = 'pending' RETURNING id`, at, c.Kind, c.Node).Scan(&id)
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		fresh = true
		return tx.QueryRowContext(ctx, `INSERT INTO incident_candidates (kind, node, types, summary, details, detected_at, detected_clock, last_seen_at, state)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending') RETURNING id`, c.Kind, c.Node, string(types), c.Summary, details, at, clock, at).Scan(&id)
	})
	if err != nil {
		return c, false, err
	}
	c, err = db.Candidate(ctx, id)
	return c, fresh, err
}

const candidateSelect = `SELECT id, kind, node, types, summary, details, detected_at, detected_clock, last_seen_at, sightings, state, decided_at, decided_by, reason, incident_id FROM incident_candidates`

func candidateRow(row interface{ Scan(...any) error }) (api.IncidentCandidate, error) {
	var c api.IncidentCandidate
	var types, details, state string
	var detected, seen int64
	var decided, inc sql.NullInt64
	var clock sql.NullString
	err := row.Scan(&c.ID, &c.Kind, &c.Node, &types, &c.Summary, &details, &detected, &clock, &seen, &c.Sightings, &state, &decided, &c.DecidedBy, &c.Reason, &inc)
	if errors.Is(err, sql.ErrNoRows) {
		return c, ErrNotFound
	}
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal([]byte(types), &c.Types); err != nil {
		return c, fmt.Errorf("incident candidate %d: types: %w", c.ID, err)
	}
	if c.Clock, err = stampOf("detected_clock", clock); err != nil {
		return c, fmt.Errorf("incident candidate %d: %w", c.ID, err)
	}
	c.State, c.Details = api.CandidateState(state), json.RawMessage(details)
	c.DetectedAt, c.LastSeenAt, c.DecidedAt = time.Unix(detected, 0).UTC(), time.Unix(seen, 0).UTC(), fromUnix(decided)
	c.Incident = inc.Int64
	return c, nil
}

// Candidate returns one incident candidate.
func (db *DB) Candidate(ctx context.Context, id int64) (api.IncidentCandidate, error) {
	return candidateRow(db.QueryRowContext(ctx, candidateSelect+` WHERE id = ?`, id))
}

// Candidates lists incident candidates, newest first: all, or the pending.
func (db *DB) Candidates(ctx context.Context, all bool) ([]api.IncidentCandidate, error) {
	q := candidateSelect
	if !all {
		q += ` WHERE state = 'pending'`
	}
	rows, err := db.QueryContext(ctx, q+` ORDER BY id DESC`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []api.IncidentCandidate{}
	for rows.Next() {
		c, err := candidateRow(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// DecideCandidate confirms (with the incident it became) or dismisses
// (with a reason) the pending candidate id, in tx. A candidate already
// decided is a conflict.
func (t *Tx) DecideCandidate(ctx context.Context, id int64, state api.CandidateState, at time.Time, by, reason string, incident int64) error {
	tx := t.tx
	inc := sql.NullInt64{Int64: incident, Valid: incident != 0}
	res, err := tx.ExecContext(ctx, `UPDATE incident_candidates SET state = ?, decided_at = ?, decided_by = ?, reason = ?, incident_id = ? WHERE id = ? AND state = 'pending'`,
		string(state), at.Unix(), by, reason, inc, id)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n == 1 {
		return err
	}
	var cur string
	err = tx.QueryRowContext(ctx, `SELECT state FROM incident_candidates WHERE id = ?`, id).Scan(&cur)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	if err != nil {
		return err
	}
	return &ConflictError{What: fmt.Sprintf("incident candidate %d was already %s", id, cur)}
}
