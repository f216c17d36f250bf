package incident

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time          { return c.t }
func (c *fakeClock) Advance(d time.Duration) { c.t = c.t.Add(d) }

func TestAnnexureI(t *testing.T) {
	ts := Types()
	if len(ts) != 20 {
		t.Fatalf("%d types, want 20", len(ts))
	}
	for n, want := range map[int]string{
		1:  "Targeted scanning/probing of critical networks/systems",
		8:  "Denial of Service (DoS) and Distributed Denial of Service (DDoS) attacks",
		11: "Data breach",
		12: "Data leak",
		20: "Attacks or malicious/suspicious activity affecting systems related to artificial intelligence and machine learning",
	} {
		if got := Type(n).Name(); got != want {
			t.Errorf("type %d = %q, want %q", n, got, want)
		}
	}
	for _, n := range []int{0, 21, -1} {
		if _, err := ParseType(n); err == nil || !strings.Contains(err.Error(), "Annexure I lists types 1 to 20") {
			t.Errorf("ParseType(%d) = %v", n, err)
		}
	}
}

func TestStateMachine(t *testing.T) {
	steps := []struct {
		from State
		e    Event
		to   State
		err  string
	}{
		{Noticed, Amend, Noticed, ""},
		{Noticed, Send, Reported, ""},
		{Reported, Amend, Reported, ""},
		{Reported, Send, Updated, ""},
		{Updated, Send, Updated, ""},
		{Updated, Close, Closed, ""},
		{Reported, Close, Closed, ""},
		{Noticed, Close, Closed, ""},
		{Closed, Amend, Closed, "closed"},
		{Closed, Send, Closed, "closed"},
		{Closed, Close, Closed, "closed"},
		{Noticed, "reopen", Noticed, `unknown incident event "reopen"`},
		{"lost", Send, "lost", `unknown incident state "lost"`},
	}
	for _, s := range steps {
		got, err := s.from.After(s.e)
		if s.err != "" {
			if err == nil || !strings.Contains(err.Error(), s.err) {
				t.Errorf("%s after %s: err %v, want %q", s.from, s.e, err, s.err)
			}
			continue
		}
		if err != nil || got != s.to {
			t.Errorf("%s after %s = %s, %v; want %s", s.from, s.e, got, err, s.to)
		}
	}
}

