package control

import (
	"context"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/internal/recordseal"
)

// TestSealedEndpointIngest: a gateway that owes records gets the control
// server's record seal key with its netmap (one without the duty does
// not); a record whose endpoint is sealed to it is stored with the
// endpoint opened (a lookup by endpoint finds it, the answer carries it),
// and the sealed form is kept nowhere. A sealed endpoint that does not
// open, or a record with both forms, is refused (400) naming no value.
// The key lives in the data directory, 0600, and stays across restarts.
func TestSealedEndpointIngest(t *testing.T) {
	ts, in, alice := aliceOnIN(t)
	ctx := context.Background()
	de := ts.joinGateway(t, "de1")
	ts.placeIn(t, "de1", "DE")
	if nm, err := de.Netmap(ctx, api.FullNetmap, 0); err != nil || nm.RecordSealKey != nil {
		t.Fatalf("a gateway without the duty got a seal key: %+v %v", nm.RecordSealKey, err)
	}
	nm, err := in.Netmap(ctx, api.FullNetmap, 0)
	if err != nil || nm.RecordSealKey == nil || nm.RecordSealKey.Scheme != api.RecordSealScheme || len(nm.RecordSealKey.Key) != 32 {
		t.Fatalf("netmap of a gateway owing records: %+v %v", nm.RecordSealKey, err)
	}
	fi, err := os.Stat(filepath.Join(ts.cfg.DataDir, recordSealKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	sealer, err := recordseal.NewSealer(nm.RecordSealKey.Key)
	if err != nil {
		t.Fatal(err)
	}
	ep := netip.MustParseAddrPort("198.51.100.99:41000")
	rec := sessionRecord(t, alice.Device, 1)
	rec.Endpoint, rec.SealedEndpoint = netip.AddrPort{}, sealer.Seal(rec.ID, ep)
	if res, err := in.PostSessions(ctx, api.SessionBatch{Records: []api.SessionRecord{rec}}); err != nil || res.Stored != 1 {
		t.Fatalf("post: %+v %v", res, err)
	}
	q := url.Values{"case": {"C-2"}, "endpoint_ip": {ep.Addr().String()}, "from": {rec.Start.Add(-time.Hour).Format(time.RFC3339)}, "to": {rec.Start.Add(time.Hour).Format(time.RFC3339)}}
	var res api.LookupResult
	if err := ts.token(t, api.RoleCompliance).Do(ctx, "GET", "/compliance/lookup?"+q.Encode(), nil, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Sessions) != 1 || res.Sessions[0].ID != rec.ID || res.Sessions[0].Endpoint != ep || res.Sessions[0].SealedEndpoint != "" {
		t.Fatalf("lookup by the sealed endpoint: %+v", res.Sessions)
	}
	var sealedKept int
	if err := ts.db.QueryRow(`SELECT count(*) FROM ledger_entries WHERE kind = 'session' AND instr(body, 'sealed') > 0`).Scan(&sealedKept); err != nil || sealedKept != 0 {
		t.Fatalf("%d ledger entries keep the sealed form (%v)", sealedKept, err)
	}

	other, _ := recordseal.NewKey()
	otherPub, _ := recordseal.PublicKey(other)
	wrong, _ := recordseal.NewSealer(otherPub)
	bad := sessionRecord(t, alice.Device, 2)
	bad.Endpoint, bad.SealedEndpoint = netip.AddrPort{}, wrong.Seal(bad.ID, ep)
	_, err = in.PostSessions(ctx, api.SessionBatch{Records: []api.SessionRecord{bad}})
	wantStatus(t, err, 400, "record 0: sealed endpoint does not open")
	both := sessionRecord(t, alice.Device, 3)
	both.SealedEndpoint = sealer.Seal(both.ID, ep)
	_, err = in.PostSessions(ctx, api.SessionBatch{Records: []api.SessionRecord{both}})
	wantStatus(t, err, 400, "both set")
	if err == nil || strings.Contains(err.Error(), ep.Addr().String()) {
		t.Fatalf("error names the endpoint: %v", err)
	}

	// The key survives a restart: what was sealed before still opens.
	o, err := loadOrCreateRecordSealKey(filepath.Join(ts.cfg.DataDir, recordSealKeyFile))
	if err != nil || string(o.PublicKey()) != string(nm.RecordSealKey.Key) {
		t.Fatalf("key reloaded: %v", err)
	}
}
