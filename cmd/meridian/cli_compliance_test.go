package main

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// recorder is a control server stand-in on loopback that counts the
// connections made to it and records the requests; it answers lookups and
// subscriber reads with empty results.
type recorder struct {
	*httptest.Server
	conns atomic.Int64
	mu    sync.Mutex
	reqs  []*url.URL
}

func newRecorder(t *testing.T) *recorder {
	rec := &recorder{}
	rec.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, r.URL)
		rec.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if strings.HasPrefix(r.URL.Path, "/api/v1/compliance/subscribers/") {
			json.NewEncoder(w).Encode(map[string]any{"case": r.URL.Query().Get("case"), "record": map[string]any{"user": strings.TrimPrefix(r.URL.Path, "/api/v1/compliance/subscribers/")}})
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"case": r.URL.Query().Get("case"), "query": "recorded", "sessions": []any{}})
	}))
	rec.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			rec.conns.Add(1)
		}
	}
	rec.Start()
	t.Cleanup(rec.Close)
	return rec
}

// last is the last request recorded, or nil.
func (r *recorder) last() *url.URL {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.reqs) == 0 {
		return nil
	}
	return r.reqs[len(r.reqs)-1]
}

// TestComplianceArgsRefusedBeforeRequest: `meridian compliance lookup` and
// `compliance subscriber` refuse a bad argument with exit status 2 and a
// message naming the flag, before any connection to the control server is
// made (the recorder counts them): times without a zone or out of range,
// ports out of 1-65535 or not plain decimal, bad addresses, a missing
// --case, a window whose --to is not after --from, flags of another kind of
// lookup. (Before, the lookup checked nothing: every one of these went to
// the server, with the case reference, and the flags that did not belong
// to the query were dropped without a word.)
func TestComplianceArgsRefusedBeforeRequest(t *testing.T) {
	rec := newRecorder(t)
	dir := t.TempDir()
	conn := []string{"--server", rec.URL, "--token", "not-used"}
	lookup := func(args ...string) []string {
		return append(append([]string{"compliance", "lookup"}, conn...), args...)
	}
	exit := func(extra ...string) []string {
		return lookup(append([]string{"--case", "C-1", "--exit-ip", "192.0.2.1", "--port", "443", "--at", "2026-05-01T09:00:00Z"}, extra...)...)
	}
	exitPort := func(port string) []string {
		return lookup("--case", "C-1", "--exit-ip", "192.0.2.1", "--port", port, "--at", "2026-05-01T09:00:00Z")
	}
	exitAt := func(at string) []string {
		return lookup("--case", "C-1", "--exit-ip", "192.0.2.1", "--port", "443", "--at", at)
	}
	window := func(from, to string) []string {
		return lookup("--case", "C-1", "--subscriber", "alice", "--from", from, "--to", to)
	}
	for _, tc := range []struct {
		name string
		args []string
		want []string // in stderr
	}{
		{"at without zone", exitAt("2026-05-01T14:30:00"), []string{"--at", "no time zone"}},
		{"at date only", exitAt("2026-05-01"), []string{"--at", "RFC 3339"}},
		{"at words", exitAt("yesterday"), []string{"--at", "RFC 3339"}},
		{"at space before zone", exitAt("2026-05-01T14:30:00 +05:30"), []string{"--at"}},
		{"at year 0026", exitAt("0026-05-01T14:30:00Z"), []string{"--at", "years"}},
		{"at year 9999", exitAt("9999-05-01T14:30:00Z"), []string{"--at", "years"}},
		{"port 0", exitPort("0"), []string{"--port", "1 to 65535"}},
		{"port 65536", exitPort("65536"), []string{"--port", "1 to 65535"}},
		{"port -1", exitPort("-1"), []string{"--port", "1 to 65535"}},
		{"port +80", exitPort("+80"), []string{"--port", "1 to 65535"}},
		{"port abc", exitPort("abc"), []string{"--port", "1 to 65535"}},
		{"port with space", exitPort(" 80"), []string{"--port", "1 to 65535"}},
		{"port missing", lookup("--case", "C-1", "--exit-ip", "192.0.2.1", "--at", "2026-05-01T09:00:00Z"), []string{"--port"}},
		{"at missing", lookup("--case", "C-1", "--exit-ip", "192.0.2.1", "--port", "443"), []string{"--at"}},
		{"exit-ip bad", lookup("--case", "C-1", "--exit-ip", "192.0.2.300", "--port", "443", "--at", "2026-05-01T09:00:00Z"), []string{"--exit-ip", "IP address"}},
		{"exit-ip prefix", lookup("--case", "C-1", "--exit-ip", "192.0.2.0/24", "--port", "443", "--at", "2026-05-01T09:00:00Z"), []string{"--exit-ip", "IP address"}},
		{"exit-ip with zone", lookup("--case", "C-1", "--exit-ip", "fe80::1%eth0", "--port", "443", "--at", "2026-05-01T09:00:00Z"), []string{"--exit-ip"}},
		{"tunnel-ip bad", lookup("--case", "C-1", "--tunnel-ip", "tunnel", "--at", "2026-05-01T09:00:00Z"), []string{"--tunnel-ip", "IP address"}},
		{"endpoint-ip bad", lookup("--case", "C-1", "--endpoint-ip", "::g", "--from", "2026-05-01T00:00:00Z", "--to", "2026-05-02T00:00:00Z"), []string{"--endpoint-ip", "IP address"}},
		{"case missing", lookup("--exit-ip", "192.0.2.1", "--port", "443", "--at", "2026-05-01T09:00:00Z"), []string{"--case", "required"}},
		{"case blank", exit("--case", "  "), []string{"--case"}},
		{"case with newline", exit("--case", "C-1\nforged"), []string{"--case"}},
		{"no query", lookup("--case", "C-1"), []string{"exactly one of --exit-ip"}},
		{"two queries", exit("--tunnel-ip", "10.0.0.2"), []string{"exactly one of --exit-ip"}},
		{"from after to", window("2026-05-02T00:00:00Z", "2026-05-01T00:00:00Z"), []string{"--to", "after --from"}},
		{"from equals to", window("2026-05-01T05:30:00+05:30", "2026-05-01T00:00:00Z"), []string{"--to", "after --from"}},
		{"from without zone", window("2026-05-01T00:00:00", "2026-05-02T00:00:00Z"), []string{"--from", "no time zone"}},
		{"to missing", lookup("--case", "C-1", "--subscriber", "alice", "--from", "2026-05-01T00:00:00Z"), []string{"--to"}},
		{"from missing", lookup("--case", "C-1", "--endpoint-ip", "198.51.100.7", "--to", "2026-05-01T00:00:00Z"), []string{"--from"}},
		{"port with tunnel-ip", lookup("--case", "C-1", "--tunnel-ip", "10.0.0.2", "--port", "443", "--at", "2026-05-01T09:00:00Z"), []string{"--port", "--exit-ip"}},
		{"at with subscriber", lookup("--case", "C-1", "--subscriber", "alice", "--at", "2026-05-01T09:00:00Z", "--from", "2026-05-01T00:00:00Z", "--to", "2026-05-02T00:00:00Z"), []string{"--at"}},
		{"from with exit-ip", exit("--from", "2026-05-01T00:00:00Z"), []string{"--from"}},
		{"stray argument", exit("extra"), []string{"got 1 argument"}},
		{"subscriber without case", append(append([]string{"compliance", "subscriber"}, conn...), "alice"), []string{"--case", "required"}},
		{"subscriber blank case", append(append([]string{"compliance", "subscriber"}, conn...), "--case", " ", "alice"), []string{"--case"}},
		{"subscriber without user", append(append([]string{"compliance", "subscriber"}, conn...), "--case", "C-1"), []string{"want USER"}},
		{"subscriber two users", append(append([]string{"compliance", "subscriber"}, conn...), "--case", "C-1", "alice", "bob"), []string{"want USER"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := rec.conns.Load()
			r := meridian(t, dir, tc.args...)
			if r.code != 2 {
				t.Errorf("exit status %d, want 2 (usage)\nstderr: %s", r.code, r.stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr %q does not say %q", r.stderr, w)
				}
			}
			if n := rec.conns.Load() - before; n != 0 {
				t.Errorf("%d connection(s) to the control server before the argument was refused", n)
			}
		})
	}
}

