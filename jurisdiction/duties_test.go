package jurisdiction

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
)

var (
	mumbai    = Node{Name: "bom-1", Physical: "IN"}
	frankfurt = Node{Name: "fra-1", Physical: "DE"}
	paris     = Node{Name: "par-1", Physical: "FR"}
	// An "India" location served from Singapore: a virtual location.
	singapore = Node{Name: "sin-1", Physical: "SG"}

	inComply  = Jurisdiction{Country: "IN", Profile: CERTIn2022Profile, Stance: Comply}
	inVirtual = Jurisdiction{Country: "IN", Profile: CERTIn2022Profile, Stance: VirtualOnly}
	deNone    = Jurisdiction{Country: "DE", Profile: NoneProfile, Stance: Comply}
)

// eff asks Effective about service on node to a tenant of kind t, with j
// the only listed jurisdiction and no location nor establishment.
func eff(node Node, j Jurisdiction, profiles map[string]Profile, t api.TenantKind) ([]Duty, error) {
	return Effective(Service{Node: node, Tenant: t}, Jurisdictions{j.Country: j}, profiles)
}

func kinds(ds []Duty) []DutyKind {
	var ks []DutyKind
	for _, d := range ds {
		ks = append(ks, d.Kind)
	}
	return ks
}

func TestEffective(t *testing.T) {
	all := []DutyKind{SubscriberRecords, SessionRecords, ICTLogs, ClockSync, IncidentReporting, PointOfContact}
	nodeOnly := []DutyKind{ICTLogs, ClockSync, IncidentReporting, PointOfContact}
	for _, tt := range []struct {
		name     string
		node     Node
		j        Jurisdiction
		t        api.TenantKind
		want     []DutyKind
		presence bool
	}{
		{"IN consumer", mumbai, inComply, api.Consumer, all, true},
		{"IN enterprise", mumbai, inComply, api.Enterprise, nodeOnly, true},
		{"DE consumer", frankfurt, deNone, api.Consumer, nil, true},
		{"DE enterprise", frankfurt, deNone, api.Enterprise, nil, true},
		{"unlisted FR", paris, Default("FR"), api.Consumer, nil, true},
		{"unlisted IN", mumbai, Default("IN"), api.Consumer, all, true},
		{"IN virtual-only consumer", mumbai, inVirtual, api.Consumer, all, false},
		{"IN virtual-only enterprise", mumbai, inVirtual, api.Enterprise, nodeOnly, false},
		{"virtual IN location in SG", singapore, Default("SG"), api.Consumer, nil, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ds, err := eff(tt.node, tt.j, Builtin(), tt.t)
			if err != nil {
				t.Fatal(err)
			}
			if got := kinds(ds); !slices.Equal(got, tt.want) {
				t.Errorf("duties %v, want %v", got, tt.want)
			}
			if tt.want == nil && ds != nil {
				t.Errorf("no duties as %#v, want nil", ds)
			}
			if got := tt.j.AllowsPresence(); got != tt.presence {
				t.Errorf("AllowsPresence() = %v, want %v", got, tt.presence)
			}
		})
	}
}

func TestEffectiveCERTIn(t *testing.T) {
	ds, err := eff(mumbai, inComply, Builtin(), api.Consumer)
	if err != nil {
		t.Fatal(err)
	}
	sources := []string{"samay1.nic.in", "samay2.nic.in", "time.nplindia.org"}
	want := []Duty{
		{Kind: SubscriberRecords, Why: "IN / cert-in-2022 / direction (v) / placement: node bom-1 stands in IN", Country: "IN", By: Placement, Trigger: "placement: node bom-1 stands in IN", ConsumerOnly: true, RetentionYears: 5,
			Detail: "keep validated subscriber records for 5 years after cancellation"},
		{Kind: SessionRecords, Why: "IN / cert-in-2022 / direction (v)(c) / placement: node bom-1 stands in IN", Country: "IN", By: Placement, Trigger: "placement: node bom-1 stands in IN", ConsumerOnly: true, RetentionYears: 5,
			Detail: "keep attribution records (tunnel IP, exit IP and port block, connecting IP, times) for 5 years after cancellation"},
		{Kind: ICTLogs, Why: "IN / cert-in-2022 / direction (iv) / placement: node bom-1 stands in IN", Country: "IN", By: Placement, Trigger: "placement: node bom-1 stands in IN", RetentionDays: 180,
			Detail: "keep the logs of all ICT systems for a rolling 180 days"},
		{Kind: ClockSync, Why: "IN / cert-in-2022 / direction (i) / placement: node bom-1 stands in IN", Country: "IN", By: Placement, Trigger: "placement: node bom-1 stands in IN", Sources: sources, MaxOffset: 100 * time.Millisecond,
			Detail: "synchronise clocks with samay1.nic.in, samay2.nic.in or time.nplindia.org; flag offsets over 100ms"},
		{Kind: IncidentReporting, Why: "IN / cert-in-2022 / direction (ii) / placement: node bom-1 stands in IN", Country: "IN", By: Placement, Trigger: "placement: node bom-1 stands in IN", Deadline: 6 * time.Hour, Recipient: "incident@cert-in.org.in",
			Detail: "report incidents to incident@cert-in.org.in within 6 hours of noticing or being told of them"},
		{Kind: PointOfContact, Why: "IN / cert-in-2022 / direction (iii) / placement: node bom-1 stands in IN", Country: "IN", By: Placement, Trigger: "placement: node bom-1 stands in IN", Recipient: "info@cert-in.org.in",
			Detail: "designate a point of contact, send its details to info@cert-in.org.in and keep them current"},
	}
	for i := range max(len(ds), len(want)) {
		if i >= len(ds) || i >= len(want) || !reflect.DeepEqual(ds[i], want[i]) {
			t.Errorf("duty %d:\n got %+v\nwant %+v", i, at(ds, i), at(want, i))
		}
	}

	// The sources are the caller's own copy.
	ds[3].Sources[0] = "pool.ntp.org"
	again, _ := eff(mumbai, inComply, Builtin(), api.Consumer)
	if again[3].Sources[0] != "samay1.nic.in" {
		t.Errorf("changing a returned duty changed the next answer: %v", again[3].Sources)
	}
}

