package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/internal/recordseal"
	"github.com/meridian-vpn/meridian/portblock"
	"github.com/meridian-vpn/meridian/tunnet"
	"github.com/meridian-vpn/meridian/wg"
)

var (
	exit4 = netip.MustParseAddr("203.0.113.1")
	exit6 = netip.MustParseAddr("2001:db8:2::1")
	ep1   = netip.MustParseAddrPort("198.51.100.7:40000")
	ep2   = netip.MustParseAddrPort("[2001:db8:1::9]:51000")
)

// fakePlane records what the tracker asks of the data plane.
type fakePlane struct {
	mapped map[netip.Addr]portblock.Block
	cuts   []netip.Addr
	fail   bool
	// failUnmap fails every request that removes a mapping, as nft does
	// when the table cannot be changed.
	failUnmap bool
}

func (p *fakePlane) attribute(add, remove []tunnet.Attribution) error {
	if p.fail || p.failUnmap && len(remove) > 0 {
		return errors.New("nft: exit status 1")
	}
	for _, a := range remove {
		if _, ok := p.mapped[a.Tunnel]; !ok {
			return fmt.Errorf("unmapping an address that is not mapped")
		}
		delete(p.mapped, a.Tunnel)
	}
	for _, a := range add {
		if _, ok := p.mapped[a.Tunnel]; ok {
			return fmt.Errorf("mapping an address twice")
		}
		p.mapped[a.Tunnel] = a.Block
	}
	return nil
}

func (p *fakePlane) cut(addrs []netip.Addr) { p.cuts = append(p.cuts, addrs...) }

type trackerTest struct {
	t     *testing.T
	tr    *sessionTracker
	plane *fakePlane
	spool *spool
	dir   string
	now   time.Time
	read  int                // spool records already returned by records
	open  *recordseal.Opener // the control server's side of the record seal
}

func newTrackerTest(t *testing.T, cfg sessionConfig) *trackerTest {
	t.Helper()
	tt := &trackerTest{t: t, plane: &fakePlane{mapped: map[netip.Addr]portblock.Block{}}, dir: t.TempDir(),
		now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	var err error
	if tt.spool, err = openSpool(tt.dir, 1<<20); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tt.spool.close() })
	if cfg.blocks == (portblock.Layout{}) {
		cfg.blocks = portblock.Default
	}
	if !cfg.exit4.IsValid() && !cfg.exit6.IsValid() && cfg.refusal != "no exits" {
		cfg.exit4, cfg.exit6 = exit4, exit6
	}
	if cfg.refusal == "no exits" {
		cfg.refusal = ""
	}
	cfg.stateDir, cfg.spool, cfg.plane = tt.dir, tt.spool, tt.plane
	cfg.now = func() time.Time { return tt.now }
	cfg.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	if tt.tr, err = newSessionTracker(cfg); err != nil {
		t.Fatal(err)
	}
	priv, err := recordseal.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	if tt.open, err = recordseal.NewOpener(priv); err != nil {
		t.Fatal(err)
	}
	sealer, err := recordseal.NewSealer(tt.open.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	tt.tr.seal.Store(sealer)
	return tt
}

// opened returns r, a spooled record, with its endpoint opened as the
// control server opens it; the spooled form must hold it sealed only.
func (tt *trackerTest) opened(r api.SessionRecord) api.SessionRecord {
	tt.t.Helper()
	if r.Endpoint.IsValid() || r.SealedEndpoint == "" {
		tt.t.Fatalf("record %s holds its endpoint in clear", r.ID)
	}
	ep, err := tt.open.Open(r.ID, r.SealedEndpoint)
	if err != nil {
		tt.t.Fatalf("record %s: %v", r.ID, err)
	}
	r.Endpoint, r.SealedEndpoint = ep, ""
	return r
}

// records returns the records spooled since the last call.
func (tt *trackerTest) records() []api.SessionRecord {
	tt.t.Helper()
	recs, _, _, err := tt.spool.peek(1000, 1<<30)
	if err != nil {
		tt.t.Fatal(err)
	}
	out := recs[tt.read:]
	tt.read = len(recs)
	return out
}

