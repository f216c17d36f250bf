package ledger

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/store"
)

var testSigner = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))

// session stands for the records other packages append.
type session struct {
	Subscriber string    `json:"subscriber"`
	Endpoint   string    `json:"endpoint"`
	TunnelIP   string    `json:"tunnel_ip"`
	ExitIP     string    `json:"exit_ip"`
	Ports      [2]int    `json:"ports"`
	Start      time.Time `json:"start"`
}

func testSession(i int) session {
	return session{
		Subscriber: fmt.Sprintf("subscriber-%d@example.org", i),
		Endpoint:   fmt.Sprintf("198.51.100.%d:%d", i%250+1, 40000+i%20000),
		TunnelIP:   fmt.Sprintf("10.200.%d.%d", i/250%250, i%250+1),
		ExitIP:     "203.0.113.9",
		Ports:      [2]int{1024 + i%64*1000, 1024 + i%64*1000 + 999},
		Start:      time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).Add(time.Duration(i) * time.Second),
	}
}

func openDB(t testing.TB, file string) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), file)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// newLedger opens a ledger in a fresh database file.
func newLedger(t testing.TB, keys *Keyring) (*Ledger, *store.DB, string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "meridian.db")
	db := openDB(t, file)
	l, err := Open(context.Background(), db, keys, testSigner)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	})
	return l, db, file
}

