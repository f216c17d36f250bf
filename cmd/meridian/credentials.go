package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/gateway"
)

// tokenCommands manage admin tokens of every role through the API (an
// admin token). Without any, 'meridian control admin-token' makes one on
// the control host.
func tokenCommands() []*command {
	return []*command{
		{name: "list", summary: "admin tokens: id, name, role, created, expires, last used, revoked (never a secret)", run: runTokenList},
		{name: "create", summary: "create a token: meridian token create --role admin|compliance|auditor --name N [--ttl 720h]", run: runTokenCreate},
		{name: "revoke", summary: "revoke a token at once: meridian token revoke ID (not the last admin one)", run: runTokenRevoke},
	}
}

func runTokenList(ctx context.Context, args []string) error {
	fs, cf := adminCmd("token list")
	c, _, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	ts, err := c.AdminTokens(ctx)
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(ts)
	}
	when := func(t time.Time, none string) string {
		if t.IsZero() {
			return none
		}
		return t.Local().Format(time.DateTime)
	}
	table("ID\tNAME\tROLE\tCREATED\tEXPIRES\tLAST USED\tSTATE", func(w *tabwriter.Writer) {
		for _, t := range ts {
			state := "live"
			switch {
			case t.Revoked:
				state = "revoked " + when(t.RevokedAt, "")
			case !t.ExpiresAt.IsZero() && !t.ExpiresAt.After(time.Now()):
				state = "expired"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Name, t.Role, when(t.CreatedAt, "-"), when(t.ExpiresAt, "never"), when(t.LastUsedAt, "never"), state)
		}
	})
	return nil
}

func runTokenCreate(ctx context.Context, args []string) error {
	fs, cf := adminCmd("token create")
	role := fs.String("role", "", "admin, compliance (lawful lookups, exports) or auditor (integrity checks only) (required)")
	name := fs.String("name", "", "a name for the token: whose or what for (required)")
	ttl := fs.Duration("ttl", 0, "lifetime, e.g. 720h (default: never expires)")
	c, _, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	if *role == "" || *name == "" {
		return usageError{fmt.Errorf("token create: --role and --name are required")}
	}
	t, err := c.CreateAdminToken(ctx, api.AdminTokenRequest{Name: *name, Role: *role, TTL: *ttl})
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(t)
	}
	exp := "never expires"
	if !t.ExpiresAt.IsZero() {
		exp = "expires " + t.ExpiresAt.Local().Format(time.DateTime)
	}
	fmt.Fprintf(os.Stderr, "token %s (%s, role %s, %s); shown only now:\n", t.ID, t.Name, t.Role, exp)
	fmt.Println(t.Token)
	return nil
}

func runTokenRevoke(ctx context.Context, args []string) error {
	fs, cf := adminCmd("token revoke")
	c, pos, err := cf.parse(fs, args, "ID")
	if err != nil {
		return err
	}
	if err := c.RevokeAdminToken(ctx, pos[0]); err != nil {
		return err
	}
	fmt.Printf("revoked token %s\n", pos[0])
	return nil
}

func runGatewayRemove(ctx context.Context, args []string) error {
	fs, cf := adminCmd("gateway remove")
	c, pos, err := cf.parse(fs, args, "NAME")
	if err != nil {
		return err
	}
	rm, err := c.RemoveGateway(ctx, pos[0])
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(rm)
	}
	fmt.Printf("removed gateway %s: its credential no longer works\n", rm.Name)
	if len(rm.Emptied) > 0 {
		fmt.Printf("now served by no gateway: %s; give them another gateway or remove them ('meridian location remove CODE')\n", strings.Join(rm.Emptied, ", "))
	}
	return nil
}

// runGatewayRotateCredential runs on the gateway's host: the running
// gateway picks the new credential up from its state directory.
func runGatewayRotateCredential(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("gateway rotate-credential", flag.ContinueOnError)
	state := fs.String("state", "./meridian-gateway", "the gateway's state directory")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	nc, err := gateway.RotateCredential(ctx, *state)
	if err != nil {
		return err
	}
	fmt.Printf("gateway %s has a new credential, stored in %s; the old one no longer works\n", nc.Name, *state)
	return nil
}
