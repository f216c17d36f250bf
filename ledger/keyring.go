package ledger

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
)

// A Keyring holds the keys that seal personal data at rest, by id. The last
// key loaded is the active one: Seal uses it, Open uses whichever key a
// sealed value names.
//
// Key files (or environment variables) hold one key a line:
//
//	# comments and blank lines are ignored
//	2026-01 q3Jf...base64 of 32 random bytes...=
//	2026-07 8xTb...=
//
// A new key is made with `head -c 32 /dev/urandom | base64`. To rotate, add
// it as the last line, restart, run Ledger.RotateKey, then remove the old
// line.
type Keyring struct {
	keys   map[string]cipher.AEAD
	active string
}

// LoadKeyring reads a keyring from the file named by spec, or from the
// environment variable VAR when spec is "env:VAR". Errors never contain key
// material.
func LoadKeyring(spec string) (*Keyring, error) {
	var text, from string
	if name, ok := strings.CutPrefix(spec, "env:"); ok {
		from = "environment variable " + name
		text = os.Getenv(name)
		if text == "" {
			return nil, fmt.Errorf("keyring: %s is not set", from)
		}
	} else {
		b, err := os.ReadFile(spec)
		if err != nil {
			return nil, fmt.Errorf("keyring: %w", err)
		}
		from, text = spec, string(b)
	}
	k, err := parseKeyring(text)
	if err != nil {
		return nil, fmt.Errorf("keyring %s: %w", from, err)
	}
	return k, nil
}

func parseKeyring(text string) (*Keyring, error) {
	k := &Keyring{keys: map[string]cipher.AEAD{}}
	// Errors name lines, never ids: a line written the wrong way round with
	// a key in unpadded base64 has a key where the id should be.
	lineOf := map[string]int{}
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 {
			return nil, fmt.Errorf("line %d: want \"<key id> <base64 of 32 bytes>\"", i+1)
		}
		id, encoded := fields[0], fields[1]
		if !validKeyID(id) {
			// The id is not echoed: a line written the wrong way round
			// would put the key there.
			return nil, fmt.Errorf("line %d: a key id is 1 to 64 letters, digits, '.', '_' or '-'", i+1)
		}
		if first, dup := lineOf[id]; dup {
			return nil, fmt.Errorf("line %d: the key id of line %d appears again", i+1, first)
		}
		key, err := base64.StdEncoding.DecodeString(encoded)
		if err != nil || len(key) != 32 {
			return nil, fmt.Errorf("line %d: the key is not 32 bytes of base64", i+1)
		}
		lineOf[id] = i + 1
		k.keys[id] = newAEAD(key)
		k.active = id
	}
	if k.active == "" {
		return nil, errors.New("no keys: want lines \"<key id> <base64 of 32 bytes>\", the last one active")
	}
	return k, nil
}

func validKeyID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// newAEAD returns AES-256-GCM under key, with a random 96-bit nonce
// prepended to each ciphertext.
func newAEAD(key []byte) cipher.AEAD {
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(err) // key is always 32 bytes
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		panic(err)
	}
	return aead
}

// newDataKey returns a fresh random 256-bit key.
func newDataKey() []byte {
	key := make([]byte, 32)
	rand.Read(key)
	return key
}

// Seal encrypts plaintext under the active key with AES-256-GCM. aad names
// what the value is ("subscriber.email"): Open fails unless given the same,
// so a sealed value cannot be moved to another field. The result is
// "v1:<key id>:<base64 of nonce, ciphertext and tag>".
func (k *Keyring) Seal(plaintext, aad string) string {
	return formatSealed(k.active, k.keys[k.active].Seal(nil, nil, []byte(plaintext), []byte(aad)))
}

// Open decrypts a value made by Seal with the same aad, under the key it
// names. Errors name the key id and aad, never the value.
func (k *Keyring) Open(sealed, aad string) (string, error) {
	id, ciphertext, err := parseSealed(sealed)
	if err != nil {
		return "", err
	}
	aead, ok := k.keys[id]
	if !ok {
		return "", fmt.Errorf("sealed %s: unknown key id %q (the keyring has %s)", aad, id, strings.Join(k.ids(), ", "))
	}
	plaintext, err := aead.Open(nil, nil, ciphertext, []byte(aad))
	if err != nil {
		return "", fmt.Errorf("sealed %s: does not open under key %q: altered, or sealed for another field", aad, id)
	}
	return string(plaintext), nil
}

func (k *Keyring) ids() []string {
	var ids []string
	for id := range k.keys {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

const sealedVersion = "v1"

func formatSealed(keyID string, ciphertext []byte) string {
	return sealedVersion + ":" + keyID + ":" + base64.StdEncoding.EncodeToString(ciphertext)
}

// parseSealed splits a sealed value into its key id and ciphertext. It
// accepts exactly what formatSealed produces.
func parseSealed(s string) (keyID string, ciphertext []byte, err error) {
	version, rest, ok1 := strings.Cut(s, ":")
	keyID, encoded, ok2 := strings.Cut(rest, ":")
	if !ok1 || !ok2 || version != sealedVersion {
		return "", nil, errors.New("sealed value: want \"v1:<key id>:<base64>\"")
	}
	if !validKeyID(keyID) {
		return "", nil, errors.New("sealed value: malformed key id")
	}
	ciphertext, err = base64.StdEncoding.DecodeString(encoded)
	// The decoder skips newlines and tolerates stray bits: insist on the
	// one canonical encoding.
	if err != nil || base64.StdEncoding.EncodeToString(ciphertext) != encoded {
		return "", nil, errors.New("sealed value: malformed base64")
	}
	if len(ciphertext) < 12+16 {
		return "", nil, errors.New("sealed value: too short to hold a nonce and tag")
	}
	return keyID, ciphertext, nil
}
