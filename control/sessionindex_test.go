package control

import (
	"context"
	"database/sql"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/store"
)

// indexedServer is a control server on dir; a call after the first
// restarts on the same data.
func indexedServer(t *testing.T, dir string) (*testServer, func()) {
	t.Helper()
	return startTestServer(t, Config{DataDir: dir, IPv4Pool: netip.MustParsePrefix("10.200.0.0/24"), IPv6Pool: netip.MustParsePrefix("2001:db8:200::/120")})
}

// lookupExit asks, as a compliance officer, who held port on the exit
// address of sessionRecord at time at.
func (ts *testServer) lookupExit(t *testing.T, port int, at time.Time) api.LookupResult {
	t.Helper()
	q := url.Values{"case": {"CERT-IN/2026/11"}, "exit_ip": {"203.0.113.1"}, "port": {strconv.Itoa(port)}, "at": {at.Format(time.RFC3339)}}
	var res api.LookupResult
	if err := ts.token(t, api.RoleCompliance).Do(context.Background(), "GET", "/compliance/lookup?"+q.Encode(), nil, &res); err != nil {
		t.Fatal(err)
	}
	return res
}

// The session index is derived from the ledger: rows a crash kept from
// it, or a lost index file, come back from the ledger when the server
// starts, with their owners, gateways and ends, and resending the records
// then adds nothing to the ledger.
func TestSessionIndexCatchesUpFromLedger(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ts, stop := indexedServer(t, dir)
	cred := ts.gatewayCredential(t, "in1")
	in, _ := api.NewClient(ts.url, cred, "")
	ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "alice"})
	alice, err := ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "alice", Name: "a", PublicKey: newKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	ts.placeIn(t, "in1", "IN")

	// Session 1 opens and ends; session 2 (ports 1280-1535) opens and
	// ends in a later batch.
	s1 := sessionRecord(t, alice.Device, 1)
	s1End := s1
	s1End.End = s1.Start.Add(time.Hour)
	s2 := sessionRecord(t, alice.Device, 2)
	s2.PortLo, s2.PortHi = 1280, 1535
	s2End := s2
	s2End.End = s2.Start.Add(2 * time.Hour)
	batches := [][]api.SessionRecord{{s1, s2}, {s1End}, {s2End}}
	for _, b := range batches {
		if res, err := in.PostSessions(ctx, api.SessionBatch{Records: b}); err != nil || res.Stored != len(b) {
			t.Fatalf("post: %+v %v", res, err)
		}
	}
	var entries int
	ts.db.QueryRow(`SELECT count(*) FROM ledger_entries WHERE kind LIKE 'session%'`).Scan(&entries)
	if entries != 4 {
		t.Fatalf("%d session entries in the ledger, want 4", entries)
	}
	var lastEnd, accessBefore int64
	ts.db.QueryRow(`SELECT count(*) FROM ledger_entries WHERE chain = 'access'`).Scan(&accessBefore)
	ts.db.QueryRow(`SELECT max(seq) FROM ledger_entries WHERE kind = 'session-end'`).Scan(&lastEnd)
	stop()

	check := func(ts *testServer, when string) {
		t.Helper()
		mid := s1.Start.Add(30 * time.Minute)
		late := s1.Start.Add(90 * time.Minute)
		for _, c := range []struct {
			port int
			at   time.Time
			want string // session ID, or "" for none
		}{{1100, mid, s1.ID}, {1100, late, ""}, {1300, late, s2.ID}} {
			res := ts.lookupExit(t, c.port, c.at)
			switch {
			case c.want == "" && len(res.Sessions) != 0:
				t.Errorf("%s: port %d at %s: %+v, want none (the session had ended)", when, c.port, c.at, res.Sessions)
			case c.want != "" && (len(res.Sessions) != 1 || res.Sessions[0].ID != c.want || res.Sessions[0].User != "alice" ||
				res.Sessions[0].DeviceID != alice.Device.ID || res.Sessions[0].Gateway != "in1" || res.Sessions[0].Endpoint != s1.Endpoint):
				t.Errorf("%s: port %d at %s: %+v, want session %s of alice on in1", when, c.port, c.at, res.Sessions, c.want)
			}
		}
		var rows, ended int
		ts.db.SessionIndex().QueryRow(`SELECT count(*), count(end_seq) FROM sessions`).Scan(&rows, &ended)
		if rows != 2 || ended != 2 {
			t.Errorf("%s: %d rows, %d with their end, want 2 and 2", when, rows, ended)
		}
		// Sent again, the records are known: nothing new in the ledger.
		for _, b := range batches {
			if res, err := in.PostSessions(ctx, api.SessionBatch{Records: b}); err != nil || res.Stored != len(b) {
				t.Fatalf("%s: post again: %+v %v", when, res, err)
			}
		}
		var now int
		ts.db.QueryRow(`SELECT count(*) FROM ledger_entries WHERE kind LIKE 'session%'`).Scan(&now)
		if now != entries {
			t.Errorf("%s: resending made %d session entries of %d", when, now, entries)
		}
	}

	// A crash after the ledger committed the last batch, before the index
	// did: the index lacks the last end.
	index := store.SessionIndexFile(filepath.Join(dir, "meridian.db"))
	idx, err := sql.Open("sqlite", "file:"+index)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`UPDATE sessions SET end_at = NULL, end_seq = NULL WHERE id = '` + s2.ID + `'`, `UPDATE watermark SET seq = ` + strconv.FormatInt(lastEnd-1, 10)} {
		if _, err := idx.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	idx.Close()
	ts, stop = indexedServer(t, dir)
	in, _ = api.NewClient(ts.url, cred, "")
	check(ts, "after a crash")
	var catchUps int
	ts.db.QueryRow(`SELECT count(*) FROM ledger_entries WHERE chain = 'access' AND seq > ?`, accessBefore).Scan(&catchUps)
	if catchUps == 0 {
		t.Error("catching up read the ledger without an access entry")
	}
	stop()

	// The index file is lost: all of it comes back.
	for _, f := range []string{index, index + "-wal", index + "-shm"} {
		if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	ts, stop = indexedServer(t, dir)
	defer stop()
	in, _ = api.NewClient(ts.url, cred, "")
	check(ts, "after the index file was lost")
}

// Bodies of POST /gateway/sessions that cannot be batches get clear
// errors, now that they are read whole before they are decoded.
func TestSessionBatchBadBodies(t *testing.T) {
	ts := newTestServer(t, "10.200.0.0/24")
	cred := ts.gatewayCredential(t, "in1")
	ts.placeIn(t, "in1", "IN")
	rec := `{"id":"0123456789abcdef0123456789abcdef","public_key":"` + newKey(t).String() + `","endpoint":"198.51.100.7:40000","port_lo":1024,"port_hi":1279,"start":"2026-03-01T12:00:00Z"}`
	many := `{"records":[` + rec + strings.Repeat(","+rec, api.MaxSessionBatch) + `]}`
	for _, c := range []struct {
		body string
		code int
		want string
	}{
		{`{"records":[` + rec + strings.Repeat(","+rec, 8000) + `]}`, 413, "larger than"},
		{``, 400, "empty request body"},
		{`{"records":[`, 400, "malformed JSON"},
		{`{"records":[],"extra":1}`, 400, "unknown field"},
		{many, 400, "at most 1000 records"},
		{`{"records":[{"id":"x"}]}`, 400, "record 0: id must be"},
	} {
		wantStatus(t, rawPostAs(t, ts, cred, "/gateway/sessions", c.body), c.code, c.want)
	}
	if n := ts.sessionRows(t); n != 0 {
		t.Fatalf("%d rows after refused batches", n)
	}
}

// A batch whose index rows fail takes the uncommitted rows of the batch
// written before it in the same group with them; that batch was answered
// "stored", so the index catches up from the ledger before anyone is
// answered, and a lookup right after finds its session.
func TestFailedBatchCostsNoAcknowledgedRow(t *testing.T) {
	ts, _, alice := aliceOnIN(t)
	good, refused := sessionRecord(t, alice.Device, 1), sessionRecord(t, alice.Device, 2)
	refused.PortLo, refused.PortHi = 1280, 1535
	if _, err := ts.db.SessionIndex().Exec(`CREATE TRIGGER refuse BEFORE INSERT ON sessions WHEN NEW.id = '` + refused.ID + `'
		BEGIN SELECT RAISE(FAIL, 'refused by the test'); END`); err != nil {
		t.Fatal(err)
	}
	res := ts.saveTogether(t, [][]api.SessionRecord{{good}, {refused}})
	if res[0].err != nil || res[0].n != 1 || res[1].err == nil {
		t.Fatalf("results %+v, want the first stored and the second failed", res)
	}
	if ts.db.SessionIndexBehind() {
		t.Fatal("the index was left behind the ledger")
	}
	got := ts.lookupExit(t, 1100, good.Start.Add(time.Minute))
	if len(got.Sessions) != 1 || got.Sessions[0].ID != good.ID {
		t.Fatalf("lookup of the stored session: %+v", got.Sessions)
	}
	var entries int
	ts.db.QueryRow(`SELECT count(*) FROM ledger_entries WHERE kind = 'session'`).Scan(&entries)
	if entries != 1 {
		t.Fatalf("%d session entries, want the stored one only", entries)
	}
}
