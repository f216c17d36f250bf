package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/wg"
)

// clientFlags are the flags every admin command shares: where the control
// server is and which token to use. They fall back to MERIDIAN_SERVER,
// MERIDIAN_TOKEN and MERIDIAN_CA_SHA256, then to the files that
// 'meridian up' writes in its data directory.
type clientFlags struct {
	server, token, caHash, data string
	json                        bool

	resolvedServer, resolvedCA string // what client() settled on
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.server, "server", "", "control server URL (default $MERIDIAN_SERVER, then DATA/control.url)")
	fs.StringVar(&c.token, "token", "", "admin token (default $MERIDIAN_TOKEN, then DATA/admin-token)")
	fs.StringVar(&c.caHash, "ca-sha256", "", "control CA fingerprint for https (default $MERIDIAN_CA_SHA256, then DATA/control/ca.pem)")
	fs.StringVar(&c.data, "data", "./meridian-data", "data directory of 'meridian up' to read defaults from")
	fs.BoolVar(&c.json, "json", false, "print JSON for scripts")
}

// adminCmd starts an admin command: its flag set, with the flags every
// admin command shares.
func adminCmd(name string) (*flag.FlagSet, *clientFlags) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	cf := &clientFlags{}
	cf.register(fs)
	return fs, cf
}

// parse parses the command line (see parse) and returns a client for the
// control server with the positional arguments.
func (c *clientFlags) parse(fs *flag.FlagSet, args []string, positional ...string) (*api.Client, []string, error) {
	pos, err := parse(fs, args, positional...)
	if err != nil {
		return nil, nil, err
	}
	cl, err := c.client()
	return cl, pos, err
}

// parseID parses a command whose one argument is a numeric id and returns
// a client for the control server with the id.
func (c *clientFlags) parseID(fs *flag.FlagSet, args []string) (*api.Client, int64, error) {
	pos, err := parse(fs, args, "ID")
	if err != nil {
		return nil, 0, err
	}
	id, err := parseID(pos[0]) // a bad id is said before a missing server
	if err != nil {
		return nil, 0, err
	}
	cl, err := c.client()
	return cl, id, err
}

func (c *clientFlags) client() (*api.Client, error) {
	read := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(c.data, name))
		return strings.TrimSpace(string(b))
	}
	server := firstNonEmpty(c.server, os.Getenv("MERIDIAN_SERVER"), read(controlURLFile))
	token := firstNonEmpty(c.token, os.Getenv("MERIDIAN_TOKEN"), read(adminTokenFile))
	if server == "" {
		return nil, errors.New("no control server: give --server URL, set MERIDIAN_SERVER, or run in the directory where 'meridian up' keeps ./meridian-data")
	}
	if token == "" {
		return nil, errors.New("no admin token: give --token, set MERIDIAN_TOKEN, or point --data at the control server's data directory")
	}
	caHash := firstNonEmpty(c.caHash, os.Getenv("MERIDIAN_CA_SHA256"))
	if caHash == "" && strings.HasPrefix(server, "https://") {
		if pemBytes, err := os.ReadFile(filepath.Join(c.data, "control", "ca.pem")); err == nil {
			caHash, _ = caFingerprint(pemBytes)
		}
	}
	c.resolvedServer, c.resolvedCA = server, caHash
	return api.NewClient(server, token, caHash)
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func table(header string, rows func(w *tabwriter.Writer)) {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, header)
	rows(w)
	w.Flush()
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return time.Since(t).Round(time.Second).String() + " ago"
}

func runUserAdd(ctx context.Context, args []string) error {
	fs, cf := adminCmd("user add")
	kind := fs.String("kind", "consumer", "consumer (a customer of a VPN service) or enterprise (an organisation's own staff)")
	details := subscriberFlags(fs)
	pos, err := parse(fs, args, "NAME")
	if err != nil {
		return err
	}
	req := api.CreateUserRequest{Name: pos[0], Kind: api.TenantKind(*kind)}
	if req.Subscriber, err = details(); err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	u, err := c.CreateUser(ctx, req)
	if err != nil {
		return detailsHint(err)
	}
	if cf.json {
		return printJSON(u)
	}
	fmt.Printf("added %s user %q\n", u.Kind, u.Name)
	return nil
}

