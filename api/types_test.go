package api

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/wg"
)

// signedBundle makes a bundle of files with a manifest listing names (the
// files' names when nil), signed by a fresh key.
func signedBundle(t *testing.T, files map[string][]byte, names []string) Bundle {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if names == nil {
		for n := range files {
			names = append(names, n)
		}
	}
	m := Manifest{Case: "CASE-1", Export: "e1", CreatedAt: time.Now().UTC(), RequestedBy: "officer", ApprovedBy: "officer"}
	for _, n := range names {
		sum := sha256.Sum256(files[n])
		m.Files = append(m.Files, ManifestFile{Name: n, SHA256: hex.EncodeToString(sum[:]), Bytes: len(files[n])})
	}
	mb, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return Bundle{Files: files, Manifest: mb, Signature: ed25519.Sign(priv, mb), PublicKey: pub}
}

// TestBundleVerify: a bundle verifies only as signed: a changed, missing or
// extra file, a changed manifest, signature or key are each caught. A
// bundle also survives its JSON round trip (files as base64).
func TestBundleVerify(t *testing.T) {
	files := func() map[string][]byte {
		return map[string][]byte{"subscriber.json": []byte(`{"name": "A"}`), "sessions.jsonl": []byte("{}\n{}\n")}
	}
	good := signedBundle(t, files(), nil)
	var rt Bundle
	b, _ := json.Marshal(good)
	if err := json.Unmarshal(b, &rt); err != nil {
		t.Fatal(err)
	}
	m, err := rt.Verify()
	if err != nil || m.Case != "CASE-1" || len(m.Files) != 2 {
		t.Fatalf("a good bundle after a JSON round trip: %+v, %v", m, err)
	}
	for _, tc := range []struct {
		name   string
		change func(b *Bundle)
		want   string
	}{
		{"a changed file", func(b *Bundle) { b.Files["subscriber.json"] = []byte(`{"name": "B"}`) }, "subscriber.json does not match"},
		{"a file cut short", func(b *Bundle) { b.Files["sessions.jsonl"] = []byte("{}\n") }, "sessions.jsonl does not match"},
		{"a missing file", func(b *Bundle) { delete(b.Files, "sessions.jsonl") }, "1 files, but the manifest lists 2"},
		{"an extra file", func(b *Bundle) { b.Files["more.json"] = []byte("{}") }, "3 files, but the manifest lists 2"},
		{"a renamed file", func(b *Bundle) {
			b.Files["other.json"] = b.Files["subscriber.json"]
			delete(b.Files, "subscriber.json")
		}, "subscriber.json does not match"},
		{"a changed manifest", func(b *Bundle) { b.Manifest = bytes.Replace(b.Manifest, []byte("CASE-1"), []byte("CASE-2"), 1) }, "signature does not verify"},
		{"a changed signature", func(b *Bundle) { b.Signature[0] ^= 1 }, "signature does not verify"},
		{"another key", func(b *Bundle) { b.PublicKey = signedBundle(t, files(), nil).PublicKey }, "signature does not verify"},
		{"a short key", func(b *Bundle) { b.PublicKey = b.PublicKey[:31] }, "signature does not verify"},
		{"no signature", func(b *Bundle) { b.Signature = nil }, "signature does not verify"},
	} {
		b := signedBundle(t, files(), nil)
		tc.change(&b)
		if _, err := b.Verify(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
	// A manifest that lists a file twice does not vouch for a file it does
	// not list, though the counts agree.
	dup := signedBundle(t, files(), []string{"subscriber.json", "subscriber.json"})
	if _, err := dup.Verify(); err == nil || !strings.Contains(err.Error(), "lists subscriber.json twice") {
		t.Errorf("a manifest listing one file twice and another not at all: %v, want an error saying so", err)
	}
}

func TestSessionRecordValidate(t *testing.T) {
	key, err := wg.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	good := func() SessionRecord {
		return SessionRecord{ID: strings.Repeat("0a", 16), PublicKey: key.Public(), TunnelIPv4: netip.MustParseAddr("10.200.0.2"),
			Endpoint: netip.MustParseAddrPort("198.51.100.7:40000"), ExitIPv4: netip.MustParseAddr("203.0.113.1"), PortLo: 1024, PortHi: 2047, Start: start}
	}
	if err := good().Validate(); err != nil {
		t.Fatalf("a good record: %v", err)
	}
	for _, tc := range []struct {
		name   string
		change func(r *SessionRecord)
		want   string // "": valid
	}{
		{"IPv6 only", func(r *SessionRecord) {
			r.TunnelIPv4, r.ExitIPv4 = netip.Addr{}, netip.Addr{}
			r.TunnelIPv6, r.ExitIPv6 = netip.MustParseAddr("fd6d::2"), netip.MustParseAddr("2001:db8::1")
		}, ""},
		{"closed", func(r *SessionRecord) { r.End = start.Add(time.Hour) }, ""},
		{"closed at its start", func(r *SessionRecord) { r.End = start }, ""},
		{"a sealed endpoint only", func(r *SessionRecord) { r.SealedEndpoint = "x" }, ""},
		{"an id in capitals", func(r *SessionRecord) { r.ID = strings.ToUpper(r.ID) }, "id must be"},
		{"a short id", func(r *SessionRecord) { r.ID = r.ID[:31] }, "id must be"},
		{"no key", func(r *SessionRecord) { r.PublicKey = wg.Key{} }, "public_key is missing"},
		{"no tunnel address", func(r *SessionRecord) { r.TunnelIPv4 = netip.Addr{} }, "a tunnel address is required"},
		{"an IPv6 tunnel address as IPv4", func(r *SessionRecord) { r.TunnelIPv4 = netip.MustParseAddr("fd6d::2") }, "wrong family"},
		{"an IPv4-mapped tunnel address as IPv6", func(r *SessionRecord) { r.TunnelIPv6 = netip.MustParseAddr("::ffff:10.200.0.2") }, "wrong family"},
		{"no endpoint", func(r *SessionRecord) { r.Endpoint = netip.AddrPort{} }, "endpoint must be"},
		{"an endpoint without a port", func(r *SessionRecord) { r.Endpoint = netip.AddrPortFrom(r.Endpoint.Addr(), 0) }, "endpoint must be"},
		{"no exit address", func(r *SessionRecord) { r.ExitIPv4 = netip.Addr{} }, "an exit address is required"},
		{"an IPv4 exit address as IPv6", func(r *SessionRecord) { r.ExitIPv6 = netip.MustParseAddr("203.0.113.2") }, "wrong family"},
		{"port 0", func(r *SessionRecord) { r.PortLo = 0 }, "range of ports"},
		{"ports reversed", func(r *SessionRecord) { r.PortLo, r.PortHi = 2047, 1024 }, "range of ports"},
		{"no start", func(r *SessionRecord) { r.Start = time.Time{} }, "start is missing"},
		{"an end before the start", func(r *SessionRecord) { r.End = start.Add(-time.Second) }, "end is before start"},
	} {
		r := good()
		tc.change(&r)
		err := r.Validate()
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
		// The errors name fields, never values (personal data).
		if err != nil && (strings.Contains(err.Error(), "198.51.100") || strings.Contains(err.Error(), "10.200") || strings.Contains(err.Error(), "0a0a")) {
			t.Errorf("%s: the error %q shows a value", tc.name, err)
		}
	}
}

// TestDeviceConfig: a device's config is a full tunnel to the gateway
// with the device's own addresses and the server's DNS and MTU.
func TestDeviceConfig(t *testing.T) {
	priv, err := wg.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	gw, err := wg.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	d := Device{IPv4: netip.MustParseAddr("10.200.0.9"), IPv6: netip.MustParseAddr("fd6d:7269:6469::9")}
	tun := TunnelInfo{PublicKey: gw.Public(), Endpoint: "gw.example:51820", DNS: []netip.Addr{netip.MustParseAddr("10.200.0.1")}, PersistentKeepalive: 25, MTU: 1380}
	for _, c := range []*wg.Config{CreateDeviceResponse{Device: d, Tunnel: tun}.Config(priv), DeviceConfigResponse{Device: d, Tunnel: tun}.Config(priv)} {
		if c.PrivateKey != priv || len(c.Addresses) != 2 || c.Addresses[0] != netip.MustParsePrefix("10.200.0.9/32") || c.Addresses[1] != netip.MustParsePrefix("fd6d:7269:6469::9/128") ||
			len(c.DNS) != 1 || c.MTU != 1380 || len(c.Peers) != 1 {
			t.Fatalf("config %+v", c)
		}
		p := c.Peers[0]
		if p.PublicKey != gw.Public() || p.Endpoint != "gw.example:51820" || p.PersistentKeepalive != 25 ||
			len(p.AllowedIPs) != 2 || p.AllowedIPs[0].Bits() != 0 || p.AllowedIPs[1].Bits() != 0 {
			t.Fatalf("peer %+v", p)
		}
	}
}

// TestExportICTLog: the export is counted in lines and checked against the
// SHA-256 the server sends in the trailer; a cut-off export is an error,
// as is a refusal, whose message comes through.
func TestExportICTLog(t *testing.T) {
	body := "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n"
	sum := sha256.Sum256([]byte(body))
	var trailer, status string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if status != "" {
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"error": "`+status+`"}`)
			return
		}
		if r.URL.Query().Get("from") != "2026-01-01" || r.URL.Query().Get("to") != "2026-01-31" || r.Header.Get("Authorization") != "Bearer mrd-admin-x" {
			w.WriteHeader(http.StatusTeapot)
			return
		}
		w.Header().Set("Trailer", ExportHeader)
		io.WriteString(w, body)
		w.Header().Set(ExportHeader, trailer)
	}))
	defer srv.Close()
	c, err := NewClient(srv.URL, "mrd-admin-x", "")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	trailer = hex.EncodeToString(sum[:])
	var out bytes.Buffer
	n, got, err := c.ExportICTLog(ctx, "2026-01-01", "2026-01-31", &out)
	if err != nil || n != 3 || got != trailer || out.String() != body {
		t.Fatalf("export: %d lines, %q, %v; wrote %q", n, got, err, out.String())
	}
	trailer = strings.Repeat("0", 64)
	if _, _, err := c.ExportICTLog(ctx, "2026-01-01", "2026-01-31", io.Discard); err == nil || !strings.Contains(err.Error(), "incomplete") {
		t.Fatalf("an export whose SHA-256 differs: %v", err)
	}
	trailer = ""
	if _, _, err := c.ExportICTLog(ctx, "2026-01-01", "2026-01-31", io.Discard); err == nil || !strings.Contains(err.Error(), "incomplete") {
		t.Fatalf("an export without its trailer: %v", err)
	}
	status = "from must be a date"
	_, _, err = c.ExportICTLog(ctx, "2026-01-01", "2026-01-31", io.Discard)
	var se *StatusError
	if !errors.As(err, &se) || se.Code != 400 || se.Message != status {
		t.Fatalf("a refused export: %v", err)
	}
}
