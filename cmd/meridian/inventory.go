package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/meridian-vpn/meridian/api"
)

// runComplianceInventory prints the data inventory: every category of
// personal data, the duty or choice that requires it, where it lies, how
// much, the oldest, the retention and what is past it.
func runComplianceInventory(ctx context.Context, args []string) error {
	fs, cf := adminCmd("compliance inventory")
	c, _, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	inv, err := c.Inventory(ctx)
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(inv)
	}
	printInventory(inv)
	if inv.Breaches > 0 {
		return fmt.Errorf("%d categories hold personal data that no duty or choice requires", inv.Breaches)
	}
	return nil
}

// runComplianceRetentionCheck finds the items past their retention and
// fails if there are any (the server sets a metric and raises an incident
// candidate).
func runComplianceRetentionCheck(ctx context.Context, args []string) error {
	fs, cf := adminCmd("compliance retention-check")
	c, _, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	inv, err := c.RetentionCheck(ctx)
	if err != nil {
		return err
	}
	if cf.json {
		if err := printJSON(inv); err != nil {
			return err
		}
	} else {
		for _, cat := range inv.Categories {
			if cat.Overdue > 0 {
				fmt.Printf("%s: %d past their retention (%s)\n", cat.Name, cat.Overdue, cat.Retention)
			}
		}
	}
	if inv.Overdue > 0 {
		return fmt.Errorf("%d items past their retention; the retention job purges them (an incident candidate was raised)", inv.Overdue)
	}
	if !cf.json {
		fmt.Println("nothing is kept past its retention")
	}
	return nil
}

func printInventory(inv api.Inventory) {
	w := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(w, "CATEGORY\tCOUNT\tOLDEST\tOVERDUE\tREQUIRED BY\tWHERE\tRETENTION")
	for _, c := range inv.Categories {
		oldest := "-"
		if !c.Oldest.IsZero() {
			oldest = c.Oldest.Format(time.DateOnly)
		}
		why := strings.Join(c.Duties, "; ")
		if c.Choice != "" {
			why = strings.Join(append(c.Duties, "choice: "+c.Choice), "; ")
		}
		if why == "" {
			why = "no duty"
		}
		if c.NoDuty {
			why += " (BREACH: held with no duty)"
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%d\t%s\t%s\t%s\n", c.Name, c.Count, oldest, c.Overdue, why, c.Where, c.Retention)
	}
	w.Flush()
	if !inv.NextPurge.IsZero() {
		fmt.Printf("next retention purge: %s\n", inv.NextPurge.Format(time.RFC3339))
	}
}
