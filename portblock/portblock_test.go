package portblock

import (
	"strings"
	"testing"
)

func TestDefaultLayout(t *testing.T) {
	if n := Default.Count(); n != 124 {
		t.Fatalf("default layout holds %d blocks, want 124", n)
	}
	if b := Default.Block(0); b.Lo != 1024 || b.Hi != 1279 {
		t.Errorf("block 0 = %d-%d, want 1024-1279", b.Lo, b.Hi)
	}
	if b := Default.Block(123); b.Lo != 32512 || b.Hi != 32767 {
		t.Errorf("block 123 = %d-%d, want 32512-32767", b.Lo, b.Hi)
	}
	if lo, hi := Default.Span(); lo != 1024 || hi != 32767 {
		t.Errorf("span %d-%d", lo, hi)
	}
}

func TestIndexIsDeterministic(t *testing.T) {
	l := Layout{First: 1000, Last: 1999, Size: 300} // 3 blocks; 1900-1999 is no block
	for _, c := range []struct {
		port  uint16
		index int
		ok    bool
	}{
		{999, 0, false}, {1000, 0, true}, {1299, 0, true}, {1300, 1, true},
		{1899, 2, true}, {1900, 0, false}, {65535, 0, false}, {0, 0, false},
	} {
		i, ok := l.Index(c.port)
		if ok != c.ok || (ok && i != c.index) {
			t.Errorf("Index(%d) = %d, %v; want %d, %v", c.port, i, ok, c.index, c.ok)
		}
	}
	// Every port of every block maps back to that block.
	for i := range l.Count() {
		b := l.Block(i)
		for port := int(b.Lo); port <= int(b.Hi); port++ {
			if got, ok := l.Index(uint16(port)); !ok || got != i {
				t.Fatalf("port %d of block %d maps to %d, %v", port, i, got, ok)
			}
		}
	}
}

func TestLayoutValidate(t *testing.T) {
	for _, l := range []Layout{
		{First: 1024, Last: 2047, Size: 0},
		{First: 0, Last: 2047, Size: 256},
		{First: 2048, Last: 1024, Size: 256},
		{First: 1024, Last: 1100, Size: 256},
	} {
		if l.Validate() == nil {
			t.Errorf("%+v accepted", l)
		}
		if l.Count() != 0 {
			t.Errorf("%+v counts %d blocks", l, l.Count())
		}
	}
	if (Layout{First: 65280, Last: 65535, Size: 256}).Count() != 1 {
		t.Error("a block ending at port 65535 is not counted")
	}
}

func TestPoolExhaustionAndRelease(t *testing.T) {
	p, err := NewPool(Layout{First: 1024, Last: 1024 + 3*256 - 1, Size: 256})
	if err != nil {
		t.Fatal(err)
	}
	var got []Block
	for range 3 {
		b, ok := p.Acquire()
		if !ok {
			t.Fatal("pool ran out early")
		}
		got = append(got, b)
	}
	if got[0].Index != 0 || got[1].Index != 1 || got[2].Index != 2 {
		t.Fatalf("blocks in order %v", got)
	}
	if _, ok := p.Acquire(); ok || p.Free() != 0 {
		t.Fatal("acquired a block from an exhausted pool")
	}
	p.Release(got[1])
	p.Release(got[1]) // twice: no-op
	p.Release(got[0])
	if p.Free() != 2 {
		t.Fatalf("free %d after releasing two, want 2", p.Free())
	}
	// The block released longest ago comes back first.
	if b, _ := p.Acquire(); b.Index != 1 {
		t.Fatalf("reacquired block %d, want 1 (released first)", b.Index)
	}
	if b, _ := p.Acquire(); b.Index != 0 || b.Lo != 1024 || b.Hi != 1279 {
		t.Fatalf("reacquired %+v, want block 0 (1024-1279)", b)
	}
	p.Release(Block{Index: 99})
	if p.Free() != 0 {
		t.Fatal("releasing an unknown block freed something")
	}
}

func TestParseLayout(t *testing.T) {
	for _, c := range []struct {
		in     string
		want   Layout
		blocks int
		err    string
	}{
		{in: "1024-32767/256", want: Default, blocks: 124},
		{in: "1024-32767/64", want: Layout{1024, 32767, 64}, blocks: 496},
		{in: "40000-40000/1", want: Layout{40000, 40000, 1}, blocks: 1},
		{in: "1024-32767", err: "want FIRST-LAST/SIZE"},
		{in: "1024/256", err: "want FIRST-LAST/SIZE"},
		{in: "1024-70000/256", err: "last port is not a number"},
		{in: "x-32767/256", err: "first port is not a number"},
		{in: "1024-32767/-1", err: "block size is not a number"},
		{in: "0-32767/256", err: "port 0"},
		{in: "2000-1000/10", err: "hold no block"},
		{in: "1024-32767/0", err: "size must be at least 1"},
	} {
		l, err := ParseLayout(c.in)
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%q: error %v, want one saying %q", c.in, err, c.err)
		case c.err == "" && (err != nil || l != c.want || l.Count() != c.blocks || l.String() != c.in):
			t.Errorf("%q: %+v (%d blocks, %q), %v", c.in, l, l.Count(), l, err)
		}
	}
}