func at(ds []Duty, i int) any {
	if i < len(ds) {
		return ds[i]
	}
	return "(none)"
}

func TestEffectiveOperatorProfile(t *testing.T) {
	p, err := ParseProfileJSON([]byte(`{
		"name": "sg-example", "title": "Example rules for Singapore",
		"session_records": {"retention_years": 1, "consumer_only": false, "cite": "section 9"},
		"incident_reporting": {"deadline": "72h", "recipient": "csa@example.sg", "cite": "section 10"}
	}`))
	if err != nil {
		t.Fatal(err)
	}
	profiles := Builtin()
	profiles[p.Name] = p
	j := Jurisdiction{Country: "SG", Profile: p.Name, Stance: Comply}
	for _, kind := range []api.TenantKind{api.Consumer, api.Enterprise} {
		ds, err := eff(singapore, j, profiles, kind)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := kinds(ds), []DutyKind{SessionRecords, IncidentReporting}; !slices.Equal(got, want) {
			t.Errorf("%s: duties %v, want %v", kind, got, want)
		}
		if ds[0].Why != "SG / sg-example / section 9 / placement: node sin-1 stands in SG" || ds[0].Detail != "keep attribution records (tunnel IP, exit IP and port block, connecting IP, times) for 1 year after cancellation" {
			t.Errorf("%s: %+v", kind, ds[0])
		}
		if ds[1].Deadline != 72*time.Hour || !strings.Contains(ds[1].Detail, "within 3 days") {
			t.Errorf("%s: %+v", kind, ds[1])
		}
	}
}

func TestEffectiveErrors(t *testing.T) {
	broken := Builtin()
	broken["broken"] = Profile{Name: "broken", Title: "Broken", ICTLogs: &ICTLogsDuty{RetentionDays: 0, Cite: "x"}}
	broken["misnamed"] = Profile{Name: "other", Title: "Misnamed"}
	for _, tt := range []struct {
		name string
		node Node
		j    Jurisdiction
		t    api.TenantKind
		want string
	}{
		{"unknown profile", mumbai, Jurisdiction{Country: "IN", Profile: "cert-in-2099", Stance: Comply}, api.Consumer, `unknown duty profile "cert-in-2099"`},
		{"empty profile", mumbai, Jurisdiction{Country: "IN", Profile: "", Stance: Comply}, api.Consumer, "no duty profile"},
		{"empty tenant kind", mumbai, inComply, "", `unknown tenant kind ""`},
		{"unknown tenant kind", mumbai, inComply, "business", `unknown tenant kind "business"`},
		{"unknown node country", Node{"x-1", "XX"}, inComply, api.Consumer, `unknown physical country "XX"`},
		{"lower-case node country", Node{"x-1", "in"}, inComply, api.Consumer, `unknown physical country "in"`},
		{"bad stance", mumbai, Jurisdiction{Country: "IN", Profile: CERTIn2022Profile, Stance: "maybe"}, api.Consumer, `unknown stance "maybe"`},
		{"invalid profile", paris, Jurisdiction{Country: "FR", Profile: "broken", Stance: Comply}, api.Consumer, "ict_logs.retention_days is 0"},
		{"profile key and name differ", paris, Jurisdiction{Country: "FR", Profile: "misnamed", Stance: Comply}, api.Consumer, `profile "misnamed" is named "other"`},
	} {
		ds, err := eff(tt.node, tt.j, broken, tt.t)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Effective = %v, %v; want error containing %q", tt.name, kinds(ds), err, tt.want)
		}
	}
	if _, err := eff(mumbai, inComply, nil, api.Consumer); err == nil {
		t.Error("Effective with no profiles: no error")
	}
}

