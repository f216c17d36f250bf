package gateway

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/internal/atomicfile"
	"github.com/meridian-vpn/meridian/internal/recordseal"
	"github.com/meridian-vpn/meridian/portblock"
	"github.com/meridian-vpn/meridian/tunnet"
	"github.com/meridian-vpn/meridian/wg"
)

// Session records exist only for peers whose duties require them: the
// control server sets api.Peer.Record for those, and for no peer of a
// gateway without such a duty. For the others the gateway computes nothing
// per peer: it does not read handshakes, keeps no times and writes nothing.
//
// A session of a recorded peer opens at its first handshake (or when its
// endpoint changes) and closes when no handshake has happened for
// rejectAfter, or when the peer is removed or no longer recorded. An open
// session holds a block of source ports (RFC 7422) on the exit addresses;
// its traffic leaves from those ports and no other. A packet of a recorded
// peer without a session is held back (attributedTUN) until the session
// has opened: block mapped in the data plane and opening record fsynced in
// the spool. A session's record runs from when it took its block until it
// released it, so two records of one block never overlap. (That is at most
// a session interval after the handshake, or at the first packet, and at
// most a session interval after the reject-after time; a change of
// endpoint is noticed within a session interval too.)
//
// Capacity: a gateway holds as many recorded sessions at once as its
// layout has blocks (portblock.Default: 124 blocks of 256 ports; blocks of
// 64 ports give 496). Beyond that a session is refused, counted in
// meridian_gateway_sessions_refused_total{reason="no_free_block"}, and its
// packets are dropped: never does its traffic leave from a port that no
// record covers. Within a session, a block carries as many connections to
// one destination (address, port and protocol) as it has ports; a further
// one is refused (userspace: meridian_exit_unattributed_total; TUN: the
// kernel's NAT finds no free port and drops it).

const (
	defaultSessionInterval = 2 * time.Second
	openSessionsFile       = "sessions-open.json"
)

// Reasons a session could not open, the values of the metric's label.
const (
	refusedNoExit    = "no_exit_address"
	refusedEphemeral = "ephemeral_overlap"
	refusedNoBlock   = "no_free_block"
	refusedSpool     = "spool"
	refusedPlane     = "data_plane"
	refusedSealKey   = "no_seal_key"
)

// attributionPlane is the data plane's side of sessions: map a session's
// tunnel addresses to its block, and cut the flows of a closed session so
// that none outlives it into a block given to another session.
type attributionPlane interface {
	attribute(add, remove []tunnet.Attribution) error
	cut(addrs []netip.Addr)
}

// peerStatus is what the WireGuard device says of a peer.
type peerStatus struct {
	handshake time.Time
	endpoint  netip.AddrPort
}

// recPeer is a peer that owes session records. The data path reads it
// without locks.
type recPeer struct {
	key     wg.Key
	addrs   []netip.Addr
	block   atomic.Pointer[portblock.Block] // set while a session is open
	refused atomic.Bool                     // the last attempt to open a session failed
}

type session struct {
	rec      api.SessionRecord // its endpoint sealed (SealedEndpoint)
	endpoint netip.AddrPort    // in memory only
	block    portblock.Block
	peer     *recPeer
}

type sessionConfig struct {
	stateDir     string
	exit4, exit6 netip.Addr
	blocks       portblock.Layout
	spool        *spool
	plane        attributionPlane // set once the data plane exists
	now          func() time.Time
	clock        func() *api.ClockSync // the gateway's sync state now, for records; nil: it runs no time monitor
	log          *slog.Logger
	// refusal, if set, says why no session can be attributed on this host
	// (such as an ephemeral port range that overlaps the blocks).
	refusal string
}

