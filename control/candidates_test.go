package control

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/device"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/gateway"
	"github.com/meridian-vpn/meridian/ictlog"
)

// onlyCandidate returns the one pending candidate, or fails.
func onlyCandidate(t *testing.T, ts *testServer) api.IncidentCandidate {
	t.Helper()
	cs, err := ts.admin.IncidentCandidates(context.Background(), false)
	if err != nil || len(cs) != 1 {
		t.Fatalf("candidates: %+v %v", cs, err)
	}
	return cs[0]
}

func TestFailedLoginBurstCandidate(t *testing.T) {
	ts, _ := incidentServer(t, "", true)
	ctx := context.Background()
	// Failures of other kinds do not count: no token, a gateway route.
	none, _ := api.NewClient(ts.url, "", "")
	for range 30 {
		none.Users(ctx)
	}
	gw, _ := api.NewClient(ts.url, gatewayCredPrefix+"guess", "")
	for range 30 {
		gw.Netmap(ctx, 0, 0)
	}
	bad, _ := api.NewClient(ts.url, adminTokenPrefix+"guess", "")
	for i := range loginBurst - 1 {
		_, err := bad.Users(ctx)
		// The gateway guesses above put this source in backoff (limits.go):
		// its failures are answered 429, and still count.
		wantStatus(t, err, 429, "too many failed credentials")
		if i == 0 {
			if cs, _ := ts.admin.IncidentCandidates(ctx, false); len(cs) != 0 {
				t.Fatalf("a candidate before the burst: %+v", cs)
			}
		}
	}
	if cs, _ := ts.admin.IncidentCandidates(ctx, false); len(cs) != 0 {
		t.Fatalf("a candidate after %d failures: %+v", loginBurst-1, cs)
	}
	for range 25 - (loginBurst - 1) {
		bad.Users(ctx)
	}
	c := onlyCandidate(t, ts)
	if c.Kind != kindLoginBurst || !slices.Equal(c.Types, []int{3}) || c.Node != api.ControlNode || c.Sightings != 1 ||
		!strings.Contains(c.Summary, "20 requests with invalid or revoked admin tokens") {
		t.Fatalf("candidate %+v", c)
	}
	if time.Since(c.DetectedAt) > time.Minute {
		t.Fatalf("detected at %v", c.DetectedAt)
	}

	// Confirming records the incident as noticed at detection, however
	// late the confirmation: the deadline counts from then.
	time.Sleep(1100 * time.Millisecond) // so that now and detection differ
	inc, err := ts.admin.ConfirmCandidate(ctx, c.ID, api.CandidateConfirm{})
	if err != nil {
		t.Fatal(err)
	}
	if int(inc.Type) != 3 || !inc.Noticed.Equal(c.DetectedAt) || !inc.Deadline.Equal(c.DetectedAt.Add(6*time.Hour)) {
		t.Fatalf("incident %+v: want type 3 noticed at %v", inc, c.DetectedAt)
	}
	full, err := ts.admin.Incident(ctx, inc.ID)
	if err != nil {
		t.Fatal(err)
	}
	if u := full.Updates[0]; !strings.Contains(u.Fields.HowDetected, "admin-login-failures") || u.Fields.PhysicalLocation != "India (IN)" ||
		u.Fields.Description != c.Summary || !strings.Contains(u.Note, fmt.Sprintf("candidate %d", c.ID)) {
		t.Fatalf("incident content: %+v", u)
	}
	all, _ := ts.admin.IncidentCandidates(ctx, true)
	if len(all) != 1 || all[0].State != api.CandidateConfirmed || all[0].Incident != inc.ID || !strings.Contains(all[0].DecidedBy, "ops") {
		t.Fatalf("after confirming: %+v", all)
	}
	_, err = ts.admin.ConfirmCandidate(ctx, c.ID, api.CandidateConfirm{})
	wantStatus(t, err, 409, fmt.Sprintf("already confirmed as incident %d", inc.ID))
	_, err = ts.admin.ConfirmCandidate(ctx, 99, api.CandidateConfirm{})
	wantStatus(t, err, 404, "no incident candidate 99")
}

