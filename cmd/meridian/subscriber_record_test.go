package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/meridian-vpn/meridian/api"
)

// TestSubscriberRecordCommand: `meridian subscriber record USER` sends the
// items given with user add's flags as PUT /subscribers/USER/record, and a
// refusal for missing items says which flags give them. The stand-in
// control server on loopback refuses a record without a name as the real
// one does.
func TestSubscriberRecordCommand(t *testing.T) {
	var mu sync.Mutex
	var method, path string
	var got api.SubscriberDetails
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		method, path, got = r.Method, r.URL.EscapedPath(), api.SubscriberDetails{}
		json.NewDecoder(r.Body).Decode(&got)
		w.Header().Set("Content-Type", "application/json")
		if got.Name == "" {
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(api.Error{Error: "a subscriber record is required for this account (a duty of a gateway's country applies); missing: subscriber.name", Missing: []string{"subscriber.name"}})
			return
		}
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(api.SignupResponse{User: api.User{Name: "ravi k"}, RecordKept: true})
	}))
	defer srv.Close()
	dir := t.TempDir()
	conn := []string{"--server", srv.URL, "--token", "not-used"}
	out := mustRun(t, dir, append(append([]string{"subscriber", "record"}, conn...), "--full-name", "Ravi Kumar", "--email", "ravi@example.in",
		"--purpose", "personal privacy", "--address", "1 MG Road", "--phone", "+91 80 5550 0101", "--phone", "+91 80 5550 0102", "--ownership", "individual", "ravi k")...)
	want := api.SubscriberDetails{Name: "Ravi Kumar", Email: "ravi@example.in", Purpose: "personal privacy", Address: "1 MG Road",
		Phones: []string{"+91 80 5550 0101", "+91 80 5550 0102"}, Ownership: api.Individual}
	mu.Lock()
	if method != "PUT" || path != "/api/v1/subscribers/ravi%20k/record" || !reflect.DeepEqual(got, want) {
		t.Errorf("sent %s %s %+v, want PUT /api/v1/subscribers/ravi%%20k/record %+v", method, path, got, want)
	}
	mu.Unlock()
	if !strings.Contains(out, `subscriber record of "ravi k" taken`) {
		t.Errorf("output %q", out)
	}
	r := meridian(t, dir, append(append([]string{"subscriber", "record"}, conn...), "--email", "ravi@example.in", "ravi")...)
	if r.code != 1 || !strings.Contains(r.stderr, "missing: subscriber.name") || !strings.Contains(r.stderr, "--full-name") {
		t.Errorf("missing items: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := meridian(t, dir, append([]string{"subscriber", "record"}, conn...)...); r.code != 2 {
		t.Errorf("no USER: exit %d, stderr %q", r.code, r.stderr)
	}
}