func TestDeadlineAndAlertsWithFakeClock(t *testing.T) {
	noticed := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	clock := &fakeClock{t: noticed}
	inc := Incident{ID: 7, Type: 8, State: Noticed, Noticed: noticed, Deadline: Deadline(noticed, 6*time.Hour)}
	if want := time.Date(2026, 5, 1, 16, 0, 0, 0, time.UTC); !inc.Deadline.Equal(want) {
		t.Fatalf("deadline %s, want %s", inc.Deadline, want)
	}

	// fire evaluates the alerts and records what fired, as the control
	// server's loop does.
	fire := func() []AlertKind {
		var kinds []AlertKind
		for _, a := range Due([]Incident{inc}, clock.Now()) {
			if a.Incident != 7 || a.Type != 8 || a.TypeName == "" || !a.Deadline.Equal(inc.Deadline) {
				t.Fatalf("alert %+v", a)
			}
			kinds = append(kinds, a.Kind)
			inc.Alerts = append(inc.Alerts, FiredAlert{Kind: a.Kind, At: clock.Now()})
		}
		return kinds
	}

	if got := inc.AsOf(clock.Now()); got.Status != "6h left" || *got.SecondsLeft != 6*3600 {
		t.Fatalf("at noticing: %q %d", got.Status, *got.SecondsLeft)
	}
	if k := fire(); k != nil {
		t.Fatalf("alerts with 6 h left: %v", k)
	}
	clock.Advance(4*time.Hour + 59*time.Minute + 30*time.Second)
	if got := inc.AsOf(clock.Now()).Status; got != "1h left" {
		t.Fatalf("30 s over an hour left: %q", got)
	}
	if k := fire(); k != nil {
		t.Fatalf("alerts with more than an hour left: %v", k)
	}
	clock.Advance(30 * time.Second)
	if got := inc.TimeLeft(clock.Now()); got != time.Hour {
		t.Fatalf("time left %s", got)
	}
	if k := fire(); len(k) != 1 || k[0] != OneHourLeft {
		t.Fatalf("at one hour left: %v", k)
	}
	clock.Advance(30 * time.Minute)
	if k := fire(); k != nil {
		t.Fatalf("the one-hour alert fired again: %v", k)
	}
	if got := inc.AsOf(clock.Now()).Status; got != "30m left" {
		t.Fatalf("status %q", got)
	}
	clock.Advance(30 * time.Minute)
	if k := fire(); k != nil {
		t.Fatalf("at the deadline, when a report is still in time: %v", k)
	}
	clock.Advance(time.Nanosecond)
	if k := fire(); len(k) != 1 || k[0] != Overdue {
		t.Fatalf("just after the deadline: %v", k)
	}
	clock.Advance(90*time.Minute + time.Second - time.Nanosecond)
	if k := fire(); k != nil {
		t.Fatalf("overdue fired again: %v", k)
	}
	got := inc.AsOf(clock.Now())
	if got.Status != "overdue by 1h31m" || *got.SecondsLeft != -(90*60+1) {
		t.Fatalf("overdue: %q %d", got.Status, *got.SecondsLeft)
	}

	// Reporting stops the clock: no alerts, and the status says how the
	// deadline was met.
	inc.State, inc.Reported = Reported, clock.Now()
	got = inc.AsOf(clock.Now())
	if got.SecondsLeft != nil || got.Status != "initial report sent 7h31m after noticing, 1h31m late" {
		t.Fatalf("reported: %q %v", got.Status, got.SecondsLeft)
	}
	late := Incident{ID: 8, Type: 3, State: Reported, Noticed: noticed, Deadline: inc.Deadline, Reported: noticed.Add(2 * time.Hour)}
	if s := late.AsOf(clock.Now()).Status; s != "initial report sent 2h after noticing, in time" {
		t.Fatalf("in time: %q", s)
	}
	if a := Due([]Incident{late}, clock.Now()); a != nil {
		t.Fatalf("alerts for a reported incident: %v", a)
	}

	// An incident first seen when already overdue gets "overdue" only.
	stale := Incident{ID: 9, Type: 1, State: Noticed, Noticed: noticed, Deadline: inc.Deadline}
	if a := Due([]Incident{stale}, clock.Now()); len(a) != 1 || a[0].Kind != Overdue || a[0].TimeLeft != "overdue by 1h31m" {
		t.Fatalf("stale incident: %+v", a)
	}
}

func TestFormatLeft(t *testing.T) {
	for d, want := range map[time.Duration]string{
		6 * time.Hour: "6h left",
		5*time.Hour + 59*time.Minute + 59*time.Second: "5h59m left",
		30 * time.Second:              "under a minute left",
		0:                             "under a minute left", // a report sent now is in time
		-time.Second:                  "overdue by 1m",
		-(26*time.Hour + time.Minute): "overdue by 1d2h1m",
	} {
		if got := FormatLeft(d); got != want {
			t.Errorf("FormatLeft(%s) = %q, want %q", d, got, want)
		}
	}
}

