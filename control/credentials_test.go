package control

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/gateway"
	"github.com/meridian-vpn/meridian/ictlog"
	"github.com/meridian-vpn/meridian/store"
)

// rawGet answers a GET as the admin, as raw JSON.
func (ts *testServer) rawGet(t *testing.T, path string) string {
	t.Helper()
	var raw json.RawMessage
	if err := ts.admin.Do(context.Background(), "GET", path, nil, &raw); err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

// noSecrets fails if body holds any of the secrets, or the hex or base64 of
// their stored hashes.
func noSecrets(t *testing.T, what, body string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		h := hashSecret(s)
		for _, form := range []string{s, hex.EncodeToString(h), base64.StdEncoding.EncodeToString(h), base64.RawURLEncoding.EncodeToString(h)} {
			if strings.Contains(body, form) {
				t.Fatalf("%s holds a secret or its hash: %s", what, body)
			}
		}
	}
}

// auditActions are the actions in the audit log, in order.
func (ts *testServer) auditActions(t *testing.T) (actions []string, raw string) {
	t.Helper()
	raw = ts.rawGet(t, "/audit")
	var entries []store.AuditEntry
	if err := json.Unmarshal([]byte(raw), &entries); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		actions = append(actions, e.Action)
	}
	return actions, raw
}

