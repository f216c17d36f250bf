package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/meridian-vpn/meridian/api"
)

// The session index is the table that finds session records by exit
// address and port, tunnel address, endpoint and account. The records
// themselves are ledger entries in the main database; the index is
// derived from them, and lives in a database file of its own beside the
// main one (meridian.db → meridian-sessions.db) so that session ingest
// writes the two at once, on two cores: SQLite lets one transaction at a
// time write a file, and the index rows (six indexes in random order)
// cost as much to write as the ledger entries.
//
// The index is written on a goroutine of its own while the ledger's
// transaction appends the entries, in a transaction left open across
// groups (see sessionIndex.open) and committed after the ledger's. It keeps
// the highest ledger seq it indexed (the watermark) in the same
// transactions as its rows, so that whatever a crash or a failed write
// left out, the ledger holds and the control server indexes again
// (SessionIndexWatermark, SessionEntriesAfter, CatchUpSessionIndex). It is
// not synced to disk at each commit for that reason: the ledger is. A lost
// index file is rebuilt whole from the ledger, except rows stored before
// records were sealed (seq 0), which have no entry.

// sessionIndex is the index's database.
type sessionIndex struct {
	*sql.DB
	file string
	// writer is the one connection that writes, so that its page cache
	// stays warm: SQLite empties a connection's cache when another one has
	// written, and a cold cache read the pages that records are inserted
	// into again for every transaction.
	writer      *sql.Conn
	checkpoints *checkpointer
	writing     sync.Mutex  // held by whoever uses writer (and open): session ingest, catch-up, purges
	behind      atomic.Bool // rows of committed ledger entries were lost: catch up before the next write
	// open is the transaction that session ingest writes rows in, group
	// after group, until pending reaches maxUncommittedIndex, ingest
	// pauses, or someone reads (FlushSessionIndex): a commit writes every
	// page that the rows touched since the last, and at scale a record
	// touches a page of its own in most indexes, so fewer commits write
	// far less. Nil when there is none.
	open    *sql.Tx
	pending int // records written in open
}

// maxUncommittedIndex bounds the records in the index's open transaction:
// their changed pages fit the writer's cache (writerCacheKiB), and a crash
// costs the index at most that many entries to catch up on (catch-up
// reads about 11,000 entries/s: some 18 s at start).
// Committing every 32,000 records with a 64 MiB cache, ingest fell to
// 16,000 records/s at 2,000,000 records; every 200,000 with 512 MiB it
// held 22,000 (docs/benchmarks.md).
const maxUncommittedIndex = 200_000

// writerCacheKiB is the page cache of the index's writer connection, in
// KiB: room for the pages an open transaction changes, and for the pages
// records are inserted into. SQLite takes it as it needs it, so a small
// index uses little.
const writerCacheKiB = 512 << 10

func (x *sessionIndex) Close() error {
	err := x.checkpoints.Close()
	if x.writer != nil {
		x.writing.Lock()
		if x.open != nil {
			err = errors.Join(err, x.open.Commit())
			x.open = nil
		}
		x.writing.Unlock()
		err = errors.Join(err, x.writer.Close())
	}
	return errors.Join(err, x.DB.Close())
}

// FlushSessionIndex commits the rows that session ingest wrote to the
// index and left uncommitted, so that readers see them. If the commit
// fails, they are lost from the index (not from the ledger): the error
// wraps ErrSessionIndexBehind.
func (db *DB) FlushSessionIndex(ctx context.Context) error {
	db.index.writing.Lock()
	defer db.index.writing.Unlock()
	return db.flushIndexLocked()
}

func (db *DB) flushIndexLocked() error {
	x := db.index
	if x.open == nil {
		return nil
	}
	err := x.open.Commit()
	x.open, x.pending = nil, 0
	if err != nil {
		x.behind.Store(true)
		return fmt.Errorf("%w: %v", ErrSessionIndexBehind, err)
	}
	return nil
}

