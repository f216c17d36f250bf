package bench

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/store"
	"github.com/meridian-vpn/meridian/wg"
)

// BenchmarkLookupByExit: "who used exit address X, port P at time T" over
// many stored sessions (default 10 million; BENCH_SESSIONS overrides), and
// "the sessions of subscriber S in a 30-day window". The rows are
// synthetic index rows as the control server stores them: 16 exit
// addresses, 124 port blocks of 256 each, consecutive sessions per block,
// a year of them, spread over 50,000 subscribers. It reports p50 and p99
// of 2,000 random lookups of each kind and the bytes on disk per session
// row.
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
		tx, err := db.SessionIndex().Begin()
		if err != nil {
			b.Fatal(err)
		}
		st, err := tx.Prepare(`INSERT INTO sessions (id, gateway, public_key, device_id, user_name, tunnel_ipv4, exit_ipv4, port_lo, port_hi, start_at, end_at, seq, endpoint_index)
			VALUES (?, 'gw', 'AKzpRruYxrbBqes5x4tpu/MqVraDjXsRpWXKHHiOHgc=', ?, ?, ?, ?, ?, ?, ?, ?, ?, 'x')`)
		if err != nil {
			b.Fatal(err)
		}
		for i := 0; i < batch && done < n; i, done = i+1, done+1 {
			slot, k := done%(exits*blocks), done/(exits*blocks)
			exit, block := slot/blocks, slot%blocks
			lo := 1024 + block*size
			s := base.Add(time.Duration(k) * step)
			if _, err := st.Exec(fmt.Sprintf("%032x", done), done%50000+1, fmt.Sprintf("u%d", done%50000), fmt.Sprintf("10.200.%d.%d", (done>>8)&255, done&255),
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
	db.SessionIndex().Exec(`PRAGMA wal_checkpoint(TRUNCATE)`)
	fi, _ := os.Stat(store.SessionIndexFile(file))
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
	var byUser []time.Duration
	sessions := 0
	for range 2000 {
		user := fmt.Sprintf("u%d", rng.IntN(50000))
		from := base.Add(time.Duration(rng.Int64N(int64(335 * 24 * time.Hour))))
		t0 := time.Now()
		got, err := db.SessionsOfUser(ctx, user, from, from.Add(30*24*time.Hour))
		byUser = append(byUser, time.Since(t0))
		if err != nil {
			b.Fatalf("sessions of %s from %s: %v", user, from, err)
		}
		sessions += len(got)
	}
	b.StopTimer()
	ms := func(lat []time.Duration, q float64) float64 {
		slices.Sort(lat)
		return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(ms(lat, 0.5), "p50-ms")
	b.ReportMetric(ms(lat, 0.99), "p99-ms")
	b.ReportMetric(ms(byUser, 0.5), "user-p50-ms")
	b.ReportMetric(ms(byUser, 0.99), "user-p99-ms")
	b.ReportMetric(float64(sessions)/2000, "user-sessions/lookup")
	b.ReportMetric(float64(fi.Size())/float64(n), "bytes/session")
	b.ReportMetric(float64(n)/load.Seconds(), "rows-loaded/s")
}

// ingestFleet is a control server with gateways in India (cert-in-2022,
// comply) and subscribers with devices, ready to take session records.
type ingestFleet struct {
	dir      string
	admin    *api.Client
	stop     func()
	gateways []*api.Client
	users    []string
	keys     []wg.Key
	v4, v6   []netip.Addr
}

func newIngestFleet(b *testing.B, gateways, devices int) *ingestFleet {
	ctx := context.Background()
	f := &ingestFleet{dir: b.TempDir()}
	_, url, admin, stop := serveControl(b, f.dir)
	f.admin, f.stop = admin, stop
	b.Cleanup(func() { f.stop() })
	if _, err := admin.SetJurisdiction(ctx, api.Jurisdiction{Country: "IN", Profile: "cert-in-2022", Stance: "comply"}); err != nil {
		b.Fatal(err)
	}
	tok, err := admin.CreateJoinToken(ctx, api.JoinTokenRequest{Reusable: true})
	if err != nil {
		b.Fatal(err)
	}
	jc, _ := api.NewClient(url, tok.Token, "")
	for i := range gateways {
		gk, _ := wg.NewPrivateKey()
		name := fmt.Sprintf("in%d", i+1)
		j, err := jc.Join(ctx, api.JoinRequest{Name: name, PublicKey: gk.Public(), Endpoint: fmt.Sprintf("192.0.2.%d:51820", i+1), Mode: api.TUN})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := admin.SetPlace(ctx, name, api.Place{PhysicalCountry: "IN", Ownership: api.Rented}); err != nil {
			b.Fatal(err)
		}
		gw, _ := api.NewClient(url, j.Credential, "")
		f.gateways = append(f.gateways, gw)
	}
	for i := range devices {
		user := fmt.Sprintf("s%d", i)
		if _, err := admin.CreateUser(ctx, api.CreateUserRequest{Name: user, Subscriber: &api.SubscriberDetails{
			Name: "Subscriber " + strconv.Itoa(i), Email: user + "@example.in", Purpose: "personal privacy",
			Address: "12 MG Road, Bengaluru 560001", Phones: []string{"+91 80 5550 0100"}, Ownership: api.Individual}}); err != nil {
			b.Fatal(err)
		}
		k, _ := wg.NewPrivateKey()
		pub := k.Public()
		d, err := admin.CreateDevice(ctx, api.CreateDeviceRequest{User: user, Name: "phone", PublicKey: &pub})
		if err != nil {
			b.Fatal(err)
		}
		f.users = append(f.users, user)
		f.keys, f.v4, f.v6 = append(f.keys, pub), append(f.v4, d.Device.IPv4), append(f.v6, d.Device.IPv6)
	}
	return f
}

// batches returns the batches gateway g sends for sessions sessions: each
// session is two records, its start and (a batch later) its end, so a
// batch of n records is n/2 starts and the ends of the previous batch's
// starts, as a busy gateway sends them.
func (f *ingestFleet) batches(g, sessions, size int) [][]api.SessionRecord {
	base := time.Now().Add(-24 * time.Hour)
	exit4 := netip.AddrFrom4([4]byte{203, 0, 113, byte(g + 1)})
	exit6 := netip.MustParseAddr(fmt.Sprintf("2001:db8:2::%x", g+1))
	rec := func(n int) api.SessionRecord {
		d := n % len(f.keys)
		block := n % 124
		start := base.Add(time.Duration(n) * time.Millisecond)
		// IDs as a gateway makes them: milliseconds first (newSessionID).
		return api.SessionRecord{ID: fmt.Sprintf("%012x%04x%016x", start.UnixMilli(), g, n+1), PublicKey: f.keys[d], TunnelIPv4: f.v4[d], TunnelIPv6: f.v6[d],
			Endpoint: netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(n)}), uint16(1024+n%60000)),
			ExitIPv4: exit4, ExitIPv6: exit6, PortLo: uint16(1024 + block*256), PortHi: uint16(1024 + block*256 + 255), Start: start}
	}
	half := size / 2
	var out [][]api.SessionRecord
	for first := 0; first < sessions+half; first += half {
		var b []api.SessionRecord
		for n := first - half; n < first; n++ { // ends of the previous batch's starts
			if n >= 0 && n < sessions {
				r := rec(n)
				r.End = r.Start.Add(10 * time.Minute)
				b = append(b, r)
			}
		}
		for n := first; n < min(first+half, sessions); n++ {
			b = append(b, rec(n))
		}
		out = append(out, b)
	}
	return out
}

