package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/timesync"
	"github.com/meridian-vpn/meridian/timesync/syncstamp"
)

// clockFlags is the --ntp-source flag of the commands that run a node.
type clockFlags struct {
	sources                        stringList
	maxDeviation, noReferenceAfter time.Duration
}

func (c *clockFlags) register(fs *flag.FlagSet) {
	fs.Var(&c.sources, "ntp-source", "NTP server HOST[:PORT] to check this node's clock against instead of its clock-sync duty's sources, e.g. a cloud's own time service (repeatable); without it a node queries its duty's sources, and a node without the duty queries nothing")
	fs.DurationVar(&c.maxDeviation, "ntp-max-deviation", timesync.DefaultMaxDeviation, "with --ntp-source under a clock-sync duty: the deviation from the duty's sources (NIC/NPL, queried at a low rate) over which the clock is not traceable and the trace alarm is raised")
	fs.DurationVar(&c.noReferenceAfter, "ntp-no-reference-after", timesync.DefaultNoReferenceAfter, "with --ntp-source under a clock-sync duty: how long the duty's sources may stay silent before the no-reference alarm")
}

// monitor returns the time monitor of the node named node.
func (c *clockFlags) monitor(log *slog.Logger, node string) (*timesync.Monitor, error) {
	m, err := timesync.New(timesync.Config{Sources: c.sources, MaxDeviation: c.maxDeviation, NoReferenceAfter: c.noReferenceAfter, Logger: log.With("node", node)})
	if err != nil {
		return nil, usageError{fmt.Errorf("--ntp-source: %w", err)}
	}
	return m, nil
}

func runTimeStatus(ctx context.Context, args []string) error {
	fs, cf := adminCmd("time status")
	c, _, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	nodes, err := c.Time(ctx)
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(nodes)
	}
	table("NODE\tREQUIRED\tSOURCES\tOFFSET\tDELAY\tSTRATUM\tLEAP\tKERNEL\tSTATE", func(w *tabwriter.Writer) {
		for _, n := range nodes {
			required := "no"
			if n.Plan.Required {
				required = "yes"
			}
			st := n.Status
			if st == nil {
				fmt.Fprintf(w, "%s\t%s\t%s\t-\t-\t-\t-\t-\tnot watched\n", n.Node, required, orDash(strings.Join(n.Plan.Sources, ",")))
				continue
			}
			var names []string
			offset, delay, stratum, leap := "-", "-", "-", "-"
			for _, s := range st.Sources {
				if s.Source == st.Best {
					names = append(names, "*"+s.Source)
					offset, delay, stratum, leap = signed(s.Offset), s.Delay.Round(time.Microsecond).String(), fmt.Sprint(s.Stratum), s.Leap
				} else {
					names = append(names, s.Source)
				}
			}
			sources := orDash(strings.Join(names, ","))
			if st.Overridden {
				sources += " (set on node)"
			}
			kernel := "?"
			if st.Kernel.Known {
				kernel = map[bool]string{true: "synced", false: "unsynced"}[st.Kernel.Synced]
			}
			state := string(st.State)
			if !st.Since.IsZero() {
				state += " since " + st.Since.Local().Format(time.DateTime)
			}
			if age := time.Since(st.At); age > 2*time.Minute {
				state += fmt.Sprintf(" (as of %s ago)", age.Round(time.Second))
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.Node, required, sources, offset, delay, stratum, leap, kernel, state)
		}
	})
	for _, n := range nodes {
		if n.Status != nil && n.Status.Trace != nil {
			fmt.Printf("%s: %s\n", n.Node, traceLine(n.Status.Trace))
		}
	}
	return nil
}

// traceLine words a node's traceability to its duty's reference sources:
// "traceable: max deviation 12.0 ms against samay1.nic.in over 24 h".
func traceLine(t *api.TimeTrace) string {
	ref := orDash(t.Reference)
	over := fmt.Sprintf("over %d h", int(t.Window.Hours()))
	switch t.Alarm {
	case "deviation":
		return fmt.Sprintf("NOT traceable (alarm since %s): max deviation %s against %s %s, bound %s", t.AlarmSince.Local().Format(time.DateTime),
			syncstamp.FormatDeviation(t.MaxDeviation), ref, over, syncstamp.FormatDeviation(t.Bound))
	case "no-reference":
		return fmt.Sprintf("NOT traceable (alarm since %s): no reference source answered", t.AlarmSince.Local().Format(time.DateTime))
	}
	if t.Measurements == 0 {
		return "NOT traceable yet: no measurement against the reference sources"
	}
	return fmt.Sprintf("traceable: max deviation %s against %s %s", syncstamp.FormatDeviation(t.MaxDeviation), ref, over)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// signed writes an offset with its sign: "+1.234ms".
func signed(d time.Duration) string {
	d = d.Round(time.Microsecond)
	if d >= 0 {
		return "+" + d.String()
	}
	return d.String()
}

func runTimeChronyConfig(ctx context.Context, args []string) error {
	fs, cf := adminCmd("time chrony-config")
	gw := fs.String("gateway", "", "the gateway to configure (default: the control server)")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	node := api.ControlNode
	if *gw != "" {
		node = *gw
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	nodes, err := c.Time(ctx)
	if err != nil {
		return err
	}
	for _, n := range nodes {
		if n.Node != node {
			continue
		}
		sources, why := n.Plan.Sources, fmt.Sprintf("Clock sync is required by %s.", n.Plan.Why)
		if st := n.Status; st != nil && st.Overridden {
			sources = nil
			for _, s := range st.Sources {
				sources = append(sources, s.Source)
			}
			why = "This node checks its clock against sources set on it with --ntp-source"
			if n.Plan.Required {
				why += fmt.Sprintf(";\nclock sync is required by %s, whose sources are %s.", n.Plan.Why, strings.Join(n.Plan.Sources, ", "))
			} else {
				why += fmt.Sprintf(" (no duty requires it: %s).", n.Plan.Why)
			}
		}
		if len(sources) == 0 {
			return fmt.Errorf("%s carries no clock-sync duty (%s) and has no NTP source of its own (--ntp-source): there is nothing to configure", node, n.Plan.Why)
		}
		conf, err := timesync.ChronyConfig(node, sources, why)
		if err != nil {
			return err
		}
		fmt.Print(conf)
		return nil
	}
	return fmt.Errorf("no gateway named %q; see 'meridian gateway list'", node)
}
