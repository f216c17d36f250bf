package control

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/store"
)

// The credential kinds the matrix tries on every route.
type credKind int

const (
	credAdmin      credKind = iota // an admin token, role admin
	credCompliance                 // an admin token, role compliance
	credAuditor                    // an admin token, role auditor
	credGateway                    // a joined gateway's credential
	credJoin                       // a gateway join token
	credNone                       // no Authorization header
	credExpired                    // an admin-role token past its expiry
	credRevoked                    // an admin-role token revoked
	credKinds
)

var credNames = [credKinds]string{"admin", "compliance", "auditor", "gateway", "join-token", "none", "expired", "revoked"}

// What a credential must get from a route.
type outcome int

const (
	pass   outcome = iota // authorized: anything but 401 and 403 (the dummy request may still be 400, 404, 409...)
	denied                // exactly 403, from the role check
	unauth                // exactly 401: no credential, or not a valid one
)

// The rows of the matrix, by who may call a route.
var (
	public     = [credKinds]outcome{pass, pass, pass, pass, pass, pass, pass, pass}
	adminOnly  = [credKinds]outcome{pass, denied, denied, denied, unauth, unauth, unauth, unauth}
	compliance = [credKinds]outcome{denied, pass, denied, denied, unauth, unauth, unauth, unauth}
	verifier   = [credKinds]outcome{denied, pass, pass, denied, unauth, unauth, unauth, unauth}
	gatewayOf  = [credKinds]outcome{denied, denied, denied, pass, unauth, unauth, unauth, unauth}
	joinOnly   = [credKinds]outcome{unauth, unauth, unauth, unauth, pass, unauth, unauth, unauth}
)

// matrixRow is who may call a route; fresh routes change what the
// credentials are (a gateway's removal, a credential's rotation), so every
// credential tries them on a server of its own.
type matrixRow struct {
	who   [credKinds]outcome
	fresh bool
}