func TestPartialReportThenUpdate(t *testing.T) {
	noticed := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	first := Fields{Description: "SYN flood against gateway in1", HostsAffected: Hosts1To10}
	second := Fields{SuspectedSources: []string{"203.0.113.7", "198.51.100.0/24"}, Mitigation: "upstream filtering enabled", Description: "SYN flood against gateways in1 and in2"}
	inc := Incident{ID: 3, Type: 8, State: Reported, Noticed: noticed, Deadline: Deadline(noticed, 6*time.Hour), Version: 2,
		Updates:    []Update{{Version: 1, Fields: first}, {Version: 2, Fields: second, Note: "sources identified"}},
		Deliveries: []Delivery{{Version: 1, Report: "initial report", Channel: Email}},
	}
	// The history keeps both versions as given.
	if inc.Updates[0].Fields.Description != "SYN flood against gateway in1" || inc.Updates[0].Fields.Mitigation != "" {
		t.Fatal("the first version changed")
	}
	got := inc.AsOf(noticed.Add(time.Hour))
	if got.Fields.Description != second.Description || got.Fields.HostsAffected != Hosts1To10 || got.Fields.Mitigation != second.Mitigation || len(got.Fields.SuspectedSources) != 2 {
		t.Fatalf("folded content: %+v", got.Fields)
	}
	if !got.Unsent {
		t.Fatal("version 2 is not sent yet, but unsent_changes is false")
	}
	r := NewReport(inc, noticed.Add(time.Hour))
	if r.Report != "update 1" || r.Version != 2 {
		t.Fatalf("report %q version %d", r.Report, r.Version)
	}
	text := r.Text()
	for _, want := range []string{
		"Cyber security incident report to CERT-In: update 1",
		"7. Type of incident (Annexure I): 8. Denial of Service (DoS) and Distributed Denial of Service (DDoS) attacks",
		"8. Description of the incident: SYN flood against gateways in1 and in2",
		"Source IP address(es): 203.0.113.7, 198.51.100.0/24",
		"16. How many host(s) are affected?: 1 to 10",
		"17. Actions taken to mitigate the intrusion/attack: upstream filtering enabled",
		"2. Sector: not yet known",
		"This is a partial report; to follow in an update: reporter, sector,",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("report lacks %q:\n%s", want, text)
		}
	}
	b, _ := json.Marshal(r)
	var m map[string]any
	json.Unmarshal(b, &m)
	for _, k := range []string{"type_of_incident", "detected_at", "description", "suspected_sources", "hosts_affected", "mitigation", "not_yet_known", "deadline"} {
		if _, ok := m[k]; !ok {
			t.Errorf("report JSON lacks %q: %s", k, b)
		}
	}
}

func TestReportNamesEveryFormItem(t *testing.T) {
	yes := true
	f := Fields{
		Reporter: Contact{Name: "Ravi Kumar", Organisation: "Example Networks Pvt Ltd", Title: "CISO", PhoneFax: "+91 22 5550 0100", Mobile: "+91 98 5550 0101", Email: "soc@example.in", Address: "1 Marine Drive\nMumbai 400001"},
		Sector:   "Telecommunications (VPN service)", PhysicalLocation: "Mumbai data centre, rack 12", ISP: "Example Transit",
		Occurred: "2026-05-01T15:00:00+05:30", CriticalToMission: &yes,
		AffectedSystems: []AffectedSystem{{IPAddress: "192.0.2.10", HostName: "in1", OperatingSystem: "Debian 13", LastPatched: "2026-04-28", HardwareVendorModel: "Example R1"}},
		Description:     "flood", UnusualBehaviour: "handshake rate x50", ExperiencedEarlier: "no", HowDetected: "metrics alert",
		AgenciesNotified: []string{"upstream provider"}, AdditionalInformation: "firewall logs attached on request, by email",
		SuspectedSources: []string{"203.0.113.7"}, SourceInformation: "botnet", SecurityInfrastructure: []string{"nftables", "rate limits"},
		HostsAffected: Hosts1To10, Mitigation: "filtering",
	}
	if err := f.Check(); err != nil {
		t.Fatal(err)
	}
	noticed := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	r := NewReport(Incident{ID: 1, Type: 8, State: Noticed, Noticed: noticed, Deadline: Deadline(noticed, 6*time.Hour), Version: 1, Updates: []Update{{Version: 1, Fields: f}}}, noticed)
	if len(r.NotYetKnown) != 0 {
		t.Fatalf("complete report lists %v as not yet known", r.NotYetKnown)
	}
	text := r.Text()
	for _, want := range []string{
		"1. Contact details of the reporter:", "Name: Ravi Kumar", "Organisation: Example Networks", "Title: CISO", "Phone/Fax No.: +91 22 5550 0100", "Mobile: +91 98", "Email: soc@example.in", "Address: 1 Marine Drive\n      Mumbai",
		"2. Sector: Telecommunications", "Location: Mumbai data centre", "ISP: Example Transit",
		"4. Date and time the incident occurred: 2026-05-01 09:30:00 UTC (2026-05-01T15:00:00+05:30)",
		"critical to the organisation's mission?: Yes",
		"a) IP address: 192.0.2.10", "Computer/host name: in1", "Operating system (incl. version/release): Debian 13", "Last patched/updated: 2026-04-28", "Hardware vendor/model: Example R1",
		"Unusual behaviour/symptoms: handshake rate x50", "experienced earlier?: no", "Detected (noticed) at: 2026-05-01 10:00:00 UTC", "How: metrics alert",
		"12. Agencies notified: upstream provider", "logs being submitted, and how): firewall logs", "Other information available: botnet",
		"15. Security infrastructure in place:\n   nftables\n   rate limits", "Actions taken to mitigate the intrusion/attack: filtering",
		"Initial report due by 2026-05-01 16:00:00 UTC (6h left)",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("report lacks %q:\n%s", want, text)
		}
	}
	if s := r.Subject(); s != "Cyber security incident report (initial report): Annexure I type 8. Denial of Service (DoS) and Distributed Denial of Service (DDoS) attacks [Example Networks Pvt Ltd, incident 1]" {
		t.Errorf("subject %q", s)
	}
}

