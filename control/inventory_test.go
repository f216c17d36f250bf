package control

import (
	"context"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/incident"
	"github.com/meridian-vpn/meridian/store"
	"github.com/meridian-vpn/meridian/wg"
)

// inventoryScenario has subscribers, sessions (one of a device deleted
// before its record arrived), a pending sign-up with its email code, an
// incident naming suspected sources, and a gateway's report of the
// records it holds.
func inventoryScenario(t *testing.T, cfg Config) *testServer {
	t.Helper()
	cfg.Signup, cfg.TrustedProxies = true, loopbackProxy
	ts, _ := complianceServer(t, cfg)
	ctx := context.Background()
	if code, _, msg := signupAs(t, ts, "198.51.100.30", "pending", "pending@example.in"); code != 201 {
		t.Fatalf("sign-up: HTTP %d %s", code, msg)
	}
	if _, err := ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "alice", Subscriber: details()}); err != nil {
		t.Fatal(err)
	}
	phone, err := ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "alice", Name: "phone", PublicKey: newKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	gone, err := ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "alice", Name: "gone", PublicKey: newKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.admin.DeleteDevice(ctx, gone.Device.ID); err != nil {
		t.Fatal(err)
	}
	var recs []api.SessionRecord
	for i, d := range []api.Device{phone.Device, phone.Device, gone.Device} {
		r := sessionRecord(t, d, 0x100+i)
		r.End = r.Start.Add(time.Hour)
		recs = append(recs, r)
	}
	if _, err := ts.saveSessions(ctx, store.GatewaySessions{Gateway: "in1", Records: recs, Keep: func(store.SessionOwner) bool { return true }}); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.admin.CreateIncident(ctx, api.IncidentRequest{Type: 8, NoticedAt: time.Now().Format(time.RFC3339),
		Fields: incident.Fields{Description: "SYN flood", HostsAffected: incident.Hosts1To10, SuspectedSources: []string{"198.51.100.66"}}}); err != nil {
		t.Fatal(err)
	}
	ts.seen("in1", &api.GatewayReport{Records: &api.GatewayHeldRecords{Spooled: 2,
		SetAside: []api.SetAsideGroup{{Reason: api.SetAsideRefused, Count: 1, IDs: []string{strings.Repeat("e", 32)}, Oldest: recs[0].Start}}}})
	return ts
}

