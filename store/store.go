// Package store keeps Meridian's state: an embedded SQLite database (WAL mode)
// with the schema migrations compiled into the binary.
package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/meridian-vpn/meridian/internal/datadir"
	"github.com/meridian-vpn/meridian/internal/errcode"

	_ "modernc.org/sqlite"
)

//go:embed migrations/*.sql
var migrations embed.FS

// ErrNotFound is returned when a looked-up row does not exist.
var ErrNotFound = errcode.New(errcode.NotFound, "not found")

// ConflictError is returned when a write would break a uniqueness rule.
type ConflictError struct{ What string }

func (e *ConflictError) Error() string { return e.What }

// ErrorCode makes a conflict answer as one (errcode.Conflict).
func (e *ConflictError) ErrorCode() errcode.Code { return errcode.Conflict }

// DB is the Meridian database.
type DB struct {
	*sql.DB
	now func() time.Time

	sessionStmts // prepared at Open, see sessions.go
	index        *sessionIndex
	checkpoints  *checkpointer

	writing sync.Mutex // held by the transaction writing, see Tx
}

// Open opens (creating if needed) the SQLite database at file and brings its
// schema up to date.
func Open(ctx context.Context, file string) (*DB, error) {
	// WAL, and a commit is on disk before it returns (synchronous FULL).
	// Removed rows are overwritten (secure_delete) on every connection. A
	// page cache of up to 64 MiB per connection. Checkpoints are the
	// checkpointer's (checkpoint.go); the log is cut back to 64 MiB when
	// it starts again from its beginning. Statement
	// journals (the undo copy of each page a multi-row statement changes)
	// stay in memory (temp_store): in temporary files they cost a write
	// call per page, a tenth of session ingest, and put copies of record
	// pages on disk outside the database.
	pragmas := []string{"journal_mode(WAL)", "busy_timeout(10000)", "foreign_keys(ON)", "synchronous(FULL)", "secure_delete(ON)",
		"cache_size(-65536)", "temp_store(MEMORY)", fmt.Sprintf("wal_autocheckpoint(%d)", writerCheckpointPages), "journal_size_limit(67108864)"}
	// The file is made before SQLite opens it, private: SQLite gives its
	// log and shared-memory files the database file's mode.
	if err := privateDatabase(file); err != nil {
		return nil, fmt.Errorf("database %s: %w", file, err)
	}
	dsn := "file:" + file + "?_pragma=" + strings.Join(pragmas, "&_pragma=") + "&_txlock=immediate"
	sdb, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	// Readers each on a connection of their own (WAL lets them read while
	// a transaction writes), so that a long write, such as a group of
	// session records, does not hold up requests that only read. Writers
	// take turns in Tx before SQLite's lock, so they queue in order instead
	// of polling it.
	sdb.SetMaxOpenConns(maxConns)
	sdb.SetMaxIdleConns(maxConns)
	db := &DB{DB: sdb, now: time.Now}
	if err := db.migrate(ctx); err != nil {
		sdb.Close()
		return nil, fmt.Errorf("database %s: %w", file, err)
	}
	if err := db.openSessionIndex(ctx, SessionIndexFile(file)); err != nil {
		db.Close()
		return nil, err
	}
	if err := db.prepareSessions(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("database %s: %w", file, err)
	}
	if db.checkpoints, err = startCheckpointer(ctx, sdb); err != nil {
		db.Close()
		return nil, fmt.Errorf("database %s: %w", file, err)
	}
	return db, nil
}

// privateDatabase creates file with mode 0600 if it does not exist, and
// takes other users' permissions off it and its companions if it does.
func privateDatabase(file string) error {
	if err := datadir.PrivateFile(file); err != nil {
		return err
	}
	return datadir.PrivateFiles(file+"-wal", file+"-shm", file+"-journal")
}

// Close closes the database and its session index.
func (db *DB) Close() error {
	err := db.checkpoints.Close()
	err = errors.Join(err, db.DB.Close())
	if db.index != nil {
		err = errors.Join(err, db.index.Close())
	}
	return err
}

func (db *DB) migrate(ctx context.Context) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at INTEGER NOT NULL)`); err != nil {
		return err
	}
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(names)
	for _, name := range names {
		base := path.Base(name)
		var n int
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE name = ?`, base).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			continue
		}
		body, err := migrations.ReadFile(name)
		if err != nil {
			return err
		}
		err = db.write(ctx, func(tx *sql.Tx) error {
			for _, stmt := range strings.Split(string(body), ";\n") {
				if strings.TrimSpace(stripComments(stmt)) == "" {
					continue
				}
				if _, err := tx.ExecContext(ctx, stmt); err != nil {
					return fmt.Errorf("migration %s: %w", base, err)
				}
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)`, base, db.now().Unix())
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func stripComments(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "--") {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// maxConns bounds the database's connections: one writer at a time, the
// checkpointer, and readers.
const maxConns = 6

// write runs fn in a transaction, committing if it returns nil.
// Transactions take turns: one at a time writes.
func (db *DB) write(ctx context.Context, fn func(*sql.Tx) error) error {
	db.writing.Lock()
	defer db.writing.Unlock()
	return txOn(ctx, db.DB, fn)
}

// Setting returns a value from the settings table, or "" if unset.
func (db *DB) Setting(ctx context.Context, key string) (string, error) {
	var v string
	err := db.QueryRowContext(ctx, `SELECT value FROM settings WHERE key = ?`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return v, err
}

// SetSetting stores a value in the settings table.
func (db *DB) SetSetting(ctx context.Context, key, value string) error {
	_, err := db.ExecContext(ctx, `INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value`, key, value)
	return err
}

// isUnique reports whether err is a SQLite UNIQUE constraint failure.
func isUnique(err error) bool {
	return err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed")
}
