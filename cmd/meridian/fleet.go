package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/wg"
)

// stringList is a repeatable flag of strings (comma-separated allowed).
type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error {
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f != "" {
			*s = append(*s, f)
		}
	}
	return nil
}

type placeFlags struct {
	country, city, provider, ownership, advertised string
	capacity                                       int
	entries                                        stringList
	exits                                          addrList
}

func (p *placeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&p.country, "country", "", "ISO 3166-1 alpha-2 code of the country where the machine physically stands (required)")
	fs.StringVar(&p.city, "city", "", "city")
	fs.StringVar(&p.provider, "provider", "", "hosting provider")
	fs.StringVar(&p.ownership, "ownership", "rented", "owned or rented")
	fs.StringVar(&p.advertised, "advertised", "", "country its exit addresses geolocate to (default: --country)")
	fs.IntVar(&p.capacity, "capacity", 0, "active peers at 100 % load (default 1000)")
	fs.Var(&p.entries, "entry", "public entry endpoint host:port (repeatable)")
	fs.Var(&p.exits, "exit-ip", "exit address (repeatable)")
}

func (p *placeFlags) place() (api.Place, error) {
	if p.country == "" {
		return api.Place{}, usageError{errors.New("--country is required: where the machine physically stands")}
	}
	return api.Place{PhysicalCountry: p.country, City: p.city, Provider: p.provider, Ownership: api.Ownership(p.ownership),
		AdvertisedCountry: p.advertised, Capacity: p.capacity, EntryEndpoints: p.entries, ExitAddresses: []netip.Addr(p.exits)}, nil
}

func printPlace(node string, p api.Place) {
	fmt.Printf("%s stands in %s", node, p.PhysicalCountry)
	if p.City != "" {
		fmt.Printf(" (%s)", p.City)
	}
	fmt.Printf(", %s", p.Ownership)
	if p.Provider != "" {
		fmt.Printf(" from %s", p.Provider)
	}
	fmt.Printf("; exit addresses appear in %s; capacity %d\n", p.AdvertisedCountry, p.Capacity)
}

func runSetPlace(node string) func(context.Context, []string) error {
	return func(ctx context.Context, args []string) error {
		name := "control set-place"
		if node == "" {
			name = "gateway set-place"
		}
		fs := flag.NewFlagSet(name, flag.ContinueOnError)
		var cf clientFlags
		var pf placeFlags
		cf.register(fs)
		pf.register(fs)
		want := []string{}
		if node == "" {
			want = []string{"GATEWAY"}
		}
		pos, err := parse(fs, args, want...)
		if err != nil {
			return err
		}
		target := node
		if node == "" {
			target = pos[0]
		}
		p, err := pf.place()
		if err != nil {
			return err
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		saved, err := c.SetPlace(ctx, target, p)
		if err != nil {
			return err
		}
		if cf.json {
			return printJSON(saved)
		}
		printPlace(target, saved)
		return nil
	}
}

func runLocationAdd(ctx context.Context, args []string) error {
	fs, cf := adminCmd("location add")
	country := fs.String("country", "", "advertised country (ISO 3166-1 alpha-2; required)")
	city := fs.String("city", "", "advertised city")
	var gws stringList
	fs.Var(&gws, "gateway", "gateway serving this location (repeatable; at least one)")
	c, pos, err := cf.parse(fs, args, "CODE")
	if err != nil {
		return err
	}
	l, err := c.CreateLocation(ctx, api.Location{Code: pos[0], Country: *country, City: *city, Gateways: gws})
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(l)
	}
	fmt.Printf("added location %s (%s) served by %s\n", l.Code, l.Country, strings.Join(l.Gateways, ", "))
	return nil
}

func runLocationList(ctx context.Context, args []string) error {
	fs, cf := adminCmd("location list")
	c, _, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	sl, err := c.ServerList(ctx)
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(sl)
	}
	table("CODE\tLOCATION\tLOAD\tSCORE\tSERVERS", func(w *tabwriter.Writer) {
		for _, l := range sl.Locations {
			var srv []string
			for _, s := range l.Servers {
				state := fmt.Sprintf("%d%%", s.Load)
				if !s.Healthy {
					state = "down"
				}
				srv = append(srv, fmt.Sprintf("%s[%s %s]", s.Name, s.HostCountry, state))
			}
			fmt.Fprintf(w, "%s\t%s\t%d%%\t%d\t%s\n", l.Code, l.Label, l.Load, l.Score, strings.Join(srv, " "))
		}
	})
	return nil
}

func runLocationRemove(ctx context.Context, args []string) error {
	fs, cf := adminCmd("location remove")
	c, pos, err := cf.parse(fs, args, "CODE")
	if err != nil {
		return err
	}
	if err := c.RemoveLocation(ctx, pos[0]); err != nil {
		return err
	}
	fmt.Printf("removed location %s\n", pos[0])
	return nil
}