// subscriberFlags registers the flags of a subscriber record's items
// (CERT-In direction (v)) on fs; the function it returns gives the items
// after parsing, nil when none was given.
func subscriberFlags(fs *flag.FlagSet) func() (*api.SubscriberDetails, error) {
	var d api.SubscriberDetails
	var phones stringList
	fs.StringVar(&d.Name, "full-name", "", "subscriber record (a): the subscriber's name")
	fs.StringVar(&d.Email, "email", "", "subscriber record (d): email address")
	fs.StringVar(&d.Purpose, "purpose", "", "subscriber record (e): purpose for hiring the service")
	fs.StringVar(&d.Address, "address", "", "subscriber record (f): postal address")
	fs.Var(&phones, "phone", "subscriber record (f): contact number (repeatable)")
	ownership := fs.String("ownership", "", "subscriber record (g): individual, company, partnership, government or other")
	file := fs.String("subscriber", "", "read the subscriber record fields from this JSON file instead")
	return func() (*api.SubscriberDetails, error) {
		d.Phones, d.Ownership = phones, api.OwnershipPattern(*ownership)
		if *file != "" {
			b, err := os.ReadFile(*file)
			if err != nil {
				return nil, err
			}
			if err := json.Unmarshal(b, &d); err != nil {
				return nil, fmt.Errorf("%s: %v", *file, err)
			}
		}
		if d.Name != "" || d.Email != "" || d.Purpose != "" || d.Address != "" || len(d.Phones) > 0 || d.Ownership != "" {
			return &d, nil
		}
		return nil, nil
	}
}

// detailsHint adds to a refusal for missing subscriber record items the
// flags that give them.
func detailsHint(err error) error {
	var se *api.StatusError
	if errors.As(err, &se) && strings.Contains(se.Message, "subscriber record is required") {
		return fmt.Errorf("%w\ngive the fields with --full-name, --email, --purpose, --address, --phone, --ownership (or --subscriber FILE.json)", err)
	}
	return err
}

// runSubscriberRecord takes the subscriber record of an existing account
// that has none, with the items 'user add' takes.
func runSubscriberRecord(ctx context.Context, args []string) error {
	fs, cf := adminCmd("subscriber record")
	details := subscriberFlags(fs)
	pos, err := parse(fs, args, "USER")
	if err != nil {
		return err
	}
	d, err := details()
	if err != nil {
		return err
	}
	if d == nil {
		d = &api.SubscriberDetails{} // the server names what is missing
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	var resp api.SignupResponse
	if err := c.Do(ctx, "PUT", "/subscribers/"+url.PathEscape(pos[0])+"/record", d, &resp); err != nil {
		return detailsHint(err)
	}
	if cf.json {
		return printJSON(resp)
	}
	fmt.Printf("subscriber record of %q taken; its devices are served again where a record is needed\n", pos[0])
	if resp.EmailCodeSent {
		fmt.Println("a verification code was mailed to the subscriber")
	}
	return nil
}

func runUserCancel(ctx context.Context, args []string) error {
	fs, cf := adminCmd("user cancel")
	c, pos, err := cf.parse(fs, args, "NAME")
	if err != nil {
		return err
	}
	if err := c.Do(ctx, "POST", "/users/"+url.PathEscape(pos[0])+"/cancel", nil, nil); err != nil {
		return err
	}
	fmt.Printf("cancelled %q: its devices are revoked; a subscriber record, if kept, is retained for its retention period from today\n", pos[0])
	return nil
}

func runUserList(ctx context.Context, args []string) error {
	fs, cf := adminCmd("user list")
	c, _, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	users, err := c.Users(ctx)
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(users)
	}
	table("NAME\tKIND\tDEVICES\tCREATED", func(w *tabwriter.Writer) {
		for _, u := range users {
			fmt.Fprintf(w, "%s\t%s\t%d\t%s\n", u.Name, u.Kind, u.Devices, u.CreatedAt.Format(time.DateTime))
		}
	})
	return nil
}

func runUserDelete(ctx context.Context, args []string) error {
	fs, cf := adminCmd("user delete")
	c, pos, err := cf.parse(fs, args, "NAME")
	if err != nil {
		return err
	}
	if err := c.DeleteUser(ctx, pos[0]); err != nil {
		return err
	}
	fmt.Printf("deleted user %q\n", pos[0])
	return nil
}

