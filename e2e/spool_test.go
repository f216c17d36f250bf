package e2e

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
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
	if _, err := admin.CreateUser(ctx, api.CreateUserRequest{Name: "alice"}); err != nil {
		t.Fatal(err)
	}
	gw := startExitGateway(t, ctl, admin, dir, "in1")
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
