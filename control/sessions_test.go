package control

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/store"
	"github.com/meridian-vpn/meridian/wg"
)

// joinGateway joins a gateway and returns a client with its credential.
func (ts *testServer) joinGateway(t *testing.T, name string) *api.Client {
	t.Helper()
	gc, _ := api.NewClient(ts.url, ts.gatewayCredential(t, name), "")
	return gc
}

// gatewayCredential joins a gateway and returns its credential.
func (ts *testServer) gatewayCredential(t *testing.T, name string) string {
	t.Helper()
	ctx := context.Background()
	tok, err := ts.admin.CreateJoinToken(ctx, api.JoinTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	jc, _ := api.NewClient(ts.url, tok.Token, "")
	j, err := jc.Join(ctx, api.JoinRequest{Name: name, PublicKey: *newKey(t), Endpoint: "192.0.2.1:51820", Mode: api.Userspace})
	if err != nil {
		t.Fatal(err)
	}
	return j.Credential
}

func (ts *testServer) placeIn(t *testing.T, gw, country string) {
	t.Helper()
	if _, err := ts.admin.SetPlace(context.Background(), gw, api.Place{PhysicalCountry: country, Ownership: api.Rented}); err != nil {
		t.Fatal(err)
	}
}

// aliceOnIN is a server with gateway in1 placed in India (cert-in-2022
// by default) and consumer alice with a device.
func aliceOnIN(t *testing.T) (*testServer, *api.Client, api.CreateDeviceResponse) {
	t.Helper()
	ts := newTestServer(t, "10.200.0.0/24")
	ctx := context.Background()
	in := ts.joinGateway(t, "in1")
	if _, err := ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "alice"}); err != nil {
		t.Fatal(err)
	}
	alice, err := ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "alice", Name: "a", PublicKey: newKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	ts.placeIn(t, "in1", "IN")
	return ts, in, alice
}

func recordFlags(nm api.Netmap) map[wg.Key]bool {
	out := map[wg.Key]bool{}
	for _, p := range nm.Peers {
		out[p.PublicKey] = p.Record
	}
	return out
}

