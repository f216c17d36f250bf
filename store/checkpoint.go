package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"
)

// A checkpoint copies the pages a write-ahead log holds into the database
// file and syncs it: tens of megabytes when the log reaches
// wal_autocheckpoint. SQLite has the writer whose commit crossed that
// size do it, so session ingest stopped for it, with every request
// queued behind. A checkpointer does it instead, on a connection and a
// goroutine of its own, beside the writers (SQLite lets a checkpoint run
// while a transaction writes). Writers still checkpoint if the log grows
// past writerCheckpointPages, so it stays bounded whatever happens here.

const (
	// checkpointInterval is how often the checkpointer copies what the log
	// gained.
	checkpointInterval = 250 * time.Millisecond
	// writerCheckpointPages is the log size (pages of 4 KiB) at which a
	// writer checkpoints after all: 400 MiB, far behind the checkpointer.
	writerCheckpointPages = 100_000
)

// checkpointer runs passive checkpoints of one database every
// checkpointInterval until closed.
type checkpointer struct {
	conn *sql.Conn
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

func startCheckpointer(ctx context.Context, sdb *sql.DB) (*checkpointer, error) {
	conn, err := sdb.Conn(ctx)
	if err != nil {
		return nil, err
	}
	c := &checkpointer{conn: conn, stop: make(chan struct{}), done: make(chan struct{})}
	go c.run()
	return c, nil
}

func (c *checkpointer) run() {
	defer close(c.done)
	t := time.NewTicker(checkpointInterval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		// PASSIVE: copies what no reader still needs, never waits for
		// anyone. A failure (another checkpoint running, a full disk) is
		// left to the next tick, and to the writers' own checkpoints.
		var busy, frames, copied int
		c.conn.QueryRowContext(context.Background(), `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &frames, &copied)
	}
}

// Close stops the checkpointer and releases its connection; again, it
// does nothing.
func (c *checkpointer) Close() error {
	if c == nil {
		return nil
	}
	var err error
	c.once.Do(func() {
		close(c.stop)
		<-c.done
		err = c.conn.Close()
	})
	return err
}

// TruncateLog checkpoints the whole write-ahead log of sdb and cuts it to
// nothing, so that no copy of a page from before (such as a purged row's)
// stays in it. A reader in the middle of a query keeps the log from being
// cut, and so may the checkpointer; they are short, so it tries a few
// times.
func TruncateLog(ctx context.Context, sdb *sql.DB) error {
	var err error
	for try := range 20 {
		var busy, frames, copied int
		err = sdb.QueryRowContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &frames, &copied)
		if err == nil && busy != 0 {
			err = errors.New("database busy")
		}
		if err == nil || ctx.Err() != nil {
			return err
		}
		time.Sleep(time.Duration(try+1) * 10 * time.Millisecond)
	}
	return err
}

// ScrubSessionIndexLog commits the session index and cuts its log, after
// a purge removed rows from it.
func (db *DB) ScrubSessionIndexLog(ctx context.Context) error {
	if err := db.FlushSessionIndex(ctx); err != nil {
		return err
	}
	if err := TruncateLog(ctx, db.index.DB); err != nil {
		return fmt.Errorf("old copies of purged session rows may remain in the session index's write-ahead log until its next checkpoint: %w", err)
	}
	return nil
}