// sessionTracker keeps the sessions of the peers that owe records.
type sessionTracker struct {
	cfg    sessionConfig
	byAddr atomic.Pointer[map[netip.Addr]*recPeer] // the data path's view of peers

	mu      sync.Mutex
	blocks  *portblock.Pool
	peers   map[wg.Key]*recPeer
	open    map[wg.Key]*session
	unsaved []api.SessionRecord // closing records whose append failed; retried
	warned  map[string]bool

	opened  atomic.Uint64
	refused *prometheus.CounterVec // by reason

	// seal seals the endpoints of records to the control server's key,
	// with this run's ephemeral key (internal/recordseal); nil until the
	// key is known, and no session opens until then.
	seal atomic.Pointer[recordseal.Sealer]
}

func newSessionTracker(cfg sessionConfig) (*sessionTracker, error) {
	blocks, err := portblock.NewPool(cfg.blocks)
	if err != nil {
		return nil, err
	}
	t := &sessionTracker{cfg: cfg, blocks: blocks, peers: map[wg.Key]*recPeer{}, open: map[wg.Key]*session{}, warned: map[string]bool{},
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_gateway_sessions_refused_total",
			Help: "Sessions of peers owing session records that could not open (their traffic is held back, then dropped), by reason.",
		}, []string{"reason"})}
	t.byAddr.Store(&map[netip.Addr]*recPeer{})
	return t, nil
}

// active reports whether any peer owes records.
func (t *sessionTracker) active() bool { return len(*t.byAddr.Load()) > 0 }

// tracks reports whether key owes records.
func (t *sessionTracker) tracks(key wg.Key) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.peers[key] != nil
}

// exitFor is the exit address for traffic from tunnel address a.
func (t *sessionTracker) exitFor(a netip.Addr) netip.Addr {
	if a.Is4() {
		return t.cfg.exit4
	}
	return t.cfg.exit6
}

// sourcePorts is the userspace exit's SourcePorts hook.
func (t *sessionTracker) sourcePorts(src netip.Addr) (lo, hi uint16, attributed bool) {
	p := (*t.byAddr.Load())[src]
	if p == nil {
		return 0, 0, false
	}
	if b := p.block.Load(); b != nil {
		return b.Lo, b.Hi, true
	}
	return 0, 0, true
}

// update follows the netmap: peers lists installed peers that were added
// or changed, gone the removed ones. Sessions of peers that are gone, no
// longer owe records or changed addresses close.
func (t *sessionTracker) update(peers []api.Peer, gone []wg.Key) {
	t.mu.Lock()
	defer t.mu.Unlock()
	changed := false
	var closing []*session
	var fresh []netip.Addr
	drop := func(k wg.Key) {
		if t.peers[k] == nil {
			return
		}
		delete(t.peers, k)
		if s := t.open[k]; s != nil {
			closing = append(closing, s)
		}
		changed = true
	}
	for _, p := range peers {
		if !p.Record {
			drop(p.PublicKey)
			continue
		}
		addrs := hostAddrsOf(p.AllowedIPs)
		if cur := t.peers[p.PublicKey]; cur != nil && slices.Equal(cur.addrs, addrs) {
			continue
		}
		drop(p.PublicKey)
		t.peers[p.PublicKey] = &recPeer{key: p.PublicKey, addrs: addrs}
		fresh = append(fresh, addrs...)
		changed = true
	}
	for _, k := range gone {
		drop(k)
	}
	if len(closing) > 0 {
		t.closeLocked(closing)
		t.saveOpenLocked()
	}
	if !changed {
		return
	}
	m := make(map[netip.Addr]*recPeer, len(t.peers))
	for _, p := range t.peers {
		for _, a := range p.addrs {
			m[a] = p
		}
	}
	t.byAddr.Store(&m)
	if len(fresh) > 0 && t.cfg.plane != nil {
		// Flows a peer had before it owed records have no block: end them.
		t.cfg.plane.cut(fresh)
	}
}

// hostAddrsOf returns the single addresses among allowed IPs: a session's
// tunnel addresses.
func hostAddrsOf(ps []netip.Prefix) []netip.Addr {
	var out []netip.Addr
	for _, p := range ps {
		if p.IsSingleIP() {
			out = append(out, p.Addr().Unmap())
		}
	}
	return out
}

