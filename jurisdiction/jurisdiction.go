// Package jurisdiction decides which legal duties service given on a node
// carries. A country's duty profile (none, cert-in-2022 or an operator's
// own) says what must be recorded, kept and reported, and why; the readings
// the operator accepts for that country (its triggers) say when the profile
// applies: placement (a node stands there, the default), establishment (the
// operator is established there) or market (a location is offered as that
// country). Under placement only, a virtual location served from elsewhere
// brings none of the advertised country's duties. Effective is the one
// function that decides; everything that records, keeps or reports asks it.
package jurisdiction

import (
	"fmt"
	"slices"
	"strings"
)

// Trigger is a reading of when a country's duty profile applies.
type Trigger string

const (
	Placement     Trigger = "placement"     // a node physically stands in the country
	Establishment Trigger = "establishment" // the operator is established in the country: all its service
	Market        Trigger = "market"        // service offered as the country: locations advertised as it
)

// AllTriggers lists the triggers in the order Effective reads them.
var AllTriggers = []Trigger{Placement, Establishment, Market}

// ParseTriggers reads a comma-separated list of triggers, e.g.
// "placement,market". It returns them in AllTriggers order, each once.
func ParseTriggers(s string) ([]Trigger, error) {
	var out []Trigger
	for _, f := range strings.Split(s, ",") {
		t := Trigger(strings.TrimSpace(f))
		if !slices.Contains(AllTriggers, t) {
			return nil, fmt.Errorf("unknown trigger %q: want a comma-separated list of %s, %s and %s", strings.TrimSpace(f), Placement, Establishment, Market)
		}
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	slices.SortFunc(out, func(a, b Trigger) int { return slices.Index(AllTriggers, a) - slices.Index(AllTriggers, b) })
	return out, nil
}

// FormatTriggers writes ts as ParseTriggers reads them.
func FormatTriggers(ts []Trigger) string {
	var ss []string
	for _, t := range ts {
		ss = append(ss, string(t))
	}
	return strings.Join(ss, ",")
}

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
	// Triggers are the readings the operator accepts for the country;
	// empty means placement only.
	Triggers []Trigger
}

// Accepts reports whether j's profile applies under trigger t.
func (j Jurisdiction) Accepts(t Trigger) bool {
	if len(j.Triggers) == 0 {
		return t == Placement
	}
	return slices.Contains(j.Triggers, t)
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
	for _, t := range j.Triggers {
		if !slices.Contains(AllTriggers, t) {
			return fmt.Errorf("jurisdiction %s: unknown trigger %q", j.Country, t)
		}
	}
	return nil
}
