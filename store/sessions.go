package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"runtime/debug"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/wg"
)

// Session is the index row of an attribution record. The record itself is
// in the ledger (entry Seq): Endpoint is not stored here and is left zero.
type Session struct {
	api.SessionRecord
	Gateway       string
	DeviceID      int64  // 0: the device was gone when the record arrived
	User          string // "" likewise
	Seq           int64  // ledger seq of the "session" entry; 0 for rows stored before records were sealed
	EndSeq        int64  // ledger seq of the "session-end" entry; 0 if none
	EndpointIndex string // blind index of the endpoint address
}

// SessionOwner is the device a session record's key belongs to.
type SessionOwner struct {
	Known    bool // false: no device has the key (any more)
	DeviceID int64
	User     string
	Kind     api.TenantKind
	Location string // the location the device's config points at ("" for none)
	Record   bool   // the account has a subscriber record
}

// SessionHook puts session records in the ledger, inside SaveSessions'
// transaction of the main database, and computes the blind index of
// endpoint addresses. All four functions are required.
type SessionHook struct {
	// Index returns the blind index of an endpoint address.
	Index func(ip netip.Addr) string
	// Next returns the seq the next ledger entry appended in tx will have:
	// the index rows are written, with the seqs of their entries, while
	// the entries are.
	Next func(tx *Tx) (int64, error)
	// Stored records sessions when they are first stored and returns the
	// ledger seq of each entry, in order.
	Stored func(tx *Tx, recs []SessionEntry) (seqs []int64, err error)
	// Ended records that stored open sessions ended and returns the ledger
	// seq of each entry, in order.
	Ended func(tx *Tx, ends []SessionEnd) (seqs []int64, err error)
}

// SessionEntry is the body of the ledger entry that records a session:
// the record, and the gateway that sent it.
type SessionEntry struct {
	api.SessionRecord
	Gateway string `json:"gateway"`
}

// SessionEnd says that a stored open session ended. It is also the body of
// the ledger entry that records it (a durable format: fields are only ever
// added, with omitempty, so that entries written before them read the same).
type SessionEnd struct {
	ID    string         `json:"id"`
	End   time.Time      `json:"end"`
	Clock *api.ClockSync `json:"clock,omitempty"` // the gateway's clock when it saw the end
	// Inferred says that the gateway did not report this end: it went
	// silent, and the control server ended its open sessions as of the
	// last time it heard from it (EndOpenSessions). An end the gateway
	// reports later replaces it, in a later entry. Entries from before
	// inferred ends existed lack the field: reported.
	Inferred bool `json:"inferred,omitempty"`
}

// GatewaySessions is a batch of session records sent by a gateway, and
// which of them to keep: Keep is asked, for each record, with the device
// its key belongs to, and a record it refuses is not stored (the duty may
// no longer apply).
type GatewaySessions struct {
	Gateway string
	Records []api.SessionRecord
	Keep    func(SessionOwner) bool
	// Ignored, if set, is told the id of each record Keep refuses.
	Ignored func(id string)
}

