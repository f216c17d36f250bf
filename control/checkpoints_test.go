package control

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/ledger"
	"github.com/meridian-vpn/meridian/store"
)

// appendRecords appends n records to the ledger's records chain.
func (ts *testServer) appendRecords(t *testing.T, n int) {
	t.Helper()
	ctx := context.Background()
	err := ts.db.Update(ctx, func(tx *store.Tx) error {
		for i := 0; i < n; i++ {
			if _, err := ts.ledger.Append(ctx, tx, "test-record", map[string]int{"n": i}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (ts *testServer) checkpoint(t *testing.T) ledger.Checkpoint {
	t.Helper()
	c, err := ts.ledger.Checkpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// exportCheckpoints reads every stored checkpoint through the API, a page
// of two at a time, as the file `compliance checkpoints --out` writes.
func exportCheckpoints(t *testing.T, c *api.Client) api.CheckpointFile {
	t.Helper()
	f := api.CheckpointFile{Format: api.CheckpointsFormat, ExportedAt: time.Now().UTC()}
	for after := int64(0); ; {
		var page api.CheckpointList
		if err := c.Do(context.Background(), "GET", fmt.Sprintf("/compliance/checkpoints?limit=2&after=%d", after), nil, &page); err != nil {
			t.Fatal(err)
		}
		f.PublicKey, f.KeyFingerprint = page.PublicKey, page.KeyFingerprint
		f.Checkpoints = append(f.Checkpoints, page.Checkpoints...)
		if !page.More {
			break
		}
		after = page.Checkpoints[len(page.Checkpoints)-1].ID
	}
	if err := f.Check(); err != nil {
		t.Fatal(err)
	}
	return f
}

func verifyWith(t *testing.T, c *api.Client, files ...api.CheckpointFile) api.VerifyReport {
	t.Helper()
	var rep api.VerifyReport
	var err error
	if len(files) == 0 {
		err = c.Do(context.Background(), "GET", "/compliance/verify", nil, &rep)
	} else {
		err = c.Do(context.Background(), "POST", "/compliance/verify", api.VerifyRequest{Held: files}, &rep)
	}
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func messages(rep api.VerifyReport) string {
	var ms []string
	for _, p := range rep.Problems {
		ms = append(ms, p.Message)
	}
	for _, d := range rep.Divergence {
		ms = append(ms, "divergence: "+d.What)
	}
	return strings.Join(ms, "\n")
}

// forgeHash is an entry's hash as the ledger's package doc defines it: what
// someone with the file recomputes after rewriting entries.
func forgeHash(prev []byte, seq int64, chain, kind string, at int64, body []byte) []byte {
	b := []byte("meridian ledger entry v1\x00")
	b = append(b, prev...)
	b = binary.BigEndian.AppendUint64(b, uint64(seq))
	b = append(b, byte(len(chain)))
	b = append(b, chain...)
	b = append(b, byte(len(kind)))
	b = append(b, kind...)
	b = binary.BigEndian.AppendUint64(b, uint64(at))
	b = binary.BigEndian.AppendUint32(b, uint32(len(body)))
	b = append(b, body...)
	sum := sha256.Sum256(b)
	return sum[:]
}

// tamperFile changes the server's database as someone with the file would:
// through a connection of their own, past the append-only triggers.
func (ts *testServer) tamperFile(t *testing.T, change func(db *sql.DB)) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(ts.cfg.DataDir, "meridian.db")+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, trigger := range []string{"ledger_entries_linked", "ledger_entries_no_delete", "ledger_entries_fixed", "ledger_checkpoints_no_delete"} {
		if _, err := db.Exec(`DROP TRIGGER IF EXISTS ` + trigger); err != nil {
			t.Fatal(err)
		}
	}
	change(db)
}

// rewriteTail changes the time of records entries from seq on and
// recomputes every hash from there, so that the chain links again.
func rewriteTail(t *testing.T, db *sql.DB, from int64) {
	t.Helper()
	var prev []byte
	if err := db.QueryRow(`SELECT prev_hash FROM ledger_entries WHERE chain = 'records' AND seq = ?`, from).Scan(&prev); err != nil {
		t.Fatal(err)
	}
	rows, err := db.Query(`SELECT seq, kind, at, body FROM ledger_entries WHERE chain = 'records' AND seq >= ? ORDER BY seq`, from)
	if err != nil {
		t.Fatal(err)
	}
	type entry struct {
		seq, at int64
		kind    string
		body    []byte
	}
	var es []entry
	for rows.Next() {
		var e entry
		if err := rows.Scan(&e.seq, &e.kind, &e.at, &e.body); err != nil {
			t.Fatal(err)
		}
		es = append(es, e)
	}
	rows.Close()
	for _, e := range es {
		at := e.at - int64(time.Hour)
		hash := forgeHash(prev, e.seq, "records", e.kind, at, e.body)
		if _, err := db.Exec(`UPDATE ledger_entries SET at = ?, prev_hash = ?, hash = ? WHERE chain = 'records' AND seq = ?`, at, prev, hash, e.seq); err != nil {
			t.Fatal(err)
		}
		prev = hash
	}
}

func (ts *testServer) ledgerRows(t *testing.T) string {
	t.Helper()
	var entries, checkpoints int
	ts.db.QueryRow(`SELECT count(*) FROM ledger_entries`).Scan(&entries)
	ts.db.QueryRow(`SELECT count(*) FROM ledger_checkpoints`).Scan(&checkpoints)
	return fmt.Sprintf("%d entries, %d checkpoints", entries, checkpoints)
}

// TestHeldCheckpointsCatchRewrittenTail: checkpoints exported through the
// API verify a sound ledger; after the tail of the records chain is
// rewritten (hashes recomputed) and the stored checkpoints deleted, a
// plain verify passes but one with the held file fails and names where the
// chain parts from it; then after a truncation too. A copy of the database
// verifies the same way offline.
func TestHeldCheckpointsCatchRewrittenTail(t *testing.T) {
	ts := newTestServer(t, "10.200.0.0/24")
	ctx := context.Background()
	auditor := ts.token(t, api.RoleAuditor)
	ts.appendRecords(t, 10)
	c1 := ts.checkpoint(t) // records 10
	ts.appendRecords(t, 10)
	if err := ts.ledger.RecordAccess(ctx, ledger.Access{Who: "test", Case: "CASE-1", Query: "q"}, 0); err != nil {
		t.Fatal(err)
	}
	c2 := ts.checkpoint(t) // records 20, access 1
	ts.appendRecords(t, 5)
	c3 := ts.checkpoint(t) // records 25, access 1

	held := exportCheckpoints(t, auditor)
	if len(held.Checkpoints) != 3 || held.Checkpoints[0].ID != c1.ID || held.Checkpoints[2].Records.Seq != 25 ||
		held.KeyFingerprint != api.KeyFingerprint(ts.ledger.PublicKey()) {
		t.Fatalf("exported %+v", held)
	}
	// since: only those signed at or after a time.
	var since api.CheckpointList
	if err := auditor.Do(ctx, "GET", "/compliance/checkpoints?since="+c2.At.Format(time.RFC3339Nano), nil, &since); err != nil || len(since.Checkpoints) != 2 || since.Checkpoints[0].ID != c2.ID || since.More {
		t.Fatalf("since %s: %+v %v", c2.At, since, err)
	}

	// Sound: every held checkpoint matches.
	rep := verifyWith(t, auditor, held)
	if !rep.OK || len(rep.Held) != 3 || rep.Checkpoints != 6 || len(rep.Divergence) != 0 {
		t.Fatalf("sound ledger with held checkpoints: %+v\n%s", rep, messages(rep))
	}
	for _, h := range rep.Held {
		if !h.Matched || h.File != 0 || h.What != "" {
			t.Fatalf("held %+v", h)
		}
	}
	pub := ts.ledger.PublicKey()
	dbFile := filepath.Join(ts.cfg.DataDir, "meridian.db")
	if off, err := VerifyDatabase(ctx, dbFile, pub, []api.CheckpointFile{held}); err != nil || !off.OK || len(off.Held) != 3 {
		t.Fatalf("offline, sound: %+v %v", off, err)
	}

	// Rewrite records entries 16-25, recompute their hashes, and delete
	// the stored checkpoints.
	before := ts.ledgerRows(t)
	ts.tamperFile(t, func(db *sql.DB) {
		rewriteTail(t, db, 16)
		if _, err := db.Exec(`DELETE FROM ledger_checkpoints`); err != nil {
			t.Fatal(err)
		}
	})
	// The hourly job then signs the rewritten chain: that checkpoint matches
	// it, but must not count as vouching for entries before the change.
	ts.checkpoint(t)
	if rep := verifyWith(t, auditor); !rep.OK {
		t.Fatalf("plain verify of a consistently rewritten tail: %s", messages(rep))
	}
	rep = verifyWith(t, auditor, held)
	if rep.OK || len(rep.Held) != 3 || !rep.Held[0].Matched || rep.Held[1].Matched || rep.Held[2].Matched {
		t.Fatalf("rewritten tail: %+v\n%s", rep.Held, messages(rep))
	}
	if w := rep.Held[1].What; w != "records entry 20 differs from the hash it signed" {
		t.Fatalf("held checkpoint 2: %q", w)
	}
	label := func(c ledger.Checkpoint) string {
		return fmt.Sprintf("held checkpoint %d of %s", c.ID, c.At.Format(time.RFC3339))
	}
	want := []string{
		"entry 20 (records): differs from the hash " + label(c2) + " signed",
		"entry 25 (records): differs from the hash " + label(c3) + " signed",
		"divergence: the records chain parts from its checkpoints between entries 11 and 20: entry 20 differs from what " + label(c2) +
			" signed; entry 10 is as " + label(c1) + " signed it, and the chain was rewritten from the first changed entry on",
	}
	if got := messages(rep); got != strings.Join(want, "\n") {
		t.Fatalf("problems:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
	d := rep.Divergence[0]
	if d.Chain != "records" || d.LastMatched != 10 || d.FirstDiffering != 20 || d.Head != 25 || d.Truncated {
		t.Fatalf("divergence %+v", d)
	}
	off, err := VerifyDatabase(ctx, dbFile, pub, []api.CheckpointFile{held})
	if err != nil || messages(off) != messages(rep) {
		t.Fatalf("offline, rewritten: %v\n%s", err, messages(off))
	}

	// Cut the chain off after entry 18 as well, and delete the checkpoint
	// signed since.
	ts.tamperFile(t, func(db *sql.DB) {
		for _, stmt := range []string{`DELETE FROM ledger_entries WHERE chain = 'records' AND seq > 18`, `DELETE FROM ledger_checkpoints`} {
			if _, err := db.Exec(stmt); err != nil {
				t.Fatal(err)
			}
		}
	})
	if rep := verifyWith(t, auditor); !rep.OK {
		t.Fatalf("plain verify of a truncated chain: %s", messages(rep))
	}
	rep = verifyWith(t, auditor, held)
	d = rep.Divergence[0]
	if rep.OK || !d.Truncated || d.FirstDiffering != 20 || d.Head != 18 || d.LastMatched != 10 ||
		d.What != "the records chain was cut off: it ends at entry 18, but "+label(c2)+" signed entry 20 (entries 19-20 are gone); entry 10 is as "+label(c1)+" signed it, entries 11-18 may have been rewritten too" ||
		rep.Held[1].What != "records entry 20, which it signed, is missing" {
		t.Fatalf("truncated: %+v\n%s", rep.Held, messages(rep))
	}
	// Verifying changes nothing.
	if after := ts.ledgerRows(t); after == before {
		t.Fatalf("the tampering did not happen: %s", after)
	} else if again := ts.ledgerRows(t); again != after {
		t.Fatalf("verify changed the ledger: %s, then %s", after, again)
	}
}

// TestHeldCheckpointBadSignatureOrKey: a held checkpoint whose signature
// was altered, one of another server (another key), and a file that names
// this server's key but holds another's checkpoints are each reported.
func TestHeldCheckpointBadSignatureOrKey(t *testing.T) {
	ts := newTestServer(t, "10.200.0.0/24")
	other := newTestServer(t, "10.201.0.0/24")
	auditor, otherAuditor := ts.token(t, api.RoleAuditor), other.token(t, api.RoleAuditor)
	for _, s := range []*testServer{ts, other} {
		s.appendRecords(t, 3)
		s.checkpoint(t)
		s.appendRecords(t, 3)
		s.checkpoint(t)
	}
	own, foreign := exportCheckpoints(t, auditor), exportCheckpoints(t, otherAuditor)
	fpOwn, fpOther := api.KeyFingerprint(ts.ledger.PublicKey()), api.KeyFingerprint(other.ledger.PublicKey())

	altered := own
	altered.Checkpoints = append([]api.Checkpoint(nil), own.Checkpoints...)
	sig := append([]byte(nil), altered.Checkpoints[1].Signature...)
	sig[0] ^= 1
	altered.Checkpoints[1].Signature = sig
	rep := verifyWith(t, auditor, altered)
	c := altered.Checkpoints[1]
	if rep.OK || !rep.Held[0].Matched || rep.Held[1].Matched || rep.Held[1].What != "signature does not verify" ||
		messages(rep) != fmt.Sprintf("held checkpoint %d of %s: signature does not verify", c.ID, c.At.Format(time.RFC3339)) {
		t.Fatalf("altered signature: %+v\n%s", rep.Held, messages(rep))
	}

	// Another server's file, beside this one's: file 2 is named.
	rep = verifyWith(t, auditor, own, foreign)
	if rep.OK || len(rep.Held) != 4 || !rep.Held[0].Matched || !rep.Held[1].Matched || rep.Held[2].File != 1 || rep.Held[2].Matched ||
		rep.Held[2].What != fmt.Sprintf("signed by another key (%s), not this ledger's signing key (%s)", fpOther, fpOwn) {
		t.Fatalf("another server's file: %+v\n%s", rep.Held, messages(rep))
	}
	if got := messages(rep); got != fmt.Sprintf("held file 2 is under another key (%s), not this ledger's signing key (%s): 2 of its 2 checkpoints verify under that key, and none is trusted; the signing key was replaced, or the file is another server's", fpOther, fpOwn) {
		t.Fatalf("another server's file: %s", got)
	}

	// Another server's checkpoints in a file that names this server's key.
	forged := foreign
	forged.PublicKey, forged.KeyFingerprint = own.PublicKey, own.KeyFingerprint
	rep = verifyWith(t, auditor, forged)
	if rep.OK || rep.Held[0].Matched || rep.Held[0].What != "signature does not verify" || len(rep.Problems) != 2 {
		t.Fatalf("forged key: %+v\n%s", rep.Held, messages(rep))
	}
}

// TestHeldCheckpointsBadInput: malformed files and queries are refused with
// a message that says what is wrong, and change nothing; only verifiers may
// read checkpoints.
func TestHeldCheckpointsBadInput(t *testing.T) {
	ts := newTestServer(t, "10.200.0.0/24")
	ctx := context.Background()
	auditor := ts.token(t, api.RoleAuditor)
	ts.appendRecords(t, 2)
	ts.checkpoint(t)
	good := exportCheckpoints(t, auditor)
	before := ts.ledgerRows(t)

	tok, err := ts.CreateToken(ctx, "raw-auditor", api.RoleAuditor)
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, rawPostAs(t, ts, tok, "/compliance/verify", `{"held": [`), 400, "malformed JSON body")
	wantStatus(t, rawPostAs(t, ts, tok, "/compliance/verify", `{"held": [], "x": 1}`), 400, "unknown field")
	wantStatus(t, rawPostAs(t, ts, tok, "/compliance/verify", `{"held": [{"format": 1}]}`), 400, "malformed JSON body")
	cases := []struct {
		name   string
		change func(f *api.CheckpointFile)
		want   string
	}{
		{"format", func(f *api.CheckpointFile) { f.Format = "meridian-ledger-checkpoints/v9" }, `held file 1: format "meridian-ledger-checkpoints/v9"`},
		{"key", func(f *api.CheckpointFile) { f.PublicKey = f.PublicKey[:16] }, "held file 1: public_key has 16 bytes"},
		{"fingerprint", func(f *api.CheckpointFile) { f.KeyFingerprint = strings.Repeat("0", 64) }, "key_fingerprint is not the SHA-256 of public_key"},
		{"hash", func(f *api.CheckpointFile) { f.Checkpoints[0].Records.Hash = f.Checkpoints[0].Records.Hash[:8] }, "records head must have a seq >= 0 and a hash of 32 bytes"},
		{"signature", func(f *api.CheckpointFile) { f.Checkpoints[0].Signature = nil }, "signature has 0 bytes, want 64"},
		{"twice", func(f *api.CheckpointFile) { f.Checkpoints = append(f.Checkpoints, f.Checkpoints[0]) }, "id appears twice"},
	}
	for _, tc := range cases {
		f := good
		f.Checkpoints = append([]api.Checkpoint(nil), good.Checkpoints...)
		f.Checkpoints[0].Records.Hash = append([]byte(nil), good.Checkpoints[0].Records.Hash...)
		tc.change(&f)
		err := auditor.Do(ctx, "POST", "/compliance/verify", api.VerifyRequest{Held: []api.CheckpointFile{good, f}}, nil)
		want := strings.Replace(tc.want, "held file 1", "held file 2", 1)
		wantStatus(t, err, 400, want)
		if _, err := api.ParseCheckpointFile(mustJSON(t, f)); err == nil || !strings.Contains(err.Error(), strings.TrimPrefix(tc.want, "held file 1: ")) {
			t.Errorf("%s: parsing the file: %v", tc.name, err)
		}
	}
	wantStatus(t, auditor.Do(ctx, "POST", "/compliance/verify", api.VerifyRequest{}, nil), 400, "give at least one checkpoint file")
	if _, err := api.ParseCheckpointFile([]byte("not json")); err == nil || !strings.Contains(err.Error(), "not a checkpoint file") {
		t.Errorf("parsing garbage: %v", err)
	}

	for q, want := range map[string]string{"after=x": "after must be", "after=-1": "after must be", "limit=0": "limit must be 1-1000",
		"limit=1001": "limit must be 1-1000", "since=2026-05-01T10:00:00": "since has no time zone"} {
		wantStatus(t, auditor.Do(ctx, "GET", "/compliance/checkpoints?"+q, nil, nil), 400, want)
	}
	wantStatus(t, ts.admin.Do(ctx, "GET", "/compliance/checkpoints", nil, nil), 403, "role may not")
	wantStatus(t, ts.admin.Do(ctx, "POST", "/compliance/verify", api.VerifyRequest{Held: []api.CheckpointFile{good}}, nil), 403, "role may not")
	if err := ts.token(t, api.RoleCompliance).Do(ctx, "GET", "/compliance/checkpoints", nil, nil); err != nil {
		t.Fatalf("a compliance officer reads checkpoints: %v", err)
	}
	if _, err := VerifyDatabase(ctx, filepath.Join(t.TempDir(), "none.db"), ts.ledger.PublicKey(), nil); err == nil {
		t.Fatal("offline verify of a missing file")
	}
	if after := ts.ledgerRows(t); after != before {
		t.Fatalf("bad input changed the ledger: %s, then %s", before, after)
	}
	if rep := verifyWith(t, auditor, good); !rep.OK {
		t.Fatalf("after bad input: %s", messages(rep))
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rawPostAs posts body as it is, with the token tok.
func rawPostAs(t *testing.T, ts *testServer, tok, path, body string) error {
	t.Helper()
	req, _ := http.NewRequest("POST", ts.url+api.Prefix+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e api.Error
	json.NewDecoder(resp.Body).Decode(&e)
	if resp.StatusCode/100 == 2 {
		return nil
	}
	return &api.StatusError{Code: resp.StatusCode, Message: e.Error}
}
