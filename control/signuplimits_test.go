package control

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
)

var loopbackProxy = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}

// signupAs posts a sign-up through the test's trusted proxy (loopback) for
// the client at from; it returns the status, Retry-After and the error text.
func signupAs(t *testing.T, ts *testServer, from, user, email string) (int, string, string) {
	t.Helper()
	d := details()
	d.Email = email
	body, _ := json.Marshal(api.SignupRequest{User: user, Subscriber: d})
	req, _ := http.NewRequest("POST", ts.url+api.Prefix+"/signup", bytes.NewReader(body))
	req.Header.Set("X-Forwarded-For", from)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e api.Error
	b, _ := io.ReadAll(resp.Body)
	json.Unmarshal(b, &e)
	return resp.StatusCode, resp.Header.Get("Retry-After"), e.Error
}

// want429 checks a refusal: 429, a Retry-After in whole seconds, and a
// message that names no personal data.
func want429(t *testing.T, code int, retry, msg, want string, personal ...string) {
	t.Helper()
	if code != http.StatusTooManyRequests || !strings.Contains(msg, want) {
		t.Fatalf("got HTTP %d %q, want 429 containing %q", code, msg, want)
	}
	if n, err := strconv.Atoi(retry); err != nil || n < 1 {
		t.Fatalf("Retry-After %q, want a positive number of seconds", retry)
	}
	for _, p := range personal {
		if strings.Contains(msg, p) {
			t.Fatalf("429 message %q names %q", msg, p)
		}
	}
}

func TestSignupLimitPerSource(t *testing.T) {
	ts, smtp := complianceServer(t, Config{Signup: true, TrustedProxies: loopbackProxy})
	for i := range DefaultSignupsPerSource {
		if code, _, msg := signupAs(t, ts, "198.51.100.7", fmt.Sprintf("a%d", i), fmt.Sprintf("a%d@example.in", i)); code != 201 {
			t.Fatalf("sign-up %d: HTTP %d %s", i, code, msg)
		}
	}
	code, retry, msg := signupAs(t, ts, "198.51.100.7", "over", "over@example.in")
	want429(t, code, retry, msg, "too many sign-ups from this network address", "198.51.100.7")
	// Another client behind the same proxy is not held up.
	if code, _, msg := signupAs(t, ts, "198.51.100.8", "other", "other@example.in"); code != 201 {
		t.Fatalf("another source: HTTP %d %s", code, msg)
	}
	// IPv6 clients are counted by /64: another address of the same
	// network shares the limit.
	for i := range DefaultSignupsPerSource {
		if code, _, msg := signupAs(t, ts, fmt.Sprintf("2001:db8:1:2::%x", i+1), fmt.Sprintf("v%d", i), fmt.Sprintf("v%d@example.in", i)); code != 201 {
			t.Fatalf("IPv6 sign-up %d: HTTP %d %s", i, code, msg)
		}
	}
	code, retry, msg = signupAs(t, ts, "2001:db8:1:2:ffff::1", "v6over", "v6over@example.in")
	want429(t, code, retry, msg, "too many sign-ups from this network address", "2001:db8")
	// The refused sign-ups left no account and sent no mail.
	users, _ := ts.admin.Users(context.Background())
	if len(users) != 2*DefaultSignupsPerSource+1 {
		t.Fatalf("%d accounts, want %d", len(users), 2*DefaultSignupsPerSource+1)
	}
	if msgs := smtp.Wait(t, 2*DefaultSignupsPerSource+1); len(msgs) != 2*DefaultSignupsPerSource+1 {
		t.Fatalf("%d mails, want %d", len(msgs), 2*DefaultSignupsPerSource+1)
	}
}

func TestSignupLimitPerEmail(t *testing.T) {
	ts, smtp := complianceServer(t, Config{Signup: true, TrustedProxies: loopbackProxy})
	victim := "victim@example.org"
	// From many sources, so only the per-address limit applies.
	for i := range DefaultSignupsPerEmail {
		if code, _, msg := signupAs(t, ts, fmt.Sprintf("198.51.100.%d", 10+i), fmt.Sprintf("e%d", i), victim); code != 201 {
			t.Fatalf("sign-up %d: HTTP %d %s", i, code, msg)
		}
	}
	// The same mailbox however the address is written.
	for i, addr := range []string{victim, "Victim@Example.ORG", "victim+x@example.org"} {
		code, retry, msg := signupAs(t, ts, fmt.Sprintf("203.0.113.%d", 10+i), fmt.Sprintf("f%d", i), addr)
		want429(t, code, retry, msg, "too many sign-ups for this email address", "victim", "example.org")
	}
	// A sign-up for someone else goes through, and its mail is the only
	// one more: the refused ones sent none.
	if code, _, msg := signupAs(t, ts, "203.0.113.50", "g", "g@example.in"); code != 201 {
		t.Fatalf("HTTP %d %s", code, msg)
	}
	msgs := smtp.Wait(t, DefaultSignupsPerEmail+1)
	n := 0
	for _, m := range msgs {
		if strings.Contains(strings.ToLower(m.Header.Get("To")), "victim") {
			n++
		}
	}
	if len(msgs) != DefaultSignupsPerEmail+1 || n != DefaultSignupsPerEmail {
		t.Fatalf("%d mails, %d to the victim; want %d and %d", len(msgs), n, DefaultSignupsPerEmail+1, DefaultSignupsPerEmail)
	}
}

