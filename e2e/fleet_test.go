package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/client"
	"github.com/meridian-vpn/meridian/gateway"
	"github.com/meridian-vpn/meridian/wg"
)

func wantAPIError(t *testing.T, err error, code int, want string) {
	t.Helper()
	var se *api.StatusError
	if !errors.As(err, &se) || se.Code != code || !strings.Contains(se.Message, want) {
		t.Fatalf("got %v, want HTTP %d containing %q", err, code, want)
	}
}

func startGateway(t *testing.T, ctl *controlNode, admin *api.Client, dir, name string) *gateway.Gateway {
	t.Helper()
	tok, err := admin.CreateJoinToken(context.Background(), api.JoinTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.Start(context.Background(), gateway.Config{
		Control: ctl.url(), JoinToken: tok.Token, StateDir: filepath.Join(dir, name), Name: name,
		ListenPort: freeUDPPort(t), EgressAllow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
		ReportInterval: 100 * time.Millisecond, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	return gw
}

func place(country string) api.Place {
	return api.Place{PhysicalCountry: country, Ownership: api.Rented, Provider: "test", Capacity: 100}
}

func TestFleetLocationsAndJurisdictions(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }))
	defer web.Close()
	ctl := startControlWith(t, filepath.Join(dir, "control"), "127.0.0.1:0", time.Second)
	admin := ctl.admin(t)

	sg := startGateway(t, ctl, admin, dir, "sg1")
	defer sg.Close()
	de := startGateway(t, ctl, admin, dir, "de1")
	defer de.Close()
	in := startGateway(t, ctl, admin, dir, "in1")
	defer in.Close()

	sgPlace := place("SG")
	sgPlace.AdvertisedCountry = "IN" // its exit addresses geolocate to India
	for name, p := range map[string]api.Place{"sg1": sgPlace, "de1": place("DE")} {
		if _, err := admin.SetPlace(ctx, name, p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := admin.SetJurisdiction(ctx, api.Jurisdiction{Country: "IN", Profile: "cert-in-2022", Stance: "virtual-only"}); err != nil {
		t.Fatal(err)
	}

	t.Run("virtual-only country refuses physical presence", func(t *testing.T) {
		_, err := admin.SetPlace(ctx, "in1", place("IN"))
		wantAPIError(t, err, 409, "virtual-only")
		gws, _ := admin.Gateways(ctx)
		for _, g := range gws {
			if g.Name == "in1" && g.Place != nil {
				t.Fatal("refused place was stored")
			}
		}
	})

	for _, l := range []api.Location{
		{Code: "IN", Country: "IN", Gateways: []string{"sg1"}},
		{Code: "SG", Country: "SG", Gateways: []string{"sg1"}},
		{Code: "DE", Country: "DE", Gateways: []string{"de1"}},
	} {
		if _, err := admin.CreateLocation(ctx, l); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("server list is honest about virtual locations", func(t *testing.T) {
		sl, err := admin.ServerList(ctx)
		if err != nil {
			t.Fatal(err)
		}
		byCode := map[string]api.ServerLocation{}
		for _, l := range sl.Locations {
			byCode[l.Code] = l
		}
		in := byCode["IN"]
		if !in.Virtual || !slices.Equal(in.HostCountries, []string{"SG"}) || in.Label != "India — virtual, served from Singapore" {
			t.Fatalf("IN location: %+v", in)
		}
		if byCode["SG"].Virtual || byCode["DE"].Virtual || byCode["DE"].Label != "Germany" {
			t.Fatalf("physical locations marked virtual: %+v %+v", byCode["SG"], byCode["DE"])
		}
	})

	admin.CreateUser(ctx, api.CreateUserRequest{Name: "alice"})
	priv, _ := wg.NewPrivateKey()
	pub := priv.Public()
	created, err := admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "alice", Name: "laptop", PublicKey: &pub, Location: "IN"})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("device roams between IN (virtual) and DE with one key", func(t *testing.T) {
		if created.Tunnel.Gateway != "sg1" || created.Tunnel.Location != "IN" {
			t.Fatalf("IN device points at %q (%q), want sg1 (IN)", created.Tunnel.Gateway, created.Tunnel.Location)
		}
		tunIN := connect(t, created.Config(priv))
		eventually(t, 10*time.Second, "traffic via IN (virtual)", func() error { _, err := httpGet(tunIN, web.URL); return err })
		tunIN.Close()

		deConf, err := admin.DeviceConfig(ctx, created.Device.ID, "DE")
		if err != nil {
			t.Fatal(err)
		}
		if deConf.Tunnel.Gateway != "de1" || deConf.Device.IPv4 != created.Device.IPv4 || deConf.Device.PublicKey != pub {
			t.Fatalf("DE config: %+v", deConf)
		}
		tunDE := connect(t, deConf.Config(priv))
		eventually(t, 10*time.Second, "traffic via DE", func() error { _, err := httpGet(tunDE, web.URL); return err })
	})

	t.Run("removing a location in use is refused", func(t *testing.T) {
		wantAPIError(t, admin.RemoveLocation(ctx, "DE"), 409, "used by 1 device")
		ls, _ := admin.Locations(ctx)
		if len(ls) != 3 {
			t.Fatalf("locations after refused removal: %d", len(ls))
		}
	})

	t.Run("duties follow the physical country", func(t *testing.T) {
		if _, err := admin.SetJurisdiction(ctx, api.Jurisdiction{Country: "IN", Profile: "cert-in-2022", Stance: "comply"}); err != nil {
			t.Fatal(err)
		}
		if _, err := admin.SetPlace(ctx, "in1", place("IN")); err != nil {
			t.Fatalf("IN place under comply: %v", err)
		}
		admin.CreateUser(ctx, api.CreateUserRequest{Name: "acme-staff", Kind: api.Enterprise})
		kinds := func(gw, user string) []string {
			ex, err := admin.Explain(ctx, gw, user)
			if err != nil {
				t.Fatal(err)
			}
			var k []string
			for _, d := range ex.Duties {
				k = append(k, d.Kind)
				if !strings.HasPrefix(d.Why, ex.PhysicalCountry+" / ") {
					t.Errorf("duty %s cites %q", d.Kind, d.Why)
				}
			}
			return k
		}
		consumer := kinds("in1", "alice")
		for _, want := range []string{"subscriber-records", "session-records", "ict-logs", "clock-sync", "incident-reporting"} {
			if !slices.Contains(consumer, want) {
				t.Errorf("consumer on IN lacks %s: %v", want, consumer)
			}
		}
		enterprise := kinds("in1", "acme-staff")
		if slices.Contains(enterprise, "subscriber-records") || !slices.Contains(enterprise, "ict-logs") {
			t.Errorf("enterprise on IN: %v", enterprise)
		}
		if d := kinds("de1", "alice"); len(d) != 0 {
			t.Errorf("consumer on DE has duties: %v", d)
		}
		// A virtual IN location served from SG brings no Indian duties.
		if d := kinds("sg1", "alice"); len(d) != 0 {
			t.Errorf("consumer on SG (serving virtual IN) has duties: %v", d)
		}
	})

	t.Run("virtual-only takes a standing gateway out of service", func(t *testing.T) {
		eventually(t, 5*time.Second, "in1 holds the device", func() error {
			if in.Peers() != 1 {
				return fmt.Errorf("in1 holds %d peers", in.Peers())
			}
			return nil
		})
		j, err := admin.SetJurisdiction(ctx, api.Jurisdiction{Country: "IN", Stance: "virtual-only"})
		if err != nil || !slices.Equal(j.OutOfService, []string{"in1"}) {
			t.Fatalf("stance change: %+v %v", j, err)
		}
		eventually(t, 5*time.Second, "in1 emptied", func() error {
			if in.Peers() != 0 {
				return fmt.Errorf("in1 still holds %d peers", in.Peers())
			}
			return nil
		})
		if sg.Peers() != 1 || de.Peers() != 1 {
			t.Fatalf("other gateways lost peers: sg %d de %d", sg.Peers(), de.Peers())
		}
		// Back to comply: in1 returns to service and gets its peers back.
		if _, err := admin.SetJurisdiction(ctx, api.Jurisdiction{Country: "IN", Stance: "comply"}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, "in1 back in service", func() error {
			if in.Peers() != 1 {
				return fmt.Errorf("in1 holds %d peers", in.Peers())
			}
			return nil
		})
	})

	t.Run("contradictory stance change is refused whole", func(t *testing.T) {
		if _, err := admin.CreateLocation(ctx, api.Location{Code: "IN-PHYS", Country: "IN", Gateways: []string{"in1"}}); err != nil {
			t.Fatal(err)
		}
		_, err := admin.SetJurisdiction(ctx, api.Jurisdiction{Country: "IN", Stance: "virtual-only"})
		wantAPIError(t, err, 409, "IN-PHYS")
		js, _ := admin.Jurisdictions(ctx)
		for _, j := range js {
			if j.Country == "IN" && j.Stance != "comply" {
				t.Fatalf("refused stance change was stored: %+v", j)
			}
		}
		if err := admin.RemoveLocation(ctx, "IN-PHYS"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		_, err := admin.SetPlace(ctx, "de1", place("XX"))
		wantAPIError(t, err, 400, `unknown country code "XX"`)
		_, err = admin.SetJurisdiction(ctx, api.Jurisdiction{Country: "ZZ", Stance: "comply"})
		wantAPIError(t, err, 400, "ZZ")
		_, err = admin.SetJurisdiction(ctx, api.Jurisdiction{Country: "DE", Stance: "maybe"})
		wantAPIError(t, err, 400, "stance")
		_, err = admin.SetJurisdiction(ctx, api.Jurisdiction{Country: "DE", Profile: "gdpr-max"})
		wantAPIError(t, err, 400, "unknown duty profile")
		_, err = admin.CreateLocation(ctx, api.Location{Code: "FR", Country: "FR"})
		wantAPIError(t, err, 400, "at least one gateway")
		_, err = admin.CreateLocation(ctx, api.Location{Code: "FR", Country: "QQ", Gateways: []string{"de1"}})
		wantAPIError(t, err, 400, "QQ")
		_, err = admin.CreateLocation(ctx, api.Location{Code: "FR", Country: "FR", Gateways: []string{"nope"}})
		wantAPIError(t, err, 400, `no gateway named "nope"`)
		_, err = admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "alice", Name: "x", PublicKey: newPub(t), Location: "MARS"})
		wantAPIError(t, err, 409, `no location "MARS"`)
		ls, _ := admin.Locations(ctx)
		if len(ls) != 3 {
			t.Fatalf("bad input changed locations: %d", len(ls))
		}
		devs, _ := admin.Devices(ctx, "alice")
		if len(devs) != 1 {
			t.Fatalf("bad input left devices: %d", len(devs))
		}
	})

	t.Run("setting a place is audited", func(t *testing.T) {
		var entries []map[string]any
		if err := admin.Do(ctx, "GET", "/audit", nil, &entries); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range entries {
			if e["action"] == "set-place" && strings.HasPrefix(e["actor"].(string), "admin:") {
				n++
			}
		}
		if n != 3 { // sg1, de1, in1
			t.Fatalf("audited set-place actions: %d, want 3", n)
		}
	})

	t.Run("silent gateway leaves the choice; ETag follows loads", func(t *testing.T) {
		etag := func() string {
			resp, err := http.Get(ctl.url() + api.Prefix + "/serverlist/loads")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.Header.Get("ETag")
		}
		e1 := etag()
		if e1 == "" || etag() != e1 {
			t.Fatal("ETag missing or unstable while nothing changes")
		}
		req, _ := http.NewRequest("GET", ctl.url()+api.Prefix+"/serverlist/loads", nil)
		req.Header.Set("If-None-Match", e1)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusNotModified {
			t.Fatalf("If-None-Match: %v %v", resp.StatusCode, err)
		}
		resp.Body.Close()

		de.Close() // stops heartbeating
		eventually(t, 5*time.Second, "de1 left out", func() error {
			_, err := admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "alice", Name: "probe", PublicKey: newPub(t), Location: "DE"})
			if err == nil {
				return errors.New("DE still chosen")
			}
			var se *api.StatusError
			if !errors.As(err, &se) || !strings.Contains(se.Message, "no healthy gateway") {
				return err
			}
			return nil
		})
		auto, err := admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "alice", Name: "auto", PublicKey: newPub(t), Location: "auto"})
		if err != nil || auto.Tunnel.Gateway == "de1" || auto.Tunnel.Gateway == "" {
			t.Fatalf("auto chose %q: %v", auto.Tunnel.Gateway, err)
		}
		if etag() == e1 {
			t.Fatal("ETag did not change when a server went down")
		}
	})
}

