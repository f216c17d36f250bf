package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/meridian-vpn/meridian/mail"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/control"
	"github.com/meridian-vpn/meridian/exit"
	"github.com/meridian-vpn/meridian/gateway"
	"github.com/meridian-vpn/meridian/internal/atomicfile"
	"github.com/meridian-vpn/meridian/internal/check"
	"github.com/meridian-vpn/meridian/internal/datadir"
	"github.com/meridian-vpn/meridian/portblock"
	"golang.org/x/net/netutil"
)

// Files in a data directory that the admin commands read.
const (
	adminTokenFile = "admin-token"
	controlURLFile = "control.url"
)

type controlFlags struct {
	data     string
	listen   string
	hosts    string
	pool4    string
	pool6    string
	dns      addrList
	logLevel string

	keys                               string
	smtp, mailFrom, smtpUser, smtpPass string
	smtpTLS                            string
	signup, collectAll, twoPerson      bool
	trusted                            prefixList
	clock                              clockFlags
	incidentWebhook                    string
	ictLogLocation                     string
	casePattern                        string
	signupsPerSource, signupsPerEmail  int
	signupMailsPerDay                  int
	signupExpiry                       time.Duration
	sessionSilence                     time.Duration
	limits                             limitFlags
}

func (c *controlFlags) register(fs *flag.FlagSet, defaultListen string) {
	fs.StringVar(&c.data, "data", "./meridian-data", "data directory")
	fs.StringVar(&c.listen, "listen", defaultListen, "API listen address; loopback serves HTTP, any other address HTTPS with the control CA")
	fs.StringVar(&c.hosts, "hosts", "", "comma-separated host names/addresses for the HTTPS certificate")
	fs.StringVar(&c.pool4, "ipv4-pool", control.DefaultIPv4Pool.String(), "IPv4 tunnel address pool")
	fs.StringVar(&c.pool6, "ipv6-pool", control.DefaultIPv6Pool.String(), "IPv6 tunnel address pool")
	fs.Var(&c.dns, "dns", "DNS server for client configs (repeatable)")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.keys, "keys", "", "keyring sealing personal data: a file, or env:VAR (default DATA/control/ledger-keys, created on first start; keep a copy elsewhere)")
	fs.StringVar(&c.smtp, "smtp", "", "SMTP server host:port for email codes and incident reports (none: no mail is sent)")
	fs.StringVar(&c.mailFrom, "mail-from", "", "sender address of Meridian's mail")
	fs.StringVar(&c.smtpUser, "smtp-user", "", "SMTP user name (password from $MERIDIAN_SMTP_PASSWORD)")
	fs.StringVar(&c.smtpTLS, "smtp-tls", "opportunistic", "starttls, opportunistic, tls or none")
	fs.BoolVar(&c.signup, "signup", false, "enable public self-service sign-up (POST /api/v1/signup)")
	fs.BoolVar(&c.collectAll, "collect-all", false, "keep subscriber records for every account, with or without a duty")
	fs.BoolVar(&c.twoPerson, "two-person-exports", false, "every compliance export needs a second compliance officer's approval")
	fs.Var(&c.trusted, "trusted-proxy", "CIDR of a reverse proxy whose X-Forwarded-For gives the registration IP (repeatable)")
	fs.IntVar(&c.signupsPerSource, "signups-per-source", control.DefaultSignupsPerSource, "sign-ups per hour from one client address (IPv6: one /64); -1: no limit")
	fs.IntVar(&c.signupsPerEmail, "signups-per-email", control.DefaultSignupsPerEmail, "sign-ups per hour naming one email address; -1: no limit")
	fs.IntVar(&c.signupMailsPerDay, "signup-mails-per-day", control.DefaultSignupMailsPerDay, "verification mails to one email address in 24 hours (counted in the database); -1: no limit")
	fs.DurationVar(&c.signupExpiry, "signup-expiry", control.DefaultSignupExpiry, "a sign-up with neither a verified email nor a device after this long is withdrawn and its record purged; -1s: never")
	c.clock.register(fs)
	fs.StringVar(&c.incidentWebhook, "incident-webhook", "", "URL to POST deadline alerts of incidents and CERT-In orders to (1 hour left, overdue)")
	fs.DurationVar(&c.sessionSilence, "session-silence", 15*time.Minute, "end the open sessions of a gateway silent this long, as of the last time it was heard from (an inferred end); negative: never")
	fs.StringVar(&c.ictLogLocation, "ict-log-location", "", "country (ISO code) where the ICT logs are kept, shown by 'meridian logs status'; they live in the control database")
	c.limits.register(fs)
	fs.StringVar(&c.casePattern, "case-pattern", "", "regular expression every case reference of a compliance read must match as a whole (e.g. 'FIR-[0-9]{4}/[0-9]+'), on top of the built-in checks")
}

