package control

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/internal/smtptest"
	"github.com/meridian-vpn/meridian/mail"
	"github.com/meridian-vpn/meridian/store"
	"github.com/meridian-vpn/meridian/wg"
)

// complianceServer is a control server with one gateway standing in India
// under cert-in-2022, so consumer accounts need subscriber records.
func complianceServer(t *testing.T, cfg Config) (*testServer, *smtptest.Server) {
	t.Helper()
	ts, smtp, _ := startComplianceServer(t, cfg)
	return ts, smtp
}

// startComplianceServer is complianceServer that also returns a function
// that stops the server (once; cleanup stops it otherwise).
func startComplianceServer(t *testing.T, cfg Config) (*testServer, *smtptest.Server, func()) {
	t.Helper()
	smtp := smtptest.Start(t)
	cfg.DataDir = t.TempDir()
	cfg.IPv4Pool = netip.MustParsePrefix("10.200.0.0/24")
	cfg.IPv6Pool = netip.MustParsePrefix("2001:db8:200::/120")
	cfg.Mail = &mail.Config{Server: smtp.Addr, From: "noreply@vpn.example"}
	ts, stop := startTestServer(t, cfg)
	t.Cleanup(stop)
	admin := ts.admin
	ctx := context.Background()
	jt, _ := admin.CreateJoinToken(ctx, api.JoinTokenRequest{})
	jc, _ := api.NewClient(ts.url, jt.Token, "")
	if _, err := jc.Join(ctx, api.JoinRequest{Name: "in1", PublicKey: *newKey(t), Endpoint: "192.0.2.1:51820", Mode: api.TUN}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.SetJurisdiction(ctx, api.Jurisdiction{Country: "IN", Profile: "cert-in-2022", Stance: "comply"}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.SetPlace(ctx, "in1", api.Place{PhysicalCountry: "IN", Ownership: api.Rented}); err != nil {
		t.Fatal(err)
	}
	return ts, smtp, stop
}

func details() *api.SubscriberDetails {
	return &api.SubscriberDetails{Name: "Asha Verma", Email: "asha@example.in", Purpose: "personal privacy",
		Address: "12 MG Road, Bengaluru 560001", Phones: []string{"+91 80 5550 0100"}, Ownership: api.Individual}
}

func (ts *testServer) token(t *testing.T, role string) *api.Client {
	t.Helper()
	tok, err := ts.CreateToken(context.Background(), role+"-officer", role)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := api.NewClient(ts.url, tok, "")
	return c
}

func TestSubscriberRecordsFollowDuties(t *testing.T) {
	ts, _ := complianceServer(t, Config{})
	ctx := context.Background()

	// A consumer on an Indian gateway needs a record: refused without it,
	// with the list of what is missing, and nothing is left behind.
	_, err := ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "asha"})
	wantStatus(t, err, 400, "missing: subscriber.name, subscriber.email")
	partial := details()
	partial.Phones, partial.Purpose = nil, ""
	_, err = ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "asha", Subscriber: partial})
	wantStatus(t, err, 400, "subscriber.purpose, subscriber.phones")
	bad := details()
	bad.Email = "asha at example"
	_, err = ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "asha", Subscriber: bad})
	wantStatus(t, err, 400, "subscriber.email is not a valid email address")
	if strings.Contains(err.Error(), "asha at example") {
		t.Fatal("error message echoes personal data")
	}
	if users, _ := ts.admin.Users(ctx); len(users) != 0 {
		t.Fatalf("refused sign-ups left accounts: %v", users)
	}
	if _, err := ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "asha", Subscriber: details()}); err != nil {
		t.Fatal(err)
	}
	// An enterprise tenant owes no subscriber record: details are not kept.
	if _, err := ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "staff1", Kind: api.Enterprise, Subscriber: details()}); err != nil {
		t.Fatal(err)
	}
	if seqs, _ := ts.db.SubscriberSeqs(ctx, "staff1"); len(seqs) != 0 {
		t.Fatal("an enterprise account got a subscriber record")
	}

	// Personal data is sealed at rest: not in the database file nor its WAL.
	for _, f := range []string{"meridian.db", "meridian.db-wal", "meridian-sessions.db", "meridian-sessions.db-wal"} {
		b, _ := os.ReadFile(filepath.Join(ts.cfg.DataDir, f))
		for _, secret := range []string{"Asha Verma", "asha@example.in", "MG Road", "5550 0100"} {
			if bytes.Contains(b, []byte(secret)) {
				t.Errorf("%s holds %q in clear", f, secret)
			}
		}
	}

	// Reading it is for compliance officers, under a case reference.
	wantStatus(t, ts.admin.Do(ctx, "GET", "/compliance/subscribers/asha?case=C-1", nil, nil), 403, "role")
	officer := ts.token(t, api.RoleCompliance)
	wantStatus(t, officer.Do(ctx, "GET", "/compliance/subscribers/asha", nil, nil), 400, "case reference is required")
	var got struct {
		Case   string               `json:"case"`
		Record api.SubscriberRecord `json:"record"`
	}
	if err := officer.Do(ctx, "GET", "/compliance/subscribers/asha?case=CERT-IN/2026/117", nil, &got); err != nil {
		t.Fatal(err)
	}
	r := got.Record
	if r.Name != "Asha Verma" || r.Email != "asha@example.in" || r.Ownership != api.Individual || r.RegistrationIP != netip.MustParseAddr("127.0.0.1") || r.RegisteredAt.IsZero() || r.EmailValidation.State != api.Unvalidated {
		t.Fatalf("record: %+v", r)
	}
	var accesses int
	ts.db.QueryRow(`SELECT count(*) FROM ledger_entries WHERE chain = 'access'`).Scan(&accesses)
	if accesses != 1 {
		t.Fatalf("access chain holds %d reads, want 1", accesses)
	}

	// An operator validates the name with a document reference.
	if err := ts.admin.Do(ctx, "POST", "/subscribers/asha/validate", api.ValidateRequest{Field: "name", State: api.Validated, Method: "document", Evidence: "KYC-2026-0042"}, nil); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, ts.admin.Do(ctx, "POST", "/subscribers/asha/validate", api.ValidateRequest{Field: "name", State: api.Validated, Method: "document"}, nil), 400, "evidence")
	officer.Do(ctx, "GET", "/compliance/subscribers/asha?case=C-2", nil, &got)
	if got.Record.NameValidation.State != api.Validated || got.Record.NameValidation.Evidence != "KYC-2026-0042" {
		t.Fatalf("name validation: %+v", got.Record.NameValidation)
	}

	// A record is kept, not deleted: cancel ends the period of hire.
	wantStatus(t, ts.admin.DeleteUser(ctx, "asha"), 409, "cancel the account instead")
	if err := ts.admin.Do(ctx, "POST", "/users/asha/cancel", nil, nil); err != nil {
		t.Fatal(err)
	}
	officer.Do(ctx, "GET", "/compliance/subscribers/asha?case=C-3", nil, &got)
	if got.Record.CancelledAt.IsZero() {
		t.Fatal("cancellation not in the record")
	}

	var rep struct {
		Problems []any `json:"problems"`
	}
	if err := ts.token(t, api.RoleAuditor).Do(ctx, "GET", "/compliance/verify", nil, &rep); err != nil || len(rep.Problems) != 0 {
		t.Fatalf("verify: %+v %v", rep, err)
	}
}

