// Package ictlog keeps the ICT log that CERT-In direction (iv) asks for:
// structured events (authentication, admin actions, configuration,
// gateways, handshake rate-limiting, egress-policy denials) of the nodes
// whose place brings an ICT-log duty, each with the node's physical
// country, kept in the control database for the duty's rolling retention
// and purged after. Entries carry no personal data.
//
// Which events are owed is the caller's decision (the ICT-log duty that
// jurisdiction.NodeDuties finds for the node's place, whose retention each
// entry carries); the log buffers what it is given and writes it in
// batches, so a flood of failed requests costs one write a second, not one
// each.
package ictlog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/store"
)

// Categories of events.
const (
	Auth      = "auth"      // a credential accepted or refused
	Admin     = "admin"     // an admin request: reads and changes of state
	Config    = "config"    // a change of configuration: places, jurisdictions, profiles, locations, join tokens, keys
	Gateway   = "gateway"   // a gateway joined, or came back after silence
	Handshake = "handshake" // WireGuard handshake rate-limiting (cookie mode) on a gateway
	Egress    = "egress"    // flows refused by a gateway's egress policy
	Integrity = "integrity" // the ledger's verification failed
	System    = "system"    // the control server started; events lost
)

// Outcomes.
const (
	Success = "success"
	Failure = "failure"
	Info    = "info"
)

// maxPending bounds the events waiting to be written; more are counted
// and the count is logged instead.
const maxPending = 10000

// Log buffers events and writes them to the database in batches.
type Log struct {
	db  *store.DB
	now func() time.Time

	mu       sync.Mutex
	pending  []api.ICTLogEntry
	dropped  uint64          // since New
	lost     uint64          // dropped and not yet logged as such
	lastLost api.ICTLogEntry // the last one dropped: whose node the loss is logged under

	flushing sync.Mutex // batches are written in order
}

// New returns the log kept in db. now is the clock (time.Now, or a fake
// in tests).
func New(db *store.DB, now func() time.Time) *Log {
	return &Log{db: db, now: now}
}

// Details encodes an event's details: key, value pairs. Callers pass
// names of things, routes and counts, never anything personal.
func Details(kv ...any) json.RawMessage {
	m := make(map[string]any, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		m[fmt.Sprint(kv[i])] = kv[i+1]
	}
	b, _ := json.Marshal(m)
	return b
}

// Add queues e for writing. e.KeepDays must be the node's ICT-log
// retention (callers add nothing for a node without the duty); a zero
// e.At is now. Add never waits for the database.
func (l *Log) Add(e api.ICTLogEntry) {
	if e.KeepDays <= 0 {
		panic("ictlog: an event without a retention: the node has no ICT-log duty")
	}
	if e.At.IsZero() {
		e.At = l.now()
	}
	e.At = e.At.UTC()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.pending) >= maxPending {
		l.dropped++
		l.lost++
		l.lastLost = e
		return
	}
	l.pending = append(l.pending, e)
}

// Flush writes the queued events. On failure they stay queued.
func (l *Log) Flush(ctx context.Context) error {
	l.flushing.Lock()
	defer l.flushing.Unlock()
	l.mu.Lock()
	batch := l.pending
	l.pending = nil
	if l.lost > 0 {
		e := l.lastLost
		batch = append(batch, api.ICTLogEntry{At: l.now().UTC(), Node: e.Node, Country: e.Country, Category: System, Event: "events lost",
			Outcome: Failure, Details: Details("lost", l.lost, "why", "more events than the buffer holds arrived between writes"), KeepDays: e.KeepDays})
	}
	lost := l.lost
	l.lost = 0
	l.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	err := l.db.AppendICTLog(ctx, batch)
	if err != nil { // keep them for the next flush, ahead of newer ones
		l.mu.Lock()
		if lost > 0 {
			batch = batch[:len(batch)-1]
			l.lost += lost
		}
		l.pending = append(batch, l.pending...)
		l.mu.Unlock()
	}
	return err
}

// Purge removes the entries whose retention has ended: each is kept for
// the longer of the retention it was recorded under and keepDays, the
// longest any node's duty sets now. It returns how many it removed.
func (l *Log) Purge(ctx context.Context, keepDays int) (int64, error) {
	return l.db.PurgeICTLog(ctx, l.now(), keepDays)
}

// CheckRange checks an export's range [from, to).
func CheckRange(from, to time.Time) error {
	if !from.Before(to) {
		return fmt.Errorf("from (%s) must be before to (%s): the range is from inclusive to exclusive", from.Format(time.RFC3339Nano), to.Format(time.RFC3339Nano))
	}
	return nil
}

// Export writes the entries with from <= at < to to w as JSON lines, in
// time order, after writing what is queued. It returns how many it wrote
// and the hex SHA-256 of the bytes written.
func (l *Log) Export(ctx context.Context, from, to time.Time, w io.Writer) (n int64, sum string, err error) {
	if err := CheckRange(from, to); err != nil {
		return 0, "", err
	}
	if err := l.Flush(ctx); err != nil {
		return 0, "", err
	}
	h := sha256.New()
	out := io.MultiWriter(w, h)
	err = l.db.ICTLogRange(ctx, from, to, func(e api.ICTLogEntry) error {
		b, err := json.Marshal(e)
		if err != nil {
			return err
		}
		if _, err := out.Write(append(b, '\n')); err != nil {
			return err
		}
		n++
		return nil
	})
	return n, hex.EncodeToString(h.Sum(nil)), err
}

// Stats counts what the log holds (after writing what is queued) and the
// events dropped since New.
func (l *Log) Stats(ctx context.Context) (n int64, oldest, newest time.Time, dropped uint64, err error) {
	if err = l.Flush(ctx); err != nil {
		return
	}
	n, oldest, newest, err = l.db.ICTLogStats(ctx)
	l.mu.Lock()
	dropped = l.dropped
	l.mu.Unlock()
	return
}
