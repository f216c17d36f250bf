package portblock

import "testing"

// Found by scripts/mutation.sh: with `b.Index > len(p.used)` in Release, a
// block index one past the last block was looked up and panicked; the
// existing test released only an index far out of range.
func TestReleaseIndexJustOutOfRange(t *testing.T) {
	p, err := NewPool(Layout{First: 1024, Last: 1024 + 3*256 - 1, Size: 256})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, ok := p.Acquire(); !ok {
			t.Fatal("pool ran out early")
		}
	}
	for _, i := range []int{-1, 3} {
		p.Release(Block{Index: i})
		if p.Free() != 0 {
			t.Fatalf("releasing block %d of a 3-block pool freed something", i)
		}
	}
}
