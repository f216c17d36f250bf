package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
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

// recLen is the length of a spooled testRecord line; all have it (i < 60).
func recLen(t *testing.T) int64 { return int64(len(mustJSON(t, testRecord(t, 0))) + 1) }

// fillSpool appends n test records one at a time, each append returning.
func fillSpool(t *testing.T, sp *spool, n int) {
	t.Helper()
	for i := range n {
		if err := sp.append([]api.SessionRecord{testRecord(t, i)}, false); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSpoolPeekStopsAtByteLimit: a batch ends before the record that does
// not fit its byte limit, and that record leads the next batch; acknowledging
// a batch must never acknowledge a record the batch does not carry (a
// record lost that way is a session missing from the records).
func TestSpoolPeekStopsAtByteLimit(t *testing.T) {
	sp, err := openSpool(t.TempDir(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.close()
	fillSpool(t, sp, 7)
	l := recLen(t)
	for _, c := range []struct {
		maxBytes int64
		want     string
	}{
		{2*l + l/2, "0000 0001 "}, // the third does not fit
		{2 * l, "0000 0001 "},     // exactly two fit
		{2*l - 1, "0000 "},        // the second does not fit
		{1, "0000 "},              // the first record goes whatever its size: else nothing would ever go
	} {
		recs, next, skipped, err := sp.peek(100, int(c.maxBytes))
		if err != nil || skipped != 0 || ids(recs) != c.want {
			t.Fatalf("peek(%d bytes): %q, %d skipped, %v; want %q", c.maxBytes, ids(recs), skipped, err, c.want)
		}
		if want := int64(len(recs)) * l; next != want {
			t.Fatalf("peek(%d bytes) of %d records: acknowledge up to %d, want %d (the end of the last record it carries)", c.maxBytes, len(recs), next, want)
		}
	}
	// Draining with limits that cut between records delivers every record
	// exactly once, in order.
	var got string
	for _, maxBytes := range []int64{2*l + 1, l + l/2, 3*l - 1, 1 << 20} {
		recs, next, _, err := sp.peek(100, int(maxBytes))
		if err != nil {
			t.Fatal(err)
		}
		got += ids(recs)
		if err := sp.ack(next); err != nil {
			t.Fatal(err)
		}
	}
	if want := "0000 0001 0002 0003 0004 0005 0006 "; got != want || sp.pending() != 0 {
		t.Fatalf("delivered %q (%d bytes pending), want %q", got, sp.pending(), want)
	}
}

// TestSpoolTornLastRecord: a crash in the middle of an append leaves any
// prefix of its record on disk. Whatever the prefix, the reopened spool
// holds exactly the records whose appends returned and were not yet
// acknowledged, delivers nothing half-written, and appends after them.
func TestSpoolTornLastRecord(t *testing.T) {
	const n = 4
	l := recLen(t)
	src := t.TempDir()
	sp, err := openSpool(src, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	fillSpool(t, sp, n)
	_, next, _, _ := sp.peek(1, 1<<20)
	if err := sp.ack(next); err != nil { // record 0 delivered: the head file says so
		t.Fatal(err)
	}
	sp.close()
	data, err := os.ReadFile(filepath.Join(src, spoolFile))
	if err != nil || int64(len(data)) != n*l {
		t.Fatalf("spool file %d bytes, want %d (%v)", len(data), n*l, err)
	}
	head, err := os.ReadFile(filepath.Join(src, spoolHeadFile))
	if err != nil {
		t.Fatal(err)
	}
	for cut := (n - 1) * l; cut <= n*l; cut++ {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, spoolFile), data[:cut], 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, spoolHeadFile), head, 0o600); err != nil {
			t.Fatal(err)
		}
		want := "0001 0002 "
		if cut == n*l {
			want += "0003 " // whole: its append may have returned
		}
		sp, err := openSpool(dir, 1<<20)
		if err != nil {
			t.Fatalf("cut at %d: %v", cut, err)
		}
		recs, _, skipped, err := sp.peek(100, 1<<20)
		if err != nil || skipped != 0 || ids(recs) != want {
			t.Fatalf("cut at %d: %q, %d skipped, %v; want %q", cut, ids(recs), skipped, err, want)
		}
		if err := sp.append([]api.SessionRecord{testRecord(t, 9)}, false); err != nil {
			t.Fatal(err)
		}
		sp.close()
		sp, err = openSpool(dir, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		recs, _, skipped, err = sp.peek(100, 1<<20)
		sp.close()
		if err != nil || skipped != 0 || ids(recs) != want+"0009 " {
			t.Fatalf("cut at %d, appended and reopened: %q, %d skipped, %v; want %q", cut, ids(recs), skipped, err, want+"0009 ")
		}
	}
}

// TestSpoolDamagedHeadFile: the head file is written whole (atomicfile),
// but whatever it holds, no record after the true head is lost and none
// is delivered half: a head that is not the start of a record within the
// file is not to be trusted, and the spool resends from its start (the
// control server takes records again idempotently).
func TestSpoolDamagedHeadFile(t *testing.T) {
	l := recLen(t)
	for _, head := range []string{"", "garbage", "-5", "1e3", strconv.FormatInt(l+5, 10), strconv.FormatInt(l-1, 10), strconv.FormatInt(100*l, 10)} {
		dir := t.TempDir()
		sp, err := openSpool(dir, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		fillSpool(t, sp, 4)
		sp.close()
		if err := os.WriteFile(filepath.Join(dir, spoolHeadFile), []byte(head+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		sp, err = openSpool(dir, 1<<20)
		if err != nil {
			t.Fatalf("head %q: %v", head, err)
		}
		recs, _, skipped, err := sp.peek(100, 1<<20)
		sp.close()
		if err != nil || skipped != 0 || ids(recs) != "0000 0001 0002 0003 " {
			t.Fatalf("head file %q: %q, %d skipped, %v; want every record", head, ids(recs), skipped, err)
		}
	}
}

// fileFaults stands between the spool and its file (spool.open): it
// records the calls that make records durable, and fails Sync on demand.
// Only from there can a test see that a record is fsynced before append
// returns: a record written but not synced reads back the same until the
// machine loses power, which a test cannot do.
type fileFaults struct {
	calls    []string
	syncErr  error // every Sync fails with it while set
	openErr  error // every open fails with it while set
	truncErr error // every Truncate fails with it while set
}

func (ff *fileFaults) open(name string, flag int, perm os.FileMode) (diskFile, error) {
	if ff.openErr != nil {
		return nil, ff.openErr
	}
	f, err := openOSFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &faultFile{diskFile: f, ff: ff}, nil
}

type faultFile struct {
	diskFile
	ff *fileFaults
}

func (f *faultFile) WriteAt(p []byte, off int64) (int, error) {
	f.ff.calls = append(f.ff.calls, "write")
	return f.diskFile.WriteAt(p, off)
}

func (f *faultFile) Truncate(size int64) error {
	f.ff.calls = append(f.ff.calls, "truncate")
	if f.ff.truncErr != nil {
		return f.ff.truncErr
	}
	return f.diskFile.Truncate(size)
}

func (f *faultFile) Sync() error {
	f.ff.calls = append(f.ff.calls, "sync")
	if f.ff.syncErr != nil {
		return f.ff.syncErr
	}
	return f.diskFile.Sync()
}

// faultySpool is a fresh spool in dir whose file goes through ff.
func faultySpool(t *testing.T, dir string, ff *fileFaults) *spool {
	t.Helper()
	sp, err := openSpool(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	sp.open = ff.open // the file is opened at the first append
	return sp
}

// TestSpoolAppendSyncsBeforeReturning: when append returns, what it wrote
// has been fsynced: no write follows the last Sync.
func TestSpoolAppendSyncsBeforeReturning(t *testing.T) {
	ff := &fileFaults{}
	sp := faultySpool(t, t.TempDir(), ff)
	defer sp.close()
	for i := range 3 {
		ff.calls = nil
		if err := sp.append([]api.SessionRecord{testRecord(t, i), testRecord(t, i+10)}, i == 2); err != nil {
			t.Fatal(err)
		}
		if last := slices.Index(ff.calls, "write"); last < 0 || ff.calls[len(ff.calls)-1] != "sync" {
			t.Fatalf("append %d returned after %v: not written, or written and not fsynced", i, ff.calls)
		}
	}
}

// TestSpoolSyncErrorFailsAppend: a failed fsync is append's error, and the
// records are not spooled: not delivered, not there after a restart, and
// the next append lands where they would have. The session tracker, told
// so, does not open the session whose record it could not keep.
func TestSpoolSyncErrorFailsAppend(t *testing.T) {
	dir := t.TempDir()
	eio := errors.New("input/output error")
	ff := &fileFaults{}
	sp := faultySpool(t, dir, ff)
	fillSpool(t, sp, 1)
	ff.syncErr = eio
	if err := sp.append([]api.SessionRecord{testRecord(t, 1)}, true); !errors.Is(err, eio) {
		t.Fatalf("append with a failing fsync: %v, want the fsync's error", err)
	}
	if recs, _, _, _ := sp.peek(100, 1<<20); ids(recs) != "0000 " || sp.pending() != recLen(t) {
		t.Fatalf("after a failed append the spool holds %q (%d bytes)", ids(recs), sp.pending())
	}
	ff.syncErr = nil
	fillSpool(t, sp, 3) // records 0-2 again
	sp.close()
	sp, err := openSpool(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.close()
	if recs, _, skipped, _ := sp.peek(100, 1<<20); ids(recs) != "0000 0000 0001 0002 " || skipped != 0 {
		t.Fatalf("after a failed append and a restart: %q, %d skipped", ids(recs), skipped)
	}

	tt := newTrackerTest(t, sessionConfig{})
	tff := &fileFaults{syncErr: eio}
	tt.spool.open = tff.open
	p := recordedPeer(t, 2)
	tt.tr.update([]api.Peer{p}, nil)
	st := map[wg.Key]peerStatus{p.PublicKey: {handshake: tt.now, endpoint: ep1}}
	tt.tr.observe(st)
	if tt.tr.openCount() != 0 || len(tt.plane.mapped) != 0 || counterValue(tt.tr.refused.WithLabelValues(refusedSpool)) != 1 {
		t.Fatalf("a session opened though its record was not fsynced: %d open, mapped %v", tt.tr.openCount(), tt.plane.mapped)
	}
	if lo, _, attributed := tt.tr.sourcePorts(tunnelAddr(p, 0)); !attributed || lo != 0 {
		t.Fatal("a session whose record failed got ports")
	}
	tff.syncErr = nil
	tt.tr.observe(st)
	if recs := tt.records(); tt.tr.openCount() != 1 || len(recs) != 1 || recs[0].PublicKey != p.PublicKey {
		t.Fatalf("once fsync works: %d open, records %+v", tt.tr.openCount(), recs)
	}
}

// TestSpoolCrashWhileEmptying: the gateway dies while ack empties the
// delivered spool, after the file is emptied and before the head file is
// removed. The records spooled after the restart must all be delivered,
// even once the file has grown past the stale head offset.
func TestSpoolCrashWhileEmptying(t *testing.T) {
	dir := t.TempDir()
	ff := &fileFaults{}
	sp := faultySpool(t, dir, ff)
	fillSpool(t, sp, 4)
	_, next, _, _ := sp.peek(2, 1<<20)
	if err := sp.ack(next); err != nil { // the head file holds 2 records' length
		t.Fatal(err)
	}
	_, next, _, _ = sp.peek(100, 1<<20)
	ff.syncErr = errors.New("power lost") // the crash: nothing after this Sync happens
	if err := sp.ack(next); err == nil {
		t.Fatal("ack with a failing fsync returned no error")
	}
	sp.close()

	sp, err := openSpool(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	fillSpool(t, sp, 5)
	sp.close() // and the gateway dies again before delivering them
	sp, err = openSpool(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.close()
	if recs, _, skipped, _ := sp.peek(100, 1<<20); ids(recs) != "0000 0001 0002 0003 0004 " || skipped != 0 {
		t.Fatalf("records spooled after a crash while emptying: %q delivered, %d skipped; want all 5", ids(recs), skipped)
	}
}

// TestSpoolSyncErrorWhileEmptying: an fsync failing while ack empties the
// spool is reported, and the gateway goes on: the records it spools next
// are all delivered, now and after a restart (no hole before them, no
// stale head offset within them).
func TestSpoolSyncErrorWhileEmptying(t *testing.T) {
	dir := t.TempDir()
	ff := &fileFaults{}
	sp := faultySpool(t, dir, ff)
	fillSpool(t, sp, 3)
	_, next, _, _ := sp.peek(1, 1<<20)
	if err := sp.ack(next); err != nil { // the head file holds one record's length
		t.Fatal(err)
	}
	_, next, _, _ = sp.peek(100, 1<<20)
	ff.syncErr = errors.New("input/output error")
	if err := sp.ack(next); err == nil {
		t.Fatal("ack with a failing fsync returned no error")
	}
	ff.syncErr = nil
	fillSpool(t, sp, 2)
	if recs, _, skipped, _ := sp.peek(100, 1<<20); ids(recs) != "0000 0001 " || skipped != 0 {
		t.Fatalf("after a failed emptying: %q, %d skipped", ids(recs), skipped)
	}
	sp.close()
	sp, err := openSpool(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.close()
	recs, _, skipped, _ := sp.peek(100, 1<<20)
	if skipped != 0 || ids(recs) != "0000 0001 " {
		t.Fatalf("after a failed emptying and a restart: %q, %d skipped; want records 0 and 1 whole", ids(recs), skipped)
	}
}

// TestSpoolCompactionOpenFails: compaction replaces the spool file; if the
// new one cannot be opened (no descriptor left, say), the records appended
// next must still land in the file a restart reads, not in the replaced one.
func TestSpoolCompactionOpenFails(t *testing.T) {
	dir := t.TempDir()
	ff := &fileFaults{}
	sp := faultySpool(t, dir, ff)
	sp.limit = 64 << 20
	n := int(spoolCompactAt/recLen(t)) + 10
	for i := 0; i < n; i += 100 {
		if err := sp.append(compactRecords(t, i, min(i+100, n)), false); err != nil {
			t.Fatal(err)
		}
	}
	_, next, _, _ := sp.peek(n-5, 1<<30) // past spoolCompactAt: ack compacts
	ff.openErr = errors.New("too many open files")
	if err := sp.ack(next); err == nil {
		t.Fatal("compaction that could not open the new file returned no error")
	}
	ff.openErr = nil
	if err := sp.append([]api.SessionRecord{testRecord(t, 99)}, false); err != nil {
		t.Fatal(err)
	}
	sp.close()
	sp, err := openSpool(dir, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.close()
	recs, _, skipped, err := sp.peek(1<<20, 1<<30)
	if err != nil || skipped != 0 || len(recs) < 6 || ids(recs[len(recs)-6:]) != ids(append(compactRecords(t, n-5, n), testRecord(t, 99))) {
		t.Fatalf("after a failed compaction and a restart: %d records, last %q, %d skipped, %v; want the 5 not acknowledged and the one appended after", len(recs), ids(recs[max(len(recs)-6, 0):]), skipped, err)
	}
}

// compactRecords is test records i..j-1 (numbered modulo 60, so that all
// have the same length).
func compactRecords(t *testing.T, i, j int) []api.SessionRecord {
	var out []api.SessionRecord
	for k := i; k < j; k++ {
		out = append(out, testRecord(t, k%60))
	}
	return out
}

// TestSpoolFailedAppendLeavesNoRecord: an append whose fsync failed, and
// whose written bytes could not be cut off either, must not leave records
// that a restart delivers: they describe sessions that were refused.
func TestSpoolFailedAppendLeavesNoRecord(t *testing.T) {
	dir := t.TempDir()
	ff := &fileFaults{}
	sp := faultySpool(t, dir, ff)
	fillSpool(t, sp, 1)
	ff.syncErr, ff.truncErr = errors.New("input/output error"), errors.New("input/output error")
	if err := sp.append([]api.SessionRecord{testRecord(t, 1), testRecord(t, 2)}, false); err == nil {
		t.Fatal("append with a failing fsync returned no error")
	}
	ff.syncErr, ff.truncErr = nil, nil
	if err := sp.append([]api.SessionRecord{testRecord(t, 3)}, false); err != nil {
		t.Fatal(err)
	}
	sp.close()
	sp, err := openSpool(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.close()
	if recs, _, skipped, _ := sp.peek(100, 1<<20); ids(recs) != "0000 0003 " || skipped != 0 {
		t.Fatalf("after a failed append and a restart: %q, %d skipped; want records 0 and 3 only", ids(recs), skipped)
	}
}
