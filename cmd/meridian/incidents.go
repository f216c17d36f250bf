package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/incident"
	"github.com/meridian-vpn/meridian/internal/check"
)

// The incident register, point of contact and orders of CERT-In
// (directions (ii) and (iii)).

func incidentCommands() []*command {
	return []*command{
		{name: "types", summary: "the 20 incident types of Annexure I", run: runIncidentTypes},
		{name: "add", summary: "record an incident: meridian incident add --type 8 --noticed 2026-05-01T14:30:00+05:30 [form fields]; the deadline counts from --noticed", run: runIncidentAdd},
		{name: "list", summary: "the register with time left [--all: with closed incidents]", run: runIncidentList},
		{name: "show", summary: "an incident with its content, history, deliveries and alerts: meridian incident show ID", run: runIncidentShow},
		{name: "update", summary: "add to or correct a report (earlier versions are kept): meridian incident update ID [form fields] [--note]", run: runIncidentUpdate},
		{name: "close", summary: "close an incident: meridian incident close ID --reason TEXT", run: runIncidentClose},
		{name: "report", summary: "render the next report as CERT-In's form asks (text, or --json); nothing is sent", run: runIncidentReport},
		{name: "send", summary: "email the report (default to incident@cert-in.org.in) and record the delivery: meridian incident send ID [--to ADDR]", run: runIncidentSend},
		{name: "reported", summary: "record a report made by phone or fax: meridian incident reported ID --via phone --to 1800-11-4949 --at TIME", run: runIncidentReported},
	}
}

func pocCommands() []*command {
	return []*command{
		{name: "show", summary: "the designated point of contact", run: runPOCShow},
		{name: "set", summary: "designate or change the point of contact: --organisation … --name … --designation … --address … --email … --mobile …", run: runPOCSet},
		{name: "letter", summary: "the notification of the point of contact for info@cert-in.org.in (Annexure II)", run: runPOCLetter},
	}
}

func orderCommands() []*command {
	return []*command{
		{name: "add", summary: "record an order: meridian order add --reference REF --received TIME --due TIME --request TEXT", run: runOrderAdd},
		{name: "list", summary: "orders with time left, open ones first", run: runOrderList},
		{name: "show", summary: "an order with what it asks for and the answer: meridian order show ID", run: runOrderShow},
		{name: "answer", summary: "record the answer: meridian order answer ID --answer TEXT [--at TIME]", run: runOrderAnswer},
	}
}

// repeated is a repeatable flag whose values may hold commas.
type repeated []string

func (r *repeated) String() string     { return strings.Join(*r, "; ") }
func (r *repeated) Set(v string) error { *r = append(*r, v); return nil }

func parseID(s string) (int64, error) {
	id, err := check.ID(s)
	if err != nil {
		return 0, usageError{fmt.Errorf("%q is not an id (a positive number)", s)}
	}
	return id, nil
}

// timeFlag turns "now" into the current time; anything else goes to the
// server as given, which checks it.
func timeFlag(s string) string {
	if s == "now" {
		return time.Now().Format(time.RFC3339)
	}
	return s
}

// formFlags are the reporting form's fields as flags, or read from a JSON
// file (flags win).
type formFlags struct {
	f                                     incident.Fields
	file, critical                        string
	affected, agencies, sources, security repeated
}