func category(t *testing.T, inv api.Inventory, name string) api.InventoryCategory {
	t.Helper()
	for _, c := range inv.Categories {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no category %s in the inventory", name)
	return api.InventoryCategory{}
}

// The inventory's counts equal what a direct scan of the databases (and
// the gateway's report) finds, category by category.
func TestInventoryMatchesScan(t *testing.T) {
	ts := inventoryScenario(t, Config{})
	ctx := context.Background()
	inv, err := ts.token(t, api.RoleAuditor).Inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	count := func(index bool, q string) int {
		t.Helper()
		var n int
		db := ts.db.DB
		if index {
			db = ts.db.SessionIndex()
		}
		if err := db.QueryRow(q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	want := map[string]int{
		store.HoldSubscriberRecords: count(false, `SELECT count(*) FROM ledger_entries WHERE chain = 'records' AND kind IN ('subscriber-registered', 'subscriber-validated', 'subscriber-cancelled') AND body IS NOT NULL`),
		store.HoldSessionRecords:    count(true, `SELECT count(*) FROM sessions`),
		store.HoldEndpointIndex:     count(true, `SELECT count(*) FROM sessions WHERE length(endpoint_index) > 0`),
		store.HoldEmailCodes:        count(false, `SELECT count(*) FROM email_codes`),
		store.HoldPendingSignups:    count(false, `SELECT count(*) FROM users WHERE unconfirmed = 1`),
		store.HoldICTLog:            count(false, `SELECT count(*) FROM ict_log`),
		store.HoldIncidentReports:   count(false, `SELECT count(*) FROM ledger_entries WHERE chain = 'records' AND kind = 'incident-version' AND body IS NOT NULL`),
		store.HoldExports:           count(false, `SELECT count(*) FROM exports`),
		holdGatewaySpooled:          2,
		holdGatewaySetAside:         1,
	}
	// The scenario holds what it says.
	for name, min := range map[string]int{store.HoldSubscriberRecords: 2, store.HoldSessionRecords: 3, store.HoldEndpointIndex: 3,
		store.HoldEmailCodes: 1, store.HoldPendingSignups: 1, store.HoldIncidentReports: 1} {
		if want[name] < min {
			t.Fatalf("the scenario's %s: %d found, want at least %d", name, want[name], min)
		}
	}
	if len(inv.Categories) != len(want) {
		t.Fatalf("%d categories, want %d", len(inv.Categories), len(want))
	}
	for name, n := range want {
		c := category(t, inv, name)
		if c.Count != n {
			t.Errorf("%s: inventory says %d, a scan finds %d", name, c.Count, n)
		}
		if c.Count > 0 && c.Oldest.IsZero() && name != holdGatewaySpooled { // gateways report no age of spooled records
			t.Errorf("%s: no oldest item", name)
		}
		if c.Where == "" || c.Retention == "" {
			t.Errorf("%s: %+v", name, c)
		}
	}
	sub := category(t, inv, store.HoldSessionRecords)
	if len(sub.Duties) != 1 || sub.Duties[0] != "gateway in1: IN / cert-in-2022 / direction (v)(c) / placement: node in1 stands in IN" || sub.NoDuty || sub.Choice != "" {
		t.Fatalf("session records: %+v", sub)
	}
	if inv.Breaches != 0 {
		t.Fatalf("%d breaches on an installation whose duties require all it holds", inv.Breaches)
	}
}

// An installation where no duty applies holds nothing personal; one
// that collects for all accounts shows it as the operator's choice, and
// data held with neither is flagged.
func TestInventoryNoDutyAndCollectAll(t *testing.T) {
	ts := newTestServer(t, "10.200.0.0/24")
	ctx := context.Background()
	if _, err := ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "bob"}); err != nil {
		t.Fatal(err)
	}
	officer := ts.token(t, api.RoleCompliance)
	inv, err := officer.Inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range inv.Categories {
		if c.Count != 0 || len(c.Duties) != 0 || c.NoDuty {
			t.Errorf("no-duty installation: %+v", c)
		}
	}
	// Session rows no duty requires (seeded straight into the index, as a
	// bug would leave them) are flagged as a breach.
	k, _ := wg.NewPrivateKey()
	rec := api.SessionRecord{ID: strings.Repeat("f", 32), PublicKey: k.Public(), TunnelIPv4: netip.MustParseAddr("10.200.0.9"),
		Endpoint: netip.MustParseAddrPort("198.51.100.7:1"), ExitIPv4: netip.MustParseAddr("203.0.113.1"), PortLo: 1024, PortHi: 1279, Start: time.Now()}
	if _, err := ts.saveSessions(ctx, store.GatewaySessions{Gateway: "gw", Records: []api.SessionRecord{rec}, Keep: func(store.SessionOwner) bool { return true }}); err != nil {
		t.Fatal(err)
	}
	if inv, err = officer.Inventory(ctx); err != nil {
		t.Fatal(err)
	}
	if c := category(t, inv, store.HoldSessionRecords); c.Count != 1 || !c.NoDuty || inv.Breaches < 1 {
		t.Fatalf("session rows without a duty not flagged: %+v, %d breaches", c, inv.Breaches)
	}

	ca := inventoryScenario(t, Config{CollectAll: true})
	inv, err = ca.token(t, api.RoleAuditor).Inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c := category(t, inv, store.HoldSubscriberRecords); !strings.Contains(c.Choice, "--collect-all") || !strings.Contains(c.Choice, "not a duty") {
		t.Fatalf("collect-all not shown as the operator's choice: %+v", c)
	}
}

// The retention check, on a fake clock, finds a seeded overdue item of
// each category that has a retention, sets the metric and raises a
// candidate; after the retention job's purge it finds none.
func TestRetentionCheckFindsAndPurgeClears(t *testing.T) {
	ts := inventoryScenario(t, Config{})
	ctx := context.Background()
	if err := ts.admin.Do(ctx, "POST", "/users/alice/cancel", nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := ts.db.AppendICTLog(ctx, []api.ICTLogEntry{{At: time.Now(), Node: api.ControlNode, Country: "IN", Category: "auth", Event: "seeded", Outcome: "info", KeepDays: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := ts.db.FlushSessionIndex(ctx); err != nil {
		t.Fatal(err)
	}
	later := time.Now().AddDate(5, 0, 2) // past every retention of the scenario
	inv, err := ts.retentionCheck(ctx, later)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{store.HoldSubscriberRecords, store.HoldSessionRecords, store.HoldEndpointIndex, store.HoldEmailCodes,
		store.HoldPendingSignups, store.HoldICTLog, holdGatewaySetAside} {
		if c := category(t, inv, name); c.Overdue == 0 {
			t.Errorf("%s: no overdue item found: %+v", name, c)
		}
	}
	if inv.Overdue == 0 {
		t.Fatal("nothing overdue")
	}
	cands, err := ts.admin.IncidentCandidates(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range cands {
		found = found || c.Kind == kindRetentionOverdue
		if strings.Contains(c.Summary, "alice") || strings.Contains(c.Summary, "198.51.100") {
			t.Errorf("a candidate names personal data: %s", c.Summary)
		}
	}
	if !found {
		t.Fatalf("no retention candidate among %+v", cands)
	}
	if got := metricValue(t, ts, `meridian_control_retention_overdue_items{category="session-records"}`); got == 0 {
		t.Fatal("the metric shows no overdue session records")
	}

	if _, err := ts.purgeAll(ctx, later); err != nil {
		t.Fatal(err)
	}
	// The gateway deletes its set-aside records past the retention the
	// reply to its report names; its next report says so.
	if rep := ts.reportReply(ctx, "in1"); rep.PurgeSetAsideBefore.Before(time.Now().AddDate(-5, 0, 0).Add(-time.Hour)) {
		t.Fatalf("reply tells the gateway to purge before %s", rep.PurgeSetAsideBefore)
	}
	ts.seen("in1", &api.GatewayReport{Records: &api.GatewayHeldRecords{}})
	if inv, err = ts.retentionCheck(ctx, later); err != nil {
		t.Fatal(err)
	}
	if inv.Overdue != 0 {
		for _, c := range inv.Categories {
			if c.Overdue > 0 {
				t.Errorf("after the purge, %s: %d overdue", c.Name, c.Overdue)
			}
		}
	}
	if got := metricValue(t, ts, `meridian_control_retention_overdue_items{category="session-records"}`); got != 0 {
		t.Fatalf("the metric still shows %v overdue session records", got)
	}
}

// metricValue reads one sample of the server's metrics registry.
func metricValue(t *testing.T, ts *testServer, sample string) float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	ts.metrics.handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for line := range strings.Lines(rec.Body.String()) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no sample %s", sample)
	return 0
}

// An operator's resend and discard reach the gateway once, in the reply
// to its next report, and only for that gateway.
func TestReportReplyCarriesInstructionsOnce(t *testing.T) {
	ts, _, _ := aliceOnIN(t)
	ctx := context.Background()
	ts.joinGateway(t, "de1")
	if _, err := ts.admin.ResendGatewayRecords(ctx, "in1", api.ResendRequest{Reasons: []string{api.SetAsideRefused}}); err != nil {
		t.Fatal(err)
	}
	got, err := ts.admin.DiscardGatewayRecords(ctx, "in1")
	if err != nil || len(got.ResendPending) != 1 || len(got.DiscardPending) != 1 {
		t.Fatalf("pending: %+v %v", got, err)
	}
	wantStatus(t, func() error {
		_, err := ts.admin.ResendGatewayRecords(ctx, "in1", api.ResendRequest{Reasons: []string{"everything"}})
		return err
	}(), 400, "reason")
	wantStatus(t, func() error { _, err := ts.admin.DiscardGatewayRecords(ctx, "nowhere"); return err }(), 404, "no gateway")
	if rep := ts.reportReply(ctx, "de1"); len(rep.Resend)+len(rep.Discard) != 0 {
		t.Fatalf("another gateway got the instructions: %+v", rep)
	}
	rep := ts.reportReply(ctx, "in1")
	if len(rep.Resend) != 1 || rep.Resend[0] != api.SetAsideRefused || len(rep.Discard) != 1 || rep.Discard[0] != api.SetAsideNoDuty {
		t.Fatalf("reply: %+v", rep)
	}
	if rep := ts.reportReply(ctx, "in1"); len(rep.Resend)+len(rep.Discard) != 0 {
		t.Fatalf("instructions given twice: %+v", rep)
	}
}