// abandonIndexLocked rolls back the open transaction: with a failed
// group's rows go those of earlier groups, whose ledger entries are
// committed, so the index is then behind.
func (db *DB) abandonIndexLocked() {
	x := db.index
	if x.open == nil {
		return
	}
	x.open.Rollback()
	if x.pending > 0 {
		x.behind.Store(true)
	}
	x.open, x.pending = nil, 0
}

// SessionIndexFile returns the file of the session index of the database
// in file.
func SessionIndexFile(file string) string {
	if ext := filepath.Ext(file); ext == ".db" {
		return strings.TrimSuffix(file, ext) + "-sessions.db"
	}
	return file + "-sessions"
}

// sessionIndexSchema is the index's schema; PRAGMA user_version says which
// is in a file. Files of an earlier version are brought up to date by the
// statements of sessionIndexUpgrades.
const (
	sessionIndexVersion = 2
	sessionIndexSchema  = `
CREATE TABLE sessions (
	id             TEXT PRIMARY KEY, -- 32 hex digits, made by the gateway
	gateway        TEXT NOT NULL,
	public_key     TEXT NOT NULL,
	device_id      INTEGER,          -- NULL if the device was gone when the record arrived
	user_name      TEXT,
	tunnel_ipv4    TEXT,
	tunnel_ipv6    TEXT,
	endpoint_index TEXT,             -- blind index of the endpoint address
	exit_ipv4      TEXT,
	exit_ipv6      TEXT,
	port_lo        INTEGER NOT NULL,
	port_hi        INTEGER NOT NULL,
	start_at       INTEGER NOT NULL,
	end_at         INTEGER,
	seq            INTEGER,          -- ledger seq of the "session" entry; NULL for rows stored before records were sealed
	end_seq        INTEGER,          -- ledger seq of the "session-end" entry
	inferred_end_seq INTEGER,        -- ledger seq of a "session-end" entry the control server inferred (the gateway went silent); the end is inferred while it is end_seq, and it is kept, for purges, when a reported end replaces it
	CHECK (port_lo BETWEEN 1 AND port_hi AND port_hi <= 65535),
	CHECK (end_at IS NULL OR end_at >= start_at)
) STRICT;
CREATE INDEX sessions_exit4 ON sessions (exit_ipv4, port_lo, start_at);
CREATE INDEX sessions_exit6 ON sessions (exit_ipv6, port_lo, start_at);
CREATE INDEX sessions_tunnel4 ON sessions (tunnel_ipv4, start_at);
CREATE INDEX sessions_tunnel6 ON sessions (tunnel_ipv6, start_at);
CREATE INDEX sessions_endpoint_index ON sessions (endpoint_index, start_at);
CREATE INDEX sessions_user ON sessions (user_name, start_at);
CREATE TABLE watermark (
	one INTEGER PRIMARY KEY CHECK (one = 1),
	seq INTEGER NOT NULL -- every session entry of the ledger up to this seq is indexed
) STRICT;
INSERT INTO watermark (one, seq) VALUES (1, 0)`
)

// sessionIndexUpgrades[v] brings an index file of version v+1 to version
// v+2, in one transaction.
var sessionIndexUpgrades = []string{
	// 1 → 2: ends the control server inferred for gateways gone silent,
	// which a reported end replaces.
	`ALTER TABLE sessions ADD COLUMN inferred_end_seq INTEGER`,
}

// sessionCopyCols are the columns a session row has in both databases.
const sessionCopyCols = `id, gateway, public_key, device_id, user_name, tunnel_ipv4, tunnel_ipv6, endpoint_index,
	exit_ipv4, exit_ipv6, port_lo, port_hi, start_at, end_at, seq, end_seq`