func (ff *formFlags) register(fs *flag.FlagSet) {
	f := &ff.f
	for _, s := range []struct {
		name, usage string
		v           *string
	}{
		{"reporter-name", "reporter: name", &f.Reporter.Name},
		{"reporter-organisation", "reporter: organisation", &f.Reporter.Organisation},
		{"reporter-title", "reporter: title", &f.Reporter.Title},
		{"reporter-phone", "reporter: phone/fax number", &f.Reporter.PhoneFax},
		{"reporter-mobile", "reporter: mobile", &f.Reporter.Mobile},
		{"reporter-email", "reporter: email", &f.Reporter.Email},
		{"reporter-address", "reporter: address", &f.Reporter.Address},
		{"sector", "sector of the organisation", &f.Sector},
		{"location", "physical location of the affected computer/network", &f.PhysicalLocation},
		{"isp", "name of the ISP", &f.ISP},
		{"occurred", "date and time the incident occurred (RFC 3339 with a zone)", &f.Occurred},
		{"description", "description of the incident", &f.Description},
		{"symptoms", "unusual behaviour/symptoms", &f.UnusualBehaviour},
		{"experienced-earlier", "has this problem been experienced earlier? (details)", &f.ExperiencedEarlier},
		{"how-detected", "how the incident was detected", &f.HowDetected},
		{"additional-information", "additional information: logs being submitted, and how", &f.AdditionalInformation},
		{"source-information", "other information available on the source", &f.SourceInformation},
		{"mitigation", "actions taken to mitigate", &f.Mitigation},
	} {
		fs.StringVar(s.v, s.name, "", s.usage)
	}
	fs.Func("hosts-affected", "how many hosts are affected: 1-10, 10-100 or more-than-100", func(v string) error {
		f.HostsAffected = incident.HostsAffected(v)
		return nil
	})
	fs.StringVar(&ff.critical, "critical", "", "is the affected system critical to the organisation's mission? yes or no")
	fs.Var(&ff.affected, "affected-system", `an affected system, "ip=192.0.2.10,host=gw1,os=Debian 13,patched=2026-04-28,hardware=…" (repeatable)`)
	fs.Var(&ff.agencies, "agency", "an agency notified (repeatable)")
	fs.Var(&ff.sources, "source", "IP address or prefix of the apparent or suspected source (repeatable)")
	fs.Var(&ff.security, "security", "security infrastructure in place, e.g. firewall (repeatable)")
	fs.StringVar(&ff.file, "file", "", "read form fields from this JSON file (field names as in 'meridian incident report --json'); flags override it")
}

// fields returns the fields given by the file and the flags.
func (ff *formFlags) fields() (incident.Fields, error) {
	var base incident.Fields
	if ff.file != "" {
		b, err := os.ReadFile(ff.file)
		if err != nil {
			return base, err
		}
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&base); err != nil {
			return base, fmt.Errorf("%s: %v", ff.file, err)
		}
	}
	f := ff.f
	switch strings.ToLower(ff.critical) {
	case "":
	case "yes", "true":
		yes := true
		f.CriticalToMission = &yes
	case "no", "false":
		no := false
		f.CriticalToMission = &no
	default:
		return f, usageError{errors.New("--critical: want yes or no")}
	}
	for _, a := range ff.affected {
		var s incident.AffectedSystem
		for _, kv := range strings.Split(a, ",") {
			k, v, _ := strings.Cut(kv, "=")
			dst := map[string]*string{"ip": &s.IPAddress, "host": &s.HostName, "os": &s.OperatingSystem, "patched": &s.LastPatched, "hardware": &s.HardwareVendorModel}[strings.TrimSpace(k)]
			if dst == nil {
				return f, usageError{fmt.Errorf("--affected-system %q: keys are ip, host, os, patched and hardware", a)}
			}
			*dst = strings.TrimSpace(v)
		}
		f.AffectedSystems = append(f.AffectedSystems, s)
	}
	f.AgenciesNotified, f.SuspectedSources, f.SecurityInfrastructure = ff.agencies, ff.sources, ff.security
	return incident.Merge(base, f), nil
}

func runIncidentTypes(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("incident types", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	if *asJSON {
		var out []incident.TypeInfo
		for _, t := range incident.Types() {
			out = append(out, incident.TypeInfo{Number: t, Name: t.Name()})
		}
		return printJSON(out)
	}
	fmt.Println("Annexure I of the CERT-In Directions of 28 April 2022: incidents to report within 6 hours of noticing them")
	for _, t := range incident.Types() {
		fmt.Printf("%3d  %s\n", int(t), t.Name())
	}
	return nil
}

func runIncidentAdd(ctx context.Context, args []string) error {
	fs, cf := adminCmd("incident add")
	var ff formFlags
	ff.register(fs)
	typ := fs.Int("type", 0, "Annexure I type number, 1-20 ('meridian incident types')")
	noticed := fs.String("noticed", "", `when the incident was noticed or reported to you (RFC 3339 with a zone, or "now"); the deadline counts from it`)
	note := fs.String("note", "", "a note for the history")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	if *typ == 0 || *noticed == "" {
		return usageError{errors.New("incident add: --type and --noticed are required")}
	}
	f, err := ff.fields()
	if err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	inc, err := c.CreateIncident(ctx, api.IncidentRequest{Type: *typ, NoticedAt: timeFlag(*noticed), Fields: f, Note: *note})
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(inc)
	}
	fmt.Printf("incident %d recorded: %s\n", inc.ID, inc.Type)
	fmt.Printf("noticed %s; initial report due by %s: %s\n", formatTime(inc.Noticed), formatTime(inc.Deadline), inc.Status)
	fmt.Print(incident.ClockLines(inc.NoticeClock, inc.ConfirmClock))
	fmt.Printf("deadline from: %s\n", inc.DeadlineWhy)
	fmt.Printf("next: 'meridian incident report %d' to review it, 'meridian incident send %d' to send it to %s\n", inc.ID, inc.ID, inc.Recipient)
	return nil
}