func (ts *testServer) clientWith(t *testing.T, tok string) *api.Client {
	t.Helper()
	c, err := api.NewClient(ts.url, tok, "")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A leaked token can be revoked: from then on it gets 401. The list shows
// every token with its role and expiry, never a secret.
func TestAdminTokenRevoke(t *testing.T) {
	ts := newTestServer(t, "10.200.0.0/24")
	ctx := context.Background()
	created := time.Now()
	comp, err := ts.admin.CreateAdminToken(ctx, api.AdminTokenRequest{Name: "officer", Role: api.RoleCompliance, TTL: 720 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(comp.Token, adminTokenPrefix) || comp.Role != api.RoleCompliance || comp.ID == "" {
		t.Fatalf("created %+v", comp)
	}
	if d := comp.ExpiresAt.Sub(created.Add(720 * time.Hour)); d < -2*time.Second || d > 2*time.Second {
		t.Fatalf("expires at %s, want 720 h after %s", comp.ExpiresAt, created)
	}
	cc := ts.clientWith(t, comp.Token)
	var raw json.RawMessage
	if err := cc.Do(ctx, "GET", "/compliance/checkpoints", nil, &raw); err != nil {
		t.Fatalf("compliance token before revocation: %v", err)
	}

	body := ts.rawGet(t, "/admin-tokens")
	noSecrets(t, "token list", body, comp.Token)
	if strings.Contains(body, `"token"`) || strings.Contains(body, "hash") {
		t.Fatalf("token list shows a token field: %s", body)
	}
	list, err := ts.admin.AdminTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 {
		t.Fatalf("listed %+v, want the test's admin token and the officer's", list)
	}
	i := slices.IndexFunc(list, func(x api.AdminToken) bool { return x.ID == comp.ID })
	if i < 0 || list[i].Name != "officer" || list[i].Role != api.RoleCompliance || list[i].Revoked || !list[i].ExpiresAt.Equal(comp.ExpiresAt) || list[i].LastUsedAt.IsZero() {
		t.Fatalf("listed %+v, want the officer's token, live, used, expiring at %s", list, comp.ExpiresAt)
	}

	if err := ts.admin.RevokeAdminToken(ctx, comp.ID); err != nil {
		t.Fatal(err)
	}
	err = cc.Do(ctx, "GET", "/compliance/checkpoints", nil, &raw)
	wantStatus(t, err, 401, "invalid, expired or revoked token")
	list, _ = ts.admin.AdminTokens(ctx)
	if i := slices.IndexFunc(list, func(x api.AdminToken) bool { return x.ID == comp.ID }); i < 0 || !list[i].Revoked || list[i].RevokedAt.IsZero() {
		t.Fatalf("after revocation listed %+v", list)
	}
	wantStatus(t, ts.admin.RevokeAdminToken(ctx, comp.ID), 409, "already revoked")
	wantStatus(t, ts.admin.RevokeAdminToken(ctx, "nope"), 404, "no admin token")

	// The last live admin-role token cannot be revoked: that would lock
	// the operator out of the API.
	mine := slices.IndexFunc(list, func(x api.AdminToken) bool { return x.Name == "ops" })
	wantStatus(t, ts.admin.RevokeAdminToken(ctx, list[mine].ID), 409, "last")
	second, err := ts.admin.CreateAdminToken(ctx, api.AdminTokenRequest{Name: "ops-2", Role: api.RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	if !second.ExpiresAt.IsZero() {
		t.Fatalf("a token without ttl expires at %s", second.ExpiresAt)
	}
	// An admin may revoke the very token it calls with, once another is left.
	if err := ts.admin.RevokeAdminToken(ctx, list[mine].ID); err != nil {
		t.Fatal(err)
	}
	_, err = ts.admin.Users(ctx)
	wantStatus(t, err, 401, "token")
	ts.admin = ts.clientWith(t, second.Token)
	if _, err := ts.admin.Users(ctx); err != nil {
		t.Fatal(err)
	}

	for _, bad := range []api.AdminTokenRequest{{Name: "x", Role: "root"}, {Name: "", Role: api.RoleAdmin}, {Name: "x", Role: api.RoleAdmin, TTL: -time.Hour}, {Name: "x", Role: api.RoleAdmin, TTL: time.Second}} {
		_, err := ts.admin.CreateAdminToken(ctx, bad)
		wantStatus(t, err, 400, "")
	}
	// Other roles may not manage tokens.
	aud, err := ts.admin.CreateAdminToken(ctx, api.AdminTokenRequest{Name: "auditor", Role: api.RoleAuditor})
	if err != nil {
		t.Fatal(err)
	}
	_, err = ts.clientWith(t, aud.Token).AdminTokens(ctx)
	wantStatus(t, err, 403, "may not")

	actions, raw2 := ts.auditActions(t)
	for _, want := range []string{"admin-token-create", "admin-token-revoke"} {
		if !slices.Contains(actions, want) {
			t.Fatalf("audit log %v has no %s", actions, want)
		}
	}
	noSecrets(t, "audit log", raw2, comp.Token, second.Token, aud.Token)
	if hasBytes(t, ts.Server, comp.Token) {
		t.Fatal("a token is stored in clear")
	}
}

// A token past its expiry gets 401, as a revoked one.
func TestExpiredAdminToken(t *testing.T) {
	ts := newTestServer(t, "10.200.0.0/24")
	ctx := context.Background()
	add := func(name string, expires time.Time) *api.Client {
		tok := adminTokenPrefix + randomString(32)
		err := ts.db.AddAdminToken(ctx, "test", store.NewAdminToken{ID: hex.EncodeToString(hashSecret(tok)[:6]), Name: name, Role: api.RoleAdmin, Hash: hashSecret(tok), Expires: expires})
		if err != nil {
			t.Fatal(err)
		}
		return ts.clientWith(t, tok)
	}
	expired := add("expired", time.Now().Add(-time.Minute))
	live := add("live", time.Now().Add(time.Hour))
	_, err := expired.Users(ctx)
	wantStatus(t, err, 401, "invalid, expired or revoked token")
	if _, err := live.Users(ctx); err != nil {
		t.Fatalf("a token before its expiry: %v", err)
	}
	list, err := ts.admin.AdminTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(list, func(x api.AdminToken) bool { return x.Name == "expired" })
	if i < 0 || list[i].ExpiresAt.After(time.Now()) || !list[i].LastUsedAt.IsZero() {
		t.Fatalf("listed %+v", list)
	}
}

// joinFake joins a gateway by the API alone (no WireGuard device) and
// returns its credential.
func (ts *testServer) joinFake(t *testing.T, name string) string {
	t.Helper()
	ctx := context.Background()
	tok, err := ts.admin.CreateJoinToken(ctx, api.JoinTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	j, err := ts.clientWith(t, tok.Token).Join(ctx, api.JoinRequest{Name: name, PublicKey: *newKey(t), Endpoint: "192.0.2.1:51820", Mode: api.Userspace})
	if err != nil {
		t.Fatal(err)
	}
	return j.Credential
}

// pendingPoll starts a long poll of the gateway whose client is gc, after a
// full netmap, and returns once the server holds it: the poll's result
// comes on the channel.
func (ts *testServer) pendingPoll(t *testing.T, name string, gc *api.Client) <-chan error {
	t.Helper()
	ctx := context.Background()
	nm, err := gc.Netmap(ctx, api.FullNetmap, 0)
	if err != nil {
		t.Fatal(err)
	}
	if nm.Version == 0 {
		t.Fatal("the test needs a device, so that the poll can name a version")
	}
	done := make(chan error, 1)
	pctx, cancel := context.WithCancel(ctx) // a failed test does not hold up the server's close
	t.Cleanup(cancel)
	go func() {
		_, err := gc.Netmap(pctx, nm.Version, 100*time.Second)
		done <- err
	}()
	// The poll marks the version it holds before it waits.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		ts.mu.Lock()
		applied := ts.status[name].applied
		ts.mu.Unlock()
		if applied == nm.Version {
			return done
		}
		if time.Now().After(deadline) {
			t.Fatal("the long poll never reached the server")
		}
	}
}

// wantPromptly waits for a pending poll's answer; the bound only keeps a
// broken build from hanging (the poll itself would wait 100 s).
func wantPromptly(t *testing.T, done <-chan error, code int) {
	t.Helper()
	select {
	case err := <-done:
		wantStatus(t, err, code, "")
	case <-time.After(20 * time.Second):
		t.Fatalf("the pending long poll did not end")
	}
}

// A removed gateway's credential stops working at once: its pending long
// poll ends with 401, it is no longer counted among the healthy gateways a
// device change waits for, and it leaves its locations.
func TestRemoveGateway(t *testing.T) {
	ts := newTestServer(t, "10.200.0.0/24")
	ctx := context.Background()
	cred1, cred2 := ts.joinFake(t, "gw1"), ts.joinFake(t, "gw2")
	for _, g := range []string{"gw1", "gw2"} {
		if _, err := ts.admin.SetPlace(ctx, g, api.Place{PhysicalCountry: "SG", Ownership: api.Rented}); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range []api.Location{{Code: "SG", Country: "SG", Gateways: []string{"gw1"}}, {Code: "SG-2", Country: "SG", Gateways: []string{"gw1", "gw2"}}} {
		if _, err := ts.admin.CreateLocation(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "alice"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "alice", Name: "phone", PublicKey: newKey(t)}); err != nil {
		t.Fatal(err)
	}
	g1 := ts.clientWith(t, cred1)
	done := ts.pendingPoll(t, "gw1", g1)
	v, err := ts.db.NetmapVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ts.allApplied(v + 1) {
		t.Fatal("gw1 is healthy and holds no newer netmap, yet a change would not wait for it")
	}

	rm, err := ts.admin.RemoveGateway(ctx, "gw1")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rm.Locations, []string{"SG", "SG-2"}) || !slices.Equal(rm.Emptied, []string{"SG"}) {
		t.Fatalf("removal answered %+v", rm)
	}
	wantPromptly(t, done, 401)
	_, err = g1.Netmap(ctx, api.FullNetmap, 0)
	wantStatus(t, err, 401, "token")
	wantStatus(t, g1.Report(ctx, api.GatewayReport{}), 401, "token")
	if !ts.allApplied(v + 1) {
		t.Fatal("a removed gateway is still counted among the healthy ones a change waits for")
	}
	gws, err := ts.admin.Gateways(ctx)
	if err != nil || len(gws) != 1 || gws[0].Name != "gw2" {
		t.Fatalf("gateways after removal: %+v %v", gws, err)
	}
	if _, err := ts.clientWith(t, cred2).Netmap(ctx, api.FullNetmap, 0); err != nil {
		t.Fatalf("the other gateway: %v", err)
	}
	locs, err := ts.admin.Locations(ctx)
	if err != nil || len(locs) != 2 || len(locs[0].Gateways) != 0 || !slices.Equal(locs[1].Gateways, []string{"gw2"}) {
		t.Fatalf("locations after removal: %+v %v", locs, err)
	}
	_, err = ts.admin.RemoveGateway(ctx, "gw1")
	wantStatus(t, err, 404, "no gateway")
	_, err = ts.clientWith(t, cred2).RemoveGateway(ctx, "gw2")
	wantStatus(t, err, 403, "may not")

	actions, raw := ts.auditActions(t)
	if !slices.Contains(actions, "gateway-remove") {
		t.Fatalf("audit log %v has no gateway-remove", actions)
	}
	noSecrets(t, "audit log", raw, cred1, cred2)
}

// A gateway swaps its credential for a new one: the old one stops at once
// (a long poll with it ends), the new one works.
func TestRotateGatewayCredential(t *testing.T) {
	ts := newTestServer(t, "10.200.0.0/24")
	ctx := context.Background()
	old := ts.joinFake(t, "gw1")
	other := ts.joinFake(t, "gw2")
	if _, err := ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "alice"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "alice", Name: "phone", PublicKey: newKey(t)}); err != nil {
		t.Fatal(err)
	}
	done := ts.pendingPoll(t, "gw1", ts.clientWith(t, old))

	// Only the gateway itself rotates, and only its own.
	_, err := ts.clientWith(t, other).RotateCredential(ctx, "gw1")
	wantStatus(t, err, 403, "own")
	_, err = ts.admin.RotateCredential(ctx, "gw1")
	wantStatus(t, err, 403, "may not")

	rotating := ts.clientWith(t, old)
	nc, err := rotating.RotateCredential(ctx, "gw1")
	if err != nil {
		t.Fatal(err)
	}
	if nc.Name != "gw1" || !strings.HasPrefix(nc.Credential, gatewayCredPrefix) || nc.Credential == old {
		t.Fatalf("rotation answered %+v", nc)
	}
	wantPromptly(t, done, 401)
	_, err = ts.clientWith(t, old).Netmap(ctx, api.FullNetmap, 0)
	wantStatus(t, err, 401, "token")
	if _, err := ts.clientWith(t, nc.Credential).Netmap(ctx, api.FullNetmap, 0); err != nil {
		t.Fatalf("new credential: %v", err)
	}
	if _, err := rotating.Netmap(ctx, api.FullNetmap, 0); err != nil {
		t.Fatalf("the rotating client goes on with the new credential: %v", err)
	}

	actions, raw := ts.auditActions(t)
	if !slices.Contains(actions, "gateway-credential-rotate") {
		t.Fatalf("audit log %v has no gateway-credential-rotate", actions)
	}
	noSecrets(t, "audit log", raw, old, nc.Credential, other)
	if hasBytes(t, ts.Server, nc.Credential) {
		t.Fatal("the new credential is stored in clear")
	}
}

// A running gateway that is removed stops with a clear error instead of
// asking again and again; one whose credential is rotated on its host
// (meridian gateway rotate-credential) goes on with the new one.
func TestGatewayStopsWhenRemoved(t *testing.T) {
	ts := newTestServer(t, "10.200.0.0/24")
	ctx := context.Background()
	start := func(name string) (*gateway.Gateway, string) {
		tok, err := ts.admin.CreateJoinToken(ctx, api.JoinTokenRequest{})
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(t.TempDir(), name)
		gw, err := gateway.Start(ctx, gateway.Config{Control: ts.url, JoinToken: tok.Token, StateDir: dir, Name: name,
			ListenPort: freeUDPPort(t), ReportInterval: 100 * time.Millisecond, Logger: quietLog()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { gw.Close() })
		for deadline := time.Now().Add(10 * time.Second); !gw.Connected(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s never followed the control server", name)
			}
		}
		return gw, dir
	}
	gone, _ := start("gw-gone")
	kept, keptDir := start("gw-kept")

	before, err := os.ReadFile(filepath.Join(keptDir, "gateway.json"))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := gateway.RotateCredential(ctx, keptDir)
	if err != nil {
		t.Fatal(err)
	}
	after, err := os.ReadFile(filepath.Join(keptDir, "gateway.json"))
	if err != nil {
		t.Fatal(err)
	}
	if string(before) == string(after) || !strings.Contains(string(after), nc.Credential) {
		t.Fatal("the new credential is not in the state directory")
	}

	if _, err := ts.admin.RemoveGateway(ctx, "gw-gone"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-gone.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("a removed gateway did not stop")
	}
	if err := gone.Err(); err == nil || !strings.Contains(err.Error(), "removed") {
		t.Fatalf("a removed gateway stopped with %v, want an error that says it was removed", err)
	}
	var se *api.StatusError
	if !errors.As(gone.Err(), &se) || se.Code != 401 {
		t.Fatalf("stopped with %v, want the control server's 401", gone.Err())
	}

	// The rotated gateway follows a new device with its new credential.
	if _, err := ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "bob"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "bob", Name: "laptop", PublicKey: newKey(t)}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); kept.Peers() != 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the gateway with a rotated credential stopped following the control server")
		}
	}
	select {
	case <-kept.Done():
		t.Fatalf("the gateway with a rotated credential stopped: %v", kept.Err())
	default:
	}
}