func TestNetmapMarksPeersOwingRecords(t *testing.T) {
	ts := newTestServer(t, "10.200.0.0/24")
	ctx := context.Background()
	gc := ts.joinGateway(t, "gw")
	// Accounts before the gateway stands in India, where a consumer
	// account needs a subscriber record.
	ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "alice"})
	ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "staff", Kind: api.Enterprise})
	consumer, _ := ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "alice", Name: "a", PublicKey: newKey(t)})
	staff, _ := ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "staff", Name: "s", PublicKey: newKey(t)})

	// No place: no duty, no peer marked.
	full, err := gc.Netmap(ctx, api.FullNetmap, 0)
	if err != nil || len(full.Peers) != 2 {
		t.Fatalf("full netmap: %+v %v", full, err)
	}
	if f := recordFlags(full); f[consumer.Device.PublicKey] || f[staff.Device.PublicKey] {
		t.Fatalf("peers marked without a duty: %v", f)
	}

	// Placed in India: the next poll, though no peer changed, is a full
	// netmap that marks the consumer's device (cert-in-2022 asks session
	// records for consumer service only).
	ts.placeIn(t, "gw", "IN")
	in, err := gc.Netmap(ctx, full.Version, 5*time.Second)
	if err != nil || !in.Full {
		t.Fatalf("netmap after the place changed: %+v %v", in, err)
	}
	if f := recordFlags(in); !f[consumer.Device.PublicKey] || f[staff.Device.PublicKey] {
		t.Fatalf("record flags in India: %v", f)
	}

	// A delta marks a new device of a consumer.
	ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "alice", Name: "b", PublicKey: newKey(t)})
	delta, err := gc.Netmap(ctx, in.Version, 5*time.Second)
	if err != nil || delta.Full || len(delta.Peers) != 1 || !delta.Peers[0].Record {
		t.Fatalf("delta in India: %+v %v", delta, err)
	}

	// The operator drops the duty for India: a full netmap unmarks all.
	if _, err := ts.admin.SetJurisdiction(ctx, api.Jurisdiction{Country: "IN", Profile: "none", Stance: "comply"}); err != nil {
		t.Fatal(err)
	}
	none, err := gc.Netmap(ctx, delta.Version, 5*time.Second)
	if err != nil || !none.Full || len(none.Peers) != 3 {
		t.Fatalf("netmap after the duty went: %+v %v", none, err)
	}
	for k, rec := range recordFlags(none) {
		if rec {
			t.Fatalf("peer %s still marked", k)
		}
	}

	// A profile of the operator's that asks session records of every
	// tenant: both devices are marked.
	body := []byte(`{"name": "all-sessions", "title": "Session records for every tenant",
		"session_records": {"retention_years": 1, "consumer_only": false, "cite": "test"}}`)
	if err := ts.admin.SetProfile(ctx, "all-sessions", body); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.admin.SetJurisdiction(ctx, api.Jurisdiction{Country: "IN", Profile: "all-sessions", Stance: "comply"}); err != nil {
		t.Fatal(err)
	}
	all, err := gc.Netmap(ctx, none.Version, 5*time.Second)
	if err != nil || !all.Full {
		t.Fatalf("netmap under a profile for every tenant: %+v %v", all, err)
	}
	if f := recordFlags(all); !f[consumer.Device.PublicKey] || !f[staff.Device.PublicKey] {
		t.Fatalf("record flags under a profile for every tenant: %v", f)
	}

	// A new control server (a restart) does not know what the gateway
	// holds: its first answer is a full netmap.
	if _, err := ts.admin.SetJurisdiction(ctx, api.Jurisdiction{Country: "IN", Profile: "cert-in-2022", Stance: "comply"}); err != nil {
		t.Fatal(err)
	}
	again, err := gc.Netmap(ctx, all.Version, 5*time.Second)
	if err != nil || !again.Full || !recordFlags(again)[consumer.Device.PublicKey] {
		t.Fatalf("netmap after the duty returned: %+v %v", again, err)
	}
	ts.sessions.mu.Lock()
	ts.sessions.sent = nil
	ts.sessions.mu.Unlock()
	restart, err := gc.Netmap(ctx, again.Version, 0)
	if err != nil || !restart.Full || !recordFlags(restart)[consumer.Device.PublicKey] {
		t.Fatalf("first netmap after a restart: %+v %v", restart, err)
	}
}

func sessionRecord(t *testing.T, d api.Device, id int) api.SessionRecord {
	t.Helper()
	return api.SessionRecord{
		ID: fmt.Sprintf("%032x", id), PublicKey: d.PublicKey, TunnelIPv4: d.IPv4, TunnelIPv6: d.IPv6,
		Endpoint: netip.MustParseAddrPort("198.51.100.7:40000"), ExitIPv4: netip.MustParseAddr("203.0.113.1"),
		PortLo: 1024, PortHi: 1279, Start: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
	}
}

