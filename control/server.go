// Package control is the control server: accounts, devices, tunnel
// addresses, gateways and the netmaps they follow, behind a JSON HTTP API.
package control

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-vpn/meridian/internal/atomicfile"
	"github.com/meridian-vpn/meridian/internal/check"
	"github.com/meridian-vpn/meridian/internal/datadir"
	"github.com/meridian-vpn/meridian/ledger"
	"github.com/meridian-vpn/meridian/mail"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/ipam"
	"github.com/meridian-vpn/meridian/store"
	"github.com/meridian-vpn/meridian/timesync"
)

// Config configures a control server.
type Config struct {
	DataDir  string       // database, CA and keys live here
	IPv4Pool netip.Prefix // tunnel addresses for devices; default 10.200.0.0/16
	IPv6Pool netip.Prefix // default fd6d:7269:6469::/64
	DNS      []netip.Addr // DNS servers written into client configs, if any
	// HeartbeatTimeout is how long a gateway may stay silent and still count
	// as healthy. Default 30 s.
	HeartbeatTimeout time.Duration
	Logger           *slog.Logger

	// Keys names the keyring that seals personal data at rest: a file, or
	// "env:VAR". Empty: DataDir/ledger-keys, created on first start.
	Keys string
	// Mail is the SMTP server for email codes (and incident reports); nil
	// means no mail is sent.
	Mail *mail.Config
	// TrustedProxies may set X-Forwarded-For for the registration IP.
	TrustedProxies []netip.Prefix
	// Signup enables the public self-service POST /signup.
	Signup bool
	// SignupsPerSource, SignupsPerEmail and SignupMailsPerDay bound
	// self-service sign-ups per client network address (IPv6: per /64) per
	// hour, per email address per hour, and verification mails per email
	// address per 24 hours (kept in the database); SignupExpiry is how long
	// a sign-up may stay without a verified email or a device before it is
	// withdrawn (signuplimits.go). 0: the default; negative: no limit.
	SignupsPerSource  int
	SignupsPerEmail   int
	SignupMailsPerDay int
	SignupExpiry      time.Duration
	// CollectAll keeps subscriber records for every account, with or
	// without a duty (the operator's choice).
	CollectAll bool
	// TwoPersonRule makes every export wait for a second compliance
	// officer's approval.
	TwoPersonRule bool
	// Clock is the control node's time monitor; Serve runs it with the
	// node's clock-sync duty. Nil: the node's clock is not watched.
	Clock *timesync.Monitor
	// IncidentWebhook, if set, receives a JSON POST for every deadline
	// alert of an incident or a CERT-In order (1 hour left, overdue).
	IncidentWebhook string
	// ICTLogLocation is the country (ISO 3166-1 code) where the operator
	// keeps the ICT logs; "" when not configured (ictlog.go).
	ICTLogLocation string
	// CasePattern, if set, is a regular expression every case reference
	// must match as a whole, on top of the built-in checks (validate.go).
	CasePattern string
	// SessionSilence is how long a gateway may stay silent before the
	// control server ends its open sessions as of the last time it heard
	// from it (an inferred end; silent.go). Default 15 min; negative:
	// never.
	SessionSilence time.Duration
	// Limits bound API connections and request bodies (limits.go).
	Limits Limits

	// ictNow is the ICT log's clock: time.Now unless a test sets it.
	ictNow func() time.Time
}

// Defaults for the tunnel address pools.
var (
	DefaultIPv4Pool = netip.MustParsePrefix("10.200.0.0/16")
	DefaultIPv6Pool = netip.MustParsePrefix("fd6d:7269:6469::/64")
)

// maxBody bounds request bodies (session batches have their own bound).
const maxBody = 64 << 10

