package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/control"
	"github.com/meridian-vpn/meridian/gateway"
	"github.com/meridian-vpn/meridian/internal/slowbody"
)

// A slow-body flood against the control API, from a dozen loopback
// sources, while a gateway follows the control server: /health answers, a
// device added during the flood gets a working tunnel, an existing tunnel
// keeps working, and the flood's connections are cut off.
func TestSlowBodyFloodKeepsTunnel(t *testing.T) {
	const sources, perSource, attempts = 12, 100, 120
	ctx, cancel := context.WithCancel(context.Background())
	dir := t.TempDir()
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "hello") }))
	defer web.Close()

	srv, err := control.New(ctx, control.Config{
		DataDir:  filepath.Join(dir, "control"),
		IPv4Pool: netip.MustParsePrefix("10.200.0.0/24"), IPv6Pool: netip.MustParsePrefix("2001:db8:200::/64"),
		Logger: testLogger(t),
		Limits: control.Limits{MaxConns: sources*perSource + 100, MaxConnsPerSource: perSource, BodyTimeout: 3 * time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l, nil) }()
	defer func() { cancel(); <-done; srv.Close() }()
	url := control.URLFor(l)
	tok, err := srv.CreateAdminToken(ctx, "ops")
	if err != nil {
		t.Fatal(err)
	}
	admin, err := api.NewClient(url, tok, "")
	if err != nil {
		t.Fatal(err)
	}
	join, err := admin.CreateJoinToken(ctx, api.JoinTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.Start(ctx, gateway.Config{
		Control: url, JoinToken: join.Token, StateDir: filepath.Join(dir, "gateway"), Name: "gw1",
		ListenPort: freeUDPPort(t), EgressAllow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
		ReportInterval: 200 * time.Millisecond, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	if _, err := admin.CreateUser(ctx, api.CreateUserRequest{Name: "alice"}); err != nil {
		t.Fatal(err)
	}
	_, cfg1 := addDevice(t, admin, "alice", "laptop")
	tun1 := connect(t, cfg1)
	eventually(t, 10*time.Second, "tunnel before the flood", func() error { _, err := httpGet(tun1, web.URL); return err })

	var flood []*slowbody.Conn
	defer func() {
		for _, c := range flood {
			c.Close()
		}
	}()
	for i := 0; i < sources; i++ {
		for j := 0; j < attempts; j++ {
			c, err := slowbody.Open(fmt.Sprintf("127.0.0.%d", 2+i), l.Addr().String(), "/api/v1/gateways/join", 250*time.Millisecond, 30*time.Second)
			if err != nil {
				continue // refused by a cap before the headers went out
			}
			flood = append(flood, c)
		}
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	resp, err := hc.Get(url + "/api/v1/health")
	if err != nil {
		t.Fatalf("/health during the flood: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/health during the flood: %s", resp.Status)
	}
	_, cfg2 := addDevice(t, admin, "alice", "phone")
	tun2 := connect(t, cfg2)
	eventually(t, 15*time.Second, "a tunnel added during the flood", func() error { _, err := httpGet(tun2, web.URL); return err })
	if _, err := httpGet(tun1, web.URL); err != nil {
		t.Fatalf("existing tunnel during the flood: %v", err)
	}

	timeout := time.After(20 * time.Second)
	for i, c := range flood {
		select {
		case <-c.Closed():
		case <-timeout:
			t.Fatalf("%d of %d slow connections still open after 20 s", len(flood)-i, len(flood))
		}
	}
}
