package jurisdiction

import (
	"strings"
	"testing"
)

func TestParseCountry(t *testing.T) {
	for _, tt := range []struct{ in, want, name string }{
		{"IN", "IN", "India"},
		{"in", "IN", "India"},
		{"iN", "IN", "India"},
		{"sg", "SG", "Singapore"},
		{"De", "DE", "Germany"},
		{"gb", "GB", "United Kingdom"},
	} {
		c, err := ParseCountry(tt.in)
		if err != nil || string(c) != tt.want || c.Name() != tt.name {
			t.Errorf("ParseCountry(%q) = %q (%q), %v; want %q (%q)", tt.in, c, c.Name(), err, tt.want, tt.name)
		}
	}
	for _, in := range []string{"XX", "", "I", "IND", " in", "ın", "XK", "EU", "UK"} {
		c, err := ParseCountry(in)
		if err == nil {
			t.Errorf("ParseCountry(%q) = %q, want error", in, c)
			continue
		}
		if !strings.Contains(err.Error(), "want an ISO 3166-1 alpha-2 code such as IN, SG or DE") {
			t.Errorf("ParseCountry(%q): unhelpful error %q", in, err)
		}
	}
	_, err := ParseCountry("XX")
	if want := `unknown country code "XX": want an ISO 3166-1 alpha-2 code such as IN, SG or DE`; err.Error() != want {
		t.Errorf("ParseCountry(XX) error = %q, want %q", err, want)
	}
	if _, err := ParseCountry("uk"); !strings.Contains(err.Error(), "GB") {
		t.Errorf("ParseCountry(uk) error %q does not point to GB", err)
	}
	if n := Country("XX").Name(); n != "" {
		t.Errorf(`Country("XX").Name() = %q, want ""`, n)
	}
}

func TestCountryTable(t *testing.T) {
	if len(countryNames) != 249 {
		t.Errorf("%d countries, want the 249 assigned ISO 3166-1 codes", len(countryNames))
	}
	names := map[string]Country{}
	for c, name := range countryNames {
		if len(c) != 2 || c[0] < 'A' || c[0] > 'Z' || c[1] < 'A' || c[1] > 'Z' {
			t.Errorf("code %q is not two upper-case letters", c)
		}
		if name == "" || !printable(name) || strings.TrimSpace(name) != name {
			t.Errorf("%s has name %q", c, name)
		}
		if other, ok := names[name]; ok {
			t.Errorf("%s and %s are both named %q", c, other, name)
		}
		names[name] = c
		if got, err := ParseCountry(strings.ToLower(string(c))); got != c || err != nil {
			t.Errorf("ParseCountry(lower %s) = %q, %v", c, got, err)
		}
	}
}