func TestFieldChecks(t *testing.T) {
	long := strings.Repeat("x", MaxLong+1)
	for _, tc := range []struct {
		f    Fields
		want string
	}{
		{Fields{Description: long}, "description: at most 4000 characters (got 4001)"},
		{Fields{Sector: strings.Repeat("é", MaxShort+1)}, "sector: at most 200 characters"},
		{Fields{Sector: "a\nb"}, "sector: must be one line"},
		{Fields{Reporter: Contact{Email: "soc at example"}}, "reporter.email: not an email address"},
		{Fields{Reporter: Contact{Mobile: "call me"}}, "reporter.mobile: not a phone number"},
		{Fields{Occurred: "2026-05-01T10:00:00"}, `occurred: "2026-05-01T10:00:00" has no time zone`},
		{Fields{Occurred: "yesterday"}, "occurred: \"yesterday\" is not an RFC 3339 time"},
		{Fields{SuspectedSources: []string{"evil.example"}}, "suspected_sources[0]: not an IP address or prefix"},
		{Fields{AffectedSystems: []AffectedSystem{{HostName: "in1"}, {IPAddress: "999.1.1.1"}}}, "affected_systems[1].ip_address: not an IP address"},
		{Fields{AffectedSystems: []AffectedSystem{{}}}, "affected_systems[0]: empty"},
		{Fields{AgenciesNotified: make([]string, MaxItems+1)}, "agencies_notified: at most 50 entries"},
		{Fields{HostsAffected: "lots"}, "hosts_affected: must be 1-10, 10-100 or more-than-100"},
	} {
		err := tc.f.Check()
		var fe *FieldError
		if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.As(err, &fe) {
			t.Errorf("Check(%+v) = %v, want %q", tc.f, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "soc at example") {
			t.Error("the error repeats personal data")
		}
	}
	f := Fields{Description: "  trimmed  ", Occurred: "2026-05-01T15:00:00+05:30"}
	if err := f.Check(); err != nil || f.Description != "trimmed" {
		t.Fatalf("%v %q", err, f.Description)
	}
	for in, want := range map[string]string{
		"":                    "noticed_at: required",
		"2026-05-01T10:00:00": "has no time zone",
		"2026-05-01T10:00":    "has no seconds and no time zone",
		"2026-05-01 10:00:00": "is not an RFC 3339 time",
	} {
		if _, err := ParseTime("noticed_at", in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseTime(%q) = %v, want %q", in, err, want)
		}
	}
	if tm, err := ParseTime("noticed_at", "2026-05-01T15:30:00+05:30"); err != nil || !tm.Equal(time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)) {
		t.Fatalf("%s %v", tm, err)
	}
}

