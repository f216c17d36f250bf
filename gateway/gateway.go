// Package gateway is the node agent: it joins a control server, runs a
// WireGuard device over a userspace or TUN data plane, follows its netmap
// and applies peer changes incrementally, and reports aggregate load. For
// the peers whose duties require it, and only for them, it keeps session
// records with a port block each (sessions.go) and delivers them to the
// control server, spooled on disk while that is away (spool.go).
package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/exit"
	"github.com/meridian-vpn/meridian/internal/datadir"
	"github.com/meridian-vpn/meridian/internal/recordseal"
	"github.com/meridian-vpn/meridian/portblock"
	"github.com/meridian-vpn/meridian/timesync"
	"github.com/meridian-vpn/meridian/tunnet"
	"github.com/meridian-vpn/meridian/wg"
)

// Config configures a gateway.
type Config struct {
	Control    string // control server URL; needed to join, remembered after
	JoinToken  string // needed only until the gateway has joined
	StateDir   string
	Name       string // default: the host name
	ListenPort int    // WireGuard UDP port, default 51820
	Endpoint   string // host:port clients dial; default 127.0.0.1:ListenPort when the control server is on loopback
	Mode       api.GatewayMode

	// ControlInProcess: the control server at Control is the one this
	// gateway joined, in the same process and data directory ('meridian
	// up'), so a changed URL (another --listen) is followed, not refused.
	ControlInProcess bool

	EgressAllow []netip.Prefix
	// ExitMaxConns caps the flows the userspace exit relays at once (each
	// holds a socket); 0: the exit's default.
	ExitMaxConns int

	// TCPIdle resets a TCP flow of the userspace exit after this long
	// without data; default exit.DefaultTCPIdle. (TUN mode: the kernel's
	// connection tracking timeouts apply.)
	TCPIdle time.Duration

	// ExitIPv4 and ExitIPv6 are the addresses traffic leaves from: in TUN
	// mode the SNAT source (default: masquerade), in userspace mode the
	// address the exit dials from (default: the host's choice). Session
	// records need them: traffic of recorded sessions in a family without
	// one is refused.
	ExitIPv4 netip.Addr
	ExitIPv6 netip.Addr

	// TUN mode.
	TUNName string

	// Session records, for peers whose duties require them.
	PortBlocks      portblock.Layout // source port blocks on the exit addresses; default portblock.Default
	SessionInterval time.Duration    // how often handshakes are read from the device; default 2 s
	SpoolLimit      int64            // bytes of records kept while the control server is away; default 64 MiB
	// StopFlush bounds how long Close spends delivering the spooled
	// records (among them the ends of the sessions it closes) before the
	// gateway stops; default 5 s, negative: not at all (they are sent at
	// the next start).
	StopFlush time.Duration

	ReportInterval time.Duration // default 10 s
	Logger         *slog.Logger

	// Clock is the node's time monitor; the gateway runs it with the
	// clock-sync duty the control server decides for it, and reports its
	// state with the load. Nil: the gateway's clock is not watched.
	Clock *timesync.Monitor
	// ClockRunByControl says that Clock is the monitor of a control server
	// in the same process ('meridian up'): one monitor per node, run by
	// the control server with its node's plan; the gateway only stamps
	// its records and reports from it.
	ClockRunByControl bool
}

// dataplane is what carries decrypted tunnel traffic onwards: the userspace
// exit (gVisor netstack) or a kernel TUN with NAT.
type dataplane interface {
	Device() tun.Device
	Close() error
}

// wgDevice is what the gateway uses of its WireGuard device, a
// *device.Device; tests wrap one to see and fail the UAPI texts set on it.
type wgDevice interface {
	IpcSet(uapi string) error
	IpcGet() (string, error)
	IsUnderLoad() bool
	Up() error
	Close()
}

