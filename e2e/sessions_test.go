package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/client"
	"github.com/meridian-vpn/meridian/gateway"
	"github.com/meridian-vpn/meridian/portblock"
	"github.com/meridian-vpn/meridian/store"
	"github.com/meridian-vpn/meridian/wg"
)

var loopback4 = netip.MustParseAddr("127.0.0.1")

// startExitGateway starts a userspace gateway whose exit dials from
// 127.0.0.1, so the port blocks of its sessions are on a known address.
func startExitGateway(t *testing.T, ctl *controlNode, admin *api.Client, dir, name string) *gateway.Gateway {
	t.Helper()
	tok, err := admin.CreateJoinToken(context.Background(), api.JoinTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.Start(context.Background(), gateway.Config{
		Control: ctl.url(), JoinToken: tok.Token, StateDir: filepath.Join(dir, name), Name: name,
		ListenPort: freeUDPPort(t), EgressAllow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
		ExitIPv4: loopback4, SessionInterval: 200 * time.Millisecond,
		ReportInterval: 100 * time.Millisecond, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })
	return gw
}

// sourceServer answers with the address and port it was reached from.
func sourceServer(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, r.RemoteAddr) }))
	t.Cleanup(srv.Close)
	return srv
}

// fetchSource fetches from srv through tun and returns where srv saw the
// request come from.
func fetchSource(t *testing.T, tun *client.Tunnel, srv *httptest.Server) netip.AddrPort {
	t.Helper()
	var from netip.AddrPort
	eventually(t, 10*time.Second, "fetch through the tunnel", func() error {
		body, err := httpGet(tun, srv.URL)
		if err != nil {
			return err
		}
		from, err = netip.ParseAddrPort(body)
		return err
	})
	return from
}

// openStore opens the control server's database beside the running server.
func openStore(t *testing.T, ctl *controlNode) *store.DB {
	t.Helper()
	db := openStoreAt(t, ctl.dir)
	t.Cleanup(func() { db.Close() })
	return db
}

