package store

import (
	"context"
	"database/sql"
	"slices"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
)

// An index file of version 1 (before inferred ends) is upgraded in place
// at Open; the silent gateway's open session then ends as inferred, once,
// and the end its gateway reports later replaces the inferred one.
func TestSessionIndexUpgradeAndInferredEnds(t *testing.T) {
	ctx := context.Background()
	db, file, recs := aliceSessions(t, 2)
	var fl fakeLedger
	closed := recs[1]
	closed.End = closed.Start.Add(time.Minute)
	if _, err := saveOne(ctx, db, "gw", []api.SessionRecord{recs[0], recs[1], closed}, keepAll, fl.hook()); err != nil {
		t.Fatal(err)
	}
	db.Close()
	raw, err := sql.Open("sqlite", "file:"+SessionIndexFile(file))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`ALTER TABLE sessions DROP COLUMN inferred_end_seq`, `PRAGMA user_version = 1`} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	raw.Close()
	db, err = Open(ctx, file)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if v := db.countIndex(t, `PRAGMA user_version`); v != sessionIndexVersion {
		t.Fatalf("index version %d after the upgrade", v)
	}

	heard := recs[0].Start.Add(10 * time.Minute)
	if n, err := db.EndOpenSessions(ctx, "other", heard, fl.hook()); err != nil || n != 0 {
		t.Fatalf("another gateway's sessions: %d %v", n, err)
	}
	for want := range []int{1, 0} { // once
		n, err := db.EndOpenSessions(ctx, "gw", heard, fl.hook())
		if err != nil || n != 1-want {
			t.Fatalf("ended %d (%v), want %d", n, err, 1-want)
		}
	}
	got, err := db.SessionsByExit(ctx, recs[0].ExitIPv4, recs[0].PortLo, recs[0].Start)
	if err != nil || len(got) != 1 || !got[0].End.Equal(heard) || got[0].EndSeq == 0 {
		t.Fatalf("inferred end: %+v %v", got, err)
	}
	if n := db.countIndex(t, `SELECT count(*) FROM sessions WHERE inferred_end_seq = end_seq`); n != 1 {
		t.Fatalf("%d rows with an inferred end, want 1", n)
	}
	inferredSeq := got[0].EndSeq
	reported := recs[0]
	reported.End = heard.Add(time.Hour)
	if _, err := saveOne(ctx, db, "gw", []api.SessionRecord{reported}, keepAll, fl.hook()); err != nil {
		t.Fatal(err)
	}
	got, err = db.SessionsByExit(ctx, recs[0].ExitIPv4, recs[0].PortLo, recs[0].Start)
	if err != nil || len(got) != 1 || !got[0].End.Equal(reported.End) || got[0].EndSeq == inferredSeq {
		t.Fatalf("reported end after the inferred one: %+v %v", got, err)
	}
	if n := db.countIndex(t, `SELECT count(*) FROM sessions WHERE inferred_end_seq = end_seq`); n != 0 {
		t.Fatalf("%d rows still with an inferred end", n)
	}
	// The replaced entry stays the session's: a purge of the account
	// removes it too.
	seqs, err := db.SessionSeqs(ctx, "alice")
	if err != nil || !slices.Contains(seqs, inferredSeq) || !slices.Contains(seqs, got[0].EndSeq) {
		t.Fatalf("the account's session entries %v (%v) lack the inferred end %d or the reported one %d", seqs, err, inferredSeq, got[0].EndSeq)
	}
}

// GatewaysHeard keeps the latest time, and gives a gateway never kept but
// with open sessions the start of its latest one.
func TestGatewaysHeard(t *testing.T) {
	ctx := context.Background()
	db, _, recs := aliceSessions(t, 2)
	var fl fakeLedger
	if _, err := saveOne(ctx, db, "gw", recs, keepAll, fl.hook()); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)
	if err := db.SaveGatewaysHeard(ctx, map[string]time.Time{"a": t0}); err != nil {
		t.Fatal(err)
	}
	if err := db.SaveGatewaysHeard(ctx, map[string]time.Time{"a": t0.Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	heard, err := db.GatewaysHeard(ctx)
	if err != nil || len(heard) != 2 || !heard["a"].Equal(t0) || !heard["gw"].Equal(recs[1].Start) {
		t.Fatalf("heard %v %v", heard, err)
	}
}
