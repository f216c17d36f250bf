package control

import (
	"context"
	"encoding/json"
	"net/url"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/store"
)

// TestSilentGatewaySessionsEndInferred: a gateway that goes silent with a
// session open has it ended, once it has been silent for SessionSilence,
// as of the last time the control server heard from it (not as of when
// the server noticed), and a lookup says the end was inferred. The
// inferred end is a ledger entry; an end the gateway reports later
// replaces it.
func TestSilentGatewaySessionsEndInferred(t *testing.T) {
	ts, in, alice := aliceOnIN(t)
	ctx := context.Background()
	rec := sessionRecord(t, alice.Device, 1)
	rec.Start = time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	before := time.Now()
	if res, err := in.PostSessions(ctx, api.SessionBatch{Records: []api.SessionRecord{rec}}); err != nil || res.Stored != 1 {
		t.Fatalf("post: %+v %v", res, err)
	}
	after := time.Now()

	officer := ts.token(t, api.RoleCompliance)
	lookup := func() api.LookupSession {
		t.Helper()
		q := url.Values{"case": {"C-9"}, "exit_ip": {rec.ExitIPv4.String()}, "port": {"1100"}, "at": {rec.Start.Add(time.Minute).Format(time.RFC3339)}}
		var res api.LookupResult
		if err := officer.Do(ctx, "GET", "/compliance/lookup?"+q.Encode(), nil, &res); err != nil || len(res.Sessions) != 1 {
			t.Fatalf("lookup: %+v %v", res, err)
		}
		return res.Sessions[0]
	}

	// The clock is injected: the first round starts the count, a round
	// within SessionSilence of the last report ends nothing.
	if err := ts.endSilentSessions(ctx, after); err != nil {
		t.Fatal(err)
	}
	if err := ts.endSilentSessions(ctx, after.Add(ts.cfg.SessionSilence-time.Second)); err != nil {
		t.Fatal(err)
	}
	if got := lookup(); !got.End.IsZero() || got.EndSource != "" {
		t.Fatalf("ended before the gateway was silent long enough: %+v", got)
	}
	later := after.Add(ts.cfg.SessionSilence + time.Minute)
	if err := ts.endSilentSessions(ctx, later); err != nil {
		t.Fatal(err)
	}
	got := lookup()
	if got.EndSource != api.EndInferred || got.End.Before(before) || got.End.After(after) {
		t.Fatalf("after %s of silence: end %s (%q), want inferred, at the last report (%s .. %s)", ts.cfg.SessionSilence, got.End, got.EndSource, before, after)
	}
	// Once: another round writes nothing more.
	if err := ts.endSilentSessions(ctx, later.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n := ts.sessionEnds(t); n != 1 {
		t.Fatalf("%d session-end entries, want 1", n)
	}

	// The gateway comes back and reports its end: it replaces the
	// inferred one.
	closed := rec
	closed.End = later.UTC().Truncate(time.Second)
	if res, err := in.PostSessions(ctx, api.SessionBatch{Records: []api.SessionRecord{closed}}); err != nil || res.Stored != 1 {
		t.Fatalf("post: %+v %v", res, err)
	}
	if got := lookup(); got.EndSource != api.EndReported || !got.End.Equal(closed.End) {
		t.Fatalf("after the reported end: %+v", got)
	}
}

// sessionEnds counts the session-end entries of the ledger.
func (ts *testServer) sessionEnds(t *testing.T) int {
	t.Helper()
	var n int
	if err := ts.db.QueryRow(`SELECT count(*) FROM ledger_entries WHERE kind = 'session-end'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestSessionEndBodyCompat: the body of a "session-end" entry is a durable
// format. An entry written before ends could be inferred reads as a
// reported end, and a reported end is still written byte for byte as it
// was.
func TestSessionEndBodyCompat(t *testing.T) {
	const old = `{"id":"00000000000000000000000000000001","end":"2026-03-01T13:00:00Z","clock":{"at":"2026-03-01T13:00:00Z","state":"no-source"}}`
	var e store.SessionEnd
	if err := json.Unmarshal([]byte(old), &e); err != nil {
		t.Fatal(err)
	}
	if e.Inferred || e.ID != "00000000000000000000000000000001" || e.Clock == nil || e.Clock.State != api.TimeNoSource {
		t.Fatalf("old entry read as %+v", e)
	}
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != old {
		t.Fatalf("a reported end is written as\n%s\nwas\n%s", b, old)
	}
	e.Inferred = true
	b, _ = json.Marshal(e)
	const inferred = `{"id":"00000000000000000000000000000001","end":"2026-03-01T13:00:00Z","clock":{"at":"2026-03-01T13:00:00Z","state":"no-source"},"inferred":true}`
	if string(b) != inferred {
		t.Fatalf("an inferred end is written as\n%s\nwant\n%s", b, inferred)
	}
}
