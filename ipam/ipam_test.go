package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// modes runs a test against both used-set representations, so that small
// prefixes exercise the map code too.
func modes(t *testing.T, f func(t *testing.T, newP func(string) *Pool)) {
	for _, m := range []struct {
		name     string
		denseMax int
	}{{"bitmap", denseMaxHostBits}, {"map", -1}} {
		t.Run(m.name, func(t *testing.T) {
			f(t, func(s string) *Pool {
				t.Helper()
				p, err := newPool(netip.MustParsePrefix(s), m.denseMax)
				if err != nil {
					t.Fatal(err)
				}
				if got := p.bits != nil; got != (m.denseMax >= 0) {
					t.Fatalf("bitmap mode = %v", got)
				}
				return p
			})
		})
	}
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func mustAlloc(t *testing.T, p *Pool) netip.Addr {
	t.Helper()
	a, err := p.Allocate()
	if err != nil {
		t.Fatalf("Allocate: %v", err)
	}
	return a
}

func TestNewPoolErrors(t *testing.T) {
	for _, tc := range []struct {
		prefix netip.Prefix
		want   string
	}{
		{netip.Prefix{}, "invalid prefix"},
		{netip.MustParsePrefix("10.0.0.0/31"), "10.0.0.0/31 is too small for a pool: an IPv4 pool needs at least a /30"},
		{netip.MustParsePrefix("10.0.0.1/32"), "10.0.0.1/32 is too small"},
		{netip.MustParsePrefix("fd00::/127"), "fd00::/127 is too small for a pool: an IPv6 pool needs at least a /126"},
		{netip.MustParsePrefix("fd00::1/128"), "fd00::1/128 is too small"},
		{netip.MustParsePrefix("10.0.0.5/24"), "10.0.0.5/24 is not a canonical prefix: it has host bits set (did you mean 10.0.0.0/24?)"},
		{netip.MustParsePrefix("fd00::1/64"), "did you mean fd00::/64?"},
		{netip.MustParsePrefix("::ffff:10.0.0.0/120"), "IPv4-mapped"},
	} {
		_, err := NewPool(tc.prefix)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewPool(%s) = %v, want an error containing %q", tc.prefix, err, tc.want)
		}
	}
	for _, s := range []string{"10.0.0.0/30", "fd00::/126", "0.0.0.0/0", "::/0", "fd00::/64"} {
		if _, err := NewPool(netip.MustParsePrefix(s)); err != nil {
			t.Errorf("NewPool(%s): %v", s, err)
		}
	}
}

func TestExhaustion29(t *testing.T) {
	modes(t, func(t *testing.T, newP func(string) *Pool) {
		p := newP("10.0.0.0/29")
		if g := p.Gateway(); g != addr("10.0.0.1") {
			t.Errorf("Gateway() = %s", g)
		}
		if p.Prefix() != netip.MustParsePrefix("10.0.0.0/29") {
			t.Errorf("Prefix() = %s", p.Prefix())
		}
		for i := 2; i <= 6; i++ {
			if a := mustAlloc(t, p); a != addr(fmt.Sprintf("10.0.0.%d", i)) {
				t.Errorf("allocation %d = %s", i-1, a)
			}
		}
		if a, err := p.Allocate(); !errors.Is(err, ErrExhausted) {
			t.Errorf("6th Allocate = %s, %v; want ErrExhausted", a, err)
		}
		if p.Used() != 5 {
			t.Errorf("Used() = %d, want 5", p.Used())
		}
	})
}

func TestSmallestPools(t *testing.T) {
	modes(t, func(t *testing.T, newP func(string) *Pool) {
		p := newP("192.168.7.0/30")
		if a := mustAlloc(t, p); a != addr("192.168.7.2") {
			t.Errorf("got %s", a)
		}
		if _, err := p.Allocate(); err != ErrExhausted {
			t.Errorf("second Allocate: %v", err)
		}
		p = newP("fd00::/126")
		if a, b := mustAlloc(t, p), mustAlloc(t, p); a != addr("fd00::2") || b != addr("fd00::3") {
			t.Errorf("got %s %s", a, b)
		}
		if _, err := p.Allocate(); err != ErrExhausted {
			t.Errorf("third Allocate: %v", err)
		}
	})
}