func (ts *testServer) sessionRows(t *testing.T) int {
	t.Helper()
	var n int
	if err := ts.db.SessionIndex().QueryRow(`SELECT count(*) FROM sessions`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestSessionIngestion(t *testing.T) {
	ts := newTestServer(t, "10.200.0.0/24")
	ctx := context.Background()
	in := ts.joinGateway(t, "in1")
	de := ts.joinGateway(t, "de1")
	ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "alice"})
	ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "staff", Kind: api.Enterprise})
	alice, _ := ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "alice", Name: "a", PublicKey: newKey(t)})
	staff, _ := ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "staff", Name: "s", PublicKey: newKey(t)})
	ts.placeIn(t, "in1", "IN")
	ts.placeIn(t, "de1", "DE")

	open := sessionRecord(t, alice.Device, 1)
	closed := open
	closed.End = open.Start.Add(time.Hour)
	post := func(c *api.Client, recs ...api.SessionRecord) api.SessionBatchResult {
		t.Helper()
		res, err := c.PostSessions(ctx, api.SessionBatch{Records: recs})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}

	t.Run("idempotent", func(t *testing.T) {
		for _, batch := range [][]api.SessionRecord{{open}, {open}, {closed}, {open, closed}, {open}} {
			if res := post(in, batch...); res.Stored != len(batch) || res.Ignored != 0 {
				t.Fatalf("result %+v for %d records", res, len(batch))
			}
		}
		if n := ts.sessionRows(t); n != 1 {
			t.Fatalf("%d rows, want 1", n)
		}
		got, err := ts.db.SessionsByExit(ctx, open.ExitIPv4, 1100, open.Start.Add(time.Minute))
		if err != nil || len(got) != 1 || !got[0].End.Equal(closed.End) || got[0].User != "alice" || got[0].Gateway != "in1" {
			t.Fatalf("stored %+v %v", got, err)
		}
	})

	t.Run("only what a duty requires", func(t *testing.T) {
		if res := post(in, sessionRecord(t, staff.Device, 2)); res.Stored != 0 || res.Ignored != 1 {
			t.Fatalf("enterprise tenant's record: %+v", res)
		}
		if res := post(de, sessionRecord(t, alice.Device, 3)); res.Stored != 0 || res.Ignored != 1 {
			t.Fatalf("record from a gateway in Germany: %+v", res)
		}
		if n := ts.sessionRows(t); n != 1 {
			t.Fatalf("%d rows, want only the consumer's on in1", n)
		}
		// A device deleted while its record was on the way: kept, without
		// device and user, from a gateway that owes records.
		gone := sessionRecord(t, alice.Device, 4)
		gone.PublicKey = *newKey(t)
		if res := post(in, gone); res.Stored != 1 {
			t.Fatalf("record of a deleted device on in1: %+v", res)
		}
		if res := post(de, sessionRecord(t, staff.Device, 9)); res.Stored != 0 {
			t.Fatalf("record of a gateway without the duty: %+v", res)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		bad := sessionRecord(t, alice.Device, 5)
		bad.Endpoint = netip.AddrPort{}
		_, err := in.PostSessions(ctx, api.SessionBatch{Records: []api.SessionRecord{open, bad}})
		wantStatus(t, err, 400, "record 1: endpoint")
		bad = sessionRecord(t, alice.Device, 6)
		bad.ID = "not-hex"
		_, err = in.PostSessions(ctx, api.SessionBatch{Records: []api.SessionRecord{bad}})
		wantStatus(t, err, 400, "id must be")
		bad = sessionRecord(t, alice.Device, 7)
		bad.PortHi = 1000
		_, err = in.PostSessions(ctx, api.SessionBatch{Records: []api.SessionRecord{bad}})
		wantStatus(t, err, 400, "port_lo")
		many := make([]api.SessionRecord, api.MaxSessionBatch+1)
		for i := range many {
			many[i] = sessionRecord(t, alice.Device, 100+i)
		}
		_, err = in.PostSessions(ctx, api.SessionBatch{Records: many})
		if err == nil {
			t.Fatal("an oversized batch was accepted")
		}
		_, err = ts.admin.PostSessions(ctx, api.SessionBatch{Records: []api.SessionRecord{open}})
		wantStatus(t, err, 403, "may not")
		if n := ts.sessionRows(t); n != 2 {
			t.Fatalf("bad input stored rows: %d", n)
		}
	})

	t.Run("errors name no personal data", func(t *testing.T) {
		bad := sessionRecord(t, alice.Device, 8)
		bad.ExitIPv4 = netip.MustParseAddr("2001:db8::77")
		_, err := in.PostSessions(ctx, api.SessionBatch{Records: []api.SessionRecord{bad}})
		if err == nil || strings.Contains(err.Error(), "2001:db8::77") || strings.Contains(err.Error(), "198.51.100.7") {
			t.Fatalf("error %v", err)
		}
	})
}

