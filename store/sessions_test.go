package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/wg"
)

func keepAll(SessionOwner) bool { return true }

// fakeLedger stands in for the ledger: it appends entries without bodies
// to the ledger's table, in the transaction it is given, and remembers
// what it was given.
type fakeLedger struct {
	next    int64 // entries appended, committed or not
	records map[int64]SessionEntry
	ends    map[int64]string
}

func testIndex(ip netip.Addr) string { return "idx:" + ip.Unmap().String() }

func fakeNext(tx *Tx) (int64, error) {
	var n int64
	err := tx.tx.QueryRow(`SELECT coalesce(max(seq), 0) + 1 FROM ledger_entries WHERE chain = 'records'`).Scan(&n)
	return n, err
}

// fakeAppend appends an entry of kind, chained by zero hashes.
func fakeAppend(tx *Tx, kind string) (int64, error) {
	seq, err := fakeNext(tx)
	if err != nil {
		return 0, err
	}
	_, err = tx.tx.Exec(`INSERT INTO ledger_entries (chain, seq, kind, at, body, prev_hash, hash) VALUES ('records', ?, ?, 0, x'00', zeroblob(32), zeroblob(32))`, seq, kind)
	return seq, err
}

func (f *fakeLedger) hook() SessionHook {
	if f.records == nil {
		f.records, f.ends = map[int64]SessionEntry{}, map[int64]string{}
	}
	return SessionHook{
		Index: testIndex,
		Next:  fakeNext,
		Stored: func(tx *Tx, recs []SessionEntry) ([]int64, error) {
			var seqs []int64
			for _, r := range recs {
				seq, err := fakeAppend(tx, "session")
				if err != nil {
					return nil, err
				}
				f.next++
				f.records[seq] = r
				seqs = append(seqs, seq)
			}
			return seqs, nil
		},
		Ended: func(tx *Tx, ends []SessionEnd) ([]int64, error) {
			var seqs []int64
			for _, e := range ends {
				seq, err := fakeAppend(tx, "session-end")
				if err != nil {
					return nil, err
				}
				f.next++
				f.ends[seq] = e.ID
				seqs = append(seqs, seq)
			}
			return seqs, nil
		},
	}
}

func TestSaveSessionsIsIdempotent(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t)
	if _, err := db.CreateUser(ctx, "alice", api.Consumer); err != nil {
		t.Fatal(err)
	}
	pub := key(t)
	dev, err := db.CreateDevice(ctx, NewDevice{User: "alice", Name: "laptop", PublicKey: pub,
		IPv4: netip.MustParseAddr("10.200.0.2"), IPv6: netip.MustParseAddr("2001:db8:200::2")})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	open := api.SessionRecord{
		ID: "0123456789abcdef0123456789abcdef", PublicKey: pub,
		TunnelIPv4: dev.IPv4, TunnelIPv6: dev.IPv6, Endpoint: netip.MustParseAddrPort("198.51.100.7:40000"),
		ExitIPv4: netip.MustParseAddr("203.0.113.1"), PortLo: 1280, PortHi: 1535, Start: t0,
	}
	closed := open
	closed.End = t0.Add(time.Hour)

	var owner SessionOwner
	var fl fakeLedger
	for _, batch := range [][]api.SessionRecord{{open}, {open}, {closed}, {open, closed}, {open}} {
		n, err := saveOne(ctx, db, "gw-in", batch, func(o SessionOwner) bool { owner = o; return true }, fl.hook())
		if err != nil || n != len(batch) {
			t.Fatalf("save: %d, %v", n, err)
		}
	}
	if !owner.Known || owner.DeviceID != dev.ID || owner.User != "alice" || owner.Kind != api.Consumer {
		t.Fatalf("owner %+v", owner)
	}
	var rows int
	db.SessionIndex().QueryRow(`SELECT count(*) FROM sessions`).Scan(&rows)
	if rows != 1 {
		t.Fatalf("%d rows, want 1", rows)
	}
	got, err := db.SessionsByExit(ctx, open.ExitIPv4, 1300, t0.Add(time.Minute))
	if err != nil || len(got) != 1 {
		t.Fatalf("by exit: %+v %v", got, err)
	}
	s := got[0]
	if s.Gateway != "gw-in" || s.DeviceID != dev.ID || s.User != "alice" || !s.End.Equal(closed.End) || !s.Start.Equal(t0) ||
		s.Endpoint.IsValid() || s.EndpointIndex != testIndex(open.Endpoint.Addr()) || s.Seq != 1 || s.TunnelIPv6 != dev.IPv6 || s.ExitIPv6.IsValid() {
		t.Fatalf("stored %+v", s)
	}

	// One "session" entry when first stored, one "session-end" when the
	// end arrived; resending changed nothing.
	if len(fl.records) != 1 || fl.records[1].Endpoint != open.Endpoint || len(fl.ends) != 1 || fl.ends[2] != open.ID {
		t.Fatalf("ledger got records %+v, ends %v", fl.records, fl.ends)
	}
	var ends int
	db.SessionIndex().QueryRow(`SELECT count(*) FROM sessions WHERE id = ? AND end_seq = 2`, open.ID).Scan(&ends)
	if ends != 1 {
		t.Fatalf("%d sessions with end entry 2, want 1", ends)
	}

	// Another gateway cannot rewrite it.
	other := closed
	other.End = t0.Add(2 * time.Hour)
	if _, err := saveOne(ctx, db, "gw-other", []api.SessionRecord{other}, keepAll, fl.hook()); err != nil {
		t.Fatal(err)
	}
	if got, _ := db.SessionsByExit(ctx, open.ExitIPv4, 1300, t0.Add(90*time.Minute)); len(got) != 0 {
		t.Fatalf("another gateway's record changed the session: %+v", got)
	}

	// Records keep refuses are not stored.
	refused := open
	refused.ID = "ffffffffffffffffffffffffffffffff"
	if n, err := saveOne(ctx, db, "gw-in", []api.SessionRecord{refused}, func(SessionOwner) bool { return false }, fl.hook()); err != nil || n != 0 {
		t.Fatalf("refused record: %d %v", n, err)
	}
	db.SessionIndex().QueryRow(`SELECT count(*) FROM sessions`).Scan(&rows)
	if rows != 1 {
		t.Fatalf("%d rows after a refused record, want 1", rows)
	}
	if fl.next != 2 {
		t.Fatalf("the ledger got %d entries, want 2", fl.next)
	}
}

