// Package ntptest runs NTP servers on loopback for tests: chronyd from
// Debian's chrony package, and a scripted responder for the answers a
// real server rarely gives (large offsets, kiss-o'-death, spoofs). Neither
// ever talks to anything but 127.0.0.1.
package ntptest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Chrony is a chronyd serving its host's clock on 127.0.0.1.
type Chrony struct {
	Addr string // 127.0.0.1:port
	cmd  *exec.Cmd
	log  string // chronyd's own log
	done chan struct{}
}

// StartChrony starts chronyd for the test and stops it at cleanup. Its
// configuration names no server (it serves its own clock as "local stratum
// 8"), listens on 127.0.0.1 only, has no command port, and chronyd runs
// with -x, so it never touches the system clock. Without chronyd the test
// is skipped, or fails under CI=true.
func StartChrony(t testing.TB) *Chrony {
	t.Helper()
	bin, err := exec.LookPath("chronyd")
	if err != nil {
		bin = "/usr/sbin/chronyd" // not on the PATH of users other than root
		if _, err := os.Stat(bin); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatal("CI: chronyd is missing: run scripts/install-test-deps.sh (Debian package chrony)")
			}
			t.Skip("needs chronyd from Debian's chrony package (scripts/install-test-deps.sh installs it)")
		}
	}
	dir := t.TempDir()
	port := freeUDPPort(t)
	conf := filepath.Join(dir, "chrony.conf")
	err = os.WriteFile(conf, []byte(fmt.Sprintf(`# A test server: no sources, loopback only, never touches the clock.
port %d
bindaddress 127.0.0.1
allow 127.0.0.1
local stratum 8
cmdport 0
bindcmdaddress /
pidfile %s
driftfile %s
`, port, filepath.Join(dir, "chronyd.pid"), filepath.Join(dir, "drift"))), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	c := &Chrony{Addr: fmt.Sprintf("127.0.0.1:%d", port), log: filepath.Join(dir, "chronyd.log"), done: make(chan struct{})}
	logf, err := os.Create(c.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	// -d: foreground, logging to stderr; -x: do not set the clock; -4:
	// IPv4 only; -U: no check for root. As root it would switch to the
	// _chrony user, who may not write in the test's directory.
	args := []string{"-f", conf, "-d", "-x", "-4", "-U"}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "root")
	}
	c.cmd = exec.Command(bin, args...)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("starting chronyd: %v", err)
	}
	go func() { c.cmd.Wait(); close(c.done) }()
	t.Cleanup(c.Stop)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if answers(c.Addr) {
			return c
		}
		select {
		case <-c.done:
			t.Fatalf("chronyd exited: %s", c.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("chronyd did not answer on %s within 10 s: %s", c.Addr, c.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops chronyd (by its process id) and waits for it to exit.
func (c *Chrony) Stop() {
	select {
	case <-c.done:
		return
	default:
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		c.cmd.Process.Kill()
		<-c.done
	}
}

// Log returns what chronyd has logged.
func (c *Chrony) Log() string {
	b, _ := os.ReadFile(c.log)
	return string(b)
}

// answers reports whether an NTP server answers a client request at addr.
func answers(addr string) bool {
	conn, err := net.Dial("udp", addr)
	if err != nil {
		return false
	}
	defer conn.Close()
	req := make([]byte, packetLen)
	req[0] = 4<<3 | 3 // version 4, client
	binary.BigEndian.PutUint64(req[40:], uint64(time.Now().UnixNano()))
	conn.SetDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := conn.Write(req); err != nil {
		return false
	}
	buf := make([]byte, 512)
	n, err := conn.Read(buf)
	return err == nil && n >= packetLen && buf[0]&7 == 4
}

func freeUDPPort(t testing.TB) int {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

const packetLen = 48

// Reply says how a Responder answers one request.
type Reply struct {
	Skew        time.Duration // added to the responder's clock
	Leap        uint8         // leap indicator; 3: not synchronised
	Stratum     uint8         // default 2
	Kiss        string        // a kiss-o'-death with this code (stratum 0), e.g. RATE
	WrongOrigin bool          // echo another origin timestamp, as a blind spoofer would
}

// Responder is a scripted NTP server on 127.0.0.1.
type Responder struct {
	Addr     string
	conn     net.PacketConn
	requests atomic.Int64
}

// Respond starts a responder for the test; it closes at cleanup. script
// gives the replies, in order, to the n-th request (counting from 1): none
// means silence.
func Respond(t testing.TB, script func(n int) []Reply) *Responder {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Responder{Addr: conn.LocalAddr().String(), conn: conn}
	done := make(chan struct{})
	t.Cleanup(func() { conn.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 512)
		for {
			n, from, err := conn.ReadFrom(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil || n < packetLen || buf[0]&7 != 3 {
				continue
			}
			recv := time.Now()
			origin := binary.BigEndian.Uint64(buf[40:])
			for _, rep := range script(int(r.requests.Add(1))) {
				conn.WriteTo(rep.packet(origin, recv), from)
			}
		}
	}()
	return r
}

// Requests is the number of requests received so far.
func (r *Responder) Requests() int { return int(r.requests.Load()) }

func (rep Reply) packet(origin uint64, recv time.Time) []byte {
	stratum, refID := rep.Stratum, [4]byte{192, 0, 2, 1}
	if stratum == 0 {
		stratum = 2
	}
	if rep.Kiss != "" {
		stratum, refID = 0, [4]byte{}
		copy(refID[:], rep.Kiss)
	}
	if rep.WrongOrigin {
		origin ^= 0x5a5a5a5a5a5a5a5a
	}
	b := make([]byte, packetLen)
	b[0] = rep.Leap<<6 | 4<<3 | 4 // version 4, server
	b[1] = stratum
	b[2] = 6                                      // poll 64 s
	b[3] = 0xec                                   // precision 2^-20 s
	binary.BigEndian.PutUint32(b[4:], 1<<16/1000) // root delay 1 ms
	binary.BigEndian.PutUint32(b[8:], 1<<16/1000) // root dispersion 1 ms
	copy(b[12:], refID[:])
	binary.BigEndian.PutUint64(b[16:], ntp(recv.Add(rep.Skew-time.Minute)))
	binary.BigEndian.PutUint64(b[24:], origin)
	binary.BigEndian.PutUint64(b[32:], ntp(recv.Add(rep.Skew)))
	binary.BigEndian.PutUint64(b[40:], ntp(time.Now().Add(rep.Skew)))
	return b
}

// ntp encodes t as an NTP timestamp; the seconds wrap at the 2036 era
// change, as on the wire.
func ntp(t time.Time) uint64 {
	sec := uint64(t.Unix() + 2208988800)
	frac := uint64(t.Nanosecond()) << 32 / 1e9
	return sec<<32 | frac
}
