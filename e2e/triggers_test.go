package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/client"
	"github.com/meridian-vpn/meridian/portblock"
)

// A gateway in Singapore serves a virtual India location and a Singapore
// one. Under placement only nothing is recorded. After the market reading
// is accepted for India (previewed, then confirmed) a consumer without a
// subscriber record loses India and keeps Singapore; a consumer with one
// has her session on India recorded with a port block and attributed by
// lookup, and her session on Singapore, through the same gateway, is not
// recorded.
func TestMarketReadingOnVirtualLocation(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	web := sourceServer(t)
	ctl := startControlWith(t, filepath.Join(dir, "control"), "127.0.0.1:0", time.Second)
	admin := ctl.admin(t)
	if _, err := admin.CreateUser(ctx, api.CreateUserRequest{Name: "ravi"}); err != nil {
		t.Fatal(err)
	}
	startExitGateway(t, ctl, admin, dir, "sg1")
	if _, err := admin.SetPlace(ctx, "sg1", place("SG")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"IN", "SG"} {
		if _, err := admin.CreateLocation(ctx, api.Location{Code: c, Country: c, Gateways: []string{"sg1"}}); err != nil {
			t.Fatal(err)
		}
	}
	db := openStore(t, ctl)
	layout := portblock.Default
	eventually(t, 10*time.Second, "sg1 reports healthy", func() error {
		sl, err := admin.ServerList(ctx)
		if err != nil {
			return err
		}
		for _, l := range sl.Locations {
			if len(l.Servers) != 1 || !l.Servers[0].Healthy {
				return fmt.Errorf("location %s: %+v", l.Code, l.Servers)
			}
		}
		return nil
	})

	ravi, raviPriv := newDevice(t, admin, "ravi", "phone", "IN")
	t.Run("placement only: nothing recorded", func(t *testing.T) {
		tun := connect(t, ravi.Config(raviPriv))
		from := fetchSource(t, tun, web)
		if _, inBlock := layout.Index(from.Port()); inBlock {
			t.Fatalf("request came from port %d, inside the session blocks", from.Port())
		}
		time.Sleep(time.Second) // several session intervals and reports
		noRows(t, db, "sg1")
		noSessionFiles(t, filepath.Join(dir, "sg1"))
		tun.Close()
	})

	change := api.Jurisdiction{Country: "IN", Profile: "cert-in-2022", Stance: "virtual-only", Triggers: []string{"placement", "market"}}
	t.Run("preview, then confirm", func(t *testing.T) {
		p, err := admin.PreviewJurisdiction(ctx, change)
		if err != nil || p.NewlyNeedRecords != 1 || !slices.Equal(p.Stopped, []string{"IN"}) || !slices.Contains(p.Recorded, "gateway sg1, location IN, consumer") {
			t.Fatalf("preview: %+v %v", p, err)
		}
		wantAPIError(t, func() error { _, err := admin.SetJurisdiction(ctx, change); return err }(), http.StatusConflict, "confirm")
		change.Confirm = true
		if _, err := admin.SetJurisdiction(ctx, change); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("without a record: India lost, Singapore kept", func(t *testing.T) {
		_, err := admin.DeviceConfig(ctx, ravi.Device.ID, "IN")
		wantAPIError(t, err, http.StatusConflict, "location IN needs a subscriber record")
		eventually(t, 10*time.Second, "ravi's India config stops working", func() error {
			tun, err := client.Start(ravi.Config(raviPriv), client.Options{Logger: testLogger(t)})
			if err != nil {
				return err
			}
			defer tun.Close()
			if _, err := httpGet(tun, web.URL); err == nil {
				return fmt.Errorf("ravi still reaches the web through India")
			}
			return nil
		})
		sg, err := admin.DeviceConfig(ctx, ravi.Device.ID, "SG")
		if err != nil {
			t.Fatal(err)
		}
		tun := connect(t, sg.Config(raviPriv))
		from := fetchSource(t, tun, web)
		if _, inBlock := layout.Index(from.Port()); inBlock {
			t.Fatalf("Singapore request came from port %d, inside the session blocks", from.Port())
		}
		tun.Close()
	})

	if _, err := admin.CreateUser(ctx, api.CreateUserRequest{Name: "asha", Subscriber: &api.SubscriberDetails{Name: "Asha Verma", Email: "asha@example.in",
		Purpose: "personal privacy", Address: "12 MG Road, Bengaluru 560001", Phones: []string{"+91 80 5550 0100"}, Ownership: api.Individual}}); err != nil {
		t.Fatal(err)
	}
	t.Run("with a record: India recorded, attributed by lookup", func(t *testing.T) {
		asha, ashaPriv := newDevice(t, admin, "asha", "laptop", "IN")
		tun := connect(t, asha.Config(ashaPriv))
		from := fetchSource(t, tun, web)
		at := time.Now()
		if _, ok := layout.Index(from.Port()); !ok || from.Addr() != loopback4 {
			t.Fatalf("India request came from %v, outside every session block", from)
		}
		tok, err := ctl.srv.CreateToken(ctx, "officer", api.RoleCompliance)
		if err != nil {
			t.Fatal(err)
		}
		officer, _ := api.NewClient(ctl.url(), tok, "")
		path := fmt.Sprintf("/compliance/lookup?case=CERT-IN/2026/9&exit_ip=%s&port=%d&at=%s", from.Addr(), from.Port(), url.QueryEscape(at.Format(time.RFC3339Nano)))
		eventually(t, 10*time.Second, "the lookup finds asha's India session", func() error {
			var res api.LookupResult
			if err := officer.Do(ctx, "GET", path, nil, &res); err != nil {
				return err
			}
			if len(res.Sessions) != 1 || res.Sessions[0].DeviceID != asha.Device.ID || res.Sessions[0].User != "asha" {
				return fmt.Errorf("lookup: %+v", res.Sessions)
			}
			return nil
		})
		tun.Close()
	})

	t.Run("same gateway, Singapore location: not recorded", func(t *testing.T) {
		asg, asgPriv := newDevice(t, admin, "asha", "tablet", "SG")
		tun := connect(t, asg.Config(asgPriv))
		from := fetchSource(t, tun, web)
		if _, inBlock := layout.Index(from.Port()); inBlock {
			t.Fatalf("Singapore request came from port %d, inside the session blocks", from.Port())
		}
		time.Sleep(time.Second)
		// The scan: no stored session of a device on Singapore, nor of ravi.
		var n int
		if err := db.SessionIndex().QueryRow(`SELECT count(*) FROM sessions WHERE device_id IN (?, ?)`, asg.Device.ID, ravi.Device.ID).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Fatalf("%d session rows of devices on Singapore, which no reading covers", n)
		}
		if err := db.SessionIndex().QueryRow(`SELECT count(*) FROM sessions WHERE gateway = 'sg1'`).Scan(&n); err != nil || n != 1 {
			t.Fatalf("%d session rows on sg1 (%v), want asha's India session only", n, err)
		}
	})
}
