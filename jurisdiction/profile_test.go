package jurisdiction

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
)

const exampleProfile = `{
	"name": "example-law",
	"title": "Example Law of 2030",
	"subscriber_records": {"retention_years": 2, "consumer_only": true, "cite": "article 3"},
	"session_records": {"retention_years": 1, "consumer_only": true, "cite": "article 4"},
	"ict_logs": {"retention_days": 90, "cite": "article 5"},
	"clock_sync": {"sources": ["time.example.org", "192.0.2.123", "2001:db8::123"], "max_offset": "250ms", "cite": "article 6"},
	"incident_reporting": {"deadline": "24h", "recipient": "cert@example.org", "cite": "article 7"},
	"point_of_contact": {"recipient": "contact@example.org", "cite": "article 8"}
}`

func TestBuiltin(t *testing.T) {
	b := Builtin()
	if len(b) != 2 {
		t.Errorf("%d built-in profiles, want none and cert-in-2022", len(b))
	}
	for name, p := range b {
		if p.Name != name {
			t.Errorf("Builtin()[%q] is named %q", name, p.Name)
		}
		if err := p.Validate(); err != nil {
			t.Error(err)
		}
	}
	if !reflect.DeepEqual(b[NoneProfile], Profile{Name: "none", Title: "No duties"}) {
		t.Errorf("none has duties: %+v", b[NoneProfile])
	}
	in := b[CERTIn2022Profile]
	if in.SubscriberRecords.RetentionYears != 5 || !in.SubscriberRecords.ConsumerOnly || !in.SessionRecords.ConsumerOnly ||
		in.ICTLogs.RetentionDays != 180 || in.IncidentReporting.Deadline != 6*time.Hour || len(in.ClockSync.Sources) != 3 {
		t.Errorf("cert-in-2022 = %+v", in)
	}

	// Each call is fresh: changing one answer does not change the next.
	in.ClockSync.Sources[0] = "pool.ntp.org"
	in.ICTLogs.RetentionDays = 1
	if again := Builtin()[CERTIn2022Profile]; again.ClockSync.Sources[0] != "samay1.nic.in" || again.ICTLogs.RetentionDays != 180 {
		t.Error("Builtin() shares state between calls")
	}
}

