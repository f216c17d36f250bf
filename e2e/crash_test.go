package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
)

// controlProcess is `meridian control` run as a process of its own, so
// that the test can kill it.
type controlProcess struct {
	cmd *exec.Cmd
	url string
	log *lockedBuffer
}

// lockedBuffer is what a process wrote, safe to read while it writes.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startControlProcess starts `meridian control` on data, on loopback, and
// waits until it serves.
func startControlProcess(t *testing.T, bin, data string) *controlProcess {
	t.Helper()
	urlFile := filepath.Join(data, "control.url")
	os.Remove(urlFile)
	p := &controlProcess{log: new(lockedBuffer)}
	// Not the default pools: 'control admin-token' must work beside it
	// all the same.
	p.cmd = exec.Command(bin, "control", "--data", data, "--listen", "127.0.0.1:0", "--ipv4-pool", "10.200.0.0/22", "--ipv6-pool", "2001:db8:200::/64")
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.kill() })
	eventually(t, 20*time.Second, "control.url", func() error {
		b, err := os.ReadFile(urlFile)
		if err != nil {
			return err
		}
		p.url = strings.TrimSpace(string(b))
		return nil
	})
	return p
}

// kill ends the process at once (SIGKILL): no shutdown, as in a power
// cut of the process.
func (p *controlProcess) kill() {
	if p.cmd.ProcessState == nil {
		p.cmd.Process.Kill()
		p.cmd.Wait()
	}
}

