package recordseal

import (
	"bytes"
	"encoding/base64"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func opener(t testing.TB) *Opener {
	t.Helper()
	priv, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	o, err := NewOpener(priv)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

const id = "019ca9450a00877557bba719c3c6ca0d"

func TestSealOpen(t *testing.T) {
	o := opener(t)
	s, err := NewSealer(o.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	for _, ep := range []netip.AddrPort{netip.MustParseAddrPort("198.51.100.7:40000"), netip.MustParseAddrPort("[2001:db8:1::9]:51000")} {
		sealed := s.Seal(id, ep)
		raw, _ := base64.StdEncoding.DecodeString(sealed)
		addr, _ := ep.Addr().MarshalBinary()
		if strings.Contains(sealed, ep.Addr().String()) || bytes.Contains(raw, addr) {
			t.Fatalf("the sealed form shows the address: %s", sealed)
		}
		got, err := o.Open(id, sealed)
		if err != nil || got != ep {
			t.Fatalf("opened %v %v, want %v", got, err, ep)
		}
		if again := s.Seal(id, ep); again == sealed {
			t.Fatal("two seals of one endpoint are alike (nonce reused)")
		}
		// Bound to its record, its key and its bytes.
		if _, err := o.Open("019ca9450a00877557bba719c3c6ca0e", sealed); !errors.Is(err, ErrNotOpened) {
			t.Fatalf("opened for another record: %v", err)
		}
		if _, err := opener(t).Open(id, sealed); !errors.Is(err, ErrNotOpened) {
			t.Fatalf("opened with another key: %v", err)
		}
		raw[len(raw)-1] ^= 1
		if _, err := o.Open(id, base64.StdEncoding.EncodeToString(raw)); !errors.Is(err, ErrNotOpened) {
			t.Fatalf("opened altered: %v", err)
		}
	}
	if !s.For(o.PublicKey()) || s.For(opener(t).PublicKey()) {
		t.Fatal("For")
	}
	if _, err := NewSealer(make([]byte, 5)); err == nil {
		t.Fatal("a sealer to a malformed key")
	}
}

// FuzzOpen: whatever arrives as a sealed endpoint, Open returns a valid
// endpoint or ErrNotOpened, and never panics.
func FuzzOpen(f *testing.F) {
	o := opener(f)
	s, _ := NewSealer(o.PublicKey())
	f.Add(id, s.Seal(id, netip.MustParseAddrPort("198.51.100.7:40000")))
	f.Add(id, s.Seal(id, netip.MustParseAddrPort("[2001:db8::1]:1")))
	f.Add(id, "")
	f.Add(id, "AQ==")
	f.Add("", "!!!")
	f.Fuzz(func(t *testing.T, id, sealed string) {
		ep, err := o.Open(id, sealed)
		if err != nil && !errors.Is(err, ErrNotOpened) || err == nil && !ep.IsValid() {
			t.Fatalf("Open: %v %v", ep, err)
		}
	})
}

func BenchmarkSeal(b *testing.B) {
	s, _ := NewSealer(opener(b).PublicKey())
	ep := netip.MustParseAddrPort("198.51.100.7:40000")
	for b.Loop() {
		s.Seal(id, ep)
	}
}

// BenchmarkOpen: records of one gateway run, the derived key cached.
func BenchmarkOpen(b *testing.B) {
	o := opener(b)
	s, _ := NewSealer(o.PublicKey())
	sealed := s.Seal(id, netip.MustParseAddrPort("198.51.100.7:40000"))
	for b.Loop() {
		if _, err := o.Open(id, sealed); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOpenNewKey: an X25519 agreement per record, what sealing each
// record with an ephemeral key of its own would cost.
func BenchmarkOpenNewKey(b *testing.B) {
	o := opener(b)
	ep := netip.MustParseAddrPort("198.51.100.7:40000")
	var sealed []string
	for range 200 {
		s, _ := NewSealer(o.PublicKey())
		sealed = append(sealed, s.Seal(id, ep))
	}
	i := 0
	for b.Loop() {
		clear(o.cache)
		if _, err := o.Open(id, sealed[i%len(sealed)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