// Whatever ParseLayout accepts holds a block and reads back the same.
func FuzzParseLayout(f *testing.F) {
	for _, s := range []string{"1024-32767/256", "1-65535/65535", "5-4/1", "-/", "1024-32767/", "99999-1/1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLayout(s)
		if err != nil {
			return
		}
		if l.Count() < 1 {
			t.Fatalf("%q parsed to %+v, which holds no block", s, l)
		}
		if back, err := ParseLayout(l.String()); err != nil || back != l {
			t.Fatalf("%q: %+v writes as %q, which reads as %+v, %v", s, l, l, back, err)
		}
	})
}

// The edges of a layout: the first and last port of the first and last
// block map to that block and back, the ports just outside them to the
// neighbour or to none, in layouts whose range is a whole number of blocks,
// is not (the ports after the last whole block belong to none), and holds
// the most blocks a layout can.
func TestLayoutEdges(t *testing.T) {
	for _, c := range []struct {
		l              Layout
		count          int
		lastLo, lastHi uint16 // the last block
		spanHi         uint16
	}{
		{Default, 124, 32512, 32767, 32767},
		{Layout{First: 1024, Last: 32767, Size: 1000}, 31, 31024, 32023, 32023}, // 744 ports after the last block
		{Layout{First: 1, Last: 65535, Size: 1}, 65535, 65535, 65535, 65535},    // the most blocks
		{Layout{First: 1, Last: 65535, Size: 65535}, 1, 1, 65535, 65535},        // the largest block
		{Layout{First: 65535, Last: 65535, Size: 1}, 1, 65535, 65535, 65535},
		{Layout{First: 2, Last: 65535, Size: 2}, 32767, 65534, 65535, 65535}, // 65534 ports, all in blocks
		{Layout{First: 1, Last: 65535, Size: 2}, 32767, 65533, 65534, 65534}, // port 65535 is in no block
	} {
		l := c.l
		if err := l.Validate(); err != nil {
			t.Fatalf("%s: %v", l, err)
		}
		n := l.Count()
		if n != c.count {
			t.Fatalf("%s holds %d blocks, want %d", l, n, c.count)
		}
		first, last := l.Block(0), l.Block(n-1)
		if first.Index != 0 || first.Lo != l.First || int(first.Hi) != int(l.First)+int(l.Size)-1 {
			t.Errorf("%s: first block %+v", l, first)
		}
		if last.Index != n-1 || last.Lo != c.lastLo || last.Hi != c.lastHi {
			t.Errorf("%s: last block %+v, want %d-%d", l, last, c.lastLo, c.lastHi)
		}
		if lo, hi := l.Span(); lo != l.First || hi != c.spanHi || hi != last.Hi {
			t.Errorf("%s: span %d-%d, want %d-%d", l, lo, hi, l.First, c.spanHi)
		}
		// Every block holds Size ports, and the next starts right after it.
		for _, i := range []int{0, 1, n - 2, n - 1} {
			if i < 0 || i >= n {
				continue
			}
			b := l.Block(i)
			if int(b.Hi)-int(b.Lo)+1 != int(l.Size) {
				t.Errorf("%s: block %d is %d-%d, not %d ports", l, i, b.Lo, b.Hi, l.Size)
			}
			if i+1 < n && int(l.Block(i+1).Lo) != int(b.Hi)+1 {
				t.Errorf("%s: block %d ends at %d, block %d starts at %d", l, i, b.Hi, i+1, l.Block(i+1).Lo)
			}
			// Round trips: the block's edges map back to it, the ports
			// just outside to the neighbour or to no block.
			for _, p := range []struct {
				port int
				want int // -1: no block
			}{{int(b.Lo), i}, {int(b.Hi), i}, {int(b.Lo) - 1, i - 1}, {int(b.Hi) + 1, i + 1}} {
				if p.port < 0 || p.port > 65535 {
					continue
				}
				if p.want >= n {
					p.want = -1
				}
				got, ok := l.Index(uint16(p.port))
				if !ok {
					got = -1
				}
				if got != p.want {
					t.Errorf("%s: Index(%d) = %d, want %d (block %d is %d-%d)", l, p.port, got, p.want, i, b.Lo, b.Hi)
				}
			}
		}
		// Ports after the last whole block, up to Last, are in no block.
		for p := int(last.Hi) + 1; p <= int(l.Last); p++ {
			if i, ok := l.Index(uint16(p)); ok {
				t.Fatalf("%s: port %d after the last block maps to block %d", l, p, i)
			}
		}
	}
}