// observe opens and closes sessions from the device's view of the peers
// that owe records.
func (t *sessionTracker) observe(st map[wg.Key]peerStatus) {
	now := t.cfg.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.unsaved) > 0 {
		if err := t.cfg.spool.append(t.unsaved, true); err == nil {
			t.unsaved = nil
		}
	}
	var opening []*recPeer
	var closing, roaming []*session
	for key, p := range t.peers {
		ps, s := st[key], t.open[key]
		alive := !ps.handshake.IsZero() && now.Sub(ps.handshake) < rejectAfter && ps.endpoint.IsValid()
		switch {
		case s != nil && !alive:
			closing = append(closing, s)
		case s != nil && ps.endpoint != s.endpoint:
			roaming = append(roaming, s)
		case s == nil && alive:
			opening = append(opening, p)
		}
	}
	t.closeLocked(closing)
	var roams []api.SessionRecord
	if len(roaming) > 0 {
		clock := t.stamp()
		for _, s := range roaming {
			// A new endpoint is a new session; the block stays with the
			// peer, so its flows go on undisturbed.
			old := s.rec
			old.End, old.Clock = now, clock
			s.endpoint = st[s.peer.key].endpoint
			s.rec = t.record(s.peer, s.endpoint, s.block, now, clock)
			roams = append(roams, old, s.rec)
		}
	}
	if len(roams) > 0 {
		if err := t.cfg.spool.append(roams, true); err != nil {
			t.cfg.log.Error("session records not saved; retrying", "err", err)
			t.unsaved = append(t.unsaved, roams...)
		}
	}
	opened := t.openLocked(opening, st, now)
	if len(closing)+len(roams)+opened > 0 {
		t.saveOpenLocked()
	}
	t.aliveLocked(now)
}

// aliveLocked notes, as the modification time of the open sessions file,
// that the gateway ran with those sessions open at now: a run that stops
// without closing them (a crash) has them closed at the next start as of
// then (closeLeftSessions), the last time it knew them open. The time is
// not synced to disk: after a power cut it may be earlier, never later.
func (t *sessionTracker) aliveLocked(now time.Time) {
	if len(t.open) == 0 {
		return
	}
	if err := os.Chtimes(filepath.Join(t.cfg.stateDir, openSessionsFile), now, now); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.cfg.log.Warn("noting the open sessions alive", "err", err)
	}
}

// record makes the opening record of a session of p, stamped with the
// gateway's sync state clock, its endpoint sealed (sessions open only
// once the sealer is known).
func (t *sessionTracker) record(p *recPeer, endpoint netip.AddrPort, b portblock.Block, now time.Time, clock *api.ClockSync) api.SessionRecord {
	r := api.SessionRecord{ID: newSessionID(now), PublicKey: p.key, ExitIPv4: t.cfg.exit4, ExitIPv6: t.cfg.exit6,
		PortLo: b.Lo, PortHi: b.Hi, Start: now, Clock: clock}
	r.SealedEndpoint = t.seal.Load().Seal(r.ID, endpoint)
	for _, a := range p.addrs {
		if a.Is4() {
			r.TunnelIPv4 = a
		} else {
			r.TunnelIPv6 = a
		}
	}
	return r
}

// stamp is the gateway's sync state now, as the records it makes carry
// it; nil when it runs no time monitor.
func (t *sessionTracker) stamp() *api.ClockSync {
	if t.cfg.clock == nil {
		return nil
	}
	return t.cfg.clock()
}

// newSessionID returns a new record ID: 48 bits of milliseconds since
// 1970, then 80 random bits (as UUIDv7 orders them). IDs made later sort
// later, so the control server's index of them grows at its end instead of
// taking every insert at a random place; 80 random bits keep IDs made in
// the same millisecond, on any gateway, apart.
func newSessionID(now time.Time) string {
	var b [16]byte
	ms := uint64(now.UnixMilli())
	for i := range 6 {
		b[i] = byte(ms >> (40 - 8*i))
	}
	rand.Read(b[6:])
	return hex.EncodeToString(b[:])
}

