package gateway

import (
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"testing"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/wg"
)

// TestInstallReportsEndedAddresses: the tunnel addresses whose flows the
// data plane must end are those of removed peers (explicitly, or missing
// from a full netmap) and those a changed peer no longer holds; nothing else.
func TestInstallReportsEndedAddresses(t *testing.T) {
	tt := newTrackerTest(t, sessionConfig{})
	dev := device.NewDevice(tuntest.NewChannelTUN().TUN(), conn.NewDefaultBind(), device.NewLogger(device.LogLevelSilent, ""))
	defer dev.Close()
	g := &Gateway{dev: dev, sessions: tt.tr, installed: map[wg.Key]api.Peer{}, dirty: make(chan struct{}, 1),
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	a, b, c := recordedPeer(t, 2), recordedPeer(t, 3), recordedPeer(t, 4)
	a.Record, b.Record, c.Record = false, false, false
	step := func(nm api.Netmap, want ...netip.Addr) {
		t.Helper()
		got, err := g.install(nm)
		if err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(got, netip.Addr.Compare)
		slices.SortFunc(want, netip.Addr.Compare)
		if !slices.Equal(got, want) {
			t.Fatalf("netmap %d: ended %v, want %v", nm.Version, got, want)
		}
	}
	step(api.Netmap{Version: 1, Full: true, Peers: []api.Peer{a, b, c}})
	// a loses its IPv6 address; b is unchanged.
	a2 := a
	a2.AllowedIPs = a.AllowedIPs[:1]
	step(api.Netmap{Version: 2, Peers: []api.Peer{a2, b}}, tunnelAddr(a, 1))
	// b is removed.
	step(api.Netmap{Version: 3, Peers: []api.Peer{{PublicKey: b.PublicKey, Remove: true}}}, tunnelAddr(b, 0), tunnelAddr(b, 1))
	// Removing b again ends nothing.
	step(api.Netmap{Version: 4, Peers: []api.Peer{{PublicKey: b.PublicKey, Remove: true}}})
	// A full netmap without c removes it.
	step(api.Netmap{Version: 5, Full: true, Peers: []api.Peer{a2}}, tunnelAddr(c, 0), tunnelAddr(c, 1))
	if len(g.installed) != 1 {
		t.Fatalf("installed %d peers, want 1", len(g.installed))
	}
}
