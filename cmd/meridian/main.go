// Command meridian is the Meridian VPN platform: control server, gateway,
// client and admin commands in one binary.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string) error
	sub     []*command
}

func commands() []*command {
	return []*command{
		{name: "up", summary: "run a control server and a rootless gateway in one process", run: runUp},
		{name: "control", summary: "run the control server", run: runControl, sub: []*command{
			{name: "admin-token", summary: "create an admin token in a control server's data directory", run: runAdminToken},
			{name: "set-place", summary: "declare where the control server stands (audited)", run: runSetPlace("control")},
		}},
		{name: "gateway", summary: "run a gateway node joined to a control server", run: runGateway, sub: []*command{
			{name: "token", summary: "create a join token for a new gateway", run: runGatewayToken},
			{name: "tokens", summary: "list join tokens", run: runGatewayTokens},
			{name: "revoke-token", summary: "revoke a join token: meridian gateway revoke-token ID", run: runGatewayRevokeToken},
			{name: "list", summary: "list gateways with status, place and load", run: runGatewayList},
			{name: "set-place", summary: "declare where a gateway stands: meridian gateway set-place NAME --country SG … (audited)", run: runSetPlace("")},
			{name: "remove", summary: "remove a gateway; its credential stops at once: meridian gateway remove NAME (audited)", run: runGatewayRemove},
			{name: "rotate-credential", summary: "on the gateway's host: swap its credential for a new one [--state DIR] (audited)", run: runGatewayRotateCredential},
			{name: "records", summary: "session records a gateway holds undelivered, set aside by reason: --gateway G; 'records resend --gateway G [--reason R]' sends them again; 'records discard --gateway G' deletes those no duty requires", run: runGatewayRecords},
		}},
		{name: "token", summary: "admin tokens of every role: list, create with a lifetime, revoke", sub: tokenCommands()},
		{name: "connect", summary: "connect with a WireGuard config and expose the tunnel as a local SOCKS5/HTTP proxy", run: runConnect},
		{name: "user", summary: "manage accounts", sub: []*command{
			{name: "add", summary: "add an account: meridian user add NAME [--kind consumer|enterprise]", run: runUserAdd},
			{name: "list", summary: "list accounts", run: runUserList},
			{name: "delete", summary: "delete an account without devices or record: meridian user delete NAME", run: runUserDelete},
			{name: "cancel", summary: "cancel an account (ends the period of hire; records are retained): meridian user cancel NAME", run: runUserCancel},
		}},
		{name: "subscriber", summary: "subscriber records (CERT-In direction (v)) where a duty requires them", sub: []*command{
			{name: "required", summary: "whether accounts need a subscriber record, and which duty says so", run: runSubscriberRequired},
			{name: "validate", summary: "record a validation: meridian subscriber validate USER --field name --method document --evidence REF", run: runSubscriberValidate},
			{name: "record", summary: "take the record of an existing account that has none: meridian subscriber record USER --full-name … (the flags of user add)", run: runSubscriberRecord},
		}},
		{name: "compliance", summary: "lawful lookups and integrity (compliance / auditor tokens)", sub: []*command{
			{name: "subscriber", summary: "a subscriber's record: meridian compliance subscriber USER --case REF", run: runComplianceSubscriber},
			{name: "lookup", summary: "who used it: --exit-ip IP --port P --at TIME | --tunnel-ip IP --at T | --endpoint-ip IP --from --to | --subscriber U --from --to, with --case REF", run: runComplianceLookup},
			{name: "verify", summary: "verify the ledger's hash chains and signed checkpoints [--checkpoints FILE]… (held copies) [--db FILE --pubkey KEY] (offline)", run: runComplianceVerify},
			{name: "checkpoints", summary: "keep the signed checkpoints outside the database: meridian compliance checkpoints --out FILE [--since TIME]", run: runComplianceCheckpoints},
			{name: "export", summary: "evidence bundle: meridian compliance export --case REF --subscriber USER --out DIR", run: runComplianceExport},
			{name: "approve", summary: "approve another officer's export (two-person rule): meridian compliance approve ID", run: runComplianceApprove},
			{name: "fetch", summary: "write an approved export: meridian compliance fetch ID --out DIR", run: runComplianceFetch},
			{name: "rotate-key", summary: "re-seal personal data under the newest key of the key file (admin token)", run: runComplianceRotateKey},
			{name: "inventory", summary: "every category of personal data: the duty that requires it, where it lies, how much, the oldest, its retention [--json]", run: runComplianceInventory},
			{name: "retention-check", summary: "find what is kept past its retention; fails if anything is (metric, incident candidate)", run: runComplianceRetentionCheck},
		}},
		{name: "device", summary: "manage devices and their WireGuard configs", sub: []*command{
			{name: "add", summary: "add a device and write its WireGuard config", run: runDeviceAdd},
			{name: "list", summary: "list devices", run: runDeviceList},
			{name: "revoke", summary: "revoke a device: meridian device revoke ID", run: runDeviceRevoke},
			{name: "delete", summary: "delete a device and free its addresses: meridian device delete ID", run: runDeviceDelete},
			{name: "config", summary: "config for another location, same key and addresses: meridian device config ID --location CODE --from OLD.conf --out NEW.conf", run: runDeviceConfig},
		}},
		{name: "location", summary: "locations subscribers choose", sub: []*command{
			{name: "add", summary: "add a location: meridian location add CODE --country IN --gateway GW…", run: runLocationAdd},
			{name: "list", summary: "the server list: locations, honest labels, load", run: runLocationList},
			{name: "remove", summary: "remove a location no device uses", run: runLocationRemove},
		}},
		{name: "jurisdiction", summary: "duty profiles and stances per country", sub: []*command{
			{name: "set", summary: "meridian jurisdiction set COUNTRY --profile P --stance comply|virtual-only", run: runJurisdictionSet},
			{name: "list", summary: "configured countries", run: runJurisdictionList},
			{name: "explain", summary: "which duties apply, and why: --gateway G [--user U]", run: runJurisdictionExplain},
			{name: "profiles", summary: "duty profiles (built-in and defined)", run: runJurisdictionProfiles},
			{name: "profile-set", summary: "define a duty profile from a JSON file", run: runJurisdictionProfileSet},
			{name: "preview", summary: "what a change would change: meridian jurisdiction preview IN --triggers placement,market", run: runJurisdictionPreview},
		}},
		{name: "operator", summary: "what the operator declares about itself (establishment, for the establishment trigger)", sub: []*command{
			{name: "set", summary: "meridian operator set --established IN,… [--preview] [--confirm]", run: runOperatorSet},
			{name: "show", summary: "the countries the operator is established in", run: runOperatorShow},
		}},
		{name: "time", summary: "clock sync of every node (CERT-In direction (i)); Meridian watches, chrony sets the clock", sub: []*command{
			{name: "status", summary: "every node's clock: duty, sources, offset, kernel sync, alarms", run: runTimeStatus},
			{name: "chrony-config", summary: "a chrony.conf for a node's sources: meridian time chrony-config [--gateway G]", run: runTimeChronyConfig},
		}},
		{name: "incident", summary: "incident register and reports to CERT-In within the deadline (direction (ii))", sub: append(incidentCommands(), candidateCommands()...)},
		{name: "poc", summary: "point of contact for CERT-In (direction (iii))", sub: pocCommands()},
		{name: "order", summary: "orders of CERT-In and their due times (direction (iii))", sub: orderCommands()},
		{name: "logs", summary: "ICT logs kept for the duty's rolling retention (direction (iv))", sub: logsCommands()},
		{name: "version", summary: "print the version", run: func(context.Context, []string) error { fmt.Println(version); return nil }},
	}
}

