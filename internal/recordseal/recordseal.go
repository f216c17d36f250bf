// Package recordseal seals the endpoint of a session record on the gateway
// to the control server's X25519 public key, so that what a gateway keeps
// on disk until delivery (its spool, its open sessions file) says nothing
// readable about anyone; only the control server opens it.
//
// A gateway makes an ephemeral X25519 key per run, kept in memory only,
// and derives one symmetric key with the server's public key (HKDF-SHA256
// over the shared secret, salted with both public keys). Each endpoint is
// sealed with XChaCha20-Poly1305 under a random 24-byte nonce, bound to
// its record's ID (additional data). A sealed endpoint carries the
// ephemeral public key, so each record opens on its own; the control
// server derives the key once per ephemeral key and caches it, so opening
// costs one AEAD open per record, not an X25519 operation. The ephemeral
// private key is never written: a gateway's disk, read after the run,
// opens nothing.
//
// Wire form (base64, standard, padded) of a sealed endpoint:
//
//	version (1 byte, 1) | ephemeral public key (32) | nonce (24) | ciphertext of netip.AddrPort.MarshalBinary, with its 16-byte tag
package recordseal

import (
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"golang.org/x/crypto/chacha20poly1305"
)

// Scheme names the construction; api.RecordSealKey carries it.
const Scheme = "x25519-hkdf-sha256-xchacha20poly1305-v1"

const (
	version  = 1
	keyLen   = 32
	header   = 1 + keyLen + chacha20poly1305.NonceSizeX
	info     = "meridian session record endpoint v1"
	adPrefix = "meridian session record "
)

// ErrNotOpened is returned for a sealed endpoint that does not open:
// malformed, tampered with, bound to another record, or sealed to
// another key. It names no value.
var ErrNotOpened = errors.New("sealed endpoint does not open (malformed, altered, or sealed to another key)")

// NewKey makes a control server's key pair: the private key's 32 bytes.
func NewKey() ([]byte, error) {
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return k.Bytes(), nil
}

// PublicKey returns the public key of the private key priv.
func PublicKey(priv []byte) ([]byte, error) {
	k, err := ecdh.X25519().NewPrivateKey(priv)
	if err != nil {
		return nil, err
	}
	return k.PublicKey().Bytes(), nil
}

func derive(secret, eph, server []byte) (cipher.AEAD, error) {
	key, err := hkdf.Key(sha256.New, secret, append(append([]byte{}, eph...), server...), info, chacha20poly1305.KeySize)
	if err != nil {
		return nil, err
	}
	return chacha20poly1305.NewX(key)
}

// Sealer seals endpoints to one server key, with one ephemeral key.
type Sealer struct {
	server []byte // the server's public key
	eph    []byte // the ephemeral public key
	aead   cipher.AEAD
}

// NewSealer makes a sealer with a new ephemeral key, to the server's
// public key.
func NewSealer(serverPub []byte) (*Sealer, error) {
	pub, err := ecdh.X25519().NewPublicKey(serverPub)
	if err != nil {
		return nil, fmt.Errorf("record seal key: %w", err)
	}
	eph, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	secret, err := eph.ECDH(pub)
	if err != nil {
		return nil, fmt.Errorf("record seal key: %w", err)
	}
	aead, err := derive(secret, eph.PublicKey().Bytes(), serverPub)
	if err != nil {
		return nil, err
	}
	return &Sealer{server: append([]byte{}, serverPub...), eph: eph.PublicKey().Bytes(), aead: aead}, nil
}

// For reports whether s seals to the server key serverPub.
func (s *Sealer) For(serverPub []byte) bool { return string(s.server) == string(serverPub) }

// Seal seals ep for the record id.
func (s *Sealer) Seal(id string, ep netip.AddrPort) string {
	pt, _ := ep.MarshalBinary() // never fails
	out := make([]byte, header, header+len(pt)+s.aead.Overhead())
	out[0] = version
	copy(out[1:], s.eph)
	nonce := out[1+keyLen : header]
	rand.Read(nonce)
	out = s.aead.Seal(out, nonce, pt, []byte(adPrefix+id))
	return base64.StdEncoding.EncodeToString(out)
}

// maxCached bounds the derived keys an Opener keeps: one per gateway run
// whose records are arriving; past it the cache starts again.
const maxCached = 4096

// Opener opens sealed endpoints with the control server's private key.
// It is safe for concurrent use.
type Opener struct {
	priv *ecdh.PrivateKey
	pub  []byte

	mu    sync.Mutex
	cache map[[keyLen]byte]cipher.AEAD
}

// NewOpener makes an opener of the private key priv.
func NewOpener(priv []byte) (*Opener, error) {
	k, err := ecdh.X25519().NewPrivateKey(priv)
	if err != nil {
		return nil, err
	}
	return &Opener{priv: k, pub: k.PublicKey().Bytes(), cache: map[[keyLen]byte]cipher.AEAD{}}, nil
}

// PublicKey is the public key gateways seal to.
func (o *Opener) PublicKey() []byte { return append([]byte{}, o.pub...) }

// Open opens the endpoint sealed for record id.
func (o *Opener) Open(id, sealed string) (netip.AddrPort, error) {
	b, err := base64.StdEncoding.DecodeString(sealed)
	if err != nil || len(b) < header+chacha20poly1305.Overhead || b[0] != version {
		return netip.AddrPort{}, ErrNotOpened
	}
	var eph [keyLen]byte
	copy(eph[:], b[1:1+keyLen])
	aead, err := o.aeadFor(eph)
	if err != nil {
		return netip.AddrPort{}, ErrNotOpened
	}
	pt, err := aead.Open(nil, b[1+keyLen:header], b[header:], []byte(adPrefix+id))
	if err != nil {
		return netip.AddrPort{}, ErrNotOpened
	}
	var ep netip.AddrPort
	if err := ep.UnmarshalBinary(pt); err != nil || !ep.IsValid() {
		return netip.AddrPort{}, ErrNotOpened
	}
	return ep, nil
}

func (o *Opener) aeadFor(eph [keyLen]byte) (cipher.AEAD, error) {
	o.mu.Lock()
	aead := o.cache[eph]
	o.mu.Unlock()
	if aead != nil {
		return aead, nil
	}
	pub, err := ecdh.X25519().NewPublicKey(eph[:])
	if err != nil {
		return nil, err
	}
	secret, err := o.priv.ECDH(pub)
	if err != nil {
		return nil, err
	}
	if aead, err = derive(secret, eph[:], o.pub); err != nil {
		return nil, err
	}
	o.mu.Lock()
	if len(o.cache) >= maxCached {
		clear(o.cache)
	}
	o.cache[eph] = aead
	o.mu.Unlock()
	return aead, nil
}