// TestComplianceLookupTimes: a time with a zone (Z, +05:30) is accepted and
// sent as the instant it names, in UTC; what is sent is exactly the query
// asked for.
func TestComplianceLookupTimes(t *testing.T) {
	rec := newRecorder(t)
	dir := t.TempDir()
	conn := []string{"--server", rec.URL, "--token", "not-used"}
	for _, tc := range []struct {
		name string
		args []string
		want url.Values
	}{
		{"exit, Z", []string{"--case", "C-1", "--exit-ip", "192.0.2.1", "--port", "443", "--at", "2026-05-01T09:00:00Z"},
			url.Values{"case": {"C-1"}, "exit_ip": {"192.0.2.1"}, "port": {"443"}, "at": {"2026-05-01T09:00:00Z"}}},
		{"exit, +05:30", []string{"--case", "C-1", "--exit-ip", "192.0.2.1", "--port", "65535", "--at", "2026-05-01T14:30:00+05:30"},
			url.Values{"case": {"C-1"}, "exit_ip": {"192.0.2.1"}, "port": {"65535"}, "at": {"2026-05-01T09:00:00Z"}}},
		{"tunnel, fraction", []string{"--case", "C-1", "--tunnel-ip", "fd00::2", "--at", "2026-05-01T09:00:00.25-01:00"},
			url.Values{"case": {"C-1"}, "tunnel_ip": {"fd00::2"}, "at": {"2026-05-01T10:00:00.25Z"}}},
		{"endpoint window", []string{"--case", "C-1", "--endpoint-ip", "198.51.100.7", "--from", "2026-05-01T00:00:00+05:30", "--to", "2026-05-01T00:00:00Z"},
			url.Values{"case": {"C-1"}, "endpoint_ip": {"198.51.100.7"}, "from": {"2026-04-30T18:30:00Z"}, "to": {"2026-05-01T00:00:00Z"}}},
		{"subscriber window", []string{"--case", "C-1", "--subscriber", "alice", "--from", "2026-05-01T00:00:00Z", "--to", "2026-05-02T00:00:00Z"},
			url.Values{"case": {"C-1"}, "subscriber": {"alice"}, "from": {"2026-05-01T00:00:00Z"}, "to": {"2026-05-02T00:00:00Z"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := mustRun(t, dir, append(append([]string{"compliance", "lookup"}, conn...), tc.args...)...)
			if !strings.Contains(out, "case C-1") {
				t.Errorf("output %q", out)
			}
			u := rec.last()
			if u == nil || u.Path != "/api/v1/compliance/lookup" {
				t.Fatalf("request %v, want /api/v1/compliance/lookup", u)
			}
			if got := u.Query(); got.Encode() != tc.want.Encode() {
				t.Errorf("query %s, want %s", got.Encode(), tc.want.Encode())
			}
		})
	}
	out := mustRun(t, dir, append(append([]string{"compliance", "subscriber"}, conn...), "--case", "C-2", "alice")...)
	if u := rec.last(); u == nil || u.Path != "/api/v1/compliance/subscribers/alice" || u.Query().Get("case") != "C-2" {
		t.Errorf("subscriber read sent %v", u)
	}
	if !strings.Contains(out, `case C-2 — subscriber record of "alice"`) {
		t.Errorf("subscriber output %q", out)
	}
}
