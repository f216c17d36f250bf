package control

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/wg"
)

func peerIn(nm api.Netmap, k wg.Key) (api.Peer, bool) {
	for _, p := range nm.Peers {
		if p.PublicKey == k {
			return p, true
		}
	}
	return api.Peer{}, false
}

// A gateway in Singapore serves a virtual India location and a Singapore
// one. Under placement only nothing is recorded; after the market reading
// is accepted for India (previewed, refused without confirmation, then
// confirmed) a consumer without a record loses India and keeps Singapore,
// sessions on India are recorded and those on Singapore are not.
func TestMarketTrigger(t *testing.T) {
	ts := newTestServer(t, "10.200.0.0/24")
	ctx := context.Background()
	gc := ts.joinGateway(t, "sg1")
	ts.placeIn(t, "sg1", "SG")
	if err := gc.Report(ctx, api.GatewayReport{}); err != nil { // healthy
		t.Fatal(err)
	}
	for _, l := range []api.Location{{Code: "IN", Country: "IN", Gateways: []string{"sg1"}}, {Code: "SG", Country: "SG", Gateways: []string{"sg1"}}} {
		if _, err := ts.admin.CreateLocation(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "ravi"}); err != nil {
		t.Fatal(err)
	}
	ravi, err := ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "ravi", Name: "r", PublicKey: newKey(t), Location: "IN"})
	if err != nil || ravi.Device.Location != "IN" {
		t.Fatalf("ravi's device: %+v %v", ravi, err)
	}

	// Placement only: a virtual India location brings nothing.
	full, err := gc.Netmap(ctx, api.FullNetmap, 0)
	if p, ok := peerIn(full, ravi.Device.PublicKey); err != nil || !ok || p.Record {
		t.Fatalf("placement only: %+v %v", full, err)
	}
	sl, _ := ts.admin.ServerList(ctx)
	for _, l := range sl.Locations {
		if l.SubscriberRecords || (l.Code == "IN") != l.Virtual {
			t.Fatalf("placement only, server list: %+v", l)
		}
	}

	// Preview first.
	change := api.Jurisdiction{Country: "IN", Profile: "cert-in-2022", Stance: "virtual-only", Triggers: []string{"market", "placement"}}
	p, err := ts.admin.PreviewJurisdiction(ctx, change)
	if err != nil {
		t.Fatal(err)
	}
	if p.NewlyNeedRecords != 1 || !slices.Equal(p.Stopped, []string{"IN"}) || !slices.Contains(p.Recorded, "gateway sg1, location IN, consumer") {
		t.Fatalf("preview: %+v", p)
	}
	wantWhy := "IN / cert-in-2022 / direction (v) / market: location IN served from SG"
	if !slices.ContainsFunc(p.Changes, func(c api.DutyChange) bool {
		return c.Gateway == "sg1" && c.Location == "IN" && c.Tenant == api.Consumer && c.Kind == "subscriber-records" && c.Change == "gain" && c.Why == wantWhy
	}) || slices.ContainsFunc(p.Changes, func(c api.DutyChange) bool { return c.Location == "SG" || c.Location == "" }) {
		t.Fatalf("preview changes: %+v", p.Changes)
	}
	if !strings.Contains(p.Text, "1 account(s) without a subscriber record would newly need one; their service stops at IN") {
		t.Fatalf("preview text:\n%s", p.Text)
	}

	// Without confirmation the change is refused and nothing changes.
	if _, err := ts.admin.SetJurisdiction(ctx, change); err == nil || !strings.Contains(err.Error(), "confirm") {
		t.Fatalf("unconfirmed change: %v", err)
	}
	js, _ := ts.admin.Jurisdictions(ctx)
	if len(js) != 0 {
		t.Fatalf("refused change stored: %+v", js)
	}
	change.Confirm = true
	set, err := ts.admin.SetJurisdiction(ctx, change)
	if err != nil || !slices.Equal(set.Triggers, []string{"placement", "market"}) || set.Preview == nil || set.Preview.NewlyNeedRecords != 1 {
		t.Fatalf("confirmed change: %+v %v", set, err)
	}
	js, _ = ts.admin.Jurisdictions(ctx)
	if len(js) != 1 || !slices.Equal(js[0].Triggers, []string{"placement", "market"}) {
		t.Fatalf("stored: %+v", js)
	}
	var audit []struct {
		Action string
		Detail json.RawMessage
	}
	if err := ts.admin.Do(ctx, "GET", "/audit", nil, &audit); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(audit, func(e struct {
		Action string
		Detail json.RawMessage
	}) bool {
		var d api.Jurisdiction
		return e.Action == "jurisdiction-set" && json.Unmarshal(e.Detail, &d) == nil && slices.Equal(d.Triggers, []string{"placement", "market"}) && d.Confirm
	}) {
		t.Fatalf("audit: %+v", audit)
	}

	// Ravi lost India (left out of the gateway's netmap, the location
	// refused), and keeps Singapore.
	nm, err := gc.Netmap(ctx, full.Version, 5*time.Second)
	if err != nil || !nm.Full {
		t.Fatalf("netmap after the change: %+v %v", nm, err)
	}
	if _, ok := peerIn(nm, ravi.Device.PublicKey); ok {
		t.Fatal("ravi's device on India still served")
	}
	if _, err := ts.admin.DeviceConfig(ctx, ravi.Device.ID, "IN"); err == nil || !strings.Contains(err.Error(), "location IN needs a subscriber record") {
		t.Fatalf("config for India: %v", err)
	}
	if cfg, err := ts.admin.DeviceConfig(ctx, ravi.Device.ID, "SG"); err != nil || cfg.Tunnel.Location != "SG" {
		t.Fatalf("config for Singapore: %+v %v", cfg, err)
	}
	back, err := gc.Netmap(ctx, nm.Version, 5*time.Second)
	if p, ok := peerIn(back, ravi.Device.PublicKey); err != nil || back.Full || !ok || p.Remove || p.Record {
		t.Fatalf("ravi back on Singapore: %+v %v", back, err)
	}
	sl, _ = ts.admin.ServerList(ctx)
	for _, l := range sl.Locations {
		if l.SubscriberRecords != (l.Code == "IN") || (l.Code == "IN" && !strings.Contains(l.Label, "virtual, served from Singapore — subscriber records kept")) {
			t.Fatalf("server list: %+v", l)
		}
	}

	// A consumer with a record: her device on India is marked, her device
	// on Singapore is not; only India's session is kept.
	if _, err := ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "asha", Subscriber: details()}); err != nil {
		t.Fatal(err)
	}
	onIN, _ := ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "asha", Name: "in", PublicKey: newKey(t), Location: "IN"})
	onSG, _ := ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "asha", Name: "sg", PublicKey: newKey(t), Location: "SG"})
	v := back.Version
	marks := map[wg.Key]bool{}
	for len(marks) < 2 {
		d, err := gc.Netmap(ctx, v, 5*time.Second)
		if err != nil || len(d.Peers) == 0 {
			t.Fatalf("delta: %+v %v", d, err)
		}
		for _, p := range d.Peers {
			marks[p.PublicKey] = p.Record
		}
		v = d.Version
	}
	if !marks[onIN.Device.PublicKey] || marks[onSG.Device.PublicKey] {
		t.Fatalf("marks: %v", marks)
	}
	res, err := gc.PostSessions(ctx, api.SessionBatch{Records: []api.SessionRecord{sessionRecord(t, onIN.Device, 1), sessionRecord(t, onSG.Device, 2)}})
	if err != nil || res.Stored != 1 || res.Ignored != 1 || ts.sessionRows(t) != 1 {
		t.Fatalf("sessions: %+v %v, %d rows", res, err, ts.sessionRows(t))
	}
	var owner string
	if err := ts.db.SessionIndex().QueryRow(`SELECT user_name FROM sessions`).Scan(&owner); err != nil || owner != "asha" {
		t.Fatalf("stored session of %q %v", owner, err)
	}

	// Explain cites the reading for a session on India.
	var ex api.Explanation
	if err := ts.admin.Do(ctx, "GET", "/jurisdictions/explain?gateway=sg1&location=IN&kind=consumer", nil, &ex); err != nil || len(ex.Duties) == 0 || ex.Duties[0].Why != wantWhy {
		t.Fatalf("explain: %+v %v", ex, err)
	}

	// Ravi's record is taken now (PUT /subscribers/ravi/record): his
	// device on India, left out until then, is sent to the gateway (a
	// delta, and the full netmap) marked for session records, India is
	// his again, and the record is there for a lawful lookup.
	r2, err := ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "ravi", Name: "r2", PublicKey: newKey(t), Location: "IN"})
	if err != nil {
		t.Fatal(err)
	}
	full, err = gc.Netmap(ctx, api.FullNetmap, 0)
	if _, ok := peerIn(full, r2.Device.PublicKey); err != nil || ok {
		t.Fatalf("ravi's second device on India served without a record: %+v %v", full, err)
	}
	v = full.Version
	if err := ts.admin.Do(ctx, "PUT", "/subscribers/ravi/record", &api.SubscriberDetails{Name: "Ravi Kumar", Email: "ravi@example.in"}, nil); err == nil ||
		!strings.Contains(err.Error(), "missing: subscriber.purpose, subscriber.address, subscriber.ownership, subscriber.phones") {
		t.Fatalf("record with items missing: %v", err)
	}
	if seqs, _ := ts.db.SubscriberSeqs(ctx, "ravi"); len(seqs) != 0 {
		t.Fatalf("refused record kept: %v", seqs)
	}
	rd := details()
	rd.Name, rd.Email = "Ravi Kumar", "ravi@example.in"
	if err := ts.admin.Do(ctx, "PUT", "/subscribers/ravi/record", rd, nil); err != nil {
		t.Fatalf("ravi's record: %v", err)
	}
	for {
		d, err := gc.Netmap(ctx, v, 5*time.Second)
		if err != nil || d.Full || len(d.Peers) == 0 {
			t.Fatalf("delta after ravi's record: %+v %v", d, err)
		}
		v = d.Version
		if p, ok := peerIn(d, r2.Device.PublicKey); ok {
			if p.Remove || !p.Record {
				t.Fatalf("ravi's peer in the delta: %+v", p)
			}
			break
		}
	}
	full, err = gc.Netmap(ctx, api.FullNetmap, 0)
	if p, ok := peerIn(full, r2.Device.PublicKey); err != nil || !ok || !p.Record {
		t.Fatalf("ravi not back in the full netmap: %+v %v", full, err)
	}
	if cfg, err := ts.admin.DeviceConfig(ctx, ravi.Device.ID, "IN"); err != nil || cfg.Tunnel.Location != "IN" {
		t.Fatalf("config for India after the record: %+v %v", cfg, err)
	}
	var got struct{ Record api.SubscriberRecord }
	if err := ts.token(t, api.RoleCompliance).Do(ctx, "GET", "/compliance/subscribers/ravi?case=C-7", nil, &got); err != nil ||
		got.Record.Name != "Ravi Kumar" || got.Record.Email != "ravi@example.in" || got.Record.Ownership != api.Individual ||
		!got.Record.RegistrationIP.IsLoopback() || got.Record.RegisteredAt.IsZero() || got.Record.HireStart.After(got.Record.RegisteredAt) {
		t.Fatalf("ravi's record: %+v %v", got.Record, err)
	}
	// A second record is refused (corrections are validations), as are
	// unknown accounts; nothing more is written.
	if err := ts.admin.Do(ctx, "PUT", "/subscribers/ravi/record", rd, nil); err == nil || !strings.Contains(err.Error(), "HTTP 409") || !strings.Contains(err.Error(), "already has a subscriber record") {
		t.Fatalf("second record: %v", err)
	}
	if seqs, _ := ts.db.SubscriberSeqs(ctx, "ravi"); len(seqs) != 1 {
		t.Fatalf("ravi's entries: %v", seqs)
	}
	if err := ts.admin.Do(ctx, "PUT", "/subscribers/nobody/record", rd, nil); err == nil || !strings.Contains(err.Error(), "HTTP 404") {
		t.Fatalf("unknown account: %v", err)
	}
	// A cancelled account hires nothing any more: no record is taken.
	if _, err := ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "gone"}); err != nil {
		t.Fatal(err)
	}
	if err := ts.admin.Do(ctx, "POST", "/users/gone/cancel", nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := ts.admin.Do(ctx, "PUT", "/subscribers/gone/record", rd, nil); err == nil || !strings.Contains(err.Error(), "HTTP 409") || !strings.Contains(err.Error(), "cancelled") {
		t.Fatalf("cancelled account: %v", err)
	}
	if seqs, _ := ts.db.SubscriberSeqs(ctx, "gone"); len(seqs) != 0 {
		t.Fatalf("record kept for a cancelled account: %v", seqs)
	}
}