// Killing the control server while gateways post session records loses
// none it acknowledged: after each restart every acknowledged record is
// found by the index (which catches up from the ledger what a kill kept
// from it), and when the gateways resend everything, each record is in
// the ledger exactly once and the chain verifies.
func TestSessionRecordsSurviveKill(t *testing.T) {
	ctx := context.Background()
	bin := meridianBinary(t)
	data := t.TempDir()
	ctl := startControlProcess(t, bin, data)
	tok, err := os.ReadFile(filepath.Join(data, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	adminToken := strings.TrimSpace(string(tok))
	admin, _ := api.NewClient(ctl.url, adminToken, "")

	// The account exists before the gateways are placed in India: then no
	// subscriber record is asked for, which this test is not about.
	if _, err := admin.CreateUser(ctx, api.CreateUserRequest{Name: "alice"}); err != nil {
		t.Fatal(err)
	}
	dev, err := admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "alice", Name: "a", PublicKey: newPub(t)})
	if err != nil {
		t.Fatal(err)
	}

	const gateways, batches, half = 2, 120, 250
	var creds []string
	for g := range gateways {
		jt, err := admin.CreateJoinToken(ctx, api.JoinTokenRequest{})
		if err != nil {
			t.Fatal(err)
		}
		jc, _ := api.NewClient(ctl.url, jt.Token, "")
		name := fmt.Sprintf("in%d", g)
		j, err := jc.Join(ctx, api.JoinRequest{Name: name, PublicKey: *newPub(t), Endpoint: "192.0.2.1:51820", Mode: api.Userspace})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := admin.SetPlace(ctx, name, place("IN")); err != nil {
			t.Fatal(err)
		}
		creds = append(creds, j.Credential)
	}

	// Batch b of gateway g: half new sessions, and the ends of the
	// previous batch's.
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	rec := func(g, n int) api.SessionRecord {
		return api.SessionRecord{ID: fmt.Sprintf("%08x%024x", g, n), PublicKey: dev.Device.PublicKey, TunnelIPv4: dev.Device.IPv4,
			Endpoint: netip.MustParseAddrPort("198.51.100.7:40000"), ExitIPv4: netip.AddrFrom4([4]byte{203, 0, 113, byte(1 + g)}),
			PortLo: uint16(1024 + 256*(n%100)), PortHi: uint16(1279 + 256*(n%100)), Start: t0.Add(time.Duration(n) * time.Second)}
	}
	batch := func(g, b int) []api.SessionRecord {
		var out []api.SessionRecord
		for n := b * half; n < (b+1)*half; n++ {
			out = append(out, rec(g, n))
		}
		if b > 0 {
			for n := (b - 1) * half; n < b*half; n++ {
				r := rec(g, n)
				r.End = r.Start.Add(time.Hour)
				out = append(out, r)
			}
		}
		return out
	}

	// Rounds: post from every gateway at once, kill the server without
	// warning after a while, start it again, check what was acknowledged.
	var mu sync.Mutex
	acked := map[string]bool{} // record ID, "+end" for closing records
	next := make([]int, gateways)
	for round, after := range []time.Duration{400 * time.Millisecond, 600 * time.Millisecond, 800 * time.Millisecond, 1000 * time.Millisecond} {
		var wg sync.WaitGroup
		for g := range gateways {
			gc, _ := api.NewClient(ctl.url, creds[g], "")
			wg.Go(func() {
				for next[g] < batches {
					b := batch(g, next[g])
					res, err := gc.PostSessions(ctx, api.SessionBatch{Records: b})
					if err != nil {
						return // killed
					}
					if res.Stored != len(b) {
						t.Errorf("gateway %d batch %d: stored %d of %d", g, next[g], res.Stored, len(b))
						return
					}
					mu.Lock()
					for _, r := range b {
						if r.End.IsZero() {
							acked[r.ID] = true
						} else {
							acked[r.ID+"+end"] = true
						}
					}
					mu.Unlock()
					next[g]++
				}
			})
		}
		time.Sleep(after)
		ctl.kill()
		wg.Wait()
		ctl = startControlProcess(t, bin, data)
		db := openStoreAt(t, filepath.Join(data, "control"))
		rows := map[string]bool{}
		r, err := db.SessionIndex().Query(`SELECT id, end_seq IS NOT NULL FROM sessions`)
		if err != nil {
			t.Fatal(err)
		}
		for r.Next() {
			var id string
			var ended bool
			r.Scan(&id, &ended)
			rows[id] = true
			if ended {
				rows[id+"+end"] = true
			}
		}
		r.Close()
		db.Close()
		lost := 0
		for id := range acked {
			if !rows[id] {
				lost++
			}
		}
		t.Logf("round %d: %d records acknowledged so far, batches %v; catch-ups in the log: %d", round, len(acked), next, strings.Count(ctl.log.String(), "session index caught up"))
		if lost > 0 {
			t.Fatalf("round %d: %d acknowledged records are not in the index after the restart", round, lost)
		}
	}

	// Every gateway resends all its batches: nothing is stored twice.
	for g := range gateways {
		gc, _ := api.NewClient(ctl.url, creds[g], "")
		for b := range batches {
			if res, err := gc.PostSessions(ctx, api.SessionBatch{Records: batch(g, b)}); err != nil || res.Stored != len(batch(g, b)) {
				t.Fatalf("resend gateway %d batch %d: %+v %v", g, b, res, err)
			}
		}
	}
	db := openStoreAt(t, filepath.Join(data, "control"))
	defer db.Close()
	var starts, ends, rows, ended int
	db.QueryRow(`SELECT count(*) FILTER (WHERE kind = 'session'), count(*) FILTER (WHERE kind = 'session-end') FROM ledger_entries WHERE chain = 'records'`).Scan(&starts, &ends)
	db.SessionIndex().QueryRow(`SELECT count(*), count(end_seq) FROM sessions`).Scan(&rows, &ended)
	wantStarts, wantEnds := gateways*batches*half, gateways*(batches-1)*half
	if starts != wantStarts || ends != wantEnds || rows != wantStarts || ended != wantEnds {
		t.Fatalf("ledger: %d session and %d session-end entries; index: %d rows, %d ended; want %d and %d each", starts, ends, rows, ended, wantStarts, wantEnds)
	}
	auditorTok, err := exec.Command(bin, "control", "admin-token", "--data", data, "--role", "auditor").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("control admin-token: %v\n%s", err, ee.Stderr)
		}
		t.Fatal(err)
	}
	auditor, _ := api.NewClient(ctl.url, strings.TrimSpace(string(auditorTok)), "")
	var rep struct {
		Problems []any `json:"problems"`
	}
	if err := auditor.Do(ctx, "GET", "/compliance/verify", nil, &rep); err != nil || len(rep.Problems) != 0 {
		t.Fatalf("verify after the kills: %+v %v", rep, err)
	}
}