func formatTime(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") }

func runIncidentList(ctx context.Context, args []string) error {
	fs, cf := adminCmd("incident list")
	all := fs.Bool("all", false, "include closed incidents")
	c, _, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	incs, err := c.Incidents(ctx, *all)
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(incs)
	}
	if len(incs) == 0 {
		fmt.Println("no open incidents")
		return nil
	}
	table("ID\tTYPE\tSTATE\tNOTICED\tDEADLINE\tSTATUS", func(w *tabwriter.Writer) {
		for _, i := range incs {
			name := i.TypeName
			if len(name) > 40 {
				name = name[:39] + "…"
			}
			fmt.Fprintf(w, "%d\t%d. %s\t%s\t%s\t%s\t%s\n", i.ID, int(i.Type), name, i.State, formatTime(i.Noticed), formatTime(i.Deadline), i.Status)
		}
	})
	return nil
}

func runIncidentShow(ctx context.Context, args []string) error {
	fs, cf := adminCmd("incident show")
	c, id, err := cf.parseID(fs, args)
	if err != nil {
		return err
	}
	inc, err := c.Incident(ctx, id)
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(inc)
	}
	fmt.Printf("incident %d: %s\n", inc.ID, inc.Type)
	fmt.Printf("state %s; %s\n", inc.State, inc.Status)
	fmt.Printf("noticed %s; initial report due by %s (%s)\n", formatTime(inc.Noticed), formatTime(inc.Deadline), inc.DeadlineWhy)
	if inc.Unsent {
		fmt.Printf("version %d has changes not yet sent: 'meridian incident send %d'\n", inc.Version, inc.ID)
	}
	fmt.Printf("\nCurrent content (version %d):\n\n", inc.Version)
	fmt.Print(incident.NewReport(inc, time.Now()).Text())
	fmt.Println("\nHistory:")
	for _, u := range inc.Updates {
		var given []string
		if !u.Purged {
			b, _ := json.Marshal(u.Fields)
			var m map[string]json.RawMessage
			json.Unmarshal(b, &m)
			for k := range m {
				given = append(given, k)
			}
		}
		line := fmt.Sprintf("  v%d  %s  %s", u.Version, formatTime(u.At), u.By)
		switch {
		case u.Purged:
			line += "  (content purged)"
		case u.Close:
			line += "  closed"
		}
		if u.Type != 0 {
			line += fmt.Sprintf("  type %d", int(u.Type))
		}
		if len(given) > 0 {
			slices.Sort(given)
			line += "  gave " + strings.Join(given, ", ")
		}
		if u.Note != "" {
			line += "  — " + u.Note
		}
		fmt.Println(line)
	}
	if len(inc.Deliveries) > 0 {
		fmt.Println("\nDeliveries:")
		for _, d := range inc.Deliveries {
			fmt.Printf("  %s  %s (v%d) by %s to %s  %s  %s\n", formatTime(d.At), d.Report, d.Version, d.Channel, d.Recipient, d.MessageID, d.By)
		}
	}
	if len(inc.Alerts) > 0 {
		fmt.Println("\nAlerts:")
		for _, a := range inc.Alerts {
			fmt.Printf("  %s  %s\n", formatTime(a.At), a.Kind)
		}
	}
	return nil
}