func recordedPeer(t *testing.T, n byte) api.Peer {
	t.Helper()
	k, err := wg.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return api.Peer{PublicKey: k.Public(), Record: true, AllowedIPs: []netip.Prefix{
		netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200, 0, n}), 32),
		netip.PrefixFrom(netip.MustParseAddr(fmt.Sprintf("2001:db8:200::%x", n)), 128),
	}}
}

func tunnelAddr(p api.Peer, i int) netip.Addr { return p.AllowedIPs[i].Addr() }

func TestSessionLifecycle(t *testing.T) {
	tt := newTrackerTest(t, sessionConfig{})
	p := recordedPeer(t, 2)
	tt.tr.update([]api.Peer{p}, nil)
	if !tt.tr.active() {
		t.Fatal("tracker inactive with a recorded peer")
	}
	// Flows it had before it owed records have no block: cut.
	if len(tt.plane.cuts) != 2 {
		t.Fatalf("flows cut when the peer began to owe records: %v", tt.plane.cuts)
	}
	tt.plane.cuts = nil
	if lo, _, attributed := tt.tr.sourcePorts(tunnelAddr(p, 0)); !attributed || lo != 0 {
		t.Fatalf("recorded peer without a session: ports from %d, attributed %v; want none", lo, attributed)
	}

	// No handshake yet: no session.
	tt.tr.observe(map[wg.Key]peerStatus{p.PublicKey: {}})
	if recs := tt.records(); len(recs) != 0 || tt.tr.openCount() != 0 {
		t.Fatalf("session without a handshake: %+v", recs)
	}

	// The first handshake opens a session with a block.
	hs := tt.now.Add(-time.Second)
	tt.tr.observe(map[wg.Key]peerStatus{p.PublicKey: {handshake: hs, endpoint: ep1}})
	recs := tt.records()
	if len(recs) != 1 {
		t.Fatalf("%d records after the first handshake, want 1", len(recs))
	}
	open := tt.opened(recs[0])
	if err := open.Validate(); err != nil {
		t.Fatalf("opening record invalid: %v", err)
	}
	if open.PublicKey != p.PublicKey || open.Endpoint != ep1 || open.TunnelIPv4 != tunnelAddr(p, 0) || open.TunnelIPv6 != tunnelAddr(p, 1) ||
		open.ExitIPv4 != exit4 || open.ExitIPv6 != exit6 || open.PortLo != 1024 || open.PortHi != 1279 ||
		!open.Start.Equal(tt.now) || !open.End.IsZero() {
		t.Fatalf("opening record %+v", open)
	}
	if lo, hi, attributed := tt.tr.sourcePorts(tunnelAddr(p, 1)); !attributed || lo != 1024 || hi != 1279 {
		t.Fatalf("open session: ports %d-%d (%v)", lo, hi, attributed)
	}
	if b, ok := tt.plane.mapped[tunnelAddr(p, 0)]; !ok || b.Index != 0 || len(tt.plane.mapped) != 2 {
		t.Fatalf("data plane mappings %v", tt.plane.mapped)
	}

	// Handshakes go on: nothing new.
	tt.now = tt.now.Add(2 * time.Minute)
	tt.tr.observe(map[wg.Key]peerStatus{p.PublicKey: {handshake: tt.now.Add(-time.Second), endpoint: ep1}})
	if recs := tt.records(); len(recs) != 0 {
		t.Fatalf("records while nothing changed: %+v", recs)
	}

	// A new endpoint closes the session and opens another on the same block.
	tt.now = tt.now.Add(time.Minute)
	hs = tt.now.Add(-time.Second)
	tt.tr.observe(map[wg.Key]peerStatus{p.PublicKey: {handshake: hs, endpoint: ep2}})
	recs = tt.records()
	if len(recs) != 2 || recs[0].ID != open.ID || !recs[0].End.Equal(tt.now) ||
		recs[1].ID == open.ID || tt.opened(recs[1]).Endpoint != ep2 || !recs[1].Start.Equal(tt.now) || !recs[1].End.IsZero() ||
		recs[1].PortLo != open.PortLo {
		t.Fatalf("endpoint change: %+v", recs)
	}
	roamed := recs[1]
	if len(tt.plane.cuts) != 0 {
		t.Fatal("an endpoint change cut the flows")
	}

	// No handshake for the reject-after time closes it.
	tt.now = hs.Add(rejectAfter - time.Second)
	tt.tr.observe(map[wg.Key]peerStatus{p.PublicKey: {handshake: hs, endpoint: ep2}})
	if recs := tt.records(); len(recs) != 0 {
		t.Fatalf("closed before the reject-after time: %+v", recs)
	}
	tt.now = hs.Add(rejectAfter + time.Second)
	tt.tr.observe(map[wg.Key]peerStatus{p.PublicKey: {handshake: hs, endpoint: ep2}})
	recs = tt.records()
	if len(recs) != 1 || recs[0].ID != roamed.ID || !recs[0].End.Equal(tt.now) || !recs[0].Start.Equal(roamed.Start) {
		t.Fatalf("expiry: %+v", recs)
	}
	if len(tt.plane.mapped) != 0 || !slices.Contains(tt.plane.cuts, tunnelAddr(p, 0)) || tt.tr.freeBlocks() != portblock.Default.Count() {
		t.Fatalf("after expiry: mapped %v, cut %v, %d free blocks", tt.plane.mapped, tt.plane.cuts, tt.tr.freeBlocks())
	}
	if _, err := os.Stat(filepath.Join(tt.dir, openSessionsFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("open sessions file left with no session open")
	}

	// A new handshake opens a new session; removing the peer closes it.
	tt.now = tt.now.Add(time.Hour)
	tt.tr.observe(map[wg.Key]peerStatus{p.PublicKey: {handshake: tt.now, endpoint: ep1}})
	recs = tt.records()
	if len(recs) != 1 || !recs[0].End.IsZero() || recs[0].PortLo == open.PortLo {
		t.Fatalf("reopening: %+v (the block released longest ago should be taken)", recs)
	}
	tt.now = tt.now.Add(time.Minute)
	tt.tr.update(nil, []wg.Key{p.PublicKey})
	recs = tt.records()
	if len(recs) != 1 || !recs[0].End.Equal(tt.now) {
		t.Fatalf("peer removal: %+v", recs)
	}
	if tt.tr.active() {
		t.Fatal("tracker active after its only peer left")
	}
	if _, _, attributed := tt.tr.sourcePorts(tunnelAddr(p, 0)); attributed {
		t.Fatal("removed peer's address still attributed")
	}
}

func TestSessionClosesWhenDutyEnds(t *testing.T) {
	tt := newTrackerTest(t, sessionConfig{})
	p := recordedPeer(t, 2)
	tt.tr.update([]api.Peer{p}, nil)
	tt.tr.observe(map[wg.Key]peerStatus{p.PublicKey: {handshake: tt.now, endpoint: ep1}})
	tt.records()
	p.Record = false
	tt.tr.update([]api.Peer{p}, nil)
	if recs := tt.records(); len(recs) != 1 || recs[0].End.IsZero() {
		t.Fatalf("duty ended: %+v", recs)
	}
	if tt.tr.active() || len(tt.plane.mapped) != 0 {
		t.Fatal("peer still tracked after its duty ended")
	}
}

func TestNoDutyNoData(t *testing.T) {
	tt := newTrackerTest(t, sessionConfig{})
	var peers []api.Peer
	for i := range 3 {
		p := recordedPeer(t, byte(2+i))
		p.Record = false
		peers = append(peers, p)
	}
	tt.tr.update(peers, nil)
	if tt.tr.active() {
		t.Fatal("tracker active without recorded peers")
	}
	if _, _, attributed := tt.tr.sourcePorts(tunnelAddr(peers[0], 0)); attributed {
		t.Fatal("unrecorded peer attributed")
	}
	if tt.tr.tracks(peers[0].PublicKey) {
		t.Fatal("unrecorded peer tracked")
	}
	tt.tr.observe(map[wg.Key]peerStatus{peers[0].PublicKey: {handshake: tt.now, endpoint: ep1}})
	entries, _ := os.ReadDir(tt.dir)
	if len(entries) != 0 || len(tt.plane.mapped) != 0 || len(tt.plane.cuts) != 0 {
		t.Fatalf("state directory %v, mapped %v, cut %v: something was computed for unrecorded peers", entries, tt.plane.mapped, tt.plane.cuts)
	}
}

func TestSessionBlocksRunOut(t *testing.T) {
	tt := newTrackerTest(t, sessionConfig{blocks: portblock.Layout{First: 1024, Last: 1279, Size: 256}}) // one block
	a, b := recordedPeer(t, 2), recordedPeer(t, 3)
	tt.tr.update([]api.Peer{a, b}, nil)
	tt.tr.observe(map[wg.Key]peerStatus{a.PublicKey: {handshake: tt.now, endpoint: ep1}})
	tt.records()
	st := map[wg.Key]peerStatus{a.PublicKey: {handshake: tt.now, endpoint: ep1}, b.PublicKey: {handshake: tt.now, endpoint: ep2}}
	tt.tr.observe(st)
	if recs := tt.records(); len(recs) != 0 {
		t.Fatalf("a session opened without a free block: %+v", recs)
	}
	if lo, _, attributed := tt.tr.sourcePorts(tunnelAddr(b, 0)); !attributed || lo != 0 {
		t.Fatal("a refused session got ports")
	}
	if got := counterValue(tt.tr.refused.WithLabelValues(refusedNoBlock)); got != 1 {
		t.Fatalf("refused (no free block) = %v, want 1", got)
	}
	if !tt.tr.peers[b.PublicKey].refused.Load() {
		t.Fatal("refused peer not marked")
	}
	// The block comes free; the next look opens b's session on it.
	tt.now = tt.now.Add(time.Minute)
	tt.tr.update(nil, []wg.Key{a.PublicKey})
	tt.tr.observe(st)
	recs := tt.records()
	if len(recs) != 2 || recs[1].PublicKey != b.PublicKey || recs[1].PortLo != 1024 || !recs[0].End.Equal(recs[1].Start) {
		t.Fatalf("after the block came free: %+v", recs)
	}
	if tt.tr.peers[b.PublicKey].refused.Load() {
		t.Fatal("open session still marked refused")
	}
}

func TestSessionRefusedWithoutExitAddress(t *testing.T) {
	tt := newTrackerTest(t, sessionConfig{refusal: "no exits"})
	p := recordedPeer(t, 2)
	tt.tr.update([]api.Peer{p}, nil)
	tt.tr.observe(map[wg.Key]peerStatus{p.PublicKey: {handshake: tt.now, endpoint: ep1}})
	if recs := tt.records(); len(recs) != 0 || len(tt.plane.mapped) != 0 {
		t.Fatalf("session opened without an exit address: %+v", recs)
	}
	if got := counterValue(tt.tr.refused.WithLabelValues(refusedNoExit)); got != 1 {
		t.Fatalf("refused (no exit address) = %v", got)
	}
}

func TestSessionWithOneExitFamily(t *testing.T) {
	tt := newTrackerTest(t, sessionConfig{exit4: exit4})
	p := recordedPeer(t, 2)
	tt.tr.update([]api.Peer{p}, nil)
	tt.tr.observe(map[wg.Key]peerStatus{p.PublicKey: {handshake: tt.now, endpoint: ep1}})
	recs := tt.records()
	if len(recs) != 1 || recs[0].ExitIPv6.IsValid() || recs[0].ExitIPv4 != exit4 {
		t.Fatalf("records %+v", recs)
	}
	// Only the IPv4 address is mapped: IPv6 traffic has no exit to be
	// attributed on and is refused.
	if _, ok := tt.plane.mapped[tunnelAddr(p, 1)]; ok || len(tt.plane.mapped) != 1 {
		t.Fatalf("mapped %v", tt.plane.mapped)
	}
}

func TestSessionRefusedWhenPlaneFails(t *testing.T) {
	tt := newTrackerTest(t, sessionConfig{})
	p := recordedPeer(t, 2)
	tt.tr.update([]api.Peer{p}, nil)
	tt.plane.fail = true
	tt.tr.observe(map[wg.Key]peerStatus{p.PublicKey: {handshake: tt.now, endpoint: ep1}})
	if recs := tt.records(); len(recs) != 0 || tt.tr.freeBlocks() != portblock.Default.Count() {
		t.Fatalf("data plane failed, yet records %+v, %d free blocks", recs, tt.tr.freeBlocks())
	}
}

// A block whose unmapping failed is still mapped to its session's tunnel
// addresses in the data plane: it must not go back to the free pool, or the
// next session would take ports the closed one can still send from, and
// an exit address, port and time would lead to two records.
func TestBlockNotFreedWhenUnmappingFails(t *testing.T) {
	one := portblock.Layout{First: 1024, Last: 1279, Size: 256}
	t.Run("closing", func(t *testing.T) {
		tt := newTrackerTest(t, sessionConfig{blocks: one})
		a, b := recordedPeer(t, 2), recordedPeer(t, 3)
		tt.tr.update([]api.Peer{a, b}, nil)
		tt.tr.observe(map[wg.Key]peerStatus{a.PublicKey: {handshake: tt.now, endpoint: ep1}})
		if recs := tt.records(); len(recs) != 1 || tt.tr.freeBlocks() != 0 {
			t.Fatalf("a's session: %+v, %d free blocks", recs, tt.tr.freeBlocks())
		}
		tt.plane.failUnmap = true
		tt.now = tt.now.Add(time.Minute)
		tt.tr.update(nil, []wg.Key{a.PublicKey}) // a's session closes; unmapping its block fails
		recs := tt.records()
		if len(recs) != 1 || !recs[0].End.Equal(tt.now) {
			t.Fatalf("closing record of a: %+v", recs)
		}
		if n := tt.tr.freeBlocks(); n != 0 {
			t.Fatalf("%d free blocks after unmapping the only block failed, want 0", n)
		}
		if got := tt.plane.mapped[tunnelAddr(a, 0)]; got.Lo != 1024 {
			t.Fatalf("the fake plane lost a's mapping: %v", tt.plane.mapped)
		}
		// b wants a session: there is no block for it.
		tt.plane.failUnmap = false
		tt.tr.observe(map[wg.Key]peerStatus{b.PublicKey: {handshake: tt.now, endpoint: ep2}})
		if recs := tt.records(); len(recs) != 0 {
			t.Fatalf("b's session opened on a block still mapped to a: %+v", recs)
		}
		if got := counterValue(tt.tr.refused.WithLabelValues(refusedNoBlock)); got != 1 {
			t.Fatalf("refused (no free block) = %v, want 1", got)
		}
		if lo, _, _ := tt.tr.sourcePorts(tunnelAddr(b, 0)); lo != 0 {
			t.Fatalf("b got ports from %d", lo)
		}
	})
	t.Run("opening", func(t *testing.T) {
		// The opening record cannot be saved (the spool is full), and
		// undoing the mapping fails too.
		tt := newTrackerTest(t, sessionConfig{blocks: one})
		a := recordedPeer(t, 2)
		tt.tr.update([]api.Peer{a}, nil)
		tt.spool.limit = 0
		tt.plane.failUnmap = true
		tt.tr.observe(map[wg.Key]peerStatus{a.PublicKey: {handshake: tt.now, endpoint: ep1}})
		if recs := tt.records(); len(recs) != 0 || tt.tr.openCount() != 0 {
			t.Fatalf("a session opened without its record: %+v", recs)
		}
		if n := tt.tr.freeBlocks(); n != 0 {
			t.Fatalf("%d free blocks after unmapping the only block failed, want 0", n)
		}
		if !tt.tr.peers[a.PublicKey].refused.Load() || counterValue(tt.tr.refused.WithLabelValues(refusedSpool)) != 1 {
			t.Fatal("the session that could not open is not refused")
		}
	})
}

func TestSessionsLeftOpenAreClosedAtStart(t *testing.T) {
	tt := newTrackerTest(t, sessionConfig{})
	p := recordedPeer(t, 2)
	tt.tr.update([]api.Peer{p}, nil)
	tt.tr.observe(map[wg.Key]peerStatus{p.PublicKey: {handshake: tt.now, endpoint: ep1}})
	open := tt.records()[0]
	b, err := os.ReadFile(filepath.Join(tt.dir, openSessionsFile))
	if err != nil {
		t.Fatal(err)
	}
	var saved []api.SessionRecord
	if err := json.Unmarshal(b, &saved); err != nil || len(saved) != 1 || saved[0].ID != open.ID {
		t.Fatalf("open sessions file: %s (%v)", b, err)
	}
	// The session goes on for five minutes, then the gateway crashes.
	tt.now = tt.now.Add(5 * time.Minute)
	tt.tr.observe(map[wg.Key]peerStatus{p.PublicKey: {handshake: tt.now, endpoint: ep1}})
	lastAlive := tt.now
	tt.spool.close()

	sp, err := openSpool(tt.dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.close()
	restart := tt.now.Add(time.Hour)
	if err := closeLeftSessions(tt.dir, sp, restart, nil, nil); err != nil {
		t.Fatal(err)
	}
	// It ends when the crashed run last knew it open, not at the restart
	// an hour later.
	recs, _, _, _ := sp.peek(10, 1<<20)
	if len(recs) != 2 || recs[1].ID != open.ID || !recs[1].End.Equal(lastAlive) {
		t.Fatalf("spool after the restart: %+v, want the end at %s", recs, lastAlive)
	}
	if _, err := os.Stat(filepath.Join(tt.dir, openSessionsFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("open sessions file kept after closing them")
	}
}

func TestShutdownClosesSessions(t *testing.T) {
	tt := newTrackerTest(t, sessionConfig{})
	p := recordedPeer(t, 2)
	tt.tr.update([]api.Peer{p}, nil)
	tt.tr.observe(map[wg.Key]peerStatus{p.PublicKey: {handshake: tt.now, endpoint: ep1}})
	tt.records()
	tt.now = tt.now.Add(time.Minute)
	tt.tr.shutdown()
	if recs := tt.records(); len(recs) != 1 || !recs[0].End.Equal(tt.now) {
		t.Fatalf("shutdown: %+v", recs)
	}
	if _, err := os.Stat(filepath.Join(tt.dir, openSessionsFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("open sessions file kept after shutdown")
	}
}

func TestPeerStatuses(t *testing.T) {
	a, b, c := recordedPeer(t, 2), recordedPeer(t, 3), recordedPeer(t, 4)
	ipc := fmt.Sprintf("private_key=%s\nlisten_port=51820\n"+
		"public_key=%s\nendpoint=198.51.100.7:40000\nlast_handshake_time_sec=1772366400\nlast_handshake_time_nsec=5\nallowed_ip=10.200.0.2/32\n"+
		"public_key=%s\nendpoint=[2001:db8:1::9]:51000\nlast_handshake_time_sec=0\nlast_handshake_time_nsec=0\n"+
		"public_key=%s\nlast_handshake_time_sec=1772366400\nlast_handshake_time_nsec=0\n",
		a.PublicKey.Hex(), a.PublicKey.Hex(), b.PublicKey.Hex(), c.PublicKey.Hex())
	st := peerStatuses(ipc, func(k wg.Key) bool { return k != c.PublicKey })
	if len(st) != 2 {
		t.Fatalf("statuses %+v, want a and b only", st)
	}
	if s := st[a.PublicKey]; s.endpoint != ep1 || !s.handshake.Equal(time.Unix(1772366400, 5)) {
		t.Errorf("a: %+v", s)
	}
	if s := st[b.PublicKey]; s.endpoint != ep2 || !s.handshake.IsZero() {
		t.Errorf("b: %+v", s)
	}
}

// fakeTUN records what is written through attributedTUN.
type fakeTUN struct {
	tun.Device
	written [][]byte
}

func (f *fakeTUN) Write(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		f.written = append(f.written, append([]byte(nil), b[offset:]...))
	}
	return len(bufs), nil
}

func packetFrom(src netip.Addr, offset int) []byte {
	var pkt []byte
	if src.Is4() {
		pkt = make([]byte, 20)
		pkt[0] = 0x45
		copy(pkt[12:16], src.AsSlice())
	} else {
		pkt = make([]byte, 40)
		pkt[0] = 0x60
		copy(pkt[8:24], src.AsSlice())
	}
	return append(make([]byte, offset), pkt...)
}

func TestAttributedTUNHoldsPacketsUntilSessionOpens(t *testing.T) {
	tt := newTrackerTest(t, sessionConfig{exit4: exit4})
	ft := &fakeTUN{}
	d := newAttributedTUN(ft, tt.tr)
	const offset = 16
	rec, other := recordedPeer(t, 2), netip.MustParseAddr("10.200.0.9")

	// No recorded peer: everything passes.
	d.Write([][]byte{packetFrom(other, offset)}, offset)
	if len(ft.written) != 1 {
		t.Fatal("packet of an unrecorded peer held")
	}

	tt.tr.update([]api.Peer{rec}, nil)
	d.Write([][]byte{packetFrom(tunnelAddr(rec, 0), offset), packetFrom(other, offset)}, offset)
	if len(ft.written) != 2 {
		t.Fatalf("%d packets written, want the unrecorded one only", len(ft.written))
	}
	select {
	case <-d.kick:
	default:
		t.Fatal("held packet did not ask for a look")
	}
	seq := d.seq()
	tt.tr.observe(map[wg.Key]peerStatus{rec.PublicKey: {handshake: tt.now, endpoint: ep1}})
	d.flush(seq)
	if len(ft.written) != 3 || netip.AddrFrom4([4]byte(ft.written[2][12:16])) != tunnelAddr(rec, 0) {
		t.Fatalf("held packet not passed once the session opened: %d written", len(ft.written))
	}
	// Open session: packets pass, except in the family without an exit address.
	d.Write([][]byte{packetFrom(tunnelAddr(rec, 0), offset), packetFrom(tunnelAddr(rec, 1), offset)}, offset)
	if len(ft.written) != 4 || d.dropped.Load() != 1 {
		t.Fatalf("%d written, %d dropped; want the IPv4 packet through and the IPv6 one dropped", len(ft.written), d.dropped.Load())
	}

	// A peer whose session cannot open: held, then dropped, then dropped at once.
	tt.tr.cfg.refusal = "test"
	late := recordedPeer(t, 3)
	tt.tr.update([]api.Peer{rec, late}, nil)
	d.Write([][]byte{packetFrom(tunnelAddr(late, 0), offset)}, offset)
	seq = d.seq()
	tt.tr.observe(map[wg.Key]peerStatus{rec.PublicKey: {handshake: tt.now, endpoint: ep1}, late.PublicKey: {handshake: tt.now, endpoint: ep2}})
	d.flush(seq)
	d.Write([][]byte{packetFrom(tunnelAddr(late, 0), offset)}, offset)
	if len(ft.written) != 4 || d.dropped.Load() != 3 {
		t.Fatalf("%d written, %d dropped; want the refused peer's packets dropped", len(ft.written), d.dropped.Load())
	}
	d.flush(d.seq())
	if len(d.held) != 0 {
		t.Fatal("packets still held")
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	c.Write(&m)
	return m.GetCounter().GetValue()
}

// Session IDs are 32 hex digits that sort by the time they were made.
func TestSessionIDsSortByTime(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	var prev string
	for i := range 100 {
		id := newSessionID(t0.Add(time.Duration(i) * time.Millisecond))
		if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
			t.Fatalf("id %q is not 32 lower-case hex digits", id)
		}
		if id <= prev {
			t.Fatalf("id %s made later sorts before %s", id, prev)
		}
		prev = id
	}
	if a, b := newSessionID(t0), newSessionID(t0); a == b || a[:12] != b[:12] {
		t.Fatalf("two ids of the same millisecond: %s %s", a, b)
	}
}

// Until the control server's key to seal endpoints to is known, no
// session opens: its record could only hold the endpoint in clear.
func TestSessionRefusedWithoutSealKey(t *testing.T) {
	tt := newTrackerTest(t, sessionConfig{})
	tt.tr.seal.Store(nil)
	p := recordedPeer(t, 2)
	tt.tr.update([]api.Peer{p}, nil)
	tt.tr.observe(map[wg.Key]peerStatus{p.PublicKey: {handshake: tt.now, endpoint: ep1}})
	if recs := tt.records(); len(recs) != 0 || tt.tr.openCount() != 0 {
		t.Fatalf("a session opened without the seal key: %+v", recs)
	}
	if got := counterValue(tt.tr.refused.WithLabelValues(refusedSealKey)); got != 1 {
		t.Fatalf("refusals for want of the key: %v", got)
	}
}

// An open sessions file of a version that did not seal endpoints has
// them sealed as its sessions are closed at the next start.
func TestLeftSessionsInClearAreSealed(t *testing.T) {
	tt := newTrackerTest(t, sessionConfig{})
	old := api.SessionRecord{ID: newSessionID(tt.now), PublicKey: recordedPeer(t, 3).PublicKey, TunnelIPv4: netip.MustParseAddr("10.200.0.3"),
		Endpoint: ep1, ExitIPv4: exit4, PortLo: 1024, PortHi: 1279, Start: tt.now}
	b, _ := json.Marshal([]api.SessionRecord{old})
	if err := os.WriteFile(filepath.Join(tt.dir, openSessionsFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := closeLeftSessions(tt.dir, tt.spool, tt.now.Add(time.Hour), nil, tt.tr.seal.Load()); err != nil {
		t.Fatal(err)
	}
	recs := tt.records()
	if len(recs) != 1 || recs[0].End.IsZero() || tt.opened(recs[0]).Endpoint != ep1 {
		t.Fatalf("closing record %+v", recs)
	}
	raw, _ := os.ReadFile(filepath.Join(tt.dir, spoolFile))
	if strings.Contains(string(raw), ep1.Addr().String()) {
		t.Fatalf("the spool holds the endpoint in clear: %s", raw)
	}
}

// Port blocks that share a port with the kernel's ephemeral range are
// refused, to the port: a socket given that port would leave from a
// session's block. Ports after the last whole block are in no block.
func TestEphemeralOverlapEdges(t *testing.T) {
	odd := portblock.Layout{First: 1024, Last: 32767, Size: 1000} // blocks 1024-32023; 32024-32767 in none
	for _, c := range []struct {
		kernel  string
		l       portblock.Layout
		refused bool
	}{
		{"32768\t60999\n", portblock.Default, false}, // Linux's default
		{"32767\t60999\n", portblock.Default, true},  // the last port of the last block
		{"1024\t1024\n", portblock.Default, true},    // the first port of the first block
		{"1000\t1023\n", portblock.Default, false},   // just below
		{"1000\t1024\n", portblock.Default, true},
		{"500\t65535\n", portblock.Default, true}, // around the blocks
		{"2000\t3000\n", portblock.Default, true}, // inside them
		{"32024\t60999\n", odd, false},            // after the last whole block
		{"32023\t60999\n", odd, true},
		{"bogus\n", portblock.Default, false}, // unreadable: nothing to compare
	} {
		why := rangeOverlap(c.kernel, c.l)
		if (why != "") != c.refused {
			t.Errorf("ephemeral %q, blocks %s: refusal %q, want refused %v", strings.TrimSpace(c.kernel), c.l, why, c.refused)
		}
	}
}
