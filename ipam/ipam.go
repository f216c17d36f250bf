// Package ipam allocates tunnel addresses to peers out of a prefix.
package ipam

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"net/netip"
	"sync"
)

// ErrExhausted is returned by Allocate when every address of the pool is in use.
var ErrExhausted = errors.New("ipam: address pool exhausted")

// Errors MarkUsed wraps, to test with errors.Is.
var (
	ErrNotInPool = errors.New("address is not in the pool")
	ErrReserved  = errors.New("address is reserved")
	ErrInUse     = errors.New("address is already in use")
)

// denseMaxHostBits is the largest pool, in host bits, whose used set is a
// bitmap (128 KiB at 20 bits); larger pools use a map of the used addresses.
const denseMaxHostBits = 20

// Pool allocates single addresses out of a prefix. The first usable address
// (network+1) is reserved for the gateway; for IPv4 the network and broadcast
// addresses are never handed out, and for IPv6 the network address (the
// subnet-router anycast address) is not either.
//
// Allocate is next-fit: it hands out the first free address at or after a
// cursor that only moves forward and wraps around at the end of the prefix,
// so a released address is reused only once the cursor has come round to it
// again, as late as possible. MarkUsed moves the cursor past the address it
// marks if that is further on, so that after loading the allocations of a
// previous run, in any order, allocation carries on after the highest
// address in use rather than refilling gaps that may have been released just
// before (the cursor itself is not persisted).
//
// Pools of up to 2^20 addresses keep the used set as a bitmap, which makes
// Allocate cheap even when the pool is nearly full; larger ones (IPv6 /64
// and the like) keep a map of the used addresses and never walk the space.
//
// A Pool is safe for concurrent use. Make one with NewPool.
type Pool struct {
	prefix   netip.Prefix
	network  netip.Addr
	gateway  netip.Addr
	last     netip.Addr // last address of the prefix (IPv4 broadcast)
	capacity uint64     // addresses that can be handed out, saturating

	mu   sync.Mutex
	used int

	// Dense pools: one bit per offset from network; reserved offsets are set.
	bits []uint64
	size uint64 // number of offsets, 2^host bits
	cur  uint64 // next offset to try, in [2, size]; size means wrap

	// Sparse pools.
	set  map[netip.Addr]struct{}
	prev netip.Addr // the cursor: the search starts after this address
}

// NewPool returns an empty pool for prefix, which must be in canonical form
// (no host bits set) and have room for at least one address besides the
// reserved ones: an IPv4 prefix must be /30 or larger, an IPv6 one /126.
func NewPool(prefix netip.Prefix) (*Pool, error) {
	return newPool(prefix, denseMaxHostBits)
}

func newPool(prefix netip.Prefix, denseMax int) (*Pool, error) {
	if !prefix.IsValid() {
		return nil, errors.New("ipam: invalid prefix")
	}
	a := prefix.Addr()
	if a.Is4In6() {
		return nil, fmt.Errorf("ipam: %s is an IPv4-mapped IPv6 prefix; use the IPv4 form", prefix)
	}
	if m := prefix.Masked(); m != prefix {
		return nil, fmt.Errorf("ipam: %s is not a canonical prefix: it has host bits set (did you mean %s?)", prefix, m)
	}
	if a.Is4() && prefix.Bits() > 30 {
		return nil, fmt.Errorf("ipam: %s is too small for a pool: an IPv4 pool needs at least a /30 (network, gateway, broadcast and one address to hand out)", prefix)
	}
	if a.Is6() && prefix.Bits() > 126 {
		return nil, fmt.Errorf("ipam: %s is too small for a pool: an IPv6 pool needs at least a /126 (network, gateway and one address to hand out)", prefix)
	}
	hostBits := a.BitLen() - prefix.Bits()
	p := &Pool{
		prefix:  prefix,
		network: a,
		gateway: a.Next(),
		last:    lastAddr(prefix),
	}
	reserved := uint64(2)
	if a.Is4() {
		reserved = 3
	}
	if hostBits >= 64 {
		p.capacity = math.MaxUint64
	} else {
		p.capacity = 1<<hostBits - reserved
	}
	if hostBits <= denseMax {
		p.size = 1 << hostBits
		p.bits = make([]uint64, (p.size+63)/64)
		p.setBit(0)
		p.setBit(1)
		if a.Is4() {
			p.setBit(p.size - 1)
		}
		p.cur = 2
	} else {
		p.set = make(map[netip.Addr]struct{})
		p.prev = p.gateway
	}
	return p, nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// Prefix returns the pool's prefix.
func (p *Pool) Prefix() netip.Prefix { return p.prefix }

// Gateway returns the address reserved for the gateway: network+1.
func (p *Pool) Gateway() netip.Addr { return p.gateway }

// Used returns how many addresses are allocated or marked used.
func (p *Pool) Used() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.used
}