// SaveSessions stores batches of session records, in order, and returns
// for each batch how many records Keep accepted. Saving is idempotent by
// record ID: a record seen again changes nothing, except that the end of a
// stored open session is set once; a record whose ID another gateway
// stored changes nothing either. The records go through hook into the
// ledger, in one transaction of the main database, and their rows into
// the session index, written at the same time on another goroutine in
// the index's open transaction, which is committed later
// (FlushSessionIndex, or here once it holds maxUncommittedIndex records;
// see sessionindex.go). If that commit fails, the records are stored but
// the error wraps ErrSessionIndexBehind: the index must catch up.
//
// The work is done for all batches at once, not a record at a time: one
// query for the owners of all keys, one for the records already stored,
// inserts of many rows per statement. Per record, statements cost more
// than the writing; per transaction, every index page a record touches is
// written again, so more records to a transaction share more pages.
func (db *DB) SaveSessions(ctx context.Context, batches []GatewaySessions, hook SessionHook) (stored []int, err error) {
	if hook.Index == nil || hook.Next == nil || hook.Stored == nil || hook.Ended == nil {
		return nil, errors.New("store: SaveSessions needs a complete SessionHook")
	}
	db.index.writing.Lock()
	defer db.index.writing.Unlock()
	if db.index.behind.Load() {
		return nil, ErrSessionIndexBehind
	}
	var all []api.SessionRecord
	for _, b := range batches {
		all = append(all, b.Records...)
	}
	owners, err := db.sessionOwners(func(st *sql.Stmt, args ...any) (*sql.Rows, error) { return st.QueryContext(ctx, args...) }, all)
	if err != nil {
		return nil, err
	}
	// What is stored is read in the index's open transaction, on the
	// writer's connection: it holds the rows of groups not yet committed,
	// and its cache the pages of recent records. (No one else writes the
	// index while we hold its lock.)
	x := db.index
	if x.open == nil {
		if x.open, err = x.writer.BeginTx(ctx, nil); err != nil {
			return nil, err
		}
	}
	known, err := db.storedSessions(ctx, x.open, all)
	if err != nil {
		db.abandonIndexLocked()
		return nil, err
	}
	// Plan in order: a record may start a session and a later one end it.
	stored = make([]int, len(batches))
	var starts []SessionEntry
	var ends []SessionEnd
	for i, b := range batches {
		for _, r := range b.Records {
			if !b.Keep(owners[r.PublicKey]) {
				if b.Ignored != nil {
					b.Ignored(r.ID)
				}
				continue
			}
			stored[i]++
			k, ok := known[r.ID]
			switch {
			case !ok:
				starts = append(starts, SessionEntry{r, b.Gateway})
				known[r.ID] = storedSession{gateway: b.Gateway, ended: !r.End.IsZero(), start: r.Start.UnixNano()}
			case k.gateway == b.Gateway && !k.ended && !r.End.IsZero(): // an inferred end is not ended: the reported one replaces it
				if r.End.UnixNano() < k.start {
					return nil, &BadSessionRecordError{ID: r.ID}
				}
				ends = append(ends, SessionEnd{ID: r.ID, End: r.End.UTC(), Clock: r.Clock})
				known[r.ID] = storedSession{gateway: b.Gateway, ended: true}
			}
		}
	}
	if len(starts)+len(ends) == 0 {
		return stored, nil
	}
	if err := db.writeSessions(ctx, x, starts, owners, ends, hook); err != nil {
		return nil, err
	}
	if x.pending >= maxUncommittedIndex {
		if err := db.flushIndexLocked(); err != nil {
			return stored, err
		}
	}
	return stored, nil
}

// appendSessions puts the records that start sessions and the ends of
// stored ones in the ledger, checking that they got the seqs their index
// rows have, from next on.
func appendSessions(tx *sql.Tx, starts []SessionEntry, ends []SessionEnd, next int64, hook SessionHook) error {
	check := func(seqs []int64, n int, from int64) error {
		if len(seqs) != n {
			return fmt.Errorf("%d ledger entries for %d records", len(seqs), n)
		}
		for i, seq := range seqs {
			if seq != from+int64(i) {
				return fmt.Errorf("ledger entry %d where %d was expected", seq, from+int64(i))
			}
		}
		return nil
	}
	if len(starts) > 0 {
		seqs, err := hook.Stored(&Tx{tx: tx}, starts)
		if err == nil {
			err = check(seqs, len(starts), next)
		}
		if err != nil {
			return fmt.Errorf("sealing session records: %w", err)
		}
	}
	if len(ends) > 0 {
		seqs, err := hook.Ended(&Tx{tx: tx}, ends)
		if err == nil {
			err = check(seqs, len(ends), next+int64(len(starts)))
		}
		if err != nil {
			return fmt.Errorf("sealing the ends of sessions: %w", err)
		}
	}
	return nil
}

