package jurisdiction

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/meridian-vpn/meridian/api"
)

// TestEffectiveTriggers runs every trigger set × stance × tenant kind ×
// node place × location × establishment for India under cert-in-2022 and
// checks the duties and the reading each cites.
func TestEffectiveTriggers(t *testing.T) {
	all := []DutyKind{SubscriberRecords, SessionRecords, ICTLogs, ClockSync, IncidentReporting, PointOfContact}
	nodeOnly := []DutyKind{ICTLogs, ClockSync, IncidentReporting, PointOfContact}
	triggerSets := [][]Trigger{nil, {Placement}, {Establishment}, {Market}, {Placement, Market}, {Establishment, Market}, {Placement, Establishment, Market}}
	places := []struct {
		name string
		node Node
		loc  *Location
	}{
		{"node IN, location IN", mumbai, &Location{"IN", "IN"}},
		{"node SG, virtual location IN", singapore, &Location{"IN", "IN"}},
		{"node SG, location SG", singapore, &Location{"SG", "SG"}},
		{"node IN, virtual location SG", mumbai, &Location{"SG-VIA-IN", "SG"}},
		{"node SG, no location", singapore, nil},
		{"node IN, no location", mumbai, nil},
	}
	n := 0
	for _, ts := range triggerSets {
		for _, stance := range []Stance{Comply, VirtualOnly} {
			for _, kind := range []api.TenantKind{api.Consumer, api.Enterprise} {
				for _, pl := range places {
					for _, est := range [][]Country{nil, {"IN"}, {"SG"}} {
						accepts := func(tr Trigger) bool {
							if ts == nil {
								return tr == Placement
							}
							return slices.Contains(ts, tr)
						}
						// The reading that brings IN's duties, if any: the
						// first of placement, establishment, market.
						var cite string
						var by Trigger
						switch {
						case accepts(Placement) && pl.node.Physical == "IN":
							cite, by = "placement: node bom-1 stands in IN", Placement
						case accepts(Establishment) && slices.Contains(est, "IN"):
							cite, by = "establishment: operator established in IN", Establishment
						case accepts(Market) && pl.loc != nil && pl.loc.Country == "IN":
							cite, by = fmt.Sprintf("market: location IN served from %s", pl.node.Physical), Market
						}
						var want []DutyKind
						if cite != "" {
							want = all
							if kind == api.Enterprise {
								want = nodeOnly
							}
						}
						name := fmt.Sprintf("%s/%s/%s/%s/est=%v", FormatTriggers(ts), stance, kind, pl.name, est)
						js := Jurisdictions{"IN": {Country: "IN", Profile: CERTIn2022Profile, Stance: stance, Triggers: ts}}
						ds, err := Effective(Service{Node: pl.node, Location: pl.loc, Established: est, Tenant: kind}, js, Builtin())
						if err != nil {
							t.Fatalf("%s: %v", name, err)
						}
						n++
						if got := kinds(ds); !slices.Equal(got, want) {
							t.Errorf("%s: duties %v, want %v", name, got, want)
							continue
						}
						for _, d := range ds {
							if d.Trigger != cite || d.By != by || d.Country != "IN" || !strings.HasPrefix(d.Why, "IN / cert-in-2022 / direction (") || !strings.HasSuffix(d.Why, ") / "+cite) {
								t.Errorf("%s: %s cites %q (trigger %q), want the reading %q", name, d.Kind, d.Why, d.Trigger, cite)
							}
						}
					}
				}
			}
		}
	}
	if n != len(triggerSets)*2*2*len(places)*3 {
		t.Fatalf("ran %d combinations", n)
	}
}

// TestEffectiveCitations pins the citation text of each reading.
func TestEffectiveCitations(t *testing.T) {
	withTriggers := func(ts ...Trigger) Jurisdictions {
		return Jurisdictions{"IN": {Country: "IN", Profile: CERTIn2022Profile, Stance: VirtualOnly, Triggers: ts}}
	}
	for _, tt := range []struct {
		name string
		s    Service
		js   Jurisdictions
		want string
	}{
		{"market, virtual", Service{Node: singapore, Location: &Location{"IN", "IN"}, Tenant: api.Consumer}, withTriggers(Placement, Market),
			"IN / cert-in-2022 / direction (v) / market: location IN served from SG"},
		{"establishment", Service{Node: frankfurt, Established: []Country{"IN"}, Tenant: api.Consumer}, withTriggers(Establishment),
			"IN / cert-in-2022 / direction (v) / establishment: operator established in IN"},
		{"placement", Service{Node: mumbai, Location: &Location{"IN", "IN"}, Tenant: api.Consumer}, withTriggers(Placement, Market),
			"IN / cert-in-2022 / direction (v) / placement: node bom-1 stands in IN"},
	} {
		ds, err := Effective(tt.s, tt.js, Builtin())
		if err != nil || len(ds) == 0 || ds[0].Why != tt.want {
			t.Errorf("%s: %v, %v; want first duty citing %q", tt.name, ds, err, tt.want)
		}
	}
}

