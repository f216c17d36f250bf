package jurisdiction

import "fmt"

// Country is an ISO 3166-1 alpha-2 code in upper case, such as IN.
type Country string

// ParseCountry returns the country with code s, in any case.
func ParseCountry(s string) (Country, error) {
	// ASCII only: strings.ToUpper would turn the dotless "ın" into "IN".
	b := []byte(s)
	for i, ch := range b {
		if 'a' <= ch && ch <= 'z' {
			b[i] = ch - 'a' + 'A'
		}
	}
	c := Country(b)
	if _, ok := countryNames[c]; ok {
		return c, nil
	}
	hint := ""
	if c == "UK" {
		hint = " (the United Kingdom is GB)"
	}
	return "", fmt.Errorf("unknown country code %q: want an ISO 3166-1 alpha-2 code such as IN, SG or DE%s", s, hint)
}

// Name returns the English short name of c, such as "India", or "" if c is
// not an assigned code.
func (c Country) Name() string { return countryNames[c] }