func TestReleaseReusedOnlyAfterWrap(t *testing.T) {
	modes(t, func(t *testing.T, newP func(string) *Pool) {
		p := newP("10.0.0.0/29")
		a2, a3, a4 := mustAlloc(t, p), mustAlloc(t, p), mustAlloc(t, p)
		p.Release(a3)
		if p.Used() != 2 {
			t.Errorf("Used() = %d after release, want 2", p.Used())
		}
		// The cursor is at .5: .3 comes back only after .5, .6 and the wrap.
		for _, want := range []string{"10.0.0.5", "10.0.0.6", "10.0.0.3"} {
			if a := mustAlloc(t, p); a != addr(want) {
				t.Errorf("got %s, want %s", a, want)
			}
		}
		if _, err := p.Allocate(); err != ErrExhausted {
			t.Errorf("want ErrExhausted, got %v", err)
		}
		// Release two; the cursor is past .3, so .4 comes before .2.
		p.Release(a2)
		p.Release(a4)
		for _, want := range []string{"10.0.0.4", "10.0.0.2"} {
			if a := mustAlloc(t, p); a != addr(want) {
				t.Errorf("got %s, want %s", a, want)
			}
		}
		// Releasing what is not in use changes nothing.
		p.Release(addr("10.0.0.1"))
		p.Release(addr("10.0.0.7"))
		p.Release(addr("10.9.9.9"))
		p.Release(addr("fd00::3"))
		p.Release(netip.Addr{})
		if p.Used() != 5 {
			t.Errorf("Used() = %d, want 5", p.Used())
		}
	})
}

func TestIPv6Exhaustion120(t *testing.T) {
	modes(t, func(t *testing.T, newP func(string) *Pool) {
		p := newP("fd00:1::/120")
		if p.Gateway() != addr("fd00:1::1") {
			t.Errorf("Gateway() = %s", p.Gateway())
		}
		seen := map[netip.Addr]bool{}
		for i := 0; i < 254; i++ {
			a := mustAlloc(t, p)
			if seen[a] || !p.Prefix().Contains(a) || a == p.Gateway() || a == addr("fd00:1::") {
				t.Fatalf("bad allocation %s", a)
			}
			seen[a] = true
		}
		if !seen[addr("fd00:1::ff")] {
			t.Error("the last address of an IPv6 prefix is usable (there is no broadcast)")
		}
		if _, err := p.Allocate(); err != ErrExhausted {
			t.Errorf("want ErrExhausted, got %v", err)
		}
	})
}

func TestIPv6Slash64Fast(t *testing.T) {
	p, err := NewPool(netip.MustParsePrefix("fd00:2::/64"))
	if err != nil {
		t.Fatal(err)
	}
	if p.bits != nil {
		t.Fatal("a /64 must not use a bitmap")
	}
	start := time.Now()
	// Existing allocations scattered over the space, including the very end.
	for _, s := range []string{"fd00:2::ffff:ffff:ffff:ffff", "fd00:2::1:0:0:1", "fd00:2::5"} {
		if err := p.MarkUsed(addr(s)); err != nil {
			t.Fatal(err)
		}
	}
	// The cursor is now past the last address: it has wrapped to the start.
	want := []string{"fd00:2::2", "fd00:2::3", "fd00:2::4", "fd00:2::6"}
	for _, w := range want {
		if a := mustAlloc(t, p); a != addr(w) {
			t.Errorf("got %s, want %s", a, w)
		}
	}
	for i := 0; i < 100_000; i++ {
		a := mustAlloc(t, p)
		if i%2 == 0 {
			p.Release(a)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("100k allocations in a /64 took %v", d)
	}
	if p.Used() != 3+4+50_000 {
		t.Errorf("Used() = %d", p.Used())
	}
}

func TestIPv4Slash16NearlyFull(t *testing.T) {
	p, err := NewPool(netip.MustParsePrefix("10.20.0.0/16"))
	if err != nil {
		t.Fatal(err)
	}
	// Load 60,000 existing allocations, every address but each 12th, in an
	// order that is not sorted.
	var free []netip.Addr
	marked := 0
	for off := 65534; off >= 2; off-- {
		a := netip.AddrFrom4([4]byte{10, 20, byte(off >> 8), byte(off)})
		if off%12 == 0 || marked == 60_000 {
			free = append(free, a)
			continue
		}
		if err := p.MarkUsed(a); err != nil {
			t.Fatal(err)
		}
		marked++
	}
	if p.Used() != 60_000 {
		t.Fatalf("Used() = %d", p.Used())
	}
	start := time.Now()
	got := map[netip.Addr]bool{}
	for range free {
		a := mustAlloc(t, p)
		if got[a] {
			t.Fatalf("%s allocated twice", a)
		}
		got[a] = true
	}
	for _, a := range free {
		if !got[a] {
			t.Errorf("%s was free but not allocated", a)
		}
	}
	if _, err := p.Allocate(); err != ErrExhausted {
		t.Errorf("want ErrExhausted, got %v", err)
	}
	// Churn on the full pool: each new allocation has to find the one hole.
	for i := 0; i < 10_000; i++ {
		a := netip.AddrFrom4([4]byte{10, 20, byte(i >> 8), byte(i%250 + 2)})
		p.Release(a)
		if b := mustAlloc(t, p); b != a {
			t.Fatalf("released %s, got %s", a, b)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("allocating on a nearly full /16 took %v", d)
	}
}

func TestMarkUsedErrors(t *testing.T) {
	modes(t, func(t *testing.T, newP func(string) *Pool) {
		p := newP("10.0.0.0/24")
		if err := p.MarkUsed(addr("10.0.0.9")); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			a    netip.Addr
			is   error
			want string
		}{
			{addr("10.0.1.5"), ErrNotInPool, "10.0.1.5: address is not in the pool 10.0.0.0/24"},
			{addr("fd00::5"), ErrNotInPool, "not in the pool"},
			{addr("::ffff:10.0.0.5"), ErrNotInPool, "not in the pool"},
			{netip.Addr{}, ErrNotInPool, "not in the pool"},
			{addr("10.0.0.0"), ErrReserved, "10.0.0.0: address is reserved: it is the network address of 10.0.0.0/24"},
			{addr("10.0.0.1"), ErrReserved, "it is the gateway address"},
			{addr("10.0.0.255"), ErrReserved, "it is the broadcast address"},
			{addr("10.0.0.9"), ErrInUse, "10.0.0.9: address is already in use"},
		} {
			err := p.MarkUsed(tc.a)
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("MarkUsed(%s) = %v, want %v containing %q", tc.a, err, tc.is, tc.want)
			}
		}
		if p.Used() != 1 {
			t.Errorf("Used() = %d, want 1", p.Used())
		}
		// MarkUsed moved the cursor past .9.
		if a := mustAlloc(t, p); a != addr("10.0.0.10") {
			t.Errorf("Allocate after MarkUsed(.9) = %s, want 10.0.0.10", a)
		}
		// An allocated address cannot be marked again; a released one can.
		if err := p.MarkUsed(addr("10.0.0.10")); !errors.Is(err, ErrInUse) {
			t.Errorf("MarkUsed of an allocated address: %v", err)
		}
		p.Release(addr("10.0.0.10"))
		if err := p.MarkUsed(addr("10.0.0.10")); err != nil {
			t.Errorf("MarkUsed after Release: %v", err)
		}

		p6 := newP("fd00::/120")
		if err := p6.MarkUsed(addr("fd00::")); !errors.Is(err, ErrReserved) {
			t.Errorf("IPv6 network address: %v", err)
		}
		if err := p6.MarkUsed(addr("fd00::1")); !errors.Is(err, ErrReserved) {
			t.Errorf("IPv6 gateway: %v", err)
		}
		if err := p6.MarkUsed(addr("fd00::ff")); err != nil {
			t.Errorf("IPv6 last address: %v", err)
		}
		if err := p6.MarkUsed(addr("fd00::5%eth0")); !errors.Is(err, ErrNotInPool) {
			t.Errorf("zoned address: %v", err)
		}
	})
}