// sessionStmts are the statements of session ingest, prepared at Open:
// on the session index, but for owners.
type sessionStmts struct {
	insertRows *Values
	endRows    *Values
	owners     *sql.Stmt // of sqlChunk keys
	known      *sql.Stmt // of sqlChunk ids
}

func (db *DB) prepareSessions(ctx context.Context) error {
	var err error
	// OR FAIL, not the default ABORT: a statement that may abort halfway
	// makes SQLite keep an undo copy of every page it changes, and the
	// index rows of 64 sessions change pages all over six indexes. On an
	// error the whole transaction is rolled back anyway.
	if db.insertRows, err = PrepareInsert(ctx, db.index.DB, `INSERT OR FAIL INTO sessions (id, gateway, public_key, device_id, user_name, tunnel_ipv4, tunnel_ipv6,
			endpoint_index, exit_ipv4, exit_ipv6, port_lo, port_hi, start_at, end_at, seq) VALUES `, sessionValues); err != nil {
		return err
	}
	// The ends of many sessions in one statement: a statement per end
	// cost as much as the writing.
	if db.endRows, err = PrepareValues(ctx, db.index.DB, `UPDATE OR FAIL sessions SET end_at = v.column2, end_seq = v.column3,
			inferred_end_seq = coalesce(v.column4, inferred_end_seq) FROM (VALUES `, 4,
		`) AS v WHERE sessions.id = v.column1`); err != nil {
		return err
	}
	if db.owners, err = db.PrepareContext(ctx, `SELECT d.public_key, d.id, u.name, u.kind, d.location,
			EXISTS (SELECT 1 FROM subscriber_entries e WHERE e.user_id = u.id) FROM devices d JOIN users u ON u.id = d.user_id WHERE d.public_key`+InList); err != nil {
		return err
	}
	// An end the control server inferred does not count as ended: the
	// gateway's own end replaces it.
	db.known, err = db.index.PrepareContext(ctx, `SELECT id, gateway, end_at IS NOT NULL AND end_seq IS NOT inferred_end_seq, start_at FROM sessions WHERE id`+InList)
	return err
}

// sessionValues is the number of values in a row of the sessions table
// as SaveSessions inserts it.
const sessionValues = 15

// sessionOwners returns the owner of each key in recs; keys no device has
// map to the zero SessionOwner.
func (db *DB) sessionOwners(query queryFunc, recs []api.SessionRecord) (map[wg.Key]SessionOwner, error) {
	keys := make([]wg.Key, len(recs))
	for i, r := range recs {
		keys[i] = r.PublicKey
	}
	return db.ownersOf(query, keys)
}

// queryFunc runs a prepared query: in a transaction, or not.
type queryFunc func(st *sql.Stmt, args ...any) (*sql.Rows, error)

// ownersOf returns the device and account each of keys belongs to; keys no
// device has map to the zero SessionOwner.
func (db *DB) ownersOf(query queryFunc, keys []wg.Key) (map[wg.Key]SessionOwner, error) {
	owners := map[wg.Key]SessionOwner{}
	var args []any
	for _, k := range keys {
		if _, ok := owners[k]; !ok {
			owners[k] = SessionOwner{}
			args = append(args, k.String())
		}
	}
	err := EachIn(args, func(keys []any) error {
		rows, err := query(db.owners, keys...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var pub, kind string
			o := SessionOwner{Known: true}
			if err := rows.Scan(&pub, &o.DeviceID, &o.User, &kind, &o.Location, &o.Record); err != nil {
				return err
			}
			k, err := wg.ParseKey(pub)
			if err != nil {
				return err
			}
			o.Kind = api.TenantKind(kind)
			owners[k] = o
		}
		return rows.Err()
	})
	return owners, err
}

// storedSession is what SaveSessions needs to know of a stored record.
type storedSession struct {
	gateway string
	ended   bool  // with an end the gateway reported
	start   int64 // Unix nanoseconds
}

// ErrBadSessionRecord marks a record that contradicts the stored one:
// the sender's error, not the server's.
var ErrBadSessionRecord = errors.New("bad session record")