func TestPointOfContactLetter(t *testing.T) {
	p := PointOfContact{Organisation: "Example Networks Pvt Ltd", Name: "Ravi Kumar", Designation: "Chief Information Security Officer",
		Address: "1 Marine Drive, Mumbai 400001", Email: "ravi@example.in", Mobile: "+91 98 5550 0101", Phone: "+91 22 5550 0100", Fax: "+91 22 5550 0199"}
	if err := p.Check(); err != nil {
		t.Fatal(err)
	}
	l := p.Letter(DefaultPOCRecipient, time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC))
	if l.To != "info@cert-in.org.in" || !strings.Contains(l.Subject, "Example Networks Pvt Ltd") {
		t.Fatalf("%+v", l)
	}
	for _, want := range []string{
		"1. Name of the organisation: Example Networks Pvt Ltd", "2. Name of the Point of Contact: Ravi Kumar",
		"3. Designation: Chief Information Security Officer", "4. Office address: 1 Marine Drive, Mumbai 400001",
		"5. Email: ravi@example.in", "6. Mobile: +91 98 5550 0101", "7. Office phone: +91 22 5550 0100", "8. Fax: +91 22 5550 0199",
		"direction (iii)", "Date: 1 May 2026",
	} {
		if !strings.Contains(l.Body, want) {
			t.Errorf("letter lacks %q:\n%s", want, l.Body)
		}
	}
	missing := PointOfContact{Name: "Ravi Kumar", Email: "ravi@example.in"}
	if err := missing.Check(); err == nil || err.Error() != "organisation, designation, address, mobile: required" {
		t.Fatalf("missing fields: %v", err)
	}
	bad := p
	bad.Email = "ravi"
	if err := bad.Check(); err == nil || !strings.Contains(err.Error(), "email: not an email address") {
		t.Fatalf("bad email: %v", err)
	}
}

func TestOrders(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 5, 2, 9, 0, 0, 0, time.UTC)}
	o, err := NewOrder("CERT-In/2026/123", "2026-05-02T14:00:00+05:30", "2026-05-03T14:00:00+05:30", "session records for 203.0.113.7:40000 at 2026-05-01T10:00Z, as CSV")
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2026, 5, 3, 8, 30, 0, 0, time.UTC); !o.Due.Equal(want) {
		t.Fatalf("due %s, want %s", o.Due, want)
	}
	if got := o.AsOf(clock.Now()); got.Status != "23h30m left" || *got.SecondsLeft != 23*3600+30*60 {
		t.Fatalf("%q", got.Status)
	}
	clock.Advance(24 * time.Hour)
	if got := o.AsOf(clock.Now()); got.Status != "overdue by 30m" {
		t.Fatalf("%q", got.Status)
	}
	if err := o.Respond(clock.Now(), "sent the records by email, ref 42"); err != nil {
		t.Fatal(err)
	}
	if got := o.AsOf(clock.Now()); got.Status != "answered 1d30m after receipt, 30m late" || got.SecondsLeft != nil {
		t.Fatalf("%q", got.Status)
	}
	if err := o.Respond(clock.Now(), "again"); err == nil || !strings.Contains(err.Error(), "already answered") {
		t.Fatalf("second answer: %v", err)
	}
	for _, tc := range []struct{ ref, rec, due, req, want string }{
		{"", "2026-05-02T14:00:00Z", "2026-05-03T14:00:00Z", "x", "reference: required"},
		{"R", "2026-05-02T14:00:00", "2026-05-03T14:00:00Z", "x", "received_at: \"2026-05-02T14:00:00\" has no time zone"},
		{"R", "2026-05-02T14:00:00Z", "", "x", "due_at: required"},
		{"R", "2026-05-02T14:00:00Z", "2026-05-01T14:00:00Z", "x", "due_at: must be after received_at"},
		{"R", "2026-05-02T14:00:00Z", "2026-05-03T14:00:00Z", "", "request: required"},
	} {
		if _, err := NewOrder(tc.ref, tc.rec, tc.due, tc.req); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewOrder(%q, %q, %q) = %v, want %q", tc.ref, tc.rec, tc.due, err, tc.want)
		}
	}
}

