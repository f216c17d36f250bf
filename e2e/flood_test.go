package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/control"
	"github.com/meridian-vpn/meridian/internal/slowbody"
)

// A slow-body flood against the control API, from a dozen loopback
// sources, while a gateway follows the control server: /health answers, a
// device added during the flood gets a working tunnel, an existing tunnel
// keeps working, and the flood's connections are cut off.
func TestSlowBodyFloodKeepsTunnel(t *testing.T) {
	const sources, perSource, attempts = 12, 100, 120
	ctx := context.Background()
	dir := t.TempDir()
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "hello") }))
	defer web.Close()

	ctl := startControlWith(t, filepath.Join(dir, "control"), "127.0.0.1:0", 0, func(c *control.Config) {
		c.Limits = control.Limits{MaxConns: sources*perSource + 100, MaxConnsPerSource: perSource, BodyTimeout: 3 * time.Second}
	})
	admin := ctl.admin(t)
	startExitGateway(t, ctl, admin, dir, "gw1")
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
			c, err := slowbody.Open(fmt.Sprintf("127.0.0.%d", 2+i), ctl.addr, "/api/v1/gateways/join", 250*time.Millisecond, 30*time.Second)
			if err != nil {
				continue // refused by a cap before the headers went out
			}
			flood = append(flood, c)
		}
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	resp, err := hc.Get(ctl.url() + "/api/v1/health")
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
