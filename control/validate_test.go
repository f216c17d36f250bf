package control

import (
	"context"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/wg"
)

// TestCancelledAccountGetsNoDevices: after 'user cancel', the account's
// devices leave the gateways (a delta netmap removes them), and no path
// gives the account a working device again: adding one, or a config for
// another location, is refused with 409.
func TestCancelledAccountGetsNoDevices(t *testing.T) {
	ts := newTestServer(t, "10.200.0.0/24")
	ctx := context.Background()
	gc := ts.joinGateway(t, "gw")
	ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "carol"})
	ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "dave"})
	d, err := ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "carol", Name: "laptop", PublicKey: newKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	other, err := ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "dave", Name: "phone", PublicKey: newKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	full, err := gc.Netmap(ctx, api.FullNetmap, 0)
	if err != nil || len(full.Peers) != 2 {
		t.Fatalf("full netmap: %+v %v", full, err)
	}
	if err := ts.admin.Do(ctx, "POST", "/users/carol/cancel", nil, nil); err != nil {
		t.Fatal(err)
	}
	// A gateway following deltas drops carol's device, and only hers.
	delta, err := gc.Netmap(ctx, full.Version, 0)
	if err != nil || len(delta.Peers) != 1 || !delta.Peers[0].Remove || delta.Peers[0].PublicKey != d.Device.PublicKey {
		t.Fatalf("delta after cancel: %+v %v", delta, err)
	}
	if now, _ := gc.Netmap(ctx, api.FullNetmap, 0); len(now.Peers) != 1 || now.Peers[0].PublicKey != other.Device.PublicKey {
		t.Fatalf("full netmap after cancel: %+v", now)
	}
	n := ts.deviceCount(t)
	_, err = ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "carol", Name: "new", PublicKey: newKey(t)})
	wantStatus(t, err, 409, `user "carol" was cancelled`)
	_, err = ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "carol", Name: "gen"}) // server-made key
	wantStatus(t, err, 409, `user "carol" was cancelled`)
	if got := ts.deviceCount(t); got != n {
		t.Fatalf("refused creations left devices: %d, want %d", got, n)
	}
	_, err = ts.admin.DeviceConfig(ctx, d.Device.ID, "")
	wantStatus(t, err, 409, "revoked")
	if v, _ := gc.Netmap(ctx, delta.Version, 0); len(v.Peers) != 0 {
		t.Fatalf("refused requests changed the netmap: %+v", v)
	}
	// The other account is untouched.
	if _, err := ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "dave", Name: "tablet", PublicKey: newKey(t)}); err != nil {
		t.Fatal(err)
	}
}

// TestUnusableDeviceKeys: keys no handshake can work with are refused:
// the Curve25519 low-order points (with and without the top bit) and the
// gateways' own keys.
func TestUnusableDeviceKeys(t *testing.T) {
	ts := newTestServer(t, "10.200.0.0/24")
	ctx := context.Background()
	gwKey := *newKey(t)
	tok, _ := ts.admin.CreateJoinToken(ctx, api.JoinTokenRequest{})
	jc, _ := api.NewClient(ts.url, tok.Token, "")
	if _, err := jc.Join(ctx, api.JoinRequest{Name: "gw", PublicKey: gwKey, Endpoint: "192.0.2.1:51820", Mode: api.Userspace}); err != nil {
		t.Fatal(err)
	}
	ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "erin"})
	for i, s := range []string{
		"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", // 1
		"4Ot6fDtBuK4WVuP68Z/EatoJjeucMrH9hmIFFl9JuAA=", // order 8
		"X5yVvKNQjCSx0LFVnIPvWwREXMRYHI6G2CJO3dCfEVc=", // order 8
		"7P///////////////////////////////////////38=", // p-1
		"7f///////////////////////////////////////38=", // p
		"7v///////////////////////////////////////38=", // p+1
		"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAIA=", // 0 with the top bit
		"4Ot6fDtBuK4WVuP68Z/EatoJjeucMrH9hmIFFl9JuIA=", // order 8 with the top bit
	} {
		k, err := wg.ParseKey(s)
		if err != nil {
			t.Fatalf("key %d: %v", i, err)
		}
		_, err = ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "erin", Name: "d", PublicKey: &k})
		wantStatus(t, err, 400, "low-order")
	}
	_, err := ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "erin", Name: "d", PublicKey: &gwKey})
	wantStatus(t, err, 400, "gateway gw's own public key")
	if n := ts.deviceCount(t); n != 0 {
		t.Fatalf("refused keys left %d devices", n)
	}
	// Nor may a gateway join with a low-order key.
	lo, _ := wg.ParseKey("AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
	tok, _ = ts.admin.CreateJoinToken(ctx, api.JoinTokenRequest{})
	jc, _ = api.NewClient(ts.url, tok.Token, "")
	_, err = jc.Join(ctx, api.JoinRequest{Name: "gw2", PublicKey: lo, Endpoint: "192.0.2.2:51820", Mode: api.Userspace})
	wantStatus(t, err, 400, "low-order")
	if gws, _ := ts.admin.Gateways(ctx); len(gws) != 1 {
		t.Fatalf("gateways: %d, want 1", len(gws))
	}
}

