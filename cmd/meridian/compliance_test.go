package main

import (
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/internal/check"
)

// FuzzLookupQuery: whatever the flags of 'compliance lookup', lookupQuery
// does not panic, and what it accepts is a query the server can answer:
// the case, exactly one kind of lookup with exactly the fields it takes,
// an address without a zone, a port from 1 to 65535 written as given, times
// of the instants given, in UTC and in range, --to after --from.
func FuzzLookupQuery(f *testing.F) {
	f.Add("C-1", uint8(0), "192.0.2.1", "443", "2026-05-01T09:00:00Z", "", "", "")
	f.Add("C-1", uint8(0), "192.0.2.1", "0", "2026-05-01T14:30:00+05:30", "", "", "")
	f.Add("C-1", uint8(0), "::ffff:192.0.2.1", "+80", "2026-05-01T14:30:00", "", "", "")
	f.Add("C-1", uint8(1), "fd00::2", "", "2026-05-01T09:00:00.25-01:00", "", "", "")
	f.Add("C-1", uint8(1), "fe80::1%eth0", "", "0026-05-01T09:00:00Z", "", "", "")
	f.Add("C-1", uint8(2), "198.51.100.7", "", "", "2026-05-01T00:00:00+05:30", "2026-05-01T00:00:00Z", "")
	f.Add("C-1", uint8(3), "alice", "", "", "2026-05-02T00:00:00Z", "2026-05-01T00:00:00Z", "")
	f.Add(" ", uint8(3), "alice", "65536", "", "2026-05-01T00:00:00Z", "2026-05-02T00:00:00Z", "tunnel-ip")
	f.Add("C-1\n", uint8(0), "192.0.2.1", "-1", "9999-01-01T00:00:00Z", "", "", "subscriber")
	f.Fuzz(func(t *testing.T, ref string, kind uint8, v, port, at, from, to, extra string) {
		given := map[string]string{}
		set := func(k, x string) {
			if x != "" {
				given[k] = x
			}
		}
		set("case", ref)
		k := lookupKinds[int(kind)%len(lookupKinds)]
		set(k.flag, v)
		set("port", port)
		set("at", at)
		set("from", from)
		set("to", to)
		if extra == "tunnel-ip" || extra == "subscriber" {
			set(extra, "x")
		}
		q, err := lookupQuery(given)
		if err != nil {
			return
		}
		if q.Get("case") != ref || check.CaseRef(ref, nil) != nil {
			t.Fatalf("case %q accepted as %q", ref, q.Get("case"))
		}
		want := 2 + len(k.needs)
		if len(q) != want {
			t.Fatalf("query %v has %d fields, want %d", q, len(q), want)
		}
		if k.flag != "subscriber" {
			a, err := netip.ParseAddr(q.Get(map[string]string{"exit-ip": "exit_ip", "tunnel-ip": "tunnel_ip", "endpoint-ip": "endpoint_ip"}[k.flag]))
			if err != nil || a.Zone() != "" || a.Is4In6() {
				t.Fatalf("address %q accepted (%v)", v, q)
			}
		}
		if p := q.Get("port"); p != "" {
			n, err := strconv.Atoi(p)
			if err != nil || n < 1 || n > 65535 || p != port {
				t.Fatalf("port %q accepted as %q", port, p)
			}
		}
		inst := map[string]time.Time{}
		for f, orig := range map[string]string{"at": at, "from": from, "to": to} {
			s := q.Get(f)
			if s == "" {
				continue
			}
			got, err1 := time.Parse(time.RFC3339Nano, s)
			in, err2 := time.Parse(time.RFC3339Nano, orig)
			if err1 != nil || err2 != nil || !got.Equal(in) || got.Location() != time.UTC || check.Time(got) != nil {
				t.Fatalf("--%s %q sent as %q", f, orig, s)
			}
			inst[f] = got
		}
		if _, ok := inst["from"]; ok && !inst["to"].After(inst["from"]) {
			t.Fatalf("window %v to %v accepted", inst["from"], inst["to"])
		}
	})
}
