package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/control"
	"github.com/meridian-vpn/meridian/gateway"
)

// TestGatewayStopDeliversSessionEnds: a gateway stopped normally (as on
// SIGTERM) while the control server is up closes its sessions and has
// delivered their ends when Close returns: a lookup right after finds the
// session ended, as reported by the gateway. (Before, the ends waited in
// the spool for a next start that might never come.)
func TestGatewayStopDeliversSessionEnds(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	web := sourceServer(t)
	ctl := startControlWith(t, filepath.Join(dir, "control"), "127.0.0.1:0", time.Second)
	admin := ctl.admin(t)
	gw := startExitGateway(t, ctl, admin, dir, "in1")
	dev, priv := aliceInIndia(t, admin, gw)
	tun := connect(t, dev.Config(priv))
	from := fetchSource(t, tun, web)
	at := time.Now()
	db := openStore(t, ctl)
	eventually(t, 10*time.Second, "the opening record arrives", func() error {
		got, err := db.SessionsByExit(ctx, from.Addr(), from.Port(), at)
		if err != nil || len(got) != 1 {
			return fmt.Errorf("sessions %+v %v", got, err)
		}
		return nil
	})

	if err := gw.Close(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	// No waiting: the end is delivered before Close returns.
	tok, err := ctl.srv.CreateToken(ctx, "officer", api.RoleCompliance)
	if err != nil {
		t.Fatal(err)
	}
	officer, _ := api.NewClient(ctl.url(), tok, "")
	q := url.Values{"case": {"C-1"}, "exit_ip": {from.Addr().String()}, "port": {fmt.Sprint(from.Port())}, "at": {at.Format(time.RFC3339Nano)}}
	var res api.LookupResult
	if err := officer.Do(ctx, "GET", "/compliance/lookup?"+q.Encode(), nil, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Sessions) != 1 || res.Sessions[0].End.IsZero() || res.Sessions[0].End.After(stopped) || res.Sessions[0].EndSource != api.EndReported {
		t.Fatalf("lookup right after the gateway stopped: %+v", res.Sessions)
	}
}

// stateFiles reads every file under dir.
func stateFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		out[path] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSessionEndpointsSealedOnGatewayDisk: records captured while the
// control server is away wait on the gateway's disk with nothing readable
// of the client's endpoint, in text or binary form; when the server is
// back they arrive with the right endpoint, which a lookup finds.
func TestSessionEndpointsSealedOnGatewayDisk(t *testing.T) {
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
	state := filepath.Join(dir, "in1")
	eventually(t, 5*time.Second, "the record is spooled", func() error {
		fi, err := os.Stat(filepath.Join(state, "sessions.spool"))
		if err != nil || fi.Size() == 0 {
			return fmt.Errorf("spool: %v", err)
		}
		return nil
	})
	onDisk := stateFiles(t, state)

	ctl2 := startControlWith(t, filepath.Join(dir, "control"), ctl.addr, time.Second)
	tok, err := ctl2.srv.CreateToken(ctx, "officer", api.RoleCompliance)
	if err != nil {
		t.Fatal(err)
	}
	officer, _ := api.NewClient(ctl2.url(), tok, "")
	lookup := func(q url.Values) []api.LookupSession {
		t.Helper()
		q.Set("case", "C-3")
		var res api.LookupResult
		if err := officer.Do(ctx, "GET", "/compliance/lookup?"+q.Encode(), nil, &res); err != nil {
			t.Fatal(err)
		}
		return res.Sessions
	}
	var endpoint netip.AddrPort
	eventually(t, 15*time.Second, "the spooled record arrives", func() error {
		got := lookup(url.Values{"exit_ip": {from.Addr().String()}, "port": {fmt.Sprint(from.Port())}, "at": {at.Format(time.RFC3339Nano)}})
		if len(got) != 1 || got[0].DeviceID != dev.Device.ID {
			return fmt.Errorf("sessions %+v", got)
		}
		endpoint = got[0].Endpoint
		return nil
	})
	if endpoint.Addr() != loopback4 || endpoint.Port() == 0 {
		t.Fatalf("endpoint %v, want the client's loopback address and port", endpoint)
	}
	byEndpoint := lookup(url.Values{"endpoint_ip": {endpoint.Addr().String()}, "from": {at.Add(-time.Minute).Format(time.RFC3339)}, "to": {at.Add(time.Minute).Format(time.RFC3339)}})
	if len(byEndpoint) != 1 || byEndpoint[0].Endpoint != endpoint {
		t.Fatalf("lookup by endpoint: %+v", byEndpoint)
	}

	// What the gateway's disk held while the server was away. (The
	// address alone is also the exit address here, in clear by design:
	// the endpoint is looked for with its port.)
	addr := endpoint.Addr().As4()
	port := endpoint.Port()
	needles := map[string][]byte{
		"text":                []byte(endpoint.String()),
		"binary, port big":    append(addr[:], byte(port>>8), byte(port)),
		"binary, port little": append(addr[:], byte(port), byte(port>>8)),
	}
	if b, err := endpoint.MarshalBinary(); err == nil {
		needles["netip binary"] = b
	}
	for file, b := range onDisk {
		for form, needle := range needles {
			if bytes.Contains(b, needle) {
				t.Errorf("%s holds the client's endpoint (%s form)", file, form)
			}
		}
	}
}

// TestPlainSpoolDeliveredAfterUpgrade: a spool written by a gateway from
// before sealing, its endpoint in clear, is delivered after the upgrade.
func TestPlainSpoolDeliveredAfterUpgrade(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ctl := startControlWith(t, filepath.Join(dir, "control"), "127.0.0.1:0", time.Second)
	admin := ctl.admin(t)
	if _, err := admin.CreateUser(ctx, api.CreateUserRequest{Name: "alice"}); err != nil {
		t.Fatal(err)
	}
	gw := startExitGateway(t, ctl, admin, dir, "in1")
	if _, err := admin.SetPlace(ctx, "in1", place("IN")); err != nil {
		t.Fatal(err)
	}
	dev, _ := newDevice(t, admin, "alice", "laptop", "")
	if err := gw.Close(); err != nil {
		t.Fatal(err)
	}
	// As the previous version spooled it: the endpoint in clear.
	start := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	line := fmt.Sprintf(`{"id":"%032x","public_key":"%s","tunnel_ipv4":"%s","endpoint":"198.51.100.7:40000","exit_ipv4":"127.0.0.1","port_lo":1024,"port_hi":1279,"start":"%s"}`+"\n",
		0xabc, dev.Device.PublicKey, dev.Device.IPv4, start.Format(time.RFC3339))
	if err := os.WriteFile(filepath.Join(dir, "in1", "sessions.spool"), []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	startExitGateway(t, ctl, admin, dir, "in1")
	db := openStore(t, ctl)
	eventually(t, 10*time.Second, "the old record arrives", func() error {
		got, err := db.SessionsByExit(ctx, loopback4, 1100, start.Add(time.Minute))
		if err != nil || len(got) != 1 || got[0].DeviceID != dev.Device.ID {
			return fmt.Errorf("sessions %+v %v", got, err)
		}
		return nil
	})
}

// TestSilentGatewaySessionsEndInferred: a gateway that stops without
// delivering the ends of its sessions (here: stopped with no time to
// flush; as well a crash or a lost link) and does not come back has them
// ended by the control server once it has been silent for
// SessionSilence, as of the last time it was heard from, and lookups say
// the end was inferred. When the gateway does come back, its own ends
// arrive and replace the inferred ones.
func TestSilentGatewaySessionsEndInferred(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	web := sourceServer(t)
	const silence = time.Second
	ctl := startControlWith(t, filepath.Join(dir, "control"), "127.0.0.1:0", time.Second, func(c *control.Config) { c.SessionSilence = silence })
	admin := ctl.admin(t)
	tok, err := admin.CreateJoinToken(ctx, api.JoinTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.Start(ctx, gateway.Config{
		Control: ctl.url(), JoinToken: tok.Token, StateDir: filepath.Join(dir, "in1"), Name: "in1",
		ListenPort: freeUDPPort(t), EgressAllow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
		ExitIPv4: loopback4, SessionInterval: 200 * time.Millisecond, ReportInterval: 100 * time.Millisecond,
		StopFlush: -1, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })
	dev, priv := aliceInIndia(t, admin, gw)
	tun := connect(t, dev.Config(priv))
	from := fetchSource(t, tun, web)
	at := time.Now()
	var start time.Time
	tk, err := ctl.srv.CreateToken(ctx, "officer", api.RoleCompliance)
	if err != nil {
		t.Fatal(err)
	}
	officer, _ := api.NewClient(ctl.url(), tk, "")
	lookup := func() (api.LookupSession, error) {
		q := url.Values{"case": {"C-4"}, "exit_ip": {from.Addr().String()}, "port": {fmt.Sprint(from.Port())}, "at": {at.Format(time.RFC3339Nano)}}
		if !start.IsZero() {
			// The inferred end may come before the fetch: the gateway was
			// last heard from (a report, every 100 ms) up to then.
			q.Set("at", start.Format(time.RFC3339Nano))
		}
		var res api.LookupResult
		if err := officer.Do(ctx, "GET", "/compliance/lookup?"+q.Encode(), nil, &res); err != nil {
			return api.LookupSession{}, err
		}
		if len(res.Sessions) != 1 {
			return api.LookupSession{}, fmt.Errorf("%d sessions", len(res.Sessions))
		}
		return res.Sessions[0], nil
	}
	eventually(t, 10*time.Second, "the opening record arrives", func() error {
		got, err := lookup()
		start = got.Start
		return err
	})

	lastHeard := time.Now()
	if err := gw.Close(); err != nil {
		t.Fatal(err)
	}
	gone := time.Now()
	var got api.LookupSession
	eventually(t, 10*silence, "the silent gateway's session ends", func() error {
		got, err = lookup()
		if err == nil && got.End.IsZero() {
			err = errors.New("still open")
		}
		return err
	})
	noticed := time.Now()
	if got.EndSource != api.EndInferred || got.End.Before(lastHeard.Add(-time.Second)) || got.End.After(gone) || noticed.Sub(got.End) < silence {
		t.Fatalf("end %s (%s); the gateway was last heard from at most at %s, gone at %s, noticed %s", got.End, got.EndSource, lastHeard, gone, noticed)
	}

	// It comes back: its own end replaces the inferred one.
	startExitGateway(t, ctl, admin, dir, "in1")
	eventually(t, 10*time.Second, "the gateway's own end arrives", func() error {
		got, err = lookup()
		if err == nil && got.EndSource != api.EndReported {
			err = fmt.Errorf("end %s (%s)", got.End, got.EndSource)
		}
		return err
	})
}