// BadSessionRecordError is the ErrBadSessionRecord of one record: one
// that ends before the session it closes started.
type BadSessionRecordError struct{ ID string }

func (e *BadSessionRecordError) Error() string {
	return fmt.Sprintf("%v: session record %s ends before the session it closes started", ErrBadSessionRecord, e.ID)
}

func (e *BadSessionRecordError) Is(target error) bool { return target == ErrBadSessionRecord }

// storedSessions returns the records of recs already stored, by ID,
// read in tx of the index.
func (db *DB) storedSessions(ctx context.Context, tx *sql.Tx, recs []api.SessionRecord) (map[string]storedSession, error) {
	ids := make([]any, len(recs))
	for i, r := range recs {
		ids[i] = r.ID
	}
	known := map[string]storedSession{}
	err := EachIn(ids, func(ids []any) error {
		rows, err := tx.StmtContext(ctx, db.known).QueryContext(ctx, ids...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			var s storedSession
			if err := rows.Scan(&id, &s.gateway, &s.ended, &s.start); err != nil {
				return err
			}
			known[id] = s
		}
		return rows.Err()
	})
	return known, err
}

// sessionRows returns the index rows of starts, whose ledger entries
// are seqs, as the values of insertRows.
func sessionRows(starts []SessionEntry, owners map[wg.Key]SessionOwner, index func(netip.Addr) string, seqs []int64) []any {
	args := make([]any, 0, sessionValues*len(starts))
	for i, r := range starts {
		var device, user any
		if o := owners[r.PublicKey]; o.Known {
			device, user = o.DeviceID, o.User
		}
		args = append(args, r.ID, r.Gateway, r.PublicKey.String(), device, user, addrOrNull(r.TunnelIPv4), addrOrNull(r.TunnelIPv6),
			index(r.Endpoint.Addr().Unmap()), addrOrNull(r.ExitIPv4), addrOrNull(r.ExitIPv6),
			int(r.PortLo), int(r.PortHi), r.Start.UnixNano(), timeOrNull(r.End), seqs[i])
	}
	return args
}

// endRows returns the ends, whose ledger entries are seqs, as the values
// of endRows.
func endRows(ends []SessionEnd, seqs []int64) []any {
	args := make([]any, 0, 4*len(ends))
	for i, e := range ends {
		var inferred any // the seq of an inferred end, kept when a reported one replaces it
		if e.Inferred {
			inferred = seqs[i]
		}
		args = append(args, e.ID, e.End.UnixNano(), seqs[i], inferred)
	}
	return args
}

// seqsFrom returns n seqs from first on.
func seqsFrom(first int64, n int) []int64 {
	seqs := make([]int64, n)
	for i := range seqs {
		seqs[i] = first + int64(i)
	}
	return seqs
}

// indexWrite is a write of the session index on a goroutine of its own,
// beside the ledger's transaction.
type indexWrite struct {
	err  error
	done chan struct{}
}

// writeSessions appends the ledger entries of new sessions and of ends in
// one transaction of the main database while their index rows are written
// beside it (startIndexWrite); if either fails, neither stays and the
// index is left to catch up. The caller holds the index writer (x).
func (db *DB) writeSessions(ctx context.Context, x *sessionIndex, starts []SessionEntry, owners map[wg.Key]SessionOwner, ends []SessionEnd, hook SessionHook) error {
	var ix *indexWrite
	err := db.write(ctx, func(tx *sql.Tx) error {
		next, err := hook.Next(&Tx{tx: tx})
		if err != nil {
			return err
		}
		ix = db.startIndexWrite(ctx, x.open, db.insertRows, sessionRows(starts, owners, hook.Index, seqsFrom(next, len(starts))),
			endRows(ends, seqsFrom(next+int64(len(starts)), len(ends))), next+int64(len(starts)+len(ends))-1)
		if err := appendSessions(tx, starts, ends, next, hook); err != nil {
			return err
		}
		return ix.wait()
	})
	if err != nil {
		if ix != nil {
			ix.wait()
		}
		db.abandonIndexLocked()
		return err
	}
	x.pending += len(starts) + len(ends)
	return nil
}