// openLocked opens sessions for peers: each takes a free block, the data
// plane maps it, and the opening records are fsynced; only then may the
// peers' packets pass. A peer that cannot open is refused until the next
// attempt, and its held packets are dropped. It returns how many opened.
func (t *sessionTracker) openLocked(peers []*recPeer, st map[wg.Key]peerStatus, now time.Time) int {
	if len(peers) == 0 {
		return 0
	}
	refuse := func(ps []*recPeer, reason string) {
		for _, p := range ps {
			p.refused.Store(true)
		}
		t.refused.WithLabelValues(reason).Add(float64(len(ps)))
	}
	switch {
	case t.cfg.refusal != "":
		t.warnOnce(refusedEphemeral, "session records are required but cannot be attributed on this host: "+t.cfg.refusal)
		refuse(peers, refusedEphemeral)
		return 0
	case t.seal.Load() == nil:
		t.warnOnce(refusedSealKey, "session records are required but the control server's key to seal them to is not known yet (it comes with the netmap; a control server older than this gateway sends none: upgrade it first): recorded traffic is refused until then")
		refuse(peers, refusedSealKey)
		return 0
	case !t.cfg.exit4.IsValid() && !t.cfg.exit6.IsValid():
		t.warnOnce(refusedNoExit, "session records are required but this gateway has no exit address: set --exit-ipv4 and --exit-ipv6; recorded traffic is refused until then")
		refuse(peers, refusedNoExit)
		return 0
	}
	for name, a := range map[string]netip.Addr{"--exit-ipv4": t.cfg.exit4, "--exit-ipv6": t.cfg.exit6} {
		if !a.IsValid() {
			t.warnOnce(name, "session records are required but "+name+" is not set: traffic of recorded sessions in that family is refused")
		}
	}
	var sessions []*session
	var add []tunnet.Attribution
	clock := t.stamp()
	for _, p := range peers {
		b, ok := t.blocks.Acquire()
		if !ok {
			refuse([]*recPeer{p}, refusedNoBlock)
			continue
		}
		ep := st[p.key].endpoint
		s := &session{rec: t.record(p, ep, b, now, clock), endpoint: ep, block: b, peer: p}
		sessions = append(sessions, s)
		add = append(add, t.attributions(s)...)
	}
	if len(sessions) == 0 {
		return 0
	}
	undo := func(reason string) {
		for _, s := range sessions {
			t.blocks.Release(s.block)
			refuse([]*recPeer{s.peer}, reason)
		}
	}
	if err := t.cfg.plane.attribute(add, nil); err != nil {
		t.cfg.log.Error("sessions not opened: mapping their port blocks failed", "sessions", len(sessions), "err", err)
		undo(refusedPlane)
		return 0
	}
	recs := make([]api.SessionRecord, len(sessions))
	for i, s := range sessions {
		recs[i] = s.rec
	}
	if err := t.cfg.spool.append(recs, false); err != nil {
		t.cfg.log.Error("sessions not opened: their records could not be saved", "sessions", len(sessions), "err", err)
		if err := t.cfg.plane.attribute(nil, add); err != nil {
			// The blocks stay mapped to these addresses: they are not given
			// to anyone else.
			t.cfg.log.Error("unmapping port blocks failed; they stay out of use", "err", err)
			for _, s := range sessions {
				s.peer.refused.Store(true)
			}
			t.refused.WithLabelValues(refusedSpool).Add(float64(len(sessions)))
			return 0
		}
		undo(refusedSpool)
		return 0
	}
	for _, s := range sessions {
		t.open[s.peer.key] = s
		s.peer.refused.Store(false)
		b := s.block
		s.peer.block.Store(&b)
	}
	t.opened.Add(uint64(len(sessions)))
	return len(sessions)
}