func TestSessionLookups(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t)
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	exit := netip.MustParseAddr("203.0.113.1")
	exit6 := netip.MustParseAddr("2001:db8:2::1")
	rec := func(id byte, tunnel string, endpoint string, lo uint16, start, end time.Duration) api.SessionRecord {
		r := api.SessionRecord{
			ID: fmt.Sprintf("%032x", id), PublicKey: key(t),
			TunnelIPv4: netip.MustParseAddr(tunnel), TunnelIPv6: netip.MustParseAddr("2001:db8:200::" + string(rune('0'+id))),
			Endpoint: netip.MustParseAddrPort(endpoint), ExitIPv4: exit, ExitIPv6: exit6,
			PortLo: lo, PortHi: lo + 255, Start: t0.Add(start),
		}
		if end != 0 {
			r.End = t0.Add(end)
		}
		return r
	}
	// Block 1024-1279 passes from session 1 to session 2 at t0+10m; session
	// 3 holds another block and is still open.
	recs := []api.SessionRecord{
		rec(1, "10.200.0.2", "198.51.100.7:40000", 1024, 0, 10*time.Minute),
		rec(2, "10.200.0.3", "198.51.100.8:40000", 1024, 10*time.Minute, 20*time.Minute),
		rec(3, "10.200.0.2", "198.51.100.7:40001", 1280, 15*time.Minute, 0),
	}
	if _, err := saveOne(ctx, db, "gw", recs, keepAll, new(fakeLedger).hook()); err != nil {
		t.Fatal(err)
	}
	ids := func(ss []Session, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		var out string
		for _, s := range ss {
			out += s.ID[31:]
		}
		return out
	}
	for _, c := range []struct {
		what string
		got  string
		want string
	}{
		{"exit port in block 0 before the handover", ids(db.SessionsByExit(ctx, exit, 1100, t0.Add(10*time.Minute-time.Nanosecond))), "1"},
		{"exit port at the handover instant", ids(db.SessionsByExit(ctx, exit, 1100, t0.Add(10*time.Minute))), "2"},
		{"exit port after the last session ended", ids(db.SessionsByExit(ctx, exit, 1100, t0.Add(25*time.Minute))), ""},
		{"IPv6 exit port", ids(db.SessionsByExit(ctx, exit6, 1279, t0.Add(5*time.Minute))), "1"},
		{"exit port of an open session", ids(db.SessionsByExit(ctx, exit, 1500, t0.Add(24*time.Hour))), "3"},
		{"port outside every block", ids(db.SessionsByExit(ctx, exit, 40000, t0.Add(5*time.Minute))), ""},
		{"another exit address", ids(db.SessionsByExit(ctx, netip.MustParseAddr("203.0.113.2"), 1100, t0.Add(5*time.Minute))), ""},
		{"tunnel address", ids(db.SessionsByTunnelAddr(ctx, netip.MustParseAddr("10.200.0.2"), t0.Add(16*time.Minute))), "3"},
		{"tunnel address before its session", ids(db.SessionsByTunnelAddr(ctx, netip.MustParseAddr("10.200.0.3"), t0.Add(5*time.Minute))), ""},
		{"endpoint over a window", ids(db.SessionsByEndpoint(ctx, testIndex(netip.MustParseAddr("198.51.100.7")), t0.Add(5*time.Minute), t0.Add(16*time.Minute))), "13"},
		{"endpoint outside the window", ids(db.SessionsByEndpoint(ctx, testIndex(netip.MustParseAddr("198.51.100.8")), t0.Add(20*time.Minute), t0.Add(time.Hour))), ""},
	} {
		if c.got != c.want {
			t.Errorf("%s: sessions %q, want %q", c.what, c.got, c.want)
		}
	}
}

