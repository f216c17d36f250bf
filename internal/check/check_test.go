package check

import (
	"net/netip"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

func TestCaseRef(t *testing.T) {
	for _, ok := range []string{"FIR-2026/0142", "Case 7", "केस-१२", "ऑर्डर", strings.Repeat("x", MaxCaseRef)} {
		if err := CaseRef(ok, nil); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "\u200b", "\x00", "A\nfake-entry", "A\rB", "A\u202eB", "A\u2028B", "A\u00a0B", "\ufeffA", "---", "  ", strings.Repeat("x", MaxCaseRef+1), "A\xffB", "A\u2066B"} {
		if err := CaseRef(bad, nil); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	p, err := CasePattern(`FIR-[0-9]{4}/[0-9]+`)
	if err != nil {
		t.Fatal(err)
	}
	if err := CaseRef("FIR-2026/12", p); err != nil {
		t.Errorf("matching reference refused: %v", err)
	}
	for _, bad := range []string{"x FIR-2026/12", "FIR-2026/12 x", "Case 7"} {
		if err := CaseRef(bad, p); err == nil || !strings.Contains(err.Error(), "pattern") {
			t.Errorf("%q against the pattern: %v", bad, err)
		}
	}
	if _, err := CasePattern("(["); err == nil {
		t.Error("a bad pattern compiled")
	}
}

// FuzzCaseRef: whatever CaseRef accepts is valid UTF-8 of 1 to MaxCaseRef
// printable characters with a letter or digit, and its errors never quote
// the input.
func FuzzCaseRef(f *testing.F) {
	for _, s := range []string{"FIR-1", "\u200b", "\x00", "A\nfake-entry", "A\u202eB", "---", "केस-१२", "A\xffB", strings.Repeat("é", 129)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := CaseRef(s, nil)
		if err != nil {
			if len(s) >= 4 && strings.Contains(err.Error(), s) {
				t.Fatalf("error quotes the input: %v", err)
			}
			return
		}
		if !utf8.ValidString(s) {
			t.Fatal("accepted invalid UTF-8")
		}
		n, alnum := 0, false
		for _, r := range s {
			n++
			if unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp, unicode.Co) || unicode.Is(unicode.Bidi_Control, r) || (unicode.IsSpace(r) && r != ' ') {
				t.Fatalf("accepted %U", r)
			}
			alnum = alnum || unicode.IsLetter(r) || unicode.IsDigit(r)
		}
		if n < 1 || n > MaxCaseRef || !alnum {
			t.Fatalf("accepted %d characters (letter or digit: %v)", n, alnum)
		}
	})
}

func TestText(t *testing.T) {
	for _, ok := range []string{"", "Mumbai DC-2", "Rāmānujan", "क्‍ष", "ന്‍"} {
		if err := Text(ok, false); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	if err := Text("line 1\nline 2\tx", true); err != nil {
		t.Errorf("multiline text refused: %v", err)
	}
	for _, bad := range []string{"a\nb", "a\tb", "a\x00", "a\u202eb", "a\u2066b", "a\u200eb", "a\u061cb", "a\u2028b", "a\u2029b", "a\u200bb", "\ufeffa", "a\xffb", "a\x7f"} {
		if err := Text(bad, false); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	for _, bad := range []string{"a\rb", "a\u202eb", "a\x00"} {
		if err := Text(bad, true); err == nil {
			t.Errorf("multiline %q accepted", bad)
		}
	}
}

// FuzzText: accepted text is valid UTF-8 with no control (but newline and
// tab in multiline text), bidi, format or separator characters.
func FuzzText(f *testing.F) {
	for _, s := range []string{"ok", "a\u202eb", "a\nb", "क्‍ष", "\xff"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, s string, multiline bool) {
		if Text(s, multiline) != nil {
			return
		}
		if !utf8.ValidString(s) {
			t.Fatal("accepted invalid UTF-8")
		}
		for _, r := range s {
			if multiline && (r == '\n' || r == '\t') || r == '\u200c' || r == '\u200d' {
				continue
			}
			if unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp, unicode.Bidi_Control) {
				t.Fatalf("accepted %U", r)
			}
		}
	})
}

func TestTime(t *testing.T) {
	for _, s := range []string{"0000-01-01T00:00:00Z", "1999-12-31T23:59:59Z", "2200-01-01T00:00:00Z", "9999-12-31T23:59:59Z"} {
		tm, _ := time.Parse(time.RFC3339, s)
		if Time(tm) == nil {
			t.Errorf("%s accepted", s)
		}
	}
	for _, s := range []string{"2000-01-01T00:00:00Z", "2026-05-01T14:30:00+05:30", "2199-12-31T23:59:59Z"} {
		tm, _ := time.Parse(time.RFC3339, s)
		if err := Time(tm); err != nil {
			t.Errorf("%s refused: %v", s, err)
		}
	}
}

func TestEndpointAndIDs(t *testing.T) {
	for _, ok := range []string{"192.0.2.1:51820", "[2001:db8::1]:1", "vpn.example.com:65535"} {
		if err := Endpoint(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"192.0.2.1", "192.0.2.1:", "192.0.2.1:0", "192.0.2.1:99999", "192.0.2.1:+80", ":51820", "a\u202eb:1", "h:0x50"} {
		if err := Endpoint(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	for _, bad := range []string{"", "+1", "-1", "0", " 1", "1 ", "0x1", "1e3", "99999999999999999999"} {
		if _, err := ID(bad); err == nil {
			t.Errorf("id %q accepted", bad)
		}
	}
	if n, err := ID("0042"); err != nil || n != 42 {
		t.Errorf("id 0042: %d %v", n, err)
	}
}

func TestPool(t *testing.T) {
	for _, c := range []struct {
		p      string
		family int
	}{{"10.200.0.0/16", 4}, {"100.64.0.0/10", 4}, {"fd6d:7269:6469::/64", 6}, {"2001:db8:200::/120", 6}} {
		if err := Pool(netip.MustParsePrefix(c.p), c.family); err != nil {
			t.Errorf("%s refused: %v", c.p, err)
		}
	}
	for _, c := range []struct {
		p      string
		family int
	}{
		{"0.0.0.0/0", 4}, {"::/0", 6}, {"127.0.0.0/8", 4}, {"127.1.0.0/16", 4}, {"224.0.0.0/24", 4}, {"239.1.0.0/16", 4},
		{"255.255.255.0/24", 4}, {"169.254.0.0/16", 4}, {"ff02::/64", 6}, {"fe80::/64", 6}, {"::1/128", 6}, {"::/64", 6},
		{"::ffff:10.0.0.0/104", 6}, {"64.0.0.0/2", 4}, {"10.0.0.0/8", 6}, {"fd00::/64", 4}, {"10.0.0.1/24", 4}, {"10.0.0.0/31", 4},
	} {
		if err := Pool(netip.MustParsePrefix(c.p), c.family); err == nil {
			t.Errorf("%s accepted as IPv%d", c.p, c.family)
		}
	}
}