// startIndexWrite inserts rows (sessionRows) with insert, sets the ends
// (endRows) and moves the watermark to upTo, in tx of the index, on a new
// goroutine. The caller holds the index's lock.
func (db *DB) startIndexWrite(ctx context.Context, tx *sql.Tx, insert *Values, rows, ends []any, upTo int64) *indexWrite {
	w := &indexWrite{done: make(chan struct{})}
	go func() {
		defer close(w.done)
		defer func() {
			if p := recover(); p != nil {
				// The stack, not the panic's value, which could quote a record.
				w.err = fmt.Errorf("writing the session index panicked: %s", debug.Stack())
			}
		}()
		if w.err = insert.Exec(ctx, tx, rows); w.err != nil {
			w.err = fmt.Errorf("storing session records: %w", w.err)
			return
		}
		if w.err = db.endRows.Exec(ctx, tx, ends); w.err != nil {
			w.err = fmt.Errorf("storing the ends of sessions: %w", w.err)
			return
		}
		_, w.err = tx.ExecContext(ctx, `UPDATE watermark SET seq = max(seq, ?)`, upTo)
	}()
	return w
}

// wait returns once the rows are written, with the error if they were not.
func (w *indexWrite) wait() error {
	<-w.done
	return w.err
}

// SessionSeqs returns the ledger seqs ("session" and "session-end"
// entries) of the sessions of account user.
func (db *DB) SessionSeqs(ctx context.Context, user string) ([]int64, error) {
	if err := db.FlushSessionIndex(ctx); err != nil {
		return nil, err
	}
	rows, err := db.index.QueryContext(ctx, `SELECT seq FROM sessions WHERE user_name = ? AND seq IS NOT NULL
		UNION ALL SELECT end_seq FROM sessions WHERE user_name = ? AND end_seq IS NOT NULL
		UNION ALL SELECT inferred_end_seq FROM sessions WHERE user_name = ? AND inferred_end_seq IS NOT end_seq AND inferred_end_seq IS NOT NULL
		ORDER BY 1`, user, user, user)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var seq int64
		if err := rows.Scan(&seq); err != nil {
			return nil, err
		}
		out = append(out, seq)
	}
	return out, rows.Err()
}

