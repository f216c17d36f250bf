package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/gateway"
	"github.com/meridian-vpn/meridian/internal/recordseal"
)

// TestSetAsideRecordsAccountedAndResent: nothing is lost on the way to
// the ledger. A record the control server refuses (its endpoint sealed to
// a key the server no longer has, as after a restore without
// record-seal.key) and one it takes without storing (the gateway's place
// was declared in a country without the duty) are set aside on the
// gateway, counted on the control server (a candidate for the refusal),
// listed there by reason with their ids, kept across a gateway restart,
// and, once the causes are fixed, sent again and stored exactly once.
func TestSetAsideRecordsAccountedAndResent(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cdir := filepath.Join(dir, "control")
	ctl := startControlWith(t, cdir, "127.0.0.1:0", time.Second)
	admin := ctl.admin(t)
	if _, err := admin.CreateUser(ctx, api.CreateUserRequest{Name: "alice"}); err != nil {
		t.Fatal(err)
	}
	dev, _ := newDevice(t, admin, "alice", "laptop", "")
	gw := startGateway(t, ctl, admin, dir, "in1")
	if _, err := admin.SetPlace(ctx, "in1", place("IN")); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(cdir, "record-seal.key")
	var k1 []byte
	eventually(t, 10*time.Second, "the record seal key", func() (err error) {
		k1, err = os.ReadFile(keyFile)
		return err
	})
	if err := gw.Close(); err != nil {
		t.Fatal(err)
	}

	// Records made while the gateway stood in India, waiting in its spool.
	priv, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(k1)))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := recordseal.PublicKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := recordseal.NewSealer(pub)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	rec := func(id int) api.SessionRecord {
		return api.SessionRecord{ID: fmt.Sprintf("%032x", id), PublicKey: dev.Device.PublicKey, TunnelIPv4: dev.Device.IPv4,
			ExitIPv4: netip.MustParseAddr("203.0.113.1"), PortLo: 1024, PortHi: 1279, Start: start, End: start.Add(time.Minute)}
	}
	sealed := rec(1)
	sealed.SealedEndpoint = sealer.Seal(sealed.ID, netip.MustParseAddrPort("198.51.100.7:40000"))
	plain := rec(2)
	plain.Endpoint = netip.MustParseAddrPort("198.51.100.8:40000")
	var spool []byte
	for _, r := range []api.SessionRecord{sealed, plain} {
		b, _ := json.Marshal(r)
		spool = append(append(spool, b...), '\n')
	}
	gwDir := filepath.Join(dir, "in1")
	if err := os.WriteFile(filepath.Join(gwDir, "sessions.spool"), spool, 0o600); err != nil {
		t.Fatal(err)
	}
	// Two mistakes: the place is declared wrongly, and the control server
	// is restored without its record seal key.
	if _, err := admin.SetPlace(ctx, "in1", place("DE")); err != nil {
		t.Fatal(err)
	}
	ctl.stop()
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	ctl = startControlWith(t, cdir, ctl.addr, time.Second)
	admin = ctl.admin(t)

	restart := func() *gateway.Gateway {
		g, err := gateway.Start(ctx, gateway.Config{StateDir: gwDir, ListenPort: freeUDPPort(t), ReportInterval: 100 * time.Millisecond, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { g.Close() })
		return g
	}
	gw = restart()
	wantAside := func(since time.Time) {
		t.Helper()
		eventually(t, 15*time.Second, "the control server lists the set-aside records", func() error {
			got, err := admin.GatewayRecords(ctx, "in1")
			if err != nil {
				return err
			}
			want := []api.SetAsideGroup{{Reason: api.SetAsideNoDuty, Count: 1, IDs: []string{plain.ID}, Oldest: start},
				{Reason: api.SetAsideRefused, Count: 1, IDs: []string{sealed.ID}, Oldest: start}}
			if got.ReportedAt.Before(since) || got.Spooled != 0 || !slices.EqualFunc(got.SetAside, want, func(a, b api.SetAsideGroup) bool {
				return a.Reason == b.Reason && a.Count == b.Count && slices.Equal(a.IDs, b.IDs) && a.Oldest.Equal(b.Oldest)
			}) {
				return fmt.Errorf("%+v", got)
			}
			return nil
		})
	}
	wantAside(time.Time{})
	cands, err := admin.IncidentCandidates(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(cands, func(c api.IncidentCandidate) bool { return c.Kind == "records-not-stored" && c.Node == "in1" }) {
		t.Fatalf("no candidate for the refused record: %+v", cands)
	}
	// The listing holds no personal data.
	listing, _ := json.Marshal(cands)
	got, _ := admin.GatewayRecords(ctx, "in1")
	b, _ := json.Marshal(got)
	for _, secret := range []string{"198.51.100.7", "198.51.100.8", dev.Device.PublicKey.String(), dev.Device.IPv4.String()} {
		if strings.Contains(string(b), secret) || strings.Contains(string(listing), secret) {
			t.Errorf("the listing or the candidate names %s", secret)
		}
	}

	// A gateway restart keeps them.
	if err := gw.Close(); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	gw = restart()
	wantAside(restarted)

	// Both causes fixed, then resent: stored once each.
	if _, err := admin.SetPlace(ctx, "in1", place("IN")); err != nil {
		t.Fatal(err)
	}
	ctl.stop()
	if err := os.WriteFile(keyFile, k1, 0o600); err != nil {
		t.Fatal(err)
	}
	ctl = startControlWith(t, cdir, ctl.addr, time.Second)
	admin = ctl.admin(t)
	for range 2 {
		if _, err := admin.ResendGatewayRecords(ctx, "in1", api.ResendRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	db := openStore(t, ctl)
	eventually(t, 15*time.Second, "the resent records are stored", func() error {
		got, err := admin.GatewayRecords(ctx, "in1")
		if err != nil {
			return err
		}
		if len(got.SetAside) != 0 || len(got.ResendPending) != 0 || got.Spooled != 0 {
			return fmt.Errorf("still held: %+v", got)
		}
		var n int
		if err := db.SessionIndex().QueryRow(`SELECT count(*) FROM sessions WHERE id IN (?, ?)`, sealed.ID, plain.ID).Scan(&n); err != nil || n != 2 {
			return fmt.Errorf("%d of the 2 records stored (%v)", n, err)
		}
		return nil
	})
	var entries int
	db.QueryRow(`SELECT count(*) FROM ledger_entries WHERE kind = 'session'`).Scan(&entries)
	if entries != 2 {
		t.Fatalf("%d session entries in the ledger, want the 2 records once each", entries)
	}
}