func newPub(t *testing.T) *wg.Key {
	k, err := wg.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	p := k.Public()
	return &p
}

func TestConnectFailsOverWithinLocation(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }))
	defer web.Close()
	ctl := startControlWith(t, filepath.Join(dir, "control"), "127.0.0.1:0", time.Second)
	admin := ctl.admin(t)
	gws := map[string]*gateway.Gateway{}
	for _, name := range []string{"de1", "de2"} {
		gws[name] = startGateway(t, ctl, admin, dir, name)
		defer gws[name].Close()
		if _, err := admin.SetPlace(ctx, name, place("DE")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := admin.CreateLocation(ctx, api.Location{Code: "DE", Country: "DE", Gateways: []string{"de1", "de2"}}); err != nil {
		t.Fatal(err)
	}
	admin.CreateUser(ctx, api.CreateUserRequest{Name: "bob"})
	priv, _ := wg.NewPrivateKey()
	pub := priv.Public()
	eventually(t, 5*time.Second, "gateways healthy", func() error {
		_, err := admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "bob", Name: "laptop", PublicKey: &pub, Location: "DE"})
		return err
	})
	devs, _ := admin.Devices(ctx, "bob")
	conf, err := admin.DeviceConfig(ctx, devs[0].ID, "DE")
	if err != nil {
		t.Fatal(err)
	}
	first := conf.Tunnel.Gateway
	tun := connect(t, conf.Config(priv))
	eventually(t, 10*time.Second, "traffic via "+first, func() error { _, err := httpGet(tun, web.URL); return err })

	servers, err := api.NewClient(ctl.url(), "", "") // the server list needs no token
	if err != nil {
		t.Fatal(err)
	}
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go (&client.Failover{Tunnel: tun, Servers: servers, Location: "DE", Interval: 200 * time.Millisecond, Logger: testLogger(t)}).Run(fctx)

	gws[first].Close() // the gateway dies: no more heartbeats, no more tunnels
	other := map[string]string{"de1": "de2", "de2": "de1"}[first]
	eventually(t, 15*time.Second, "traffic after failover", func() error {
		if tun.Gateway() != gws[other].PublicKey() {
			return fmt.Errorf("still on %s", first)
		}
		_, err := httpGet(tun, web.URL)
		return err
	})
}