func runDeviceAdd(ctx context.Context, args []string) error {
	fs, cf := adminCmd("device add")
	user := fs.String("user", "", "owner of the device (required)")
	name := fs.String("name", "", "device name (required)")
	out := fs.String("out", "", "write the WireGuard config here (mode 0600)")
	qr := fs.String("qr", "", "write the config as a QR code PNG here, for the mobile WireGuard apps")
	qrTerm := fs.Bool("qr-terminal", false, "print the config as a QR code in the terminal")
	serverKey := fs.Bool("server-key", false, "let the server generate the key pair (default: generated here; the private key never leaves this machine)")
	location := fs.String("location", "", "location code to connect to, or auto for the least-loaded healthy gateway (see 'meridian location list')")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	if *user == "" || *name == "" {
		return usageError{errors.New("device add: --user and --name are required")}
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	req := api.CreateDeviceRequest{User: *user, Name: *name, Location: *location}
	var priv wg.Key
	if !*serverKey {
		if priv, err = wg.NewPrivateKey(); err != nil {
			return err
		}
		pub := priv.Public()
		req.PublicKey = &pub
	}
	resp, err := c.CreateDevice(ctx, req)
	if err != nil {
		return err
	}
	if resp.PrivateKey != nil {
		priv = *resp.PrivateKey
	}
	if cf.json && *out == "" && *qr == "" {
		return printJSON(resp)
	}
	fmt.Printf("added device %d %q for %q: %s, %s\n", resp.Device.ID, resp.Device.Name, resp.Device.User, resp.Device.IPv4, resp.Device.IPv6)
	if *out == "" && *qr == "" && !*qrTerm {
		if !*serverKey {
			fmt.Println("note: no --out given, so the private key generated here is gone; delete this device and add it again with --out FILE.conf")
		}
		return nil
	}
	if resp.Tunnel.Endpoint == "" {
		return errors.New("no gateway has joined the control server yet, so no config can be written; start one and run 'meridian device delete' + 'device add' again")
	}
	return writeConfig(resp.Config(priv), *out, *qr, *qrTerm, resp.Tunnel, cf)
}

// writeConfig writes a device's WireGuard config to out (0600), as a QR code
// PNG to qr, and to the terminal as a QR code, as asked.
func writeConfig(cfg *wg.Config, out, qr string, qrTerm bool, t api.TunnelInfo, cf *clientFlags) error {
	conf := cfg.Render()
	if t.Location != "" {
		// Comments for 'meridian connect', which fails over to another
		// gateway of the location; WireGuard apps ignore them.
		h := fmt.Sprintf("# Meridian: 'meridian connect' reads the lines below to fail over within the location.\n%s%s\n%s%s\n",
			metaLocation, t.Location, metaControl, cf.resolvedServer)
		if cf.resolvedCA != "" {
			h += metaCA + cf.resolvedCA + "\n"
		}
		conf = append([]byte(h), conf...)
	}
	if out != "" {
		if err := os.WriteFile(out, conf, 0o600); err != nil {
			return err
		}
		where := ""
		if t.Location != "" {
			where = " in location " + t.Location
		}
		fmt.Printf("wrote %s (gateway %q at %s%s)\n", out, t.Gateway, t.Endpoint, where)
	}
	if qr != "" {
		png, err := wg.QRCodePNG(string(conf), 512)
		if err != nil {
			return err
		}
		if err := os.WriteFile(qr, png, 0o600); err != nil {
			return err
		}
		fmt.Printf("wrote %s\n", qr)
	}
	if qrTerm {
		fmt.Print(wg.QRCodeTerminal(string(conf)))
	}
	return nil
}

func runDeviceList(ctx context.Context, args []string) error {
	fs, cf := adminCmd("device list")
	user := fs.String("user", "", "only this user's devices")
	c, _, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	devs, err := c.Devices(ctx, *user)
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(devs)
	}
	table("ID\tUSER\tNAME\tSTATUS\tIPV4\tIPV6\tPUBLIC KEY", func(w *tabwriter.Writer) {
		for _, d := range devs {
			fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", d.ID, d.User, d.Name, d.Status, d.IPv4, d.IPv6, d.PublicKey)
		}
	})
	return nil
}