func TestSessionsOfUser(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t)
	db.CreateUser(ctx, "bob", api.Enterprise)
	pub := key(t)
	if _, err := db.CreateDevice(ctx, NewDevice{User: "bob", Name: "pc", PublicKey: pub,
		IPv4: netip.MustParseAddr("10.200.0.9"), IPv6: netip.MustParseAddr("2001:db8:200::9")}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	r := api.SessionRecord{ID: "abcdefabcdefabcdefabcdefabcdefab", PublicKey: pub, TunnelIPv4: netip.MustParseAddr("10.200.0.9"),
		Endpoint: netip.MustParseAddrPort("[2001:db8:1::2]:5000"), ExitIPv4: netip.MustParseAddr("203.0.113.1"), PortLo: 1024, PortHi: 1279, Start: t0}
	if _, err := saveOne(ctx, db, "gw", []api.SessionRecord{r}, keepAll, new(fakeLedger).hook()); err != nil {
		t.Fatal(err)
	}
	got, err := db.SessionsOfUser(ctx, "bob", t0.Add(-time.Hour), t0.Add(time.Hour))
	if err != nil || len(got) != 1 || got[0].EndpointIndex != testIndex(r.Endpoint.Addr()) || !got[0].End.IsZero() {
		t.Fatalf("sessions of bob: %+v %v", got, err)
	}
	owners, err := db.PeerOwners(ctx, []wg.Key{pub, key(t)})
	if err != nil || len(owners) != 1 || owners[pub].Kind != api.Enterprise || owners[pub].Record || owners[pub].Location != "" {
		t.Fatalf("peer owners %v %v", owners, err)
	}
}

// Batches larger than one statement's worth, with sessions that start and
// end in the same batch, store every row once and every end once.
func TestSaveSessionsInBatches(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t)
	var keys []wg.Key
	for i := range 3 {
		user := fmt.Sprintf("u%d", i)
		db.CreateUser(ctx, user, api.Consumer)
		pub := key(t)
		if _, err := db.CreateDevice(ctx, NewDevice{User: user, Name: "d", PublicKey: pub,
			IPv4: netip.AddrFrom4([4]byte{10, 200, 1, byte(i + 1)}), IPv6: netip.MustParseAddr(fmt.Sprintf("2001:db8:200::1:%d", i+1))}); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, pub)
	}
	keys = append(keys, key(t)) // a key no device has
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	rec := func(n int, ended bool) api.SessionRecord {
		r := api.SessionRecord{ID: fmt.Sprintf("%032x", n), PublicKey: keys[n%len(keys)], TunnelIPv4: netip.MustParseAddr("10.200.1.1"),
			Endpoint: netip.MustParseAddrPort("198.51.100.7:40000"), ExitIPv4: netip.MustParseAddr("203.0.113.1"),
			PortLo: 1024, PortHi: 1279, Start: t0.Add(time.Duration(n) * time.Minute)}
		if ended {
			r.End = r.Start.Add(time.Second)
		}
		return r
	}
	var first, second []api.SessionRecord
	for n := range 150 {
		first = append(first, rec(n, false))
		second = append(second, rec(n, true))
	}
	for n := 150; n < 230; n++ { // start and end in the same batch
		second = append(second, rec(n, false), rec(n, true))
	}
	var fl fakeLedger
	for _, batch := range [][]api.SessionRecord{first, second, second} {
		if n, err := saveOne(ctx, db, "gw", batch, keepAll, fl.hook()); err != nil || n != len(batch) {
			t.Fatalf("save %d records: %d, %v", len(batch), n, err)
		}
	}
	if len(fl.records) != 230 || len(fl.ends) != 230 {
		t.Fatalf("the ledger got %d records and %d ends, want 230 of each", len(fl.records), len(fl.ends))
	}
	var rows, ended, owned int
	db.SessionIndex().QueryRow(`SELECT count(*), count(end_seq), count(device_id) FROM sessions`).Scan(&rows, &ended, &owned)
	if rows != 230 || ended != 230 || owned != 230-230/len(keys) {
		t.Fatalf("%d rows, %d with an end entry, %d with an owner", rows, ended, owned)
	}
	var wrong int
	db.SessionIndex().QueryRow(`SELECT count(*) FROM sessions WHERE end_seq <= seq OR end_at <> start_at + 1000000000`).Scan(&wrong)
	if wrong != 0 {
		t.Fatalf("%d sessions with an end out of order", wrong)
	}
}