func runIncidentUpdate(ctx context.Context, args []string) error {
	fs, cf := adminCmd("incident update")
	var ff formFlags
	ff.register(fs)
	typ := fs.Int("type", 0, "reclassify: Annexure I type number")
	note := fs.String("note", "", "what changed (kept in the history)")
	pos, err := parse(fs, args, "ID")
	if err != nil {
		return err
	}
	id, err := parseID(pos[0])
	if err != nil {
		return err
	}
	f, err := ff.fields()
	if err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	inc, err := c.UpdateIncident(ctx, id, api.IncidentUpdate{Type: *typ, Fields: f, Note: *note})
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(inc)
	}
	fmt.Printf("incident %d: version %d recorded (%s; %s)\n", inc.ID, inc.Version, inc.State, inc.Status)
	if inc.State != incident.Noticed {
		fmt.Printf("send it as an update with 'meridian incident send %d'\n", inc.ID)
	}
	return nil
}

func runIncidentClose(ctx context.Context, args []string) error {
	fs, cf := adminCmd("incident close")
	reason := fs.String("reason", "", "why the incident is closed (required; kept in the history)")
	c, id, err := cf.parseID(fs, args)
	if err != nil {
		return err
	}
	inc, err := c.CloseIncident(ctx, id, *reason)
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(inc)
	}
	fmt.Printf("incident %d closed: %s\n", inc.ID, inc.Status)
	return nil
}

func runIncidentReport(ctx context.Context, args []string) error {
	fs, cf := adminCmd("incident report")
	c, id, err := cf.parseID(fs, args)
	if err != nil {
		return err
	}
	r, err := c.IncidentReport(ctx, id)
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(r)
	}
	fmt.Printf("Subject: %s\n\n%s", r.Subject(), r.Text())
	return nil
}

func runIncidentSend(ctx context.Context, args []string) error {
	fs, cf := adminCmd("incident send")
	var to repeated
	fs.Var(&to, "to", "recipient instead of the incident's (incident@cert-in.org.in unless a duty names another); repeatable")
	c, id, err := cf.parseID(fs, args)
	if err != nil {
		return err
	}
	d, err := c.SendIncident(ctx, id, to)
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(d)
	}
	fmt.Printf("incident %d: %s (version %d) sent to %s at %s, Message-ID %s; the delivery is recorded\n", id, d.Report, d.Version, d.Recipient, formatTime(d.At), d.MessageID)
	return nil
}

func runIncidentReported(ctx context.Context, args []string) error {
	fs, cf := adminCmd("incident reported")
	via := fs.String("via", "", "phone, fax, or email (sent from another mailer)")
	at := fs.String("at", "now", `when the report was made (RFC 3339 with a zone, or "now")`)
	to := fs.String("to", "", "the number or address reported to (CERT-In: phone 1800-11-4949, fax 1800-11-6969)")
	ref := fs.String("reference", "", "a reference for the report (call reference, fax receipt, Message-ID)")
	c, id, err := cf.parseID(fs, args)
	if err != nil {
		return err
	}
	d, err := c.RecordIncidentDelivery(ctx, id, api.IncidentDelivery{Channel: *via, At: timeFlag(*at), To: *to, Reference: *ref})
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(d)
	}
	fmt.Printf("incident %d: %s (version %d) by %s to %s at %s recorded\n", id, d.Report, d.Version, d.Channel, d.Recipient, formatTime(d.At))
	return nil
}

func runPOCShow(ctx context.Context, args []string) error {
	fs, cf := adminCmd("poc show")
	c, _, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	p, err := c.POC(ctx)
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(p)
	}
	fmt.Printf("Point of contact for CERT-In (set %s)\n", formatTime(p.UpdatedAt))
	for _, f := range [][2]string{{"organisation", p.Organisation}, {"name", p.Name}, {"designation", p.Designation}, {"address", p.Address},
		{"email", p.Email}, {"mobile", p.Mobile}, {"office phone", p.Phone}, {"fax", p.Fax}} {
		fmt.Printf("  %-13s %s\n", f[0], f[1])
	}
	return nil
}

