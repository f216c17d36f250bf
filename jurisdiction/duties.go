package jurisdiction

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/meridian-vpn/meridian/api"
)

// DutyKind names a duty building block.
type DutyKind string

const (
	SubscriberRecords DutyKind = "subscriber-records"
	SessionRecords    DutyKind = "session-records" // attribution: tunnel IP, exit IP and port block, connecting IP, times
	ICTLogs           DutyKind = "ict-logs"
	ClockSync         DutyKind = "clock-sync"
	IncidentReporting DutyKind = "incident-reporting"
	PointOfContact    DutyKind = "point-of-contact"
)

// Duty is one duty that applies, with the parameters of its block copied so
// that callers need not look the profile up again. Only the parameters of
// its kind are set.
type Duty struct {
	Kind    DutyKind
	Country Country // whose profile brought it
	By      Trigger // the trigger that brought it
	Trigger string  // the reading: "market: location IN served from SG"
	Why     string  // country / profile / provision / trigger: "IN / cert-in-2022 / direction (v) / market: location IN served from SG"
	Detail  string  // for people: "keep validated subscriber records for 5 years after cancellation"

	// ConsumerOnly is set for duties owed only for consumer service; the
	// others belong to the node itself, whatever the tenant.
	ConsumerOnly bool

	RetentionYears int           // subscriber-records, session-records
	RetentionDays  int           // ict-logs
	Sources        []string      // clock-sync
	MaxOffset      time.Duration // clock-sync
	Deadline       time.Duration // incident-reporting
	Recipient      string        // incident-reporting, point-of-contact
}

// Node is where a machine stands.
type Node struct {
	Name     string
	Physical Country
}

// Location is a location as sessions see it: its code and the country it
// is advertised as (offered as), whatever country serves it.
type Location struct {
	Code    string
	Country Country
}

// Service is service given on a node: where the node stands, the location
// the session is on (nil when none is known, as for a node's own duties),
// the countries the operator is established in, and the tenant kind.
type Service struct {
	Node        Node
	Location    *Location
	Established []Country
	Tenant      api.TenantKind
}

// Jurisdictions holds the operator's settings by country; a country not
// listed has Default's.
type Jurisdictions map[Country]Jurisdiction

// Of returns the jurisdiction of c.
func (js Jurisdictions) Of(c Country) Jurisdiction {
	if j, ok := js[c]; ok {
		return j
	}
	return Default(c)
}

// reading is one way a country's profile reaches a service: the
// jurisdiction and the trigger's citation.
type reading struct {
	j    Jurisdiction
	by   Trigger
	cite string // "market: location IN served from SG"
}

// Effective decides which duties apply to service s. Three readings may
// bring a country's duty profile, each only where that country's
// jurisdiction accepts its trigger: placement (the node physically stands
// there; the default), establishment (the operator is established there:
// all its service) and market (the session's location is advertised as
// that country, virtual or not). The stance does not change the answer
// (see AllowsPresence). Each duty's Why cites country, profile, provision
// and trigger; a kind brought by several readings of one country is given
// once, by the first of placement, establishment, market. profiles holds
// every profile a jurisdiction may name, usually Builtin() plus the
// operator's own. Effective returns nil when no duty applies, and an error
// if the node, a country, the tenant kind or a profile is unknown or
// invalid. It is the only function that decides duties.
func Effective(s Service, js Jurisdictions, profiles map[string]Profile) ([]Duty, error) {
	t, node := s.Tenant, s.Node
	if t != api.Consumer && t != api.Enterprise {
		return nil, fmt.Errorf("unknown tenant kind %q: want %s or %s", t, api.Consumer, api.Enterprise)
	}
	if node.Physical.Name() == "" {
		return nil, fmt.Errorf("node %q: unknown physical country %q", node.Name, node.Physical)
	}
	if s.Location != nil && s.Location.Country.Name() == "" {
		return nil, fmt.Errorf("location %q: unknown country %q", s.Location.Code, s.Location.Country)
	}
	var rs []reading
	add := func(c Country, t Trigger, cite string) error {
		j := js.Of(c)
		if err := j.Validate(); err != nil {
			return err
		}
		if j.Accepts(t) {
			rs = append(rs, reading{j, t, cite})
		}
		return nil
	}
	if err := add(node.Physical, Placement, fmt.Sprintf("placement: node %s stands in %s", node.Name, node.Physical)); err != nil {
		return nil, err
	}
	for _, c := range s.Established {
		if c.Name() == "" {
			return nil, fmt.Errorf("establishment: unknown country %q", c)
		}
		if err := add(c, Establishment, fmt.Sprintf("establishment: operator established in %s", c)); err != nil {
			return nil, err
		}
	}
	if l := s.Location; l != nil {
		if err := add(l.Country, Market, fmt.Sprintf("market: location %s served from %s", l.Code, node.Physical)); err != nil {
			return nil, err
		}
	}
	var ds []Duty
	for _, r := range rs {
		got, err := profileDuties(r.j, profiles, t, r.by, r.cite)
		if err != nil {
			return nil, err
		}
		for _, d := range got {
			if !slices.ContainsFunc(ds, func(o Duty) bool { return o.Kind == d.Kind && o.Country == d.Country }) {
				ds = append(ds, d)
			}
		}
	}
	return ds, nil
}