// saveOne saves one gateway's batch.
// saveOne saves one batch and commits the index, as the control server
// does when no more batches wait.
func saveOne(ctx context.Context, db *DB, gateway string, recs []api.SessionRecord, keep func(SessionOwner) bool, hook SessionHook) (int, error) {
	n, err := db.SaveSessions(ctx, []GatewaySessions{{Gateway: gateway, Records: recs, Keep: keep}}, hook)
	if err != nil {
		return 0, err
	}
	return n[0], db.FlushSessionIndex(ctx)
}

// Batches of several gateways in one transaction keep each gateway's
// records its own, and count per batch.
func TestSaveSessionsOfSeveralGateways(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t)
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	open := api.SessionRecord{ID: "0123456789abcdef0123456789abcdef", PublicKey: key(t), TunnelIPv4: netip.MustParseAddr("10.200.0.2"),
		Endpoint: netip.MustParseAddrPort("198.51.100.7:40000"), ExitIPv4: netip.MustParseAddr("203.0.113.1"), PortLo: 1024, PortHi: 1279, Start: t0}
	closed := open
	closed.End = t0.Add(time.Hour)
	other := open
	other.ID = "ffffffffffffffffffffffffffffffff"
	var fl fakeLedger
	n, err := db.SaveSessions(ctx, []GatewaySessions{
		{Gateway: "gw-a", Records: []api.SessionRecord{open}, Keep: keepAll},
		{Gateway: "gw-b", Records: []api.SessionRecord{closed, other}, Keep: keepAll}, // cannot end gw-a's session
		{Gateway: "gw-c", Records: []api.SessionRecord{other}, Keep: func(SessionOwner) bool { return false }},
		{Gateway: "gw-a", Records: []api.SessionRecord{closed}, Keep: keepAll},
	}, fl.hook())
	if err != nil || !slices.Equal(n, []int{1, 2, 0, 1}) {
		t.Fatalf("stored %v, %v; want [1 2 0 1]", n, err)
	}
	if err := db.FlushSessionIndex(ctx); err != nil {
		t.Fatal(err)
	}
	var gw string
	var end sql.NullInt64
	db.SessionIndex().QueryRow(`SELECT gateway, end_at FROM sessions WHERE id = ?`, open.ID).Scan(&gw, &end)
	if gw != "gw-a" || end.Int64 != closed.End.UnixNano() {
		t.Fatalf("session stored by %q ending %v", gw, end)
	}
	db.SessionIndex().QueryRow(`SELECT gateway FROM sessions WHERE id = ?`, other.ID).Scan(&gw)
	if gw != "gw-b" || len(fl.records) != 2 || len(fl.ends) != 1 {
		t.Fatalf("other stored by %q; ledger got %d records, %d ends", gw, len(fl.records), len(fl.ends))
	}
}

// A closing record cannot end a session before it started, whatever start
// it claims itself: that is the sender's error.
func TestSessionEndBeforeStoredStart(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t)
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	open := api.SessionRecord{ID: "0123456789abcdef0123456789abcdef", PublicKey: key(t), TunnelIPv4: netip.MustParseAddr("10.200.0.2"),
		Endpoint: netip.MustParseAddrPort("198.51.100.7:40000"), ExitIPv4: netip.MustParseAddr("203.0.113.1"), PortLo: 1024, PortHi: 1279, Start: t0}
	var fl fakeLedger
	if _, err := saveOne(ctx, db, "gw", []api.SessionRecord{open}, keepAll, fl.hook()); err != nil {
		t.Fatal(err)
	}
	contradicting := open
	contradicting.Start, contradicting.End = t0.Add(-2*time.Hour), t0.Add(-time.Hour)
	if _, err := saveOne(ctx, db, "gw", []api.SessionRecord{contradicting}, keepAll, fl.hook()); !errors.Is(err, ErrBadSessionRecord) {
		t.Fatalf("an end before the stored start: %v", err)
	}
	var end sql.NullInt64
	db.SessionIndex().QueryRow(`SELECT end_at FROM sessions WHERE id = ?`, open.ID).Scan(&end)
	if end.Valid || len(fl.ends) != 0 {
		t.Fatalf("the session was ended: %v, ledger ends %v", end, fl.ends)
	}
}