// Server is a control server.
type Server struct {
	cfg     Config
	db      *store.DB
	ca      *authority
	pool4   *ipam.Pool
	pool6   *ipam.Pool
	log     *slog.Logger
	metrics *metrics
	ledger  *ledger.Ledger
	keys    *ledger.Keyring    // seals personal data kept outside the ledger
	signer  ed25519.PrivateKey // signs ledger checkpoints and export manifests
	// endpointKey keys the blind index of endpoint addresses, derived from
	// the signing seed (endpointIndex).
	endpointKey [32]byte
	mailer      *mail.Mailer // nil when no SMTP server is configured
	changed     *broadcast   // the peer set changed
	applied     *broadcast   // a gateway reported a newer applied netmap

	mu           sync.Mutex
	status       map[string]gatewayStatus // by gateway name; in memory only
	outOfService map[string]bool          // gateways standing in a virtual-only country
	sessions     sessionState
	// adminWrites counts admin requests that changed something (any
	// method but GET that succeeded); caches of what admins configure
	// are valid while it stays the same.
	adminWrites atomic.Uint64
	ict         *ictState // ICT log and incident detectors (ictlog.go, candidates.go)

	// casePattern is the operator's pattern for case references; nil if
	// none (validate.go).
	casePattern *regexp.Regexp

	signup signupState // sign-up limiters (signuplimits.go)

	conns        *connLimiter  // open API connections (limits.go)
	authFails    *authLimiter  // failed credentials by source (limits.go)
	limitMetrics *limitMetrics // what the limits refused

	held heldRecords // records refused, and gateways' set-aside records (heldrecords.go)

	retention retentionMetrics // the retention check (inventory.go)
	nextPurge atomic.Int64     // Unix seconds of the next run of the retention job
}

type gatewayStatus struct {
	lastSeen time.Time
	report   api.GatewayReport
	applied  int64 // the netmap version the gateway last said it holds
}

