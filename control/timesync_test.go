package control

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/gateway"
	"github.com/meridian-vpn/meridian/timesync"
	"github.com/meridian-vpn/meridian/timesync/ntptest"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func clockFor(t *testing.T, sources ...string) *timesync.Monitor {
	t.Helper()
	m, err := timesync.New(timesync.Config{Sources: sources, Interval: 50 * time.Millisecond, Timeout: 500 * time.Millisecond, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestTimeAPI runs a control server standing in Singapore (no duty) and a
// gateway standing in India (clock-sync duty under cert-in-2022), whose
// clock is checked against a loopback NTP server given with --ntp-source in
// place of the NIC/NPL servers. GET /time lists both, each with its duty
// and what its monitor said; the control server queries nothing.
func TestTimeAPI(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ntp := ntptest.Respond(t, func(int) []ntptest.Reply { return []ntptest.Reply{{}} })

	srv, err := New(ctx, Config{DataDir: t.TempDir(), IPv6Pool: netip.MustParsePrefix("2001:db8:200::/120"), Logger: quietLog(), Clock: clockFor(t)})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, l, nil) }()
	t.Cleanup(func() { cancel(); <-served; srv.Close() })
	url := URLFor(l)
	tok, err := srv.CreateAdminToken(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	admin, _ := api.NewClient(url, tok, "")
	if _, err := admin.SetPlace(ctx, api.ControlNode, api.Place{PhysicalCountry: "SG", Ownership: api.Rented}); err != nil {
		t.Fatal(err)
	}

	join, err := srv.CreateJoinToken(ctx, api.JoinTokenRequest{TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := udp.LocalAddr().(*net.UDPAddr).Port
	udp.Close()
	gw, err := gateway.Start(ctx, gateway.Config{Control: url, JoinToken: join.Token, StateDir: filepath.Join(t.TempDir(), "gw"), Name: "in1",
		ListenPort: port, ReportInterval: 50 * time.Millisecond, Logger: quietLog(), Clock: clockFor(t, ntp.Addr)})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	if _, err := admin.SetPlace(ctx, "in1", api.Place{PhysicalCountry: "IN", Ownership: api.Rented}); err != nil {
		t.Fatal(err)
	}
	// A second gateway that has joined but never reported.
	join2, _ := srv.CreateJoinToken(ctx, api.JoinTokenRequest{TTL: time.Hour})
	jc, _ := api.NewClient(url, join2.Token, "")
	joined, err := jc.Join(ctx, api.JoinRequest{Name: "quiet", PublicKey: *newKey(t), Endpoint: "192.0.2.1:51820", Mode: api.Userspace})
	if err != nil {
		t.Fatal(err)
	}

	var nodes []api.NodeTime
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if nodes, err = admin.Time(ctx); err != nil {
			t.Fatal(err)
		}
		if len(nodes) == 3 && nodes[0].Status != nil && nodes[0].Status.State == api.TimeNotRequired &&
			nodes[1].Status != nil && nodes[1].Status.Required && nodes[1].Status.Synced() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /time: %+v", nodes)
		}
	}
	ctl, in1, quiet := nodes[0], nodes[1], nodes[2]
	if ctl.Node != api.ControlNode || ctl.Plan.Required || ctl.Plan.Why != "SG / none: no clock-sync duty" || len(ctl.Status.Sources) != 0 {
		t.Errorf("control: %+v %+v", ctl, ctl.Status)
	}
	if in1.Node != "in1" || !in1.Plan.Required || in1.Plan.Why != "IN / cert-in-2022 / direction (i) / placement: node in1 stands in IN" ||
		strings.Join(in1.Plan.Sources, ",") != "samay1.nic.in,samay2.nic.in,time.nplindia.org" || in1.Plan.MaxOffset != 100*time.Millisecond {
		t.Errorf("in1 plan: %+v", in1.Plan)
	}
	if st := in1.Status; !st.Overridden || st.Why != in1.Plan.Why || st.Best != ntp.Addr || len(st.Sources) != 1 || st.Sources[0].LastSuccess.IsZero() {
		t.Errorf("in1 status: %+v", st)
	}
	if quiet.Node != "quiet" || quiet.Status != nil || quiet.Plan.Required {
		t.Errorf("quiet: %+v", quiet)
	}

	// The gateway asked for its own plan; nobody else may.
	gc, _ := api.NewClient(url, joined.Credential, "")
	if p, err := gc.TimePlan(ctx); err != nil || p.Required || p.Why != "no declared place, so no duty is known" {
		t.Errorf("quiet's plan: %+v, %v", p, err)
	}
	_, err = admin.TimePlan(ctx)
	wantStatus(t, err, 403, "may not")
	_, err = gc.Time(ctx)
	wantStatus(t, err, 403, "may not")

	// Metrics: the control node's own clock, and the gateway's.
	metrics := func(h http.Handler) string {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		return rec.Body.String()
	}
	if m := metrics(srv.Handler()); !strings.Contains(m, "\nmeridian_time_required 0\n") || !strings.Contains(m, "\nmeridian_time_synced 0\n") {
		t.Errorf("control metrics lack the clock:\n%s", grep(m, "meridian_time"))
	}
	if m := metrics(gw.MetricsHandler()); !strings.Contains(m, "\nmeridian_time_synced 1\n") ||
		!strings.Contains(m, `meridian_time_offset_seconds{source="`+ntp.Addr+`"}`) || !strings.Contains(m, `meridian_time_alarm{kind="offset"} 0`) {
		t.Errorf("gateway metrics lack the clock:\n%s", grep(m, "meridian_time"))
	}
}

func grep(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