// config checks every control flag and builds the server's configuration,
// opening and creating nothing: bad flags are refused before anything
// starts.
//
// maxConns is the API's share of the open files limit (fdBudget).
func (c *controlFlags) config(maxConns int) (control.Config, error) {
	log, err := newLogger(c.logLevel)
	if err != nil {
		return control.Config{}, err
	}
	p4, err := netip.ParsePrefix(c.pool4)
	if err != nil {
		return control.Config{}, usageError{fmt.Errorf("--ipv4-pool: %v", err)}
	}
	p6, err := netip.ParsePrefix(c.pool6)
	if err != nil {
		return control.Config{}, usageError{fmt.Errorf("--ipv6-pool: %v", err)}
	}
	for flagName, err := range map[string]error{"--ipv4-pool": check.Pool(p4, 4), "--ipv6-pool": check.Pool(p6, 6)} {
		if err != nil {
			return control.Config{}, usageError{fmt.Errorf("%s: %v", flagName, err)}
		}
	}
	if err := listenAddr(c.listen); err != nil {
		return control.Config{}, usageError{fmt.Errorf("--listen: %v", err)}
	}
	if c.hosts != "" && slices.Contains(strings.Split(c.hosts, ","), "") {
		return control.Config{}, usageError{errors.New("--hosts: an empty name in the list")}
	}
	limits, err := c.limits.limits(maxConns)
	if err != nil {
		return control.Config{}, usageError{err}
	}
	cfg := control.Config{Limits: limits, DataDir: filepath.Join(c.data, "control"), IPv4Pool: p4, IPv6Pool: p6, DNS: c.dns, Logger: log,
		Keys: c.keys, Signup: c.signup, CollectAll: c.collectAll, TwoPersonRule: c.twoPerson, TrustedProxies: c.trusted, IncidentWebhook: c.incidentWebhook,
		ICTLogLocation: c.ictLogLocation, CasePattern: c.casePattern,
		SessionSilence: c.sessionSilence}
	cfg.SignupsPerSource, cfg.SignupsPerEmail, cfg.SignupMailsPerDay, cfg.SignupExpiry = c.signupsPerSource, c.signupsPerEmail, c.signupMailsPerDay, c.signupExpiry
	if cfg.Clock, err = c.clock.monitor(log, api.ControlNode); err != nil {
		return cfg, err
	}
	if c.smtp != "" {
		cfg.Mail = &mail.Config{Server: c.smtp, From: c.mailFrom, Username: c.smtpUser, Password: os.Getenv("MERIDIAN_SMTP_PASSWORD"), TLS: c.smtpTLS}
	}
	if err := control.CheckConfig(cfg); err != nil {
		return cfg, usageError{err}
	}
	return cfg, nil
}

// listenAddr checks a listen address: host:port, the port 0 (any) to 65535.
func listenAddr(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New("want host:port")
	}
	if port != "0" {
		if _, err := check.Port(port); err != nil {
			return err
		}
	}
	return nil
}