// appendSessions appends n sessions, batch to a transaction, and returns
// their seqs.
func appendSessions(t testing.TB, l *Ledger, db *store.DB, from, n, batch int) []int64 {
	t.Helper()
	ctx := context.Background()
	var seqs []int64
	for i := from; i < from+n; i += batch {
		err := db.Update(ctx, func(tx *store.Tx) error {
			for j := i; j < min(i+batch, from+n); j++ {
				seq, err := l.Append(ctx, tx, "session", testSession(j))
				if err != nil {
					return err
				}
				seqs = append(seqs, seq)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return seqs
}

var officer = Access{Who: "officer-1", Case: "CASE-2026-001", Query: "exit 203.0.113.9 port 4242 at 2026-01-02T03:05:00Z"}

func verifyOK(t *testing.T, l *Ledger) Report {
	t.Helper()
	r, err := l.Verify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() {
		t.Fatalf("verify found problems:\n%s", strings.Join(problems(r), "\n"))
	}
	return r
}

func problems(r Report) []string {
	var out []string
	for _, p := range r.Problems {
		out = append(out, p.String())
	}
	return out
}

func TestAppendReadVerify(t *testing.T) {
	ctx := context.Background()
	l, db, _ := newLedger(t, testKeyring(t, "k1"))
	seqs := appendSessions(t, l, db, 0, 250, 100)
	if want := int64(250); seqs[0] != 1 || seqs[len(seqs)-1] != want {
		t.Fatalf("seqs run %d..%d, want 1..%d", seqs[0], seqs[len(seqs)-1], want)
	}

	got, err := l.Read(ctx, officer, RecordChain, 7, 250)
	if err != nil {
		t.Fatal(err)
	}
	for i, seq := range []int64{7, 250} {
		var s session
		if err := json.Unmarshal(got[i].Body, &s); err != nil {
			t.Fatal(err)
		}
		if want := testSession(int(seq - 1)); s != want || got[i].Kind != "session" || got[i].Seq != seq {
			t.Errorf("entry %d: %+v %+v, want %+v", seq, got[i], s, want)
		}
	}

	// The read itself is on the record, sealed like the records.
	log, err := l.Read(ctx, Access{Who: "auditor", Case: "AUDIT-2026"}, AccessChain, 1)
	if err != nil {
		t.Fatal(err)
	}
	var a accessRecord
	if err := json.Unmarshal(log[0].Body, &a); err != nil {
		t.Fatal(err)
	}
	if a.Who != officer.Who || a.Case != officer.Case || a.Query != officer.Query || a.Results != 2 || a.Chain != RecordChain || !slices.Equal(a.Seqs, []int64{7, 250}) {
		t.Fatalf("access entry %+v", a)
	}
	if err := l.RecordAccess(ctx, officer, 3); err != nil {
		t.Fatal(err)
	}

	r := verifyOK(t, l)
	if len(r.Chains) != 2 || r.Chains[0].Entries != 250 || r.Chains[1].Entries != 3 {
		t.Fatalf("chains %+v", r.Chains)
	}

	for _, a := range []Access{{Case: "C"}, {Who: "w"}} {
		if _, err := l.Read(ctx, a, RecordChain, 1); err == nil {
			t.Errorf("read without who or case: %+v", a)
		}
		if err := l.RecordAccess(ctx, a, 1); err == nil {
			t.Errorf("access recorded without who or case: %+v", a)
		}
	}
	if _, err := l.Read(ctx, officer, RecordChain, 251); err == nil || !strings.Contains(err.Error(), "records entry 251 does not exist") {
		t.Fatalf("reading a missing entry: %v", err)
	}
	err = db.Update(ctx, func(tx *store.Tx) error {
		for _, kind := range []string{"", "purge", "access", "Session", "a b", strings.Repeat("k", 33)} {
			if _, err := l.Append(ctx, tx, kind, 1); err == nil {
				t.Errorf("appended kind %q", kind)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestAppendCommitsWithCallersTransaction(t *testing.T) {
	ctx := context.Background()
	l, db, _ := newLedger(t, testKeyring(t, "k1"))
	err := db.Update(ctx, func(tx *store.Tx) error {
		if _, err := l.Append(ctx, tx, "session", testSession(1)); err != nil {
			return err
		}
		return fmt.Errorf("the caller's own write failed")
	})
	if err == nil {
		t.Fatal("want the caller's error")
	}
	if seqs := appendSessions(t, l, db, 2, 1, 1); seqs[0] != 1 {
		t.Fatalf("after a rolled back append, the next entry is %d, want 1", seqs[0])
	}
	verifyOK(t, l)
}

// A savepoint rolled back under the ledger's cached head costs a retry,
// not a fork.
func TestAppendAfterRolledBackSavepoint(t *testing.T) {
	ctx := context.Background()
	l, db, _ := newLedger(t, testKeyring(t, "k1"))
	var seqs []int64
	err := db.Update(ctx, func(tx *store.Tx) error {
		for i, stmt := range []string{"", "SAVEPOINT s", "ROLLBACK TO s"} {
			if stmt != "" {
				if _, err := tx.SQL().ExecContext(ctx, stmt); err != nil {
					return err
				}
			}
			seq, err := l.Append(ctx, tx, "session", testSession(i))
			if err != nil {
				return err
			}
			seqs = append(seqs, seq)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(seqs, []int64{1, 2, 2}) {
		t.Fatalf("seqs %v, want [1 2 2]", seqs)
	}
	if r := verifyOK(t, l); r.Chains[0].Entries != 2 {
		t.Fatalf("chains %+v", r.Chains)
	}
}

// AppendAll writes many entries per statement; they chain exactly as
// entries appended one by one, also across Append calls in the same
// transaction and after a rolled back savepoint.
func TestAppendAll(t *testing.T) {
	ctx := context.Background()
	l, db, _ := newLedger(t, testKeyring(t, "k1"))
	batch := make([]session, 150) // more than one INSERT's worth
	for i := range batch {
		batch[i] = testSession(i + 1)
	}
	var seqs []int64
	err := db.Update(ctx, func(tx *store.Tx) error {
		seq, err := l.Append(ctx, tx, "session", testSession(0))
		if err != nil {
			return err
		}
		all, err := AppendAll(ctx, l, tx, "session", batch)
		if err != nil {
			return err
		}
		if _, err := tx.SQL().ExecContext(ctx, "SAVEPOINT s"); err != nil {
			return err
		}
		if _, err := AppendAll(ctx, l, tx, "session", batch[:3]); err != nil {
			return err
		}
		if _, err := tx.SQL().ExecContext(ctx, "ROLLBACK TO s"); err != nil {
			return err
		}
		last, err := AppendAll(ctx, l, tx, "session", []session{testSession(151)})
		if err != nil {
			return err
		}
		seqs = append(append([]int64{seq}, all...), last...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, seq := range seqs {
		if seq != int64(i+1) {
			t.Fatalf("seqs %v: want 1..152", seqs)
		}
	}
	if r := verifyOK(t, l); r.Chains[0].Entries != 152 {
		t.Fatalf("chains %+v", r.Chains)
	}
	got, err := l.Read(ctx, officer, RecordChain, 1, 64, 65, 151, 152)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []int{0, 63, 64, 150, 151} {
		var s session
		if err := json.Unmarshal(got[i].Body, &s); err != nil || s != testSession(want) {
			t.Errorf("entry %d: %+v %v, want session %d", got[i].Seq, s, err, want)
		}
	}
	if _, err := AppendAll(ctx, l, nil, "purge", batch); err == nil {
		t.Error("AppendAll took the ledger's own kind")
	}
}

// Two handles on one file (as two processes would be) and several
// goroutines on each append at once: one chain, no gaps, no forks.
func TestConcurrentAppends(t *testing.T) {
	keys := testKeyring(t, "k1")
	l1, db1, file := newLedger(t, keys)
	db2 := openDB(t, file)
	l2, err := Open(context.Background(), db2, keys, testSigner)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		l, db := l1, db1
		if g%2 == 1 {
			l, db = l2, db2
		}
		wg.Go(func() {
			ctx := context.Background()
			for b := range 5 {
				err := db.Update(ctx, func(tx *store.Tx) error {
					for i := range 20 {
						if _, err := l.Append(ctx, tx, "session", testSession(g*1000+b*20+i)); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					errs <- err
					return
				}
				if err := l.RecordAccess(ctx, officer, b); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	r := verifyOK(t, l2)
	if r.Chains[0].Entries != 8*5*20 || r.Chains[1].Entries != 8*5 {
		t.Fatalf("chains %+v", r.Chains)
	}
}

func TestEntriesAreAppendOnly(t *testing.T) {
	ctx := context.Background()
	l, db, _ := newLedger(t, testKeyring(t, "k1"))
	appendSessions(t, l, db, 0, 3, 3)
	if _, err := l.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{
		`INSERT INTO ledger_entries (chain, seq, kind, at, prev_hash, hash) VALUES ('records', 4, 'session', 0, x'00', x'00')`,
		`INSERT INTO ledger_entries (chain, seq, kind, at, prev_hash, hash) SELECT chain, 5, kind, at, hash, hash FROM ledger_entries WHERE seq = 3`,
		`DELETE FROM ledger_entries WHERE seq = 2`,
		`UPDATE ledger_entries SET hash = prev_hash WHERE seq = 2`,
		`UPDATE ledger_entries SET seq = 9 WHERE seq = 3`,
		`UPDATE ledger_entries SET body = x'00' WHERE seq = 2`,
		`UPDATE ledger_entries SET body = NULL WHERE seq = 2`, // a purge names its purge entry
		`DELETE FROM ledger_checkpoints`,
		`UPDATE ledger_checkpoints SET signature = x'00'`,
	} {
		if _, err := db.ExecContext(ctx, stmt); err == nil {
			t.Errorf("%s: allowed", stmt)
		}
	}
	verifyOK(t, l)
}

// fileHas reports whether any of the database's files (main, -wal, -shm)
// contains b.
func fileHas(t *testing.T, file string, b []byte) bool {
	t.Helper()
	names, err := filepath.Glob(file + "*")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(data, b) {
			return true
		}
	}
	return false
}

func TestPurge(t *testing.T) {
	ctx := context.Background()
	l, db, file := newLedger(t, testKeyring(t, "k1"))
	appendSessions(t, l, db, 0, 60, 20)
	if _, err := l.Read(ctx, officer, RecordChain, 11, 12); err != nil {
		t.Fatal(err)
	}

	type stored struct {
		body    []byte
		dataKey string
	}
	raw := map[int64]stored{}
	for _, seq := range []int64{10, 11, 12, 40} {
		var s stored
		if err := db.QueryRowContext(ctx, `SELECT body, data_key FROM ledger_entries WHERE chain = 'records' AND seq = ?`, seq).Scan(&s.body, &s.dataKey); err != nil {
			t.Fatal(err)
		}
		raw[seq] = s
		if !fileHas(t, file, s.body[12:40]) || !fileHas(t, file, []byte(s.dataKey)) {
			t.Fatalf("entry %d: its ciphertext is not in the database files; the scan cannot see anything", seq)
		}
	}
	for i := 0; i < 60; i++ { // personal data is never on disk in clear
		if s := testSession(i); fileHas(t, file, []byte(s.Subscriber)) || fileHas(t, file, []byte(s.Endpoint)) {
			t.Fatalf("session %d is on disk in clear", i)
		}
	}
	if fileHas(t, file, []byte(officer.Query)) {
		t.Fatal("the access log's query is on disk in clear")
	}

	if err := l.Purge(ctx, RecordChain, []int64{12, 10, 11, 40, 11}, "retention: 5 years after cancellation"); err != nil {
		t.Fatal(err)
	}
	r := verifyOK(t, l)
	if r.Chains[0].Entries != 61 || r.Chains[0].Purged != 4 {
		t.Fatalf("records chain %+v", r.Chains[0])
	}
	for seq, s := range raw {
		if fileHas(t, file, s.body[12:40]) || fileHas(t, file, []byte(s.dataKey)) {
			t.Errorf("entry %d: purged, but its ciphertext or data key is still in the database files", seq)
		}
	}

	got, err := l.Read(ctx, officer, RecordChain, 10, 13, 61)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Body != nil || got[0].Kind != "session" || got[1].Body == nil {
		t.Fatalf("after purge: %+v", got[:2])
	}
	var rec purgeRecord
	if err := json.Unmarshal(got[2].Body, &rec); err != nil {
		t.Fatal(err)
	}
	want := purgeRecord{Reason: "retention: 5 years after cancellation", Count: 4, Kinds: map[string]int{"session": 4}, Ranges: [][2]int64{{10, 12}, {40, 40}}}
	if got[2].Kind != "purge" || fmt.Sprint(rec) != fmt.Sprint(want) {
		t.Fatalf("purge entry %s %+v, want %+v", got[2].Kind, rec, want)
	}

	for _, tc := range []struct {
		seqs []int64
		want string
	}{
		{[]int64{13, 10}, "records entry 10 is already purged"},
		{[]int64{99}, "records entry 99 does not exist"},
		{[]int64{61}, "records entry 61 is a purge entry"},
		{nil, "needs entries and a reason"},
	} {
		if err := l.Purge(ctx, RecordChain, tc.seqs, "retention"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Purge(%v): %v, want %q", tc.seqs, err, tc.want)
		}
	}
	got, err = l.Read(ctx, officer, RecordChain, 13)
	if err != nil || got[0].Body == nil {
		t.Fatalf("a refused purge removed entry 13: %v", err)
	}

	// The access chain purges the same way.
	if err := l.Purge(ctx, AccessChain, []int64{1}, "retention"); err != nil {
		t.Fatal(err)
	}
	verifyOK(t, l)
}

// tamper changes the database as someone with the file would: through
// their own connection, after dropping the append-only triggers.
func tamper(t *testing.T, file string, change func(db *sql.DB)) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+file+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, trigger := range []string{"ledger_entries_linked", "ledger_entries_no_delete", "ledger_entries_fixed", "ledger_entries_purge_once", "ledger_checkpoints_no_update", "ledger_checkpoints_no_delete"} {
		mustExec(t, db, `DROP TRIGGER `+trigger)
	}
	change(db)
}

func mustExec(t *testing.T, db *sql.DB, stmt string, args ...any) {
	t.Helper()
	if _, err := db.Exec(stmt, args...); err != nil {
		t.Fatalf("%s: %v", stmt, err)
	}
}

// rawEntry is a row of ledger_entries, as a forger handles it.
type rawEntry struct {
	chain      Chain
	seq        int64
	kind       string
	at         int64
	body       []byte
	dataKey    sql.NullString
	prev, hash []byte
}

func load(t *testing.T, db *sql.DB, chain Chain, seq int64) rawEntry {
	t.Helper()
	e := rawEntry{chain: chain, seq: seq}
	err := db.QueryRow(`SELECT kind, at, body, data_key, prev_hash, hash FROM ledger_entries WHERE chain = ? AND seq = ?`, string(chain), seq).
		Scan(&e.kind, &e.at, &e.body, &e.dataKey, &e.prev, &e.hash)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func insert(t *testing.T, db *sql.DB, e rawEntry) {
	t.Helper()
	mustExec(t, db, `INSERT INTO ledger_entries (chain, seq, kind, at, body, data_key, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		string(e.chain), e.seq, e.kind, e.at, e.body, e.dataKey, e.prev, e.hash)
}

// shift renumbers records entries from seq on by delta, from the end.
func shift(t *testing.T, db *sql.DB, from, last, delta int64) {
	for seq := last; seq >= from; seq-- {
		mustExec(t, db, `UPDATE ledger_entries SET seq = ? WHERE chain = 'records' AND seq = ?`, seq+delta, seq)
	}
}

func TestVerifyFindsTampering(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, db *sql.DB)
		want   []string
	}{{
		name: "body byte changed",
		change: func(t *testing.T, db *sql.DB) {
			e := load(t, db, RecordChain, 57)
			e.body[30] ^= 0x01
			mustExec(t, db, `UPDATE ledger_entries SET body = ? WHERE chain = 'records' AND seq = 57`, e.body)
		},
		want: []string{"entry 57 (records/session): contents changed (hash mismatch)"},
	}, {
		name: "time changed",
		change: func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `UPDATE ledger_entries SET at = at - 3600000000000 WHERE chain = 'records' AND seq = 20`)
		},
		want: []string{"entry 20 (records/session): contents changed (hash mismatch)"},
	}, {
		name: "data key removed",
		change: func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `UPDATE ledger_entries SET data_key = NULL WHERE chain = 'records' AND seq = 8`)
		},
		want: []string{"entry 8 (records/session): data key missing: the body cannot be opened"},
	}, {
		name: "rows deleted",
		change: func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `DELETE FROM ledger_entries WHERE chain = 'records' AND seq IN (12, 13)`)
		},
		want: []string{"entries 12-13 (records): missing"},
	}, {
		name: "access entry deleted",
		change: func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `DELETE FROM ledger_entries WHERE chain = 'access' AND seq = 2`)
		},
		want: []string{"entry 2 (access): missing"},
	}, {
		name: "two rows swapped",
		change: func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `UPDATE ledger_entries SET seq = 1000 WHERE chain = 'records' AND seq = 40`)
			mustExec(t, db, `UPDATE ledger_entries SET seq = 40 WHERE chain = 'records' AND seq = 41`)
			mustExec(t, db, `UPDATE ledger_entries SET seq = 41 WHERE chain = 'records' AND seq = 1000`)
		},
		want: []string{
			"entry 40 (records/session): out of order: written as entry 41",
			"entry 41 (records/session): out of order: written as entry 40",
		},
	}, {
		name: "forged row inserted in the middle",
		change: func(t *testing.T, db *sql.DB) {
			// The forger knows the hash and links the row properly; the
			// entries after it no longer stand where they were written.
			e := load(t, db, RecordChain, 31)
			shift(t, db, 31, 100, 1)
			e.prev = load(t, db, RecordChain, 30).hash
			e.at++
			e.hash = entryHash(e.prev, 31, RecordChain, e.kind, e.at, e.body)
			insert(t, db, e)
		},
		want: []string{
			"entries 32-101 (records): out of order: written as entries 31-100",
			"entry 100 (records): differs from the hash checkpoint 1 signed",
		},
	}, {
		name: "forged row appended",
		change: func(t *testing.T, db *sql.DB) {
			e := load(t, db, RecordChain, 100)
			e.seq, e.prev, e.hash = 101, bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
			insert(t, db, e)
		},
		want: []string{"entry 101 (records/session): not in chain: hash does not match and prev hash does not link to entry 100 (inserted, or rewritten)"},
	}, {
		name: "forged row appended, hashed, not linked",
		change: func(t *testing.T, db *sql.DB) {
			e := load(t, db, RecordChain, 100)
			e.seq, e.prev = 101, bytes.Repeat([]byte{1}, 32)
			e.hash = entryHash(e.prev, 101, RecordChain, e.kind, e.at, e.body)
			insert(t, db, e)
		},
		want: []string{
			"entry 101 (records/session): does not link to entry 100 (prev hash differs): one of them was replaced, or this one inserted",
			`entry 101 (records/session): data key: sealed ledger/records/101: does not open under key "k1": altered, or sealed for another field`,
		},
	}, {
		name: "entry rewritten and the chain recomputed after it",
		change: func(t *testing.T, db *sql.DB) {
			prev := load(t, db, RecordChain, 49).hash
			for seq := int64(50); seq <= 100; seq++ {
				e := load(t, db, RecordChain, seq)
				if seq == 50 {
					e.kind = "subscriber"
				}
				e.prev, e.hash = prev, entryHash(prev, seq, RecordChain, e.kind, e.at, e.body)
				mustExec(t, db, `UPDATE ledger_entries SET kind = ?, prev_hash = ?, hash = ? WHERE chain = 'records' AND seq = ?`, e.kind, e.prev, e.hash, seq)
				prev = e.hash
			}
		},
		want: []string{"entry 100 (records): differs from the hash checkpoint 1 signed"},
	}, {
		name: "tail deleted",
		change: func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `DELETE FROM ledger_entries WHERE chain = 'records' AND seq > 90`)
		},
		want: []string{"entry 100 (records): missing, though checkpoint 1 signed it"},
	}, {
		name: "body removed without a purge",
		change: func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `UPDATE ledger_entries SET body = NULL, data_key = NULL WHERE chain = 'records' AND seq = 30`)
		},
		want: []string{"entry 30 (records/session): body removed without a purge entry"},
	}, {
		name: "body removed, naming an entry as its purge",
		change: func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `UPDATE ledger_entries SET body = NULL, data_key = NULL, purged_by = 31 WHERE chain = 'records' AND seq = 30`)
		},
		want: []string{"entry 30 (records/session): body removed, but entry 31 is no purge entry naming it"},
	}, {
		name: "checkpoint altered",
		change: func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `UPDATE ledger_checkpoints SET records_seq = 90, records_hash = (SELECT hash FROM ledger_entries WHERE chain = 'records' AND seq = 90)`)
		},
		want: []string{"checkpoint 1: signature does not verify"},
	}, {
		name: "data keys swapped",
		change: func(t *testing.T, db *sql.DB) {
			a, b := load(t, db, RecordChain, 10), load(t, db, RecordChain, 11)
			mustExec(t, db, `UPDATE ledger_entries SET data_key = ? WHERE chain = 'records' AND seq = 10`, b.dataKey)
			mustExec(t, db, `UPDATE ledger_entries SET data_key = ? WHERE chain = 'records' AND seq = 11`, a.dataKey)
		},
		want: []string{
			`entry 10 (records/session): data key: sealed ledger/records/10: does not open under key "k1": altered, or sealed for another field`,
			`entry 11 (records/session): data key: sealed ledger/records/11: does not open under key "k1": altered, or sealed for another field`,
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			l, db, file := newLedger(t, testKeyring(t, "k1"))
			appendSessions(t, l, db, 0, 100, 50)
			for range 3 {
				if _, err := l.Read(ctx, officer, RecordChain, 5); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := l.Checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
			verifyOK(t, l)

			tamper(t, file, func(db *sql.DB) { tc.change(t, db) })
			r, err := l.Verify(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if got := problems(r); !slices.Equal(got, tc.want) || r.OK() {
				t.Fatalf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestReadRefusesAlteredEntry(t *testing.T) {
	ctx := context.Background()
	l, db, file := newLedger(t, testKeyring(t, "k1"))
	appendSessions(t, l, db, 0, 3, 3)
	tamper(t, file, func(db *sql.DB) {
		mustExec(t, db, `UPDATE ledger_entries SET kind = 'subscriber' WHERE chain = 'records' AND seq = 2`)
	})
	if _, err := l.Read(ctx, officer, RecordChain, 2); err == nil || err.Error() != "ledger: records entry 2 does not match its hash: run verify" {
		t.Fatalf("reading an altered entry: %v", err)
	}
}

func TestReportIsBounded(t *testing.T) {
	l, db, file := newLedger(t, testKeyring(t, "k1"))
	appendSessions(t, l, db, 0, maxProblems+50, 1000)
	tamper(t, file, func(db *sql.DB) {
		mustExec(t, db, `UPDATE ledger_entries SET at = at + 1`)
	})
	r, err := l.Verify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Problems) != maxProblems || r.Omitted != 50 || r.OK() {
		t.Fatalf("%d problems, %d omitted", len(r.Problems), r.Omitted)
	}
}

// Without keys, Verify checks all but data keys; with held checkpoints it
// catches a truncation whose checkpoints were deleted too.
func TestVerifyWithPublicKeyAndHeldCheckpoint(t *testing.T) {
	ctx := context.Background()
	l, db, file := newLedger(t, testKeyring(t, "k1"))
	appendSessions(t, l, db, 0, 100, 100)
	held, err := l.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The checkpoint as an auditor keeps it: JSON, outside the database.
	b, err := json.Marshal(held)
	if err != nil {
		t.Fatal(err)
	}
	var copy Checkpoint
	if err := json.Unmarshal(b, &copy); err != nil {
		t.Fatal(err)
	}
	pub := testSigner.Public().(ed25519.PublicKey)
	if r, err := Verify(ctx, db, pub, copy); err != nil || !r.OK() || r.Checkpoints != 2 {
		t.Fatalf("verify with the public key: %v %v", err, problems(r))
	}
	otherPub, _, _ := ed25519.GenerateKey(nil)
	if r, err := Verify(ctx, db, otherPub); err != nil || fmt.Sprint(problems(r)) != "[checkpoint 1: signature does not verify]" {
		t.Fatalf("verify with another public key: %v %v", err, problems(r))
	}

	tamper(t, file, func(db *sql.DB) {
		mustExec(t, db, `DELETE FROM ledger_entries WHERE chain = 'records' AND seq > 90`)
		mustExec(t, db, `DELETE FROM ledger_checkpoints`)
	})
	if r, err := Verify(ctx, db, pub); err != nil || !r.OK() {
		t.Fatalf("the truncated ledger with its checkpoints deleted: %v %v", err, problems(r))
	}
	r, err := Verify(ctx, db, pub, copy)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("[entry 100 (records): missing, though held checkpoint 1 of %s signed it]", held.At.Format(time.RFC3339))
	if got := fmt.Sprint(problems(r)); got != want {
		t.Fatalf("problems %s, want %s", got, want)
	}
}

func TestVerifyAfterPurgeFindsTampering(t *testing.T) {
	ctx := context.Background()
	l, db, file := newLedger(t, testKeyring(t, "k1"))
	appendSessions(t, l, db, 0, 30, 30)
	if err := l.Purge(ctx, RecordChain, []int64{5, 6, 20}, "retention"); err != nil {
		t.Fatal(err)
	}
	appendSessions(t, l, db, 30, 5, 5)
	verifyOK(t, l)

	tamper(t, file, func(db *sql.DB) {
		// Name another entry in the purge entry instead of 20...
		e := load(t, db, RecordChain, 31)
		body := bytes.Replace(e.body, []byte("[20,20]"), []byte("[21,21]"), 1)
		mustExec(t, db, `UPDATE ledger_entries SET body = ?, hash = ? WHERE chain = 'records' AND seq = 31`, body, entryHash(e.prev, 31, RecordChain, e.kind, e.at, body))
		// ...and move a purged entry's mark to an entry that is no purge.
		mustExec(t, db, `UPDATE ledger_entries SET purged_by = 33 WHERE chain = 'records' AND seq = 5`)
	})
	r, err := l.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"entry 5 (records/session): body removed, but entry 33 is no purge entry naming it",
		"entry 20 (records/session): body removed, but entry 31 is no purge entry naming it",
		"entry 5 (records/session): marked purged by entry 33, though purge entry 31 removed it",
		"entry 21 (records/session): still holds its body, though purge entry 31 removed it",
		"entry 32 (records/session): does not link to entry 31 (prev hash differs): one of them was replaced, or this one inserted",
	}
	if got := problems(r); !slices.Equal(got, want) {
		t.Fatalf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestRotateKey(t *testing.T) {
	ctx := context.Background()
	l, db, file := newLedger(t, testKeyring(t, "k1"))
	appendSessions(t, l, db, 0, 2500, 500)
	if _, err := l.Read(ctx, officer, RecordChain, 1, 2500); err != nil {
		t.Fatal(err)
	}
	if err := l.Purge(ctx, RecordChain, []int64{3}, "retention"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	hashes := func() []byte {
		var all []byte
		rows, err := db.QueryContext(ctx, `SELECT body, hash FROM ledger_entries ORDER BY chain, seq`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var body, hash []byte
			rows.Scan(&body, &hash)
			all = append(append(all, body...), hash...)
		}
		return all
	}
	before := hashes()

	// The operator adds k2 as the active key and rotates.
	rotating, err := Open(context.Background(), db, testKeyring(t, "k1", "k2"), testSigner)
	if err != nil {
		t.Fatal(err)
	}
	n, err := rotating.RotateKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := 2500 - 1 + 1; n != want { // records less the purged one, and the access entry
		t.Fatalf("re-sealed %d data keys, want %d", n, want)
	}
	if n, err := rotating.RotateKey(ctx); err != nil || n != 0 {
		t.Fatalf("second rotation re-sealed %d: %v", n, err)
	}
	if !bytes.Equal(before, hashes()) {
		t.Fatal("rotation changed bodies or hashes")
	}
	var old int
	db.QueryRowContext(ctx, `SELECT count(*) FROM ledger_entries WHERE data_key NOT LIKE 'v1:k2:%'`).Scan(&old)
	if old != 0 {
		t.Fatalf("%d data keys not under k2", old)
	}

	// Then removes k1: everything still opens and verifies.
	l2, err := Open(context.Background(), db, testKeyring(t, "k2"), testSigner)
	if err != nil {
		t.Fatal(err)
	}
	got, err := l2.Read(ctx, officer, RecordChain, 2500)
	if err != nil {
		t.Fatal(err)
	}
	var s session
	if err := json.Unmarshal(got[0].Body, &s); err != nil || s != testSession(2499) {
		t.Fatalf("after rotation: %+v %v", s, err)
	}
	verifyOK(t, l2)

	// A ledger without the new key says which key it lacks.
	if _, err := l.Read(ctx, officer, RecordChain, 1); err == nil || !strings.Contains(err.Error(), `unknown key id "k2" (the keyring has k1)`) {
		t.Fatalf("reading with only the old key: %v", err)
	}

	// Tampering after rotation is still caught.
	tamper(t, file, func(db *sql.DB) {
		e := load(t, db, RecordChain, 1234)
		e.body[20] ^= 0x80
		mustExec(t, db, `UPDATE ledger_entries SET body = ? WHERE chain = 'records' AND seq = 1234`, e.body)
	})
	r, err := l2.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(problems(r)); got != "[entry 1234 (records/session): contents changed (hash mismatch)]" {
		t.Fatalf("problems %s", got)
	}
}

func TestOpenChecksItsArguments(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "m.db"))
	keys := testKeyring(t, "k1")
	if _, err := Open(context.Background(), db, nil, testSigner); err == nil {
		t.Error("opened without a keyring")
	}
	if _, err := Open(context.Background(), db, keys, testSigner[:32]); err == nil {
		t.Error("opened with a short signing key")
	}
	if _, err := Verify(context.Background(), db, nil); err == nil {
		t.Error("verified without a public key")
	}
}

// BenchmarkAppendAll is BenchmarkAppend with the batch appended at once.
func BenchmarkAppendAll(b *testing.B) {
	ctx := context.Background()
	l, db, _ := newLedger(b, testKeyring(b, "k1"))
	records := 0
	batch := make([]session, 1000)
	for b.Loop() {
		for i := range batch {
			batch[i] = testSession(records + i)
		}
		err := db.Update(ctx, func(tx *store.Tx) error {
			_, err := AppendAll(ctx, l, tx, "session", batch)
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		records += len(batch)
	}
	b.ReportMetric(float64(records)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkAppend measures session ingest: batches of 1000 records, each
// batch one transaction, on a SQLite file (WAL, synchronous=FULL).
func BenchmarkAppend(b *testing.B) {
	ctx := context.Background()
	l, db, _ := newLedger(b, testKeyring(b, "k1"))
	records := 0
	for b.Loop() {
		err := db.Update(ctx, func(tx *store.Tx) error {
			for range 1000 {
				if _, err := l.Append(ctx, tx, "session", testSession(records)); err != nil {
					return err
				}
				records++
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(records)/b.Elapsed().Seconds(), "records/s")
}

// A purge of many scattered entries (one account's sessions among
// others') removes exactly those, and the chain verifies.
func TestPurgeScatteredEntries(t *testing.T) {
	ctx := context.Background()
	l, db, _ := newLedger(t, testKeyring(t, "k1"))
	appendSessions(t, l, db, 0, 400, 400)
	var seqs []int64
	for seq := int64(3); seq <= 400; seq += 3 { // 133 entries, none adjacent
		seqs = append(seqs, seq)
	}
	if err := l.PurgeWith(ctx, RecordChain, seqs, "retention", nil); err != nil {
		t.Fatal(err)
	}
	if err := l.ScrubLog(ctx); err != nil {
		t.Fatal(err)
	}
	if r := verifyOK(t, l); r.Chains[0].Purged != int64(len(seqs)) {
		t.Fatalf("records chain %+v, want %d purged", r.Chains[0], len(seqs))
	}
	var wrong int
	db.QueryRow(`SELECT count(*) FROM ledger_entries WHERE chain = 'records' AND kind = 'session' AND (body IS NULL) <> (seq % 3 = 0)`).Scan(&wrong)
	if wrong != 0 {
		t.Fatalf("%d entries purged that should not be, or kept that should not", wrong)
	}
	if err := l.PurgeWith(ctx, RecordChain, []int64{1, 2, 3}, "again", nil); err == nil || !strings.Contains(err.Error(), "entry 3 is already purged") {
		t.Fatalf("purging a purged entry: %v", err)
	}
}
