package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/internal/check"
)

func runSubscriberValidate(ctx context.Context, args []string) error {
	fs, cf := adminCmd("subscriber validate")
	field := fs.String("field", "", "name, email, address or phones")
	method := fs.String("method", "", "how it was checked, e.g. document, phone-call, video-kyc")
	evidence := fs.String("evidence", "", "reference to the evidence (a file or ticket id; not the evidence itself)")
	reject := fs.Bool("reject", false, "record the field as rejected instead of validated")
	pos, err := parse(fs, args, "USER")
	if err != nil {
		return err
	}
	state := api.Validated
	if *reject {
		state = api.Rejected
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	var v api.Validation
	if err := c.Do(ctx, "POST", "/subscribers/"+url.PathEscape(pos[0])+"/validate", api.ValidateRequest{Field: *field, State: state, Method: *method, Evidence: *evidence}, &v); err != nil {
		return err
	}
	if cf.json {
		return printJSON(v)
	}
	fmt.Printf("%s of %q: %s (%s, evidence %s)\n", *field, pos[0], v.State, v.Method, v.Evidence)
	return nil
}

func runSubscriberRequired(ctx context.Context, args []string) error {
	fs, cf := adminCmd("subscriber required")
	kind := fs.String("kind", "consumer", "consumer or enterprise")
	c, _, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	var out struct {
		Required bool     `json:"required"`
		Why      []string `json:"why"`
	}
	if err := c.Do(ctx, "GET", "/subscribers/required?kind="+url.QueryEscape(*kind), nil, &out); err != nil {
		return err
	}
	if cf.json {
		return printJSON(out)
	}
	if !out.Required {
		fmt.Printf("%s accounts need no subscriber record: no duty of any in-service gateway's country requires one\n", *kind)
		return nil
	}
	fmt.Printf("%s accounts need a subscriber record:\n  %s\n", *kind, strings.Join(out.Why, "\n  "))
	return nil
}

func runComplianceSubscriber(ctx context.Context, args []string) error {
	fs, cf := adminCmd("compliance subscriber")
	ref := fs.String("case", "", "case reference of the lawful request (required; recorded with the read)")
	pos, err := parse(fs, args, "USER")
	if err != nil {
		return err
	}
	if err := caseFlag(*ref); err != nil {
		return usageError{err}
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	var out struct {
		Case    string               `json:"case"`
		Record  api.SubscriberRecord `json:"record"`
		Devices []api.Device         `json:"devices"`
	}
	if err := c.Do(ctx, "GET", "/compliance/subscribers/"+url.PathEscape(pos[0])+"?case="+url.QueryEscape(*ref), nil, &out); err != nil {
		return err
	}
	if cf.json {
		return printJSON(out)
	}
	r := out.Record
	v := func(x api.Validation) string {
		if x.State == api.Validated || x.State == api.Rejected {
			return fmt.Sprintf("%s by %s (%s %s%s)", x.State, x.Method, x.Evidence, x.At.Format("2006-01-02"), clockNote(x.Clock))
		}
		return string(x.State)
	}
	fmt.Printf("case %s — subscriber record of %q (CERT-In direction (v))\n", out.Case, r.User)
	fmt.Printf("  (a) name              %s [%s]\n", r.Name, v(r.NameValidation))
	end := "ongoing"
	if !r.CancelledAt.IsZero() {
		end = r.CancelledAt.Format("2006-01-02")
	}
	if !r.CancelledAt.IsZero() {
		end += clockNote(r.CancelledClock)
	}
	fmt.Printf("  (b) period of hire    %s to %s\n", r.HireStart.Format("2006-01-02"), end)
	for _, d := range out.Devices {
		fmt.Printf("  (c) tunnel addresses  %s, %s (device %d %q, %s)\n", d.IPv4, d.IPv6, d.ID, d.Name, d.Status)
	}
	fmt.Printf("  (d) email             %s [%s]; registered from %s at %s%s\n", r.Email, v(r.EmailValidation), r.RegistrationIP, r.RegisteredAt.Format("2006-01-02 15:04:05 MST"), clockNote(r.Clock))
	fmt.Printf("  (e) purpose           %s\n", r.Purpose)
	fmt.Printf("  (f) address           %s [%s]\n", r.Address, v(r.AddressValidation))
	fmt.Printf("      contact numbers   %s [%s]\n", strings.Join(r.Phones, ", "), v(r.PhoneValidation))
	fmt.Printf("  (g) ownership         %s\n", r.Ownership)
	return nil
}

func runComplianceRotateKey(ctx context.Context, args []string) error {
	fs, cf := adminCmd("compliance rotate-key")
	c, _, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	var out struct {
		Resealed int `json:"resealed"`
	}
	if err := c.Do(ctx, "POST", "/compliance/rotate-key", nil, &out); err != nil {
		return err
	}
	fmt.Printf("re-sealed %d data keys under the active key; older keys may now be removed from the key file\n", out.Resealed)
	return nil
}

func runComplianceExport(ctx context.Context, args []string) error {
	fs, cf := adminCmd("compliance export")
	ref := fs.String("case", "", "case reference of the lawful request (required)")
	subscriber := fs.String("subscriber", "", "the account whose records are exported (required)")
	out := fs.String("out", "", "directory to write the bundle to (required)")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	if *ref == "" || *subscriber == "" || *out == "" {
		return usageError{errors.New("compliance export: --case, --subscriber and --out are required")}
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	var e api.Export
	if err := c.Do(ctx, "POST", "/compliance/exports", api.ExportRequest{Case: *ref, Subscriber: *subscriber}, &e); err != nil {
		return err
	}
	if e.ApprovedBy == "" {
		fmt.Printf("export %s waits for a second compliance officer:\n  meridian compliance approve %s\nthen fetch it with:\n  meridian compliance fetch %s --out %s\n", e.ID, e.ID, e.ID, *out)
		return nil
	}
	return fetchBundle(ctx, c, e.ID, *out)
}

func runComplianceApprove(ctx context.Context, args []string) error {
	fs, cf := adminCmd("compliance approve")
	c, pos, err := cf.parse(fs, args, "EXPORT-ID")
	if err != nil {
		return err
	}
	var e api.Export
	if err := c.Do(ctx, "POST", "/compliance/exports/"+url.PathEscape(pos[0])+"/approve", nil, &e); err != nil {
		return err
	}
	fmt.Printf("approved export %s (case %s, asked for by %s)\n", e.ID, e.Case, e.RequestedBy)
	return nil
}

func runComplianceFetch(ctx context.Context, args []string) error {
	fs, cf := adminCmd("compliance fetch")
	out := fs.String("out", "", "directory to write the bundle to (required)")
	pos, err := parse(fs, args, "EXPORT-ID")
	if err != nil {
		return err
	}
	if *out == "" {
		return usageError{errors.New("compliance fetch: --out DIR is required")}
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	return fetchBundle(ctx, c, pos[0], *out)
}

// fetchBundle downloads an approved export, checks its signature and
// hashes, and writes it to dir.
func fetchBundle(ctx context.Context, c *api.Client, id, dir string) error {
	var b api.Bundle
	if err := c.Do(ctx, "GET", "/compliance/exports/"+url.PathEscape(id), nil, &b); err != nil {
		return err
	}
	m, err := b.Verify()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	files := map[string][]byte{
		"manifest.json":   b.Manifest,
		"manifest.sig":    []byte(base64.StdEncoding.EncodeToString(b.Signature) + "\n"),
		"signing-key.pub": []byte(base64.StdEncoding.EncodeToString(b.PublicKey) + "\n"),
	}
	for n, content := range b.Files {
		files[n] = content
	}
	for n, content := range files {
		if err := os.WriteFile(filepath.Join(dir, n), content, 0o600); err != nil {
			return err
		}
	}
	fmt.Printf("wrote export %s of case %s to %s: %d files, manifest signed by the control server (ed25519), every file verified\n", m.Export, m.Case, dir, len(m.Files))
	return nil
}

func runComplianceLookup(ctx context.Context, args []string) error {
	fs, cf := adminCmd("compliance lookup")
	vals := map[string]*string{}
	help := map[string]string{
		"case": "case reference of the lawful request (required)", "exit-ip": "exit address (with --port and --at)",
		"port": "source port seen at the exit", "at": "time, RFC 3339 with zone, e.g. 2026-05-01T14:30:00+05:30",
		"tunnel-ip": "tunnel address (with --at)", "endpoint-ip": "address the client connected from (with --from and --to)",
		"subscriber": "account (with --from and --to)", "from": "window start (RFC 3339 with zone)", "to": "window end (RFC 3339 with zone)",
	}
	for _, k := range lookupFlags {
		vals[k] = fs.String(k, "", help[k])
	}
	if _, err := parse(fs, args); err != nil {
		return err
	}
	given := map[string]string{}
	for _, k := range lookupFlags {
		if *vals[k] != "" {
			given[k] = *vals[k]
		}
	}
	q, err := lookupQuery(given)
	if err != nil {
		return usageError{err}
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	var res api.LookupResult
	if err := c.Do(ctx, "GET", "/compliance/lookup?"+q.Encode(), nil, &res); err != nil {
		return err
	}
	if cf.json {
		return printJSON(res)
	}
	fmt.Printf("case %s — %s: %d session(s)\n", res.Case, res.Query, len(res.Sessions))
	for _, x := range res.Sessions {
		end := "open"
		if !x.End.IsZero() {
			end = x.End.Format(time.RFC3339)
		}
		if !x.End.IsZero() {
			end += clockNote(x.EndClock)
		}
		if x.EndSource == api.EndInferred {
			end += " (ended, inferred from the gateway's last report)"
		}
		fmt.Printf("  %s  user %q device %d  gateway %s  from %s  tunnel %s %s  exit %s %s ports %d-%d  %s%s .. %s\n",
			x.ID, x.User, x.DeviceID, x.Gateway, x.Endpoint, x.TunnelIPv4, x.TunnelIPv6, x.ExitIPv4, x.ExitIPv6, x.PortLo, x.PortHi, x.Start.Format(time.RFC3339), clockNote(x.Clock), end)
	}
	for u, r := range res.Subscribers {
		fmt.Printf("  subscriber %q: %s <%s>, registered from %s at %s%s, ownership %s\n", u, r.Name, r.Email, r.RegistrationIP, r.RegisteredAt.Format(time.RFC3339), clockNote(r.Clock), r.Ownership)
	}
	return nil
}

// The flags of 'compliance lookup': the case, the four kinds of lookup, and
// what each kind takes.
var lookupFlags = []string{"case", "exit-ip", "port", "at", "tunnel-ip", "endpoint-ip", "subscriber", "from", "to"}

// lookupKinds are the kinds of lookup: the flag that names one, and the
// flags it needs.
var lookupKinds = []struct {
	flag  string
	needs []string
}{
	{"exit-ip", []string{"port", "at"}},
	{"tunnel-ip", []string{"at"}},
	{"endpoint-ip", []string{"from", "to"}},
	{"subscriber", []string{"from", "to"}},
}

// lookupQuery checks the flags given to 'compliance lookup' (name without
// dashes to value) and builds the query to send: exactly one kind of
// lookup with exactly the flags it takes, addresses without zones, ports
// from 1 to 65535, times in RFC 3339 with a zone (sent as the instant in
// UTC), --to after --from. An error names the flag, never its value.
func lookupQuery(given map[string]string) (url.Values, error) {
	if err := caseFlag(given["case"]); err != nil {
		return nil, err
	}
	q := url.Values{"case": {given["case"]}}
	var kind string
	var needs []string
	for _, k := range lookupKinds {
		if _, ok := given[k.flag]; ok {
			if kind != "" {
				kind = ""
				break
			}
			kind, needs = k.flag, k.needs
		}
	}
	if kind == "" {
		return nil, errors.New("give exactly one of --exit-ip (with --port and --at), --tunnel-ip (with --at), --endpoint-ip (with --from and --to) or --subscriber (with --from and --to)")
	}
	for _, f := range []string{"port", "at", "from", "to"} {
		_, ok := given[f]
		switch takes := slices.Contains(needs, f); {
		case ok && !takes:
			var by []string
			for _, k := range lookupKinds {
				if slices.Contains(k.needs, f) {
					by = append(by, "--"+k.flag)
				}
			}
			return nil, fmt.Errorf("--%s belongs to a lookup by %s; a lookup by --%s takes --%s", f, strings.Join(by, " or "), kind, strings.Join(needs, " and --"))
		case !ok && takes:
			return nil, fmt.Errorf("a lookup by --%s needs --%s", kind, f)
		}
	}
	v := given[kind]
	if kind == "subscriber" {
		if check.Text(v, false) != nil {
			return nil, errors.New("--subscriber: want an account name on one line")
		}
		q.Set(kind, v)
	} else {
		a, err := netip.ParseAddr(v)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("--%s: want an IP address (IPv4 or IPv6, without a zone)", kind)
		}
		q.Set(strings.ReplaceAll(kind, "-", "_"), a.Unmap().String())
	}
	if p, ok := given["port"]; ok {
		port, err := check.Port(p)
		if err != nil {
			return nil, errors.New("--port: want a number from 1 to 65535")
		}
		q.Set("port", strconv.Itoa(int(port)))
	}
	times := map[string]time.Time{}
	for _, f := range needs {
		if f == "port" {
			continue
		}
		t, err := flagTime(f, given[f])
		if err != nil {
			return nil, err
		}
		times[f] = t
		q.Set(f, t.UTC().Format(time.RFC3339Nano))
	}
	if from, ok := times["from"]; ok && !times["to"].After(from) {
		return nil, errors.New("--to must be after --from")
	}
	return q, nil
}

// flagTime parses the time of a flag: RFC 3339 with a zone, in the years
// check.MinYear to check.MaxYear. A time without a zone is refused: it is
// ambiguous by hours.
func flagTime(flagName, v string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		if _, err := time.Parse("2006-01-02T15:04:05.999999999", v); err == nil {
			return t, fmt.Errorf("--%s has no time zone: write it as e.g. 2026-05-01T14:30:00+05:30 or 2026-05-01T09:00:00Z", flagName)
		}
		return t, fmt.Errorf("--%s: want an RFC 3339 time with a zone, e.g. 2026-05-01T14:30:00+05:30", flagName)
	}
	if check.Time(t) != nil {
		return t, fmt.Errorf("--%s: want a time in the years %d to %d", flagName, check.MinYear, check.MaxYear)
	}
	return t, nil
}

// caseFlag checks --case: required, and a case reference the server can
// accept (see check.CaseRef; the server's own pattern is checked there).
func caseFlag(ref string) error {
	if ref == "" {
		return errors.New("--case REF is required: every read of compliance data is recorded under the case reference of a lawful request")
	}
	if err := check.CaseRef(ref, nil); err != nil {
		return fmt.Errorf("--case: %v", err)
	}
	return nil
}

// clockNote words the node's clock sync state a record carries, for text
// output: " (clock: synced, offset +2.1 ms from samay1.nic.in)"; nothing
// for records taken before it was kept.
func clockNote(c *api.ClockSync) string {
	if c == nil {
		return ""
	}
	return " (clock: " + c.String() + ")"
}