// start opens the control server of cfg (from config), makes the first
// admin token if there is none, and starts serving. It returns the server
// and its URL.
func (c *controlFlags) start(ctx context.Context, cfg control.Config, errc chan<- error) (*control.Server, string, error) {
	log := cfg.Logger
	if err := datadir.Prepare(c.data); err != nil {
		return nil, "", err
	}
	srv, err := control.New(ctx, cfg)
	if err != nil {
		return nil, "", err
	}
	tokenFile := filepath.Join(c.data, adminTokenFile)
	if err := ensureAdminToken(ctx, srv, tokenFile); err != nil {
		srv.Close()
		return nil, "", err
	}
	l, err := net.Listen("tcp", c.listen)
	if err != nil {
		srv.Close()
		return nil, "", fmt.Errorf("--listen %s: %w", c.listen, err)
	}
	url := control.URLFor(l)
	if err := atomicfile.Write(filepath.Join(c.data, controlURLFile), []byte(url+"\n"), 0o644); err != nil {
		srv.Close()
		return nil, "", err
	}
	var hosts []string
	if c.hosts != "" {
		hosts = strings.Split(c.hosts, ",")
	}
	go func() { errc <- srv.Serve(ctx, l, hosts) }()
	log.Info("control server listening", "url", url, "ca_sha256", srv.CAFingerprint(), "max_conns", cfg.Limits.MaxConns, "max_conns_per_source", cfg.Limits.MaxConnsPerSource)
	return srv, url, nil
}

func ensureAdminToken(ctx context.Context, srv *control.Server, file string) error {
	if _, err := os.Stat(file); err == nil {
		return nil
	}
	tok, err := srv.CreateAdminToken(ctx, "initial")
	if err != nil {
		return err
	}
	return atomicfile.Write(file, []byte(tok+"\n"), 0o600)
}

type gatewayFlags struct {
	state      string
	name       string
	listenPort int
	endpoint   string
	mode       string
	allow      prefixList
	tunName    string
	exit4      string
	exit6      string
	blocks     string
	tcpIdle    time.Duration
	stopFlush  time.Duration
	exitConns  int
}

func (g *gatewayFlags) register(fs *flag.FlagSet, withTUN bool) {
	fs.IntVar(&g.listenPort, "listen-port", 51820, "WireGuard UDP port")
	fs.StringVar(&g.endpoint, "endpoint", "", "host:port that clients dial (default 127.0.0.1:PORT when the control server is on loopback)")
	fs.StringVar(&g.name, "name", "", "gateway name (default: host name)")
	fs.Var(&g.allow, "egress-allow", "CIDR that tunnel clients may reach although the egress policy denies it (what is not globally reachable: private, loopback, documentation, ...; the gateway host) (repeatable)")
	fs.StringVar(&g.exit4, "exit-ipv4", "", "the host's public IPv4 address traffic leaves from (tun mode: SNAT to it, default masquerade); required for session records")
	fs.StringVar(&g.exit6, "exit-ipv6", "", "the host's public IPv6 address traffic leaves from (as --exit-ipv4)")
	fs.StringVar(&g.blocks, "port-blocks", portblock.Default.String(), "source ports of the exit addresses carved into blocks, FIRST-LAST/SIZE: each recorded session holds one block, so the number of blocks bounds concurrent recorded sessions (keep them below the kernel's ephemeral ports)")
	fs.DurationVar(&g.tcpIdle, "tcp-idle", exit.DefaultTCPIdle, "userspace mode: reset a TCP flow after this long without data in either direction (RFC 5382 wants at least 2h4m)")
	fs.DurationVar(&g.stopFlush, "stop-flush", 5*time.Second, "how long a stopping gateway tries to deliver its spooled session records (the ends of the sessions it closes among them); 0: not at all")
	fs.IntVar(&g.exitConns, "exit-max-conns", 0, fmt.Sprintf("flows the userspace exit relays at once at most (default %d, or a share of the open files limit when that is smaller)", defaultExitMaxConns))
	if withTUN {
		fs.StringVar(&g.mode, "mode", "userspace", "userspace (rootless, gVisor netstack) or tun (kernel TUN + nftables NAT, needs root)")
		fs.StringVar(&g.tunName, "tun-name", "mrd0", "TUN interface name (tun mode)")
	}
}