// HasSessions reports whether account user has session records.
func (db *DB) HasSessions(ctx context.Context, user string) (bool, error) {
	if err := db.FlushSessionIndex(ctx); err != nil {
		return false, err
	}
	var has bool
	err := db.index.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM sessions WHERE user_name = ?)`, user).Scan(&has)
	return has, err
}

// PeerOwners returns the owner of each device key that belongs to a
// device (tenant kind, location, whether the account has a subscriber
// record); unknown keys are left out.
func (db *DB) PeerOwners(ctx context.Context, keys []wg.Key) (map[wg.Key]SessionOwner, error) {
	owners, err := db.ownersOf(func(st *sql.Stmt, args ...any) (*sql.Rows, error) { return st.QueryContext(ctx, args...) }, keys)
	if err != nil {
		return nil, err
	}
	for k, o := range owners {
		if !o.Known {
			delete(owners, k)
		}
	}
	return owners, nil
}

// SessionsByExit returns the sessions that held port on the exit address
// exit at time at: the session whose block holds the port. More than one
// means the records contradict each other.
func (db *DB) SessionsByExit(ctx context.Context, exit netip.Addr, port uint16, at time.Time) ([]Session, error) {
	col := "exit_ipv4"
	if exit.Unmap().Is6() {
		col = "exit_ipv6"
	}
	// Index seeks only, whatever the number of sessions: the block that
	// holds the port is the one with the greatest port_lo at or below it,
	// and the session that held it at time at is among the last few of
	// that block to start before at (a block has one session at a time).
	x := exit.Unmap().String()
	return db.sessions(ctx, `rowid IN (SELECT rowid FROM sessions WHERE `+col+` = ? AND port_lo = (SELECT max(port_lo) FROM sessions WHERE `+col+` = ? AND port_lo <= ?)
		AND start_at <= ? ORDER BY start_at DESC LIMIT 8) AND port_hi >= ? AND (end_at IS NULL OR end_at > ?)`,
		x, x, int(port), at.UnixNano(), int(port), at.UnixNano())
}

// SessionsByTunnelAddr returns the sessions that held the tunnel address
// addr at time at.
func (db *DB) SessionsByTunnelAddr(ctx context.Context, addr netip.Addr, at time.Time) ([]Session, error) {
	col := "tunnel_ipv4"
	if addr.Unmap().Is6() {
		col = "tunnel_ipv6"
	}
	return db.sessions(ctx, col+` = ? AND `+heldDuring, addr.Unmap().String(), at.UnixNano(), at.UnixNano())
}

// SessionsByEndpoint returns the sessions that connected from the address
// whose blind index (SessionHook.Index) is index, from any port, at some
// time between from and to.
func (db *DB) SessionsByEndpoint(ctx context.Context, index string, from, to time.Time) ([]Session, error) {
	return db.sessions(ctx, `endpoint_index = ? AND `+heldDuring, index, to.UnixNano(), from.UnixNano())
}

// SessionsOfUser returns the sessions of a user's devices at some time
// between from and to.
func (db *DB) SessionsOfUser(ctx context.Context, user string, from, to time.Time) ([]Session, error) {
	return db.sessions(ctx, `user_name = ? AND `+heldDuring, user, to.UnixNano(), from.UnixNano())
}

// heldDuring selects sessions that started at or before its first argument
// and had not ended by its second: for a time t, (t, t); for a window, (its
// end, its start).
const heldDuring = `start_at <= ? AND (end_at IS NULL OR end_at > ?)`

const sessionCols = `id, gateway, public_key, coalesce(device_id, 0), coalesce(user_name, ''), coalesce(tunnel_ipv4, ''), coalesce(tunnel_ipv6, ''),
	coalesce(endpoint_index, ''), coalesce(seq, 0), coalesce(end_seq, 0), coalesce(exit_ipv4, ''), coalesce(exit_ipv6, ''), port_lo, port_hi, start_at, end_at`

func (db *DB) sessions(ctx context.Context, where string, args ...any) ([]Session, error) {
	if err := db.FlushSessionIndex(ctx); err != nil {
		return nil, err
	}
	rows, err := db.index.QueryContext(ctx, `SELECT `+sessionCols+` FROM sessions WHERE `+where+` ORDER BY start_at, id`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Session
	for rows.Next() {
		var s Session
		var pub, t4, t6, x4, x6 string
		var lo, hi int
		var start int64
		var end sql.NullInt64
		if err := rows.Scan(&s.ID, &s.Gateway, &pub, &s.DeviceID, &s.User, &t4, &t6, &s.EndpointIndex, &s.Seq, &s.EndSeq, &x4, &x6, &lo, &hi, &start, &end); err != nil {
			return nil, err
		}
		if s.PublicKey, err = wg.ParseKey(pub); err != nil {
			return nil, fmt.Errorf("session %s: %w", s.ID, err)
		}
		for _, f := range []struct {
			text string
			addr *netip.Addr
		}{{t4, &s.TunnelIPv4}, {t6, &s.TunnelIPv6}, {x4, &s.ExitIPv4}, {x6, &s.ExitIPv6}} {
			if f.text == "" {
				continue
			}
			if *f.addr, err = netip.ParseAddr(f.text); err != nil {
				return nil, fmt.Errorf("session %s: address unreadable", s.ID)
			}
		}
		s.PortLo, s.PortHi = uint16(lo), uint16(hi)
		s.Start = time.Unix(0, start).UTC()
		if end.Valid {
			s.End = time.Unix(0, end.Int64).UTC()
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

func addrOrNull(a netip.Addr) any {
	if !a.IsValid() {
		return nil
	}
	return a.Unmap().String()
}

func timeOrNull(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixNano()
}
