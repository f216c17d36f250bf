package control

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/incident"
	"github.com/meridian-vpn/meridian/internal/smtptest"
	"github.com/meridian-vpn/meridian/mail"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// incidentServer is a control server whose log the test reads, mailing
// through the SMTP server at smtpAddr if not "", standing in India (so the
// CERT-In duties apply) if india.
func incidentServer(t *testing.T, smtpAddr string, india bool) (*testServer, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	cfg := Config{
		DataDir:  t.TempDir(),
		IPv4Pool: netip.MustParsePrefix("10.200.0.0/24"),
		IPv6Pool: netip.MustParsePrefix("2001:db8:200::/120"),
		Logger:   slog.New(slog.NewTextHandler(logs, nil)),
	}
	if smtpAddr != "" {
		cfg.Mail = &mail.Config{Server: smtpAddr, From: "noc@vpn.example"}
	}
	ts, stop := startTestServer(t, cfg)
	t.Cleanup(stop)
	if india {
		if _, err := ts.admin.SetPlace(context.Background(), api.ControlNode, api.Place{PhysicalCountry: "IN", Ownership: api.Rented}); err != nil {
			t.Fatal(err)
		}
	}
	return ts, logs
}

// Personal data used in these tests: it must never reach the log or the
// database in clear.
const (
	reporterName  = "Ravi Kumar"
	reporterEmail = "ravi.kumar@example.in"
)

func inZone(t time.Time) string {
	return t.In(time.FixedZone("IST", 5*3600+1800)).Format(time.RFC3339)
}

func body(t *testing.T, m interface{ Read([]byte) (int, error) }) string {
	t.Helper()
	b, err := io.ReadAll(quotedprintable.NewReader(m))
	if err != nil {
		t.Fatal(err)
	}
	return strings.ReplaceAll(string(b), "\r\n", "\n")
}