func TestLedgerTamperingCandidate(t *testing.T) {
	ts, _ := incidentServer(t, "", true)
	ctx := context.Background()
	ts.checkLedger(ctx)
	if cs, _ := ts.admin.IncidentCandidates(ctx, false); len(cs) != 0 {
		t.Fatalf("a candidate for an intact ledger: %+v", cs)
	}
	// An incident puts an entry in the ledger; someone with the database
	// file then changes it.
	if _, err := ts.admin.CreateIncident(ctx, api.IncidentRequest{Type: 8, NoticedAt: inZone(time.Now())}); err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{`DROP TRIGGER ledger_entries_purge_once`, `UPDATE ledger_entries SET body = CAST(X'00' || body AS BLOB) WHERE chain = 'records' AND seq = 1`} {
		if _, err := ts.db.Exec(stmt); err != nil {
			t.Fatal(err)
		}
	}
	ts.checkLedger(ctx)
	ts.checkLedger(ctx) // the next hour: the same candidate, seen again
	c := onlyCandidate(t, ts)
	if c.Kind != kindLedgerVerify || !slices.Equal(c.Types, []int{2, 11}) || c.Sightings != 2 || !strings.Contains(c.Summary, "entry 1 (records") {
		t.Fatalf("candidate %+v", c)
	}
	es, _ := ictEntries(t, ts)
	find(t, es, ictlog.Integrity, "ledger verification failed")

	_, err := ts.admin.DismissCandidate(ctx, c.ID, "")
	wantStatus(t, err, 400, "reason is required")
	d, err := ts.admin.DismissCandidate(ctx, c.ID, "restored from backup; a test of the monitoring")
	if err != nil {
		t.Fatal(err)
	}
	if d.State != api.CandidateDismissed || d.Reason != "restored from backup; a test of the monitoring" || d.Incident != 0 || d.DecidedAt.IsZero() {
		t.Fatalf("dismissed: %+v", d)
	}
	_, err = ts.admin.DismissCandidate(ctx, c.ID, "again")
	wantStatus(t, err, 409, "already dismissed")
	_, err = ts.admin.ConfirmCandidate(ctx, c.ID, api.CandidateConfirm{})
	wantStatus(t, err, 409, "already dismissed")
	// A new sighting after the decision is a new candidate.
	ts.checkLedger(ctx)
	if c2 := onlyCandidate(t, ts); c2.ID == c.ID || c2.Sightings != 1 {
		t.Fatalf("after dismissal: %+v", c2)
	}
	// Confirming may reclassify: this one is a data breach.
	c2 := onlyCandidate(t, ts)
	_, err = ts.admin.ConfirmCandidate(ctx, c2.ID, api.CandidateConfirm{Type: 21})
	wantStatus(t, err, 400, "unknown incident type 21")
	inc, err := ts.admin.ConfirmCandidate(ctx, c2.ID, api.CandidateConfirm{Type: 11, Note: "customer records were copied"})
	if err != nil || int(inc.Type) != 11 || !inc.Noticed.Equal(c2.DetectedAt) {
		t.Fatalf("confirmed as type 11: %+v %v", inc, err)
	}
}

