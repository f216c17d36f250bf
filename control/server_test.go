package control

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/wg"
)

type testServer struct {
	*Server
	url   string
	admin *api.Client
}

func newTestServer(t *testing.T, pool4 string) *testServer {
	t.Helper()
	ts, stop := startTestServer(t, Config{
		DataDir:  t.TempDir(),
		IPv4Pool: netip.MustParsePrefix(pool4),
		IPv6Pool: netip.MustParsePrefix("2001:db8:200::/120"),
	})
	t.Cleanup(stop)
	return ts
}

// startTestServer starts a control server with cfg (logging nowhere unless
// cfg says) and an admin client; stop shuts it down, once.
func startTestServer(t *testing.T, cfg Config) (ts *testServer, stop func()) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.Handler())
	stop = sync.OnceFunc(func() { hs.Close(); s.Close() })
	tok, err := s.CreateAdminToken(context.Background(), "ops")
	if err != nil {
		stop()
		t.Fatal(err)
	}
	admin, err := api.NewClient(hs.URL, tok, "")
	if err != nil {
		stop()
		t.Fatal(err)
	}
	return &testServer{Server: s, url: hs.URL, admin: admin}, stop
}

func newKey(t *testing.T) *wg.Key {
	k, err := wg.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	pub := k.Public()
	return &pub
}

// wantStatus checks that err is an API error with the code and a message
// containing want.
func wantStatus(t *testing.T, err error, code int, want string) {
	t.Helper()
	var se *api.StatusError
	if !errors.As(err, &se) {
		t.Fatalf("got %v, want HTTP %d", err, code)
	}
	if se.Code != code || !strings.Contains(se.Message, want) {
		t.Fatalf("got HTTP %d %q, want HTTP %d containing %q", se.Code, se.Message, code, want)
	}
}

func (ts *testServer) deviceCount(t *testing.T) int {
	t.Helper()
	devs, err := ts.admin.Devices(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	return len(devs)
}

func TestAuth(t *testing.T) {
	ts := newTestServer(t, "10.200.0.0/24")
	ctx := context.Background()
	for _, tc := range []struct{ name, token string }{
		{"no token", ""},
		{"unknown admin token", adminTokenPrefix + "nope"},
		{"garbage", "hello"},
	} {
		c, _ := api.NewClient(ts.url, tc.token, "")
		_, err := c.Users(ctx)
		wantStatus(t, err, 401, "token")
	}
	// A gateway credential may not call admin endpoints, nor an admin the
	// gateway's.
	tok, err := ts.admin.CreateJoinToken(ctx, api.JoinTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	jc, _ := api.NewClient(ts.url, tok.Token, "")
	j, err := jc.Join(ctx, api.JoinRequest{Name: "gw", PublicKey: *newKey(t), Endpoint: "192.0.2.1:51820", Mode: api.Userspace})
	if err != nil {
		t.Fatal(err)
	}
	gc, _ := api.NewClient(ts.url, j.Credential, "")
	_, err = gc.Users(ctx)
	wantStatus(t, err, 403, "may not")
	_, err = ts.admin.Netmap(ctx, api.FullNetmap, 0)
	wantStatus(t, err, 403, "may not")
	if _, err := gc.Netmap(ctx, api.FullNetmap, 0); err != nil {
		t.Fatalf("gateway netmap: %v", err)
	}
	// Credentials are stored hashed: the database never holds them.
	if hasBytes(t, ts.Server, j.Credential) || hasBytes(t, ts.Server, tok.Token) {
		t.Fatal("a credential is stored in clear")
	}
}

func TestJoinTokens(t *testing.T) {
	ts := newTestServer(t, "10.200.0.0/24")
	ctx := context.Background()
	join := func(token, name string) error {
		c, err := api.NewClient(ts.url, token, "")
		if err != nil {
			return err
		}
		_, err = c.Join(ctx, api.JoinRequest{Name: name, PublicKey: *newKey(t), Endpoint: "192.0.2.1:51820", Mode: api.TUN})
		return err
	}
	single, _ := ts.admin.CreateJoinToken(ctx, api.JoinTokenRequest{})
	if err := join(single.Token, "a"); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, join(single.Token, "b"), 401, "already used")

	reusable, _ := ts.admin.CreateJoinToken(ctx, api.JoinTokenRequest{Reusable: true})
	for _, name := range []string{"c", "d"} {
		if err := join(reusable.Token, name); err != nil {
			t.Fatal(err)
		}
	}
	wantStatus(t, join(reusable.Token, "c"), 409, "already joined")

	if err := ts.admin.RevokeJoinToken(ctx, reusable.ID); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, join(reusable.Token, "e"), 401, "revoked")

	expiring, _ := ts.admin.CreateJoinToken(ctx, api.JoinTokenRequest{TTL: time.Minute})
	ts.db.Exec(`UPDATE join_tokens SET expires_at = ? WHERE id = ?`, time.Now().Add(-time.Second).Unix(), expiring.ID)
	wantStatus(t, join(expiring.Token, "f"), 401, "expired")

	parts, _ := api.ParseJoinToken(single.Token)
	parts.Secret = strings.Repeat("x", 32)
	wantStatus(t, join(parts.String(), "g"), 401, "unknown token")
	parts, _ = api.ParseJoinToken(single.Token)
	parts.CAHash = strings.Repeat("ab", 32)
	wantStatus(t, join(parts.String(), "h"), 401, "another control server")
	wantStatus(t, join("mrdjoin1.bad", "i"), 401, "malformed join token")

	_, err := ts.admin.CreateJoinToken(ctx, api.JoinTokenRequest{TTL: time.Second})
	wantStatus(t, err, 400, "ttl")

	gws, err := ts.admin.Gateways(ctx)
	if err != nil || len(gws) != 3 {
		t.Fatalf("gateways after refused joins: %d %v (want a, c, d only)", len(gws), err)
	}
}