// TestSessionRecordsSealed: a session's endpoint address is sealed in the
// ledger, not in the database in clear; a lookup by it still finds the
// session, reads it from the ledger and records one access; verify catches
// a modified session entry.
func TestSessionRecordsSealed(t *testing.T) {
	ts, in, alice := aliceOnIN(t)
	ctx := context.Background()

	rec := sessionRecord(t, alice.Device, 1)
	rec.Endpoint = netip.MustParseAddrPort("198.51.100.77:40000")
	ended := rec
	ended.End = rec.Start.Add(time.Hour)
	for _, r := range []api.SessionRecord{rec, ended, ended} {
		if res, err := in.PostSessions(ctx, api.SessionBatch{Records: []api.SessionRecord{r}}); err != nil || res.Stored != 1 {
			t.Fatalf("post: %+v %v", res, err)
		}
	}
	var kinds []string
	rows, _ := ts.db.Query(`SELECT kind FROM ledger_entries WHERE chain = 'records' AND kind LIKE 'session%' ORDER BY seq`)
	for rows.Next() {
		var k string
		rows.Scan(&k)
		kinds = append(kinds, k)
	}
	rows.Close()
	if strings.Join(kinds, ",") != "session,session-end" {
		t.Fatalf("ledger entries %v, want session,session-end", kinds)
	}

	for _, f := range []string{"meridian.db", "meridian.db-wal", "meridian-sessions.db", "meridian-sessions.db-wal"} {
		b, err := os.ReadFile(filepath.Join(ts.cfg.DataDir, f))
		if err != nil && !strings.HasSuffix(f, "-wal") {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte("198.51.100.77")) {
			t.Errorf("%s holds the endpoint address in clear", f)
		}
	}

	officer := ts.token(t, api.RoleCompliance)
	var before, after int
	ts.db.QueryRow(`SELECT count(*) FROM ledger_entries WHERE chain = 'access'`).Scan(&before)
	q := url.Values{"case": {"CERT-IN/2026/9"}, "endpoint_ip": {"198.51.100.77"},
		"from": {rec.Start.Add(-time.Minute).Format(time.RFC3339)}, "to": {rec.Start.Add(time.Minute).Format(time.RFC3339)}}
	var res api.LookupResult
	if err := officer.Do(ctx, "GET", "/compliance/lookup?"+q.Encode(), nil, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Sessions) != 1 || res.Sessions[0].ID != rec.ID || res.Sessions[0].Endpoint != rec.Endpoint ||
		!res.Sessions[0].End.Equal(ended.End) || res.Sessions[0].User != "alice" {
		t.Fatalf("lookup by endpoint: %+v", res)
	}
	ts.db.QueryRow(`SELECT count(*) FROM ledger_entries WHERE chain = 'access'`).Scan(&after)
	if after-before != 1 {
		t.Fatalf("a lookup recorded %d accesses, want 1", after-before)
	}
	q.Set("endpoint_ip", "198.51.100.78")
	if err := officer.Do(ctx, "GET", "/compliance/lookup?"+q.Encode(), nil, &res); err != nil || len(res.Sessions) != 0 {
		t.Fatalf("lookup by another endpoint: %+v %v", res, err)
	}

	auditor := ts.token(t, api.RoleAuditor)
	var rep struct {
		Problems []any `json:"problems"`
	}
	if err := auditor.Do(ctx, "GET", "/compliance/verify", nil, &rep); err != nil || len(rep.Problems) != 0 {
		t.Fatalf("verify: %+v %v", rep, err)
	}
	var seq int64
	ts.db.SessionIndex().QueryRow(`SELECT seq FROM sessions WHERE id = ?`, rec.ID).Scan(&seq)
	// As someone with the file would: past the append-only trigger.
	if _, err := ts.db.Exec(`DROP TRIGGER ledger_entries_purge_once`); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.db.Exec(`UPDATE ledger_entries SET body = randomblob(length(body)) WHERE chain = 'records' AND seq = ? AND kind = 'session'`, seq); err != nil {
		t.Fatal(err)
	}
	if err := auditor.Do(ctx, "GET", "/compliance/verify", nil, &rep); err != nil || len(rep.Problems) == 0 {
		t.Fatalf("verify after a session entry was modified: %+v %v", rep, err)
	}
}