func runDeviceRevoke(ctx context.Context, args []string) error {
	fs, cf := adminCmd("device revoke")
	c, id, err := cf.parseID(fs, args)
	if err != nil {
		return err
	}
	d, err := c.RevokeDevice(ctx, id)
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(d)
	}
	fmt.Printf("revoked device %d %q of %q; gateways drop it within seconds\n", d.ID, d.Name, d.User)
	return nil
}

func runDeviceDelete(ctx context.Context, args []string) error {
	fs, cf := adminCmd("device delete")
	c, id, err := cf.parseID(fs, args)
	if err != nil {
		return err
	}
	if err := c.DeleteDevice(ctx, id); err != nil {
		return err
	}
	fmt.Printf("deleted device %d\n", id)
	return nil
}

func runGatewayToken(ctx context.Context, args []string) error {
	fs, cf := adminCmd("gateway token")
	reusable := fs.Bool("reusable", false, "let several gateways join with this token")
	ttl := fs.Duration("ttl", 24*time.Hour, "how long the token is valid")
	c, _, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	t, err := c.CreateJoinToken(ctx, api.JoinTokenRequest{Reusable: *reusable, TTL: *ttl})
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(t)
	}
	kind := "single-use"
	if t.Reusable {
		kind = "reusable"
	}
	fmt.Printf("%s\n\n%s join token %s, valid until %s. On the gateway:\n  meridian gateway --control URL --join-token %s --endpoint PUBLIC_HOST:51820\n",
		t.Token, kind, t.ID, t.ExpiresAt.Format(time.RFC3339), t.Token)
	return nil
}

func runGatewayTokens(ctx context.Context, args []string) error {
	fs, cf := adminCmd("gateway tokens")
	c, _, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	ts, err := c.JoinTokens(ctx)
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(ts)
	}
	table("ID\tREUSABLE\tEXPIRES\tUSED\tREVOKED", func(w *tabwriter.Writer) {
		for _, t := range ts {
			used := "-"
			if !t.UsedAt.IsZero() {
				used = t.UsedAt.Format(time.DateTime)
			}
			fmt.Fprintf(w, "%s\t%v\t%s\t%s\t%v\n", t.ID, t.Reusable, t.ExpiresAt.Format(time.DateTime), used, t.Revoked)
		}
	})
	return nil
}

func runGatewayRevokeToken(ctx context.Context, args []string) error {
	fs, cf := adminCmd("gateway revoke-token")
	c, pos, err := cf.parse(fs, args, "ID")
	if err != nil {
		return err
	}
	if err := c.RevokeJoinToken(ctx, pos[0]); err != nil {
		return err
	}
	fmt.Printf("revoked join token %s\n", pos[0])
	return nil
}

func runGatewayList(ctx context.Context, args []string) error {
	fs, cf := adminCmd("gateway list")
	c, _, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	gws, err := c.Gateways(ctx)
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(gws)
	}
	table("NAME\tSTATUS\tPLACE\tMODE\tENDPOINT\tPEERS\tACTIVE\tRX\tTX\tLAST SEEN", func(w *tabwriter.Writer) {
		for _, g := range gws {
			status := "down"
			if g.Healthy {
				status = "up"
			}
			if !g.InService {
				status = "out-of-service"
			}
			place := "undeclared"
			if g.Place != nil {
				place = g.Place.PhysicalCountry
				if g.Place.AdvertisedCountry != g.Place.PhysicalCountry {
					place += " (exits appear in " + g.Place.AdvertisedCountry + ")"
				}
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", g.Name, status, place, g.Mode, g.Endpoint,
				g.Load.Peers, g.Load.ActivePeers, bytesString(g.Load.RxBytes), bytesString(g.Load.TxBytes), ago(g.LastSeen))
		}
	})
	for _, g := range gws {
		if g.OutOfServiceReason != "" {
			fmt.Printf("%s: %s\n", g.Name, g.OutOfServiceReason)
		}
	}
	return nil
}

func bytesString(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// caFingerprint is the hex SHA-256 of a PEM certificate, as join tokens carry it.
func caFingerprint(pemBytes []byte) (string, error) {
	b, _ := pem.Decode(pemBytes)
	if b == nil {
		return "", errors.New("not a PEM certificate")
	}
	sum := sha256.Sum256(b.Bytes)
	return hex.EncodeToString(sum[:]), nil
}