func TestDeviceBadInput(t *testing.T) {
	ts := newTestServer(t, "10.200.0.0/29") // .2-.6: five devices
	ctx := context.Background()
	if _, err := ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "alice"}); err != nil {
		t.Fatal(err)
	}
	_, err := ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "alice"})
	wantStatus(t, err, 409, "already exists")
	_, err = ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "bad name!"})
	wantStatus(t, err, 400, "user name")
	_, err = ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "x", Kind: "martian"})
	wantStatus(t, err, 400, "kind")

	key := newKey(t)
	if _, err := ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "alice", Name: "d1", PublicKey: key}); err != nil {
		t.Fatal(err)
	}
	_, err = ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "alice", Name: "d2", PublicKey: key})
	wantStatus(t, err, 409, "public key already exists")
	_, err = ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "alice", Name: "d1", PublicKey: newKey(t)})
	wantStatus(t, err, 409, "already has a device named")
	_, err = ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "nobody", Name: "d3", PublicKey: newKey(t)})
	wantStatus(t, err, 404, `no user named "nobody"`)
	if n := ts.deviceCount(t); n != 1 {
		t.Fatalf("refused creations left devices behind: %d", n)
	}

	raw := func(body string) error {
		return ts.admin.Do(ctx, "POST", "/devices", json.RawMessage(body), nil)
	}
	wantStatus(t, raw(`{"user":"alice","name":"k","public_key":"not-base64"}`), 400, "invalid WireGuard key")
	wantStatus(t, raw(`{"user":"alice","name":"k","public_key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`), 400, "key is all zeroes")
	wantStatus(t, raw(`{"user":"alice","name":"k","colour":"red"}`), 400, "unknown field")
	wantStatus(t, rawPost(t, ts, "/devices", `{"user":"alice","name":"k"} {}`), 400, "unexpected data")
	wantStatus(t, raw(`{"user":"alice","name":"k","public_key":"`+strings.Repeat("A", 70000)+`"}`), 413, "larger than")
	wantStatus(t, rawPost(t, ts, "/devices", "{not json"), 400, "malformed JSON")
	wantStatus(t, rawPost(t, ts, "/devices", ""), 400, "empty request body")

	// Exhaust the /29: four more fit, the fifth is refused, and a refused
	// creation leaves nothing behind.
	for i := range 4 {
		if _, err := ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "alice", Name: "e" + string(rune('a'+i)), PublicKey: newKey(t)}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "alice", Name: "full", PublicKey: newKey(t)})
	wantStatus(t, err, 409, "exhausted")
	if n := ts.deviceCount(t); n != 5 {
		t.Fatalf("devices: %d, want 5", n)
	}
	// Deleting a device frees its address for the next one.
	devs, _ := ts.admin.Devices(ctx, "alice")
	if err := ts.admin.DeleteDevice(ctx, devs[2].ID); err != nil {
		t.Fatal(err)
	}
	resp, err := ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "alice", Name: "again", PublicKey: newKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Device.IPv4 != devs[2].IPv4 {
		t.Fatalf("freed address %s not reused, got %s", devs[2].IPv4, resp.Device.IPv4)
	}
	wantStatus(t, ts.admin.DeleteDevice(ctx, 9999), 404, "no device")
	wantStatus(t, ts.admin.DeleteUser(ctx, "alice"), 409, "still has")
}

// rawPost posts body as it is, with a new admin token.
func rawPost(t *testing.T, ts *testServer, path, body string) error {
	t.Helper()
	tok, _ := ts.CreateAdminToken(context.Background(), "raw")
	return rawPostAs(t, ts, tok, path, body)
}