// attributions are s's tunnel addresses in the families that have an exit
// address (the others' traffic is refused).
func (t *sessionTracker) attributions(s *session) []tunnet.Attribution {
	var out []tunnet.Attribution
	for _, a := range s.peer.addrs {
		if t.exitFor(a).IsValid() {
			out = append(out, tunnet.Attribution{Tunnel: a, Block: s.block})
		}
	}
	return out
}

// closeLocked closes sessions: their packets stop passing, their blocks
// are unmapped and their flows cut before the blocks become free, and the
// closing records are saved.
func (t *sessionTracker) closeLocked(sessions []*session) {
	if len(sessions) == 0 {
		return
	}
	now, clock := t.cfg.now(), t.stamp()
	var remove []tunnet.Attribution
	var addrs []netip.Addr
	for _, s := range sessions {
		s.peer.block.Store(nil)
		remove = append(remove, t.attributions(s)...)
		addrs = append(addrs, s.peer.addrs...)
	}
	unmapped := true
	if t.cfg.plane != nil {
		if err := t.cfg.plane.attribute(nil, remove); err != nil {
			t.cfg.log.Error("unmapping port blocks failed; they stay out of use", "sessions", len(sessions), "err", err)
			unmapped = false
		}
		t.cfg.plane.cut(addrs)
	}
	recs := make([]api.SessionRecord, len(sessions))
	for i, s := range sessions {
		if unmapped {
			t.blocks.Release(s.block)
		}
		delete(t.open, s.peer.key)
		s.rec.End, s.rec.Clock = now, clock
		recs[i] = s.rec
	}
	if err := t.cfg.spool.append(recs, true); err != nil {
		t.cfg.log.Error("session records not saved; retrying", "err", err)
		t.unsaved = append(t.unsaved, recs...)
	}
}

// shutdown closes every session as the gateway stops; the data plane is
// going away with them.
func (t *sessionTracker) shutdown() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cfg.plane = nil
	var all []*session
	for _, s := range t.open {
		all = append(all, s)
	}
	t.closeLocked(all)
	if len(t.unsaved) > 0 {
		// Left in the open sessions file, they are closed at the next start.
		t.cfg.log.Error("session records not saved at shutdown", "records", len(t.unsaved))
		return
	}
	t.saveOpenLocked()
}

func (t *sessionTracker) warnOnce(what, msg string) {
	if !t.warned[what] {
		t.warned[what] = true
		t.cfg.log.Warn(msg)
	}
}

// openCount is the number of open sessions.
func (t *sessionTracker) openCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.open)
}

// freeBlocks is the number of port blocks no session holds.
func (t *sessionTracker) freeBlocks() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.blocks.Free()
}

// saveOpenLocked writes the open sessions' records to the state directory,
// so that a gateway that stopped without closing them (a crash) closes them
// when it starts again. With none open the file is removed.
func (t *sessionTracker) saveOpenLocked() {
	path := filepath.Join(t.cfg.stateDir, openSessionsFile)
	if len(t.open) == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.cfg.log.Warn("removing the open sessions file", "err", err)
		}
		return
	}
	recs := make([]api.SessionRecord, 0, len(t.open))
	for _, s := range t.open {
		recs = append(recs, s.rec)
	}
	b, err := json.Marshal(recs)
	if err == nil {
		err = atomicfile.Write(path, b, 0o600)
	}
	if err != nil {
		t.cfg.log.Error("saving the open sessions", "err", err)
	}
}

