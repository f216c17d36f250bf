package ledger

import (
	"strings"
	"testing"
)

// Found by scripts/mutation.sh: with `id == "" && len(id) > 64` in
// validKeyID, a key id longer than 64 characters was accepted; no test
// tried one at the limit.
func TestKeyIDLengthLimit(t *testing.T) {
	key := testKey("k")
	id64 := strings.Repeat("a", 64)
	k, err := parseKeyring(id64 + " " + key + "\n")
	if err != nil || k.active != id64 {
		t.Fatalf("a 64-character key id: %v", err)
	}
	if _, err := parseKeyring(id64 + "b " + key + "\n"); err == nil || !strings.Contains(err.Error(), "line 1: a key id is 1 to 64") {
		t.Fatalf("a 65-character key id: error %v", err)
	}
}

// Found by scripts/mutation.sh: every range boundary of validKeyID's
// character classes could move by one unnoticed. The characters at each
// end of a range are accepted; their neighbours outside it are refused.
func TestKeyIDCharacterClasses(t *testing.T) {
	key := testKey("k")
	for _, id := range []string{"a", "z", "A", "Z", "0", "9", ".", "_", "-", "aZ09._-"} {
		if _, err := parseKeyring(id + " " + key + "\n"); err != nil {
			t.Errorf("key id %q refused: %v", id, err)
		}
	}
	for _, id := range []string{"`", "{", "@", "[", "/", ":", "k/1", "k\x00", "é"} {
		if _, err := parseKeyring(id + " " + key + "\n"); err == nil {
			t.Errorf("key id %q accepted", id)
		}
	}
}

// Found by scripts/mutation.sh: the 32-character limit of a record kind and
// the ends of its character ranges could move by one unnoticed.
func TestKindLimits(t *testing.T) {
	for _, kind := range []string{strings.Repeat("k", 32), "a", "z", "0", "9", "-", "session"} {
		if err := checkKind(kind); err != nil {
			t.Errorf("kind %q refused: %v", kind, err)
		}
	}
	for _, kind := range []string{"", strings.Repeat("k", 33), "`", "{", "/", ":", "A", "_", purgeKind, accessKind} {
		if err := checkKind(kind); err == nil {
			t.Errorf("kind %q accepted", kind)
		}
	}
}

// Found by scripts/mutation.sh: parseSealed's format checks (both colons,
// the one canonical base64) were not each tested alone.
func TestParseSealedFormatAlone(t *testing.T) {
	ct := strings.Repeat("A", 40) // 30 bytes: long enough for a nonce and tag
	if _, _, err := parseSealed("v1:k1:" + ct); err != nil {
		t.Fatalf("well-formed value refused: %v", err)
	}
	for _, s := range []string{
		"v1",                      // no colon
		"v1:" + ct,                // one colon: no key id
		"v1:k1:" + ct[:39] + "B=", // stray bits in the last character
		"v1:k1:" + ct[:20] + "\n" + ct[20:],
	} {
		if _, _, err := parseSealed(s); err == nil {
			t.Errorf("parseSealed(%q) accepted", s)
		}
	}
}