func TestServerGeneratedKey(t *testing.T) {
	ts := newTestServer(t, "10.200.0.0/24")
	ctx := context.Background()
	ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "bob"})
	resp, err := ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "bob", Name: "phone"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.PrivateKey == nil || resp.PrivateKey.Public() != resp.Device.PublicKey {
		t.Fatalf("server-generated key pair does not match: %+v", resp)
	}
	// The private key is returned once and stored nowhere.
	if hasBytes(t, ts.Server, resp.PrivateKey.String()) {
		t.Fatal("the server stored the private key")
	}
}

// hasBytes reports whether any text column of any table holds s.
func hasBytes(t *testing.T, s *Server, needle string) bool {
	t.Helper()
	tables, err := s.db.Query(`SELECT name FROM sqlite_master WHERE type = 'table'`)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for tables.Next() {
		var n string
		tables.Scan(&n)
		names = append(names, n)
	}
	tables.Close()
	for _, table := range names {
		rows, err := s.db.Query(`SELECT * FROM "` + table + `"`)
		if err != nil {
			t.Fatal(err)
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			rows.Scan(ptrs...)
			for _, v := range vals {
				if b, ok := v.([]byte); ok && strings.Contains(string(b), needle) {
					rows.Close()
					return true
				}
				if str, ok := v.(string); ok && strings.Contains(str, needle) {
					rows.Close()
					return true
				}
			}
		}
		rows.Close()
	}
	return false
}

func TestNetmapDeltas(t *testing.T) {
	ts := newTestServer(t, "10.200.0.0/24")
	ctx := context.Background()
	tok, _ := ts.admin.CreateJoinToken(ctx, api.JoinTokenRequest{})
	jc, _ := api.NewClient(ts.url, tok.Token, "")
	j, err := jc.Join(ctx, api.JoinRequest{Name: "gw", PublicKey: *newKey(t), Endpoint: "192.0.2.1:51820", Mode: api.Userspace})
	if err != nil {
		t.Fatal(err)
	}
	gc, _ := api.NewClient(ts.url, j.Credential, "")
	ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "u"})

	full, err := gc.Netmap(ctx, api.FullNetmap, 0)
	if err != nil || !full.Full || len(full.Peers) != 0 || len(full.Addresses) != 2 {
		t.Fatalf("empty full netmap: %+v %v", full, err)
	}
	// A long poll returns as soon as a device is added: added once the
	// server has the poll (it marks the gateway seen as the poll begins).
	got := make(chan api.Netmap, 1)
	before := time.Now()
	go func() {
		nm, _ := gc.Netmap(ctx, full.Version, 10*time.Second)
		got <- nm
	}()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		ts.mu.Lock()
		polling := ts.status["gw"].lastSeen.After(before)
		ts.mu.Unlock()
		if polling {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the long poll did not reach the server in 10 s")
		}
	}
	d1, err := ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "u", Name: "a", PublicKey: newKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	var delta api.Netmap
	select {
	case delta = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("long poll did not return after a change")
	}
	if delta.Full || len(delta.Peers) != 1 || delta.Peers[0].PublicKey != d1.Device.PublicKey || len(delta.Peers[0].AllowedIPs) != 2 {
		t.Fatalf("delta: %+v", delta)
	}
	// Add then revoke a second device: the delta collapses it to a removal.
	d2, _ := ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "u", Name: "b", PublicKey: newKey(t)})
	ts.admin.RevokeDevice(ctx, d2.Device.ID)
	delta2, err := gc.Netmap(ctx, delta.Version, 0)
	if err != nil || len(delta2.Peers) != 1 || !delta2.Peers[0].Remove || delta2.Peers[0].PublicKey != d2.Device.PublicKey {
		t.Fatalf("collapsed delta: %+v %v", delta2, err)
	}
	// Nothing new: an empty delta at the same version after the wait.
	empty, err := gc.Netmap(ctx, delta2.Version, 50*time.Millisecond)
	if err != nil || len(empty.Peers) != 0 || empty.Version != delta2.Version {
		t.Fatalf("empty delta: %+v %v", empty, err)
	}
	// A version from the future (e.g. a restored database) gets a full map.
	f2, err := gc.Netmap(ctx, delta2.Version+100, 0)
	if err != nil || !f2.Full || len(f2.Peers) != 1 {
		t.Fatalf("full after unknown version: %+v %v", f2, err)
	}
	wantStatus(t, gc.Do(ctx, "GET", "/gateway/netmap?since=x", nil, nil), 400, "since")
}

func TestOpenAPIListsEveryRoute(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatal(err)
	}
	ts := newTestServer(t, "10.200.0.0/24")
	for _, r := range ts.routes() {
		method, path, _ := strings.Cut(r.pattern, " ")
		if _, ok := doc.Paths[path][strings.ToLower(method)]; !ok {
			t.Errorf("OpenAPI document lacks %s", r.pattern)
		}
	}
	if len(doc.Paths) == 0 {
		t.Fatal("no paths documented")
	}
	resp, err := http.Get(ts.url + api.Prefix + "/openapi.json")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("served OpenAPI: %v", err)
	}
	resp.Body.Close()
}