// Allocate hands out a free address, or returns ErrExhausted.
func (p *Pool) Allocate() (netip.Addr, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if uint64(p.used) >= p.capacity {
		return netip.Addr{}, ErrExhausted
	}
	p.used++
	if p.bits != nil {
		off, ok := p.nextFree(p.cur, p.size)
		if !ok {
			off, ok = p.nextFree(0, p.cur)
		}
		if !ok { // cannot happen: used < capacity
			p.used--
			return netip.Addr{}, ErrExhausted
		}
		p.setBit(off)
		p.cur = off + 1
		return p.addrAt(off), nil
	}
	a := p.next(p.prev)
	for p.isReserved(a) || p.inSet(a) {
		a = p.next(a)
	}
	p.set[a] = struct{}{}
	p.prev = a
	return a, nil
}

// MarkUsed records a as in use, as when loading the allocations stored by a
// previous run. It is an error (wrapping ErrNotInPool, ErrReserved or
// ErrInUse) if a is outside the pool, reserved or already in use.
func (p *Pool) MarkUsed(a netip.Addr) error {
	if !p.prefix.Contains(a) {
		return fmt.Errorf("ipam: %s: %w %s", a, ErrNotInPool, p.prefix)
	}
	if p.isReserved(a) {
		what := "the network address"
		switch a {
		case p.gateway:
			what = "the gateway address"
		case p.last:
			what = "the broadcast address"
		}
		return fmt.Errorf("ipam: %s: %w: it is %s of %s", a, ErrReserved, what, p.prefix)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bits != nil {
		off := p.offset(a)
		if p.bit(off) {
			return fmt.Errorf("ipam: %s: %w", a, ErrInUse)
		}
		p.setBit(off)
		p.cur = max(p.cur, off+1)
	} else {
		if p.inSet(a) {
			return fmt.Errorf("ipam: %s: %w", a, ErrInUse)
		}
		p.set[a] = struct{}{}
		if a.Compare(p.prev) > 0 {
			p.prev = a
		}
	}
	p.used++
	return nil
}

// Release returns a to the pool. Releasing an address that is not in use, is
// reserved or is outside the pool does nothing.
func (p *Pool) Release(a netip.Addr) {
	if !p.prefix.Contains(a) || p.isReserved(a) {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bits != nil {
		off := p.offset(a)
		if p.bit(off) {
			p.bits[off/64] &^= 1 << (off % 64)
			p.used--
		}
		return
	}
	if p.inSet(a) {
		delete(p.set, a)
		p.used--
	}
}

func (p *Pool) isReserved(a netip.Addr) bool {
	return a == p.network || a == p.gateway || (a.Is4() && a == p.last)
}

// Sparse pools.

func (p *Pool) inSet(a netip.Addr) bool {
	_, ok := p.set[a]
	return ok
}

// next returns the address after a in the prefix, wrapping around.
func (p *Pool) next(a netip.Addr) netip.Addr {
	if a == p.last {
		return p.network
	}
	return a.Next()
}

// Dense pools: offsets from the network address fit in 32 bits.

func low32(a netip.Addr) uint32 {
	b := a.As16()
	return binary.BigEndian.Uint32(b[12:])
}

func (p *Pool) offset(a netip.Addr) uint64 {
	return uint64(low32(a) - low32(p.network))
}

func (p *Pool) addrAt(off uint64) netip.Addr {
	b := p.network.As16()
	binary.BigEndian.PutUint32(b[12:], low32(p.network)+uint32(off))
	if p.network.Is4() {
		return netip.AddrFrom4([4]byte(b[12:]))
	}
	return netip.AddrFrom16(b)
}

func (p *Pool) bit(off uint64) bool { return p.bits[off/64]&(1<<(off%64)) != 0 }
func (p *Pool) setBit(off uint64)   { p.bits[off/64] |= 1 << (off % 64) }

// nextFree returns the first clear bit in [from, to), skipping full words.
func (p *Pool) nextFree(from, to uint64) (uint64, bool) {
	for from < to {
		w := from / 64
		if free := ^p.bits[w] >> (from % 64); free != 0 {
			off := from + uint64(bits.TrailingZeros64(free))
			return off, off < to
		}
		from = (w + 1) * 64
	}
	return 0, false
}
