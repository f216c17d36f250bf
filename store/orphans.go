package store

import (
	"context"
	"database/sql"
	"time"
)

// orphanRows is the condition on session index rows whose device was gone
// when their records arrived (no account name) and whose end, or start if
// they never ended, is before ?.
const orphanRows = `user_name IS NULL AND coalesce(end_at, start_at) < ?`

// OrphanSessionSeqs returns the ledger seqs (both kinds of entry) of the
// session rows with no account whose end, or start, is before cutoff,
// and how many such rows there are.
func (db *DB) OrphanSessionSeqs(ctx context.Context, cutoff time.Time) (seqs []int64, rows int, err error) {
	c := cutoff.UnixNano()
	if err := db.index.QueryRowContext(ctx, `SELECT count(*) FROM sessions WHERE `+orphanRows, c).Scan(&rows); err != nil {
		return nil, 0, err
	}
	if rows == 0 {
		return nil, 0, nil
	}
	r, err := db.index.QueryContext(ctx, `SELECT seq FROM sessions WHERE `+orphanRows+` AND seq IS NOT NULL
		UNION ALL SELECT end_seq FROM sessions WHERE `+orphanRows+` AND end_seq IS NOT NULL
		UNION ALL SELECT inferred_end_seq FROM sessions WHERE `+orphanRows+` AND inferred_end_seq IS NOT end_seq AND inferred_end_seq IS NOT NULL`, c, c, c)
	if err != nil {
		return nil, 0, err
	}
	defer r.Close()
	for r.Next() {
		var s int64
		if err := r.Scan(&s); err != nil {
			return nil, 0, err
		}
		seqs = append(seqs, s)
	}
	return seqs, rows, r.Err()
}

// MarkOrphanSessionsPurgedTx records, in tx of the main database, that the
// session entries with no account whose end is before cutoff, up to the
// ledger's head, are being purged: FinishSessionPurges removes their rows
// from the index once tx has committed (or at the next start).
func (t *Tx) MarkOrphanSessionsPurgedTx(ctx context.Context, cutoff time.Time) error {
	tx := t.tx
	_, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO session_orphan_purges (up_to, ended_before)
		SELECT coalesce(max(seq), 0), ? FROM ledger_entries WHERE chain = 'records'`, cutoff.UnixNano())
	return err
}

// finishOrphanPurges is FinishSessionPurges for the notes of
// MarkOrphanSessionsPurgedTx.
func (db *DB) finishOrphanPurges(ctx context.Context) error {
	rows, err := db.QueryContext(ctx, `SELECT up_to, ended_before FROM session_orphan_purges`)
	if err != nil {
		return err
	}
	type purge struct{ upTo, before int64 }
	var todo []purge
	for rows.Next() {
		var p purge
		if err := rows.Scan(&p.upTo, &p.before); err != nil {
			rows.Close()
			return err
		}
		todo = append(todo, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, p := range todo {
		err := db.indexTx(ctx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE `+orphanRows+` AND (seq IS NULL OR seq <= ?)`, p.before, p.upTo)
			return err
		})
		if err != nil {
			return err
		}
		if _, err := db.ExecContext(ctx, `DELETE FROM session_orphan_purges WHERE up_to = ? AND ended_before = ?`, p.upTo, p.before); err != nil {
			return err
		}
	}
	return nil
}