// config checks every gateway flag and builds the gateway's configuration,
// opening nothing.
func (g *gatewayFlags) config() (gateway.Config, error) {
	cfg := gateway.Config{
		StateDir: g.state, Name: g.name, ListenPort: g.listenPort, Endpoint: g.endpoint,
		Mode: api.GatewayMode(g.mode), EgressAllow: g.allow, TUNName: g.tunName,
		TCPIdle: g.tcpIdle, StopFlush: g.stopFlush, ExitMaxConns: g.exitConns,
	}
	if g.tcpIdle <= 0 {
		return cfg, usageError{fmt.Errorf("--tcp-idle: %v is not a positive duration", g.tcpIdle)}
	}
	if g.listenPort < 1 || g.listenPort > 65535 {
		return cfg, usageError{errors.New("--listen-port: want a UDP port from 1 to 65535")}
	}
	if g.endpoint != "" {
		if err := check.Endpoint(g.endpoint); err != nil {
			return cfg, usageError{fmt.Errorf("--endpoint %v", err)}
		}
	}
	switch cfg.Mode {
	case api.Userspace:
	case api.TUN:
		if g.tunName == "" || len(g.tunName) > 15 || strings.ContainsAny(g.tunName, "/ \t\n") {
			return cfg, usageError{errors.New("--tun-name: want an interface name of 1-15 characters")}
		}
	default:
		return cfg, usageError{fmt.Errorf("--mode %q: want userspace or tun", g.mode)}
	}
	if cfg.StopFlush == 0 {
		cfg.StopFlush = -1 // not at all
	}
	var err error
	if cfg.PortBlocks, err = portblock.ParseLayout(g.blocks); err != nil {
		return cfg, usageError{fmt.Errorf("--port-blocks: %w", err)}
	}
	if err := cfg.PortBlocks.Validate(); err != nil {
		return cfg, usageError{fmt.Errorf("--port-blocks: %w", err)}
	}
	for _, f := range []struct {
		flag, v string
		v4      bool
		to      *netip.Addr
	}{{"--exit-ipv4", g.exit4, true, &cfg.ExitIPv4}, {"--exit-ipv6", g.exit6, false, &cfg.ExitIPv6}} {
		if f.v == "" {
			continue
		}
		a, err := netip.ParseAddr(f.v)
		if err != nil || a.Is4() != f.v4 || a.Is4In6() {
			return cfg, usageError{fmt.Errorf("%s: not an IPv%s address", f.flag, map[bool]string{true: "4", false: "6"}[f.v4])}
		}
		*f.to = a
	}
	return cfg, nil
}

// egressWarnings are the warnings about --egress-allow prefixes so wide
// that the egress policy protects next to nothing: /0 to /7 (IPv4), /0 to
// /15 (IPv6), e.g. 0.0.0.0/0.
func egressWarnings(allow []netip.Prefix) []string {
	var out []string
	for _, p := range allow {
		if p.Addr().Is4() && p.Bits() < 8 || p.Addr().Is6() && p.Bits() < 16 {
			out = append(out, fmt.Sprintf("--egress-allow %s lets tunnel clients reach %s, private networks, the gateway host and its cloud's metadata service included; the egress policy then protects next to nothing", p, map[bool]string{true: "every address", false: "a large part of the address space"}[p.Bits() == 0]))
		}
	}
	return out
}