func TestSignupWithEmailCode(t *testing.T) {
	ts, smtp := complianceServer(t, Config{Signup: true, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	ctx := context.Background()
	public, _ := api.NewClient(ts.url, "", "")

	// Sign-up through a trusted proxy: the registration IP is the one the
	// proxy saw.
	body, _ := json.Marshal(api.SignupRequest{User: "ravi", Subscriber: details()})
	req, _ := http.NewRequest("POST", ts.url+api.Prefix+"/signup", bytes.NewReader(body))
	req.Header.Set("X-Forwarded-For", "198.51.100.23")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var sr api.SignupResponse
	json.NewDecoder(resp.Body).Decode(&sr)
	resp.Body.Close()
	if resp.StatusCode != 201 || !sr.RecordKept || !sr.EmailCodeSent {
		t.Fatalf("signup: %d %+v", resp.StatusCode, sr)
	}
	msgs := smtp.Wait(t, 1)
	if msgs[0].Header.Get("To") != "<asha@example.in>" {
		t.Fatalf("code sent to %q", msgs[0].Header.Get("To"))
	}
	text, _ := io.ReadAll(msgs[0].Body)
	code := regexp.MustCompile(`\b\d{6}\b`).FindString(string(text))
	if code == "" {
		t.Fatalf("no code in the message: %q", text)
	}
	wrong := "000000"
	if code == wrong {
		wrong = "111111"
	}
	wantStatus(t, public.Do(ctx, "POST", "/signup/verify-email", api.VerifyEmailRequest{User: "ravi", Code: wrong}, nil), 409, "wrong email code")
	if err := public.Do(ctx, "POST", "/signup/verify-email", api.VerifyEmailRequest{User: "ravi", Code: code}, nil); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, public.Do(ctx, "POST", "/signup/verify-email", api.VerifyEmailRequest{User: "ravi", Code: code}, nil), 409, "no email code is pending")

	var got struct {
		Record api.SubscriberRecord `json:"record"`
	}
	if err := ts.token(t, api.RoleCompliance).Do(ctx, "GET", "/compliance/subscribers/ravi?case=C-9", nil, &got); err != nil {
		t.Fatal(err)
	}
	if got.Record.RegistrationIP != netip.MustParseAddr("198.51.100.23") || got.Record.EmailValidation.State != api.Validated || got.Record.EmailValidation.Method != "email-code" {
		t.Fatalf("record after sign-up: %+v", got.Record)
	}
	// An untrusted client cannot set its registration IP.
	ts.cfg.TrustedProxies = nil
	body, _ = json.Marshal(api.SignupRequest{User: "meera", Subscriber: details()})
	req, _ = http.NewRequest("POST", ts.url+api.Prefix+"/signup", bytes.NewReader(body))
	req.Header.Set("X-Forwarded-For", "203.0.113.99")
	resp, _ = http.DefaultClient.Do(req)
	resp.Body.Close()
	ts.token(t, api.RoleCompliance).Do(ctx, "GET", "/compliance/subscribers/meera?case=C-10", nil, &got)
	if got.Record.RegistrationIP != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("untrusted X-Forwarded-For was believed: %s", got.Record.RegistrationIP)
	}
}

