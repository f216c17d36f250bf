package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
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
}

// SessionHook puts session records in the ledger, inside SaveSessions'
// transaction, and computes the blind index of endpoint addresses. All
// three functions are required.
type SessionHook struct {
	// Index returns the blind index of an endpoint address.
	Index func(ip netip.Addr) string
	// Stored records sessions when they are first stored and returns the
	// ledger seq of each entry, in order.
	Stored func(tx *sql.Tx, recs []api.SessionRecord) (seqs []int64, err error)
	// Ended records that stored open sessions ended and returns the ledger
	// seq of each entry, in order.
	Ended func(tx *sql.Tx, ends []SessionEnd) (seqs []int64, err error)
}

// SessionEnd says that a stored open session ended. It is also the body of
// the ledger entry that records it.
type SessionEnd struct {
	ID    string         `json:"id"`
	End   time.Time      `json:"end"`
	Clock *api.ClockSync `json:"clock,omitempty"` // the gateway's clock when it saw the end
}

// GatewaySessions is a batch of session records sent by a gateway, and
// which of them to keep: Keep is asked, for each record, with the device
// its key belongs to, and a record it refuses is not stored (the duty may
// no longer apply).
type GatewaySessions struct {
	Gateway string
	Records []api.SessionRecord
	Keep    func(SessionOwner) bool
}

// SaveSessions stores batches of session records in one transaction, in
// order, and returns for each batch how many records Keep accepted.
// Saving is idempotent by record ID: a record seen again changes nothing,
// except that the end of a stored open session is set once; a record
// whose ID another gateway stored changes nothing either. The table keeps
// only the index: the record itself goes through hook into the ledger, in
// the same transaction.
//
// The work is done for all batches at once, not a record at a time: one
// query for the owners of all keys, one for the records already stored,
// inserts of many rows per statement. Per record, statements cost more
// than the writing; per transaction, every index page a record touches is
// written again, so more records to a transaction share more pages.
func (db *DB) SaveSessions(ctx context.Context, batches []GatewaySessions, hook SessionHook) (stored []int, err error) {
	if hook.Index == nil || hook.Stored == nil || hook.Ended == nil {
		return nil, errors.New("store: SaveSessions needs a complete SessionHook")
	}
	var all []api.SessionRecord
	for _, b := range batches {
		all = append(all, b.Records...)
	}
	err = db.Tx(ctx, func(tx *sql.Tx) error {
		query := func(st *sql.Stmt, args ...any) (*sql.Rows, error) {
			return tx.StmtContext(ctx, st).QueryContext(ctx, args...)
		}
		owners, err := db.sessionOwners(query, all)
		if err != nil {
			return err
		}
		known, err := db.storedSessions(query, all)
		if err != nil {
			return err
		}
		// Plan in order: a record may start a session and a later one end
		// it.
		stored = make([]int, len(batches))
		var starts []newSession
		var ends []SessionEnd
		for i, b := range batches {
			for _, r := range b.Records {
				if !b.Keep(owners[r.PublicKey]) {
					continue
				}
				stored[i]++
				k, ok := known[r.ID]
				switch {
				case !ok:
					starts = append(starts, newSession{b.Gateway, r})
					known[r.ID] = storedSession{gateway: b.Gateway, ended: !r.End.IsZero(), start: r.Start.UnixNano()}
				case k.gateway == b.Gateway && !k.ended && !r.End.IsZero():
					if r.End.UnixNano() < k.start {
						return fmt.Errorf("%w: session record %s ends before the session it closes started", ErrBadSessionRecord, r.ID)
					}
					ends = append(ends, SessionEnd{ID: r.ID, End: r.End.UTC(), Clock: r.Clock})
					known[r.ID] = storedSession{gateway: b.Gateway, ended: true}
				}
			}
		}
		if err := db.insertSessions(ctx, tx, starts, owners, hook); err != nil {
			return err
		}
		return db.endSessions(ctx, tx, ends, hook)
	})
	if err != nil {
		return nil, err
	}
	return stored, nil
}

// newSession is a record to store, and the gateway that sent it.
type newSession struct {
	gateway string
	api.SessionRecord
}

// sessionStmts are the statements of session ingest, prepared at Open.
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
	if db.insertRows, err = PrepareInsert(ctx, db.DB, `INSERT OR FAIL INTO sessions (id, gateway, public_key, device_id, user_name, tunnel_ipv4, tunnel_ipv6,
			endpoint_index, exit_ipv4, exit_ipv6, port_lo, port_hi, start_at, end_at, seq) VALUES `, sessionValues); err != nil {
		return err
	}
	// The ends of many sessions in one statement: a statement per end
	// cost as much as the writing.
	if db.endRows, err = PrepareValues(ctx, db.DB, `UPDATE OR FAIL sessions SET end_at = v.column2, end_seq = v.column3 FROM (VALUES `, 3,
		`) AS v WHERE sessions.id = v.column1`); err != nil {
		return err
	}
	for _, p := range []struct {
		st *(*sql.Stmt)
		q  string
	}{
		{&db.owners, `SELECT d.public_key, d.id, u.name, u.kind FROM devices d JOIN users u ON u.id = d.user_id WHERE d.public_key` + InList},
		{&db.known, `SELECT id, gateway, end_at IS NOT NULL, start_at FROM sessions WHERE id` + InList},
	} {
		if *p.st, err = db.PrepareContext(ctx, p.q); err != nil {
			return err
		}
	}
	return nil
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
			if err := rows.Scan(&pub, &o.DeviceID, &o.User, &kind); err != nil {
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
	ended   bool
	start   int64 // Unix nanoseconds
}

