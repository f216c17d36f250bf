package ictlog

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/store"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newLog(t *testing.T) (*Log, *clock, *store.DB) {
	t.Helper()
	db, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	return New(db, c.now), c, db
}

func event(at time.Time, name string, keep int) api.ICTLogEntry {
	return api.ICTLogEntry{At: at, Node: api.ControlNode, Country: "IN", Category: Auth, Event: name, Outcome: Failure, KeepDays: keep}
}

func export(t *testing.T, l *Log, from, to time.Time) []string {
	t.Helper()
	var buf bytes.Buffer
	n, sum, err := l.Export(context.Background(), from, to, &buf)
	if err != nil {
		t.Fatal(err)
	}
	if h := sha256.Sum256(buf.Bytes()); hex.EncodeToString(h[:]) != sum {
		t.Fatalf("export's SHA-256 %s does not match its bytes", sum)
	}
	var names []string
	sc := bufio.NewScanner(&buf)
	for sc.Scan() {
		var e api.ICTLogEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		names = append(names, e.Event)
	}
	if int64(len(names)) != n {
		t.Fatalf("Export said %d entries, wrote %d", n, len(names))
	}
	return names
}

func TestPurgeKeepsTheRetention(t *testing.T) {
	l, c, _ := newLog(t)
	ctx := context.Background()
	start := c.t
	l.Add(event(start, "day 0", 180))
	l.Add(event(start.Add(24*time.Hour), "day 1", 180))
	l.Add(event(start.Add(10*24*time.Hour), "day 10 (kept 365 days)", 365))
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	purge := func(at time.Time, keep int) []string {
		t.Helper()
		c.t = at
		if _, err := l.Purge(ctx, keep); err != nil {
			t.Fatal(err)
		}
		return export(t, l, start, start.Add(400*24*time.Hour))
	}
	// 180 days after day 0, to the nanosecond, day 0 is still inside the
	// rolling window; a moment later it is gone, and day 1 stays.
	if got := purge(start.Add(180*24*time.Hour), 180); len(got) != 3 {
		t.Fatalf("at exactly 180 days: %q", got)
	}
	if got := purge(start.Add(180*24*time.Hour+time.Nanosecond), 180); strings.Join(got, ",") != "day 1,day 10 (kept 365 days)" {
		t.Fatalf("just after 180 days: %q", got)
	}
	// A longer retention set now keeps what a shorter one would purge.
	if got := purge(start.Add(200*24*time.Hour), 365); len(got) != 2 {
		t.Fatalf("with a duty of 365 days now: %q", got)
	}
	// With no duty left, each entry still gets the retention it was
	// recorded under.
	if got := purge(start.Add(200*24*time.Hour), 0); strings.Join(got, ",") != "day 10 (kept 365 days)" {
		t.Fatalf("with no duty now: %q", got)
	}
	if got := purge(start.Add(376*24*time.Hour), 0); len(got) != 0 {
		t.Fatalf("after 365 days: %q", got)
	}
}

func TestExportRangeBoundaries(t *testing.T) {
	l, c, _ := newLog(t)
	t0 := c.t
	for i, d := range []time.Duration{-time.Nanosecond, 0, time.Nanosecond, time.Hour - time.Nanosecond, time.Hour, time.Hour + time.Nanosecond} {
		l.Add(event(t0.Add(d), string(rune('a'+i)), 180))
	}
	// [t0, t0+1h): from is in, to is out, to the nanosecond.
	if got := strings.Join(export(t, l, t0, t0.Add(time.Hour)), ""); got != "bcd" {
		t.Fatalf("export [t0, t0+1h) = %q, want bcd", got)
	}
	// Adjacent ranges cover everything once.
	if got := strings.Join(append(export(t, l, t0.Add(-time.Hour), t0), export(t, l, t0, t0.Add(2*time.Hour))...), ""); got != "abcdef" {
		t.Fatalf("adjacent exports = %q", got)
	}
	// The same instant in another zone is the same boundary.
	ist := time.FixedZone("IST", 5*3600+1800)
	if got := strings.Join(export(t, l, t0.In(ist), t0.Add(time.Hour).In(ist)), ""); got != "bcd" {
		t.Fatalf("export in IST = %q", got)
	}
	for _, r := range [][2]time.Time{{t0, t0}, {t0.Add(time.Hour), t0}} {
		if _, _, err := l.Export(context.Background(), r[0], r[1], &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "must be before") {
			t.Fatalf("export %v: %v", r, err)
		}
	}
}

