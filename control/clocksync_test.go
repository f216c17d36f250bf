package control

import (
	"context"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/timesync"
	"github.com/meridian-vpn/meridian/timesync/ntptest"
)

// skewedNTP is a loopback NTP server whose clock is ahead of ours by a
// skew the test sets.
type skewedNTP struct {
	*ntptest.Responder
	skew atomic.Int64
}

func newSkewedNTP(t *testing.T, skew time.Duration) *skewedNTP {
	n := &skewedNTP{}
	n.skew.Store(int64(skew))
	n.Responder = ntptest.Respond(t, func(int) []ntptest.Reply { return []ntptest.Reply{{Skew: time.Duration(n.skew.Load())}} })
	return n
}

// runClock runs m (whose sources are set on it) until the test ends.
func runClock(t *testing.T, m *timesync.Monitor) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.Run(ctx, func(context.Context) (api.TimePlan, error) { return api.TimePlan{}, nil })
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// awaitClock waits until m reports state want.
func awaitClock(t *testing.T, m *timesync.Monitor, want api.TimeState) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for m.State().State != want {
		if time.Now().After(deadline) {
			t.Fatalf("the monitor did not reach %s: %+v", want, m.State())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// clockedServer is a test server whose clock is watched by m.
func clockedServer(t *testing.T, m *timesync.Monitor) *testServer {
	t.Helper()
	ts, stop := startTestServer(t, Config{DataDir: t.TempDir(), IPv4Pool: netip.MustParsePrefix("10.200.0.0/24"),
		IPv6Pool: netip.MustParsePrefix("2001:db8:200::/120"), Clock: m})
	t.Cleanup(stop)
	return ts
}

// wantStamp checks a clock stamp's state, and its source and offset when
// source is given.
func wantStamp(t *testing.T, what string, c *api.ClockSync, state api.TimeState, source string, lo, hi time.Duration) {
	t.Helper()
	if c == nil {
		t.Fatalf("%s: no clock stamp", what)
	}
	if c.State != state || c.At.IsZero() || source != "" && (c.Source != source || c.Offset < lo || c.Offset > hi) {
		t.Fatalf("%s: stamp %+v, want %s from %s, offset %s..%s", what, *c, state, source, lo, hi)
	}
}

// TestIncidentsCarryTheClock: an incident added by hand carries the control
// node's sync state when it was recorded; a candidate carries it from its
// detection, and the incident confirmed from it carries both that and the
// state at confirmation. Reports show them outside the form's items, and
// the stamps cannot be changed afterwards.
func TestIncidentsCarryTheClock(t *testing.T) {
	ntp := newSkewedNTP(t, 20*time.Millisecond)
	m := clockFor(t, ntp.Addr)
	runClock(t, m)
	ts := clockedServer(t, m)
	ctx := context.Background()
	awaitClock(t, m, api.TimeSynced)

	inc, err := ts.admin.CreateIncident(ctx, api.IncidentRequest{Type: 5, NoticedAt: inZone(time.Now().Add(-10 * time.Minute))})
	if err != nil {
		t.Fatal(err)
	}
	wantStamp(t, "new incident", inc.NoticeClock, api.TimeSynced, ntp.Addr, 15*time.Millisecond, 25*time.Millisecond)
	if inc.ConfirmClock != nil {
		t.Fatalf("an incident added by hand has a confirmation stamp: %+v", inc.ConfirmClock)
	}
	show, err := ts.admin.Incident(ctx, inc.ID)
	if err != nil {
		t.Fatal(err)
	}
	wantStamp(t, "incident show", show.NoticeClock, api.TimeSynced, ntp.Addr, 15*time.Millisecond, 25*time.Millisecond)
	list, err := ts.admin.Incidents(ctx, false)
	if err != nil || len(list) != 1 {
		t.Fatalf("list: %+v %v", list, err)
	}
	wantStamp(t, "incident list", list[0].NoticeClock, api.TimeSynced, ntp.Addr, 15*time.Millisecond, 25*time.Millisecond)
	rep, err := ts.admin.IncidentReport(ctx, inc.ID)
	if err != nil {
		t.Fatal(err)
	}
	wantStamp(t, "report", rep.ClockAtNotice, api.TimeSynced, ntp.Addr, 15*time.Millisecond, 25*time.Millisecond)
	_, _, text := getRaw(t, ts, fmt.Sprintf("/incidents/%d/report?format=text", inc.ID))
	if !strings.Contains(text, "\nClock at notice: synced, offset +") || !strings.Contains(text, " ms from "+ntp.Addr+" (control node, ") ||
		!strings.Contains(text, "\n1. Contact details of the reporter: not yet known\n") || !strings.Contains(text, "\n17. Actions taken to mitigate") {
		t.Fatalf("report text:\n%s", text)
	}

	// A candidate detected while in sync, confirmed during an offset alarm.
	ts.raiseCandidate(ctx, api.IncidentCandidate{Kind: kindLoginBurst, Node: api.ControlNode, Types: []int{int(typeUnauthorisedAccess)},
		DetectedAt: time.Now(), Summary: "a burst of failed logins"})
	c := onlyCandidate(t, ts)
	wantStamp(t, "candidate", c.Clock, api.TimeSynced, ntp.Addr, 15*time.Millisecond, 25*time.Millisecond)
	ntp.skew.Store(int64(2 * time.Second))
	awaitClock(t, m, api.TimeOffsetAlarm)
	confirmed, err := ts.admin.ConfirmCandidate(ctx, c.ID, api.CandidateConfirm{})
	if err != nil {
		t.Fatal(err)
	}
	wantStamp(t, "confirmed incident at notice", confirmed.NoticeClock, api.TimeSynced, ntp.Addr, 15*time.Millisecond, 25*time.Millisecond)
	wantStamp(t, "confirmed incident at confirmation", confirmed.ConfirmClock, api.TimeOffsetAlarm, ntp.Addr, 1900*time.Millisecond, 2100*time.Millisecond)
	if !confirmed.NoticeClock.At.Equal(c.Clock.At) {
		t.Fatalf("clock at notice %v is not the candidate's %v", confirmed.NoticeClock.At, c.Clock.At)
	}
	_, _, text = getRaw(t, ts, fmt.Sprintf("/incidents/%d/report?format=text", confirmed.ID))
	if !strings.Contains(text, "\nClock at notice: synced, offset +") || !strings.Contains(text, "\nClock at confirmation: NOT in sync (offset alarm), offset +2.0") {
		t.Fatalf("report text of the confirmed incident:\n%s", text)
	}

	// The stamps are written once.
	for _, q := range []string{`UPDATE incidents SET notice_clock = NULL WHERE id = 1`, `UPDATE incidents SET confirm_clock = NULL`,
		`UPDATE incident_candidates SET detected_clock = NULL`} {
		if _, err := ts.db.Exec(q); err == nil {
			t.Errorf("%s: allowed", q)
		}
	}
}

// TestUnwatchedClockSaysSo: a control server without a time monitor stamps
// its incidents and candidates "unwatched", never synced.
func TestUnwatchedClockSaysSo(t *testing.T) {
	ts := newTestServer(t, "10.200.0.0/24")
	ctx := context.Background()
	inc, err := ts.admin.CreateIncident(ctx, api.IncidentRequest{Type: 8, NoticedAt: inZone(time.Now())})
	if err != nil {
		t.Fatal(err)
	}
	wantStamp(t, "incident", inc.NoticeClock, api.TimeUnwatched, "", 0, 0)
	if inc.NoticeClock.State == api.TimeSynced || inc.NoticeClock.Source != "" || inc.NoticeClock.Offset != 0 {
		t.Fatalf("an unwatched stamp claims more: %+v", inc.NoticeClock)
	}
	_, _, text := getRaw(t, ts, fmt.Sprintf("/incidents/%d/report?format=text", inc.ID))
	if !strings.Contains(text, "\nClock at notice: not watched: the node runs no time monitor (control node, ") {
		t.Fatalf("report text:\n%s", text)
	}
	ts.raiseCandidate(ctx, api.IncidentCandidate{Kind: kindLedgerVerify, Node: api.ControlNode, Types: []int{2}, DetectedAt: time.Now(), Summary: "x"})
	wantStamp(t, "candidate", onlyCandidate(t, ts).Clock, api.TimeUnwatched, "", 0, 0)
}

// TestSubscriberRecordsCarryTheClock: the registration, each validation and
// the cancellation carry the control node's sync state, sealed in the
// ledger with the record, and a lawful lookup shows them.
func TestSubscriberRecordsCarryTheClock(t *testing.T) {
	ntp := newSkewedNTP(t, 20*time.Millisecond)
	m := clockFor(t, ntp.Addr)
	runClock(t, m)
	ts, _ := complianceServer(t, Config{Clock: m})
	ctx := context.Background()
	awaitClock(t, m, api.TimeSynced)

	if _, err := ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "asha", Subscriber: details()}); err != nil {
		t.Fatal(err)
	}
	var v api.Validation
	if err := ts.admin.Do(ctx, "POST", "/subscribers/asha/validate", api.ValidateRequest{Field: "name", State: api.Validated, Method: "document", Evidence: "KYC-1"}, &v); err != nil {
		t.Fatal(err)
	}
	wantStamp(t, "validation answer", v.Clock, api.TimeSynced, ntp.Addr, 15*time.Millisecond, 25*time.Millisecond)
	ntp.skew.Store(int64(2 * time.Second))
	awaitClock(t, m, api.TimeOffsetAlarm)
	if err := ts.admin.Do(ctx, "POST", "/users/asha/cancel", nil, nil); err != nil {
		t.Fatal(err)
	}

	var got struct {
		Record api.SubscriberRecord `json:"record"`
	}
	if err := ts.token(t, api.RoleCompliance).Do(ctx, "GET", "/compliance/subscribers/asha?case=C-1", nil, &got); err != nil {
		t.Fatal(err)
	}
	r := got.Record
	wantStamp(t, "registration", r.Clock, api.TimeSynced, ntp.Addr, 15*time.Millisecond, 25*time.Millisecond)
	wantStamp(t, "name validation", r.NameValidation.Clock, api.TimeSynced, ntp.Addr, 15*time.Millisecond, 25*time.Millisecond)
	wantStamp(t, "cancellation", r.CancelledClock, api.TimeOffsetAlarm, ntp.Addr, 1900*time.Millisecond, 2100*time.Millisecond)
	if r.EmailValidation.Clock != nil {
		t.Fatalf("a validation that never happened has a stamp: %+v", r.EmailValidation.Clock)
	}
	// Sealed with the record: the source's address is nowhere in clear.
	if hasBytes(t, ts.Server, ntp.Addr) {
		t.Fatal("the database holds the clock stamps of a subscriber record in clear")
	}
	if csv := string(recordCSV(r)); !strings.Contains(csv, `registered_at_clock,"synced, offset +`) || !strings.Contains(csv, `cancelled_at_clock,"NOT in sync (offset alarm)`) {
		t.Fatalf("export CSV:\n%s", csv)
	}
}