// profileDuties lists the duties j's profile brings to tenant kind t, each
// brought by trigger by and citing it.
func profileDuties(j Jurisdiction, profiles map[string]Profile, t api.TenantKind, by Trigger, trigger string) ([]Duty, error) {
	if err := j.Validate(); err != nil {
		return nil, err
	}
	p, ok := profiles[j.Profile]
	if !ok {
		return nil, fmt.Errorf("jurisdiction %s: unknown duty profile %q", j.Country, j.Profile)
	}
	if p.Name != j.Profile {
		return nil, fmt.Errorf("jurisdiction %s: profile %q is named %q", j.Country, j.Profile, p.Name)
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	why := func(cite string) string { return fmt.Sprintf("%s / %s / %s / %s", j.Country, p.Name, cite, trigger) }
	owed := func(consumerOnly bool) bool { return t == api.Consumer || !consumerOnly }
	var ds []Duty
	if b := p.SubscriberRecords; b != nil && owed(b.ConsumerOnly) {
		ds = append(ds, Duty{
			Kind:           SubscriberRecords,
			Why:            why(b.Cite),
			Detail:         fmt.Sprintf("keep validated subscriber records for %s after cancellation", plural(b.RetentionYears, "year")),
			ConsumerOnly:   b.ConsumerOnly,
			RetentionYears: b.RetentionYears,
		})
	}
	if b := p.SessionRecords; b != nil && owed(b.ConsumerOnly) {
		ds = append(ds, Duty{
			Kind:           SessionRecords,
			Why:            why(b.Cite),
			Detail:         fmt.Sprintf("keep attribution records (tunnel IP, exit IP and port block, connecting IP, times) for %s after cancellation", plural(b.RetentionYears, "year")),
			ConsumerOnly:   b.ConsumerOnly,
			RetentionYears: b.RetentionYears,
		})
	}
	if b := p.ICTLogs; b != nil {
		ds = append(ds, Duty{
			Kind:          ICTLogs,
			Why:           why(b.Cite),
			Detail:        fmt.Sprintf("keep the logs of all ICT systems for a rolling %s", plural(b.RetentionDays, "day")),
			RetentionDays: b.RetentionDays,
		})
	}
	if b := p.ClockSync; b != nil {
		ds = append(ds, Duty{
			Kind:      ClockSync,
			Why:       why(b.Cite),
			Detail:    fmt.Sprintf("synchronise clocks with %s; flag offsets over %s", orList(b.Sources), human(b.MaxOffset)),
			Sources:   slices.Clone(b.Sources),
			MaxOffset: b.MaxOffset,
		})
	}
	if b := p.IncidentReporting; b != nil {
		ds = append(ds, Duty{
			Kind:      IncidentReporting,
			Why:       why(b.Cite),
			Detail:    fmt.Sprintf("report incidents to %s within %s of noticing or being told of them", b.Recipient, human(b.Deadline)),
			Deadline:  b.Deadline,
			Recipient: b.Recipient,
		})
	}
	if b := p.PointOfContact; b != nil {
		ds = append(ds, Duty{
			Kind:      PointOfContact,
			Why:       why(b.Cite),
			Detail:    fmt.Sprintf("designate a point of contact, send its details to %s and keep them current", b.Recipient),
			Recipient: b.Recipient,
		})
	}
	for i := range ds {
		ds[i].Country, ds[i].By, ds[i].Trigger = j.Country, by, trigger
	}
	return ds, nil
}

// NodeDuties answers for a node whatever its tenants: the duties Effective
// gives for consumer or for enterprise service there, each once. Those owed
// only for consumer service have ConsumerOnly set; the rest (under
// cert-in-2022: ICT logs, clock sync, incident reporting, point of contact)
// belong to the node itself. s.Tenant is ignored. It returns nil when no
// duty applies.
func NodeDuties(s Service, js Jurisdictions, profiles map[string]Profile) ([]Duty, error) {
	var all []Duty
	for _, t := range []api.TenantKind{api.Consumer, api.Enterprise} {
		s.Tenant = t
		ds, err := Effective(s, js, profiles)
		if err != nil {
			return nil, err
		}
		for _, d := range ds {
			if !slices.ContainsFunc(all, func(a Duty) bool { return a.Kind == d.Kind && a.Country == d.Country }) {
				all = append(all, d)
			}
		}
	}
	return all, nil
}

// Explain renders duties, the answer of Effective for node, j and t, for
// people. An empty t means duties came from NodeDuties.
func Explain(node Node, j Jurisdiction, t api.TenantKind, duties []Duty) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Node %s stands in %s (%s): duty profile %s, stance %s.\n", node.Name, node.Physical, node.Physical.Name(), j.Profile, j.Stance)
	if !j.AllowsPresence() {
		fmt.Fprintf(&b, "Warning: the stance for %s is %s, so no node should stand there; serve %s from elsewhere or move %s.\n", j.Country, j.Stance, j.Country, node.Name)
	}
	service := "service"
	if t == "" {
		b.WriteString("Tenants: any.\n")
	} else {
		fmt.Fprintf(&b, "Tenant kind: %s.\n", t)
		service = string(t) + " service"
	}
	if len(duties) == 0 {
		fmt.Fprintf(&b, "%s has duty profile %s: Meridian keeps no per-user records for %s given here.\n", node.Physical, j.Profile, service)
		return b.String()
	}
	if t == api.Enterprise {
		b.WriteString("Duties owed only for consumer service, such as subscriber records, do not apply to an organisation's own staff VPN.\n")
	}
	fmt.Fprintf(&b, "Duties for %s given here:\n", service)
	for _, d := range duties {
		fmt.Fprintf(&b, "- %s: %s", d.Kind, d.Detail)
		if t == "" && d.ConsumerOnly {
			b.WriteString(" (consumer service only)")
		}
		fmt.Fprintf(&b, "\n  why: %s\n", d.Why)
	}
	return b.String()
}

func plural(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return fmt.Sprintf("%d %ss", n, unit)
}

// human writes d in whole days, hours or minutes when it can: "6 hours".
func human(d time.Duration) string {
	switch day := 24 * time.Hour; {
	case d >= day && d%day == 0:
		return plural(int(d/day), "day")
	case d >= time.Hour && d%time.Hour == 0:
		return plural(int(d/time.Hour), "hour")
	case d >= time.Minute && d%time.Minute == 0:
		return plural(int(d/time.Minute), "minute")
	}
	return d.String()
}

// orList joins "a", "b" and "c" as "a, b or c".
func orList(s []string) string {
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}
