package store

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
)

// aliceSessions is a database with account alice, her device, and n
// session records of it (not stored).
func aliceSessions(t *testing.T, n int) (*DB, string, []api.SessionRecord) {
	t.Helper()
	ctx := context.Background()
	db, file := openTest(t)
	if _, err := db.CreateUser(ctx, "alice", api.Consumer); err != nil {
		t.Fatal(err)
	}
	pub := key(t)
	dev, err := db.CreateDevice(ctx, NewDevice{User: "alice", Name: "laptop", PublicKey: pub,
		IPv4: netip.MustParseAddr("10.200.0.2"), IPv6: netip.MustParseAddr("2001:db8:200::2")})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var recs []api.SessionRecord
	for i := range n {
		recs = append(recs, api.SessionRecord{
			ID: fmt.Sprintf("%032x", i+1), PublicKey: pub, TunnelIPv4: dev.IPv4, Endpoint: netip.MustParseAddrPort("198.51.100.7:40000"),
			ExitIPv4: netip.MustParseAddr("203.0.113.1"), PortLo: uint16(1024 + 256*i), PortHi: uint16(1279 + 256*i), Start: t0.Add(time.Duration(i) * time.Minute),
		})
	}
	return db, file, recs
}

func (db *DB) countIndex(t *testing.T, query string, args ...any) int {
	t.Helper()
	var n int
	if err := db.SessionIndex().QueryRow(query, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A failed write of the index fails the whole save: the ledger's entries
// are rolled back with it, so a record is never in the ledger unindexed
// by a failure the gateway is told of (it sends the record again).
func TestIndexWriteFailureRollsBackLedger(t *testing.T) {
	ctx := context.Background()
	db, _, recs := aliceSessions(t, 3)
	var fl fakeLedger
	if _, err := saveOne(ctx, db, "gw", recs[:1], keepAll, fl.hook()); err != nil {
		t.Fatal(err)
	}
	if _, err := db.SessionIndex().Exec(`CREATE TRIGGER refuse BEFORE INSERT ON sessions WHEN NEW.id = '` + recs[2].ID + `'
		BEGIN SELECT RAISE(FAIL, 'refused by the test'); END`); err != nil {
		t.Fatal(err)
	}
	if _, err := saveOne(ctx, db, "gw", recs[1:], keepAll, fl.hook()); err == nil {
		t.Fatal("saved though the index refused a row")
	}
	var entries int
	db.QueryRow(`SELECT count(*) FROM ledger_entries`).Scan(&entries)
	if entries != 1 || db.countIndex(t, `SELECT count(*) FROM sessions`) != 1 {
		t.Fatalf("after a failed index write: %d ledger entries, %d rows; want 1 and 1", entries, db.countIndex(t, `SELECT count(*) FROM sessions`))
	}
	if mark, _ := db.SessionIndexWatermark(ctx); mark != 1 {
		t.Fatalf("watermark %d, want 1", mark)
	}
	db.SessionIndex().Exec(`DROP TRIGGER refuse`)
	if _, err := saveOne(ctx, db, "gw", recs[1:], keepAll, fl.hook()); err != nil {
		t.Fatal(err)
	}
	if n := db.countIndex(t, `SELECT count(*) FROM sessions WHERE seq IN (1, 2, 3)`); n != 3 {
		t.Fatalf("%d rows with entries 1-3, want 3", n)
	}
}

// An index that is behind refuses new records until it has caught up
// with the ledger; catching up indexes exactly the entries it lacks.
func TestSessionIndexCatchUp(t *testing.T) {
	ctx := context.Background()
	db, _, recs := aliceSessions(t, 3)
	var fl fakeLedger
	closed := recs[0]
	closed.End = closed.Start.Add(time.Hour)
	for _, b := range [][]api.SessionRecord{recs[:2], {closed}, recs[2:]} {
		if _, err := saveOne(ctx, db, "gw", b, keepAll, fl.hook()); err != nil {
			t.Fatal(err)
		}
	}
	// As if the writes of the last two batches (entries 3 and 4) were
	// lost, and the loss noticed.
	for _, q := range []string{`DELETE FROM sessions WHERE seq = 4`, `UPDATE sessions SET end_at = NULL, end_seq = NULL`, `UPDATE watermark SET seq = 2`} {
		if _, err := db.SessionIndex().Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	db.index.behind.Store(true)
	if _, err := saveOne(ctx, db, "gw", recs[2:], keepAll, fl.hook()); !errors.Is(err, ErrSessionIndexBehind) {
		t.Fatalf("saving with the index behind: %v", err)
	}
	var asked []int64
	read := func(seqs []int64) ([]IndexedEntry, error) {
		asked = append(asked, seqs...)
		var out []IndexedEntry
		for _, seq := range seqs {
			e := IndexedEntry{Seq: seq}
			if r, ok := fl.records[seq]; ok {
				e.Session = &r
			} else {
				e.End = &SessionEnd{ID: fl.ends[seq], End: closed.End}
			}
			out = append(out, e)
		}
		return out, nil
	}
	n, err := db.CatchUpSessionIndex(ctx, read, testIndex)
	if err != nil || n != 2 || fmt.Sprint(asked) != "[3 4]" {
		t.Fatalf("caught up %d entries (read %v): %v; want entries 3 and 4", n, asked, err)
	}
	if db.SessionIndexBehind() {
		t.Fatal("still behind after catching up")
	}
	got, err := db.SessionsByExit(ctx, recs[2].ExitIPv4, recs[2].PortLo+1, recs[2].Start.Add(time.Second))
	if err != nil || len(got) != 1 || got[0].User != "alice" || got[0].Gateway != "gw" || got[0].Seq != 4 {
		t.Fatalf("the caught-up session: %+v %v", got, err)
	}
	if n := db.countIndex(t, `SELECT count(*) FROM sessions WHERE id = ? AND end_seq = 3 AND end_at = ?`, closed.ID, closed.End.UnixNano()); n != 1 {
		t.Fatal("the caught-up end is missing")
	}
	if _, err := saveOne(ctx, db, "gw", recs, keepAll, fl.hook()); err != nil || fl.next != 4 {
		t.Fatalf("resending after catching up: %v, %d entries (want 4)", err, fl.next)
	}
	// An index ahead of its ledger (a database restored without it) is
	// refused, by name.
	db.SessionIndex().Exec(`UPDATE watermark SET seq = 99`)
	if _, err := db.CatchUpSessionIndex(ctx, read, testIndex); err == nil {
		t.Fatal("caught up with an index ahead of the ledger")
	}
}

// A database from before the index had a file of its own has its session
// rows moved there when opened, with the watermark at the ledger's head.
func TestLegacySessionRowsMoved(t *testing.T) {
	ctx := context.Background()
	db, file, recs := aliceSessions(t, 2)
	var fl fakeLedger
	if _, err := saveOne(ctx, db, "gw", recs, keepAll, fl.hook()); err != nil {
		t.Fatal(err)
	}
	// Put the rows back where earlier versions kept them, and forget the
	// index.
	for _, q := range []string{
		`CREATE TABLE sessions (id TEXT PRIMARY KEY, gateway TEXT NOT NULL, public_key TEXT NOT NULL, device_id INTEGER, user_name TEXT, tunnel_ipv4 TEXT, tunnel_ipv6 TEXT,
			exit_ipv4 TEXT, exit_ipv6 TEXT, port_lo INTEGER NOT NULL, port_hi INTEGER NOT NULL, start_at INTEGER NOT NULL, end_at INTEGER, seq INTEGER, endpoint_index TEXT, end_seq INTEGER) STRICT`,
		`INSERT INTO sessions (id, gateway, public_key, user_name, port_lo, port_hi, start_at, seq) VALUES ('` + recs[0].ID + `', 'gw', 'k', 'alice', 1024, 1279, 1, 1)`,
		`INSERT INTO sessions (id, gateway, public_key, user_name, port_lo, port_hi, start_at) VALUES ('` + fmt.Sprintf("%032x", 99) + `', 'old', 'k', 'alice', 1024, 1279, 1)`,
		`INSERT INTO ledger_entries (chain, seq, kind, at, prev_hash, hash) VALUES ('records', 3, 'subscriber', 0, zeroblob(32), zeroblob(32))`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	db.SessionIndex().Exec(`UPDATE watermark SET seq = 0`)
	db.Close()
	db, err := Open(ctx, file)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var legacy int
	db.QueryRow(`SELECT count(*) FROM sqlite_schema WHERE name = 'sessions'`).Scan(&legacy)
	if legacy != 0 {
		t.Fatal("the main database still has its sessions table")
	}
	// The rows already in the index stay as they were; the unsealed one
	// (no entry) joins them.
	if n := db.countIndex(t, `SELECT count(*) FROM sessions`); n != 3 {
		t.Fatalf("%d rows in the index, want 3", n)
	}
	if n := db.countIndex(t, `SELECT count(*) FROM sessions WHERE gateway = 'old' AND seq IS NULL`); n != 1 {
		t.Fatal("the unsealed row was not moved")
	}
	if mark, _ := db.SessionIndexWatermark(ctx); mark != 3 {
		t.Fatalf("watermark %d, want the ledger's head 3", mark)
	}
}

// A purge drops an account's rows from the index once its transaction
// has committed, also at the next start if it did not get to it; a new
// account of the same name keeps its own.
func TestSessionPurgeFinishes(t *testing.T) {
	ctx := context.Background()
	db, file, recs := aliceSessions(t, 2)
	var fl fakeLedger
	if _, err := saveOne(ctx, db, "gw", recs[:1], keepAll, fl.hook()); err != nil {
		t.Fatal(err)
	}
	if _, err := db.SessionIndex().Exec(`INSERT INTO sessions (id, gateway, public_key, user_name, port_lo, port_hi, start_at) VALUES ('` + fmt.Sprintf("%032x", 99) + `', 'old', 'k', 'alice', 1024, 1279, 1)`); err != nil {
		t.Fatal(err)
	}
	if err := db.Update(ctx, func(tx *Tx) error { return tx.MarkSessionsPurgedTx(ctx, "alice") }); err != nil {
		t.Fatal(err)
	}
	// Alice's name is taken again, and a session of the new account is
	// stored, before the index drops the old rows.
	if _, err := saveOne(ctx, db, "gw", recs[1:], keepAll, fl.hook()); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db, err := Open(ctx, file)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.FinishSessionPurges(ctx); err != nil {
		t.Fatal(err)
	}
	if n := db.countIndex(t, `SELECT count(*) FROM sessions`); n != 1 {
		t.Fatalf("%d rows left, want the new account's 1", n)
	}
	if n := db.countIndex(t, `SELECT count(*) FROM sessions WHERE id = ?`, recs[1].ID); n != 1 {
		t.Fatal("the new account's row was dropped")
	}
	var pending int
	db.QueryRow(`SELECT count(*) FROM session_index_purges`).Scan(&pending)
	if pending != 0 {
		t.Fatalf("%d purges still pending", pending)
	}
}

// Ingest leaves index rows uncommitted between groups; lookups commit
// them first, so they see every record saved. A group that fails takes
// the uncommitted rows of earlier groups with it, whose entries are in
// the ledger: the index is behind until it catches up, and then has them.
func TestUncommittedIndexRows(t *testing.T) {
	ctx := context.Background()
	db, _, recs := aliceSessions(t, 3)
	var fl fakeLedger
	save := func(recs ...api.SessionRecord) error {
		_, err := db.SaveSessions(ctx, []GatewaySessions{{Gateway: "gw", Records: recs, Keep: keepAll}}, fl.hook())
		return err
	}
	if err := save(recs[0]); err != nil {
		t.Fatal(err)
	}
	if n := db.countIndex(t, `SELECT count(*) FROM sessions`); n != 0 {
		t.Fatalf("%d rows committed before a reader asked, want 0", n)
	}
	got, err := db.SessionsByExit(ctx, recs[0].ExitIPv4, recs[0].PortLo, recs[0].Start)
	if err != nil || len(got) != 1 || got[0].ID != recs[0].ID {
		t.Fatalf("lookup of a saved record: %+v %v", got, err)
	}

	if err := save(recs[1]); err != nil {
		t.Fatal(err)
	}
	// Entry 3 is taken behind the ledger's back: the next group's
	// entries do not get the seqs its rows were written with.
	db.Exec(`INSERT INTO ledger_entries (chain, seq, kind, at, body, prev_hash, hash) VALUES ('records', 3, 'subscriber', 0, x'00', zeroblob(32), zeroblob(32))`)
	racing := fl.hook()
	racing.Next = func(*Tx) (int64, error) { return 3, nil }
	if _, err := db.SaveSessions(ctx, []GatewaySessions{{Gateway: "gw", Records: recs[2:], Keep: keepAll}}, racing); err == nil {
		t.Fatal("saved with the wrong seqs")
	}
	if !db.SessionIndexBehind() {
		t.Fatal("the index lost record 2's row but does not say it is behind")
	}
	read := func(seqs []int64) ([]IndexedEntry, error) {
		var out []IndexedEntry
		for _, seq := range seqs {
			r := fl.records[seq]
			out = append(out, IndexedEntry{Seq: seq, Session: &r})
		}
		return out, nil
	}
	if n, err := db.CatchUpSessionIndex(ctx, read, testIndex); err != nil || n != 1 {
		t.Fatalf("caught up %d entries, %v; want record 2's", n, err)
	}
	if err := save(recs[2]); err != nil {
		t.Fatal(err)
	}
	db.FlushSessionIndex(ctx)
	if n := db.countIndex(t, `SELECT count(*) FROM sessions WHERE seq IN (1, 2, 4)`); n != 3 {
		t.Fatalf("%d rows with entries 1, 2 and 4, want 3", n)
	}
}
