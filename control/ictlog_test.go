package control

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/ictlog"
)

// ictEntries exports the whole ICT log through the API, checking the
// SHA-256 the server sends against the bytes.
func ictEntries(t *testing.T, ts *testServer) ([]api.ICTLogEntry, string) {
	t.Helper()
	var buf bytes.Buffer
	from := time.Now().Add(-time.Hour).Format(time.RFC3339)
	to := time.Now().Add(time.Hour).Format(time.RFC3339)
	n, sum, err := ts.admin.ExportICTLog(context.Background(), from, to, &buf)
	if err != nil {
		t.Fatal(err)
	}
	if h := sha256.Sum256(buf.Bytes()); hex.EncodeToString(h[:]) != sum {
		t.Fatal("the export's SHA-256 does not match its bytes")
	}
	var out []api.ICTLogEntry
	for sc := bufio.NewScanner(&buf); sc.Scan(); {
		var e api.ICTLogEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("%q: %v", sc.Text(), err)
		}
		out = append(out, e)
	}
	if int64(len(out)) != n {
		t.Fatalf("export said %d entries, wrote %d", n, len(out))
	}
	return out, buf.String()
}

// find returns the first entry of category with event, or fails.
func find(t *testing.T, es []api.ICTLogEntry, category, event string) api.ICTLogEntry {
	t.Helper()
	for _, e := range es {
		if e.Category == category && e.Event == event {
			return e
		}
	}
	t.Fatalf("no %s event %q in %d entries", category, event, len(es))
	return api.ICTLogEntry{}
}

func TestICTLogFollowsTheControlServersDuty(t *testing.T) {
	ts := newTestServer(t, "10.200.0.0/24")
	ctx := context.Background()
	bad, _ := api.NewClient(ts.url, adminTokenPrefix+"guess", "")

	// Unplaced, the control server carries no duty: nothing is recorded.
	bad.Users(ctx)
	ts.admin.Users(ctx)
	if es, _ := ictEntries(t, ts); len(es) != 0 {
		t.Fatalf("recorded without a duty: %+v", es)
	}
	st, err := ts.admin.ICTLogStatus(ctx)
	if err != nil || len(st.Duties) != 0 || st.KeepDays != 0 || !strings.Contains(strings.Join(st.Notes, "\n"), "nothing is recorded") {
		t.Fatalf("status without a duty: %+v %v", st, err)
	}

	// Placed in India (cert-in-2022 by default), it records: the change
	// that brought the duty is the first entry.
	if _, err := ts.admin.SetPlace(ctx, api.ControlNode, api.Place{PhysicalCountry: "IN", Ownership: api.Rented}); err != nil {
		t.Fatal(err)
	}
	bad.Users(ctx)
	noToken, _ := api.NewClient(ts.url, "", "")
	noToken.Users(ctx)
	const person = "priya.sharma@example.in" // a user name that is an email address
	if _, err := ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: person, Kind: api.Enterprise}); err != nil {
		t.Fatal(err)
	}
	if err := ts.admin.DeleteUser(ctx, person); err != nil {
		t.Fatal(err)
	}
	tok, _ := ts.CreateToken(ctx, "auditor-1", api.RoleAuditor)
	auditor, _ := api.NewClient(ts.url, tok, "")
	auditor.Users(ctx)
	ts.admin.Users(ctx)

	es, raw := ictEntries(t, ts)
	if es[0].Category != ictlog.Auth || es[1].Event != "PUT /control/place" || es[1].Category != ictlog.Config {
		t.Fatalf("first entries: %+v", es[:2])
	}
	for _, e := range es {
		if e.Node != api.ControlNode || e.Country != "IN" || e.KeepDays != 180 {
			t.Fatalf("entry %+v: want node control, country IN, kept 180 days", e)
		}
	}
	if e := find(t, es, ictlog.Auth, "invalid or revoked token"); e.Outcome != ictlog.Failure || e.Actor != "" || !strings.Contains(string(e.Details), `"credential":"admin token"`) {
		t.Fatalf("failed login: %+v", e)
	}
	find(t, es, ictlog.Auth, "no bearer token")
	if e := find(t, es, ictlog.Auth, "role may not call this endpoint"); !strings.Contains(e.Actor, "auditor-1") {
		t.Fatalf("refused role: %+v", e)
	}
	if e := find(t, es, ictlog.Auth, "admin token accepted"); !strings.HasPrefix(e.Actor, "admin:") || e.Outcome != ictlog.Success {
		t.Fatalf("accepted: %+v", e)
	}
	if e := find(t, es, ictlog.Admin, "DELETE /users/{name}"); e.Outcome != ictlog.Success || !strings.Contains(string(e.Details), `"status":204`) {
		t.Fatalf("admin action: %+v", e)
	}
	find(t, es, ictlog.Admin, "GET /users")
	// Neither the user's name (personal data), nor the body, nor a token.
	for _, secret := range []string{"priya", "guess", tok} {
		if strings.Contains(raw, secret) {
			t.Fatalf("the ICT log holds %q:\n%s", secret, raw)
		}
	}
	// The previous export is itself in the log, with its SHA-256.
	es, _ = ictEntries(t, ts)
	if e := find(t, es, ictlog.Admin, "ICT log exported"); !strings.Contains(string(e.Details), `"sha256"`) {
		t.Fatalf("export event: %+v", e)
	}

	// Moved to a country without the duty, recording stops after the
	// change that ended it.
	if _, err := ts.admin.SetPlace(ctx, api.ControlNode, api.Place{PhysicalCountry: "DE", Ownership: api.Rented}); err != nil {
		t.Fatal(err)
	}
	before := len(es) + 3 // the export above: accepted, the GET, the export event
	bad.Users(ctx)
	es, _ = ictEntries(t, ts)
	if len(es) != before+2 || es[len(es)-1].Event != "PUT /control/place" {
		t.Fatalf("after leaving India: %d entries (want %d), last %+v", len(es), before+2, es[len(es)-1])
	}
}