// TestEffectiveSeveralCountries: readings of two countries both bring
// duties, each citing its own.
func TestEffectiveSeveralCountries(t *testing.T) {
	p, err := ParseProfileJSON([]byte(`{"name": "sg-example", "title": "Example", "session_records": {"retention_years": 1, "consumer_only": false, "cite": "section 9"}}`))
	if err != nil {
		t.Fatal(err)
	}
	profiles := Builtin()
	profiles[p.Name] = p
	js := Jurisdictions{
		"IN": {Country: "IN", Profile: CERTIn2022Profile, Stance: VirtualOnly, Triggers: []Trigger{Market}},
		"SG": {Country: "SG", Profile: p.Name, Stance: Comply},
	}
	ds, err := Effective(Service{Node: singapore, Location: &Location{"IN", "IN"}, Tenant: api.Enterprise}, js, profiles)
	if err != nil {
		t.Fatal(err)
	}
	var whys []string
	for _, d := range ds {
		whys = append(whys, string(d.Kind)+": "+d.Why)
	}
	want := []string{
		"session-records: SG / sg-example / section 9 / placement: node sin-1 stands in SG",
		"ict-logs: IN / cert-in-2022 / direction (iv) / market: location IN served from SG",
		"clock-sync: IN / cert-in-2022 / direction (i) / market: location IN served from SG",
		"incident-reporting: IN / cert-in-2022 / direction (ii) / market: location IN served from SG",
		"point-of-contact: IN / cert-in-2022 / direction (iii) / market: location IN served from SG",
	}
	if !slices.Equal(whys, want) {
		t.Errorf("duties\n%s\nwant\n%s", strings.Join(whys, "\n"), strings.Join(want, "\n"))
	}
}

func TestEffectiveTriggerErrors(t *testing.T) {
	js := Jurisdictions{"IN": {Country: "IN", Profile: CERTIn2022Profile, Stance: Comply, Triggers: []Trigger{"citizenship"}}}
	if _, err := Effective(Service{Node: mumbai, Tenant: api.Consumer}, js, Builtin()); err == nil || !strings.Contains(err.Error(), `unknown trigger "citizenship"`) {
		t.Errorf("unknown trigger: %v", err)
	}
	if _, err := Effective(Service{Node: mumbai, Established: []Country{"XX"}, Tenant: api.Consumer}, nil, Builtin()); err == nil || !strings.Contains(err.Error(), `establishment: unknown country "XX"`) {
		t.Errorf("unknown establishment: %v", err)
	}
	if _, err := Effective(Service{Node: mumbai, Location: &Location{"ZZ", "ZZ"}, Tenant: api.Consumer}, nil, Builtin()); err == nil || !strings.Contains(err.Error(), `location "ZZ": unknown country "ZZ"`) {
		t.Errorf("unknown location country: %v", err)
	}
}

func TestParseTriggers(t *testing.T) {
	for in, want := range map[string]string{
		"placement": "placement", "market,placement": "placement,market", " market , market ": "market",
		"establishment,market,placement": "placement,establishment,market",
	} {
		ts, err := ParseTriggers(in)
		if err != nil || FormatTriggers(ts) != want {
			t.Errorf("ParseTriggers(%q) = %v, %v; want %s", in, ts, err, want)
		}
	}
	for _, in := range []string{"", "placement,", "Market", "residence", "placement,,market"} {
		if ts, err := ParseTriggers(in); err == nil || !strings.Contains(err.Error(), "unknown trigger") {
			t.Errorf("ParseTriggers(%q) = %v, %v; want an unknown-trigger error", in, ts, err)
		}
	}
}

func FuzzParseTriggers(f *testing.F) {
	for _, s := range []string{"placement", "placement,market", "establishment", "", ",", "market,market,x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ts, err := ParseTriggers(s)
		if err != nil {
			return
		}
		again, err := ParseTriggers(FormatTriggers(ts))
		if err != nil || !slices.Equal(again, ts) || len(ts) == 0 {
			t.Fatalf("%q: %v does not round-trip: %v, %v", s, ts, again, err)
		}
	})
}
