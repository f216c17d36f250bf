package gateway

import (
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/tun"
)

// maxHeld bounds the packets held back for peers whose session is opening.
const maxHeld = 512

// attributedTUN is the data plane's tun.Device as wireguard-go writes to
// it. Packets of peers that owe session records pass only while the peer's
// session holds a port block, so nothing of theirs leaves from a port no
// record covers. A packet of such a peer without a session is held back and
// the session loop asked to look at once (the packet shows that the peer
// has just handshaken); once the session is open the packet goes on.
// Packets of all other peers pass untouched.
type attributedTUN struct {
	tun.Device
	sessions *sessionTracker
	kick     chan struct{}

	mu      sync.Mutex
	held    []heldPacket
	nextSeq uint64

	dropped atomic.Uint64
}

type heldPacket struct {
	buf    []byte // a copy, offset included
	offset int
	seq    uint64
	src    netip.Addr
	peer   *recPeer
}

func newAttributedTUN(dev tun.Device, s *sessionTracker) *attributedTUN {
	return &attributedTUN{Device: dev, sessions: s, kick: make(chan struct{}, 1)}
}

func (d *attributedTUN) Write(bufs [][]byte, offset int) (int, error) {
	peers := *d.sessions.byAddr.Load()
	if len(peers) == 0 {
		return d.Device.Write(bufs, offset)
	}
	var pass [][]byte
	for i, buf := range bufs {
		ok := d.admit(peers, buf, offset)
		if !ok && pass == nil {
			pass = append(make([][]byte, 0, len(bufs)), bufs[:i]...)
		}
		if ok && pass != nil {
			pass = append(pass, buf)
		}
	}
	if pass == nil {
		return d.Device.Write(bufs, offset)
	}
	if len(pass) > 0 {
		if _, err := d.Device.Write(pass, offset); err != nil {
			return 0, err
		}
	}
	return len(bufs), nil
}

// admit decides whether a packet passes now. A packet that does not is
// held (its peer's session may be opening) or dropped.
func (d *attributedTUN) admit(peers map[netip.Addr]*recPeer, buf []byte, offset int) bool {
	src, ok := sourceAddr(buf[offset:])
	if !ok {
		return true
	}
	p := peers[src]
	switch {
	case p == nil:
		return true
	case p.block.Load() != nil:
		if d.sessions.exitFor(src).IsValid() {
			return true
		}
	case !p.refused.Load():
		d.hold(heldPacket{buf: append([]byte(nil), buf...), offset: offset, src: src, peer: p})
		return false
	}
	d.dropped.Add(1)
	return false
}

func (d *attributedTUN) hold(h heldPacket) {
	d.mu.Lock()
	if len(d.held) < maxHeld {
		h.seq = d.nextSeq
		d.nextSeq++
		d.held = append(d.held, h)
	} else {
		d.dropped.Add(1)
	}
	d.mu.Unlock()
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// seq marks the packets held so far: flush(seq) decides about them.
func (d *attributedTUN) seq() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.nextSeq
}

// flush passes the held packets whose peer now has a session (or no longer
// owes records), and drops those held before before whose peer still has
// none: the session loop has looked and could not open it. Later ones wait
// for the next look.
func (d *attributedTUN) flush(before uint64) {
	d.mu.Lock()
	held := d.held
	d.held = nil
	d.mu.Unlock()
	if len(held) == 0 {
		return
	}
	peers := *d.sessions.byAddr.Load()
	var keep []heldPacket
	byOffset := map[int][][]byte{}
	for _, h := range held {
		p := peers[h.src]
		switch {
		case p == nil: // it no longer owes records
			byOffset[h.offset] = append(byOffset[h.offset], h.buf)
		case p != h.peer:
			d.dropped.Add(1) // the peer changed under its address
		case p.block.Load() != nil && d.sessions.exitFor(h.src).IsValid():
			byOffset[h.offset] = append(byOffset[h.offset], h.buf)
		case h.seq < before || p.refused.Load():
			p.refused.Store(true)
			d.dropped.Add(1)
		default:
			keep = append(keep, h)
		}
	}
	if len(keep) > 0 {
		d.mu.Lock()
		d.held = append(keep, d.held...)
		d.mu.Unlock()
	}
	for offset, bufs := range byOffset {
		d.Device.Write(bufs, offset) // as wireguard-go does, a failed write loses the packets
	}
}

// sourceAddr returns the source address of an IP packet.
func sourceAddr(pkt []byte) (netip.Addr, bool) {
	if len(pkt) == 0 {
		return netip.Addr{}, false
	}
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) >= 20 {
			return netip.AddrFrom4([4]byte(pkt[12:16])), true
		}
	case 6:
		if len(pkt) >= 40 {
			return netip.AddrFrom16([16]byte(pkt[8:24])), true
		}
	}
	return netip.Addr{}, false
}