func TestConcurrentAllocate(t *testing.T) {
	modes(t, func(t *testing.T, newP func(string) *Pool) {
		p := newP("10.1.0.0/22") // 1021 usable
		const workers = 8
		results := make([][]netip.Addr, workers)
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					a, err := p.Allocate()
					if err == ErrExhausted {
						return
					}
					if err != nil {
						t.Error(err)
						return
					}
					results[w] = append(results[w], a)
					if i%7 == 0 { // some churn, and readers
						p.Release(a)
						results[w] = results[w][:len(results[w])-1]
						_ = p.Used()
					}
				}
			}()
		}
		wg.Wait()
		seen := map[netip.Addr]bool{}
		for _, r := range results {
			for _, a := range r {
				if seen[a] {
					t.Fatalf("%s handed out twice", a)
				}
				seen[a] = true
			}
		}
		if len(seen) != 1021 || p.Used() != 1021 {
			t.Errorf("%d distinct addresses, Used() = %d; want 1021", len(seen), p.Used())
		}
	})
}

func BenchmarkAllocate(b *testing.B) {
	b.Run("v4-16-60k-used", func(b *testing.B) {
		p, _ := NewPool(netip.MustParsePrefix("10.20.0.0/16"))
		for i := 0; i < 60_000; i++ {
			if _, err := p.Allocate(); err != nil {
				b.Fatal(err)
			}
		}
		b.ResetTimer()
		for b.Loop() {
			a, err := p.Allocate()
			if err != nil {
				b.Fatal(err)
			}
			p.Release(a)
		}
	})
	b.Run("v4-16-one-hole", func(b *testing.B) {
		// Worst case: a full pool where each Allocate must go all the way
		// round to the one address just released.
		p, _ := NewPool(netip.MustParsePrefix("10.20.0.0/16"))
		var last netip.Addr
		for {
			a, err := p.Allocate()
			if err != nil {
				break
			}
			last = a
		}
		b.ResetTimer()
		for b.Loop() {
			p.Release(last)
			a, err := p.Allocate()
			if err != nil || a != last {
				b.Fatal(a, err)
			}
		}
	})
	b.Run("v6-64", func(b *testing.B) {
		p, _ := NewPool(netip.MustParsePrefix("fd00::/64"))
		for i := 0; i < 60_000; i++ {
			if _, err := p.Allocate(); err != nil {
				b.Fatal(err)
			}
		}
		b.ResetTimer()
		for b.Loop() {
			a, err := p.Allocate()
			if err != nil {
				b.Fatal(err)
			}
			p.Release(a)
		}
	})
}
