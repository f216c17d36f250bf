package ledger

import (
	"encoding/base64"
	"strings"
	"testing"
)

// isKeyMaterial reports whether s reads as 32 bytes of base64, padded or
// not: what a key looks like however it was written.
func isKeyMaterial(s string) bool {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil && len(b) == 32 {
			return true
		}
	}
	return false
}

// FuzzParseKeyring: a keyring file is read line by line without panicking;
// what is accepted holds one key per "<id> <key>" line, the last one
// active; and no error shows key material, even from a line written the
// wrong way round or a key in another base64 alphabet.
func FuzzParseKeyring(f *testing.F) {
	k1, k2 := testKey("k1"), testKey("k2")
	raw := "nbDOJf9GInO6RjjuDmMAuuekaM4y4MoELdUC5tvRljE" // 32 bytes, unpadded, with no '+' or '/'
	for _, s := range []string{
		"# test keys\n\nk1 " + k1 + "\n",
		"k1 " + k1 + "\nk2 " + k2 + "\n",
		"  k1\t" + k1 + "  \r\n# retired below\nk2 " + k2,
		"k1 " + k1 + "\n" + k2 + " k2\n",
		raw + " k1\n",
		"k1 " + raw + "\n",
		"k1 " + k1 + "\nk1 " + k2 + "\n",
		"k:1 " + k1 + "\n",
		"k1 " + k1[:20] + "\n",
		"k1\n",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		k, err := parseKeyring(text)
		var keyLines, last string
		var n int
		for _, line := range strings.Split(text, "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			n++
			keyLines += line + "\n"
			if fs := strings.Fields(line); len(fs) > 0 {
				last = fs[0]
			}
		}
		if err != nil {
			for _, field := range strings.Fields(keyLines) {
				if isKeyMaterial(field) && strings.Contains(err.Error(), field) {
					t.Fatalf("error shows key material %q: %v", field, err)
				}
			}
			return
		}
		if len(k.keys) != n || k.active != last {
			t.Fatalf("%d key lines, last %q: keyring has %d keys, active %q", n, last, len(k.keys), k.active)
		}
		// Every key works: what it seals, it opens.
		if got, err := k.Open(k.Seal("198.51.100.7", "aad"), "aad"); err != nil || got != "198.51.100.7" {
			t.Fatalf("seal and open: %q, %v", got, err)
		}
	})
}