// ingest posts sessions sessions (two records each) from every gateway at
// once, in batches of api.MaxSessionBatch, and returns the records sent
// and how long the last quarter of them took to be acknowledged (the
// sustained rate, as the database has grown).
func (f *ingestFleet) ingest(b *testing.B, sessions int, timed func(func())) (records int, lastQuarter time.Duration) {
	per := make([][][]api.SessionRecord, len(f.gateways))
	for g := range f.gateways {
		per[g] = f.batches(g, sessions/len(f.gateways), api.MaxSessionBatch)
		for _, batch := range per[g] {
			records += len(batch)
		}
	}
	var acked atomic.Int64
	var quarterAt atomic.Int64 // Unix ns when three quarters were acknowledged
	timed(func() {
		var wg sync.WaitGroup
		for g, gw := range f.gateways {
			wg.Go(func() {
				for _, batch := range per[g] {
					res, err := gw.PostSessions(context.Background(), api.SessionBatch{Records: batch})
					if err != nil || res.Stored != len(batch) {
						b.Errorf("gateway %d: %+v %v", g, res, err)
						return
					}
					if n := acked.Add(int64(len(batch))); n >= int64(records)*3/4 {
						quarterAt.CompareAndSwap(0, time.Now().UnixNano())
					}
				}
			})
		}
		wg.Wait()
		lastQuarter = time.Since(time.Unix(0, quarterAt.Load()))
	})
	if b.Failed() {
		b.FailNow()
	}
	return records, lastQuarter
}