// Where no duty asks for a subscriber record none is taken for an
// existing account either: no duty, no data.
func TestRecordWithoutDuty(t *testing.T) {
	ts := newTestServer(t, "10.200.0.0/24")
	ctx := context.Background()
	if _, err := ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "ravi"}); err != nil {
		t.Fatal(err)
	}
	if err := ts.admin.Do(ctx, "PUT", "/subscribers/ravi/record", details(), nil); err == nil || !strings.Contains(err.Error(), "HTTP 409") || !strings.Contains(err.Error(), "no duty") {
		t.Fatalf("record without a duty: %v", err)
	}
	if seqs, _ := ts.db.SubscriberSeqs(ctx, "ravi"); len(seqs) != 0 {
		t.Fatalf("record kept without a duty: %v", seqs)
	}
}

// An operator established in India, with the establishment reading
// accepted there, owes subscriber records of every consumer wherever its
// gateways stand.
func TestEstablishmentTrigger(t *testing.T) {
	ts := newTestServer(t, "10.200.0.0/24")
	ctx := context.Background()
	ts.joinGateway(t, "de1")
	ts.placeIn(t, "de1", "DE")
	if _, err := ts.admin.SetJurisdiction(ctx, api.Jurisdiction{Country: "IN", Triggers: []string{"placement", "establishment"}}); err != nil {
		t.Fatal(err)
	}
	required := func() bool {
		t.Helper()
		var out struct{ Required bool }
		if err := ts.admin.Do(ctx, "GET", "/subscribers/required?kind=consumer", nil, &out); err != nil {
			t.Fatal(err)
		}
		return out.Required
	}
	if required() {
		t.Fatal("a record is required before the operator is established in India")
	}
	if _, err := ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "old"}); err != nil {
		t.Fatal(err)
	}
	ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "old", Name: "o", PublicKey: newKey(t)})
	p, err := ts.admin.PreviewOperator(ctx, api.Operator{Established: []string{"in"}})
	if err != nil || p.NewlyNeedRecords != 1 || !slices.ContainsFunc(p.Changes, func(c api.DutyChange) bool {
		return c.Gateway == "de1" && c.Location == "" && c.Why == "IN / cert-in-2022 / direction (v) / establishment: operator established in IN"
	}) {
		t.Fatalf("preview: %+v %v", p, err)
	}
	if _, err := ts.admin.SetOperator(ctx, api.Operator{Established: []string{"IN"}}); err == nil || !strings.Contains(err.Error(), "confirm") {
		t.Fatalf("unconfirmed: %v", err)
	}
	if o, _ := ts.admin.Operator(ctx); len(o.Established) != 0 {
		t.Fatalf("refused change stored: %+v", o)
	}
	if _, err := ts.admin.SetOperator(ctx, api.Operator{Established: []string{"IN"}, Confirm: true}); err != nil {
		t.Fatal(err)
	}
	if o, _ := ts.admin.Operator(ctx); !slices.Equal(o.Established, []string{"IN"}) {
		t.Fatalf("operator: %+v", o)
	}
	if !required() {
		t.Fatal("an operator established in India: no record required of consumers")
	}
	if _, err := ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "new"}); err == nil || !strings.Contains(err.Error(), "subscriber record is required") {
		t.Fatalf("consumer without a record: %v", err)
	}
}