// warnEgress says each egress warning loudly: on stderr and in the log.
func warnEgress(allow []netip.Prefix, log *slog.Logger) {
	for _, w := range egressWarnings(allow) {
		fmt.Fprintln(os.Stderr, "meridian: WARNING: "+w)
		log.Warn("wide egress allowance", "warning", w)
	}
}

// metricsAddr checks a metrics listen address flag.
func metricsAddr(flagName, s string) error {
	if s == "" {
		return nil
	}
	if err := listenAddr(s); err != nil {
		return usageError{fmt.Errorf("%s: %v", flagName, err)}
	}
	return nil
}

func runUp(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	var cf controlFlags
	var gf gatewayFlags
	cf.register(fs, "127.0.0.1:8420")
	gf.register(fs, false)
	gwMetrics := fs.String("gateway-metrics", "", "serve the gateway's Prometheus metrics on this address")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	gf.mode = string(api.Userspace)
	// One process: the API and the exit each get their own share of the
	// file descriptors. Every flag is checked before anything is opened.
	apiConns, exitConns, err := fdBudget(raiseFileLimit(), cf.limits.maxConns, gf.exitConns, true, true)
	if err != nil {
		return err
	}
	gf.exitConns = exitConns
	cfg, err := cf.config(apiConns)
	if err != nil {
		return err
	}
	gf.state = filepath.Join(cf.data, "gateway")
	gcfg, err := gf.config()
	if err != nil {
		return err
	}
	if err := metricsAddr("--gateway-metrics", *gwMetrics); err != nil {
		return err
	}
	if gcfg.Name == "" {
		gcfg.Name = "local"
	}
	gcfg.Logger = cfg.Logger
	shareClock(&cfg, &gcfg)
	warnEgress(gcfg.EgressAllow, gcfg.Logger)
	errc := make(chan error, 1)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	srv, url, err := cf.start(ctx, cfg, errc)
	if err != nil {
		return err
	}
	defer srv.Close()
	gcfg.Control, gcfg.ControlInProcess = url, true
	if _, err := os.Stat(filepath.Join(gf.state, "gateway.json")); err != nil {
		tok, err := srv.CreateJoinToken(ctx, api.JoinTokenRequest{TTL: time.Hour})
		if err != nil {
			return err
		}
		gcfg.JoinToken = tok.Token
	}
	gw, err := gateway.Start(ctx, gcfg)
	if err != nil {
		return err
	}
	defer gw.Close()
	if *gwMetrics != "" {
		go func() { errc <- serveMetrics(ctx, *gwMetrics, gw) }()
	}

	abs, _ := filepath.Abs(cf.data)
	fmt.Printf(`Meridian is up.
  control API   %s/api/v1   (OpenAPI: %s/api/v1/openapi.json, metrics: %s/metrics)
  gateway       %q, WireGuard on UDP %d, rootless userspace exit
  admin token   %s
  data          %s

Next, in another terminal (the commands find the server and token in %s):
  meridian user add alice
  meridian device add --user alice --name laptop --out laptop.conf --qr laptop.png
  meridian connect --config laptop.conf --socks5 127.0.0.1:1080 --http 127.0.0.1:8080
  curl --proxy socks5h://127.0.0.1:1080 https://example.com/

Stop with Ctrl-C; everything is kept in the data directory.
`, url, url, url, gw.Name(), gf.listenPort, filepath.Join(abs, adminTokenFile), abs, cf.data)
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		return err
	case <-gw.Done(): // removed: it no longer follows revocations, so it stops forwarding
		return gw.Err()
	}
}

func runControl(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("control", flag.ContinueOnError)
	var cf controlFlags
	cf.register(fs, "127.0.0.1:8420")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	apiConns, _, err := fdBudget(raiseFileLimit(), cf.limits.maxConns, 0, true, false)
	if err != nil {
		return err
	}
	cfg, err := cf.config(apiConns)
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	srv, url, err := cf.start(ctx, cfg, errc)
	if err != nil {
		return err
	}
	defer srv.Close()
	abs, _ := filepath.Abs(cf.data)
	fmt.Printf("Meridian control server at %s\n  CA SHA-256  %s\n  admin token %s\nCreate a join token for a gateway with: meridian gateway token\n",
		url, srv.CAFingerprint(), filepath.Join(abs, adminTokenFile))
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		return err
	}
}

