package control

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
)

// A device deleted before its session records arrive leaves rows with no
// account name: they are purged at their retention, counted from the
// session's end, and no copy stays in the index's files or the ledger.
func TestOrphanSessionRowsPurgedAtRetention(t *testing.T) {
	ts, in, alice := aliceOnIN(t)
	ctx := context.Background()
	// alice's second device records a session, then is deleted before the
	// record reaches the control server.
	gone, err := ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "alice", Name: "gone", PublicKey: newKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.admin.DeleteDevice(ctx, gone.Device.ID); err != nil {
		t.Fatal(err)
	}
	orphan := sessionRecord(t, gone.Device, 0xbeef)
	orphan.End = orphan.Start.Add(time.Hour)
	kept := sessionRecord(t, alice.Device, 0xcafe)
	kept.End = kept.Start.Add(time.Hour)
	if res, err := in.PostSessions(ctx, api.SessionBatch{Records: []api.SessionRecord{orphan, kept}}); err != nil || res.Stored != 2 {
		t.Fatalf("posting: %+v %v", res, err)
	}
	if err := ts.db.FlushSessionIndex(ctx); err != nil {
		t.Fatal(err)
	}
	var orphans int
	ts.db.SessionIndex().QueryRow(`SELECT count(*) FROM sessions WHERE user_name IS NULL`).Scan(&orphans)
	if orphans != 1 {
		t.Fatalf("%d orphan rows, want 1", orphans)
	}
	// A day before the retention ends, nothing goes.
	if _, err := ts.purgeExpired(ctx, orphan.End.AddDate(5, 0, -1)); err != nil {
		t.Fatal(err)
	}
	if n := ts.sessionRows(t); n != 2 {
		t.Fatalf("%d rows before the retention ended, want 2", n)
	}
	res, err := ts.purgeExpired(ctx, orphan.End.AddDate(5, 0, 1))
	if err != nil {
		t.Fatal(err)
	}
	if res.Orphans != 1 {
		t.Fatalf("purge: %+v, want 1 orphan", res)
	}
	var left []string
	rows, _ := ts.db.SessionIndex().Query(`SELECT id FROM sessions`)
	for rows.Next() {
		var id string
		rows.Scan(&id)
		left = append(left, id)
	}
	rows.Close()
	if len(left) != 1 || left[0] != kept.ID {
		t.Fatalf("rows after the purge: %v, want only alice's active account's %s", left, kept.ID)
	}
	var sealed int
	ts.db.QueryRow(`SELECT count(*) FROM ledger_entries WHERE chain = 'records' AND kind IN ('session', 'session-end') AND body IS NOT NULL`).Scan(&sealed)
	if sealed != 1 {
		t.Fatalf("%d sealed session entries after the purge, want alice's 1", sealed)
	}
	id := []byte(fmt.Sprintf("%032x", 0xbeef))
	for _, f := range []string{"meridian-sessions.db", "meridian-sessions.db-wal"} {
		b, _ := os.ReadFile(filepath.Join(ts.cfg.DataDir, f))
		if bytes.Contains(b, id) {
			t.Errorf("%s still holds the purged orphan row", f)
		}
	}
}