// closeLeftSessions closes the sessions that a previous run of the
// gateway left open: it stopped without closing them (a crash). They end
// as of the last time that run knew them open (the file's modification
// time, aliveLocked), or now if that is later than now; no session ends
// before it started. Their blocks were given to no one in between. clock
// is the gateway's sync state now (nil without a time monitor). Endpoints
// in clear, from a version that did not seal them, are sealed with seal
// if it is not nil.
func closeLeftSessions(dir string, sp *spool, now time.Time, clock *api.ClockSync, seal *recordseal.Sealer) error {
	path := filepath.Join(dir, openSessionsFile)
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	end := fi.ModTime()
	if end.After(now) {
		end = now
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var recs []api.SessionRecord
	if err := json.Unmarshal(b, &recs); err != nil {
		return fmt.Errorf("%s is unreadable; move it aside to start (its sessions stay open in the records)", path)
	}
	for i := range recs {
		recs[i].End, recs[i].Clock = end, clock
		if recs[i].End.Before(recs[i].Start) {
			recs[i].End = recs[i].Start
		}
		if seal != nil && recs[i].Endpoint.IsValid() {
			recs[i].SealedEndpoint, recs[i].Endpoint = seal.Seal(recs[i].ID, recs[i].Endpoint), netip.AddrPort{}
		}
	}
	if err := sp.append(recs, true); err != nil {
		return fmt.Errorf("closing the sessions left open: %w", err)
	}
	return os.Remove(path)
}

// peerStatuses reads, from the device's configuration dump, the last
// handshake and endpoint of the peers for which want is true.
func peerStatuses(ipc string, want func(wg.Key) bool) map[wg.Key]peerStatus {
	out := map[wg.Key]peerStatus{}
	var cur wg.Key
	var st peerStatus
	keep := false
	var sec, nsec int64
	flush := func() {
		if keep {
			if sec > 0 || nsec > 0 {
				st.handshake = time.Unix(sec, nsec)
			}
			out[cur] = st
		}
	}
	sc := bufio.NewScanner(strings.NewReader(ipc))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "public_key":
			flush()
			st, sec, nsec, keep = peerStatus{}, 0, 0, false
			if key, err := wg.ParseHexKey(v); err == nil && want(key) {
				cur, keep = key, true
			}
		case "endpoint":
			if ap, err := netip.ParseAddrPort(v); err == nil {
				st.endpoint = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
			}
		case "last_handshake_time_sec":
			sec, _ = strconv.ParseInt(v, 10, 64)
		case "last_handshake_time_nsec":
			nsec, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	flush()
	return out
}

// ephemeralOverlap says, if the kernel's ephemeral port range overlaps the
// port blocks, why sessions cannot be attributed: a socket given an
// ephemeral port in a block would leave from another session's port.
func ephemeralOverlap(l portblock.Layout) string {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return "" // not Linux, or no procfs: nothing to compare
	}
	return rangeOverlap(string(b), l)
}

// rangeOverlap is ephemeralOverlap of the kernel's range as
// ip_local_port_range writes it ("32768\t60999\n").
func rangeOverlap(portRange string, l portblock.Layout) string {
	f := strings.Fields(portRange)
	if len(f) != 2 {
		return ""
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil {
		return ""
	}
	first, last := l.Span()
	if lo <= int(last) && hi >= int(first) {
		return fmt.Sprintf("the kernel's ephemeral ports %d-%d (net.ipv4.ip_local_port_range) overlap the session port blocks %d-%d; narrow one of them", lo, hi, first, last)
	}
	return ""
}

// sessionLoop reads the device every interval, or at once when a held
// packet asks for it, while some peer owes records.
func (g *Gateway) sessionLoop(ctx context.Context) {
	defer g.done.Done()
	t := time.NewTicker(g.cfg.SessionInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-g.attr.kick:
		}
		g.sessionRounds.Add(1) // round n has ended once the count reaches n+1
		if !g.sessions.active() {
			g.attr.flush(g.attr.seq())
			continue
		}
		seq := g.attr.seq()
		ipc, err := g.dev.IpcGet()
		if err != nil {
			g.log.Warn("reading the WireGuard device for sessions", "err", err)
			continue
		}
		g.sessions.observe(peerStatuses(ipc, g.sessions.tracks))
		g.attr.flush(seq)
	}
}

// defaultStopFlush is how long a stopping gateway tries to deliver its
// spooled records (Config.StopFlush).
const defaultStopFlush = 5 * time.Second

