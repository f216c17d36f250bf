package main

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/control"
	"github.com/meridian-vpn/meridian/internal/testpki"
)

// colons writes a hex fingerprint as openssl prints it: AB:CD:...
func colons(hex string) string {
	var parts []string
	for i := 0; i < len(hex); i += 2 {
		parts = append(parts, strings.ToUpper(hex[i:i+2]))
	}
	return strings.Join(parts, ":")
}

// TestAdminCommandsPinTheControlCA: an admin command talks to an https
// control server only if its certificate chains to the CA it pins (from
// --ca-sha256, $MERIDIAN_CA_SHA256, or DATA/control/ca.pem); another CA,
// an expired certificate, or an impostor who sends the pinned CA's
// certificate along with a leaf of its own are refused in the handshake,
// with an error that says why, before the admin token is sent.
func TestAdminCommandsPinTheControlCA(t *testing.T) {
	for _, v := range []string{"MERIDIAN_SERVER", "MERIDIAN_TOKEN", "MERIDIAN_CA_SHA256"} {
		t.Setenv(v, "")
	}
	ctx := context.Background()
	s, err := control.New(ctx, control.Config{DataDir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	token, err := s.CreateAdminToken(ctx, "ops")
	if err != nil {
		t.Fatal(err)
	}
	var reached atomic.Int64
	h := s.Handler()
	serve := func(cert tls.Certificate) string {
		return testpki.Serve(t, cert, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			reached.Add(1)
			h.ServeHTTP(w, r)
		}))
	}
	ca, other := testpki.NewCA(t), testpki.NewCA(t)
	good := serve(ca.Valid(t))
	expired := serve(ca.Leaf(t, time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour)))
	impostorCert := other.Valid(t)
	impostorCert.Certificate = append(impostorCert.Certificate, ca.Cert.Raw)
	impostor := serve(impostorCert)

	dataWith := func(c *testpki.CA) string {
		dir := t.TempDir()
		if c != nil {
			os.MkdirAll(filepath.Join(dir, "control"), 0o700)
			if err := os.WriteFile(filepath.Join(dir, "control", "ca.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Cert.Raw}), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	for _, tc := range []struct {
		name   string
		server string
		args   []string
		env    string // MERIDIAN_CA_SHA256
		data   *testpki.CA
		want   string // "": the command works
	}{
		{"the pinned CA", good, []string{"--ca-sha256", ca.Fingerprint()}, "", nil, ""},
		{"the pinned CA in capitals", good, []string{"--ca-sha256", strings.ToUpper(ca.Fingerprint())}, "", nil, ""},
		{"the pinned CA from the environment", good, nil, ca.Fingerprint(), nil, ""},
		{"the pinned CA from the data directory", good, nil, "", ca, ""},
		{"another CA's fingerprint", good, []string{"--ca-sha256", other.Fingerprint()}, "", nil, "does not match the pinned fingerprint"},
		{"another CA's fingerprint from the environment", good, nil, other.Fingerprint(), nil, "does not match the pinned fingerprint"},
		{"another CA in the data directory", good, nil, "", other, "does not match the pinned fingerprint"},
		{"--ca-sha256 over the environment", good, []string{"--ca-sha256", other.Fingerprint()}, ca.Fingerprint(), nil, "does not match the pinned fingerprint"},
		{"an expired certificate", expired, []string{"--ca-sha256", ca.Fingerprint()}, "", nil, "has expired"},
		{"an impostor sending the pinned CA certificate", impostor, []string{"--ca-sha256", ca.Fingerprint()}, "", nil, "unknown authority"},
		{"no fingerprint at all", good, nil, "", nil, "needs the control CA fingerprint"},
		// A mistyped fingerprint is named as such, not blamed on the server.
		{"a truncated fingerprint", good, []string{"--ca-sha256", ca.Fingerprint()[:63]}, "", nil, "not a SHA-256 fingerprint"},
		{"a fingerprint with colons", good, []string{"--ca-sha256", colons(ca.Fingerprint())}, "", nil, "not a SHA-256 fingerprint"},
		{"a fingerprint with a typo from the environment", good, nil, "g" + ca.Fingerprint()[1:], nil, "not a SHA-256 fingerprint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("MERIDIAN_CA_SHA256", tc.env)
			before := reached.Load()
			args := append([]string{"--server", tc.server, "--token", token, "--data", dataWith(tc.data)}, tc.args...)
			err := runUserList(ctx, args)
			n := reached.Load() - before
			if tc.want == "" {
				if err != nil || n == 0 {
					t.Fatalf("user list: %v, %d requests reached the server", err, n)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("user list: %v, want a refusal saying %q", err, tc.want)
			}
			if n != 0 {
				t.Fatalf("%d requests reached the server: the admin token left the client", n)
			}
		})
	}
}
