package api

import (
	"strings"
	"testing"
)

// tokenChars are the characters of the join tokens the control server
// makes: base64url and hex parts, joined by dots.
const tokenChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."

const testCAHash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

func TestParseJoinToken(t *testing.T) {
	good := "mrdjoin1.abcd1234.s3cr3t-s3cr3t_s3cr3t." + testCAHash
	want := JoinTokenParts{ID: "abcd1234", Secret: "s3cr3t-s3cr3t_s3cr3t", CAHash: testCAHash}
	for _, tc := range []struct {
		name, token string
		want        string // error text; "": parses to want
	}{
		{"a valid token", good, ""},
		{"surrounding white space, as read from a file", " \t" + good + "\r\n", ""},
		{"a fingerprint in capitals", strings.TrimSuffix(good, testCAHash) + strings.ToUpper(testCAHash), ""},
		{"empty", "", "malformed join token: want mrdjoin1."},
		{"only white space", " \n", "malformed join token: want mrdjoin1."},
		{"another prefix", "mrdjoin2" + strings.TrimPrefix(good, "mrdjoin1"), "malformed join token: want"},
		{"an admin token", "mrd-admin-abcdefghijklmnopqrstuvwxyz", "malformed join token: want"},
		{"the prefix in capitals", "MRDJOIN1" + strings.TrimPrefix(good, "mrdjoin1"), "malformed join token: want"},
		{"three parts", "mrdjoin1.abcd1234." + testCAHash, "malformed join token: want"},
		{"five parts", good + ".extra", "malformed join token: want"},
		{"an empty id", "mrdjoin1..s3cr3t-s3cr3t_s3cr3t." + testCAHash, "id or secret too short"},
		{"a short secret", "mrdjoin1.abcd1234.short." + testCAHash, "id or secret too short"},
		{"a fingerprint one digit short", strings.TrimSuffix(good, "8"), "not 64 hex digits"},
		{"a fingerprint one digit long", good + "0", "not 64 hex digits"},
		{"a fingerprint with a non-hex digit", strings.TrimSuffix(good, "8") + "g", "not 64 hex digits"},
		{"a fingerprint with colons", strings.TrimSuffix(good, testCAHash) + "9f:86:d0", "not 64 hex digits"},
		{"an empty fingerprint", "mrdjoin1.abcd1234.s3cr3t-s3cr3t_s3cr3t.", "not 64 hex digits"},
		// A token cut or wrapped when copied is named as such, not sent
		// (a line break cannot go into a request header) or tried.
		{"a line break inside the secret", "mrdjoin1.abcd1234.s3cr3t-s3cr3t\n_s3cr3t." + testCAHash, "characters that do not belong"},
		{"a space inside the id", "mrdjoin1.abcd 1234.s3cr3t-s3cr3t_s3cr3t." + testCAHash, "characters that do not belong"},
		{"a line break after the id", "mrdjoin1.abcd1234\n.s3cr3t-s3cr3t_s3cr3t." + testCAHash, "characters that do not belong"},
	} {
		p, err := ParseJoinToken(tc.token)
		if tc.want == "" {
			if err != nil || p != want {
				t.Errorf("%s: got %+v, %v; want %+v", tc.name, p, err, want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %+v, %v; want an error saying %q", tc.name, p, err, tc.want)
		}
		if err != nil && (strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), "abcd")) {
			t.Errorf("%s: the error %q shows part of the token", tc.name, err)
		}
	}
	if got := want.String(); got != good {
		t.Fatalf("String() = %q, want %q", got, good)
	}
}

// FuzzParseJoinToken: whatever the input, ParseJoinToken does not panic,
// and what it accepts has an id, a secret of at least 16 characters and a
// lower-case 64-digit fingerprint, renders to a token of the characters
// the control server makes tokens of (they go into a request header as
// they are), and parses back to the same parts.
func FuzzParseJoinToken(f *testing.F) {
	for _, s := range []string{
		"mrdjoin1.abcd1234.s3cr3t-s3cr3t_s3cr3t." + testCAHash,
		" mrdjoin1.abcd1234.s3cr3t-s3cr3t_s3cr3t." + strings.ToUpper(testCAHash) + "\n",
		"mrdjoin1.abcd1234.s3cr3t-s3cr3t\n_s3cr3t." + testCAHash,
		"mrdjoin1.a.0123456789abcdef." + testCAHash,
		"mrdjoin1...",
		"mrdjoin1.a.b.c.d",
		"",
		".",
		"mrdjoin1.\x00.\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00." + testCAHash,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseJoinToken(s)
		if err != nil {
			if p != (JoinTokenParts{}) {
				t.Fatalf("error %v with parts %+v", err, p)
			}
			return
		}
		if p.ID == "" || len(p.Secret) < 16 || len(p.CAHash) != 64 || strings.ToLower(p.CAHash) != p.CAHash {
			t.Fatalf("accepted %q as %+v", s, p)
		}
		tok := p.String()
		if strings.ContainsFunc(tok, func(r rune) bool { return !strings.ContainsRune(tokenChars, r) }) {
			t.Fatalf("accepted %q, whose rendering %q has characters no token has", s, tok)
		}
		q, err := ParseJoinToken(tok)
		if err != nil || q != p {
			t.Fatalf("%q parsed to %+v, which renders to %q, which parses to %+v, %v", s, p, tok, q, err)
		}
	})
}
