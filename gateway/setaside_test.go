package gateway

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/wg"
)

// Set-aside records are reported by reason, leave the file only when the
// control server's reply says (resent into the spool, or past their
// retention), and survive a restart (they are read from the file).
func TestSetAsideReportResendPurge(t *testing.T) {
	dir := t.TempDir()
	sp, err := openSpool(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.close()
	k, _ := wg.NewPrivateKey()
	rec := func(i int, start time.Time) api.SessionRecord {
		return api.SessionRecord{ID: fmt.Sprintf("%032x", i), PublicKey: k.Public(), TunnelIPv4: netip.MustParseAddr("10.200.0.2"),
			Endpoint: netip.MustParseAddrPort("198.51.100.7:40000"), ExitIPv4: netip.MustParseAddr("203.0.113.1"), PortLo: 1024, PortHi: 1279,
			Start: start, End: start.Add(time.Minute)}
	}
	old, refused, noDuty := rec(1, time.Now().AddDate(-6, 0, 0).UTC()), rec(2, time.Now().Add(-time.Hour).UTC()), rec(3, time.Now().Add(-time.Hour).UTC())
	g := &Gateway{log: slog.New(slog.NewTextHandler(io.Discard, nil)), spool: sp}
	if err := g.setAside([]api.SessionRecord{old, refused}, api.SetAsideRefused); err != nil {
		t.Fatal(err)
	}
	if err := g.setAside([]api.SessionRecord{noDuty}, api.SetAsideNoDuty); err != nil {
		t.Fatal(err)
	}
	// A line from before reasons were kept reads as refused.
	f, _ := os.OpenFile(filepath.Join(dir, refusedFile), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"id":"` + fmt.Sprintf("%032x", 4) + `","public_key":"` + k.Public().String() + `","start":"2026-01-01T00:00:00Z","port_lo":1,"port_hi":2}` + "\n")
	f.Close()

	// A restarted gateway reads the same file: a fresh Gateway stands in.
	g = &Gateway{log: g.log, spool: sp}
	held, err := g.heldRecords()
	if err != nil {
		t.Fatal(err)
	}
	if len(held.SetAside) != 2 || held.SetAside[0].Reason != api.SetAsideNoDuty || held.SetAside[0].Count != 1 ||
		held.SetAside[1].Reason != api.SetAsideRefused || held.SetAside[1].Count != 3 || !held.SetAside[1].Oldest.Equal(old.Start) {
		t.Fatalf("held: %+v", held)
	}
	// Past the retention: the old one goes; resend refused: they go back
	// into the spool; the no-duty one stays.
	if err := g.applyReportReply(api.GatewayReportReply{Resend: []string{api.SetAsideRefused}, PurgeSetAsideBefore: time.Now().AddDate(-5, 0, 0)}); err != nil {
		t.Fatal(err)
	}
	held, _ = g.heldRecords()
	if len(held.SetAside) != 1 || held.SetAside[0].Reason != api.SetAsideNoDuty || held.Spooled != 2 {
		t.Fatalf("after the reply: %+v", held)
	}
	recs, _, _, err := sp.peek(10, 1<<20)
	if err != nil || len(recs) != 2 || recs[0].ID != refused.ID {
		t.Fatalf("spool after the resend: %v %v", recs, err)
	}
	// The operator discards what no duty requires: only that goes.
	if err := g.applyReportReply(api.GatewayReportReply{Discard: []string{api.SetAsideNoDuty}}); err != nil {
		t.Fatal(err)
	}
	if held, _ = g.heldRecords(); len(held.SetAside) != 0 || held.Spooled != 2 {
		t.Fatalf("after the discard: %+v", held)
	}
	b, _ := os.ReadFile(filepath.Join(dir, refusedFile))
	for _, id := range []string{old.ID, refused.ID, noDuty.ID} {
		if strings.Contains(string(b), id) {
			t.Errorf("%s still in %s", id, refusedFile)
		}
	}
}

// FuzzReadSetAside: any content of the set-aside file reads without
// panicking, every line either a record or counted as bad, and a resend
// keeps the bad lines in the file for the operator.
func FuzzReadSetAside(f *testing.F) {
	f.Add([]byte(`{"id":"00000000000000000000000000000001","start":"2026-01-01T00:00:00Z","set_aside_reason":"no_duty"}` + "\n"))
	f.Add([]byte("not json\n{\"id\":\"\"}\n"))
	f.Add([]byte(`{"id":"00000000000000000000000000000002","start":"2026-01-01T00:00:00Z"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		name := filepath.Join(dir, refusedFile)
		if err := os.WriteFile(name, b, 0o600); err != nil {
			t.Fatal(err)
		}
		recs, bad, err := readSetAside(name)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Count(string(b), "\n")
		if len(b) > 0 && b[len(b)-1] != '\n' {
			lines++
		}
		if len(recs)+bad != lines {
			t.Fatalf("%d records and %d bad lines of %d", len(recs), bad, lines)
		}
		sp, err := openSpool(dir, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		defer sp.close()
		g := &Gateway{log: slog.New(slog.NewTextHandler(io.Discard, nil)), spool: sp}
		if err := g.applyReportReply(api.GatewayReportReply{Resend: []string{api.SetAsideRefused, api.SetAsideNoDuty}}); err != nil {
			t.Fatal(err)
		}
		if _, left, _ := readSetAside(name); left != bad {
			t.Fatalf("%d bad lines kept of %d", left, bad)
		}
	})
}