// openStoreAt opens the database of the control server whose data
// directory (DATA/control) is dir; the caller closes it.
func openStoreAt(t *testing.T, dir string) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), filepath.Join(dir, "meridian.db"))
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// aliceInIndia places gw in India (cert-in-2022 by default: session
// records owed), adds the account alice with one device, and waits until
// gw holds it.
func aliceInIndia(t *testing.T, admin *api.Client, gw *gateway.Gateway) (api.CreateDeviceResponse, wg.Key) {
	t.Helper()
	ctx := context.Background()
	if _, err := admin.CreateUser(ctx, api.CreateUserRequest{Name: "alice"}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.SetPlace(ctx, "in1", place("IN")); err != nil {
		t.Fatal(err)
	}
	dev, priv := newDevice(t, admin, "alice", "laptop", "")
	eventually(t, 5*time.Second, "the gateway holds the device", func() error {
		if gw.Peers() != 1 {
			return fmt.Errorf("%d peers", gw.Peers())
		}
		return nil
	})
	return dev, priv
}

func newDevice(t *testing.T, admin *api.Client, user, name, location string) (api.CreateDeviceResponse, wg.Key) {
	t.Helper()
	priv, err := wg.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	pub := priv.Public()
	d, err := admin.CreateDevice(context.Background(), api.CreateDeviceRequest{User: user, Name: name, PublicKey: &pub, Location: location})
	if err != nil {
		t.Fatal(err)
	}
	return d, priv
}

func TestSessionRecordsWhereADutyRequiresThem(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	web := sourceServer(t)
	ctl := startControlWith(t, filepath.Join(dir, "control"), "127.0.0.1:0", time.Second)
	admin := ctl.admin(t)
	// Accounts first: once a gateway stands in India, a consumer account
	// needs a subscriber record, which is not what this test is about.
	for _, u := range []api.CreateUserRequest{{Name: "alice"}, {Name: "acme-staff", Kind: api.Enterprise}} {
		if _, err := admin.CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	in1 := startExitGateway(t, ctl, admin, dir, "in1")
	de1 := startExitGateway(t, ctl, admin, dir, "de1")
	if _, err := admin.SetJurisdiction(ctx, api.Jurisdiction{Country: "IN", Profile: "cert-in-2022", Stance: "comply"}); err != nil {
		t.Fatal(err)
	}
	for name, country := range map[string]string{"in1": "IN", "de1": "DE"} {
		if _, err := admin.SetPlace(ctx, name, place(country)); err != nil {
			t.Fatal(err)
		}
		if _, err := admin.CreateLocation(ctx, api.Location{Code: country, Country: country, Gateways: []string{name}}); err != nil {
			t.Fatal(err)
		}
	}
	db := openStore(t, ctl)

	alice, alicePriv := newDevice(t, admin, "alice", "laptop", "IN")
	if alice.Tunnel.Gateway != "in1" {
		t.Fatalf("IN device points at %q", alice.Tunnel.Gateway)
	}
	layout := portblock.Default

	var session store.Session
	t.Run("the exit port leads to the device", func(t *testing.T) {
		tun := connect(t, alice.Config(alicePriv))
		from := fetchSource(t, tun, web)
		at := time.Now()
		if from.Addr() != loopback4 {
			t.Fatalf("request came from %v, want the exit address 127.0.0.1", from)
		}
		if _, ok := layout.Index(from.Port()); !ok {
			t.Fatalf("request came from port %d, outside every session block", from.Port())
		}
		eventually(t, 10*time.Second, "the session record reaches the control server", func() error {
			got, err := db.SessionsByExit(ctx, from.Addr(), from.Port(), at)
			if err != nil {
				return err
			}
			if len(got) != 1 {
				return fmt.Errorf("%d sessions hold %v at that time, want 1", len(got), from)
			}
			session = got[0]
			return nil
		})
		if session.DeviceID != alice.Device.ID || session.User != "alice" || session.Gateway != "in1" ||
			session.PublicKey != alice.Device.PublicKey || session.TunnelIPv4 != alice.Device.IPv4 || session.TunnelIPv6 != alice.Device.IPv6 ||
			session.ExitIPv4 != loopback4 || session.Endpoint.IsValid() || session.Seq == 0 || session.EndpointIndex == "" ||
			from.Port() < session.PortLo || from.Port() > session.PortHi || session.PortHi-session.PortLo+1 != layout.Size ||
			!session.End.IsZero() || session.Start.After(at) {
			t.Fatalf("stored session %+v for a request from %v at %v", session, from, at)
		}
		// Other lookups find the same session.
		byTunnel, err := db.SessionsByTunnelAddr(ctx, alice.Device.IPv4, at)
		if err != nil || len(byTunnel) != 1 || byTunnel[0].ID != session.ID {
			t.Fatalf("by tunnel address: %+v %v", byTunnel, err)
		}
		byUser, err := db.SessionsOfUser(ctx, "alice", at.Add(-time.Minute), at)
		if err != nil || len(byUser) != 1 || byUser[0].ID != session.ID {
			t.Fatalf("by user: %+v %v", byUser, err)
		}
		// The lawful lookup through the API: compliance role, a case
		// reference, a time with its zone; exactly that device comes back.
		tok, err := ctl.srv.CreateToken(ctx, "officer", api.RoleCompliance)
		if err != nil {
			t.Fatal(err)
		}
		officer, _ := api.NewClient(ctl.url(), tok, "")
		path := fmt.Sprintf("/compliance/lookup?case=CERT-IN/2026/7&exit_ip=%s&port=%d&at=%s", from.Addr(), from.Port(), url.QueryEscape(at.Format(time.RFC3339Nano)))
		var res api.LookupResult
		if err := officer.Do(ctx, "GET", path, nil, &res); err != nil {
			t.Fatal(err)
		}
		// The endpoint is not in the table: the answer has it from the ledger.
		if len(res.Sessions) != 1 || res.Sessions[0].DeviceID != alice.Device.ID || res.Sessions[0].User != "alice" || res.Case != "CERT-IN/2026/7" ||
			res.Sessions[0].Endpoint.Addr() != loopback4 || res.Sessions[0].Endpoint.Port() == 0 {
			t.Fatalf("lookup: %+v", res)
		}
		var se *api.StatusError
		if err := admin.Do(ctx, "GET", path, nil, nil); !errors.As(err, &se) || se.Code != 403 {
			t.Fatalf("an admin token looked up sessions: %v", err)
		}
		noCase := strings.Replace(path, "case=CERT-IN/2026/7&", "", 1)
		if err := officer.Do(ctx, "GET", noCase, nil, nil); !errors.As(err, &se) || se.Code != 400 {
			t.Fatalf("a lookup without a case reference: %v", err)
		}
		noZone := fmt.Sprintf("/compliance/lookup?case=C&exit_ip=%s&port=%d&at=2026-05-01T10:00:00", from.Addr(), from.Port())
		if err := officer.Do(ctx, "GET", noZone, nil, nil); !errors.As(err, &se) || se.Code != 400 || !strings.Contains(se.Message, "no time zone") {
			t.Fatalf("a time without zone: %v", err)
		}
		badPort := fmt.Sprintf("/compliance/lookup?case=C&exit_ip=%s&port=70000&at=%s", from.Addr(), url.QueryEscape(at.Format(time.RFC3339)))
		if err := officer.Do(ctx, "GET", badPort, nil, nil); !errors.As(err, &se) || se.Code != 400 || !strings.Contains(se.Message, "port") {
			t.Fatalf("port out of range: %v", err)
		}
		var reads int
		db.QueryRow(`SELECT count(*) FROM ledger_entries WHERE chain = 'access'`).Scan(&reads)
		if reads != 1 {
			t.Fatalf("the access chain holds %d reads after one lookup, want 1", reads)
		}
		// A second request keeps to the block.
		if again := fetchSource(t, tun, web); again.Port() < session.PortLo || again.Port() > session.PortHi {
			t.Fatalf("second request from port %d, outside the session's block %d-%d", again.Port(), session.PortLo, session.PortHi)
		}
	})

	t.Run("no duty, no data: a gateway in Germany", func(t *testing.T) {
		deConf, err := admin.DeviceConfig(ctx, alice.Device.ID, "DE")
		if err != nil {
			t.Fatal(err)
		}
		tun := connect(t, deConf.Config(alicePriv))
		from := fetchSource(t, tun, web)
		if _, inBlock := layout.Index(from.Port()); inBlock {
			t.Fatalf("DE request came from port %d, inside the session blocks", from.Port())
		}
		awaitSessionRound(t, de1) // a session record would be in its spool or the database now
		noRows(t, db, "de1")
		noSessionFiles(t, filepath.Join(dir, "de1"))
	})

	t.Run("no duty for enterprise tenants", func(t *testing.T) {
		staff, staffPriv := newDevice(t, admin, "acme-staff", "pc", "IN")
		tun := connect(t, staff.Config(staffPriv))
		from := fetchSource(t, tun, web)
		if _, inBlock := layout.Index(from.Port()); inBlock {
			t.Fatalf("enterprise request came from port %d, inside the session blocks", from.Port())
		}
		awaitSessionRound(t, in1)
		noSessionFilesOf(t, filepath.Join(dir, "in1"), staff.Device.PublicKey)
		got, err := db.SessionsOfUser(ctx, "acme-staff", time.Now().Add(-time.Hour), time.Now())
		if err != nil || len(got) != 0 {
			t.Fatalf("sessions of an enterprise tenant: %+v %v", got, err)
		}
	})

	t.Run("revoking the device closes its session", func(t *testing.T) {
		if _, err := admin.RevokeDevice(ctx, alice.Device.ID); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "the session closes", func() error {
			got, err := db.SessionsOfUser(ctx, "alice", session.Start, time.Now())
			if err != nil {
				return err
			}
			for _, s := range got {
				if s.ID == session.ID && !s.End.IsZero() {
					return nil
				}
			}
			return fmt.Errorf("session still open: %+v", got)
		})
		if got, _ := db.SessionsByExit(ctx, loopback4, session.PortLo, time.Now()); len(got) != 0 {
			t.Fatalf("the closed session's block still leads to a session: %+v", got)
		}
	})
}

// noRows fails if the control server stored a session of gateway gw.
func noRows(t *testing.T, db *store.DB, gw string) {
	t.Helper()
	var n int
	if err := db.SessionIndex().QueryRow(`SELECT count(*) FROM sessions WHERE gateway = ?`, gw).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("%d session rows of %s, a gateway without the duty", n, gw)
	}
}

