package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/wg"
)

// A record the control server refuses as wrong is set aside, and the
// records around it are delivered, instead of the spool stopping at it.
func TestRefusedRecordIsSetAside(t *testing.T) {
	bad := fmt.Sprintf("%032x", 5)
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b api.SessionBatch
		if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		if slices.ContainsFunc(b.Records, func(x api.SessionRecord) bool { return x.ID == bad }) {
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(api.Error{Error: "bad session record: session record " + bad + " ends before the session it closes started"})
			return
		}
		mu.Lock()
		for _, x := range b.Records {
			got = append(got, x.ID)
		}
		mu.Unlock()
		json.NewEncoder(w).Encode(api.SessionBatchResult{Stored: len(b.Records)})
	}))
	defer srv.Close()

	dir := t.TempDir()
	sp, err := openSpool(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.close()
	k, err := wg.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	var recs []api.SessionRecord
	var want []string
	for i := range 12 {
		id := fmt.Sprintf("%032x", i)
		recs = append(recs, api.SessionRecord{ID: id, PublicKey: k.Public(), TunnelIPv4: netip.MustParseAddr("10.200.0.2"),
			Endpoint: netip.MustParseAddrPort("198.51.100.7:40000"), ExitIPv4: netip.MustParseAddr("203.0.113.1"), PortLo: 1024, PortHi: 1279, Start: time.Unix(int64(i), 0)})
		if id != bad {
			want = append(want, id)
		}
	}
	if err := sp.append(recs, false); err != nil {
		t.Fatal(err)
	}
	client, _ := api.NewClient(srv.URL, "gateway-credential", "")
	g := &Gateway{log: slog.New(slog.NewTextHandler(io.Discard, nil)), client: client, spool: sp}
	ctx, cancel := context.WithCancel(context.Background())
	g.done.Add(1)
	go g.sendLoop(ctx)
	deadline := time.Now().Add(10 * time.Second)
	for sp.pending() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	g.done.Wait()

	mu.Lock()
	defer mu.Unlock()
	slices.Sort(got)
	if !slices.Equal(slices.Compact(got), want) {
		t.Fatalf("delivered %v, want every record but %s", got, bad)
	}
	if n := g.recordsRefused.Load(); n != 1 {
		t.Fatalf("%d records counted as refused, want 1", n)
	}
	f, err := os.Open(filepath.Join(dir, refusedFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var aside []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r api.SessionRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		aside = append(aside, r.ID)
	}
	if !slices.Equal(aside, []string{bad}) {
		t.Fatalf("set aside %v, want [%s]", aside, bad)
	}
}