// authMatrix is the expected authorization of every route of the API,
// keyed by its pattern in routes(). A route added without an entry, or an
// entry whose route is gone, fails TestRoleRouteMatrix.
var authMatrix = map[string]matrixRow{
	"GET /health":                             {who: public},
	"GET /openapi.json":                       {who: public},
	"POST /users":                             {who: adminOnly},
	"GET /users":                              {who: adminOnly},
	"DELETE /users/{name}":                    {who: adminOnly},
	"POST /devices":                           {who: adminOnly},
	"GET /devices":                            {who: adminOnly},
	"POST /devices/{id}/revoke":               {who: adminOnly},
	"DELETE /devices/{id}":                    {who: adminOnly},
	"POST /gateway-tokens":                    {who: adminOnly},
	"GET /gateway-tokens":                     {who: adminOnly},
	"DELETE /gateway-tokens/{id}":             {who: adminOnly},
	"GET /gateways":                           {who: adminOnly},
	"PUT /gateways/{name}/place":              {who: adminOnly},
	"PUT /control/place":                      {who: adminOnly},
	"GET /control/place":                      {who: adminOnly},
	"POST /locations":                         {who: adminOnly},
	"GET /locations":                          {who: adminOnly},
	"DELETE /locations/{code}":                {who: adminOnly},
	"GET /jurisdictions":                      {who: adminOnly},
	"PUT /jurisdictions/{country}":            {who: adminOnly},
	"GET /jurisdictions/explain":              {who: adminOnly},
	"POST /jurisdictions/{country}/preview":   {who: adminOnly},
	"GET /operator":                           {who: adminOnly},
	"PUT /operator":                           {who: adminOnly},
	"POST /operator/preview":                  {who: adminOnly},
	"GET /profiles":                           {who: adminOnly},
	"PUT /profiles/{name}":                    {who: adminOnly},
	"GET /audit":                              {who: adminOnly},
	"GET /serverlist":                         {who: public},
	"GET /serverlist/loads":                   {who: public},
	"GET /devices/{id}/config":                {who: adminOnly},
	"GET /subscribers/required":               {who: adminOnly},
	"POST /subscribers/{name}/validate":       {who: adminOnly},
	"PUT /subscribers/{name}/record":          {who: adminOnly},
	"POST /users/{name}/cancel":               {who: adminOnly},
	"POST /signup":                            {who: public},
	"POST /signup/verify-email":               {who: public},
	"GET /compliance/subscribers/{name}":      {who: compliance},
	"GET /compliance/verify":                  {who: verifier},
	"POST /compliance/verify":                 {who: verifier},
	"GET /compliance/checkpoints":             {who: verifier},
	"GET /compliance/inventory":               {who: verifier},
	"POST /compliance/retention-check":        {who: verifier},
	"GET /gateways/{name}/records":            {who: adminOnly},
	"POST /gateways/{name}/records/resend":    {who: adminOnly},
	"POST /gateways/{name}/records/discard":   {who: adminOnly},
	"GET /compliance/lookup":                  {who: compliance},
	"POST /compliance/rotate-key":             {who: adminOnly},
	"POST /compliance/exports":                {who: compliance},
	"POST /compliance/exports/{id}/approve":   {who: compliance},
	"GET /compliance/exports/{id}":            {who: compliance},
	"POST /gateways/join":                     {who: joinOnly},
	"GET /gateway/netmap":                     {who: gatewayOf},
	"POST /gateway/report":                    {who: gatewayOf},
	"POST /gateway/sessions":                  {who: gatewayOf},
	"GET /incidents/types":                    {who: adminOnly},
	"GET /incidents/candidates":               {who: adminOnly},
	"POST /incidents/candidates/{id}/confirm": {who: adminOnly},
	"POST /incidents/candidates/{id}/dismiss": {who: adminOnly},
	"POST /incidents":                         {who: adminOnly},
	"GET /incidents":                          {who: adminOnly},
	"GET /incidents/{id}":                     {who: adminOnly},
	"POST /incidents/{id}/updates":            {who: adminOnly},
	"POST /incidents/{id}/close":              {who: adminOnly},
	"GET /incidents/{id}/report":              {who: adminOnly},
	"POST /incidents/{id}/send":               {who: adminOnly},
	"POST /incidents/{id}/deliveries":         {who: adminOnly},
	"GET /poc":                                {who: adminOnly},
	"PUT /poc":                                {who: adminOnly},
	"GET /poc/letter":                         {who: adminOnly},
	"POST /orders":                            {who: adminOnly},
	"GET /orders":                             {who: adminOnly},
	"GET /orders/{id}":                        {who: adminOnly},
	"POST /orders/{id}/answer":                {who: adminOnly},
	"GET /time":                               {who: adminOnly},
	"GET /ict-logs":                           {who: adminOnly},
	"GET /ict-logs/status":                    {who: adminOnly},
	"GET /gateway/time-plan":                  {who: gatewayOf},
	"GET /admin-tokens":                       {who: adminOnly},
	"POST /admin-tokens":                      {who: adminOnly},
	"DELETE /admin-tokens/{id}":               {who: adminOnly},
	"DELETE /gateways/{name}":                 {who: adminOnly, fresh: true},
	"POST /gateways/{name}/rotate-credential": {who: gatewayOf, fresh: true},
}

// matrixName is what every {name}-like path parameter becomes; the
// matrix's gateway has it, so that a gateway may rotate "its own"
// credential.
const matrixName = "x"

var pathParam = regexp.MustCompile(`\{[a-z]+\}`)

// concrete makes a route's path callable: {id} becomes 1, any other
// parameter matrixName.
func concrete(path string) string {
	return pathParam.ReplaceAllStringFunc(path, func(p string) string {
		if p == "{id}" {
			return "1"
		}
		return matrixName
	})
}

// matrixWorld is a control server with one credential of every kind.
type matrixWorld struct {
	ts    *testServer
	creds [credKinds]string
	next  int // the source address of the next request (see do)
}