// Gateways posting at the same time share transactions; every record is
// stored once, and the ledger chain holds each exactly once.
func TestConcurrentSessionBatches(t *testing.T) {
	ts := newTestServer(t, "10.200.0.0/24")
	ctx := context.Background()
	ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "alice"})
	alice, _ := ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "alice", Name: "a", PublicKey: newKey(t)})
	const gateways, batches, size = 4, 5, 300
	var gws []*api.Client
	for g := range gateways {
		name := fmt.Sprintf("in%d", g)
		gws = append(gws, ts.joinGateway(t, name))
		ts.placeIn(t, name, "IN")
	}
	errs := make(chan error, gateways)
	for g, gw := range gws {
		go func() {
			for b := range batches {
				recs := make([]api.SessionRecord, size)
				for i := range recs {
					recs[i] = sessionRecord(t, alice.Device, g<<20|b*size+i+1)
				}
				if res, err := gw.PostSessions(ctx, api.SessionBatch{Records: recs}); err != nil || res.Stored != size {
					errs <- fmt.Errorf("gateway %d batch %d: %+v %v", g, b, res, err)
					return
				}
			}
			errs <- nil
		}()
	}
	for range gateways {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := ts.sessionRows(t); n != gateways*batches*size {
		t.Fatalf("%d rows, want %d", n, gateways*batches*size)
	}
	var entries, distinct int
	ts.db.SessionIndex().QueryRow(`SELECT count(*), count(DISTINCT seq) FROM sessions`).Scan(&entries, &distinct)
	if distinct != entries {
		t.Fatalf("%d rows share %d ledger entries", entries, distinct)
	}
	if rep, err := ts.ledger.Verify(ctx); err != nil || !rep.OK() {
		t.Fatalf("verify: %+v %v", rep, err)
	}
}

// A batch that fails in a shared transaction fails alone: the others in
// it are written again on their own.
func TestSessionGroupIsolatesAFailingBatch(t *testing.T) {
	ts, _, alice := aliceOnIN(t)
	ctx := context.Background()
	keep := func(store.SessionOwner) bool { return true }
	good1, good2 := sessionRecord(t, alice.Device, 1), sessionRecord(t, alice.Device, 2)
	stored := sessionRecord(t, alice.Device, 3)
	bad := stored // the end of stored session 3, before it started
	if _, err := ts.saveSessions(ctx, store.GatewaySessions{Gateway: "in1", Records: []api.SessionRecord{stored}, Keep: keep}); err != nil {
		t.Fatal(err)
	}
	bad.End = bad.Start.Add(-time.Hour) // Validate would refuse it; SaveSessions must too

	results := ts.saveTogether(t, [][]api.SessionRecord{{good1}, {bad}, {good2}})
	for i, want := range []bool{true, false, true} {
		r := results[i]
		if (r.err == nil) != want || want && r.n != 1 || !want && !errors.Is(r.err, store.ErrBadSessionRecord) {
			t.Errorf("batch %d: stored %d, err %v", i, r.n, r.err)
		}
	}
	if n := ts.sessionRows(t); n != 3 {
		t.Fatalf("%d rows, want the 3 good sessions", n)
	}
	if q := &ts.sessions.queue; q.leading || len(q.waiting) != 0 {
		t.Fatalf("the queue was left leading=%v with %d waiting", q.leading, len(q.waiting))
	}
}

