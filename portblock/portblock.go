// Package portblock carves source ports into fixed blocks for deterministic
// address mapping (RFC 7422): each attributed session holds one block of
// source ports on the gateway's exit address while it is open, so an exit
// address, port and time lead to one session without logging connections.
//
// Block k of a Layout is the ports [First+k*Size, First+(k+1)*Size). The
// mapping from a port to its block is arithmetic (Layout.Index), so the
// block assignment alone traces a port.
package portblock

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Layout says which ports are carved into blocks and how large they are.
type Layout struct {
	First uint16 // first port of block 0
	Last  uint16 // last port that may belong to a block
	Size  uint16 // ports per block
}

// Default is ports 1024-32767 in blocks of 256: 124 blocks. It stays below
// Linux's default ephemeral range (32768-60999), so that flows the kernel
// gives an ephemeral port never take a port of a block.
var Default = Layout{First: 1024, Last: 32767, Size: 256}

// Validate checks that the layout holds at least one block.
func (l Layout) Validate() error {
	switch {
	case l.Size == 0:
		return errors.New("port blocks: size must be at least 1")
	case l.First == 0:
		return errors.New("port blocks: port 0 cannot be a source port")
	case l.Last < l.First || int(l.Last)-int(l.First)+1 < int(l.Size):
		return fmt.Errorf("port blocks: ports %d-%d hold no block of %d", l.First, l.Last, l.Size)
	}
	return nil
}

// String writes the layout as ParseLayout reads it: "1024-32767/256".
func (l Layout) String() string {
	return fmt.Sprintf("%d-%d/%d", l.First, l.Last, l.Size)
}

// ParseLayout reads "FIRST-LAST/SIZE": the ports FIRST to LAST carved into
// blocks of SIZE ports, e.g. "1024-32767/256" (Default, 124 blocks) or
// "1024-32767/64" (496 blocks of 64 ports). The layout must hold a block.
func ParseLayout(s string) (Layout, error) {
	span, size, ok := strings.Cut(s, "/")
	first, last, ok2 := strings.Cut(span, "-")
	if !ok || !ok2 {
		return Layout{}, fmt.Errorf("port blocks %q: want FIRST-LAST/SIZE, e.g. %s", s, Default)
	}
	var l Layout
	for _, f := range []struct {
		name, text string
		v          *uint16
	}{{"first port", first, &l.First}, {"last port", last, &l.Last}, {"block size", size, &l.Size}} {
		n, err := strconv.ParseUint(f.text, 10, 16)
		if err != nil {
			return Layout{}, fmt.Errorf("port blocks %q: the %s is not a number from 0 to 65535", s, f.name)
		}
		*f.v = uint16(n)
	}
	if err := l.Validate(); err != nil {
		return Layout{}, err
	}
	return l, nil
}

// Count is the number of whole blocks in the layout.
func (l Layout) Count() int {
	if l.Validate() != nil {
		return 0
	}
	return (int(l.Last) - int(l.First) + 1) / int(l.Size)
}

// Block returns block i.
func (l Layout) Block(i int) Block {
	lo := int(l.First) + i*int(l.Size)
	return Block{Index: i, Lo: uint16(lo), Hi: uint16(lo + int(l.Size) - 1)}
}

// Index returns the block that holds port, if any.
func (l Layout) Index(port uint16) (int, bool) {
	if port < l.First {
		return 0, false
	}
	i := (int(port) - int(l.First)) / int(l.Size)
	if i >= l.Count() {
		return 0, false
	}
	return i, true
}

// Span is the ports that blocks cover: [First, First+Count*Size-1].
func (l Layout) Span() (lo, hi uint16) {
	return l.First, uint16(int(l.First) + l.Count()*int(l.Size) - 1)
}

// Block is one block of source ports.
type Block struct {
	Index  int
	Lo, Hi uint16
}

// Pool hands out the blocks of a layout. It reuses the block released
// longest ago first, which keeps a block unused for as long as possible
// between two sessions. A Pool is not safe for concurrent use.
type Pool struct {
	layout Layout
	free   []int // block indexes, least recently released first
	used   []bool
}

// NewPool returns a pool with every block of l free.
func NewPool(l Layout) (*Pool, error) {
	if err := l.Validate(); err != nil {
		return nil, err
	}
	p := &Pool{layout: l, used: make([]bool, l.Count())}
	for i := range p.used {
		p.free = append(p.free, i)
	}
	return p, nil
}

// Layout returns the pool's layout.
func (p *Pool) Layout() Layout { return p.layout }

// Acquire takes a free block; ok is false when every block is in use.
func (p *Pool) Acquire() (b Block, ok bool) {
	if len(p.free) == 0 {
		return Block{}, false
	}
	i := p.free[0]
	p.free = p.free[1:]
	p.used[i] = true
	return p.layout.Block(i), true
}

// Release returns a block taken by Acquire. Releasing a free block is a
// no-op.
func (p *Pool) Release(b Block) {
	if b.Index < 0 || b.Index >= len(p.used) || !p.used[b.Index] {
		return
	}
	p.used[b.Index] = false
	p.free = append(p.free, b.Index)
}

// Free is the number of free blocks.
func (p *Pool) Free() int { return len(p.free) }