// flushSpool delivers the spooled records as the gateway stops (the send
// loop has ended), for at most Config.StopFlush. What is not delivered
// stays in the spool for the next start.
func (g *Gateway) flushSpool() {
	if g.cfg.StopFlush < 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), g.cfg.StopFlush)
	defer cancel()
	for g.spool.pending() > 0 {
		before := g.spool.pending()
		recs, next, _, err := g.spool.peek(api.MaxSessionBatch, maxSessionBatchBytes)
		if err == nil && len(recs) > 0 {
			var res api.SessionBatchResult
			if res, err = g.client.PostSessions(ctx, api.SessionBatch{Records: recs}); err == nil {
				err = g.setAsideIgnored(recs, res)
			}
		}
		if err != nil {
			g.log.Warn("session records not delivered as the gateway stops; they stay in the spool for the next start", "bytes", g.spool.pending(), "err", redact(err.Error()))
			return
		}
		g.recordsSent.Add(uint64(len(recs)))
		if err := g.spool.ack(next); err != nil || g.spool.pending() >= before {
			g.log.Error("session spool", "err", err)
			return
		}
	}
}

// maxSessionBatchBytes keeps a batch well inside the control server's
// limit on request bodies.
const maxSessionBatchBytes = api.MaxSessionBatchBytes * 3 / 4

// sendLoop delivers spooled session records to the control server, in
// order, at least once.
func (g *Gateway) sendLoop(ctx context.Context) {
	defer g.done.Done()
	backoff := 250 * time.Millisecond
	wait := func(d time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	// After the control server refused a batch as wrong (400), its records
	// go one at a time, so that the refused one is found and set aside
	// and the others are delivered.
	oneByOne := 0
	for ctx.Err() == nil {
		batch := api.MaxSessionBatch
		if oneByOne > 0 {
			batch = 1
		}
		recs, next, skipped, err := g.spool.peek(batch, maxSessionBatchBytes)
		if skipped > 0 {
			g.log.Error("session spool holds unreadable records; skipped", "records", skipped)
		}
		if err != nil {
			g.log.Error("reading the session spool", "err", err)
			if !wait(maxBackoff) {
				return
			}
			continue
		}
		if len(recs) == 0 {
			if skipped > 0 {
				g.spool.ack(next)
				continue
			}
			select {
			case <-ctx.Done():
				return
			case <-g.spool.wake:
			}
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		var res api.SessionBatchResult
		res, err = g.client.PostSessions(rctx, api.SessionBatch{Records: recs})
		cancel()
		if err == nil {
			// Records taken but not stored are set aside, not dropped; if
			// that fails they stay in the spool and go again.
			err = g.setAsideIgnored(recs, res)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			// Messages are redacted: a refusal may quote a value.
			var se *api.StatusError
			if errors.As(err, &se) && se.Code == 400 {
				if len(recs) > 1 {
					g.log.Warn("control server refuses a batch of session records; sending them one at a time", "records", len(recs), "reason", redact(se.Message))
					oneByOne = len(recs)
					continue
				}
				if err := g.setAside(recs[:1], api.SetAsideRefused); err != nil {
					g.log.Error("control server refuses a session record, and it could not be set aside; it stays in the spool", "id", recs[0].ID, "err", err)
				} else {
					g.log.Error("control server refuses a session record; set aside in "+refusedFile+" in the state directory", "id", recs[0].ID, "reason", redact(se.Message))
					g.recordsRefused.Add(1)
					oneByOne--
					if err := g.spool.ack(next); err != nil {
						g.log.Error("session spool", "err", err)
					}
					continue
				}
			} else {
				g.log.Debug("sending session records failed; they stay in the spool", "err", redact(err.Error()))
			}
			if !wait(backoff) {
				return
			}
			backoff = min(backoff*2, maxBackoff)
			continue
		}
		backoff = 250 * time.Millisecond
		oneByOne = max(oneByOne-len(recs), 0)
		g.recordsSent.Add(uint64(len(recs)))
		if err := g.spool.ack(next); err != nil {
			g.log.Error("session spool", "err", err)
		}
	}
}