// Gateway is a running gateway.
type Gateway struct {
	cfg    Config
	log    *slog.Logger
	st     *state
	client *api.Client
	plane  dataplane
	exit   *exit.Exit // nil in TUN mode
	dev    wgDevice

	sessions    *sessionTracker
	attr        *attributedTUN
	spool       *spool
	recordsSent atomic.Uint64
	// sessionRounds counts the session loop's rounds as they start, so
	// that a test can tell the gateway has looked for sessions since some
	// moment.
	sessionRounds atomic.Uint64
	// recordsRefused counts records the control server refused as wrong,
	// set aside (refusedFile) instead of blocking the spool.
	recordsRefused atomic.Uint64
	// setAsideMu orders appends to the file of set-aside records
	// (refused.go) against its rewrites.
	setAsideMu sync.Mutex
	// recordsNoDuty counts records the control server took but did not
	// store, set aside (api.SetAsideNoDuty).
	recordsNoDuty atomic.Uint64

	mu        sync.Mutex
	installed map[wg.Key]api.Peer // as applied to dev
	// unsure holds the peers a failed IpcSet touched: wireguard-go applies
	// a UAPI text up to the line that fails, so their state in the device
	// is unknown. The next netmap that has them sets them again, and the
	// next one that removes them, or a full one without them, removes them,
	// whatever installed says.
	unsure  map[wg.Key]bool
	version int64
	dirty   chan struct{}

	failed    chan struct{} // closed when the gateway stops for good (credential.go)
	failure   error         // why, set before failed is closed
	connected atomic.Bool
	lastLoad  atomic.Pointer[api.GatewayReport]
	cancel    context.CancelFunc
	done      sync.WaitGroup
	closed    sync.Once
	closeErr  error
	metrics   *metrics
}

// Start joins (if needed), brings the WireGuard device up with the last
// known peers, and starts following the control server.
func Start(ctx context.Context, cfg Config) (*Gateway, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("gateway: no state directory")
	}
	if cfg.ListenPort == 0 {
		cfg.ListenPort = 51820
	}
	if cfg.Mode == "" {
		cfg.Mode = api.Userspace
	}
	if cfg.ReportInterval == 0 {
		cfg.ReportInterval = 10 * time.Second
	}
	if cfg.PortBlocks == (portblock.Layout{}) {
		cfg.PortBlocks = portblock.Default
	}
	if err := cfg.PortBlocks.Validate(); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	if cfg.SessionInterval == 0 {
		cfg.SessionInterval = defaultSessionInterval
	}
	if cfg.SpoolLimit == 0 {
		cfg.SpoolLimit = defaultSpoolLimit
	}
	if cfg.StopFlush == 0 {
		cfg.StopFlush = defaultStopFlush
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := datadir.Prepare(cfg.StateDir); err != nil {
		return nil, err
	}
	g := &Gateway{cfg: cfg, log: cfg.Logger, installed: map[wg.Key]api.Peer{}, dirty: make(chan struct{}, 1), failed: make(chan struct{})}
	if err := g.loadOrJoin(ctx); err != nil {
		return nil, err
	}
	if err := g.startSessions(); err != nil {
		return nil, err
	}
	if err := g.startDevice(); err != nil {
		g.spool.close()
		return nil, err
	}
	g.metrics = newMetrics(g)
	cached, err := loadNetmap(cfg.StateDir)
	if err != nil {
		g.log.Warn("ignoring cached netmap", "err", err)
	} else if len(cached.Peers) > 0 {
		if err := g.apply(api.Netmap{Version: cached.Version, Full: true, Peers: cached.Peers}); err != nil {
			g.log.Warn("applying cached netmap", "err", err)
		}
	}
	runCtx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	g.done.Add(5)
	go g.syncLoop(runCtx)
	go g.reportLoop(runCtx)
	go g.saveLoop(runCtx)
	go g.sessionLoop(runCtx)
	go g.sendLoop(runCtx)
	if cfg.Clock != nil && !cfg.ClockRunByControl {
		g.done.Add(1)
		go func() { defer g.done.Done(); cfg.Clock.Run(runCtx, g.client.TimePlan) }()
	}
	g.log.Info("gateway up", "name", g.st.Name, "mode", cfg.Mode, "listen_port", cfg.ListenPort, "public_key", g.st.PrivateKey.Public().String())
	return g, nil
}

func (g *Gateway) loadOrJoin(ctx context.Context) error {
	st, err := loadState(g.cfg.StateDir)
	if err != nil {
		return err
	}
	if st == nil {
		priv, err := wg.NewPrivateKey()
		if err != nil {
			return err
		}
		name := g.cfg.Name
		if name == "" {
			if name, err = os.Hostname(); err != nil || name == "" {
				name = "gateway"
			}
		}
		st = &state{PrivateKey: priv, Name: name}
		if err := st.save(g.cfg.StateDir); err != nil {
			return err
		}
	}
	g.st = st
	if st.Credential == "" {
		if err := g.join(ctx); err != nil {
			return err
		}
	} else if g.cfg.Control != "" && g.cfg.Control != st.Control && g.cfg.ControlInProcess {
		st.Control = g.cfg.Control
		if err := st.save(g.cfg.StateDir); err != nil {
			return err
		}
	} else if g.cfg.Control != "" && g.cfg.Control != st.Control {
		return fmt.Errorf("gateway already joined %s; to join %s, start with an empty state directory", st.Control, g.cfg.Control)
	}
	g.client, err = api.NewClient(st.Control, st.Credential, st.CAHash)
	return err
}