// New opens (or creates) the control server's state in cfg.DataDir.
func New(ctx context.Context, cfg Config) (*Server, error) {
	cfg.defaults()
	if err := CheckConfig(cfg); err != nil {
		return nil, err
	}
	casePattern, _ := check.CasePattern(cfg.CasePattern)
	if cfg.HeartbeatTimeout == 0 {
		cfg.HeartbeatTimeout = 30 * time.Second
	}
	if cfg.SessionSilence == 0 {
		cfg.SessionSilence = defaultSessionSilence
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Limits = cfg.Limits.withDefaults()
	if err := datadir.Prepare(cfg.DataDir); err != nil {
		return nil, err
	}
	ca, err := loadOrCreateCA(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("control CA: %w", err)
	}
	db, err := store.Open(ctx, filepath.Join(cfg.DataDir, "meridian.db"))
	if err != nil {
		return nil, err
	}
	lg, keys, signer, err := openLedger(ctx, db, cfg)
	if err != nil {
		db.Close()
		return nil, err
	}
	var ml *mail.Mailer
	if cfg.Mail != nil {
		if ml, err = mail.New(*cfg.Mail); err != nil {
			db.Close()
			return nil, err
		}
	}
	s := &Server{cfg: cfg, db: db, ca: ca, log: cfg.Logger, ledger: lg, keys: keys, signer: signer, mailer: ml, changed: newBroadcast(), applied: newBroadcast(), status: map[string]gatewayStatus{}}
	s.casePattern = casePattern
	s.endpointKey = sha256.Sum256(append([]byte("meridian session endpoint index v1"), signer.Seed()...))
	if err := s.loadPools(ctx); err != nil {
		db.Close()
		return nil, err
	}
	s.metrics = newMetrics(s)
	s.conns = newConnLimiter(cfg.Limits, s.trusted)
	s.authFails = newAuthLimiter()
	s.limitMetrics = newLimitMetrics(s.metrics.reg, s.conns.openConns)
	s.sessions.setUp(s.metrics.reg)
	s.held.setUp(s.metrics.reg)
	s.retention.setUp(s.metrics.reg)
	if err := s.openICT(ctx); err != nil { // ICT log (ictlog.go)
		db.Close()
		return nil, err
	}
	if err := s.refreshService(ctx); err != nil {
		db.Close()
		return nil, err
	}
	// The session index finishes what a crash interrupted: purges, then
	// rows of entries the ledger committed (store/sessionindex.go).
	if err := db.FinishSessionPurges(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("session index: %w", err)
	}
	if err := s.catchUpSessionIndex(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// loadPools builds the address pools, refusing to start if the configured
// pools do not match the ones the stored devices were given.
func (s *Server) loadPools(ctx context.Context) error {
	for key, p := range map[string]netip.Prefix{"ipv4_pool": s.cfg.IPv4Pool, "ipv6_pool": s.cfg.IPv6Pool} {
		stored, err := s.db.Setting(ctx, key)
		if err != nil {
			return err
		}
		if stored == "" {
			if err := s.db.SetSetting(ctx, key, p.String()); err != nil {
				return err
			}
		} else if stored != p.String() {
			return fmt.Errorf("control: %s is %s in the database but %s was configured; changing pools of existing devices is not supported", key, stored, p)
		}
	}
	var err error
	if s.pool4, err = ipam.NewPool(s.cfg.IPv4Pool); err != nil {
		return fmt.Errorf("IPv4 pool: %w", err)
	}
	if s.pool6, err = ipam.NewPool(s.cfg.IPv6Pool); err != nil {
		return fmt.Errorf("IPv6 pool: %w", err)
	}
	addrs, err := s.db.AllocatedAddresses(ctx)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		p := s.pool6
		if a.Is4() {
			p = s.pool4
		}
		if err := p.MarkUsed(a); err != nil {
			return fmt.Errorf("stored device address: %w", err)
		}
	}
	return nil
}

// Close releases the database.
func (s *Server) Close() error {
	return errors.Join(s.ict.log.Flush(context.Background()), s.db.Close()) // the ICT log's last events first
}

// CAFingerprint is the hex SHA-256 of the control CA certificate.
func (s *Server) CAFingerprint() string { return s.ca.Fingerprint() }

// Serve answers API requests on l until ctx ends. Listeners on loopback
// addresses serve plain HTTP; all others serve HTTPS with a certificate
// from the control CA covering hosts (plus the listener's own address).
// Connections and request bodies are bounded by Config.Limits.
func (s *Server) Serve(ctx context.Context, l net.Listener, hosts []string) error {
	srv := &http.Server{
		Handler:           s.limitBodies(s.Handler()),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		// Requests end with ctx, so long polls do not hold up a shutdown.
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	addr := l.Addr().(*net.TCPAddr)
	l = &limitListener{Listener: l, lim: s.conns, refused: s.limitMetrics.refused}
	if !addr.IP.IsLoopback() {
		cert, err := s.ca.serverCert(append(hosts, addr.IP.String(), "localhost", "127.0.0.1", "::1"))
		if err != nil {
			return err
		}
		l = tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	}
	go s.maintain(ctx)
	go s.watchTime(ctx)
	go s.watchIncidents(ctx, s.cfg.IncidentWebhook)
	go s.watchICT(ctx)
	shutdown := make(chan struct{})
	go func() {
		defer close(shutdown)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			srv.Close()
		}
	}()
	err := srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		<-shutdown // handlers have returned: the database may be closed now
		return nil
	}
	return err
}

// maintain runs the periodic jobs until ctx ends: hourly, trim the peer
// change log and sign a ledger checkpoint; daily, purge subscriber records
// whose retention has ended.
func (s *Server) maintain(ctx context.Context) {
	hourly := time.NewTicker(time.Hour)
	defer hourly.Stop()
	daily := time.NewTicker(24 * time.Hour)
	defer daily.Stop()
	go s.watchSilentGateways(ctx)
	s.runPurge(ctx)
	for {
		if err := s.db.CompactPeerChanges(ctx, peerChangesKept); err != nil && ctx.Err() == nil {
			s.log.Warn("compacting the peer change log", "err", err)
		}
		s.runSignupExpiry(ctx)
		if _, err := s.ledger.Checkpoint(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("signing a ledger checkpoint", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-hourly.C:
		case <-daily.C:
			s.runPurge(ctx)
		}
	}
}

// URLFor returns the URL clients use to reach a listener of this server.
func URLFor(l net.Listener) string {
	addr := l.Addr().(*net.TCPAddr)
	if addr.IP.IsLoopback() {
		return "http://" + addr.String()
	}
	return "https://" + addr.String()
}

type route struct {
	pattern string // method and path below api.Prefix
	handler http.HandlerFunc
}

// routes is the API: every entry is also documented in openapi.json.
func (s *Server) routes() []route {
	return []route{
		{"GET /health", s.handleHealth},
		{"GET /openapi.json", s.handleOpenAPI},
		{"POST /users", s.require(asAdmin, s.handleCreateUser)},
		{"GET /users", s.require(asAdmin, s.handleUsers)},
		{"DELETE /users/{name}", s.require(asAdmin, s.handleDeleteUser)},
		{"POST /devices", s.require(asAdmin, s.handleCreateDevice)},
		{"GET /devices", s.require(asAdmin, s.handleDevices)},
		{"POST /devices/{id}/revoke", s.require(asAdmin, s.handleRevokeDevice)},
		{"DELETE /devices/{id}", s.require(asAdmin, s.handleDeleteDevice)},
		{"POST /gateway-tokens", s.require(asAdmin, s.handleCreateJoinToken)},
		{"GET /gateway-tokens", s.require(asAdmin, s.handleJoinTokens)},
		{"DELETE /gateway-tokens/{id}", s.require(asAdmin, s.handleRevokeJoinToken)},
		{"GET /gateways", s.require(asAdmin, s.handleGateways)},
		{"PUT /gateways/{name}/place", s.require(asAdmin, s.handleSetPlace)},
		{"PUT /control/place", s.require(asAdmin, s.handleSetPlace)},
		{"GET /control/place", s.require(asAdmin, s.handleControlPlace)},
		{"POST /locations", s.require(asAdmin, s.handleCreateLocation)},
		{"GET /locations", s.require(asAdmin, s.handleLocations)},
		{"DELETE /locations/{code}", s.require(asAdmin, s.handleRemoveLocation)},
		{"GET /jurisdictions", s.require(asAdmin, s.handleJurisdictions)},
		{"PUT /jurisdictions/{country}", s.require(asAdmin, s.handleSetJurisdiction)},
		{"GET /jurisdictions/explain", s.require(asAdmin, s.handleExplain)},
		{"POST /jurisdictions/{country}/preview", s.require(asAdmin, s.handlePreviewJurisdiction)},
		{"GET /operator", s.require(asAdmin, s.handleOperator)},
		{"PUT /operator", s.require(asAdmin, s.handleSetOperator)},
		{"POST /operator/preview", s.require(asAdmin, s.handlePreviewOperator)},
		{"GET /profiles", s.require(asAdmin, s.handleProfiles)},
		{"PUT /profiles/{name}", s.require(asAdmin, s.handleSetProfile)},
		{"GET /audit", s.require(asAdmin, s.handleAudit)},
		{"GET /serverlist", s.handleServerList},
		{"GET /serverlist/loads", s.handleLoads},
		{"GET /devices/{id}/config", s.require(asAdmin, s.handleDeviceConfig)},
		{"GET /subscribers/required", s.require(asAdmin, s.handleRecordRequired)},
		{"POST /subscribers/{name}/validate", s.require(asAdmin, s.handleValidate)},
		{"PUT /subscribers/{name}/record", s.require(asAdmin, s.handleAddRecord)},
		{"POST /users/{name}/cancel", s.require(asAdmin, s.handleCancelUser)},
		{"POST /signup", s.handleSignup},
		{"POST /signup/verify-email", s.handleVerifyEmail},
		{"GET /compliance/subscribers/{name}", s.require(asCompliance, s.handleSubscriberRecord)},
		{"GET /compliance/verify", s.require(asVerifier, s.handleVerifyLedger)},
		{"POST /compliance/verify", s.require(asVerifier, s.handleVerifyLedger)},
		{"GET /compliance/checkpoints", s.require(asVerifier, s.handleCheckpoints)},
		{"GET /compliance/lookup", s.require(asCompliance, s.handleLookup)},
		{"POST /compliance/rotate-key", s.require(asAdmin, s.handleRotateKey)},
		{"POST /compliance/exports", s.require(asCompliance, s.handleCreateExport)},
		{"POST /compliance/exports/{id}/approve", s.require(asCompliance, s.handleApproveExport)},
		{"GET /compliance/exports/{id}", s.require(asCompliance, s.handleExportBundle)},
		{"POST /gateways/join", s.handleJoin},
		{"GET /gateway/netmap", s.require(asGateway, s.handleNetmap)},
		{"POST /gateway/report", s.require(asGateway, s.handleReport)},
		{"POST /gateway/sessions", s.require(asGateway, s.handleGatewaySessions)},
		{"GET /gateways/{name}/records", s.require(asAdmin, s.handleGatewayRecords)},
		{"POST /gateways/{name}/records/resend", s.require(asAdmin, s.handleResendGatewayRecords)},
		{"POST /gateways/{name}/records/discard", s.require(asAdmin, s.handleDiscardGatewayRecords)},
		{"GET /compliance/inventory", s.require(asVerifier, s.handleInventory)},
		{"POST /compliance/retention-check", s.require(asVerifier, s.handleRetentionCheck)},
		{"GET /incidents/types", s.require(asAdmin, s.handleIncidentTypes)},
		{"GET /incidents/candidates", s.require(asAdmin, s.handleCandidates)},
		{"POST /incidents/candidates/{id}/confirm", s.require(asAdmin, s.handleConfirmCandidate)},
		{"POST /incidents/candidates/{id}/dismiss", s.require(asAdmin, s.handleDismissCandidate)},
		{"POST /incidents", s.require(asAdmin, s.handleCreateIncident)},
		{"GET /incidents", s.require(asAdmin, s.handleIncidents)},
		{"GET /incidents/{id}", s.require(asAdmin, s.handleIncident)},
		{"POST /incidents/{id}/updates", s.require(asAdmin, s.handleUpdateIncident)},
		{"POST /incidents/{id}/close", s.require(asAdmin, s.handleCloseIncident)},
		{"GET /incidents/{id}/report", s.require(asAdmin, s.handleIncidentReport)},
		{"POST /incidents/{id}/send", s.require(asAdmin, s.handleSendIncident)},
		{"POST /incidents/{id}/deliveries", s.require(asAdmin, s.handleRecordDelivery)},
		{"GET /poc", s.require(asAdmin, s.handlePOC)},
		{"PUT /poc", s.require(asAdmin, s.handleSetPOC)},
		{"GET /poc/letter", s.require(asAdmin, s.handlePOCLetter)},
		{"POST /orders", s.require(asAdmin, s.handleCreateOrder)},
		{"GET /orders", s.require(asAdmin, s.handleOrders)},
		{"GET /orders/{id}", s.require(asAdmin, s.handleOrder)},
		{"POST /orders/{id}/answer", s.require(asAdmin, s.handleAnswerOrder)},
		{"GET /time", s.require(asAdmin, s.handleTime)},
		{"GET /ict-logs", s.require(asAdmin, s.handleICTLogs)},
		{"GET /ict-logs/status", s.require(asAdmin, s.handleICTLogStatus)},
		{"GET /gateway/time-plan", s.require(asGateway, s.handleGatewayTimePlan)},
		{"GET /admin-tokens", s.require(asAdmin, s.handleAdminTokens)},
		{"POST /admin-tokens", s.require(asAdmin, s.handleCreateAdminToken)},
		{"DELETE /admin-tokens/{id}", s.require(asAdmin, s.handleRevokeAdminToken)},
		{"DELETE /gateways/{name}", s.require(asAdmin, s.handleRemoveGateway)},
		{"POST /gateways/{name}/rotate-credential", s.require(asGateway, s.handleRotateCredential)},
	}
}

// Handler returns the API's HTTP handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, r := range s.routes() {
		method, path, _ := strings.Cut(r.pattern, " ")
		mux.HandleFunc(method+" "+api.Prefix+path, r.handler)
	}
	mux.Handle("GET /metrics", s.metrics.handler())
	mux.HandleFunc(api.Prefix+"/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	return s.metrics.instrument(mux)
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, api.Health{Status: "ok", Version: Version})
}