// diskBytes is the size of the database and its session index, with
// their write-ahead logs folded in.
func diskBytes(b *testing.B, dir string) int64 {
	file := filepath.Join(dir, "meridian.db")
	db, err := store.Open(context.Background(), file)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	var size int64
	for f, sdb := range map[string]*sql.DB{file: db.DB, store.SessionIndexFile(file): db.SessionIndex()} {
		if _, err := sdb.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
			b.Fatal(err)
		}
		fi, err := os.Stat(f)
		if err != nil {
			b.Fatal(err)
		}
		size += fi.Size()
	}
	return size
}

func benchSessions() int {
	if v, err := strconv.Atoi(os.Getenv("BENCH_INGEST_SESSIONS")); err == nil && v > 0 {
		return v
	}
	return 100_000
}

// BenchmarkSessionIngest: session records posted by 16 gateways at once
// through the HTTP API, in batches of api.MaxSessionBatch, half of them
// session starts and half ends; each stored durably as an index row plus
// a sealed, hash-chained ledger entry. Reports records/s over the run and
// over its last quarter (the rate sustained once the database has grown),
// and bytes on disk per session (both its entries, its index row, and their share of
// the 1,000 subscribers' records) after a WAL checkpoint.
// BENCH_INGEST_SESSIONS sets the number of sessions (default 100,000, so
// 200,000 records).
func BenchmarkSessionIngest(b *testing.B) {
	f := newIngestFleet(b, 16, 1000)
	before := diskBytes(b, f.dir)
	sessions := benchSessions()
	var elapsed time.Duration
	records, last := f.ingest(b, sessions, func(run func()) {
		b.ResetTimer()
		start := time.Now()
		run()
		elapsed = time.Since(start)
		b.StopTimer()
	})
	b.ReportMetric(float64(records)/elapsed.Seconds(), "records/s")
	b.ReportMetric(float64(records)/4/last.Seconds(), "last-quarter-records/s")
	f.stop()
	b.ReportMetric(float64(diskBytes(b, f.dir)-before)/float64(sessions), "bytes/session")
}

// BenchmarkRetentionPurge: the daily retention job on 1,000 subscribers
// whose accounts were cancelled 5 years and 2 days ago, each with its
// share of the sessions (BENCH_INGEST_SESSIONS, default 100,000): their
// subscriber and session entries purged from the ledger (bodies and data
// keys overwritten, one purge entry per account) and their accounts,
// devices and session rows deleted. Reports ledger entries purged per
// second, from the start of the control server that runs the job to the
// last account gone.
func BenchmarkRetentionPurge(b *testing.B) {
	ctx := context.Background()
	f := newIngestFleet(b, 8, 1000)
	sessions := benchSessions()
	f.ingest(b, sessions, func(run func()) { run() })
	for _, u := range f.users {
		if err := f.admin.Do(ctx, "POST", "/users/"+u+"/cancel", nil, nil); err != nil {
			b.Fatal(err)
		}
	}
	f.stop()
	db, err := store.Open(ctx, filepath.Join(f.dir, "meridian.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE users SET cancelled_at = ?`, time.Now().AddDate(-5, 0, -2).Unix()); err != nil {
		b.Fatal(err)
	}
	var entries int
	db.QueryRow(`SELECT count(*) FROM ledger_entries WHERE chain = 'records' AND kind IN ('subscriber', 'session', 'session-end')`).Scan(&entries)
	b.ResetTimer()
	start := time.Now()
	_, _, _, stop := serveControl(b, f.dir) // the job runs as the server starts
	defer stop()
	for {
		var users int
		if err := db.QueryRow(`SELECT count(*) FROM users`).Scan(&users); err != nil {
			b.Fatal(err)
		}
		if users == 0 {
			break
		}
		if time.Since(start) > 10*time.Minute {
			b.Fatalf("%d accounts left after 10 minutes", users)
		}
		time.Sleep(20 * time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	var purged int
	db.QueryRow(`SELECT count(*) FROM ledger_entries WHERE body IS NULL AND kind <> 'purge'`).Scan(&purged)
	if purged < entries {
		b.Fatalf("%d of %d entries purged", purged, entries)
	}
	b.ReportMetric(float64(purged)/elapsed.Seconds(), "entries/s")
}