// Bad input is refused whole and changes nothing.
func TestTriggerBadInput(t *testing.T) {
	ts := newTestServer(t, "10.200.0.0/24")
	ctx := context.Background()
	ts.joinGateway(t, "in1")
	ts.placeIn(t, "in1", "IN")
	ts.admin.CreateLocation(ctx, api.Location{Code: "IN", Country: "IN", Gateways: []string{"in1"}})
	for _, tt := range []struct {
		j    api.Jurisdiction
		want string
	}{
		{api.Jurisdiction{Country: "IN", Triggers: []string{"citizenship"}}, `unknown trigger "citizenship"`},
		{api.Jurisdiction{Country: "IN", Triggers: []string{"placement", ""}}, `unknown trigger ""`},
		// Virtual-only with its only gateway standing there orphans IN.
		{api.Jurisdiction{Country: "IN", Stance: "virtual-only", Triggers: []string{"market"}}, "leave location(s) IN with no gateway"},
	} {
		if _, err := ts.admin.SetJurisdiction(ctx, tt.j); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: %v, want %q", tt.j, err, tt.want)
		}
		if _, err := ts.admin.PreviewJurisdiction(ctx, tt.j); tt.want != "leave location(s) IN with no gateway" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("preview %+v: %v, want %q", tt.j, err, tt.want)
		}
	}
	if js, _ := ts.admin.Jurisdictions(ctx); len(js) != 0 {
		t.Fatalf("stored after refusals: %+v", js)
	}
	for _, est := range [][]string{{"XX"}, {"IN", "Atlantis"}} {
		if _, err := ts.admin.SetOperator(ctx, api.Operator{Established: est, Confirm: true}); err == nil || !strings.Contains(err.Error(), "established:") {
			t.Errorf("established %v: %v", est, err)
		}
	}
	if o, _ := ts.admin.Operator(ctx); len(o.Established) != 0 {
		t.Fatalf("stored after refusals: %+v", o)
	}
}
