package store

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/wg"
)

func openTest(t *testing.T) (*DB, string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "m.db")
	db, err := Open(context.Background(), file)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, file
}

func key(t *testing.T) wg.Key {
	k, err := wg.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.Public()
}

func TestReopenKeepsStateAndSchema(t *testing.T) {
	ctx := context.Background()
	db, file := openTest(t)
	if _, err := db.CreateUser(ctx, "alice", api.Consumer); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db2, err := Open(ctx, file)
	if err != nil {
		t.Fatalf("reopen (migrations must be idempotent): %v", err)
	}
	defer db2.Close()
	u, err := db2.User(ctx, "alice")
	if err != nil || u.Kind != api.Consumer {
		t.Fatalf("user after reopen: %+v %v", u, err)
	}
	var mode string
	db2.QueryRow(`PRAGMA journal_mode`).Scan(&mode)
	if mode != "wal" {
		t.Fatalf("journal mode %q, want wal", mode)
	}
}

func TestNetmapSinceAfterCompaction(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t)
	db.CreateUser(ctx, "u", api.Consumer)
	var keys []wg.Key
	for i := range 5 {
		k := key(t)
		keys = append(keys, k)
		_, err := db.CreateDevice(ctx, NewDevice{User: "u", Name: string(rune('a' + i)), PublicKey: k,
			IPv4: netip.AddrFrom4([4]byte{10, 200, 0, byte(2 + i)}), IPv6: netip.MustParseAddr("2001:db8::" + string(rune('2'+i)))})
		if err != nil {
			t.Fatal(err)
		}
	}
	nm, ok, err := db.NetmapSince(ctx, 2)
	if err != nil || !ok || len(nm.Peers) != 3 || nm.Version != 5 || nm.Peers[0].PublicKey != keys[2] {
		t.Fatalf("delta since 2: %+v ok=%v %v", nm, ok, err)
	}
	if err := db.CompactPeerChanges(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := db.NetmapSince(ctx, 2); ok {
		t.Fatal("delta from a compacted version must ask for a full netmap")
	}
	if nm, ok, _ := db.NetmapSince(ctx, 3); !ok || len(nm.Peers) != 2 {
		t.Fatalf("delta right after the compaction point: %+v ok=%v", nm, ok)
	}
	if v, _ := db.NetmapVersion(ctx); v != 5 {
		t.Fatalf("version after compaction %d, want 5", v)
	}
	full, err := db.FullNetmap(ctx)
	if err != nil || len(full.Peers) != 5 || full.Version != 5 {
		t.Fatalf("full: %d peers v%d %v", len(full.Peers), full.Version, err)
	}
}

// The checkpointer copies the write-ahead log into the database file by
// itself, long before a writer would (writerCheckpointPages).
func TestCheckpointerCopiesTheLog(t *testing.T) {
	db, file := openTest(t)
	size := func() int64 {
		fi, err := os.Stat(file)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	before := size()
	if _, err := db.Exec(`CREATE TABLE ck_test (b BLOB)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) INSERT INTO ck_test SELECT randomblob(1000) FROM n`); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for size()-before < 2_000_000 {
		if time.Now().After(deadline) {
			t.Fatalf("the database file grew by %d bytes in 10 s; the log holds 2 MB", size()-before)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