var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := dispatch(ctx, commands(), os.Args[1:], "meridian")
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "meridian:", err)
		var ue usageError
		if errors.As(err, &ue) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

type usageError struct{ error }

func dispatch(ctx context.Context, cmds []*command, args []string, path string) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(os.Stdout, cmds, path)
		if len(args) == 0 {
			return usageError{errors.New("a command is required")}
		}
		return nil
	}
	for _, c := range cmds {
		if c.name != args[0] {
			continue
		}
		if len(args) > 1 && (args[1] == "help" || (c.run == nil && (args[1] == "-h" || args[1] == "--help"))) {
			usage(os.Stdout, c.sub, path+" "+c.name)
			return nil
		}
		if len(c.sub) > 0 && len(args) > 1 && !strings.HasPrefix(args[1], "-") {
			for _, s := range c.sub {
				if s.name == args[1] {
					return s.run(ctx, args[2:])
				}
			}
			if c.run == nil {
				return usageError{fmt.Errorf("unknown command %q %q; try 'meridian %s help'", c.name, args[1], c.name)}
			}
		}
		if c.run == nil {
			usage(os.Stdout, c.sub, path+" "+c.name)
			return nil
		}
		return c.run(ctx, args[1:])
	}
	return usageError{fmt.Errorf("unknown command %q; try 'meridian help'", args[0])}
}

func usage(w io.Writer, cmds []*command, path string) {
	fmt.Fprintf(w, "usage: %s <command> [flags]\n\ncommands:\n", path)
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-14s %s\n", c.name, c.summary)
		for _, s := range c.sub {
			fmt.Fprintf(w, "  %-14s %s\n", c.name+" "+s.name, s.summary)
		}
	}
	fmt.Fprintf(w, "\nRun '%s <command> -h' for a command's flags.\n", path)
}

// parse parses flags that may come before or after positional arguments,
// and checks the number of positional arguments.
func parse(fs *flag.FlagSet, args []string, positional ...string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err} // exit status 2, as every usage error
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if len(pos) != len(positional) {
		want := "no arguments"
		if len(positional) > 0 {
			want = strings.Join(positional, " ")
		}
		return nil, usageError{fmt.Errorf("%s: want %s, got %d argument(s)", fs.Name(), want, len(pos))}
	}
	return pos, nil
}

// prefixList is a repeatable flag of CIDR prefixes.
type prefixList []netip.Prefix

func (p *prefixList) String() string {
	s := make([]string, len(*p))
	for i, x := range *p {
		s[i] = x.String()
	}
	return strings.Join(s, ",")
}

func (p *prefixList) Set(v string) error {
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		pfx, err := netip.ParsePrefix(f)
		if err != nil {
			a, aerr := netip.ParseAddr(f)
			if aerr != nil {
				return fmt.Errorf("%q is not a CIDR prefix or address", f)
			}
			pfx = netip.PrefixFrom(a, a.BitLen())
		}
		*p = append(*p, pfx.Masked())
	}
	return nil
}

// addrList is a repeatable flag of addresses.
type addrList []netip.Addr

func (a *addrList) String() string {
	s := make([]string, len(*a))
	for i, x := range *a {
		s[i] = x.String()
	}
	return strings.Join(s, ",")
}

func (a *addrList) Set(v string) error {
	for _, f := range strings.Split(v, ",") {
		addr, err := netip.ParseAddr(strings.TrimSpace(f))
		if err != nil {
			return fmt.Errorf("%q is not an IP address", f)
		}
		*a = append(*a, addr)
	}
	return nil
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError{fmt.Errorf("--log-level %q: want debug, info, warn or error", level)}
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}