// awaitSessionRound returns once gw's session loop has run a whole round
// that began after the call: a session it would record is then in its
// spool or, delivered, in the control server's database.
func awaitSessionRound(t *testing.T, gw *gateway.Gateway) {
	t.Helper()
	rounds := func() int {
		rec := httptest.NewRecorder()
		gw.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		for _, line := range strings.Split(rec.Body.String(), "\n") {
			if v, ok := strings.CutPrefix(line, "meridian_gateway_session_rounds_total "); ok {
				n, err := strconv.ParseFloat(v, 64)
				if err != nil {
					t.Fatalf("metric line %q", line)
				}
				return int(n)
			}
		}
		t.Fatal("the gateway has no meridian_gateway_session_rounds_total metric")
		return 0
	}
	want := rounds() + 2 // the next round starts after now; it has ended when the one after starts
	eventually(t, 10*time.Second, "the gateway's session loop runs a round", func() error {
		if n := rounds(); n < want {
			return fmt.Errorf("%d rounds, want %d", n, want)
		}
		return nil
	})
}

// noSessionFilesOf fails if a gateway's session files hold a record of the
// device with key pub.
func noSessionFilesOf(t *testing.T, dir string, pub wg.Key) {
	t.Helper()
	for _, f := range []string{"sessions.spool", "sessions-open.json", "sessions.refused"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		if strings.Contains(string(b), pub.String()) {
			t.Errorf("%s holds a record of a device without the duty", f)
		}
	}
}