// Version is the control server's version, set at build time.
var Version = "dev"

// openLedger opens the compliance ledger with the configured keyring
// (created in the data directory on first start when none is configured)
// and the control server's checkpoint signing key.
func openLedger(ctx context.Context, db *store.DB, cfg Config) (*ledger.Ledger, *ledger.Keyring, ed25519.PrivateKey, error) {
	spec := cfg.Keys
	if spec == "" {
		spec = filepath.Join(cfg.DataDir, "ledger-keys")
		if _, err := os.Stat(spec); errors.Is(err, os.ErrNotExist) {
			key := make([]byte, 32)
			rand.Read(key)
			line := "k1 " + base64.StdEncoding.EncodeToString(key) + "\n"
			if err := atomicfile.Write(spec, []byte(line), 0o600); err != nil {
				return nil, nil, nil, err
			}
		}
	}
	keys, err := ledger.LoadKeyring(spec)
	if err != nil {
		return nil, nil, nil, err
	}
	signer, err := loadOrCreateSigner(filepath.Join(cfg.DataDir, "ledger-signing.key"))
	if err != nil {
		return nil, nil, nil, err
	}
	lg, err := ledger.Open(ctx, db, keys, signer)
	return lg, keys, signer, err
}

// loadOrCreateSigner reads the ed25519 key that signs ledger checkpoints.
func loadOrCreateSigner(file string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		seed := base64.StdEncoding.EncodeToString(priv.Seed()) + "\n"
		return priv, atomicfile.Write(file, []byte(seed), 0o600)
	}
	if err != nil {
		return nil, err
	}
	seed, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("%s: not a base64 ed25519 seed", file)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}