// Where the control server carries an ICT-log duty, credential changes are
// auth events of the log, naming the token or gateway, never a secret; a
// revoked token's use is a failed login.
func TestCredentialChangesInICTLog(t *testing.T) {
	ts := newTestServer(t, "10.200.0.0/24")
	ctx := context.Background()
	if _, err := ts.admin.SetPlace(ctx, api.ControlNode, api.Place{PhysicalCountry: "IN", Ownership: api.Rented}); err != nil {
		t.Fatal(err)
	}
	tok, err := ts.admin.CreateAdminToken(ctx, api.AdminTokenRequest{Name: "officer", Role: api.RoleCompliance, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.admin.RevokeAdminToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	ts.clientWith(t, tok.Token).AdminTokens(ctx)
	cred := ts.joinFake(t, "gw1")
	gc := ts.clientWith(t, cred)
	nc, err := gc.RotateCredential(ctx, "gw1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ts.admin.RemoveGateway(ctx, "gw1"); err != nil {
		t.Fatal(err)
	}
	es, raw := ictEntries(t, ts)
	created := find(t, es, ictlog.Auth, "admin token created")
	revoked := find(t, es, ictlog.Auth, "admin token revoked")
	if !strings.Contains(string(created.Details), tok.ID) || !strings.Contains(string(revoked.Details), tok.ID) {
		t.Fatalf("token events do not name the token: %+v %+v", created, revoked)
	}
	find(t, es, ictlog.Auth, "invalid or revoked token")
	if e := find(t, es, ictlog.Auth, "gateway credential rotated"); e.Actor != "gateway:gw1" {
		t.Fatalf("rotation recorded as %+v", e)
	}
	find(t, es, ictlog.Gateway, "gateway removed")
	noSecrets(t, "ICT log", raw, tok.Token, cred, nc.Credential)
}