func runJurisdictionSet(ctx context.Context, args []string) error {
	fs, cf := adminCmd("jurisdiction set")
	profile := fs.String("profile", "", "duty profile: none, cert-in-2022, or one defined with 'jurisdiction profile-set' (default: unchanged)")
	stance := fs.String("stance", "", "comply (physical presence allowed, duties enforced) or virtual-only (no physical presence) (default: unchanged)")
	triggers := fs.String("triggers", "", "readings that bring the profile, comma-separated: placement, establishment, market (default: unchanged; placement for a new country)")
	confirm := fs.Bool("confirm", false, "apply even though accounts without a subscriber record would newly need one (their devices lose those locations until the records exist); see 'jurisdiction preview'")
	c, pos, err := cf.parse(fs, args, "COUNTRY")
	if err != nil {
		return err
	}
	j, err := c.SetJurisdiction(ctx, api.Jurisdiction{Country: pos[0], Profile: *profile, Stance: *stance, Triggers: splitList(*triggers), Confirm: *confirm})
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(j)
	}
	fmt.Printf("%s: duty profile %s, stance %s, triggers %s\n", j.Country, j.Profile, j.Stance, strings.Join(j.Triggers, ","))
	if j.Preview != nil {
		fmt.Print(j.Preview.Text)
	}
	if len(j.OutOfService) > 0 {
		fmt.Printf("taken out of service (they stand in %s): %s\n", j.Country, strings.Join(j.OutOfService, ", "))
	}
	return nil
}

func runJurisdictionList(ctx context.Context, args []string) error {
	fs, cf := adminCmd("jurisdiction list")
	c, _, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	js, err := c.Jurisdictions(ctx)
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(js)
	}
	table("COUNTRY\tPROFILE\tSTANCE\tUPDATED\tTRIGGERS", func(w *tabwriter.Writer) {
		for _, j := range js {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", j.Country, j.Profile, j.Stance, j.UpdatedAt.Format(time.DateTime), strings.Join(j.Triggers, ","))
		}
	})
	fmt.Println("Countries not listed: stance comply, profile none (IN: cert-in-2022).")
	return nil
}

func runJurisdictionExplain(ctx context.Context, args []string) error {
	fs, cf := adminCmd("jurisdiction explain")
	gateway := fs.String("gateway", "", "gateway to explain (default: the control server)")
	user := fs.String("user", "", "explain for this user's tenant kind (default: the duties of the node itself)")
	location := fs.String("location", "", "explain for sessions on this location (a market reading may bring its country's duties)")
	c, _, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	ex, err := c.ExplainAt(ctx, *gateway, *user, *location)
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(ex)
	}
	fmt.Println(strings.TrimRight(ex.Text, "\n"))
	return nil
}

func runJurisdictionProfiles(ctx context.Context, args []string) error {
	fs, cf := adminCmd("jurisdiction profiles")
	c, _, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	ps, err := c.Profiles(ctx)
	if err != nil {
		return err
	}
	return printJSON(ps)
}

func runJurisdictionProfileSet(ctx context.Context, args []string) error {
	fs, cf := adminCmd("jurisdiction profile-set")
	pos, err := parse(fs, args, "FILE.json")
	if err != nil {
		return err
	}
	body, err := os.ReadFile(pos[0])
	if err != nil {
		return err
	}
	var head struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(body, &head); err != nil || head.Name == "" {
		return fmt.Errorf("%s: a JSON object with a \"name\" is required", pos[0])
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	if err := c.SetProfile(ctx, head.Name, body); err != nil {
		return err
	}
	fmt.Printf("stored duty profile %q\n", head.Name)
	return nil
}

// runDeviceConfig renders a device's config for another location: same key,
// same tunnel addresses (the device roams). The private key comes from the
// device's existing config file, since the server never holds it.
func runDeviceConfig(ctx context.Context, args []string) error {
	fs, cf := adminCmd("device config")
	location := fs.String("location", "", "location code, or auto")
	from := fs.String("from", "", "the device's existing config file, for its private key (required)")
	out := fs.String("out", "", "write the new config here (required unless --qr-terminal)")
	qr := fs.String("qr", "", "also write it as a QR code PNG")
	qrTerm := fs.Bool("qr-terminal", false, "print it as a QR code in the terminal")
	c, id, err := cf.parseID(fs, args)
	if err != nil {
		return err
	}
	if *from == "" || (*out == "" && *qr == "" && !*qrTerm) {
		return usageError{errors.New("device config: --from OLD.conf and --out NEW.conf are required")}
	}
	b, err := os.ReadFile(*from)
	if err != nil {
		return err
	}
	old, err := wg.ParseConfig(b)
	if err != nil {
		return fmt.Errorf("%s: %w", *from, err)
	}
	resp, err := c.DeviceConfig(ctx, id, *location)
	if err != nil {
		return err
	}
	if old.PrivateKey.Public() != resp.Device.PublicKey {
		return fmt.Errorf("%s holds the key of another device, not of device %d", *from, id)
	}
	return writeConfig(resp.Config(old.PrivateKey), *out, *qr, *qrTerm, resp.Tunnel, cf)
}