// openSessionIndex opens (creating if needed) the session index of db,
// whose file is file, and moves into it the session rows that the main
// database held before the index had a file of its own.
func (db *DB) openSessionIndex(ctx context.Context, file string) error {
	// As the main database (see Open), except that a commit is not synced
	// (synchronous NORMAL): the ledger is, and the index catches up from
	// it.
	pragmas := []string{"journal_mode(WAL)", "busy_timeout(10000)", "synchronous(NORMAL)", "secure_delete(ON)",
		"cache_size(-65536)", "temp_store(MEMORY)", fmt.Sprintf("wal_autocheckpoint(%d)", writerCheckpointPages), "journal_size_limit(67108864)"}
	if err := privateDatabase(file); err != nil {
		return fmt.Errorf("session index %s: %w", file, err)
	}
	idx, err := sql.Open("sqlite", "file:"+file+"?_pragma="+strings.Join(pragmas, "&_pragma=")+"&_txlock=immediate")
	if err != nil {
		return err
	}
	idx.SetMaxOpenConns(maxConns)
	idx.SetMaxIdleConns(maxConns)
	db.index = &sessionIndex{DB: idx, file: file}
	if db.index.writer, err = idx.Conn(ctx); err != nil {
		return fmt.Errorf("session index %s: %w", file, err)
	}
	if _, err := db.index.writer.ExecContext(ctx, fmt.Sprintf(`PRAGMA cache_size = -%d`, writerCacheKiB)); err != nil {
		return fmt.Errorf("session index %s: %w", file, err)
	}
	if db.index.checkpoints, err = startCheckpointer(ctx, idx); err != nil {
		return fmt.Errorf("session index %s: %w", file, err)
	}
	var version int
	if err := idx.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version); err != nil {
		return fmt.Errorf("session index %s: %w", file, err)
	}
	switch {
	case version == 0:
		err := db.indexTx(ctx, func(tx *sql.Tx) error {
			for _, stmt := range strings.Split(sessionIndexSchema, ";\n") {
				if _, err := tx.ExecContext(ctx, stmt); err != nil {
					return err
				}
			}
			_, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, sessionIndexVersion))
			return err
		})
		if err != nil {
			return fmt.Errorf("session index %s: %w", file, err)
		}
	case version > sessionIndexVersion:
		return fmt.Errorf("session index %s is of a newer Meridian (version %d)", file, version)
	case version < sessionIndexVersion:
		err := db.indexTx(ctx, func(tx *sql.Tx) error {
			for _, stmt := range sessionIndexUpgrades[version-1:] {
				if _, err := tx.ExecContext(ctx, stmt); err != nil {
					return err
				}
			}
			_, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, sessionIndexVersion))
			return err
		})
		if err != nil {
			return fmt.Errorf("session index %s: upgrading from version %d: %w", file, version, err)
		}
	}
	if err := db.moveSessionRows(ctx, file); err != nil {
		return fmt.Errorf("moving session rows to %s: %w", file, err)
	}
	return nil
}