func TestICTLogGatewayEvents(t *testing.T) {
	ts := newTestServer(t, "10.200.0.0/24")
	ctx := context.Background()
	join := func(name, country string) *api.Client {
		tok, err := ts.admin.CreateJoinToken(ctx, api.JoinTokenRequest{})
		if err != nil {
			t.Fatal(err)
		}
		jc, _ := api.NewClient(ts.url, tok.Token, "")
		j, err := jc.Join(ctx, api.JoinRequest{Name: name, PublicKey: *newKey(t), Endpoint: "192.0.2.1:51820", Mode: api.Userspace})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ts.admin.SetPlace(ctx, name, api.Place{PhysicalCountry: country, Ownership: api.Rented}); err != nil {
			t.Fatal(err)
		}
		gc, _ := api.NewClient(ts.url, j.Credential, "")
		return gc
	}
	// The control server stands in Germany (no duty): its own events are
	// not recorded, those of a gateway in India are.
	if _, err := ts.admin.SetPlace(ctx, api.ControlNode, api.Place{PhysicalCountry: "DE", Ownership: api.Rented}); err != nil {
		t.Fatal(err)
	}
	india, germany := join("gw-in", "IN"), join("gw-de", "DE")
	report := func(gc *api.Client, underLoad, denied uint64) {
		t.Helper()
		if err := gc.Report(ctx, api.GatewayReport{Counters: &api.GatewayCounters{UnderLoad: underLoad, EgressDenied: denied}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, gc := range []*api.Client{india, germany} {
		report(gc, 3, 10) // the baseline
		report(gc, 3, 10) // no change
		report(gc, 5, 12)
		report(gc, 1, 1) // the gateway restarted
	}
	es, _ := ictEntries(t, ts)
	var got []string
	for _, e := range es {
		if e.Node != "gw-in" || e.Country != "IN" || e.KeepDays != 180 || e.Actor != "gateway:gw-in" {
			t.Fatalf("entry %+v", e)
		}
		got = append(got, e.Category+" "+string(e.Details))
	}
	want := []string{
		`egress {"flows":2,"total":12}`, `handshake {"times":2,"total":5}`,
		`egress {"flows":1,"total":1}`, `handshake {"times":1,"total":1}`,
	}
	if !slices.Equal(got, want) {
		t.Fatalf("gateway events:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	st, err := ts.admin.ICTLogStatus(ctx)
	if err != nil || len(st.Duties) != 1 || st.Duties[0].Node != "gw-in" || st.KeepDays != 180 || st.ControlCountry != "DE" {
		t.Fatalf("status: %+v %v", st, err)
	}
	if notes := strings.Join(st.Notes, "\n"); !strings.Contains(notes, "control server carries no ICT-log duty") || !strings.Contains(notes, "--ict-log-location") {
		t.Fatalf("notes: %s", notes)
	}
	// Handshake rate-limiting on either gateway is a DoS candidate,
	// whatever the duties: one per gateway, sightings merged.
	cs, err := ts.admin.IncidentCandidates(ctx, false)
	if err != nil || len(cs) != 2 {
		t.Fatalf("candidates: %+v %v", cs, err)
	}
	for _, c := range cs {
		if c.Kind != kindHandshakeFlood || !slices.Equal(c.Types, []int{8}) || c.Sightings != 2 {
			t.Fatalf("candidate %+v", c)
		}
	}
}

func TestICTLogLocation(t *testing.T) {
	cfg := Config{DataDir: t.TempDir(), IPv4Pool: netip.MustParsePrefix("10.200.0.0/24"), IPv6Pool: netip.MustParsePrefix("2001:db8:200::/120"),
		Logger: quietLog(), ICTLogLocation: "XX"}
	if _, err := New(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "ICT log location") {
		t.Fatalf("New with location XX: %v", err)
	}
	cfg.ICTLogLocation = "in"
	ts, stop := startTestServer(t, cfg)
	defer stop()
	if _, err := ts.admin.SetPlace(context.Background(), api.ControlNode, api.Place{PhysicalCountry: "SG", Ownership: api.Owned}); err != nil {
		t.Fatal(err)
	}
	st, err := ts.admin.ICTLogStatus(context.Background())
	if err != nil || st.Location != "IN" || st.LocationName != "India" {
		t.Fatalf("status: %+v %v", st, err)
	}
	if notes := strings.Join(st.Notes, "\n"); !strings.Contains(notes, "placed in SG, not IN") {
		t.Fatalf("notes: %s", notes)
	}
}

func TestICTLogExportBadInput(t *testing.T) {
	ts := newTestServer(t, "10.200.0.0/24")
	ctx := context.Background()
	for _, tc := range []struct{ from, to, want string }{
		{"", "2026-05-02T00:00:00Z", "from: required"},
		{"2026-05-01T00:00:00Z", "", "to: required"},
		{"2026-05-01T00:00:00", "2026-05-02T00:00:00Z", "has no time zone"},
		{"2026-05-01T00:00:00Z", "2026-05-02 00:00", "not an RFC 3339 time"},
		{"2026-05-02T00:00:00+05:30", "2026-05-01T00:00:00Z", "must be before to"},
		{"2026-05-01T00:00:00Z", "2026-05-01T05:30:00+05:30", "must be before to"}, // the same instant
	} {
		_, _, err := ts.admin.ExportICTLog(ctx, tc.from, tc.to, &bytes.Buffer{})
		wantStatus(t, err, 400, tc.want)
	}
	c, _ := api.NewClient(ts.url, "", "")
	_, _, err := c.ExportICTLog(ctx, "2026-05-01T00:00:00Z", "2026-05-02T00:00:00Z", &bytes.Buffer{})
	wantStatus(t, err, 401, "bearer")
}
