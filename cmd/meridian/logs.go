package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/incident"
	"github.com/meridian-vpn/meridian/internal/atomicfile"
)

// The ICT log (CERT-In direction (iv)) and incident candidates.

func logsCommands() []*command {
	return []*command{
		{name: "status", summary: "where the ICT logs are kept, which nodes' duties they serve, retention and contents", run: runLogsStatus},
		{name: "export", summary: "write the entries of a range as JSON lines, with a SHA-256: meridian logs export --from TIME --to TIME --out FILE", run: runLogsExport},
	}
}

func candidateCommands() []*command {
	return []*command{
		{name: "candidates", summary: "incidents the platform suspects, to confirm or dismiss [--all: with decided ones]", run: runCandidates},
		{name: "confirm", summary: "add a candidate to the register, noticed when it was detected: meridian incident confirm ID [--type N] [--note TEXT]", run: runCandidateConfirm},
		{name: "dismiss", summary: "record that a candidate is not an incident: meridian incident dismiss ID --reason TEXT", run: runCandidateDismiss},
	}
}

func runLogsStatus(ctx context.Context, args []string) error {
	fs, cf := adminCmd("logs status")
	c, _, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	st, err := c.ICTLogStatus(ctx)
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(st)
	}
	if st.Location != "" {
		fmt.Printf("kept in:   %s (%s), in the control server's database\n", st.Location, st.LocationName)
	} else {
		fmt.Println("kept in:   not configured (--ict-log-location), in the control server's database")
	}
	if st.ControlCountry != "" {
		fmt.Printf("control:   placed in %s\n", st.ControlCountry)
	}
	if st.KeepDays > 0 {
		fmt.Printf("retention: %d days (rolling), the longest of the duties below\n", st.KeepDays)
	}
	fmt.Printf("entries:   %d", st.Entries)
	if st.Entries > 0 {
		fmt.Printf(", %s to %s", formatTime(st.Oldest), formatTime(st.Newest))
	}
	fmt.Println()
	if st.Dropped > 0 {
		fmt.Printf("lost:      %d events since the server started (buffer full)\n", st.Dropped)
	}
	if len(st.Duties) > 0 {
		fmt.Println("\nNodes whose events are recorded:")
		table("NODE\tCOUNTRY\tKEEP\tWHY", func(w *tabwriter.Writer) {
			for _, d := range st.Duties {
				fmt.Fprintf(w, "%s\t%s\t%d days\t%s\n", d.Node, d.Country, d.KeepDays, d.Why)
			}
		})
	}
	for _, n := range st.Notes {
		fmt.Println("note:", n)
	}
	return nil
}

func runLogsExport(ctx context.Context, args []string) error {
	fs, cf := adminCmd("logs export")
	from := fs.String("from", "", "start of the range, inclusive (RFC 3339 with a zone, e.g. 2026-05-01T00:00:00+05:30)")
	to := fs.String("to", "", `end of the range, exclusive (RFC 3339 with a zone, or "now")`)
	out := fs.String("out", "", "file to write (JSON lines); its SHA-256 goes to FILE.sha256")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	if *from == "" || *to == "" || *out == "" {
		return usageError{errors.New("logs export: --from, --to and --out are required")}
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(*out), ".ict-export-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if *to == "now" { // to the nanosecond: to is exclusive
		*to = time.Now().Format(time.RFC3339Nano)
	}
	n, sum, err := c.ExportICTLog(ctx, *from, *to, f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), *out)
	}
	if err != nil {
		return err
	}
	line := fmt.Sprintf("%s  %s\n", sum, filepath.Base(*out))
	if err := atomicfile.Write(*out+".sha256", []byte(line), 0o644); err != nil {
		return err
	}
	if cf.json {
		return printJSON(map[string]any{"file": *out, "entries": n, "sha256": sum})
	}
	fmt.Printf("%d entries written to %s\nSHA-256 %s (also in %s.sha256; the export is recorded in the log with it)\n", n, *out, sum, *out)
	return nil
}

func runCandidates(ctx context.Context, args []string) error {
	fs, cf := adminCmd("incident candidates")
	all := fs.Bool("all", false, "include confirmed and dismissed candidates")
	c, _, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	cs, err := c.IncidentCandidates(ctx, *all)
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(cs)
	}
	if len(cs) == 0 {
		fmt.Println("no pending incident candidates")
		return nil
	}
	for _, k := range cs {
		var types []string
		for _, t := range k.Types {
			types = append(types, incident.Type(t).String())
		}
		fmt.Printf("candidate %d  %s on %s  %s\n", k.ID, k.Kind, k.Node, k.State)
		fmt.Printf("  detected %s, last seen %s, %d sighting(s)\n", formatTime(k.DetectedAt), formatTime(k.LastSeenAt), k.Sightings)
		if k.Clock != nil {
			fmt.Printf("  clock at detection: %s\n", k.Clock)
		}
		fmt.Printf("  may be:  %s\n", strings.Join(types, "; "))
		fmt.Printf("  %s\n", k.Summary)
		switch k.State {
		case api.CandidatePending:
			fmt.Printf("  next: 'meridian incident confirm %d' (the deadline counts from detection) or 'meridian incident dismiss %d --reason …'\n", k.ID, k.ID)
		case api.CandidateConfirmed:
			fmt.Printf("  confirmed %s by %s as incident %d\n", formatTime(k.DecidedAt), k.DecidedBy, k.Incident)
		case api.CandidateDismissed:
			fmt.Printf("  dismissed %s by %s: %s\n", formatTime(k.DecidedAt), k.DecidedBy, k.Reason)
		}
	}
	return nil
}

func runCandidateConfirm(ctx context.Context, args []string) error {
	fs, cf := adminCmd("incident confirm")
	typ := fs.Int("type", 0, "Annexure I type (default: the candidate's first)")
	note := fs.String("note", "", "a note for the history")
	c, id, err := cf.parseID(fs, args)
	if err != nil {
		return err
	}
	inc, err := c.ConfirmCandidate(ctx, id, api.CandidateConfirm{Type: *typ, Note: *note})
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(inc)
	}
	fmt.Printf("incident %d recorded: %s\n", inc.ID, inc.Type)
	fmt.Printf("noticed %s (when detected); initial report due by %s: %s\n", formatTime(inc.Noticed), formatTime(inc.Deadline), inc.Status)
	fmt.Print(incident.ClockLines(inc.NoticeClock, inc.ConfirmClock))
	fmt.Printf("next: 'meridian incident update %d' to complete the form, 'meridian incident send %d' to send it to %s\n", inc.ID, inc.ID, inc.Recipient)
	return nil
}

func runCandidateDismiss(ctx context.Context, args []string) error {
	fs, cf := adminCmd("incident dismiss")
	reason := fs.String("reason", "", "why this is not an incident (required; kept with the candidate)")
	pos, err := parse(fs, args, "ID")
	if err != nil {
		return err
	}
	id, err := parseID(pos[0])
	if err != nil {
		return err
	}
	if *reason == "" {
		return usageError{errors.New("incident dismiss: --reason is required")}
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	k, err := c.DismissCandidate(ctx, id, *reason)
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(k)
	}
	fmt.Printf("candidate %d dismissed: %s\n", k.ID, k.Reason)
	return nil
}
