package gateway

import (
	"errors"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
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

// uapiDevice is a real wireguard-go device that records each UAPI text set
// on it, and can fail a set as wireguard-go does when a line of it fails
// (too many peers, say): the lines before it are applied, the rest not.
type uapiDevice struct {
	*device.Device
	sets      []string
	failAfter int // <0: sets work; else the next set applies this many lines and fails
}

func (d *uapiDevice) IpcSet(uapi string) error {
	d.sets = append(d.sets, uapi)
	if d.failAfter < 0 {
		return d.Device.IpcSet(uapi)
	}
	lines := strings.SplitAfter(uapi, "\n")
	n := d.failAfter
	d.failAfter = -1
	if err := d.Device.IpcSet(strings.Join(lines[:min(n, len(lines))], "")); err != nil {
		return err
	}
	return errors.New("failed to create new peer: too many peers")
}

// peers is the device's own account of its peers: public key (hex) to
// allowed IPs.
func (d *uapiDevice) peers(t *testing.T) map[string][]string {
	t.Helper()
	out, err := d.Device.IpcGet()
	if err != nil {
		t.Fatal(err)
	}
	m := map[string][]string{}
	var key string
	for line := range strings.Lines(out) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), "=")
		switch k {
		case "public_key":
			key = v
			m[key] = []string{}
		case "allowed_ip":
			m[key] = append(m[key], v)
		}
	}
	return m
}

// wantPeers is what the device must hold for peers ps.
func wantPeers(ps ...api.Peer) map[string][]string {
	m := map[string][]string{}
	for _, p := range ps {
		m[p.PublicKey.Hex()] = []string{}
		for _, a := range p.AllowedIPs {
			m[p.PublicKey.Hex()] = append(m[p.PublicKey.Hex()], a.String())
		}
	}
	return m
}

type applyTest struct {
	t   *testing.T
	g   *Gateway
	dev *uapiDevice
}