// TestSessionRecordClockRidesAlong: a gateway's record with a clock stamp
// and one without are both accepted; a lookup returns each as its opening
// record was sent, with the clock of the closing record as its end clock.
func TestSessionRecordClockRidesAlong(t *testing.T) {
	ts, in, alice := aliceOnIN(t)
	ctx := context.Background()

	stamped := sessionRecord(t, alice.Device, 1)
	stamped.Clock = &api.ClockSync{At: stamped.Start, State: api.TimeSynced, Source: "samay1.nic.in", Offset: 2100 * time.Microsecond, KernelSynced: true}
	ended := stamped
	ended.End = stamped.Start.Add(time.Hour)
	ended.Clock = &api.ClockSync{At: ended.End, State: api.TimeNoSource}
	bare := sessionRecord(t, alice.Device, 2)
	bare.Start = stamped.Start.Add(2 * time.Hour)
	for _, r := range []api.SessionRecord{stamped, ended, bare} {
		if res, err := in.PostSessions(ctx, api.SessionBatch{Records: []api.SessionRecord{r}}); err != nil || res.Stored != 1 {
			t.Fatalf("post: %+v %v", res, err)
		}
	}
	officer := ts.token(t, api.RoleCompliance)
	lookup := func(at time.Time) api.LookupSession {
		t.Helper()
		q := url.Values{"case": {"CERT-IN/2026/5"}, "exit_ip": {stamped.ExitIPv4.String()}, "port": {"1100"}, "at": {at.Format(time.RFC3339)}}
		var res api.LookupResult
		if err := officer.Do(ctx, "GET", "/compliance/lookup?"+q.Encode(), nil, &res); err != nil || len(res.Sessions) != 1 {
			t.Fatalf("lookup at %s: %+v %v", at, res, err)
		}
		return res.Sessions[0]
	}
	got := lookup(stamped.Start.Add(time.Minute))
	// The opening record's stamp, and the end's from the session-end entry.
	if got.ID != stamped.ID || !got.End.Equal(ended.End) || got.Clock == nil || !got.Clock.At.Equal(stamped.Clock.At) {
		t.Fatalf("lookup of the stamped record: %+v", got)
	}
	if got.EndClock == nil || got.EndClock.State != api.TimeNoSource || !got.EndClock.At.Equal(ended.End) {
		t.Fatalf("clock at the end: %+v, want the closing record's %+v", got.EndClock, ended.Clock)
	}
	want := *stamped.Clock
	have := *got.Clock
	have.At = want.At
	if have != want {
		t.Fatalf("clock stamp %+v, sent %+v", have, want)
	}
	if got.Clock.String() != "synced, offset +2.1 ms from samay1.nic.in, kernel synced" {
		t.Fatalf("wording: %q", got.Clock.String())
	}
	if got := lookup(bare.Start.Add(time.Minute)); got.ID != bare.ID || got.Clock != nil || got.EndClock != nil {
		t.Fatalf("lookup of the record without a stamp: %+v", got)
	}
}
