// Package jurisdiction decides which legal duties service given on a node
// carries. Duties follow placement: a node's physical country brings its
// jurisdiction, and the jurisdiction's duty profile (none, cert-in-2022 or an
// operator's own) says what must be recorded, kept and reported, and why.
// A virtual location served from elsewhere brings none of the advertised
// country's duties. Effective is the one function that decides; everything
// that records, keeps or reports asks it.
package jurisdiction

import "fmt"

// Stance is the operator's decision about standing in a country.
type Stance string

const (
	Comply      Stance = "comply"       // physical presence allowed, duties enforced
	VirtualOnly Stance = "virtual-only" // no physical presence; serve the country from elsewhere
)

// ParseStance returns the stance named s.
func ParseStance(s string) (Stance, error) {
	switch st := Stance(s); st {
	case Comply, VirtualOnly:
		return st, nil
	}
	return "", fmt.Errorf("unknown stance %q: want %s or %s", s, Comply, VirtualOnly)
}

// Jurisdiction is what the operator has set for one country.
type Jurisdiction struct {
	Country Country
	Profile string // a key of the profiles given to Effective
	Stance  Stance
}

// Default returns the jurisdiction of a country the operator has not listed:
// stance comply, with duty profile cert-in-2022 for India and none elsewhere.
// India is not left at none because standing there unconfigured would mean
// serving without the records the law asks for; an operator who decides
// otherwise lists IN explicitly.
func Default(c Country) Jurisdiction {
	j := Jurisdiction{Country: c, Profile: NoneProfile, Stance: Comply}
	if c == "IN" {
		j.Profile = CERTIn2022Profile
	}
	return j
}

// AllowsPresence reports whether nodes may physically stand in j.Country.
// A node standing in a virtual-only country must not serve; Effective still
// says which duties it would carry if it did.
func (j Jurisdiction) AllowsPresence() bool { return j.Stance == Comply }

// Validate checks that j names a known country, a profile and a stance.
// Whether the profile exists is for Effective to check against the profiles
// it is given.
func (j Jurisdiction) Validate() error {
	if j.Country.Name() == "" {
		return fmt.Errorf("jurisdiction: unknown country code %q", j.Country)
	}
	if j.Profile == "" {
		return fmt.Errorf("jurisdiction %s: no duty profile (use %q for none)", j.Country, NoneProfile)
	}
	if _, err := ParseStance(string(j.Stance)); err != nil {
		return fmt.Errorf("jurisdiction %s: %w", j.Country, err)
	}
	return nil
}
