package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/wg"
)

func testRecord(t *testing.T, i int) api.SessionRecord {
	t.Helper()
	k, err := wg.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return api.SessionRecord{
		ID: fmt.Sprintf("%032x", i), PublicKey: k.Public(), TunnelIPv4: netip.MustParseAddr("10.200.0.2"),
		Endpoint: netip.MustParseAddrPort("198.51.100.7:40000"), ExitIPv4: netip.MustParseAddr("203.0.113.1"),
		PortLo: 1024, PortHi: 1279, Start: time.Date(2026, 3, 1, 12, 0, i, 0, time.UTC),
	}
}

func ids(recs []api.SessionRecord) string {
	var s string
	for _, r := range recs {
		s += r.ID[28:] + " "
	}
	return s
}

func TestSpoolSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	sp, err := openSpool(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, spoolFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("an empty spool created its file")
	}
	for i := range 5 {
		if err := sp.append([]api.SessionRecord{testRecord(t, i)}, false); err != nil {
			t.Fatal(err)
		}
	}
	recs, next, _, err := sp.peek(2, 1<<20)
	if err != nil || ids(recs) != "0000 0001 " {
		t.Fatalf("peek: %q %v", ids(recs), err)
	}
	if err := sp.ack(next); err != nil {
		t.Fatal(err)
	}
	sp.close() // as if the gateway stopped

	sp, err = openSpool(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.close()
	select {
	case <-sp.wake:
	default:
		t.Fatal("a reopened spool with records does not ask to be drained")
	}
	recs, next, _, err = sp.peek(10, 1<<20)
	if err != nil || ids(recs) != "0002 0003 0004 " {
		t.Fatalf("after reopening: %q %v, want records 2-4 in order", ids(recs), err)
	}
	if recs[0] != testRecordWithKey(testRecord(t, 2), recs[0].PublicKey) {
		t.Fatalf("record changed on the way through the spool: %+v", recs[0])
	}
	if err := sp.ack(next); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, spoolFile)); err != nil || fi.Size() != 0 || sp.pending() != 0 {
		t.Fatalf("a drained spool keeps %v bytes (%v)", fi.Size(), err)
	}
	if _, err := os.Stat(filepath.Join(dir, spoolHeadFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a drained spool keeps its offset")
	}
}

func testRecordWithKey(r api.SessionRecord, k wg.Key) api.SessionRecord {
	r.PublicKey = k
	return r
}

func TestSpoolDropsTornRecord(t *testing.T) {
	dir := t.TempDir()
	sp, _ := openSpool(dir, 1<<20)
	if err := sp.append([]api.SessionRecord{testRecord(t, 1)}, false); err != nil {
		t.Fatal(err)
	}
	sp.close()
	// A crash in the middle of the next append.
	f, err := os.OpenFile(filepath.Join(dir, spoolFile), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"id":"00000000000000000000000000000002","public_k`)
	f.Close()

	sp, err = openSpool(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.close()
	if err := sp.append([]api.SessionRecord{testRecord(t, 3)}, false); err != nil {
		t.Fatal(err)
	}
	recs, _, skipped, err := sp.peek(10, 1<<20)
	if err != nil || skipped != 0 || ids(recs) != "0001 0003 " {
		t.Fatalf("after a torn append: %q, %d skipped, %v", ids(recs), skipped, err)
	}
}

func TestSpoolFull(t *testing.T) {
	dir := t.TempDir()
	one := testRecord(t, 0)
	sp, _ := openSpool(dir, 3*int64(len(mustJSON(t, one))+1))
	defer sp.close()
	for i := range 3 {
		if err := sp.append([]api.SessionRecord{testRecord(t, i)}, false); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	if err := sp.append([]api.SessionRecord{testRecord(t, 3)}, false); !errors.Is(err, errSpoolFull) {
		t.Fatalf("append beyond the limit: %v, want errSpoolFull", err)
	}
	// Closing records are forced in.
	if err := sp.append([]api.SessionRecord{testRecord(t, 4)}, true); err != nil {
		t.Fatalf("forced append: %v", err)
	}
	// Delivering makes room again.
	_, next, _, _ := sp.peek(2, 1<<20)
	sp.ack(next)
	if err := sp.append([]api.SessionRecord{testRecord(t, 5)}, false); err != nil {
		t.Fatalf("append after delivery: %v", err)
	}
	recs, _, _, _ := sp.peek(10, 1<<20)
	if ids(recs) != "0002 0004 0005 " {
		t.Fatalf("spool holds %q", ids(recs))
	}
}

func TestSpoolCompacts(t *testing.T) {
	dir := t.TempDir()
	sp, _ := openSpool(dir, 64<<20)
	var all []api.SessionRecord
	for i := range 4000 { // about 1.4 MiB
		all = append(all, testRecord(t, i))
	}
	if err := sp.append(all, false); err != nil {
		t.Fatal(err)
	}
	delivered := 0
	for delivered < 3500 {
		recs, next, _, err := sp.peek(100, 48<<10)
		if err != nil || len(recs) == 0 {
			t.Fatalf("peek: %d %v", len(recs), err)
		}
		if recs[0].ID != all[delivered].ID {
			t.Fatalf("record %d comes as %s", delivered, recs[0].ID)
		}
		delivered += len(recs)
		if err := sp.ack(next); err != nil {
			t.Fatal(err)
		}
	}
	fi, _ := os.Stat(filepath.Join(dir, spoolFile))
	if fi.Size() >= spoolCompactAt {
		t.Fatalf("spool file %d bytes after delivering most of it: not compacted", fi.Size())
	}
	sp.close()
	sp, _ = openSpool(dir, 64<<20)
	defer sp.close()
	n := 0
	for {
		recs, next, _, _ := sp.peek(100, 48<<10)
		if len(recs) == 0 {
			break
		}
		if recs[0].ID != all[delivered+n].ID {
			t.Fatalf("after compaction and restart, record %d comes as %s", delivered+n, recs[0].ID)
		}
		n += len(recs)
		sp.ack(next)
	}
	if delivered+n != len(all) {
		t.Fatalf("%d delivered + %d after restart, want %d", delivered, n, len(all))
	}
}

func mustJSON(t *testing.T, r api.SessionRecord) []byte {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
