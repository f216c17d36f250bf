package wg

import (
	"testing"

	"golang.org/x/crypto/curve25519"
)

// TestLowOrderKeys checks every listed encoding, with and without its top
// bit, against X25519 itself: a Diffie-Hellman with it gives all zeroes
// (which x/crypto refuses), so the list holds no key that could work; and
// real public keys are not caught by it.
func TestLowOrderKeys(t *testing.T) {
	priv, err := NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	for i, lo := range lowOrder {
		for _, top := range []byte{0, 0x80} {
			k := lo
			k[31] |= top
			if _, err := curve25519.X25519(priv[:], k[:]); err == nil {
				t.Errorf("entry %d (top bit %#x): X25519 accepted it, so it is not of low order", i, top)
			}
			if !k.IsLowOrder() {
				t.Errorf("entry %d (top bit %#x): IsLowOrder false", i, top)
			}
			if CheckPublicKey(k) == nil {
				t.Errorf("entry %d (top bit %#x): CheckPublicKey accepted it", i, top)
			}
		}
	}
	for range 1000 {
		p, _ := NewPrivateKey()
		if pub := p.Public(); pub.IsLowOrder() || CheckPublicKey(pub) != nil {
			t.Fatalf("a real public key %s refused", pub)
		}
	}
}
