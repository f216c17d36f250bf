package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/meridian-vpn/meridian/api"
)

// splitList splits a comma-separated flag value; "" is none. Empty items
// are kept, for the server to refuse.
func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func runJurisdictionPreview(ctx context.Context, args []string) error {
	fs, cf := adminCmd("jurisdiction preview")
	profile := fs.String("profile", "", "duty profile (default: unchanged)")
	stance := fs.String("stance", "", "comply or virtual-only (default: unchanged)")
	triggers := fs.String("triggers", "", "readings that bring the profile, comma-separated: placement, establishment, market (default: unchanged)")
	c, pos, err := cf.parse(fs, args, "COUNTRY")
	if err != nil {
		return err
	}
	p, err := c.PreviewJurisdiction(ctx, api.Jurisdiction{Country: pos[0], Profile: *profile, Stance: *stance, Triggers: splitList(*triggers)})
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(p)
	}
	fmt.Print(p.Text)
	return nil
}

func runOperatorSet(ctx context.Context, args []string) error {
	fs, cf := adminCmd("operator set")
	established := fs.String("established", "", "countries the operator is established in, comma-separated (e.g. IN,SG); empty for none")
	preview := fs.Bool("preview", false, "only say what the change would change")
	confirm := fs.Bool("confirm", false, "apply even though accounts without a subscriber record would newly need one (their devices lose those locations until the records exist)")
	c, _, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	o := api.Operator{Established: splitList(*established), Confirm: *confirm}
	if o.Established == nil {
		o.Established = []string{}
	}
	if *preview {
		p, err := c.PreviewOperator(ctx, o)
		if err != nil {
			return err
		}
		if cf.json {
			return printJSON(p)
		}
		fmt.Print(p.Text)
		return nil
	}
	got, err := c.SetOperator(ctx, o)
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(got)
	}
	fmt.Printf("established in: %s\n", strings.Join(got.Established, ", "))
	if got.Preview != nil {
		fmt.Print(got.Preview.Text)
	}
	return nil
}

func runOperatorShow(ctx context.Context, args []string) error {
	fs, cf := adminCmd("operator show")
	c, _, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	o, err := c.Operator(ctx)
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(o)
	}
	if len(o.Established) == 0 {
		fmt.Println("established in: (none declared)")
		return nil
	}
	fmt.Printf("established in: %s\n", strings.Join(o.Established, ", "))
	return nil
}