func (g *Gateway) join(ctx context.Context) error {
	if g.cfg.Control == "" || g.cfg.JoinToken == "" {
		return errors.New("gateway has not joined a control server yet: give --control URL and --join-token TOKEN (from 'meridian gateway token')")
	}
	parts, err := api.ParseJoinToken(g.cfg.JoinToken)
	if err != nil {
		return err
	}
	c, err := api.NewClient(g.cfg.Control, g.cfg.JoinToken, parts.CAHash)
	if err != nil {
		return err
	}
	endpoint := g.cfg.Endpoint
	if endpoint == "" {
		host := strings.TrimPrefix(strings.TrimPrefix(g.cfg.Control, "http://"), "https://")
		if i := strings.LastIndex(host, ":"); i >= 0 {
			host = host[:i]
		}
		if !api.IsLoopbackHost(strings.Trim(host, "[]")) {
			return errors.New("--endpoint HOST:PORT is required: the address clients dial to reach this gateway")
		}
		endpoint = fmt.Sprintf("127.0.0.1:%d", g.cfg.ListenPort)
	}
	resp, err := c.Join(ctx, api.JoinRequest{Name: g.st.Name, PublicKey: g.st.PrivateKey.Public(), Endpoint: endpoint, Mode: g.cfg.Mode})
	if err != nil {
		return fmt.Errorf("joining %s: %w", g.cfg.Control, err)
	}
	g.st.Control, g.st.CAHash, g.st.Credential, g.st.Addresses = g.cfg.Control, parts.CAHash, resp.Credential, resp.Addresses
	g.log.Info("joined control server", "control", g.cfg.Control, "name", resp.Name)
	return g.st.save(g.cfg.StateDir)
}

// startSessions opens the session record spool, closes the sessions a
// previous run left open, and makes the (empty) session tracker. Nothing is
// written unless a peer owes records.
func (g *Gateway) startSessions() error {
	var err error
	if g.spool, err = openSpool(g.cfg.StateDir, g.cfg.SpoolLimit); err != nil {
		return err
	}
	g.sessions, err = newSessionTracker(sessionConfig{
		stateDir: g.cfg.StateDir, exit4: g.cfg.ExitIPv4, exit6: g.cfg.ExitIPv6, blocks: g.cfg.PortBlocks,
		spool: g.spool, now: time.Now, clock: g.clockStamp, log: g.log, refusal: ephemeralOverlap(g.cfg.PortBlocks),
	})
	if err != nil {
		g.spool.close()
		return err
	}
	if k := g.st.RecordSealKey; k != nil {
		g.setRecordSealKey(*k)
	}
	if err := closeLeftSessions(g.cfg.StateDir, g.spool, time.Now(), g.clockStamp(), g.sessions.seal.Load()); err != nil {
		g.spool.close()
		return err
	}
	return nil
}

// setRecordSealKey takes the control server's key to seal session records'
// endpoints to (from the state, or a netmap): this run seals to it with an
// ephemeral key of its own, kept in memory only. The key, which is public,
// is kept in the state so that a restart seals while the control server
// is away.
func (g *Gateway) setRecordSealKey(k api.RecordSealKey) {
	if k.Scheme != api.RecordSealScheme {
		g.log.Warn("the control server's record seal key is of an unknown scheme; upgrade the gateway", "scheme", k.Scheme)
		return
	}
	if cur := g.sessions.seal.Load(); cur != nil && cur.For(k.Key) {
		return
	}
	s, err := recordseal.NewSealer(k.Key)
	if err != nil {
		g.log.Warn("the control server's record seal key is unusable", "err", err)
		return
	}
	g.sessions.seal.Store(s)
	if g.st.RecordSealKey == nil || !bytes.Equal(g.st.RecordSealKey.Key, k.Key) {
		g.st.RecordSealKey = &k
		if err := g.st.save(g.cfg.StateDir); err != nil {
			g.log.Warn("saving the record seal key", "err", err)
		}
	}
}

// clockStamp is the gateway's sync state now, as its session records carry
// it; nil when it runs no time monitor.
func (g *Gateway) clockStamp() *api.ClockSync {
	if g.cfg.Clock == nil {
		return nil
	}
	c := g.cfg.Clock.Sync()
	return &c
}