func runPOCSet(ctx context.Context, args []string) error {
	fs, cf := adminCmd("poc set")
	var p incident.PointOfContact
	for _, f := range []struct {
		name, usage string
		v           *string
	}{
		{"organisation", "name of the organisation", &p.Organisation}, {"name", "name of the point of contact", &p.Name},
		{"designation", "designation", &p.Designation}, {"address", "office address", &p.Address},
		{"email", "email address", &p.Email}, {"mobile", "mobile number", &p.Mobile},
		{"phone", "office phone (optional)", &p.Phone}, {"fax", "fax (optional)", &p.Fax},
	} {
		fs.StringVar(f.v, f.name, "", f.usage+"; unchanged if not given")
	}
	c, _, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	cur, err := c.POC(ctx)
	var se *api.StatusError
	if err != nil && !(errors.As(err, &se) && se.Code == 404) {
		return err
	}
	for _, f := range []struct{ dst, v *string }{
		{&cur.Organisation, &p.Organisation}, {&cur.Name, &p.Name}, {&cur.Designation, &p.Designation}, {&cur.Address, &p.Address},
		{&cur.Email, &p.Email}, {&cur.Mobile, &p.Mobile}, {&cur.Phone, &p.Phone}, {&cur.Fax, &p.Fax},
	} {
		if *f.v != "" {
			*f.dst = *f.v
		}
	}
	out, err := c.SetPOC(ctx, cur)
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(out)
	}
	fmt.Printf("point of contact set: %s, %s, %s\nsend the details to CERT-In: 'meridian poc letter'\n", out.Name, out.Designation, out.Organisation)
	return nil
}

func runPOCLetter(ctx context.Context, args []string) error {
	fs, cf := adminCmd("poc letter")
	c, _, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	l, err := c.POCLetter(ctx)
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(l)
	}
	fmt.Printf("To: %s\nSubject: %s\n\n%s", l.To, l.Subject, l.Body)
	return nil
}

func runOrderAdd(ctx context.Context, args []string) error {
	fs, cf := adminCmd("order add")
	var req api.OrderRequest
	fs.StringVar(&req.Reference, "reference", "", "CERT-In's reference for the order")
	fs.StringVar(&req.ReceivedAt, "received", "now", `when it was received (RFC 3339 with a zone, or "now")`)
	fs.StringVar(&req.DueAt, "due", "", "when the answer is due, as the order sets it (RFC 3339 with a zone)")
	fs.StringVar(&req.Request, "request", "", "what it asks for, and in which format")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	req.ReceivedAt = timeFlag(req.ReceivedAt)
	c, err := cf.client()
	if err != nil {
		return err
	}
	o, err := c.CreateOrder(ctx, req)
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(o)
	}
	fmt.Printf("order %d (%s) recorded: due %s, %s\n", o.ID, o.Reference, formatTime(o.Due), o.Status)
	return nil
}

func runOrderList(ctx context.Context, args []string) error {
	fs, cf := adminCmd("order list")
	c, _, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	orders, err := c.Orders(ctx)
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(orders)
	}
	if len(orders) == 0 {
		fmt.Println("no orders recorded")
		return nil
	}
	table("ID\tREFERENCE\tSTATE\tRECEIVED\tDUE\tSTATUS", func(w *tabwriter.Writer) {
		for _, o := range orders {
			fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\n", o.ID, o.Reference, o.State, formatTime(o.Received), formatTime(o.Due), o.Status)
		}
	})
	return nil
}

func runOrderShow(ctx context.Context, args []string) error {
	fs, cf := adminCmd("order show")
	c, id, err := cf.parseID(fs, args)
	if err != nil {
		return err
	}
	o, err := c.Order(ctx, id)
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(o)
	}
	fmt.Printf("order %d (%s): %s; %s\nreceived %s, due %s\nrequest: %s\n", o.ID, o.Reference, o.State, o.Status, formatTime(o.Received), formatTime(o.Due), o.Request)
	if o.State == incident.OrderAnswered {
		fmt.Printf("answered %s: %s\n", formatTime(o.Answered), o.Answer)
	}
	for _, a := range o.Alerts {
		fmt.Printf("alert %s at %s\n", a.Kind, formatTime(a.At))
	}
	return nil
}

func runOrderAnswer(ctx context.Context, args []string) error {
	fs, cf := adminCmd("order answer")
	answer := fs.String("answer", "", "what was provided, and how (required)")
	at := fs.String("at", "now", `when it was answered (RFC 3339 with a zone, or "now")`)
	c, id, err := cf.parseID(fs, args)
	if err != nil {
		return err
	}
	o, err := c.AnswerOrder(ctx, id, api.OrderAnswer{AnsweredAt: timeFlag(*at), Answer: *answer})
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(o)
	}
	fmt.Printf("order %d (%s): %s\n", o.ID, o.Reference, o.Status)
	return nil
}