// The deadline's edges, to the nanosecond. The report is due "within 6
// hours of noticing": noticed + 6 h exactly, and a report sent at that
// instant is in time, so "overdue" fires only once it has passed. The
// one-hour alert fires at exactly one hour left, not a moment before. An
// order's due time has the same edges.
func TestDeadlineEdges(t *testing.T) {
	noticed := time.Date(2028, 2, 29, 21, 30, 15, 123456789, time.FixedZone("IST", 5*3600+1800))
	deadline := Deadline(noticed, 6*time.Hour)
	if want := time.Date(2028, 3, 1, 3, 30, 15, 123456789, noticed.Location()); !deadline.Equal(want) || deadline.Sub(noticed) != 6*time.Hour {
		t.Fatalf("deadline %s, want %s", deadline, want)
	}
	inc := Incident{ID: 1, Type: 8, State: Noticed, Noticed: noticed, Deadline: deadline}
	order := Order{ID: 2, State: OrderOpen, Received: noticed.Add(-time.Hour), Due: deadline}
	for _, c := range []struct {
		left     time.Duration
		fired    []AlertKind
		want     AlertKind // "": none
		timeLeft string
	}{
		{6 * time.Hour, nil, "", ""},
		{time.Hour + time.Second, nil, "", ""},
		{time.Hour + time.Nanosecond, nil, "", ""},
		{time.Hour, nil, OneHourLeft, "1h left"},
		{time.Hour, []AlertKind{OneHourLeft}, "", ""},
		{time.Nanosecond, []AlertKind{OneHourLeft}, "", ""},
		// At the deadline the report is still in time.
		{0, []AlertKind{OneHourLeft}, "", ""},
		{0, nil, OneHourLeft, "under a minute left"},
		{-time.Nanosecond, []AlertKind{OneHourLeft}, Overdue, "overdue by 1m"},
		{-time.Nanosecond, nil, Overdue, "overdue by 1m"}, // first seen overdue: no hour-left alert
		{-time.Hour, []AlertKind{OneHourLeft, Overdue}, "", ""},
	} {
		now := deadline.Add(-c.left)
		var fired []FiredAlert
		for _, k := range c.fired {
			fired = append(fired, FiredAlert{Kind: k, At: noticed})
		}
		inc.Alerts, order.Alerts = fired, fired
		got := Due([]Incident{inc}, now)
		gotOrders := DueOrders([]Order{order}, now)
		if c.want == "" {
			if len(got) != 0 || len(gotOrders) != 0 {
				t.Errorf("%s left, fired %v: alerts %+v %+v, want none", c.left, c.fired, got, gotOrders)
			}
			continue
		}
		if len(got) != 1 || got[0].Kind != c.want || got[0].TimeLeft != c.timeLeft || got[0].SecondsLeft != int64(c.left/time.Second) {
			t.Errorf("%s left, fired %v: incident alerts %+v, want %s (%q)", c.left, c.fired, got, c.want, c.timeLeft)
		}
		if len(gotOrders) != 1 || gotOrders[0].Kind != c.want || gotOrders[0].TimeLeft != c.timeLeft {
			t.Errorf("%s left, fired %v: order alerts %+v, want %s (%q)", c.left, c.fired, gotOrders, c.want, c.timeLeft)
		}
	}
	// What the alerts say agrees with how a report is judged: sent at the
	// deadline, in time; a nanosecond later, late.
	for _, c := range []struct {
		at   time.Duration
		want string
	}{{0, "initial report sent 6h after noticing, in time"}, {time.Nanosecond, "initial report sent 6h1m after noticing, 1m late"}} {
		r := inc
		r.State, r.Reported = Reported, deadline.Add(c.at)
		if s := r.AsOf(deadline.Add(time.Hour)).Status; s != c.want {
			t.Errorf("reported %s after the deadline: %q, want %q", c.at, s, c.want)
		}
	}
	if s := inc.AsOf(deadline).Status; s != "under a minute left" {
		t.Errorf("status at the deadline: %q", s)
	}
}