func TestNodeDuties(t *testing.T) {
	ds, err := NodeDuties(Service{Node: mumbai}, Jurisdictions{"IN": inComply}, Builtin())
	if err != nil {
		t.Fatal(err)
	}
	consumer, _ := eff(mumbai, inComply, Builtin(), api.Consumer)
	if !reflect.DeepEqual(ds, consumer) {
		t.Errorf("NodeDuties(IN) = %v, want every duty of consumer service %v", kinds(ds), kinds(consumer))
	}
	for _, d := range ds {
		want := d.Kind == SubscriberRecords || d.Kind == SessionRecords
		if d.ConsumerOnly != want {
			t.Errorf("%s: ConsumerOnly = %v, want %v", d.Kind, d.ConsumerOnly, want)
		}
	}
	if ds, err := NodeDuties(Service{Node: frankfurt}, Jurisdictions{"DE": deNone}, Builtin()); ds != nil || err != nil {
		t.Errorf("NodeDuties(DE) = %v, %v; want nil, nil", ds, err)
	}
	if _, err := NodeDuties(Service{Node: mumbai}, Jurisdictions{"IN": {Country: "IN", Profile: "nope", Stance: Comply}}, Builtin()); err == nil {
		t.Error("NodeDuties with an unknown profile: no error")
	}
}

func TestExplain(t *testing.T) {
	explain := func(node Node, j Jurisdiction, kind api.TenantKind) string {
		t.Helper()
		var ds []Duty
		var err error
		if kind == "" {
			ds, err = NodeDuties(Service{Node: node}, Jurisdictions{j.Country: j}, Builtin())
		} else {
			ds, err = eff(node, j, Builtin(), kind)
		}
		if err != nil {
			t.Fatal(err)
		}
		return Explain(node, j, kind, ds)
	}
	check := func(name, text string, want, notWant []string) {
		t.Helper()
		for _, w := range want {
			if !strings.Contains(text, w) {
				t.Errorf("%s: explanation lacks %q:\n%s", name, w, text)
			}
		}
		for _, w := range notWant {
			if strings.Contains(text, w) {
				t.Errorf("%s: explanation has %q:\n%s", name, w, text)
			}
		}
	}

	check("IN consumer", explain(mumbai, inComply, api.Consumer), []string{
		"bom-1", "IN (India)", "cert-in-2022", "comply", "consumer",
		"- subscriber-records: keep validated subscriber records for 5 years after cancellation\n  why: IN / cert-in-2022 / direction (v) / placement: node bom-1 stands in IN\n",
		"session-records", "why: IN / cert-in-2022 / direction (v)(c)",
		"ict-logs", "why: IN / cert-in-2022 / direction (iv)",
		"clock-sync", "samay1.nic.in", "why: IN / cert-in-2022 / direction (i) / placement: node bom-1 stands in IN\n",
		"incident-reporting", "6 hours", "why: IN / cert-in-2022 / direction (ii)",
		"point-of-contact", "why: IN / cert-in-2022 / direction (iii)",
	}, []string{"Warning", "only"})
	check("IN enterprise", explain(mumbai, inComply, api.Enterprise), []string{
		"enterprise", "ict-logs", "clock-sync", "incident-reporting", "point-of-contact",
		"Duties owed only for consumer service",
	}, []string{"subscriber-records", "session-records", "direction (v)"})
	check("IN any tenant", explain(mumbai, inComply, ""), []string{
		"Tenants: any",
		"- subscriber-records: keep validated subscriber records for 5 years after cancellation (consumer service only)",
		"- ict-logs: keep the logs of all ICT systems for a rolling 180 days\n",
	}, nil)
	check("IN virtual-only", explain(mumbai, inVirtual, api.Consumer), []string{
		"stance virtual-only", "Warning", "no node should stand there", "subscriber-records",
	}, nil)
	check("DE", explain(frankfurt, deNone, api.Consumer), []string{
		"fra-1", "DE (Germany)", "consumer",
		"DE has duty profile none: Meridian keeps no per-user records for consumer service given here.",
	}, []string{"why:", "Warning"})
	check("DE any tenant", explain(frankfurt, deNone, ""), []string{
		"DE has duty profile none: Meridian keeps no per-user records for service given here.",
	}, nil)
}

func TestParseStance(t *testing.T) {
	for _, s := range []Stance{Comply, VirtualOnly} {
		if got, err := ParseStance(string(s)); got != s || err != nil {
			t.Errorf("ParseStance(%q) = %q, %v", s, got, err)
		}
	}
	for _, s := range []string{"", "virtual", "COMPLY", "virtual_only"} {
		if _, err := ParseStance(s); err == nil || !strings.Contains(err.Error(), "want comply or virtual-only") {
			t.Errorf("ParseStance(%q): error %v", s, err)
		}
	}
	if (Jurisdiction{Stance: ""}).AllowsPresence() {
		t.Error("an unset stance allows presence")
	}
}
