package control

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/incident"
)

// TestOrderAlerts: a CERT-In order raises the incidents' alerts, at one
// hour left and when overdue, each once, in the log, the metrics and the
// webhook; an answered order raises none, and answering stops them.
func TestOrderAlerts(t *testing.T) {
	ts, logs := incidentServer(t, "", true)
	ctx := context.Background()
	posts := make(chan map[string]any, 10)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var a map[string]any
		if r.Method != "POST" || r.Header.Get("Content-Type") != "application/json" || json.NewDecoder(r.Body).Decode(&a) != nil {
			w.WriteHeader(400)
			return
		}
		posts <- a
	}))
	defer hook.Close()

	now := time.Now().Truncate(time.Second)
	request := "session records of " + reporterName + ", as CSV"
	order := func(ref string, due time.Duration) incident.Order {
		t.Helper()
		o, err := ts.admin.CreateOrder(ctx, api.OrderRequest{Reference: ref, ReceivedAt: inZone(now.Add(-time.Hour)), DueAt: inZone(now.Add(due)), Request: request})
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	o := order("CERT-In/2026/0042", 30*time.Minute)
	answered := order("CERT-In/2026/0043", 30*time.Minute)
	if _, err := ts.admin.AnswerOrder(ctx, answered.ID, api.OrderAnswer{Answer: "sent the CSV by email"}); err != nil {
		t.Fatal(err)
	}
	later := order("CERT-In/2026/0044", 3*time.Hour)

	clock := &fakeClock{t: now}
	a, err := ts.newIncidentAlerts(clock, hook.URL+"/hooks/secret-token")
	if err != nil {
		t.Fatal(err)
	}
	check := func() []map[string]any {
		t.Helper()
		if err := a.check(ctx); err != nil {
			t.Fatal(err)
		}
		var got []map[string]any
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
	if len(got) != 1 || got[0]["order"] != float64(o.ID) || got[0]["alert"] != string(incident.OneHourLeft) || got[0]["time_left"] != "30m left" || got[0]["seconds_left"] != float64(1800) {
		t.Fatalf("at 30 minutes left: %+v", got)
	}
	if _, ok := got[0]["incident"]; ok {
		t.Fatalf("an order alert reads as an incident's: %+v", got[0])
	}
	if got := check(); got != nil {
		t.Fatalf("the one-hour alert fired twice: %+v", got)
	}
	clock.t = clock.t.Add(31 * time.Minute)
	got = check()
	if len(got) != 1 || got[0]["order"] != float64(o.ID) || got[0]["alert"] != string(incident.Overdue) || got[0]["time_left"] != "overdue by 1m" {
		t.Fatalf("overdue: %+v", got)
	}
	if got := check(); got != nil {
		t.Fatalf("overdue fired twice: %+v", got)
	}
	show, err := ts.admin.Order(ctx, o.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(show.Alerts) != 2 || show.Alerts[0].Kind != incident.OneHourLeft || show.Alerts[1].Kind != incident.Overdue ||
		show.SecondsLeft == nil || !strings.HasSuffix(show.Status, "m left") { // by the server's clock, not the fake one
		t.Fatalf("order show: %+v", show)
	}
	if list, err := ts.admin.Orders(ctx); err != nil || len(list) != 3 || list[0].ID != o.ID || len(list[0].Alerts) != 2 {
		t.Fatalf("order list: %+v %v", list, err)
	}

	// Answering an order stops its alerts: the later one, answered before
	// its last hour, never raises one.
	if _, err := ts.admin.AnswerOrder(ctx, later.ID, api.OrderAnswer{Answer: "assistance given by phone"}); err != nil {
		t.Fatal(err)
	}
	clock.t = clock.t.Add(4 * time.Hour)
	if got := check(); got != nil {
		t.Fatalf("answered orders raised alerts: %+v", got)
	}

	resp, err := http.Get(ts.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`meridian_order_alerts_total{kind="one-hour-left"} 1`, `meridian_order_alerts_total{kind="overdue"} 1`,
		"meridian_orders_open 1", `meridian_incident_alerts_total{kind="overdue"} 0`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	log := logs.String()
	if !strings.Contains(log, `level=WARN msg="CERT-In order due" order=`+strconv.FormatInt(o.ID, 10)+` alert=overdue time_left="overdue by 1m"`) {
		t.Errorf("no overdue warning in the log:\n%s", log)
	}
	for _, s := range []string{reporterName, "CERT-In/2026/0042", "secret-token"} {
		if strings.Contains(log, s) {
			t.Errorf("the log holds %q", s)
		}
	}

	// A failing webhook is logged without its URL.
	hook.Close()
	late := order("CERT-In/2026/0045", time.Minute)
	clock.t = now.Add(2 * time.Minute)
	check()
	if !strings.Contains(logs.String(), `msg="order alert webhook failed" order=`+strconv.FormatInt(late.ID, 10)) || strings.Contains(logs.String(), "secret-token") {
		t.Errorf("webhook failure log:\n%s", logs)
	}
}

// The deadline edges through the server: an incident noticed in India is
// due exactly 6 hours after it was noticed; its alert and that of an order
// due at the same instant fire at exactly one hour left (not a second
// before), and "overdue" not at the deadline, when a report is still in
// time, but a second after.
func TestDeadlineEdgesThroughTheServer(t *testing.T) {
	ts, _ := incidentServer(t, "", true)
	ctx := context.Background()
	now := time.Now().Truncate(time.Second)
	noticed := now.Add(-5 * time.Hour)
	inc, err := ts.admin.CreateIncident(ctx, api.IncidentRequest{Type: 5, NoticedAt: inZone(noticed)})
	if err != nil {
		t.Fatal(err)
	}
	if !inc.Noticed.Equal(noticed) || inc.Deadline.Sub(inc.Noticed) != 6*time.Hour || !strings.Contains(inc.DeadlineWhy, "control") {
		t.Fatalf("noticed %s, deadline %s (%s), want 6 h after noticing", inc.Noticed, inc.Deadline, inc.DeadlineWhy)
	}
	deadline := inc.Deadline
	o, err := ts.admin.CreateOrder(ctx, api.OrderRequest{Reference: "CERT-In/2026/0099", ReceivedAt: inZone(now.Add(-time.Hour)), DueAt: inZone(deadline), Request: "logs"})
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{}
	a, err := ts.newIncidentAlerts(clock, "")
	if err != nil {
		t.Fatal(err)
	}
	fired := func(left time.Duration) (incKinds, orderKinds []incident.AlertKind) {
		t.Helper()
		clock.t = deadline.Add(-left)
		if err := a.check(ctx); err != nil {
			t.Fatal(err)
		}
		i, err := ts.admin.Incident(ctx, inc.ID)
		if err != nil {
			t.Fatal(err)
		}
		ord, err := ts.admin.Order(ctx, o.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, al := range i.Alerts {
			incKinds = append(incKinds, al.Kind)
		}
		for _, al := range ord.Alerts {
			orderKinds = append(orderKinds, al.Kind)
		}
		return
	}
	for _, c := range []struct {
		left time.Duration
		want []incident.AlertKind
	}{
		{time.Hour + time.Second, nil},
		{time.Hour, []incident.AlertKind{incident.OneHourLeft}},
		{0, []incident.AlertKind{incident.OneHourLeft}},
		{-time.Second, []incident.AlertKind{incident.OneHourLeft, incident.Overdue}},
	} {
		ik, ok := fired(c.left)
		if !slices.Equal(ik, c.want) || !slices.Equal(ok, c.want) {
			t.Fatalf("%s before the deadline: the incident's alerts %v, the order's %v; want %v", c.left, ik, ok, c.want)
		}
	}
}