// ErrBadSessionRecord marks a record that contradicts the stored one:
// the sender's error, not the server's.
var ErrBadSessionRecord = errors.New("bad session record")

// storedSessions returns the records of recs already stored, by ID.
func (db *DB) storedSessions(query queryFunc, recs []api.SessionRecord) (map[string]storedSession, error) {
	ids := make([]any, len(recs))
	for i, r := range recs {
		ids[i] = r.ID
	}
	known := map[string]storedSession{}
	err := EachIn(ids, func(ids []any) error {
		rows, err := query(db.known, ids...)
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

// insertSessions puts new records in the ledger and their index rows in
// the table.
func (db *DB) insertSessions(ctx context.Context, tx *sql.Tx, news []newSession, owners map[wg.Key]SessionOwner, hook SessionHook) error {
	if len(news) == 0 {
		return nil
	}
	recs := make([]api.SessionRecord, len(news))
	for i, n := range news {
		recs[i] = n.SessionRecord
	}
	seqs, err := hook.Stored(tx, recs)
	if err != nil {
		return fmt.Errorf("sealing session records: %w", err)
	}
	if len(seqs) != len(recs) {
		return fmt.Errorf("sealing session records: %d ledger entries for %d records", len(seqs), len(recs))
	}
	args := make([]any, 0, sessionValues*len(news))
	for i, r := range news {
		var device, user any
		if o := owners[r.PublicKey]; o.Known {
			device, user = o.DeviceID, o.User
		}
		args = append(args, r.ID, r.gateway, r.PublicKey.String(), device, user, addrOrNull(r.TunnelIPv4), addrOrNull(r.TunnelIPv6),
			hook.Index(r.Endpoint.Addr().Unmap()), addrOrNull(r.ExitIPv4), addrOrNull(r.ExitIPv6),
			int(r.PortLo), int(r.PortHi), r.Start.UnixNano(), timeOrNull(r.End), seqs[i])
	}
	if err := db.insertRows.Exec(ctx, tx, args); err != nil {
		return fmt.Errorf("storing session records: %w", err)
	}
	return nil
}

// endSessions records the ends of stored open sessions.
func (db *DB) endSessions(ctx context.Context, tx *sql.Tx, ends []SessionEnd, hook SessionHook) error {
	if len(ends) == 0 {
		return nil
	}
	seqs, err := hook.Ended(tx, ends)
	if err != nil {
		return fmt.Errorf("sealing the ends of sessions: %w", err)
	}
	if len(seqs) != len(ends) {
		return fmt.Errorf("sealing the ends of sessions: %d ledger entries for %d ends", len(seqs), len(ends))
	}
	args := make([]any, 0, 3*len(ends))
	for i, e := range ends {
		args = append(args, e.ID, e.End.UnixNano(), seqs[i])
	}
	if err := db.endRows.Exec(ctx, tx, args); err != nil {
		return fmt.Errorf("storing the ends of sessions: %w", err)
	}
	return nil
}

// SessionSeqsTx returns the ledger seqs ("session" and "session-end"
// entries) of the sessions of account user, in tx.
func SessionSeqsTx(ctx context.Context, tx *sql.Tx, user string) ([]int64, error) {
	rows, err := tx.QueryContext(ctx, `SELECT seq FROM sessions WHERE user_name = ? AND seq IS NOT NULL
		UNION ALL SELECT end_seq FROM sessions WHERE user_name = ? AND end_seq IS NOT NULL
		ORDER BY 1`, user, user)
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

// TenantKinds returns the tenant kind of each device key that belongs to a
// device; unknown keys are left out.
func (db *DB) TenantKinds(ctx context.Context, keys []wg.Key) (map[wg.Key]api.TenantKind, error) {
	owners, err := db.ownersOf(func(st *sql.Stmt, args ...any) (*sql.Rows, error) { return st.QueryContext(ctx, args...) }, keys)
	if err != nil {
		return nil, err
	}
	out := make(map[wg.Key]api.TenantKind, len(owners))
	for k, o := range owners {
		if o.Known {
			out[k] = o.Kind
		}
	}
	return out, nil
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
	rows, err := db.QueryContext(ctx, `SELECT `+sessionCols+` FROM sessions WHERE `+where+` ORDER BY start_at, id`, args...)
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