// noSessionFiles fails if a gateway's state directory holds session data.
func noSessionFiles(t *testing.T, dir string) {
	t.Helper()
	for _, f := range []string{"sessions.spool", "sessions.spool.head", "sessions-open.json"} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err == nil && fi.Size() > 0 {
			t.Errorf("%s holds %d bytes on a gateway without the duty", f, fi.Size())
		} else if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Error(err)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "netmap.json"))
	if err == nil && strings.Contains(string(b), `"record"`) {
		t.Errorf("the netmap of a gateway without the duty marks peers for records:\n%s", b)
	}
}

func TestSessionRecordsSpooledWhileControlIsAway(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	web := sourceServer(t)
	ctl := startControlWith(t, filepath.Join(dir, "control"), "127.0.0.1:0", time.Second)
	admin := ctl.admin(t)
	gw := startExitGateway(t, ctl, admin, dir, "in1")
	dev, priv := aliceInIndia(t, admin, gw)

	ctl.stop()
	eventually(t, 10*time.Second, "the gateway notices the outage", func() error {
		if gw.Connected() {
			return errors.New("still connected")
		}
		return nil
	})
	tun := connect(t, dev.Config(priv))
	from := fetchSource(t, tun, web)
	at := time.Now()
	spool := filepath.Join(dir, "in1", "sessions.spool")
	eventually(t, 5*time.Second, "the record is spooled", func() error {
		fi, err := os.Stat(spool)
		if err != nil || fi.Size() == 0 {
			return fmt.Errorf("spool: %v", err)
		}
		return nil
	})

	ctl2 := startControlWith(t, filepath.Join(dir, "control"), ctl.addr, time.Second)
	db := openStore(t, ctl2)
	eventually(t, 15*time.Second, "the spooled record arrives", func() error {
		got, err := db.SessionsByExit(ctx, from.Addr(), from.Port(), at)
		if err != nil {
			return err
		}
		if len(got) != 1 || got[0].DeviceID != dev.Device.ID {
			return fmt.Errorf("sessions %+v", got)
		}
		return nil
	})
	eventually(t, 5*time.Second, "the spool drains", func() error {
		if fi, err := os.Stat(spool); err != nil || fi.Size() != 0 {
			return fmt.Errorf("spool still holds records (%v)", err)
		}
		return nil
	})
}