// handshakeFlood sends handshake initiations with valid MAC1 (so that
// WireGuard queues each for a Diffie-Hellman) and random content to a
// gateway's WireGuard port on loopback: at most maxPackets, for at most
// maxTime, stopping early when done reports true. It returns how many it
// sent and how many cookie replies (the gateway's rate-limiting answer)
// came back.
func handshakeFlood(t *testing.T, port int, pub [32]byte, maxPackets int, maxTime time.Duration, done func() bool) (sent, cookies int) {
	t.Helper()
	conn, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	replies := make(chan int)
	go func() {
		n := 0
		buf := make([]byte, 1500)
		for {
			m, err := conn.Read(buf)
			if err != nil {
				replies <- n
				return
			}
			if m == device.MessageCookieReplySize && binary.LittleEndian.Uint32(buf) == device.MessageCookieReplyType {
				n++
			}
		}
	}()
	var gen device.CookieGenerator
	gen.Init(pub)
	msg := make([]byte, device.MessageInitiationSize)
	deadline := time.Now().Add(maxTime)
	// Bursts of a thousand outrun the handshake workers of a machine with
	// many cores too: they leave the queue long.
	for sent < maxPackets && time.Now().Before(deadline) && !done() {
		for range min(1000, maxPackets-sent) {
			binary.LittleEndian.PutUint32(msg, device.MessageInitiationType)
			rand.Read(msg[4 : len(msg)-32])
			gen.AddMacs(msg)
			if _, err := conn.Write(msg); err == nil {
				sent++
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // the last cookie replies
	conn.SetReadDeadline(time.Now())
	return sent, <-replies
}

func TestHandshakeFloodCandidate(t *testing.T) {
	ts, _ := incidentServer(t, "", true)
	ctx := context.Background()
	tok, err := ts.admin.CreateJoinToken(ctx, api.JoinTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	port := freeUDPPort(t)
	gw, err := gateway.Start(ctx, gateway.Config{Control: ts.url, JoinToken: tok.Token, StateDir: filepath.Join(t.TempDir(), "gw"), Name: "gw-in",
		ListenPort: port, ReportInterval: 100 * time.Millisecond, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	if _, err := ts.admin.SetPlace(ctx, "gw-in", api.Place{PhysicalCountry: "IN", Ownership: api.Rented}); err != nil {
		t.Fatal(err)
	}
	gws, err := ts.admin.Gateways(ctx)
	if err != nil || len(gws) != 1 {
		t.Fatalf("gateways: %+v %v", gws, err)
	}
	// The first report sets the baseline of the gateway's counters.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		ts.ict.mu.Lock()
		_, seen := ts.ict.counters["gw-in"]
		ts.ict.mu.Unlock()
		if seen {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no report from the gateway")
		}
	}
	found := func() bool {
		cs, _ := ts.db.Candidates(ctx, false)
		return len(cs) > 0
	}
	sent, cookies := handshakeFlood(t, port, gws[0].PublicKey, 20000, 10*time.Second, found)
	t.Logf("sent %d handshake initiations, %d cookie replies came back", sent, cookies)
	// Reports every 100 ms carry the rate-limiting that the flood caused.
	for deadline := time.Now().Add(2 * time.Second); !found() && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	c := onlyCandidate(t, ts)
	if c.Kind != kindHandshakeFlood || c.Node != "gw-in" || !slices.Equal(c.Types, []int{8}) || !strings.Contains(c.Summary, "handshake rate-limiting") {
		t.Fatalf("candidate %+v", c)
	}
	if cookies == 0 {
		t.Fatal("the gateway sent no cookie reply: it never rate-limited")
	}
	es, _ := ictEntries(t, ts)
	accepted := 0
	for _, e := range es {
		if e.Event == "gateway credential accepted" {
			accepted++
		}
	}
	if accepted != 1 {
		t.Fatalf("the gateway's credential was logged as accepted %d times, want once (reports and polls are not logged)", accepted)
	}
	if e := find(t, es, ictlog.Handshake, "handshake rate-limiting (cookie mode) entered"); e.Node != "gw-in" || e.Country != "IN" {
		t.Fatalf("ICT log entry %+v", e)
	}
	inc, err := ts.admin.ConfirmCandidate(ctx, c.ID, api.CandidateConfirm{})
	if err != nil || int(inc.Type) != 8 || !inc.Noticed.Equal(c.DetectedAt) {
		t.Fatalf("confirmed: %+v %v", inc, err)
	}
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}