func TestProfileJSON(t *testing.T) {
	p, err := ParseProfileJSON([]byte(exampleProfile))
	if err != nil {
		t.Fatal(err)
	}
	want := Profile{
		Name:              "example-law",
		Title:             "Example Law of 2030",
		SubscriberRecords: &SubscriberRecordsDuty{RetentionYears: 2, ConsumerOnly: true, Cite: "article 3"},
		SessionRecords:    &SessionRecordsDuty{RetentionYears: 1, ConsumerOnly: true, Cite: "article 4"},
		ICTLogs:           &ICTLogsDuty{RetentionDays: 90, Cite: "article 5"},
		ClockSync:         &ClockSyncDuty{Sources: []string{"time.example.org", "192.0.2.123", "2001:db8::123"}, MaxOffset: 250 * time.Millisecond, Cite: "article 6"},
		IncidentReporting: &IncidentReportingDuty{Deadline: 24 * time.Hour, Recipient: "cert@example.org", Cite: "article 7"},
		PointOfContact:    &PointOfContactDuty{Recipient: "contact@example.org", Cite: "article 8"},
	}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("ParseProfileJSON:\n got %+v\nwant %+v", p, want)
	}

	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{`"deadline":"24h"`, `"max_offset":"250ms"`, `"retention_days":90`} {
		if !strings.Contains(string(b), s) {
			t.Errorf("JSON %s lacks %s", b, s)
		}
	}
	if p2, err := ParseProfileJSON(b); err != nil || !reflect.DeepEqual(p2, p) {
		t.Errorf("round trip: %+v, %v", p2, err)
	}

	// Built-in profiles marshal to the same shape and read back.
	for name, bp := range Builtin() {
		b, err := json.Marshal(bp)
		if err != nil {
			t.Fatal(err)
		}
		var back Profile
		if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, bp) {
			t.Errorf("%s: JSON %s read back as %+v, %v", name, b, back, err)
		}
	}
	b, _ = json.Marshal(Builtin()[CERTIn2022Profile].IncidentReporting)
	if string(b) != `{"deadline":"6h","recipient":"incident@cert-in.org.in","cite":"direction (ii)"}` {
		t.Errorf("cert-in-2022 incident_reporting JSON = %s", b)
	}

	// A profile with no blocks, and clock sync without max_offset.
	p, err = ParseProfileJSON([]byte(`{"name":"quiet","title":"Quiet","clock_sync":{"sources":["ntp.example.org"],"cite":"s. 1"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if p.ClockSync.MaxOffset != DefaultMaxOffset || p.SubscriberRecords != nil || p.ICTLogs != nil {
		t.Errorf("defaults: %+v", p)
	}
}

func TestParseProfileJSONErrors(t *testing.T) {
	edit := func(old, new string) string {
		if !strings.Contains(exampleProfile, old) {
			t.Fatalf("example has no %q", old)
		}
		return strings.Replace(exampleProfile, old, new, 1)
	}
	for _, tt := range []struct{ name, json, want string }{
		{"unknown field", edit(`"title"`, `"colour": "red", "title"`), `unknown field "colour"`},
		{"unknown block field", edit(`"retention_days": 90`, `"retention_days": 90, "where": "IN"`), `unknown field "where"`},
		{"unknown clock_sync field", edit(`"max_offset"`, `"stratum": 2, "max_offset"`), `unknown field "stratum"`},
		{"unknown incident field", edit(`"deadline"`, `"phone": "1800", "deadline"`), `unknown field "phone"`},
		{"negative retention", edit(`"retention_years": 2`, `"retention_years": -5`), "subscriber_records.retention_years is -5: want 1 to 100 years"},
		{"zero retention days", edit(`"retention_days": 90`, `"retention_days": 0`), "ict_logs.retention_days is 0"},
		{"retention too long", edit(`"retention_years": 1`, `"retention_years": 101`), "session_records.retention_years is 101"},
		{"fractional retention", edit(`"retention_years": 2`, `"retention_years": 2.5`), "retention_years"},
		{"missing sources", edit(`"sources": ["time.example.org", "192.0.2.123", "2001:db8::123"], `, ""), "clock_sync.sources is empty"},
		{"empty sources", edit(`["time.example.org", "192.0.2.123", "2001:db8::123"]`, `[]`), "clock_sync.sources is empty"},
		{"bad source", edit(`"192.0.2.123"`, `"ntp://x"`), `clock_sync.sources[1] "ntp://x" is not a host name`},
		{"duplicate source", edit(`"192.0.2.123"`, `"TIME.example.org"`), "lists \"TIME.example.org\" twice"},
		{"numeric host", edit(`"192.0.2.123"`, `"192.0.2"`), `"192.0.2" is not a host name`},
		{"zoned address", edit(`"2001:db8::123"`, `"fe80::1%eth0"`), "is not a host name"},
		{"bad duration", edit(`"24h"`, `"one day"`), `incident_reporting.deadline: time: invalid duration "one day"`},
		{"numeric duration", edit(`"24h"`, `86400`), "deadline"},
		{"missing deadline", edit(`"deadline": "24h", `, ""), "incident_reporting.deadline is 0s: want 1 minute to 30 days"},
		{"deadline too long", edit(`"24h"`, `"721h"`), "incident_reporting.deadline is 721h: want 1 minute to 30 days"},
		{"negative offset", edit(`"250ms"`, `"-1s"`), "clock_sync.max_offset is -1s"},
		{"bad recipient", edit(`"cert@example.org"`, `"CERT <cert@example.org>"`), "incident_reporting.recipient"},
		{"missing cite", edit(`, "cite": "article 8"`, ""), "point_of_contact.cite is empty"},
		{"bad name", edit(`"example-law"`, `"Example_Law"`), "name must be"},
		{"name ends with hyphen", edit(`"example-law"`, `"example-"`), "name must be"},
		{"empty title", edit(`"Example Law of 2030"`, `""`), "title is empty"},
		{"title with newline", edit(`"Example Law of 2030"`, `"Example\nLaw"`), "unprintable"},
		{"redefine none", edit(`"example-law"`, `"none"`), `"none" is a built-in profile and cannot be redefined`},
		{"redefine cert-in-2022", edit(`"example-law"`, `"cert-in-2022"`), `"cert-in-2022" is a built-in profile`},
		{"trailing data", exampleProfile + `{}`, "unexpected data after the profile"},
		{"not an object", `["none"]`, "cannot unmarshal array"},
		{"null", `null`, "name must be"},
		{"empty", ``, "EOF"},
	} {
		p, err := ParseProfileJSON([]byte(tt.json))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: ParseProfileJSON = %+v, %v; want error containing %q", tt.name, p, err, tt.want)
		}
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	err := Profile{
		Name:              "x",
		ICTLogs:           &ICTLogsDuty{RetentionDays: -1, Cite: "a"},
		ClockSync:         &ClockSyncDuty{MaxOffset: time.Hour, Cite: "b"},
		IncidentReporting: &IncidentReportingDuty{Deadline: 6 * time.Hour, Recipient: "nobody"},
	}.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		`profile "x": title is empty`,
		"ict_logs.retention_days is -1: want 1 to 36600 days",
		"clock_sync.sources is empty",
		"clock_sync.max_offset is 1h: want 1ms to 1 minute",
		`incident_reporting.recipient "nobody" is not an email address`,
		"incident_reporting.cite is empty",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func FuzzParseProfileJSON(f *testing.F) {
	f.Add([]byte(exampleProfile))
	for _, p := range Builtin() {
		p.Name += "-copy"
		b, _ := json.Marshal(p)
		f.Add(b)
	}
	f.Add([]byte(`{"name":"a","title":"T","clock_sync":{"sources":["a.b"],"max_offset":"1.5ms","cite":"c"}}`))
	f.Add([]byte(`{"name":"a","title":"T","incident_reporting":{"deadline":"1h30m","recipient":"a@b","cite":"c"}}`))
	f.Add([]byte(`{"name":"none","title":"T"}`))
	f.Add([]byte(`{"NAME":"a","Title":"T"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParseProfileJSON(data)
		if err != nil {
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("accepted profile does not validate: %v", err)
		}
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatalf("marshal %+v: %v", p, err)
		}
		p2, err := ParseProfileJSON(b)
		if err != nil {
			t.Fatalf("own JSON %s refused: %v", b, err)
		}
		if !reflect.DeepEqual(p, p2) {
			t.Fatalf("round trip through %s:\n got %+v\nwant %+v", b, p2, p)
		}

		// Whatever is accepted, Effective and Explain can use.
		profiles := Builtin()
		profiles[p.Name] = p
		j := Jurisdiction{Country: "SG", Profile: p.Name, Stance: Comply}
		for _, kind := range []api.TenantKind{api.Consumer, api.Enterprise} {
			ds, err := eff(singapore, j, profiles, kind)
			if err != nil {
				t.Fatalf("Effective with accepted profile: %v", err)
			}
			Explain(singapore, j, kind, ds)
		}
	})
}
