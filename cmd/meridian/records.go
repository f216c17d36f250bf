package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/meridian-vpn/meridian/api"
)

// runGatewayRecords lists what a gateway holds of session records not
// delivered, as it last reported (counts and ids, no personal data), or,
// as 'records resend', has it send its set-aside records again.
func runGatewayRecords(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "resend" {
		return runGatewayRecordsResend(ctx, args[1:])
	}
	if len(args) > 0 && args[0] == "discard" {
		return runGatewayRecordsDiscard(ctx, args[1:])
	}
	return gatewayRecordsCmd(ctx, "gateway records", args, nil,
		func(c *api.Client, gw string) (api.GatewayRecords, error) { return c.GatewayRecords(ctx, gw) },
		printGatewayRecords)
}

// gatewayRecordsCmd runs a 'gateway records' command: its flags (--gateway,
// required, and those extra adds), the call do makes for that gateway, and
// the answer as JSON or as say prints it.
func gatewayRecordsCmd(ctx context.Context, name string, args []string, extra func(*flag.FlagSet),
	do func(c *api.Client, gw string) (api.GatewayRecords, error), say func(api.GatewayRecords)) error {
	fs, cf := adminCmd(name)
	gw := fs.String("gateway", "", "the gateway (required)")
	if extra != nil {
		extra(fs)
	}
	c, _, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	if *gw == "" {
		return usageError{errors.New("--gateway is required")}
	}
	recs, err := do(c, *gw)
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(recs)
	}
	say(recs)
	return nil
}

func printGatewayRecords(recs api.GatewayRecords) {
	if recs.ReportedAt.IsZero() {
		fmt.Printf("gateway %s has not reported since the control server started\n", recs.Gateway)
		return
	}
	fmt.Printf("gateway %s, reported %s: %d records spooled for delivery\n", recs.Gateway, recs.ReportedAt.Format(time.RFC3339), recs.Spooled)
	if len(recs.SetAside) == 0 {
		fmt.Println("no records set aside")
	}
	for _, g := range recs.SetAside {
		fmt.Printf("set aside, %s: %d (oldest started %s)\n", g.Reason, g.Count, g.Oldest.Format(time.RFC3339))
		for _, id := range g.IDs {
			fmt.Printf("  %s\n", id)
		}
		if len(g.IDs) < g.Count {
			fmt.Printf("  … and %d more\n", g.Count-len(g.IDs))
		}
	}
	if len(recs.ResendPending) > 0 {
		fmt.Printf("to be sent again at the gateway's next report: %s\n", strings.Join(recs.ResendPending, ", "))
	}
	if len(recs.DiscardPending) > 0 {
		fmt.Printf("to be deleted at the gateway's next report: %s\n", strings.Join(recs.DiscardPending, ", "))
	}
}

func runGatewayRecordsResend(ctx context.Context, args []string) error {
	var reasons stringList
	return gatewayRecordsCmd(ctx, "gateway records resend", args,
		func(fs *flag.FlagSet) {
			fs.Var(&reasons, "reason", "resend only records set aside for this reason: refused or no_duty (repeatable; default: all)")
		},
		func(c *api.Client, gw string) (api.GatewayRecords, error) {
			return c.ResendGatewayRecords(ctx, gw, api.ResendRequest{Reasons: reasons})
		},
		func(recs api.GatewayRecords) {
			fmt.Printf("gateway %s sends its set-aside records (%s) again at its next report; check with 'meridian gateway records --gateway %s'\n", recs.Gateway, strings.Join(recs.ResendPending, ", "), recs.Gateway)
		})
}

// runGatewayRecordsDiscard has a gateway delete the records it set aside
// because no duty required them (never those refused as wrong).
func runGatewayRecordsDiscard(ctx context.Context, args []string) error {
	return gatewayRecordsCmd(ctx, "gateway records discard", args, nil,
		func(c *api.Client, gw string) (api.GatewayRecords, error) { return c.DiscardGatewayRecords(ctx, gw) },
		func(recs api.GatewayRecords) {
			fmt.Printf("gateway %s deletes the records it set aside as no duty required them at its next report\n", recs.Gateway)
		})
}