func TestExportPagesInOrder(t *testing.T) {
	l, c, _ := newLog(t)
	// More than a page, many with the same time, added out of order.
	for i := 2500; i > 0; i-- {
		l.Add(event(c.t.Add(time.Duration(i/3)*time.Second), "e", 180))
	}
	var buf bytes.Buffer
	n, _, err := l.Export(context.Background(), c.t, c.t.Add(time.Hour), &buf)
	if err != nil || n != 2500 {
		t.Fatalf("exported %d, %v", n, err)
	}
	var prev api.ICTLogEntry
	seen := map[int64]bool{}
	for sc := bufio.NewScanner(&buf); sc.Scan(); {
		var e api.ICTLogEntry
		json.Unmarshal(sc.Bytes(), &e)
		if seen[e.ID] || e.At.Before(prev.At) || (e.At.Equal(prev.At) && e.ID < prev.ID) {
			t.Fatalf("entry %d at %v after %d at %v", e.ID, e.At, prev.ID, prev.At)
		}
		seen[e.ID], prev = true, e
	}
}

func TestFullBufferLogsTheLoss(t *testing.T) {
	l, c, _ := newLog(t)
	for range maxPending + 7 {
		l.Add(event(c.t, "flood", 180))
	}
	n, _, _, dropped, err := l.Stats(context.Background())
	if err != nil || n != maxPending+1 || dropped != 7 {
		t.Fatalf("stats: %d entries, %d dropped, %v", n, dropped, err)
	}
	got := export(t, l, c.t, c.t.Add(time.Second))
	if got[len(got)-1] != "events lost" {
		t.Fatalf("last event %q", got[len(got)-1])
	}
}

func TestFailedFlushKeepsEvents(t *testing.T) {
	l, c, db := newLog(t)
	l.Add(event(c.t, "first", 180))
	if _, err := db.Exec(`CREATE TRIGGER refuse BEFORE INSERT ON ict_log BEGIN SELECT RAISE(ABORT, 'disk full'); END`); err != nil {
		t.Fatal(err)
	}
	if err := l.Flush(context.Background()); err == nil {
		t.Fatal("flush succeeded")
	}
	l.Add(event(c.t, "second", 180))
	db.Exec(`DROP TRIGGER refuse`)
	if got := strings.Join(export(t, l, c.t, c.t.Add(time.Second)), ","); got != "first,second" {
		t.Fatalf("after a failed flush: %q", got)
	}
}

// Each entry keeps the retention it was recorded under to the nanosecond,
// whatever the duties now: none, a shorter one, or the same.
func TestPurgeEdgesOfTheRecordedRetention(t *testing.T) {
	for _, keepNow := range []int{0, 90, 180} {
		l, c, _ := newLog(t)
		ctx := context.Background()
		start := c.t
		l.Add(event(start, "day 0", 180))
		l.Add(event(start.Add(24*time.Hour), "day 1", 180))
		if err := l.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		for _, step := range []struct {
			at   time.Duration
			want string
		}{
			{179 * 24 * time.Hour, "day 0,day 1"},
			{180 * 24 * time.Hour, "day 0,day 1"},
			{180*24*time.Hour + time.Nanosecond, "day 1"},
			{181 * 24 * time.Hour, "day 1"},
			{181*24*time.Hour + time.Nanosecond, ""},
		} {
			c.t = start.Add(step.at)
			if _, err := l.Purge(ctx, keepNow); err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(export(t, l, start, start.Add(400*24*time.Hour)), ","); got != step.want {
				t.Fatalf("duty of %d days now, purged %s after day 0: %q left, want %q", keepNow, step.at, got, step.want)
			}
		}
	}
}