// TestCaseReferences: a case reference is printable text with a letter or
// digit, up to 128 characters; every route that takes one refuses
// invisible, control and bidi characters, before reading anything.
func TestCaseReferences(t *testing.T) {
	ts, _ := complianceServer(t, Config{})
	ctx := context.Background()
	if _, err := ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "asha", Subscriber: details()}); err != nil {
		t.Fatal(err)
	}
	officer := ts.token(t, "compliance")
	for _, c := range []string{"%E2%80%8B", "%00", "A%0Afake-entry", "A%E2%80%AEB", "%EF%BB%BFA", "---", "A%E2%80%A8B", strings.Repeat("x", 129), "%FF"} {
		wantStatus(t, officer.Do(ctx, "GET", "/compliance/subscribers/asha?case="+c, nil, nil), 400, "case reference")
		wantStatus(t, officer.Do(ctx, "GET", "/compliance/lookup?subscriber=asha&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&case="+c, nil, nil), 400, "case reference")
	}
	for _, c := range []string{"\u200b", "\x00", "A\nfake-entry", "A\u202eB", "   "} {
		wantStatus(t, officer.Do(ctx, "POST", "/compliance/exports", api.ExportRequest{Case: c, Subscriber: "asha"}, nil), 400, "case reference")
	}
	if err := officer.Do(ctx, "GET", "/compliance/subscribers/asha?case=FIR-2026%2F0142", nil, nil); err != nil {
		t.Fatalf("a good reference: %v", err)
	}
	// Refused reads were not recorded: the access chain holds one read.
	var n int
	if err := ts.db.QueryRow(`SELECT count(*) FROM ledger_entries WHERE chain = 'access'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("access chain has %d entries, want 1 (%v)", n, err)
	}
}

// TestCasePattern: an operator's pattern is checked on top.
func TestCasePattern(t *testing.T) {
	ts, _ := complianceServer(t, Config{CasePattern: `FIR-[0-9]{4}/[0-9]+`})
	ctx := context.Background()
	ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "asha", Subscriber: details()})
	officer := ts.token(t, "compliance")
	wantStatus(t, officer.Do(ctx, "GET", "/compliance/subscribers/asha?case=C-1", nil, nil), 400, "case pattern")
	wantStatus(t, officer.Do(ctx, "POST", "/compliance/exports", api.ExportRequest{Case: "C-1", Subscriber: "asha"}, nil), 400, "case pattern")
	if err := officer.Do(ctx, "GET", "/compliance/subscribers/asha?case=FIR-2026%2F7", nil, nil); err != nil {
		t.Fatal(err)
	}
	_, err := New(ctx, Config{DataDir: t.TempDir(), CasePattern: "(["})
	if err == nil || !strings.Contains(err.Error(), "case pattern") {
		t.Fatalf("a bad pattern: %v", err)
	}
}

// TestLenientInput: inputs that were taken loosely are refused.
func TestLenientInput(t *testing.T) {
	ts := newTestServer(t, "10.200.0.0/24")
	ctx := context.Background()
	ts.joinGateway(t, "gw")

	t.Run("null body", func(t *testing.T) {
		// A body must be a JSON object: null, arrays, strings and numbers are
		// refused (null made a join token).
		toks, _ := ts.admin.JoinTokens(ctx)
		for _, b := range []string{"null", " null ", "[]", `"x"`, "1", "true"} {
			wantStatus(t, rawPost(t, ts, "/gateway-tokens", b), 400, "JSON object")
		}
		if after, _ := ts.admin.JoinTokens(ctx); len(after) != len(toks) {
			t.Fatalf("refused bodies made join tokens: %d, had %d", len(after), len(toks))
		}
	})

	t.Run("times", func(t *testing.T) {
		// Times outside 2000-2199 are refused (year 0000 overflowed a deadline).
		for _, at := range []string{"0000-01-01T00:00:00Z", "1999-12-31T23:59:59Z"} {
			_, err := ts.admin.CreateIncident(ctx, api.IncidentRequest{Type: 3, NoticedAt: at})
			wantStatus(t, err, 400, "noticed_at")
			_, err = ts.admin.CreateOrder(ctx, api.OrderRequest{Reference: "R-1", ReceivedAt: at, DueAt: "2026-01-01T00:00:00Z", Request: "logs"})
			wantStatus(t, err, 400, "received_at")
		}
		_, err := ts.admin.CreateOrder(ctx, api.OrderRequest{Reference: "R-1", ReceivedAt: time.Now().Add(-time.Hour).Format(time.RFC3339), DueAt: "9999-01-01T00:00:00Z", Request: "logs"})
		wantStatus(t, err, 400, "due_at")
		if incs, _ := ts.admin.Incidents(ctx, true); len(incs) != 0 {
			t.Fatalf("refused incidents stored: %d", len(incs))
		}
		if os, _ := ts.admin.Orders(ctx); len(os) != 0 {
			t.Fatalf("refused orders stored: %d", len(os))
		}
		officer := ts.token(t, "compliance")
		wantStatus(t, officer.Do(ctx, "GET", "/compliance/lookup?case=C-1&tunnel_ip=10.200.0.2&at=0000-01-01T00:00:00Z", nil, nil), 400, "at")
		wantStatus(t, officer.Do(ctx, "GET", "/compliance/lookup?case=C-1&subscriber=x&from=0001-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", nil, nil), 400, "from")
	})

	t.Run("endpoints", func(t *testing.T) {
		// Endpoints need a port from 1 to 65535.
		for _, e := range []string{"192.0.2.9:99999", "192.0.2.9", "192.0.2.9:", "192.0.2.9:+80", ":51820"} {
			_, err := ts.admin.SetPlace(ctx, "gw", api.Place{PhysicalCountry: "SG", Ownership: api.Rented, EntryEndpoints: []string{e}})
			wantStatus(t, err, 400, "entry endpoint")
			tok, _ := ts.admin.CreateJoinToken(ctx, api.JoinTokenRequest{})
			jc, _ := api.NewClient(ts.url, tok.Token, "")
			_, err = jc.Join(ctx, api.JoinRequest{Name: "gw3", PublicKey: *newKey(t), Endpoint: e, Mode: api.Userspace})
			wantStatus(t, err, 400, "endpoint")
		}
	})

	t.Run("bidi text", func(t *testing.T) {
		// Stored text carries no bidi overrides or invisible characters.
		for _, bad := range []string{"Mumbai\u202e", "a\u2066b", "a\u200bb", "a\u2028b"} {
			_, err := ts.admin.SetPlace(ctx, "gw", api.Place{PhysicalCountry: "SG", Ownership: api.Rented, City: bad})
			wantStatus(t, err, 400, "city")
			_, err = ts.admin.CreateIncident(ctx, api.IncidentRequest{Type: 3, NoticedAt: time.Now().Add(-time.Hour).Format(time.RFC3339), Note: bad})
			wantStatus(t, err, 400, "note")
			_, err = ts.admin.CreateOrder(ctx, api.OrderRequest{Reference: bad, ReceivedAt: time.Now().Add(-time.Hour).Format(time.RFC3339), DueAt: time.Now().Add(time.Hour).Format(time.RFC3339), Request: "logs"})
			wantStatus(t, err, 400, "reference")
		}
		if p, err := ts.admin.SetPlace(ctx, "gw", api.Place{PhysicalCountry: "SG", Ownership: api.Rented, City: "Singapore", EntryEndpoints: []string{"192.0.2.9:51820"}}); err != nil || p.City != "Singapore" {
			t.Fatalf("a good place: %+v %v", p, err)
		}
	})

	t.Run("path ids", func(t *testing.T) {
		// Path ids are digits: no sign.
		ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "u"})
		d, _ := ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "u", Name: "d", PublicKey: newKey(t)})
		inc, err := ts.admin.CreateIncident(ctx, api.IncidentRequest{Type: 3, NoticedAt: time.Now().Add(-time.Hour).Format(time.RFC3339)})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{"/devices/+" + itoa(d.Device.ID) + "/config", "/incidents/+" + itoa(inc.ID), "/incidents/%2B" + itoa(inc.ID)} {
			wantStatus(t, ts.admin.Do(ctx, "GET", p, nil, nil), 400, "id must be a positive number")
		}
		wantStatus(t, ts.admin.Do(ctx, "POST", "/devices/+"+itoa(d.Device.ID)+"/revoke", nil, nil), 400, "id must be a positive number")
		officer := ts.token(t, "compliance")
		wantStatus(t, officer.Do(ctx, "GET", "/compliance/lookup?case=C-1&exit_ip=192.0.2.7&port=%2B443&at=2026-01-01T00:00:00Z", nil, nil), 400, "port must be a number")
		if got, _ := ts.admin.Devices(ctx, "u"); got[0].Status != api.DeviceActive {
			t.Fatal("a refused revoke revoked")
		}
	})
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// TestPoolsRefused: a control server does not start with a tunnel pool of
// loopback, multicast, link-local or everything.
func TestPoolsRefused(t *testing.T) {
	for _, c := range []struct{ v4, v6 string }{
		{"127.0.0.0/8", "fd00::/64"}, {"224.0.0.0/24", "fd00::/64"}, {"0.0.0.0/0", "fd00::/64"}, {"169.254.0.0/16", "fd00::/64"},
		{"10.200.0.0/16", "::/0"}, {"10.200.0.0/16", "ff02::/64"}, {"10.200.0.0/16", "::1/128"}, {"10.200.0.0/16", "fe80::/64"},
	} {
		_, err := New(context.Background(), Config{DataDir: t.TempDir(), IPv4Pool: netip.MustParsePrefix(c.v4), IPv6Pool: netip.MustParsePrefix(c.v6)})
		if err == nil {
			t.Errorf("pools %s and %s accepted", c.v4, c.v6)
		}
	}
}

// TestSubscriberTextRefused: subscriber details and validation evidence
// carry no bidi overrides or invisible characters.
func TestSubscriberTextRefused(t *testing.T) {
	ts, _ := complianceServer(t, Config{})
	ctx := context.Background()
	for _, bad := range []string{"Asha \u202eamreV", "Asha\u2066", "Asha\u200bVerma", "Asha\u2029Verma"} {
		d := details()
		d.Name = bad
		_, err := ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "asha", Subscriber: d})
		wantStatus(t, err, 400, "subscriber.name")
	}
	d := details()
	d.Name = "आशा वर्मा"
	if _, err := ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "asha", Subscriber: d}); err != nil {
		t.Fatal(err)
	}
	err := ts.admin.Do(ctx, "POST", "/subscribers/asha/validate", api.ValidateRequest{Field: "name", State: api.Validated, Method: "document", Evidence: "PAN\u202e1234"}, nil)
	wantStatus(t, err, 400, "evidence")
}