func TestIncidentReportLifecycle(t *testing.T) {
	smtp := smtptest.Start(t)
	ts, logs := incidentServer(t, smtp.Addr, true)
	ctx := context.Background()
	noticed := time.Now().Add(-time.Hour).Truncate(time.Second)

	// A partial first report: the type, the time noticed, a description.
	inc, err := ts.admin.CreateIncident(ctx, api.IncidentRequest{Type: 8, NoticedAt: inZone(noticed),
		Fields: incident.Fields{Description: "SYN flood against the Mumbai gateway", HostsAffected: incident.Hosts1To10}})
	if err != nil {
		t.Fatal(err)
	}
	if inc.State != incident.Noticed || !inc.Noticed.Equal(noticed) || !inc.Deadline.Equal(noticed.Add(6*time.Hour)) || inc.Version != 1 {
		t.Fatalf("created %+v", inc)
	}
	if inc.Recipient != "incident@cert-in.org.in" || inc.DeadlineWhy != "IN / cert-in-2022 / direction (ii) / placement: node control stands in IN (node control)" {
		t.Fatalf("duty: %q %q", inc.Recipient, inc.DeadlineWhy)
	}
	if !strings.HasPrefix(inc.Status, "4h59m left") && !strings.HasPrefix(inc.Status, "5h left") || *inc.SecondsLeft > 5*3600 || *inc.SecondsLeft < 5*3600-60 {
		t.Fatalf("time left: %q %d", inc.Status, *inc.SecondsLeft)
	}

	// An update completes it; the first version is kept as it was.
	_, err = ts.admin.UpdateIncident(ctx, inc.ID, api.IncidentUpdate{Note: "sources identified", Fields: incident.Fields{
		Description:      "SYN flood against the Mumbai gateways in1 and in2",
		Reporter:         incident.Contact{Name: reporterName, Organisation: "Example Networks Pvt Ltd", Email: reporterEmail, Mobile: "+91 98 5550 0101"},
		SuspectedSources: []string{"203.0.113.7", "198.51.100.0/24"},
		Mitigation:       "upstream filtering; SYN cookies on",
		AffectedSystems:  []incident.AffectedSystem{{IPAddress: "192.0.2.10", HostName: "in1"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := ts.admin.Incident(ctx, inc.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != 2 || len(got.Updates) != 2 {
		t.Fatalf("history: %+v", got.Updates)
	}
	if v1 := got.Updates[0]; v1.Fields.Description != "SYN flood against the Mumbai gateway" || v1.Fields.Mitigation != "" || v1.Type != 8 {
		t.Fatalf("version 1 was rewritten: %+v", v1)
	}
	if v2 := got.Updates[1]; v2.Note != "sources identified" || v2.Fields.Mitigation == "" || !strings.HasPrefix(v2.By, "admin:") {
		t.Fatalf("version 2: %+v", v2)
	}
	if got.Fields.Description != "SYN flood against the Mumbai gateways in1 and in2" || got.Fields.HostsAffected != incident.Hosts1To10 {
		t.Fatalf("current content: %+v", got.Fields)
	}

	// report renders; nothing is sent.
	rep, err := ts.admin.IncidentReport(ctx, inc.ID)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Report != "initial report" || rep.Version != 2 || rep.TypeOfIncident.Number != 8 || len(rep.SuspectedSources) != 2 || !slices.Contains(rep.NotYetKnown, "sector") {
		t.Fatalf("report %+v", rep)
	}
	code, ctype, text := getRaw(t, ts, "/incidents/1/report?format=text")
	if code != 200 || !strings.HasPrefix(ctype, "text/plain") || !strings.Contains(text, "7. Type of incident (Annexure I): 8. Denial of Service") {
		t.Fatalf("text report: %d %s", code, text)
	}

	// send delivers it to CERT-In's address through the real SMTP server
	// and records the delivery.
	d, err := ts.admin.SendIncident(ctx, inc.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d.Recipient != "incident@cert-in.org.in" || d.Channel != incident.Email || d.Report != "initial report" || d.Version != 2 || d.MessageID == "" {
		t.Fatalf("delivery %+v", d)
	}
	msgs := smtp.Wait(t, 1)
	if len(msgs) != 1 {
		t.Fatalf("%d messages delivered, want 1 (report must not send)", len(msgs))
	}
	m := msgs[0]
	if to := m.Header.Get("To"); to != "<incident@cert-in.org.in>" {
		t.Errorf("To: %q", to)
	}
	if id := m.Header.Get("Message-Id"); id != d.MessageID {
		t.Errorf("Message-ID %q, recorded %q", id, d.MessageID)
	}
	wantSubject := "Cyber security incident report (initial report): Annexure I type 8. Denial of Service (DoS) and Distributed Denial of Service (DDoS) attacks [Example Networks Pvt Ltd, incident 1]"
	if subj, _ := new(mime.WordDecoder).DecodeHeader(m.Header.Get("Subject")); subj != wantSubject {
		t.Errorf("Subject %q", subj)
	}
	mailBody := body(t, m.Body)
	for _, want := range []string{
		"Cyber security incident report to CERT-In: initial report",
		"Name: " + reporterName, "Email: " + reporterEmail,
		"7. Type of incident (Annexure I): 8. Denial of Service (DoS) and Distributed Denial of Service (DDoS) attacks",
		"8. Description of the incident: SYN flood against the Mumbai gateways in1 and in2",
		"a) IP address: 192.0.2.10",
		"Source IP address(es): 203.0.113.7, 198.51.100.0/24",
		"16. How many host(s) are affected?: 1 to 10",
		"17. Actions taken to mitigate the intrusion/attack: upstream filtering; SYN cookies on",
		"Detected (noticed) at: " + noticed.UTC().Format("2006-01-02 15:04:05 UTC"),
		"2. Sector: not yet known",
	} {
		if !strings.Contains(mailBody, want) {
			t.Errorf("mail body lacks %q:\n%s", want, mailBody)
		}
	}
	got, _ = ts.admin.Incident(ctx, inc.ID)
	if got.State != incident.Reported || got.Reported.IsZero() || len(got.Deliveries) != 1 || got.Deliveries[0].MessageID != d.MessageID || got.SecondsLeft != nil ||
		!strings.HasPrefix(got.Status, "initial report sent 1h") || !strings.HasSuffix(got.Status, "in time") {
		t.Fatalf("after send: %+v", got)
	}

	// An update, sent to another address: the state is "updated".
	if _, err := ts.admin.UpdateIncident(ctx, inc.ID, api.IncidentUpdate{Fields: incident.Fields{Sector: "Telecommunications (VPN service)"}}); err != nil {
		t.Fatal(err)
	}
	if got, _ = ts.admin.Incident(ctx, inc.ID); !got.Unsent {
		t.Fatal("version 3 is not sent, but unsent_changes is false")
	}
	d2, err := ts.admin.SendIncident(ctx, inc.ID, []string{"csirt@example.org"})
	if err != nil {
		t.Fatal(err)
	}
	msgs = smtp.Wait(t, 2)
	if d2.Report != "update 1" || d2.Version != 3 || d2.Recipient != "csirt@example.org" || len(msgs) != 2 {
		t.Fatalf("update delivery %+v, %d messages", d2, len(msgs))
	}
	got, _ = ts.admin.Incident(ctx, inc.ID)
	if got.State != incident.Updated || len(got.Deliveries) != 2 || got.Unsent {
		t.Fatalf("after the update: %+v", got)
	}

	// Closed is final.
	if _, err := ts.admin.CloseIncident(ctx, inc.ID, "mitigated; no further reports expected"); err != nil {
		t.Fatal(err)
	}
	_, err = ts.admin.UpdateIncident(ctx, inc.ID, api.IncidentUpdate{Note: "late news"})
	wantStatus(t, err, 409, "incident 1: the incident is closed")
	_, err = ts.admin.SendIncident(ctx, inc.ID, nil)
	wantStatus(t, err, 409, "the incident is closed: it takes no further updates or reports; nothing was sent")
	_, err = ts.admin.CloseIncident(ctx, inc.ID, "again")
	wantStatus(t, err, 409, "closed")
	if open, _ := ts.admin.Incidents(ctx, false); len(open) != 0 {
		t.Fatalf("open incidents: %+v", open)
	}
	all, _ := ts.admin.Incidents(ctx, true)
	if len(all) != 1 || all[0].State != incident.Closed || !strings.HasPrefix(all[0].Status, "closed; initial report sent") {
		t.Fatalf("all incidents: %+v", all)
	}
	got, _ = ts.admin.Incident(ctx, inc.ID)
	if last := got.Updates[len(got.Updates)-1]; !last.Close || last.Note != "mitigated; no further reports expected" {
		t.Fatalf("closing version: %+v", last)
	}

	// Personal data is sealed at rest and kept out of the log.
	for _, f := range []string{"meridian.db", "meridian.db-wal"} {
		b, _ := os.ReadFile(filepath.Join(ts.cfg.DataDir, f))
		for _, secret := range []string{reporterName, reporterEmail, "203.0.113.7"} {
			if bytes.Contains(b, []byte(secret)) {
				t.Errorf("%s holds %q in clear", f, secret)
			}
		}
	}
	for _, secret := range []string{reporterName, reporterEmail, "203.0.113.7", "SYN flood", "csirt@example.org"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("the log holds %q", secret)
		}
	}
	if !strings.Contains(logs.String(), "incident report sent") {
		t.Errorf("no log of the delivery:\n%s", logs)
	}
}

// getRaw GETs an API path with a new admin token and returns the answer
// as it is.
func getRaw(t *testing.T, ts *testServer, path string) (int, string, string) {
	t.Helper()
	tok, err := ts.CreateAdminToken(context.Background(), "raw")
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", ts.url+api.Prefix+path, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}

func TestIncidentBadInput(t *testing.T) {
	ts, _ := incidentServer(t, "", false)
	ctx := context.Background()
	now := time.Now()
	good := inZone(now.Add(-time.Hour))
	for _, tc := range []struct {
		req  api.IncidentRequest
		code int
		want string
	}{
		{api.IncidentRequest{Type: 21, NoticedAt: good}, 400, "unknown incident type 21: Annexure I lists types 1 to 20"},
		{api.IncidentRequest{NoticedAt: good}, 400, "type is required"},
		{api.IncidentRequest{Type: 3}, 400, "noticed_at: required"},
		{api.IncidentRequest{Type: 3, NoticedAt: "2026-05-01T10:00:00"}, 400, `noticed_at: "2026-05-01T10:00:00" has no time zone`},
		{api.IncidentRequest{Type: 3, NoticedAt: inZone(now.Add(time.Hour))}, 400, "noticed_at: is in the future"},
		{api.IncidentRequest{Type: 3, NoticedAt: good, Fields: incident.Fields{Description: strings.Repeat("x", 4001)}}, 400, "description: at most 4000 characters (got 4001)"},
		{api.IncidentRequest{Type: 3, NoticedAt: good, Fields: incident.Fields{Sector: strings.Repeat("x", 201)}}, 400, "sector: at most 200 characters"},
		{api.IncidentRequest{Type: 3, NoticedAt: good, Fields: incident.Fields{Reporter: incident.Contact{Email: "ravi at example"}}}, 400, "reporter.email: not an email address"},
		{api.IncidentRequest{Type: 3, NoticedAt: good, Fields: incident.Fields{SuspectedSources: []string{"bad.example"}}}, 400, "suspected_sources[0]: not an IP address"},
		{api.IncidentRequest{Type: 3, NoticedAt: good, Fields: incident.Fields{HostsAffected: "many"}}, 400, "hosts_affected: must be 1-10, 10-100 or more-than-100"},
		{api.IncidentRequest{Type: 3, NoticedAt: good, Fields: incident.Fields{Description: strings.Repeat("x", 70_000)}}, 413, "request body larger than 65536 bytes"},
	} {
		_, err := ts.admin.CreateIncident(ctx, tc.req)
		wantStatus(t, err, tc.code, tc.want)
		if err != nil && strings.Contains(err.Error(), "ravi at example") {
			t.Error("an error repeats personal data")
		}
	}
	wantStatus(t, ts.admin.Do(ctx, "POST", "/incidents", map[string]any{"type": 3, "noticed_at": good, "severity": "high"}, nil), 400, `unknown field "severity"`)
	if incs, _ := ts.admin.Incidents(ctx, true); len(incs) != 0 {
		t.Fatalf("refused requests left incidents: %+v", incs)
	}

	inc, err := ts.admin.CreateIncident(ctx, api.IncidentRequest{Type: 3, NoticedAt: good})
	if err != nil {
		t.Fatal(err)
	}
	// With no node where the duty applies, the deadline is a target.
	if !strings.HasPrefix(inc.DeadlineWhy, "no node stands where an incident-reporting duty applies") || inc.Deadline.Sub(inc.Noticed) != 6*time.Hour {
		t.Fatalf("default deadline: %+v", inc)
	}
	_, err = ts.admin.UpdateIncident(ctx, inc.ID, api.IncidentUpdate{})
	wantStatus(t, err, 400, "an update must give at least one field")
	_, err = ts.admin.UpdateIncident(ctx, inc.ID, api.IncidentUpdate{Type: 99})
	wantStatus(t, err, 400, "unknown incident type 99")
	_, err = ts.admin.UpdateIncident(ctx, 42, api.IncidentUpdate{Note: "x"})
	wantStatus(t, err, 404, "no incident 42")
	wantStatus(t, ts.admin.Do(ctx, "GET", "/incidents/abc", nil, nil), 400, "incident id must be a positive number")
	_, err = ts.admin.SendIncident(ctx, inc.ID, nil)
	wantStatus(t, err, 409, "no SMTP server is configured")
	_, err = ts.admin.CloseIncident(ctx, inc.ID, "")
	wantStatus(t, err, 400, "reason is required")
	_, err = ts.admin.RecordIncidentDelivery(ctx, inc.ID, api.IncidentDelivery{Channel: "pigeon", At: good, To: "1800-11-4949"})
	wantStatus(t, err, 400, "channel must be phone, fax or email")
	_, err = ts.admin.RecordIncidentDelivery(ctx, inc.ID, api.IncidentDelivery{Channel: "phone", At: "2026-05-01 10:00", To: "1800-11-4949"})
	wantStatus(t, err, 400, "at: ")
	_, err = ts.admin.RecordIncidentDelivery(ctx, inc.ID, api.IncidentDelivery{Channel: "phone", At: inZone(now.Add(-2 * time.Hour)), To: "1800-11-4949"})
	wantStatus(t, err, 400, "before the incident was noticed")

	// A report by phone counts as the initial report; the type may be
	// corrected later, and the change is in the history.
	d, err := ts.admin.RecordIncidentDelivery(ctx, inc.ID, api.IncidentDelivery{Channel: "phone", At: inZone(now), To: "1800-11-4949", Reference: "call ref 77"})
	if err != nil || d.Report != "initial report" || d.MessageID != "call ref 77" {
		t.Fatalf("phone report: %+v %v", d, err)
	}
	got, err := ts.admin.UpdateIncident(ctx, inc.ID, api.IncidentUpdate{Type: 11, Note: "turned out to be a data breach"})
	if err != nil || got.Type != 11 || got.State != incident.Reported {
		t.Fatalf("reclassified: %+v %v", got, err)
	}
	show, _ := ts.admin.Incident(ctx, inc.ID)
	if show.Updates[0].Type != 3 || show.Updates[1].Type != 11 || show.TypeName != "Data breach" {
		t.Fatalf("history of the type: %+v", show.Updates)
	}

	// A closed incident without a report is allowed, with its reason.
	other, _ := ts.admin.CreateIncident(ctx, api.IncidentRequest{Type: 1, NoticedAt: good})
	if c, err := ts.admin.CloseIncident(ctx, other.ID, "false positive: our own scanner"); err != nil || c.Status != "closed without a report" {
		t.Fatalf("closing unreported: %+v %v", c, err)
	}
	_, err = ts.admin.RecordIncidentDelivery(ctx, other.ID, api.IncidentDelivery{Channel: "fax", At: inZone(now), To: "1800-11-6969"})
	wantStatus(t, err, 409, "closed")

	var types []incident.TypeInfo
	if err := ts.admin.Do(ctx, "GET", "/incidents/types", nil, &types); err != nil || len(types) != 20 || types[19].Number != 20 || types[10].Name != "Data breach" {
		t.Fatalf("types: %v %v", types, err)
	}
}

func TestIncidentAlerts(t *testing.T) {
	ts, logs := incidentServer(t, "", true)
	ctx := context.Background()
	posts := make(chan incident.Alert, 10)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var a incident.Alert
		if r.Method != "POST" || r.Header.Get("Content-Type") != "application/json" || json.NewDecoder(r.Body).Decode(&a) != nil {
			w.WriteHeader(400)
			return
		}
		posts <- a
	}))
	defer hook.Close()

	now := time.Now().Truncate(time.Second)
	secret := "attack traced to " + reporterName
	inc, err := ts.admin.CreateIncident(ctx, api.IncidentRequest{Type: 5, NoticedAt: inZone(now.Add(-5*time.Hour - 30*time.Minute)), Fields: incident.Fields{Description: secret}})
	if err != nil {
		t.Fatal(err)
	}
	// A reported incident raises no alert.
	done, _ := ts.admin.CreateIncident(ctx, api.IncidentRequest{Type: 3, NoticedAt: inZone(now.Add(-5*time.Hour - 30*time.Minute))})
	if _, err := ts.admin.RecordIncidentDelivery(ctx, done.ID, api.IncidentDelivery{Channel: "phone", At: inZone(now), To: "1800-11-4949"}); err != nil {
		t.Fatal(err)
	}

	clock := &fakeClock{t: now}
	a, err := ts.newIncidentAlerts(clock, hook.URL+"/hooks/secret-token")
	if err != nil {
		t.Fatal(err)
	}
	check := func() []incident.Alert {
		t.Helper()
		if err := a.check(ctx); err != nil {
			t.Fatal(err)
		}
		var got []incident.Alert
		for {
			select {
			case p := <-posts:
				got = append(got, p)
			default:
				return got
			}
		}
	}
	got := check()
	if len(got) != 1 || got[0].Incident != inc.ID || got[0].Kind != incident.OneHourLeft || got[0].Type != 5 || got[0].TimeLeft != "30m left" || got[0].SecondsLeft != 1800 {
		t.Fatalf("at 30 minutes left: %+v", got)
	}
	if got := check(); got != nil {
		t.Fatalf("the one-hour alert fired twice: %+v", got)
	}
	clock.t = clock.t.Add(31 * time.Minute)
	got = check()
	if len(got) != 1 || got[0].Kind != incident.Overdue || got[0].TimeLeft != "overdue by 1m" {
		t.Fatalf("overdue: %+v", got)
	}
	clock.t = clock.t.Add(time.Hour)
	if got := check(); got != nil {
		t.Fatalf("overdue fired twice: %+v", got)
	}
	show, _ := ts.admin.Incident(ctx, inc.ID)
	if len(show.Alerts) != 2 || show.Alerts[0].Kind != incident.OneHourLeft || show.Alerts[1].Kind != incident.Overdue {
		t.Fatalf("recorded alerts: %+v", show.Alerts)
	}

	resp, err := http.Get(ts.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`meridian_incident_alerts_total{kind="one-hour-left"} 1`, `meridian_incident_alerts_total{kind="overdue"} 1`, "meridian_incidents_open 2"} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	log := logs.String()
	if !strings.Contains(log, `level=WARN msg="incident report deadline" incident=1 type=5 alert=overdue time_left="overdue by 1m"`) {
		t.Errorf("no overdue warning in the log:\n%s", log)
	}
	for _, s := range []string{secret, reporterName, "secret-token"} {
		if strings.Contains(log, s) {
			t.Errorf("the log holds %q", s)
		}
	}

	// A failing webhook is logged without its URL.
	hook.Close()
	third, _ := ts.admin.CreateIncident(ctx, api.IncidentRequest{Type: 1, NoticedAt: inZone(now.Add(-7 * time.Hour))})
	check()
	if !strings.Contains(logs.String(), `msg="incident alert webhook failed" incident=`+strconv.FormatInt(third.ID, 10)) || strings.Contains(logs.String(), "secret-token") {
		t.Errorf("webhook failure log:\n%s", logs)
	}
	if _, err := ts.newIncidentAlerts(clock, "ftp://example.org/"); err == nil {
		t.Error("an ftp webhook was accepted")
	}
}

type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time { return c.t }

func TestWatchIncidents(t *testing.T) {
	ts, _ := incidentServer(t, "", true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	posts := make(chan incident.Alert, 1)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var a incident.Alert
		json.NewDecoder(r.Body).Decode(&a)
		posts <- a
	}))
	defer hook.Close()
	if _, err := ts.admin.CreateIncident(ctx, api.IncidentRequest{Type: 2, NoticedAt: inZone(time.Now().Add(-7 * time.Hour))}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { ts.watchIncidents(ctx, hook.URL); close(done) }()
	select {
	case a := <-posts:
		if a.Kind != incident.Overdue || a.Type != 2 {
			t.Fatalf("alert %+v", a)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the watch raised no alert within 10 s")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the watch did not stop with its context")
	}
}

func TestPointOfContactAndOrders(t *testing.T) {
	ts, logs := incidentServer(t, "", true)
	ctx := context.Background()
	_, err := ts.admin.POC(ctx)
	wantStatus(t, err, 404, "no point of contact has been designated")
	_, err = ts.admin.POCLetter(ctx)
	wantStatus(t, err, 404, "meridian poc set")
	_, err = ts.admin.SetPOC(ctx, incident.PointOfContact{Name: reporterName})
	wantStatus(t, err, 400, "organisation, designation, address, email, mobile: required")

	p := incident.PointOfContact{Organisation: "Example Networks Pvt Ltd", Name: reporterName, Designation: "Chief Information Security Officer",
		Address: "1 Marine Drive, Mumbai 400001", Email: reporterEmail, Mobile: "+91 98 5550 0101", Phone: "+91 22 5550 0100"}
	if _, err := ts.admin.SetPOC(ctx, p); err != nil {
		t.Fatal(err)
	}
	p.Designation = "Head of Security Operations"
	if _, err := ts.admin.SetPOC(ctx, p); err != nil {
		t.Fatal(err)
	}
	got, err := ts.admin.POC(ctx)
	if err != nil || got.Designation != "Head of Security Operations" || got.UpdatedAt.IsZero() {
		t.Fatalf("current PoC: %+v %v", got, err)
	}
	l, err := ts.admin.POCLetter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if l.To != "info@cert-in.org.in" {
		t.Errorf("letter to %q", l.To)
	}
	for _, want := range []string{
		"Name of the organisation: Example Networks Pvt Ltd", "Name of the Point of Contact: " + reporterName,
		"Designation: Head of Security Operations", "Office address: 1 Marine Drive, Mumbai 400001",
		"Email: " + reporterEmail, "Mobile: +91 98 5550 0101", "Office phone: +91 22 5550 0100", "Fax: none",
	} {
		if !strings.Contains(l.Body, want) {
			t.Errorf("letter lacks %q:\n%s", want, l.Body)
		}
	}

	now := time.Now().Truncate(time.Second)
	o, err := ts.admin.CreateOrder(ctx, api.OrderRequest{Reference: "CERT-In/2026/0042", ReceivedAt: inZone(now.Add(-time.Hour)), DueAt: inZone(now.Add(23 * time.Hour)),
		Request: "session records for exit 203.0.113.9 port 40123 on 2026-05-01, as CSV"})
	if err != nil {
		t.Fatal(err)
	}
	if o.State != incident.OrderOpen || !o.Due.Equal(now.Add(23*time.Hour)) || !strings.HasSuffix(o.Status, "left") || *o.SecondsLeft > 23*3600 || *o.SecondsLeft < 23*3600-60 {
		t.Fatalf("order %+v", o)
	}
	overdue, err := ts.admin.CreateOrder(ctx, api.OrderRequest{Reference: "CERT-In/2026/0041", ReceivedAt: inZone(now.Add(-3 * time.Hour)), DueAt: inZone(now.Add(-time.Hour)), Request: "ICT logs of gateway in1"})
	if err != nil {
		t.Fatal(err)
	}
	list, err := ts.admin.Orders(ctx)
	if err != nil || len(list) != 2 || list[0].ID != overdue.ID || !strings.HasPrefix(list[0].Status, "overdue by 1h") || list[0].Request != "" {
		t.Fatalf("orders (soonest due first, no request text): %+v %v", list, err)
	}
	show, err := ts.admin.Order(ctx, o.ID)
	if err != nil || show.Request != "session records for exit 203.0.113.9 port 40123 on 2026-05-01, as CSV" {
		t.Fatalf("order %+v %v", show, err)
	}
	ans, err := ts.admin.AnswerOrder(ctx, o.ID, api.OrderAnswer{Answer: "CSV sent by email to the officer, ref 7"})
	if err != nil || ans.State != incident.OrderAnswered || !strings.HasSuffix(ans.Status, "in time") {
		t.Fatalf("answer %+v %v", ans, err)
	}
	_, err = ts.admin.AnswerOrder(ctx, o.ID, api.OrderAnswer{Answer: "again"})
	wantStatus(t, err, 409, "already answered")
	_, err = ts.admin.AnswerOrder(ctx, overdue.ID, api.OrderAnswer{})
	wantStatus(t, err, 400, "answer: required")
	if show, _ := ts.admin.Order(ctx, o.ID); show.Answer != "CSV sent by email to the officer, ref 7" {
		t.Fatalf("answer not kept: %+v", show)
	}
	for _, tc := range []struct {
		req  api.OrderRequest
		want string
	}{
		{api.OrderRequest{ReceivedAt: inZone(now), DueAt: inZone(now.Add(time.Hour)), Request: "x"}, "reference: required"},
		{api.OrderRequest{Reference: "R", ReceivedAt: "2026-05-01T10:00:00", DueAt: inZone(now), Request: "x"}, "received_at: \"2026-05-01T10:00:00\" has no time zone"},
		{api.OrderRequest{Reference: "R", ReceivedAt: inZone(now), DueAt: inZone(now.Add(-time.Hour)), Request: "x"}, "due_at: must be after received_at"},
		{api.OrderRequest{Reference: "R", ReceivedAt: inZone(now.Add(time.Hour)), DueAt: inZone(now.Add(2 * time.Hour)), Request: "x"}, "received_at: is in the future"},
	} {
		_, err := ts.admin.CreateOrder(ctx, tc.req)
		wantStatus(t, err, 400, tc.want)
	}

	for _, f := range []string{"meridian.db", "meridian.db-wal"} {
		b, _ := os.ReadFile(filepath.Join(ts.cfg.DataDir, f))
		for _, secret := range []string{reporterName, reporterEmail, "203.0.113.9"} {
			if bytes.Contains(b, []byte(secret)) {
				t.Errorf("%s holds %q in clear", f, secret)
			}
		}
	}
	if strings.Contains(logs.String(), reporterName) {
		t.Error("the log holds the point of contact's name")
	}
}

func TestIncidentSendFailure(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close() // nothing listens here: the SMTP server is down
	ts, _ := incidentServer(t, closed, true)
	ctx := context.Background()
	inc, err := ts.admin.CreateIncident(ctx, api.IncidentRequest{Type: 6, NoticedAt: inZone(time.Now())})
	if err != nil {
		t.Fatal(err)
	}
	_, err = ts.admin.SendIncident(ctx, inc.ID, nil)
	wantStatus(t, err, 502, "the report was not sent: mail: connecting to "+closed)
	_, err = ts.admin.SendIncident(ctx, inc.ID, []string{"not an address"})
	wantStatus(t, err, 400, "to[0] is not an email address")
	got, _ := ts.admin.Incident(ctx, inc.ID)
	if got.State != incident.Noticed || len(got.Deliveries) != 0 || got.SecondsLeft == nil {
		t.Fatalf("a failed send changed the incident: %+v", got)
	}
}