func newMatrixWorld(t *testing.T) *matrixWorld {
	t.Helper()
	ts, stop := startTestServer(t, Config{
		DataDir:  t.TempDir(),
		IPv4Pool: netip.MustParsePrefix("10.200.0.0/24"),
		IPv6Pool: netip.MustParsePrefix("2001:db8:200::/120"),
		// Every request comes through a "proxy" on loopback that names a
		// source of its own, so no source meets the backoff of failed
		// credentials (limits.go): a 429 would hide the 401 under test.
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
	})
	t.Cleanup(stop)
	ctx := context.Background()
	w := &matrixWorld{ts: ts}
	for k, role := range map[credKind]string{credAdmin: api.RoleAdmin, credCompliance: api.RoleCompliance, credAuditor: api.RoleAuditor, credRevoked: api.RoleAdmin} {
		tok, err := ts.admin.CreateAdminToken(ctx, api.AdminTokenRequest{Name: credNames[k], Role: role})
		if err != nil {
			t.Fatal(err)
		}
		w.creds[k] = tok.Token
		if k == credRevoked {
			if err := ts.admin.RevokeAdminToken(ctx, tok.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	expired := adminTokenPrefix + randomString(32)
	if err := ts.db.AddAdminToken(ctx, "test", store.NewAdminToken{ID: hex.EncodeToString(hashSecret(expired)[:6]), Name: "expired", Role: api.RoleAdmin, Hash: hashSecret(expired), Expires: time.Now().Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	w.creds[credExpired] = expired
	w.creds[credGateway] = ts.joinFake(t, matrixName)
	join, err := ts.admin.CreateJoinToken(ctx, api.JoinTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	w.creds[credJoin] = join.Token
	return w
}

// do calls method path with credential k and a dummy body, from a source
// address of its own, and returns the status and the error message.
func (w *matrixWorld) do(t *testing.T, method, path string, k credKind) (int, string) {
	t.Helper()
	var body io.Reader
	if method == "POST" || method == "PUT" {
		body = strings.NewReader("{}")
	}
	req, err := http.NewRequest(method, w.ts.url+api.Prefix+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if w.creds[k] != "" {
		req.Header.Set("Authorization", "Bearer "+w.creds[k])
	}
	w.next++
	req.Header.Set("X-Forwarded-For", fmt.Sprintf("198.51.100.%d, 10.%d.%d.%d", w.next%250+1, w.next>>16&255, w.next>>8&255, w.next&255))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var e api.Error
	json.Unmarshal(raw, &e)
	return resp.StatusCode, e.Error
}

// check compares one answer with what the matrix expects.
func checkAnswer(t *testing.T, pattern string, k credKind, want outcome, code int, msg string) {
	t.Helper()
	where := fmt.Sprintf("%s with %s credential", pattern, credNames[k])
	switch want {
	case pass:
		if code == http.StatusUnauthorized || code == http.StatusForbidden || code == http.StatusTooManyRequests {
			t.Errorf("%s: got HTTP %d %q, want it let through", where, code, msg)
		}
	case denied:
		if code != http.StatusForbidden || !strings.Contains(msg, "role may not call this endpoint") {
			t.Errorf("%s: got HTTP %d %q, want 403 from the role check", where, code, msg)
		}
	case unauth:
		if code != http.StatusUnauthorized {
			t.Errorf("%s: got HTTP %d %q, want 401", where, code, msg)
		}
	}
}

// TestRoleRouteMatrix: every route of the API against every kind of
// credential. Routes for admins refuse compliance officers and auditors,
// lawful reads of personal data refuse admins and auditors, integrity
// checks admit auditors, gateway routes admit only gateways, and no
// credential that is missing, expired, revoked or of the wrong kind gets
// anything but 401. The table is checked against routes() both ways.
func TestRoleRouteMatrix(t *testing.T) {
	w := newMatrixWorld(t)
	var patterns []string
	for _, r := range w.ts.routes() {
		patterns = append(patterns, r.pattern)
		if _, ok := authMatrix[r.pattern]; !ok {
			t.Errorf("new route without an entry in authMatrix: %q; say who may call it", r.pattern)
		}
	}
	for p := range authMatrix {
		if !slices.Contains(patterns, p) {
			t.Errorf("authMatrix has an entry for %q, which routes() no longer has", p)
		}
	}
	for _, p := range patterns {
		row, ok := authMatrix[p]
		if !ok {
			continue
		}
		method, path, _ := strings.Cut(p, " ")
		path = concrete(path)
		for k := range credKinds {
			world := w
			if row.fresh {
				world = newMatrixWorld(t)
			}
			code, msg := world.do(t, method, path, k)
			checkAnswer(t, p, k, row.who[k], code, msg)
		}
	}
	// The world's credentials held to the end: no row's side effect
	// decided a later one.
	for k, want := range map[credKind]int{credAdmin: 200, credGateway: 200, credExpired: 401, credRevoked: 401} {
		path := "/users"
		if k == credGateway {
			path = "/gateway/time-plan"
		}
		if code, msg := w.do(t, "GET", path, k); code != want {
			t.Errorf("after the matrix, the %s credential got HTTP %d %q, want %d", credNames[k], code, msg, want)
		}
	}
}
