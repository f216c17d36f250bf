package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/wg"
)

// fuzzSpoolLine is a record's line as the spool writes it, with a fixed
// key so that fuzz workers build the same seeds.
func fuzzSpoolLine(i int) string {
	r := api.SessionRecord{
		ID: fmt.Sprintf("%032x", i), PublicKey: wg.Key{1, 2, 3, byte(i)}, TunnelIPv4: netip.MustParseAddr("10.200.0.2"),
		Endpoint: netip.MustParseAddrPort("198.51.100.7:40000"), ExitIPv4: netip.MustParseAddr("203.0.113.1"),
		PortLo: 1024, PortHi: 1279, Start: time.Date(2026, 3, 1, 12, 0, i, 0, time.UTC),
	}
	b, err := json.Marshal(r)
	if err != nil {
		panic(err)
	}
	return string(b) + "\n"
}

// FuzzSpoolOpen: a spool file and head offset with any content, as a disk
// error, a crash or a hand edit can leave them, open without panicking or
// failing; draining the spool then delivers, in order, exactly the records
// of the whole lines from the head (from the start when the head is not the
// start of a record in the file) that decode, skips and counts the rest, never
// delivers the torn bytes after the last newline, and leaves nothing
// pending, also after the spool is opened again.
func FuzzSpoolOpen(f *testing.F) {
	l0, l1, l2 := fuzzSpoolLine(0), fuzzSpoolLine(1), fuzzSpoolLine(2)
	for _, c := range []struct{ spool, head string }{
		{l0 + l1 + l2, ""},
		{l0 + l1 + l2, strconv.Itoa(len(l0)) + "\n"},
		{l0 + l1 + l2, strconv.Itoa(len(l0)+len(l1)) + "\n"},
		{l0 + l1 + l2[:40], ""},                                         // torn append
		{l0 + l1, strconv.Itoa(len(l0)+len(l1)+len(l2)) + "\n"},         // emptied after the head was written
		{l0 + l1, strconv.Itoa(len(l0) + 5)},                            // head inside a record
		{l0 + "not json\n" + l1, ""},                                    // unreadable line
		{l0 + "\x00\x00\x00\x00\n" + l1, ""},                            // zeros from a lost block
		{"null\n{}\n[]\n\"x\"\n7\n" + l0, ""},                           // JSON that is no record object
		{l0 + l1, "-1"}, {l0 + l1, "9223372036854775807"}, {l0, "junk"}, // bad heads
		{"", ""}, {"\n\n\n", "1"},
	} {
		f.Add([]byte(c.spool), []byte(c.head))
	}
	f.Fuzz(func(t *testing.T, content, head []byte) {
		if bytes.Count(content, []byte("\n")) > 64 {
			return // every acknowledgement is fsynced: keep runs quick; size adds nothing
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, spoolFile), content, 0o600); err != nil {
			t.Fatal(err)
		}
		if len(head) > 0 {
			if err := os.WriteFile(filepath.Join(dir, spoolHeadFile), head, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		sp, err := openSpool(dir, 1<<20)
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		defer sp.close()

		// The model: the whole lines from the head.
		whole := content[:bytes.LastIndexByte(content, '\n')+1]
		start := 0
		// A head is taken only at the start of a record (readHead).
		if h, err := strconv.ParseInt(strings.TrimSpace(string(head)), 10, 64); err == nil && h > 0 && h <= int64(len(whole)) && whole[h-1] == '\n' {
			start = int(h)
		}
		var want []api.SessionRecord
		unreadable := 0
		lines := bytes.SplitAfter(whole[start:], []byte("\n"))
		for _, line := range lines {
			if len(line) == 0 {
				continue
			}
			var r api.SessionRecord
			if json.Unmarshal(line, &r) != nil {
				unreadable++
				continue
			}
			want = append(want, r)
		}

		var got []api.SessionRecord
		skipped := 0
		for range len(lines) + 1 {
			recs, next, sk, err := sp.peek(2, 300)
			if err != nil {
				t.Fatalf("peek: %v", err)
			}
			if len(recs) == 0 && sk == 0 {
				break
			}
			got, skipped = append(got, recs...), skipped+sk
			if err := sp.ack(next); err != nil {
				t.Fatalf("ack: %v", err)
			}
		}
		if !reflect.DeepEqual(got, want) && !(len(got) == 0 && len(want) == 0) {
			t.Fatalf("delivered %d records, want %d:\n%+v\nwant\n%+v", len(got), len(want), got, want)
		}
		if skipped != unreadable {
			t.Fatalf("skipped %d lines, %d are unreadable", skipped, unreadable)
		}
		if p := sp.pending(); p != 0 {
			t.Fatalf("%d bytes pending after draining", p)
		}
		sp.close()
		again, err := openSpool(dir, 1<<20)
		if err != nil {
			t.Fatalf("reopen: %v", err)
		}
		defer again.close()
		if recs, _, sk, err := again.peek(10, 1<<20); err != nil || len(recs) != 0 || sk != 0 {
			t.Fatalf("after draining and reopening: %d records, %d skipped, %v", len(recs), sk, err)
		}
	})
}