func (g *Gateway) startDevice() error {
	var err error
	switch g.cfg.Mode {
	case api.Userspace:
		g.exit, err = exit.New(exit.Config{Addresses: g.st.Addresses, Allow: g.cfg.EgressAllow,
			ExitIPv4: g.cfg.ExitIPv4, ExitIPv6: g.cfg.ExitIPv6, SourcePorts: g.sessions.sourcePorts, Logger: g.log,
			TCPIdle: g.cfg.TCPIdle, MaxConns: g.cfg.ExitMaxConns})
		if err == nil {
			g.plane = g.exit
			g.sessions.cfg.plane = userspaceAttribution{g.exit}
		}
	case api.TUN:
		var t *tunnet.TUN
		t, err = tunnet.Open(tunnet.Config{Name: g.cfg.TUNName, Addresses: g.st.Addresses, ExitIPv4: g.cfg.ExitIPv4, ExitIPv6: g.cfg.ExitIPv6,
			EgressAllow: g.cfg.EgressAllow, PortBlocks: g.cfg.PortBlocks})
		if err == nil {
			g.plane = t
			g.sessions.cfg.plane = tunAttribution{t}
		}
	default:
		err = fmt.Errorf("unknown gateway mode %q: want userspace or tun", g.cfg.Mode)
	}
	if err != nil {
		return err
	}
	g.attr = newAttributedTUN(g.plane.Device(), g.sessions)
	g.dev = device.NewDevice(g.attr, conn.NewDefaultBind(), wgLogger(g.log))
	if err := g.dev.IpcSet(fmt.Sprintf("private_key=%s\nlisten_port=%d\n", g.st.PrivateKey.Hex(), g.cfg.ListenPort)); err != nil {
		g.dev.Close()
		return fmt.Errorf("configuring WireGuard (UDP port %d in use?): %w", g.cfg.ListenPort, err)
	}
	if err := g.dev.Up(); err != nil {
		g.dev.Close()
		return fmt.Errorf("WireGuard device up (UDP port %d in use?): %w", g.cfg.ListenPort, err)
	}
	return nil
}

// Close stops following the control server and tears the device down:
// the open sessions close, and the spooled records, their ends among
// them, are delivered for at most Config.StopFlush, so that a gateway
// stopped for good does not leave its sessions open in the records.
// Closing again does nothing.
func (g *Gateway) Close() error {
	g.closed.Do(func() { g.closeErr = g.close() })
	return g.closeErr
}

func (g *Gateway) close() error {
	g.cancel()
	g.done.Wait()
	g.mu.Lock()
	nm := g.snapshotLocked()
	g.mu.Unlock()
	err := saveNetmap(g.cfg.StateDir, nm)
	g.dev.Close() // closes the data plane's tun.Device too
	g.sessions.shutdown()
	g.flushSpool()
	if cerr := g.plane.Close(); err == nil {
		err = cerr
	}
	if cerr := g.spool.close(); err == nil {
		err = cerr
	}
	return err
}

// userspaceAttribution is the userspace exit's side of sessions: the exit
// asks the tracker for a flow's block (sourcePorts), so there is nothing to
// map; a closed session's flows are ended.
type userspaceAttribution struct{ exit *exit.Exit }

func (userspaceAttribution) attribute(_, _ []tunnet.Attribution) error { return nil }

func (u userspaceAttribution) cut(addrs []netip.Addr) {
	for _, a := range addrs {
		u.exit.CloseFlows(a)
	}
}

// tunAttribution is TUN mode's: the nftables table maps a session's tunnel
// addresses to its block, and drops connections marked for a block their
// source no longer holds, so there is nothing to cut.
type tunAttribution struct{ tun *tunnet.TUN }

func (t tunAttribution) attribute(add, remove []tunnet.Attribution) error {
	return t.tun.Attribute(add, remove)
}

func (tunAttribution) cut([]netip.Addr) {}

// PublicKey is the gateway's WireGuard public key.
func (g *Gateway) PublicKey() wg.Key { return g.st.PrivateKey.Public() }

// Name is the gateway's name at the control server.
func (g *Gateway) Name() string { return g.st.Name }

// Connected reports whether the last request to the control server worked.
func (g *Gateway) Connected() bool { return g.connected.Load() }

// NetmapVersion is the version of the last applied netmap.
func (g *Gateway) NetmapVersion() int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.version
}

// Peers returns the number of installed peers.
func (g *Gateway) Peers() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.installed)
}