func runAdminToken(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("control admin-token", flag.ContinueOnError)
	data := fs.String("data", "./meridian-data", "data directory of the control server")
	name := fs.String("name", "admin", "a name for the token")
	role := fs.String("role", "admin", "admin, compliance (lawful lookups, exports) or auditor (integrity checks only)")
	ttl := fs.Duration("ttl", 0, "lifetime, e.g. 720h (default: never expires)")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	if *name == "" || len(*name) > 64 || check.Text(*name, false) != nil {
		return usageError{errors.New("--name: want 1-64 characters on one line, without control, invisible or bidirectional control characters")}
	}
	tok, err := control.CreateTokenIn(ctx, filepath.Join(*data, "control"), *name, *role, *ttl)
	if err != nil {
		return err
	}
	fmt.Println(tok)
	return nil
}

func runGateway(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	var gf gatewayFlags
	controlURL := fs.String("control", "", "control server URL (needed to join)")
	joinToken := fs.String("join-token", "", "join token from 'meridian gateway token' (needed once)")
	metrics := fs.String("metrics", "", "serve Prometheus metrics on this address (e.g. 127.0.0.1:9586)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	fs.StringVar(&gf.state, "state", "./meridian-gateway", "state directory")
	gf.register(fs, true)
	var clock clockFlags
	clock.register(fs)
	if _, err := parse(fs, args); err != nil {
		return err
	}
	// Every flag is checked before anything is opened.
	if gf.mode == string(api.Userspace) {
		var err error
		if _, gf.exitConns, err = fdBudget(raiseFileLimit(), 0, gf.exitConns, false, true); err != nil {
			return err
		}
	}
	cfg, err := gf.config()
	if err != nil {
		return err
	}
	if err := metricsAddr("--metrics", *metrics); err != nil {
		return err
	}
	if *controlURL != "" {
		if u, err := url.Parse(*controlURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return usageError{errors.New("--control: want the control server's http:// or https:// URL")}
		}
	}
	cfg.Control, cfg.JoinToken = *controlURL, *joinToken
	if cfg.JoinToken == "" {
		cfg.JoinToken = os.Getenv("MERIDIAN_JOIN_TOKEN")
	}
	if cfg.Logger, err = newLogger(*logLevel); err != nil {
		return err
	}
	if cfg.Clock, err = clock.monitor(cfg.Logger, cmp.Or(cfg.Name, "gateway")); err != nil {
		return err
	}
	warnEgress(cfg.EgressAllow, cfg.Logger)
	gw, err := gateway.Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer gw.Close()
	errc := make(chan error, 1)
	if *metrics != "" {
		go func() { errc <- serveMetrics(ctx, *metrics, gw) }()
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		return err
	case <-gw.Done(): // removed at the control server
		return gw.Err()
	}
}

// serveMetrics serves a gateway's metrics on addr.
func serveMetrics(ctx context.Context, addr string, gw *gateway.Gateway) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", gw.MetricsHandler())
	// A scrape is a GET: the whole request has ReadTimeout, and at most
	// metricsMaxConns are served at once (more wait to be accepted).
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--metrics %s: %w", addr, err)
	}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(netutil.LimitListener(l, metricsMaxConns)); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("--metrics %s: %w", addr, err)
	}
	return nil
}

// shareClock gives the gateway of 'meridian up' the control server's
// clock monitor: one monitor per node, both roles' stamps from it.
func shareClock(cfg *control.Config, gcfg *gateway.Config) {
	gcfg.Clock, gcfg.ClockRunByControl = cfg.Clock, true
}
