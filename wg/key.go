// Package wg holds WireGuard keys, the wg-quick configuration format and QR codes.
package wg

import (
	"crypto/rand"
	"crypto/subtle"
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

// lowOrder are the encodings of the Curve25519 points of small order (1,
// 2, 4 or 8), as libsodium's blacklist lists them: 0, 1, the two points of
// order 8, p-1, and the non-canonical p and p+1. The top bit of a key is
// ignored by X25519 (RFC 7748 §5), so it is ignored here too: 14 encodings
// in all. A Diffie-Hellman exchange with any of them yields all zeroes, so
// no handshake with such a peer key can ever succeed.
var lowOrder = [...]Key{
	{},     // 0 (order 4)
	{0x01}, // 1 (order 1)
	{0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00}, // order 8
	{0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef, 0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f, 0x11, 0x57}, // order 8
	{0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, // p-1 (order 2)
	{0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, // p = 0
	{0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, // p+1 = 1
}

// IsLowOrder reports whether k, as a public key, is a point of small order
// (including the all-zero key): no WireGuard handshake with it can work.
func (k Key) IsLowOrder() bool {
	k[31] &= 0x7f
	for _, lo := range lowOrder {
		if subtle.ConstantTimeCompare(k[:], lo[:]) == 1 {
			return true
		}
	}
	return false
}

// CheckPublicKey says why k cannot be a peer's public key, or nil.
func CheckPublicKey(k Key) error {
	if k.IsZero() {
		return errKeyZero
	}
	if k.IsLowOrder() {
		return errors.New("public key is a low-order Curve25519 point: no handshake with it can succeed")
	}
	return nil
}
