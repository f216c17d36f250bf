package control

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/gateway"
	"github.com/meridian-vpn/meridian/internal/testpki"
)

// issueLeaf has the control CA a issue a serving certificate for loopback
// valid from notBefore to notAfter, chained as Serve sends it.
func issueLeaf(t *testing.T, a *authority, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: "Meridian control"},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, &key.PublicKey, a.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der, a.der}, PrivateKey: key}
}

// overTLS serves the control server's API over TLS with cert on loopback
// (Serve itself serves plain HTTP there) and counts the requests that
// reach it.
func (ts *testServer) overTLS(t *testing.T, cert tls.Certificate) (url string, reached *atomic.Int64) {
	t.Helper()
	reached = new(atomic.Int64)
	h := ts.Handler()
	url = testpki.Serve(t, cert, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		h.ServeHTTP(w, r)
	}))
	return url, reached
}

// TestGatewayJoinRefusesUntrustedControl: a gateway joins only the control
// server whose CA its join token pins. Another control server, a token
// whose fingerprint was changed, a certificate past its expiry, and an
// impostor who sends the pinned CA's (public) certificate along with a
// leaf of its own are all refused in the TLS handshake, before the join
// token's secret is sent, with an error that says why; the right server
// with a valid certificate is joined.
func TestGatewayJoinRefusesUntrustedControl(t *testing.T) {
	ctx := context.Background()
	a := newTestServer(t, "10.200.0.0/24")
	b := newTestServer(t, "10.200.0.0/24")
	tok, err := a.admin.CreateJoinToken(ctx, api.JoinTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	parts, err := api.ParseJoinToken(tok.Token)
	if err != nil {
		t.Fatal(err)
	}
	if parts.CAHash != a.CAFingerprint() {
		t.Fatalf("the join token pins %s, the control CA is %s", parts.CAHash, a.CAFingerprint())
	}
	valid, err := a.ca.serverCert([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	otherValid, err := b.ca.serverCert([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	impostor := testpki.NewCA(t).Valid(t)
	impostor.Certificate = append(impostor.Certificate, a.ca.der)
	flipped := parts // one hex digit of the fingerprint changed
	flipped.CAHash = "0" + parts.CAHash[1:]
	if flipped.CAHash == parts.CAHash {
		flipped.CAHash = "1" + parts.CAHash[1:]
	}

	join := func(url, token string) error {
		gw, err := gateway.Start(ctx, gateway.Config{Control: url, JoinToken: token, StateDir: filepath.Join(t.TempDir(), "gw"), Name: "gw1",
			Endpoint: "192.0.2.1:51820", ListenPort: freeUDPPort(t), Logger: quietLog()})
		if err == nil {
			gw.Close()
		}
		return err
	}
	for _, tc := range []struct {
		name   string
		server *testServer
		cert   tls.Certificate
		token  string
		want   string
	}{
		{"another control server", b, otherValid, tok.Token, "does not match the pinned fingerprint"},
		{"a changed fingerprint in the token", a, valid, flipped.String(), "does not match the pinned fingerprint"},
		{"an expired certificate", a, issueLeaf(t, a.ca, time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour)), tok.Token, "has expired"},
		{"a certificate not yet valid", a, issueLeaf(t, a.ca, time.Now().Add(time.Hour), time.Now().Add(48*time.Hour)), tok.Token, "not yet valid: current time"},
		{"an impostor sending the pinned CA certificate", a, impostor, tok.Token, "unknown authority"},
	} {
		url, reached := tc.server.overTLS(t, tc.cert)
		err := join(url, tc.token)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: the gateway's start ended with %v, want a refusal saying %q", tc.name, err, tc.want)
		}
		if n := reached.Load(); n != 0 {
			t.Errorf("%s: %d requests reached the server: the join token's secret left the gateway", tc.name, n)
		}
	}
	for _, s := range []*testServer{a, b} {
		if gws, err := s.admin.Gateways(ctx); err != nil || len(gws) != 0 {
			t.Fatalf("gateways %v (%v), want none joined", gws, err)
		}
	}

	// The right server with a valid certificate is joined.
	url, reached := a.overTLS(t, valid)
	if err := join(url, tok.Token); err != nil {
		t.Fatalf("joining the right server: %v", err)
	}
	if reached.Load() == 0 {
		t.Fatal("the join never reached the server")
	}
	if gws, err := a.admin.Gateways(ctx); err != nil || len(gws) != 1 || gws[0].Name != "gw1" {
		t.Fatalf("gateways %v (%v), want gw1 joined", gws, err)
	}
}