func TestSignupMailsPerDaySurviveRestart(t *testing.T) {
	cfg := Config{Signup: true, TrustedProxies: loopbackProxy, SignupsPerEmail: 100, SignupMailsPerDay: 3}
	ts, smtp, stop1 := startComplianceServer(t, cfg)
	victim := "victim@example.org"
	for i := range 3 {
		if code, _, msg := signupAs(t, ts, fmt.Sprintf("198.51.100.%d", 10+i), fmt.Sprintf("e%d", i), victim); code != 201 {
			t.Fatalf("sign-up %d: HTTP %d %s", i, code, msg)
		}
	}
	code, retry, msg := signupAs(t, ts, "198.51.100.20", "e3", victim)
	want429(t, code, retry, msg, "too many verification mails", "victim", "example.org")
	if n, _ := strconv.Atoi(retry); n > 24*3600 || n < 23*3600 {
		t.Fatalf("Retry-After %s, want about a day", retry)
	}
	// A restart does not reset the count.
	cfg2 := ts.cfg
	stop1()
	ts2, stop := startTestServer(t, cfg2)
	t.Cleanup(stop)
	code, retry, msg = signupAs(t, ts2, "198.51.100.21", "e4", victim)
	want429(t, code, retry, msg, "too many verification mails", "victim", "example.org")
	if msgs := smtp.Wait(t, 3); len(msgs) != 3 {
		t.Fatalf("%d mails, want 3", len(msgs))
	}
	if users, _ := ts2.admin.Users(context.Background()); len(users) != 3 {
		t.Fatalf("%d accounts, want 3: a refused sign-up left one", len(users))
	}
	// A day later the address may get a code again; the counter is gone.
	if err := ts2.expireRegistrations(context.Background(), time.Now().Add(25*time.Hour)); err != nil {
		t.Fatal(err)
	}
	var rows int
	ts2.db.QueryRow(`SELECT count(*) FROM signup_mails`).Scan(&rows)
	if rows != 0 {
		t.Fatalf("%d mail counters left after a day", rows)
	}
}