func TestSignupDisabledByDefault(t *testing.T) {
	ts := newTestServer(t, "10.200.0.0/24")
	public, _ := api.NewClient(ts.url, "", "")
	wantStatus(t, public.Do(context.Background(), "POST", "/signup", api.SignupRequest{User: "x"}, nil), 404, "not enabled")
}

func TestRetentionPurge(t *testing.T) {
	ts, _ := complianceServer(t, Config{})
	ctx := context.Background()
	for _, name := range []string{"gone", "active", "recent"} {
		if _, err := ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: name, Subscriber: details()}); err != nil {
			t.Fatal(err)
		}
		if _, err := ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: name, Name: "phone", PublicKey: newKey(t)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"gone", "recent"} {
		if err := ts.admin.Do(ctx, "POST", "/users/"+name+"/cancel", nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	// "recent" was cancelled two years later than "gone".
	ts.db.Exec(`UPDATE users SET cancelled_at = cancelled_at + ? WHERE name = 'recent'`, 2*365*24*3600)
	goneSeqs, _ := ts.db.SubscriberSeqs(ctx, "gone")
	// Session records of the accounts, as a gateway would have sent them.
	// Each is a "session" entry and a "session-end" entry in the ledger.
	for i, name := range []string{"gone", "active"} {
		var pub string
		ts.db.QueryRow(`SELECT d.public_key FROM devices d JOIN users u ON u.id = d.user_id WHERE u.name = ?`, name).Scan(&pub)
		key, err := wg.ParseKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		rec := api.SessionRecord{ID: strings.Repeat(string(rune('a'+i)), 32), PublicKey: key,
			Endpoint: netip.MustParseAddrPort("198.51.100.9:40000"), ExitIPv4: netip.MustParseAddr("203.0.113.1"),
			PortLo: 1024, PortHi: 1279, Start: time.Unix(0, 1)}
		ended := rec
		ended.End = rec.Start.Add(time.Hour)
		for _, r := range []api.SessionRecord{rec, ended} {
			if _, err := ts.saveSessions(ctx, store.GatewaySessions{Gateway: "in1", Records: []api.SessionRecord{r}, Keep: func(store.SessionOwner) bool { return true }}); err != nil {
				t.Fatal(err)
			}
		}
	}

	// Five years and a day after the cancellation (fake clock).
	res, err := ts.purgeExpired(ctx, time.Now().AddDate(5, 0, 1))
	if err != nil {
		t.Fatal(err)
	}
	if res.Accounts != 1 || res.Entries != len(goneSeqs)+2 || res.Years != 5 {
		t.Fatalf("purge: %+v", res)
	}
	users, _ := ts.admin.Users(ctx)
	var names []string
	for _, u := range users {
		names = append(names, u.Name)
	}
	if strings.Join(names, ",") != "active,recent" {
		t.Fatalf("accounts after purge: %v", names)
	}
	var left []string
	rows, _ := ts.db.SessionIndex().Query(`SELECT user_name FROM sessions ORDER BY user_name`)
	for rows.Next() {
		var u string
		rows.Scan(&u)
		left = append(left, u)
	}
	rows.Close()
	if strings.Join(left, ",") != "active" {
		t.Fatalf("session records after the purge belong to %v, want only active's", left)
	}
	// Nor does a copy of its rows stay in the index's files (secure_delete
	// overwrites them in the database, the log is cut).
	for _, f := range []string{"meridian-sessions.db", "meridian-sessions.db-wal"} {
		b, _ := os.ReadFile(filepath.Join(ts.cfg.DataDir, f))
		if bytes.Contains(b, []byte(strings.Repeat("a", 32))) {
			t.Errorf("%s still holds the purged session's row", f)
		}
	}
	var sealedLeft, endsLeft int
	ts.db.QueryRow(`SELECT count(*) FROM ledger_entries WHERE chain = 'records' AND kind IN ('session', 'session-end') AND body IS NOT NULL`).Scan(&sealedLeft)
	ts.db.SessionIndex().QueryRow(`SELECT count(*) FROM sessions WHERE end_seq IS NOT NULL`).Scan(&endsLeft)
	if sealedLeft != 2 || endsLeft != 1 {
		t.Fatalf("after the purge %d session entries keep their bodies and %d sessions know their end entry, want active's 2 and 1", sealedLeft, endsLeft)
	}
	officer := ts.token(t, api.RoleCompliance)
	wantStatus(t, officer.Do(ctx, "GET", "/compliance/subscribers/gone?case=C-1", nil, nil), 404, "no subscriber record")
	if err := officer.Do(ctx, "GET", "/compliance/subscribers/recent?case=C-1", nil, nil); err != nil {
		t.Fatalf("recently cancelled record purged: %v", err)
	}
	// The purge is a ledger entry of counts, and the chain still verifies.
	var rep struct {
		Problems []any `json:"problems"`
	}
	if err := officer.Do(ctx, "GET", "/compliance/verify", nil, &rep); err != nil || len(rep.Problems) != 0 {
		t.Fatalf("verify after purge: %+v %v", rep, err)
	}
	var purges int
	ts.db.QueryRow(`SELECT count(*) FROM ledger_entries WHERE kind = 'purge'`).Scan(&purges)
	if purges != 1 {
		t.Fatalf("purge entries: %d", purges)
	}
	// Running again purges nothing more.
	if res, err := ts.purgeExpired(ctx, time.Now().AddDate(5, 0, 1)); err != nil || res.Accounts != 0 {
		t.Fatalf("second purge: %+v %v", res, err)
	}
}

func TestRotateKeyThroughAPI(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "keys")
	os.WriteFile(keyFile, []byte("k1 "+strings.Repeat("A", 43)+"=\n"), 0o600)
	start := func() (*Server, *api.Client, *api.Client) {
		s, err := New(ctx, Config{DataDir: dir, Keys: keyFile, CollectAll: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		hs := httptest.NewServer(s.Handler())
		t.Cleanup(hs.Close)
		a, _ := s.CreateAdminToken(ctx, "ops")
		o, _ := s.CreateToken(ctx, "officer", api.RoleCompliance)
		admin, _ := api.NewClient(hs.URL, a, "")
		officer, _ := api.NewClient(hs.URL, o, "")
		return s, admin, officer
	}
	s1, admin, _ := start()
	if _, err := admin.CreateUser(ctx, api.CreateUserRequest{Name: "k", Subscriber: details()}); err != nil {
		t.Fatal(err)
	}
	s1.Close()
	// A new key becomes the active one (last line), the server restarts,
	// and rotate-key re-seals everything under it.
	os.WriteFile(keyFile, []byte("k1 "+strings.Repeat("A", 43)+"=\nk2 "+strings.Repeat("B", 43)+"=\n"), 0o600)
	s2, admin, _ := start()
	var out struct {
		Resealed int `json:"resealed"`
	}
	if err := admin.Do(ctx, "POST", "/compliance/rotate-key", nil, &out); err != nil || out.Resealed == 0 {
		t.Fatalf("rotate-key: %+v %v", out, err)
	}
	s2.Close()
	// The old key is gone from the file: records still open and verify.
	os.WriteFile(keyFile, []byte("k2 "+strings.Repeat("B", 43)+"=\n"), 0o600)
	s3, _, officer := start()
	defer s3.Close()
	var got struct {
		Record api.SubscriberRecord `json:"record"`
	}
	if err := officer.Do(ctx, "GET", "/compliance/subscribers/k?case=R-1", nil, &got); err != nil || got.Record.Name != "Asha Verma" {
		t.Fatalf("after rotation: %+v %v", got.Record, err)
	}
}

func TestExportTwoPersonRule(t *testing.T) {
	ts, _ := complianceServer(t, Config{TwoPersonRule: true})
	ctx := context.Background()
	if _, err := ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "asha", Subscriber: details()}); err != nil {
		t.Fatal(err)
	}
	ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "asha", Name: "phone", PublicKey: newKey(t)})
	first, second := ts.token(t, api.RoleCompliance), ts.token(t, api.RoleCompliance)

	wantStatus(t, ts.admin.Do(ctx, "POST", "/compliance/exports", api.ExportRequest{Case: "C", Subscriber: "asha"}, nil), 403, "role")
	wantStatus(t, first.Do(ctx, "POST", "/compliance/exports", api.ExportRequest{Subscriber: "asha"}, nil), 400, "case reference")
	var e api.Export
	if err := first.Do(ctx, "POST", "/compliance/exports", api.ExportRequest{Case: "CERT-IN/2026/12", Subscriber: "asha"}, &e); err != nil {
		t.Fatal(err)
	}
	if e.ApprovedBy != "" {
		t.Fatal("export approved without a second officer")
	}
	wantStatus(t, first.Do(ctx, "GET", "/compliance/exports/"+e.ID, nil, nil), 409, "waits for a second compliance officer")
	wantStatus(t, first.Do(ctx, "POST", "/compliance/exports/"+e.ID+"/approve", nil, nil), 403, "second compliance officer")
	if err := second.Do(ctx, "POST", "/compliance/exports/"+e.ID+"/approve", nil, nil); err != nil {
		t.Fatal(err)
	}
	var b api.Bundle
	if err := first.Do(ctx, "GET", "/compliance/exports/"+e.ID, nil, &b); err != nil {
		t.Fatal(err)
	}
	m, err := b.Verify()
	if err != nil {
		t.Fatal(err)
	}
	if m.Case != "CERT-IN/2026/12" || m.RequestedBy == m.ApprovedBy || len(m.Files) != 3 {
		t.Fatalf("manifest: %+v", m)
	}
	if !strings.Contains(string(b.Files["subscriber.csv"]), "Asha Verma") || !strings.Contains(string(b.Files["devices.csv"]), "phone") {
		t.Fatalf("bundle files: %s / %s", b.Files["subscriber.csv"], b.Files["devices.csv"])
	}
	// Any change to a file or to the manifest breaks the bundle.
	b.Files["subscriber.csv"] = append([]byte{}, b.Files["subscriber.csv"]...)
	b.Files["subscriber.csv"][0] ^= 1
	if _, err := b.Verify(); err == nil {
		t.Fatal("a modified file verified")
	}
	b.Files["subscriber.csv"][0] ^= 1
	b.Manifest = bytes.Replace(b.Manifest, []byte("CERT-IN/2026/12"), []byte("CERT-IN/2026/13"), 1)
	if _, err := b.Verify(); err == nil {
		t.Fatal("a modified manifest verified")
	}
}
