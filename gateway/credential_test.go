package gateway

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/wg"
)

// A gateway whose stored credential the control server refuses (it was
// removed) stops with an error that says so, after a few tries, instead of
// asking for ever; one whose state directory holds a rotated credential
// goes on with that.
func TestRefusedCredentialStops(t *testing.T) {
	var asked, withNew atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		if r.Header.Get("Authorization") == "Bearer mrd-gw-new" {
			withNew.Add(1) // accepted; the control server is busy, which is no refusal
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"error": "busy"}`)
			return
		}
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"error": "invalid or revoked token"}`)
	}))
	defer srv.Close()
	start := func(dir string) *Gateway {
		client, err := api.NewClient(srv.URL, "mrd-gw-old", "")
		if err != nil {
			t.Fatal(err)
		}
		key, err := wg.NewPrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		g := &Gateway{cfg: Config{StateDir: dir}, log: slog.New(slog.NewTextHandler(io.Discard, nil)), client: client,
			st: &state{Control: srv.URL, Name: "gw", Credential: "mrd-gw-old", PrivateKey: key}, failed: make(chan struct{})}
		if err := g.st.save(dir); err != nil {
			t.Fatal(err)
		}
		return g
	}

	g := start(t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g.done.Add(1)
	go g.syncLoop(ctx)
	select {
	case <-g.Done():
	case <-time.After(15 * time.Second):
		t.Fatalf("a refused gateway did not stop after %d requests", asked.Load())
	}
	g.done.Wait()
	var se *api.StatusError
	if err := g.Err(); !errors.As(err, &se) || se.Code != 401 || !strings.Contains(err.Error(), "removed") {
		t.Fatalf("stopped with %v, want the 401 and a word that the gateway was removed", err)
	}
	if n := asked.Load(); n > 6 {
		t.Fatalf("asked %d times with a refused credential", n)
	}

	// The credential was rotated on the host: the state directory has the
	// new one, which the gateway takes up.
	dir := t.TempDir()
	g = start(dir)
	g.st.Credential = "mrd-gw-new"
	if err := g.st.save(dir); err != nil {
		t.Fatal(err)
	}
	g.st.Credential = "mrd-gw-old"
	ctx2, cancel2 := context.WithCancel(context.Background())
	g.done.Add(1)
	go g.syncLoop(ctx2)
	for deadline := time.Now().Add(10 * time.Second); withNew.Load() < 3; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the gateway never used the rotated credential from its state directory")
		}
	}
	cancel2()
	g.done.Wait()
	if g.Err() != nil {
		t.Fatalf("a gateway with a rotated credential stopped: %v", g.Err())
	}
}