func TestExpireUnconfirmedRegistrations(t *testing.T) {
	ts, smtp := complianceServer(t, Config{Signup: true, TrustedProxies: loopbackProxy})
	ctx := context.Background()
	public, _ := api.NewClient(ts.url, "", "")
	for i, u := range []string{"idle", "verified", "withdevice"} {
		if code, _, msg := signupAs(t, ts, fmt.Sprintf("198.51.100.%d", 30+i), u, u+"@example.in"); code != 201 {
			t.Fatalf("sign-up %s: HTTP %d %s", u, code, msg)
		}
	}
	// An account an operator made is not a self-service registration.
	if _, err := ts.admin.CreateUser(ctx, api.CreateUserRequest{Name: "byadmin", Subscriber: details()}); err != nil {
		t.Fatal(err)
	}
	var code string
	for _, m := range smtp.Wait(t, 4) {
		if strings.Contains(m.Header.Get("To"), "verified@") {
			b, _ := io.ReadAll(m.Body)
			code = regexp.MustCompile(`\b\d{6}\b`).FindString(string(b))
		}
	}
	if err := public.Do(ctx, "POST", "/signup/verify-email", api.VerifyEmailRequest{User: "verified", Code: code}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "withdevice", Name: "phone", PublicKey: newKey(t)}); err != nil {
		t.Fatal(err)
	}
	names := func() string {
		users, _ := ts.admin.Users(ctx)
		var n []string
		for _, u := range users {
			n = append(n, u.Name)
		}
		return strings.Join(n, ",")
	}
	idleSeqs, _ := ts.db.SubscriberSeqs(ctx, "idle")
	if len(idleSeqs) == 0 {
		t.Fatal("no record for the idle registration")
	}
	// Within the window nothing expires.
	if err := ts.expireRegistrations(ctx, time.Now().Add(DefaultSignupExpiry-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := names(); got != "byadmin,idle,verified,withdevice" {
		t.Fatalf("accounts inside the window: %s", got)
	}
	// Past it, the registration that neither verified nor got a device is
	// withdrawn with its record; the others stay.
	if err := ts.expireRegistrations(ctx, time.Now().Add(DefaultSignupExpiry+time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := names(); got != "byadmin,verified,withdevice" {
		t.Fatalf("accounts after expiry: %s", got)
	}
	officer := ts.token(t, api.RoleCompliance)
	wantStatus(t, officer.Do(ctx, "GET", "/compliance/subscribers/idle?case=C-1", nil, nil), 404, "no subscriber record")
	for _, u := range []string{"verified", "withdevice", "byadmin"} {
		if err := officer.Do(ctx, "GET", "/compliance/subscribers/"+u+"?case=C-1", nil, nil); err != nil {
			t.Fatalf("%s: %v", u, err)
		}
	}
	var bodies int
	ts.db.QueryRow(fmt.Sprintf(`SELECT count(*) FROM ledger_entries WHERE chain = 'records' AND seq IN (%s) AND body IS NOT NULL`, joinSeqs(idleSeqs))).Scan(&bodies)
	if bodies != 0 {
		t.Fatalf("%d entries of the expired registration keep their bodies", bodies)
	}
	var purges int
	ts.db.QueryRow(`SELECT count(*) FROM ledger_entries WHERE kind = 'purge'`).Scan(&purges)
	if purges != 1 {
		t.Fatalf("%d purge entries, want 1", purges)
	}
	var rep struct {
		Problems []any `json:"problems"`
	}
	if err := ts.token(t, api.RoleAuditor).Do(ctx, "GET", "/compliance/verify", nil, &rep); err != nil || len(rep.Problems) != 0 {
		t.Fatalf("verify after expiry: %+v %v", rep, err)
	}
	// The name is free again.
	if c, _, msg := signupAs(t, ts, "198.51.100.40", "idle", "idle2@example.in"); c != 201 {
		t.Fatalf("sign-up with the freed name: HTTP %d %s", c, msg)
	}
	// explain says what happens to such registrations, and why.
	var ex api.Explanation
	if err := ts.admin.Do(ctx, "GET", "/jurisdictions/explain?gateway=in1&kind=consumer", nil, &ex); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(ex.Text, "never verified their email nor got a device within 7 days are withdrawn and purged") {
		t.Fatalf("explain does not say what happens to unconfirmed sign-ups:\n%s", ex.Text)
	}
}

func joinSeqs(seqs []int64) string {
	s := make([]string, len(seqs))
	for i, q := range seqs {
		s[i] = strconv.FormatInt(q, 10)
	}
	return strings.Join(s, ",")
}

func TestLimiterBoundedTable(t *testing.T) {
	l := limiter{maxKeys: 100}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	// A flood of new keys, each using its whole bucket: the table stops
	// at its bound and the keys past it share one bucket of 2.
	allowed := 0
	for i := range 1000 {
		for range 2 {
			if ok, _ := l.take(fmt.Sprint("k", i), now, 2, time.Hour); ok {
				allowed++
			}
		}
	}
	if l.len() != 100 || allowed != 2*100+2 {
		t.Fatalf("table of %d keys, %d allowed; want 100 and %d", l.len(), allowed, 2*100+2)
	}
	ok, wait := l.take("late", now, 2, time.Hour)
	if ok || wait <= 0 || wait > 30*time.Minute {
		t.Fatalf("a new key with the table full: %v, wait %s", ok, wait)
	}
	// Once buckets have filled up again they are dropped to make room.
	later := now.Add(time.Hour)
	if ok, _ := l.take("late", later, 2, time.Hour); !ok || l.len() != 1 {
		t.Fatalf("after an hour: allowed %v, table of %d keys", ok, l.len())
	}
	// A key's own bucket refills at its rate.
	l = limiter{}
	for range 3 {
		l.take("a", now, 3, time.Hour)
	}
	if ok, wait := l.take("a", now, 3, time.Hour); ok || wait != 20*time.Minute {
		t.Fatalf("empty bucket: %v, wait %s, want 20m", ok, wait)
	}
	if ok, _ := l.take("a", now.Add(20*time.Minute), 3, time.Hour); !ok {
		t.Fatal("no token after 20 minutes")
	}
}

func TestSourceKey(t *testing.T) {
	for in, want := range map[string]string{
		"198.51.100.7":         "198.51.100.7",
		"2001:db8:1:2::1":      "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff::9": "2001:db8:1:2::/64",
	} {
		if got := sourceKey(netip.MustParseAddr(in)); got != want {
			t.Errorf("sourceKey(%s) = %s, want %s", in, got, want)
		}
	}
}

func FuzzNormalEmail(f *testing.F) {
	for _, s := range []string{"victim@example.org", "Victim+tag@Example.ORG", " a@b ", "+x@y", "no-at", "a+b+c@d@e", "", "@", "ÄÖ@example.org"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		n := normalEmail(addr)
		if normalEmail(n) != n {
			t.Fatalf("not idempotent: %q -> %q -> %q", addr, n, normalEmail(n))
		}
		if normalEmail(strings.ToUpper(addr)) != normalEmail(strings.ToLower(addr)) && strings.ToLower(strings.ToUpper(addr)) == strings.ToLower(addr) {
			t.Fatalf("case matters: %q", addr)
		}
		if len(n) > len(addr)+len(strings.ToLower(addr)) {
			t.Fatalf("grew: %q -> %q", addr, n)
		}
	})
}