// saved is what saveSessions returned for a batch.
type saved struct {
	n   int
	err error
}

// saveTogether queues the batches of gateway in1, in order, while holding
// the lead, then hands it over: they are written as one group.
func (ts *testServer) saveTogether(t *testing.T, batches [][]api.SessionRecord) []saved {
	t.Helper()
	q := &ts.sessions.queue
	q.mu.Lock()
	q.leading = true
	q.mu.Unlock()
	waiting := func() int {
		q.mu.Lock()
		defer q.mu.Unlock()
		return len(q.waiting)
	}
	results := make([]chan saved, len(batches))
	for i, recs := range batches {
		results[i] = make(chan saved, 1)
		go func() {
			n, err := ts.saveSessions(context.Background(), store.GatewaySessions{Gateway: "in1", Records: recs, Keep: func(store.SessionOwner) bool { return true }})
			results[i] <- saved{n, err}
		}()
		for waiting() != i+1 {
			time.Sleep(time.Millisecond)
		}
	}
	q.mu.Lock()
	q.waiting[0].lead <- struct{}{}
	q.mu.Unlock()
	out := make([]saved, len(batches))
	for i := range out {
		out[i] = <-results[i]
	}
	return out
}

// The record duty a gateway's batches are checked against follows its
// place at once, though it is cached between batches.
func TestIngestDutyFollowsPlace(t *testing.T) {
	ts, in, alice := aliceOnIN(t)
	ctx := context.Background()
	for i, c := range []struct {
		country string
		stored  int
	}{{"IN", 1}, {"DE", 0}, {"DE", 0}, {"IN", 1}} {
		ts.placeIn(t, "in1", c.country)
		res, err := in.PostSessions(ctx, api.SessionBatch{Records: []api.SessionRecord{sessionRecord(t, alice.Device, 100+i)}})
		if err != nil || res.Stored != c.stored || res.Ignored != 1-c.stored {
			t.Fatalf("batch %d, gateway in %s: %+v %v", i, c.country, res, err)
		}
	}
}

// An account with session records but no subscriber record (an
// enterprise tenant whose sessions a duty required) cannot be deleted, so
// that its records are neither orphaned nor inherited by a new account of
// the same name; cancelled, it is purged with them when retention ends.
func TestSessionsOnlyAccountRetention(t *testing.T) {
	ts, _, _ := aliceOnIN(t)
	ctx := context.Background()
	if _, err := ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "staff", Kind: api.Enterprise}); err != nil {
		t.Fatal(err)
	}
	staff, err := ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "staff", Name: "pc", PublicKey: newKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ts.saveSessions(ctx, store.GatewaySessions{Gateway: "in1", Records: []api.SessionRecord{sessionRecord(t, staff.Device, 7)},
		Keep: func(store.SessionOwner) bool { return true }}); err != nil {
		t.Fatal(err)
	}
	if err := ts.admin.DeleteDevice(ctx, staff.Device.ID); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, ts.admin.DeleteUser(ctx, "staff"), 409, "session records")
	if err := ts.admin.Do(ctx, "POST", "/users/staff/cancel", nil, nil); err != nil {
		t.Fatal(err)
	}
	res, err := ts.purgeExpired(ctx, time.Now().AddDate(5, 0, 1))
	if err != nil || res.Accounts != 1 || res.Entries != 1 {
		t.Fatalf("purge: %+v %v", res, err)
	}
	var rows, sealed int
	ts.db.SessionIndex().QueryRow(`SELECT count(*) FROM sessions`).Scan(&rows)
	ts.db.QueryRow(`SELECT count(*) FROM ledger_entries WHERE kind = 'session' AND body IS NOT NULL`).Scan(&sealed)
	if rows != 0 || sealed != 0 {
		t.Fatalf("after the purge: %d session rows, %d sealed session entries", rows, sealed)
	}
}
