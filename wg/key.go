// Package wg holds WireGuard keys, the wg-quick configuration format and QR codes.
package wg

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"

	"golang.org/x/crypto/curve25519"
)

// Key is a Curve25519 key, private or public, as WireGuard uses it.
type Key [32]byte

// NewPrivateKey returns a fresh, clamped private key.
func NewPrivateKey() (Key, error) {
	var k Key
	if _, err := rand.Read(k[:]); err != nil {
		return Key{}, err
	}
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
	return k, nil
}

// Public returns the public key of a private key.
func (k Key) Public() Key {
	var pub Key
	curve25519.ScalarBaseMult((*[32]byte)(&pub), (*[32]byte)(&k))
	return pub
}

// IsZero reports whether the key is all zeroes (unset).
func (k Key) IsZero() bool { return k == Key{} }

// String returns the base64 form used in wg-quick files and the API.
func (k Key) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// Hex returns the hex form used by the WireGuard UAPI.
func (k Key) Hex() string { return hex.EncodeToString(k[:]) }

// MarshalText implements encoding.TextMarshaler (base64).
func (k Key) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler (base64).
func (k *Key) UnmarshalText(b []byte) error {
	p, err := ParseKey(string(b))
	if err != nil {
		return err
	}
	*k = p
	return nil
}

var errKeyZero = errors.New("key is all zeroes")

// ParseKey parses a base64 WireGuard key.
func ParseKey(s string) (Key, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != 32 {
		return Key{}, fmt.Errorf("invalid WireGuard key: want 44 characters of base64 encoding 32 bytes")
	}
	var k Key
	copy(k[:], b)
	if k.IsZero() {
		return Key{}, errKeyZero
	}
	return k, nil
}

// ParseHexKey parses a key in the hex form of the UAPI.
func ParseHexKey(s string) (Key, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		return Key{}, fmt.Errorf("invalid hex WireGuard key")
	}
	var k Key
	copy(k[:], b)
	return k, nil
}