// moveSessionRows moves the sessions table of the main database, where
// earlier versions kept it, to the index. Every session entry of the
// ledger then has its row, so the watermark becomes the ledger's head.
// Copying ignores rows already copied: a crash between the copy and the
// drop repeats the copy.
func (db *DB) moveSessionRows(ctx context.Context, file string) error {
	var legacy int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'sessions'`).Scan(&legacy); err != nil || legacy == 0 {
		return err
	}
	var head int64
	if err := db.QueryRowContext(ctx, `SELECT coalesce(max(seq), 0) FROM ledger_entries WHERE chain = 'records'`).Scan(&head); err != nil {
		return err
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `ATTACH DATABASE ? AS idx`, file); err != nil {
		return err
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), `DETACH DATABASE idx`)
	db.writing.Lock()
	defer db.writing.Unlock()
	for _, stmt := range []string{
		`BEGIN IMMEDIATE`,
		`INSERT OR IGNORE INTO idx.sessions (` + sessionCopyCols + `) SELECT ` + sessionCopyCols + ` FROM main.sessions`,
		fmt.Sprintf(`UPDATE idx.watermark SET seq = max(seq, %d)`, head),
		`COMMIT`,
		`BEGIN IMMEDIATE`,
		`DROP TABLE main.sessions`,
		`COMMIT`,
	} {
		if _, err := conn.ExecContext(ctx, stmt); err != nil {
			conn.ExecContext(context.WithoutCancel(ctx), `ROLLBACK`)
			return err
		}
	}
	return nil
}

// indexTx runs fn in a transaction of the session index, committing if
// it returns nil; like Tx, writers take turns.
func (db *DB) indexTx(ctx context.Context, fn func(*sql.Tx) error) error {
	db.index.writing.Lock()
	defer db.index.writing.Unlock()
	if err := db.flushIndexLocked(); err != nil {
		return err
	}
	return txOn(ctx, db.index.writer, fn)
}

// txOn runs fn in a transaction begun by db (a *sql.DB or *sql.Conn),
// committing if fn returns nil.
func txOn(ctx context.Context, db interface {
	BeginTx(context.Context, *sql.TxOptions) (*sql.Tx, error)
}, fn func(*sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() {
		if p := recover(); p != nil {
			tx.Rollback()
			panic(p)
		}
	}()
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// SessionIndex is the session index's database, for reading.
func (db *DB) SessionIndex() *sql.DB { return db.index.DB }

// ErrSessionIndexBehind says that session entries are in the ledger but
// not (all) in the index: it must catch up (IndexSessions) before more
// records are stored.
var ErrSessionIndexBehind = errors.New("the session index is behind the ledger")

// SessionIndexBehind reports whether the index must catch up before more
// records are stored: a write of it failed after the ledger's committed.
func (db *DB) SessionIndexBehind() bool { return db.index.behind.Load() }

// SessionIndexWatermark returns the seq up to which every session entry
// of the ledger is indexed.
func (db *DB) SessionIndexWatermark(ctx context.Context) (int64, error) {
	var seq int64
	err := db.index.QueryRowContext(ctx, `SELECT seq FROM watermark`).Scan(&seq)
	return seq, err
}

// SessionEntriesAfter returns the seqs of the first limit session and
// session-end entries of the record chain after seq that still have a
// body.
func (db *DB) SessionEntriesAfter(ctx context.Context, seq int64, limit int) ([]int64, error) {
	rows, err := db.QueryContext(ctx, `SELECT seq FROM ledger_entries WHERE chain = 'records' AND seq > ?
		AND kind IN ('session', 'session-end') AND body IS NOT NULL ORDER BY seq LIMIT ?`, seq, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var s int64
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// IndexedEntry is a session entry of the ledger, opened, to index.
type IndexedEntry struct {
	Seq     int64
	Session *SessionEntry // of a "session" entry
	End     *SessionEnd   // of a "session-end" entry
}

// catchUpPage is how many entries CatchUpSessionIndex reads and indexes
// at a time.
const catchUpPage = 1000

// CatchUpSessionIndex indexes the session entries of the ledger after the
// watermark, opened by read a page at a time, and returns how many it
// indexed. The index is then no longer behind.
func (db *DB) CatchUpSessionIndex(ctx context.Context, read func(seqs []int64) ([]IndexedEntry, error), index func(netip.Addr) string) (int, error) {
	db.index.writing.Lock()
	defer db.index.writing.Unlock()
	db.flushIndexLocked() // if it fails, what it held is caught up below
	mark, err := db.SessionIndexWatermark(ctx)
	if err != nil {
		return 0, err
	}
	var head int64
	if err := db.QueryRowContext(ctx, `SELECT coalesce(max(seq), 0) FROM ledger_entries WHERE chain = 'records'`).Scan(&head); err != nil {
		return 0, err
	}
	if mark > head {
		return 0, fmt.Errorf("the session index %s has entries up to %d but the ledger ends at %d (was the database restored without its index?): move the index aside and start again to rebuild it from the ledger",
			db.index.file, mark, head)
	}
	// Rows may already be there (a copy from before the index had a file
	// of its own): they are left as they are.
	insert, err := PrepareInsert(ctx, db.index.DB, `INSERT OR IGNORE INTO sessions (id, gateway, public_key, device_id, user_name, tunnel_ipv4, tunnel_ipv6,
			endpoint_index, exit_ipv4, exit_ipv6, port_lo, port_hi, start_at, end_at, seq) VALUES `, sessionValues)
	if err != nil {
		return 0, err
	}
	defer insert.Close()
	n := 0
	for {
		seqs, err := db.SessionEntriesAfter(ctx, mark, catchUpPage)
		if err != nil || len(seqs) == 0 {
			if err == nil {
				db.index.behind.Store(false)
			}
			return n, err
		}
		entries, err := read(seqs)
		if err != nil {
			return n, err
		}
		var starts []SessionEntry
		var startSeqs, endSeqs []int64
		var ends []SessionEnd
		var recs []api.SessionRecord
		for _, e := range entries {
			switch {
			case e.Session != nil:
				starts, startSeqs, recs = append(starts, *e.Session), append(startSeqs, e.Seq), append(recs, e.Session.SessionRecord)
			case e.End != nil:
				ends, endSeqs = append(ends, *e.End), append(endSeqs, e.Seq)
			}
		}
		owners, err := db.sessionOwners(func(st *sql.Stmt, args ...any) (*sql.Rows, error) { return st.QueryContext(ctx, args...) }, recs)
		if err != nil {
			return n, err
		}
		// Rows first, then ends: a page holds a session's start before its
		// end.
		tx, err := db.index.writer.BeginTx(ctx, nil)
		if err != nil {
			return n, err
		}
		err = db.startIndexWrite(ctx, tx, insert, sessionRows(starts, owners, index, startSeqs), endRows(ends, endSeqs), seqs[len(seqs)-1]).wait()
		if err == nil {
			err = tx.Commit()
		} else {
			tx.Rollback()
		}
		if err != nil {
			return n, fmt.Errorf("indexing session entries %d-%d: %w", seqs[0], seqs[len(seqs)-1], err)
		}
		n += len(entries)
		mark = seqs[len(seqs)-1]
	}
}

// MarkSessionsPurgedTx records, in tx of the main database, that the
// session entries of account user up to the ledger's head are being
// purged: FinishSessionPurges removes their rows from the index once tx
// has committed (or at the next start).
func (t *Tx) MarkSessionsPurgedTx(ctx context.Context, user string) error {
	tx := t.tx
	_, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO session_index_purges (user_name, up_to)
		SELECT ?, coalesce(max(seq), 0) FROM ledger_entries WHERE chain = 'records'`, user)
	return err
}

// FinishSessionPurges removes from the index the rows of the purges
// MarkSessionsPurgedTx recorded: rows of the account up to the seq it
// noted (and rows stored before records were sealed), not those of a new
// account of the same name.
func (db *DB) FinishSessionPurges(ctx context.Context) error {
	rows, err := db.QueryContext(ctx, `SELECT user_name, up_to FROM session_index_purges`)
	if err != nil {
		return err
	}
	type purge struct {
		user string
		upTo int64
	}
	var todo []purge
	for rows.Next() {
		var p purge
		if err := rows.Scan(&p.user, &p.upTo); err != nil {
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
			_, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE user_name = ? AND (seq IS NULL OR seq <= ?)`, p.user, p.upTo)
			return err
		})
		if err != nil {
			return err
		}
		if _, err := db.ExecContext(ctx, `DELETE FROM session_index_purges WHERE user_name = ? AND up_to = ?`, p.user, p.upTo); err != nil {
			return err
		}
	}
	return db.finishOrphanPurges(ctx)
}
