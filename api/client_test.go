package api

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/internal/testpki"
)

func TestNewClient(t *testing.T) {
	for _, tc := range []struct {
		url, caHash string
		want        string // error text; "": accepted
	}{
		{"http://127.0.0.1:8443", "", ""},
		{"http://127.0.0.1:8443/", "", ""},
		{"http://[::1]:8443", "", ""},
		{"http://localhost:8443", "", ""},
		{"https://control.example:8443", testCAHash, ""},
		{"https://control.example:8443", strings.ToUpper(testCAHash), ""},
		{"http://control.example:8443", "", "plain http is allowed only on loopback"},
		{"http://192.0.2.1:8443", testCAHash, "plain http is allowed only on loopback"},
		{"https://control.example:8443", "", "needs the control CA fingerprint"},
		{"https://control.example:8443", testCAHash[:63], "not a SHA-256 fingerprint"},
		{"https://control.example:8443", testCAHash + "00", "not a SHA-256 fingerprint"},
		{"https://control.example:8443", "sha256:" + testCAHash, "not a SHA-256 fingerprint"},
		{"ftp://127.0.0.1:8443", "", "scheme must be http or https"},
		{"127.0.0.1:8443", "", "want http(s)://host:port"},
		{"control.example", "", "want http(s)://host:port"},
		{"http://", "", "want http(s)://host:port"},
		{"http://127.0.0.1:8443/%zz", "", "want http(s)://host:port"},
	} {
		c, err := NewClient(tc.url, "tok", tc.caHash)
		if tc.want == "" {
			if err != nil {
				t.Errorf("NewClient(%q, %q): %v", tc.url, tc.caHash, err)
			} else if c.BaseURL() != strings.TrimRight(tc.url, "/") {
				t.Errorf("NewClient(%q): base URL %q", tc.url, c.BaseURL())
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewClient(%q, %q): %v, want an error saying %q", tc.url, tc.caHash, err, tc.want)
		}
	}
}

func TestIsLoopbackHost(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost": true, "127.0.0.1": true, "127.3.2.1": true, "::1": true, "::ffff:127.0.0.1": true,
		"LOCALHOST.example": false, "localhost.": false, "192.0.2.1": false, "2001:db8::1": false, "": false, "[::1]": false, "0.0.0.0": false,
	} {
		if got := IsLoopbackHost(host); got != want {
			t.Errorf("IsLoopbackHost(%q) = %v, want %v", host, got, want)
		}
	}
}

// TestClientDo: what the client sends (method, path under Prefix, bearer
// token only when it has one, JSON body), and how it reads answers: a
// JSON error's message, a plain-text error, an empty one, an error body
// too large to keep, and a success decoded into out.
func TestClientDo(t *testing.T) {
	type seen struct{ method, path, auth, ctype, body string }
	var last atomic.Pointer[seen]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		last.Store(&seen{r.Method, r.URL.RequestURI(), r.Header.Get("Authorization"), r.Header.Get("Content-Type"), string(b)})
		switch strings.TrimPrefix(r.URL.Path, Prefix) {
		case "/json-error":
			w.WriteHeader(http.StatusConflict)
			io.WriteString(w, `{"error": "user alice has devices"}`)
		case "/text-error":
			w.WriteHeader(http.StatusBadGateway)
			io.WriteString(w, "  upstream unavailable\n")
		case "/empty-error":
			w.WriteHeader(http.StatusServiceUnavailable)
		case "/other-json":
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"message": "not our shape"}`)
		case "/huge-error":
			w.WriteHeader(http.StatusInternalServerError)
			io.WriteString(w, strings.Repeat("x", 1<<20))
		case "/users":
			if r.Method == "POST" {
				w.WriteHeader(http.StatusCreated)
				io.WriteString(w, `{"name": "bob", "kind": "consumer"}`)
				return
			}
			io.WriteString(w, `[{"name": "alice", "kind": "consumer"}]`)
		case "/nothing":
			w.WriteHeader(http.StatusNoContent)
		case "/bad-json":
			io.WriteString(w, `[{"name": `)
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	c, err := NewClient(srv.URL, "mrd-admin-x", "")
	if err != nil {
		t.Fatal(err)
	}

	users, err := c.Users(ctx)
	if err != nil || len(users) != 1 || users[0].Name != "alice" || users[0].Kind != Consumer {
		t.Fatalf("users %+v, %v", users, err)
	}
	if s := last.Load(); *s != (seen{"GET", Prefix + "/users", "Bearer mrd-admin-x", "", ""}) {
		t.Fatalf("sent %+v", *s)
	}
	if u, err := c.CreateUser(ctx, CreateUserRequest{Name: "bob"}); err != nil || u.Name != "bob" {
		t.Fatalf("created %+v, %v", u, err)
	}
	s := last.Load()
	var sent CreateUserRequest
	if s.method != "POST" || s.ctype != "application/json" || json.Unmarshal([]byte(s.body), &sent) != nil || sent.Name != "bob" {
		t.Fatalf("sent %+v", *s)
	}
	if err := c.Do(ctx, "DELETE", "/nothing", nil, nil); err != nil {
		t.Fatal(err)
	}
	var out []User
	if err := c.Do(ctx, "GET", "/bad-json", nil, &out); err == nil {
		t.Fatal("a truncated JSON answer decoded without an error")
	}

	for path, want := range map[string]StatusError{
		"/json-error":  {409, "user alice has devices"},
		"/text-error":  {502, "upstream unavailable"},
		"/empty-error": {503, ""},
		"/other-json":  {400, `{"message": "not our shape"}`},
		"/huge-error":  {500, strings.Repeat("x", 64<<10)},
	} {
		err := c.Do(ctx, "GET", path, nil, &out)
		var se *StatusError
		if !errors.As(err, &se) || *se != want {
			t.Errorf("%s: got %v, want %d %.40q", path, err, want.Code, want.Message)
		}
	}
	if got := (&StatusError{Code: 404, Message: "no such user"}).Error(); got != "no such user (HTTP 404)" {
		t.Errorf("Error() = %q", got)
	}

	// Without a token no Authorization header is sent; SetToken swaps it.
	c.SetToken("")
	c.Users(ctx)
	if a := last.Load().auth; a != "" {
		t.Fatalf("sent Authorization %q without a token", a)
	}
	c.SetToken("mrd-gw-new")
	c.Users(ctx)
	if a := last.Load().auth; a != "Bearer mrd-gw-new" {
		t.Fatalf("sent Authorization %q after SetToken", a)
	}
}

func TestServerListIfChanged(t *testing.T) {
	var status atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if code := int(status.Load()); code != 0 {
			w.WriteHeader(code)
			return
		}
		if r.Header.Get("If-None-Match") == `"v1"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("ETag", `"v1"`)
		io.WriteString(w, `{"locations": [{"code": "in"}]}`)
	}))
	defer srv.Close()
	c, err := NewClient(srv.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	sl, etag, err := c.ServerListIfChanged(ctx, "")
	if err != nil || etag != `"v1"` || len(sl.Locations) != 1 || sl.Locations[0].Code != "in" {
		t.Fatalf("first fetch: %+v, %q, %v", sl, etag, err)
	}
	sl, etag, err = c.ServerListIfChanged(ctx, etag)
	if err != nil || etag != `"v1"` || len(sl.Locations) != 0 {
		t.Fatalf("unchanged: %+v, %q, %v", sl, etag, err)
	}
	status.Store(http.StatusServiceUnavailable)
	_, etag, err = c.ServerListIfChanged(ctx, `"v1"`)
	var se *StatusError
	if !errors.As(err, &se) || se.Code != 503 || etag != `"v1"` {
		t.Fatalf("a failed fetch: %q, %v", etag, err)
	}
}

