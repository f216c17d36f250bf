package timesync

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestTimestampEras(t *testing.T) {
	eraChange := time.Date(2036, 2, 7, 6, 28, 16, 0, time.UTC) // NTP seconds wrap to 0
	for _, tc := range []struct{ t, pivot time.Time }{
		{time.Date(2026, 11, 25, 12, 0, 0, 123456789, time.UTC), time.Date(2026, 11, 25, 12, 0, 1, 0, time.UTC)},
		{eraChange.Add(-time.Second), eraChange.Add(time.Second)},
		{eraChange.Add(time.Second), eraChange.Add(-time.Second)},
		{eraChange.Add(30 * 365 * 24 * time.Hour), eraChange},
		{time.Date(1999, 12, 31, 23, 59, 59, 0, time.UTC), time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)},
	} {
		got := toNTP(tc.t).time(tc.pivot)
		if d := got.Sub(tc.t); d < -time.Nanosecond || d > time.Nanosecond {
			t.Errorf("%s seen from %s: got %s", tc.t, tc.pivot, got)
		}
	}
	if toNTP(eraChange) != 0 {
		t.Errorf("the 2036 era change encodes as %#x, want 0", toNTP(eraChange))
	}
}

// TestSample checks the offset and delay of RFC 5905 section 8 on a reply
// whose times are known: the server's clock is 3 s ahead, the path takes
// 10 ms each way, and the server holds the request for 2 ms.
func TestSample(t *testing.T) {
	t1 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	srv := t1.Add(3 * time.Second)
	p := packet{Version: 4, Mode: modeServer, Stratum: 1, RefID: [4]byte{'G', 'P', 'S', 0},
		RootDelay: 1 << 16 / 100, RootDisp: 1 << 16 / 1000,
		Receive: toNTP(srv.Add(10 * time.Millisecond)), Transmit: toNTP(srv.Add(12 * time.Millisecond))}
	s, err := sample(p, t1, 22*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	near := func(got, want time.Duration) bool { return got-want < time.Microsecond && want-got < time.Microsecond }
	if !near(s.Offset, 3*time.Second) || !near(s.Delay, 20*time.Millisecond) {
		t.Fatalf("offset %s, delay %s: want 3s and 20ms", s.Offset, s.Delay)
	}
	if s.Stratum != 1 || s.RefID != "GPS" || s.Leap != LeapNone || s.RootDelay != shortDuration(655) || s.RootDelay.Round(time.Millisecond) != 10*time.Millisecond {
		t.Fatalf("got %+v", s)
	}

	for _, tc := range []struct {
		name string
		edit func(*packet)
		want error
	}{
		{"leap indicator 3", func(p *packet) { p.Leap = LeapAlarm }, ErrUnsynchronised},
		{"stratum 16", func(p *packet) { p.Stratum = 16 }, ErrUnsynchronised},
		{"stratum 0 without code", func(p *packet) { p.Stratum, p.RefID = 0, [4]byte{} }, ErrUnsynchronised},
		{"root distance over 16 s", func(p *packet) { p.RootDisp = 17 << 16 }, ErrUnsynchronised},
		{"version 0", func(p *packet) { p.Version = 0 }, ErrBogus},
		{"zero transmit time", func(p *packet) { p.Transmit = 0 }, ErrBogus},
		{"sent before received", func(p *packet) { p.Receive, p.Transmit = p.Transmit, p.Receive }, ErrBogus},
	} {
		q := p
		tc.edit(&q)
		if _, err := sample(q, t1, 22*time.Millisecond); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	q := p
	q.Stratum, q.RefID = 0, [4]byte{'R', 'A', 'T', 'E'}
	var kiss *KissError
	if _, err := sample(q, t1, 22*time.Millisecond); !errors.As(err, &kiss) || kiss.Code != "RATE" {
		t.Fatalf("kiss-o'-death: got %v", err)
	}
}

func TestRefID(t *testing.T) {
	for _, tc := range []struct {
		stratum uint8
		id      [4]byte
		want    string
	}{
		{1, [4]byte{'G', 'P', 'S', 0}, "GPS"},
		{0, [4]byte{'D', 'E', 'N', 'Y'}, "DENY"},
		{0, [4]byte{'R', 0x1b, '\n', 'E'}, "R??E"}, // nothing unprintable reaches a log
		{3, [4]byte{192, 0, 2, 1}, "192.0.2.1"},
	} {
		if got := refID(tc.stratum, tc.id); got != tc.want {
			t.Errorf("refID(%d, %v) = %q, want %q", tc.stratum, tc.id, got, tc.want)
		}
	}
}

func TestSplitSource(t *testing.T) {
	for _, tc := range []struct {
		in, host string
		port     int
		err      string
	}{
		{"samay1.nic.in", "samay1.nic.in", 123, ""},
		{"time.example.org:1123", "time.example.org", 1123, ""},
		{"169.254.169.123", "169.254.169.123", 123, ""},
		{"127.0.0.1:4123", "127.0.0.1", 4123, ""},
		{"2001:db8::1", "2001:db8::1", 123, ""},
		{"[2001:db8::1]:4123", "2001:db8::1", 4123, ""},
		{"", "", 0, "want HOST"},
		{"time.example.org:0", "", 0, "port must be"},
		{"time.example.org:ntp", "", 0, "port must be"},
		{"bad host", "", 0, "want HOST"},
		{"-x.example.org", "", 0, "want HOST"},
		{"[2001:db8::1", "", 0, "missing ']'"},
	} {
		host, port, err := splitSource(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: got %v, want an error containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || host != tc.host || port != tc.port {
			t.Errorf("%q: got %q %d %v, want %q %d", tc.in, host, port, err, tc.host, tc.port)
		}
	}
}

func TestChronyConfig(t *testing.T) {
	conf, err := ChronyConfig("in1", []string{"samay1.nic.in", "time.example.org:1123", "[2001:db8::1]:123"}, "Required by IN / cert-in-2022 / direction (i).")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`# chrony.conf for Meridian node "in1"`,
		"# Required by IN / cert-in-2022 / direction (i).\n",
		"\nserver samay1.nic.in iburst\n",
		"\nserver time.example.org port 1123 iburst\n",
		"\nserver 2001:db8::1 iburst\n",
		"\nmakestep 1.0 3\n",
		"\nrtcsync\n",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("config lacks %q:\n%s", want, conf)
		}
	}
	if _, err := ChronyConfig("gw", nil, "none"); err == nil {
		t.Error("a config without sources was written")
	}
	if _, err := ChronyConfig("gw", []string{"bad host"}, "x"); err == nil {
		t.Error("a config with an invalid source was written")
	}
}

// FuzzParsePacket feeds the parser and the reply checks arbitrary bytes:
// they must not panic, a parsed header must encode back to the same bytes,
// and an accepted reply must have a sane delay and distance.
func FuzzParsePacket(f *testing.F) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	good := packet{Version: 4, Mode: modeServer, Stratum: 2, RefID: [4]byte{192, 0, 2, 1},
		Origin: 42, Receive: toNTP(now), Transmit: toNTP(now.Add(time.Millisecond))}
	kiss := good
	kiss.Stratum, kiss.RefID = 0, [4]byte{'R', 'A', 'T', 'E'}
	f.Add(good.marshal(), int64(5*time.Millisecond))
	f.Add(kiss.marshal(), int64(time.Millisecond))
	f.Add(append(good.marshal(), 0, 0, 0, 4, 1, 2, 3, 4), int64(0)) // with an extension field
	f.Add(make([]byte, 47), int64(0))
	f.Fuzz(func(t *testing.T, b []byte, rtt int64) {
		p, err := parsePacket(b)
		if err != nil {
			if len(b) >= packetLen {
				t.Fatalf("%d bytes refused: %v", len(b), err)
			}
			return
		}
		if out := p.marshal(); !bytes.Equal(out, b[:packetLen]) {
			t.Fatalf("parse and marshal changed the header:\n%x\n%x", b[:packetLen], out)
		}
		rt := time.Duration(rtt) % time.Minute
		if rt < 0 {
			rt = -rt
		}
		s, err := sample(p, now, rt)
		if err != nil {
			return
		}
		if s.Delay < 0 || s.distance() > maxDistance || s.Stratum < 1 || s.Stratum > 15 || s.Leap == LeapAlarm {
			t.Fatalf("accepted an unusable reply: %+v", s)
		}
	})
}