func newApplyTest(t *testing.T) *applyTest {
	tt := newTrackerTest(t, sessionConfig{})
	dev := &uapiDevice{Device: device.NewDevice(tuntest.NewChannelTUN().TUN(), conn.NewDefaultBind(), device.NewLogger(device.LogLevelSilent, "")), failAfter: -1}
	t.Cleanup(dev.Close)
	g := &Gateway{dev: dev, sessions: tt.tr, installed: map[wg.Key]api.Peer{}, dirty: make(chan struct{}, 1),
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	return &applyTest{t: t, g: g, dev: dev}
}

// step applies nm and checks the UAPI texts it set (in order; a text's
// peer sections in any order) and that the device then holds want.
func (at *applyTest) step(nm api.Netmap, sets []string, want ...api.Peer) {
	at.t.Helper()
	at.dev.sets = nil
	if err := at.g.apply(nm); err != nil {
		at.t.Fatalf("netmap %d: %v", nm.Version, err)
	}
	if len(at.dev.sets) != len(sets) {
		at.t.Fatalf("netmap %d set %q, want %q", nm.Version, at.dev.sets, sets)
	}
	for i := range sets {
		if got, w := sections(at.dev.sets[i]), sections(sets[i]); !slices.Equal(got, w) {
			at.t.Fatalf("netmap %d set %q, want %q", nm.Version, at.dev.sets[i], sets[i])
		}
	}
	at.holds(want...)
	if at.g.NetmapVersion() != nm.Version {
		at.t.Fatalf("netmap %d applied, version %d", nm.Version, at.g.NetmapVersion())
	}
}

// holds checks that the device holds exactly peers want, and that the
// gateway believes so.
func (at *applyTest) holds(want ...api.Peer) {
	at.t.Helper()
	if got := at.dev.peers(at.t); !maps.EqualFunc(got, wantPeers(want...), slices.Equal) {
		at.t.Fatalf("device holds %v, want %v", got, wantPeers(want...))
	}
	if at.g.Peers() != len(want) {
		at.t.Fatalf("the gateway believes %d peers installed, the device holds %d", at.g.Peers(), len(want))
	}
	for _, p := range want {
		if cur, ok := at.g.installed[p.PublicKey]; !ok || !slices.Equal(cur.AllowedIPs, p.AllowedIPs) {
			at.t.Fatalf("the gateway believes %v of a peer the device holds with %v", cur.AllowedIPs, p.AllowedIPs)
		}
	}
}

// sections splits a UAPI text into its peer sections, sorted.
func sections(uapi string) []string {
	var out []string
	for line := range strings.Lines(uapi) {
		if strings.HasPrefix(line, "public_key=") || len(out) == 0 {
			out = append(out, "")
		}
		out[len(out)-1] += line
	}
	slices.Sort(out)
	return out
}

func addPeer(p api.Peer) string {
	s := "public_key=" + p.PublicKey.Hex() + "\nreplace_allowed_ips=true\n"
	for _, a := range p.AllowedIPs {
		s += "allowed_ip=" + a.String() + "\n"
	}
	return s
}

func removePeer(p api.Peer) string { return "public_key=" + p.PublicKey.Hex() + "\nremove=true\n" }

// TestApplyNetmap: each netmap sets exactly the difference between what
// the gateway holds and what the netmap says, in one UAPI text: additions,
// changed allowed IPs, removals (named, or missing from a full netmap),
// and nothing for what is already so.
func TestApplyNetmap(t *testing.T) {
	at := newApplyTest(t)
	a, b, c, d := recordedPeer(t, 2), recordedPeer(t, 3), recordedPeer(t, 4), recordedPeer(t, 5)
	at.step(api.Netmap{Version: 1, Full: true, Peers: []api.Peer{a, b}}, []string{addPeer(a) + addPeer(b)}, a, b)
	at.step(api.Netmap{Version: 2, Peers: []api.Peer{c}}, []string{addPeer(c)}, a, b, c)
	a2 := a
	a2.AllowedIPs = a.AllowedIPs[:1]
	at.step(api.Netmap{Version: 3, Peers: []api.Peer{a2, b}}, []string{addPeer(a2)}, a2, b, c)
	at.step(api.Netmap{Version: 4, Peers: []api.Peer{b}}, nil, a2, b, c)
	at.step(api.Netmap{Version: 5, Peers: []api.Peer{{PublicKey: b.PublicKey, Remove: true}}}, []string{removePeer(b)}, a2, c)
	at.step(api.Netmap{Version: 6, Peers: []api.Peer{{PublicKey: b.PublicKey, Remove: true}}}, nil, a2, c)
	// A full netmap after the deltas: c is gone, d is new, a2 stays as it is.
	at.step(api.Netmap{Version: 7, Full: true, Peers: []api.Peer{a2, d}}, []string{addPeer(d) + removePeer(c)}, a2, d)
	at.step(api.Netmap{Version: 8, Full: true, Peers: []api.Peer{a2, d}}, nil, a2, d)
	at.step(api.Netmap{Version: 9, Full: true}, []string{removePeer(a2) + removePeer(d)})
}

// TestApplyFailedSetIsRepaired: when a set fails part-way the device holds
// some of it; the gateway must not believe what it does not know, and the
// next full netmap (which the sync loop asks for after any failure) brings
// the device to exactly what it says, whatever the failed set left.
func TestApplyFailedSetIsRepaired(t *testing.T) {
	a, b, c := recordedPeer(t, 2), recordedPeer(t, 3), recordedPeer(t, 4)
	a2 := a
	a2.AllowedIPs = []netip.Prefix{netip.MustParsePrefix("10.200.0.9/32")}
	for _, tc := range []struct {
		name      string
		failed    api.Netmap // applied on a device holding a, failing after failAfter lines
		failAfter int
		repair    []api.Peer // the next full netmap
	}{
		// b got in, c did not; then b is revoked: b must go.
		{"added then revoked", api.Netmap{Version: 2, Peers: []api.Peer{b, c}}, 4, []api.Peer{a, c}},
		// a's removal got in, b's addition not; then a comes back: a must be there.
		{"removed then restored", api.Netmap{Version: 2, Peers: []api.Peer{{PublicKey: a.PublicKey, Remove: true}, b}}, 2, []api.Peer{a, b}},
		// a's allowed IPs were replaced by none; then its old ones are right again.
		{"changed then reverted", api.Netmap{Version: 2, Peers: []api.Peer{a2}}, 2, []api.Peer{a}},
		// a was changed, b got in; the full netmap has a2 and not b.
		{"changed and added", api.Netmap{Version: 2, Peers: []api.Peer{a2, b}}, 5, []api.Peer{a2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			at := newApplyTest(t)
			at.step(api.Netmap{Version: 1, Full: true, Peers: []api.Peer{a}}, []string{addPeer(a)}, a)
			at.dev.failAfter = tc.failAfter
			if err := at.g.apply(tc.failed); err == nil {
				t.Fatal("a failed set: apply returned no error")
			}
			if at.g.NetmapVersion() != 1 {
				t.Fatalf("a failed netmap counts as applied: version %d", at.g.NetmapVersion())
			}
			for _, p := range tc.failed.Peers {
				if cur, ok := at.g.installed[p.PublicKey]; ok && !p.Remove && slices.Equal(cur.AllowedIPs, p.AllowedIPs) {
					t.Fatalf("the gateway believes a peer of the failed set installed as it was to be")
				}
			}
			if err := at.g.apply(api.Netmap{Version: 3, Full: true, Peers: tc.repair}); err != nil {
				t.Fatal(err)
			}
			at.holds(tc.repair...)
			// And it is settled: the same netmap again sets nothing.
			at.step(api.Netmap{Version: 4, Full: true, Peers: tc.repair}, nil, tc.repair...)
		})
	}
}
