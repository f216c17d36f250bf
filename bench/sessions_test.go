package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/store"
	"github.com/meridian-vpn/meridian/wg"
)

// BenchmarkLookupByExit: "who used exit address X, port P at time T" over
// many stored sessions (default 10 million; BENCH_SESSIONS overrides). The
// rows are synthetic index rows as the control server stores them: 16 exit
// addresses, 124 port blocks of 256 each, consecutive sessions per block.
// It reports p50 and p99 of 2,000 random lookups and the bytes on disk per
// session row.
func BenchmarkLookupByExit(b *testing.B) {
	n := 10_000_000
	if v, err := strconv.Atoi(os.Getenv("BENCH_SESSIONS")); err == nil && v > 0 {
		n = v
	}
	ctx := context.Background()
	file := filepath.Join(b.TempDir(), "m.db")
	db, err := store.Open(ctx, file)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	const exits, blocks, size = 16, 124, 256
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	perSlot := n / (exits * blocks)
	step := time.Duration(int64(365*24*time.Hour) / int64(perSlot)) // a year of sessions
	start := time.Now()
	const batch = 50_000
	for done := 0; done < n; {
		tx, err := db.Begin()
		if err != nil {
			b.Fatal(err)
		}
		st, err := tx.Prepare(`INSERT INTO sessions (id, gateway, public_key, device_id, user_name, tunnel_ipv4, exit_ipv4, port_lo, port_hi, start_at, end_at, seq, endpoint_index)
			VALUES (?, 'gw', 'AKzpRruYxrbBqes5x4tpu/MqVraDjXsRpWXKHHiOHgc=', ?, 'u', ?, ?, ?, ?, ?, ?, ?, 'x')`)
		if err != nil {
			b.Fatal(err)
		}
		for i := 0; i < batch && done < n; i, done = i+1, done+1 {
			slot, k := done%(exits*blocks), done/(exits*blocks)
			exit, block := slot/blocks, slot%blocks
			lo := 1024 + block*size
			s := base.Add(time.Duration(k) * step)
			if _, err := st.Exec(fmt.Sprintf("%032x", done), done%50000+1, fmt.Sprintf("10.200.%d.%d", (done>>8)&255, done&255),
				fmt.Sprintf("203.0.113.%d", exit+1), lo, lo+size-1, s.UnixNano(), s.Add(step).UnixNano(), done+1); err != nil {
				b.Fatal(err)
			}
		}
		st.Close()
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	load := time.Since(start)
	db.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`)
	fi, _ := os.Stat(file)
	rng := rand.New(rand.NewPCG(1, 2))
	var lat []time.Duration
	b.ResetTimer()
	for range max(b.N, 2000) {
		exit := netip.AddrFrom4([4]byte{203, 0, 113, byte(1 + rng.IntN(exits))})
		port := uint16(1024 + rng.IntN(blocks*size))
		at := base.Add(time.Duration(rng.Int64N(int64(perSlot-1) * int64(step))))
		t0 := time.Now()
		got, err := db.SessionsByExit(ctx, exit, port, at)
		lat = append(lat, time.Since(t0))
		if err != nil || len(got) != 1 {
			b.Fatalf("lookup %s:%d at %s: %d sessions, %v", exit, port, at, len(got), err)
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	ms := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(ms(0.5), "p50-ms")
	b.ReportMetric(ms(0.99), "p99-ms")
	b.ReportMetric(float64(fi.Size())/float64(n), "bytes/session")
	b.ReportMetric(float64(n)/load.Seconds(), "rows-loaded/s")
}

// BenchmarkSessionIngest: session records posted by a gateway in batches of
// 100 through the HTTP API, each stored durably: index row plus a sealed,
// hash-chained ledger entry (reported as records/s).
func BenchmarkSessionIngest(b *testing.B) {
	ctx := context.Background()
	_, url, admin := startControl(b, b.TempDir())
	const devices = 200
	var keys []wg.Key
	var addrs []netip.Addr
	if _, err := admin.CreateUser(ctx, api.CreateUserRequest{Name: "u"}); err != nil {
		b.Fatal(err)
	}
	for i := range devices {
		k, _ := wg.NewPrivateKey()
		pub := k.Public()
		d, err := admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "u", Name: "d" + strconv.Itoa(i), PublicKey: &pub})
		if err != nil {
			b.Fatal(err)
		}
		keys, addrs = append(keys, pub), append(addrs, d.Device.IPv4)
	}
	tok, _ := admin.CreateJoinToken(ctx, api.JoinTokenRequest{})
	jc, _ := api.NewClient(url, tok.Token, "")
	gk, _ := wg.NewPrivateKey()
	j, err := jc.Join(ctx, api.JoinRequest{Name: "in1", PublicKey: gk.Public(), Endpoint: "192.0.2.1:51820", Mode: api.TUN})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := admin.SetJurisdiction(ctx, api.Jurisdiction{Country: "IN", Profile: "cert-in-2022", Stance: "comply"}); err != nil {
		b.Fatal(err)
	}
	if _, err := admin.SetPlace(ctx, "in1", api.Place{PhysicalCountry: "IN", Ownership: api.Rented}); err != nil {
		b.Fatal(err)
	}
	gw, _ := api.NewClient(url, j.Credential, "")
	const batch = 100
	total := max(b.N, 20_000)
	base := time.Now().Add(-time.Hour)
	b.ResetTimer()
	start := time.Now()
	for sent := 0; sent < total; sent += batch {
		recs := make([]api.SessionRecord, batch)
		for i := range recs {
			n := sent + i
			recs[i] = api.SessionRecord{ID: fmt.Sprintf("%032x", n+1), PublicKey: keys[n%devices], TunnelIPv4: addrs[n%devices],
				Endpoint: netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(n)}), uint16(1024+n%60000)),
				ExitIPv4: netip.MustParseAddr("203.0.113.1"), PortLo: 1024, PortHi: 1279, Start: base.Add(time.Duration(n) * time.Millisecond)}
		}
		res, err := gw.PostSessions(ctx, api.SessionBatch{Records: recs})
		if err != nil || res.Stored != batch {
			b.Fatalf("batch at %d: %+v %v", sent, res, err)
		}
	}
	b.ReportMetric(float64(total)/time.Since(start).Seconds(), "records/s")
}