// TestPinnedTLS: a client pinning a CA by its fingerprint talks only to a
// server whose leaf, valid now and for serving, chains to that CA, which
// the server sends along; everything else fails in the handshake with an
// error that says why, and no request reaches the server.
func TestPinnedTLS(t *testing.T) {
	ca, other := testpki.NewCA(t), testpki.NewCA(t)
	var reached atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		io.WriteString(w, `{"status": "ok"}`)
	})
	impostor := other.Valid(t)
	impostor.Certificate = append(impostor.Certificate, ca.Cert.Raw)
	leafOnly := ca.Valid(t)
	leafOnly.Certificate = leafOnly.Certificate[:1]
	caAsLeaf := ca.Valid(t)
	caAsLeaf.Certificate = [][]byte{ca.Cert.Raw, ca.Cert.Raw} // without the CA's key: the handshake cannot succeed
	for _, tc := range []struct {
		name string
		cert tls.Certificate
		pin  string
		want string // "": the request gets through
	}{
		{"the pinned CA", ca.Valid(t), ca.Fingerprint(), ""},
		{"the pinned CA, the pin in capitals", ca.Valid(t), strings.ToUpper(ca.Fingerprint()), ""},
		{"another CA", other.Valid(t), ca.Fingerprint(), "does not match the pinned fingerprint"},
		{"an expired leaf", ca.Leaf(t, time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour)), ca.Fingerprint(), "has expired"},
		{"a leaf not yet valid", ca.Leaf(t, time.Now().Add(time.Hour), time.Now().Add(48*time.Hour)), ca.Fingerprint(), "not yet valid"},
		{"an impostor sending the pinned CA certificate", impostor, ca.Fingerprint(), "unknown authority"},
		{"a leaf without its CA", leafOnly, ca.Fingerprint(), "does not match the pinned fingerprint"},
		{"the pinned CA certificate as a leaf", caAsLeaf, ca.Fingerprint(), "tls:"},
	} {
		url := testpki.Serve(t, tc.cert, h)
		c, err := NewClient(url, "mrd-admin-secret", tc.pin)
		if err != nil {
			t.Fatal(err)
		}
		before := reached.Load()
		_, err = c.Health(context.Background())
		n := reached.Load() - before
		if tc.want == "" {
			if err != nil || n != 1 {
				t.Errorf("%s: %v, %d requests reached the server", tc.name, err, n)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want a refusal saying %q", tc.name, err, tc.want)
		}
		if n != 0 {
			t.Errorf("%s: %d requests reached the server", tc.name, n)
		}
	}
}
