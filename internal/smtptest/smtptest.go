// Package smtptest runs a real SMTP server for tests: aiosmtpd from
// Debian's python3-aiosmtpd, on loopback, delivering into a maildir.
package smtptest

import (
	"net"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Server is a running SMTP server.
type Server struct {
	Addr    string // host:port on 127.0.0.1
	maildir string
}

// Start starts a server for the test and stops it at cleanup. Without
// python3-aiosmtpd the test is skipped, or fails under CI=true.
func Start(t testing.TB) *Server {
	t.Helper()
	if err := exec.Command("/usr/bin/python3", "-c", "import aiosmtpd").Run(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI: python3-aiosmtpd is missing: run scripts/install-test-deps.sh")
		}
		t.Skip("needs Debian's python3-aiosmtpd (scripts/install-test-deps.sh installs it)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Addr: l.Addr().String(), maildir: filepath.Join(t.TempDir(), "Maildir")}
	l.Close()
	cmd := exec.Command("/usr/bin/python3", "-m", "aiosmtpd", "-n", "-l", s.Addr, "-c", "aiosmtpd.handlers.Mailbox", s.maildir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		c, err := net.Dial("tcp", s.Addr)
		if err == nil {
			c.Close()
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("SMTP server did not start: %v", err)
		}
	}
}

// Wait returns the delivered messages once there are at least n, failing
// the test after 10 s.
func (s *Server) Wait(t testing.TB, n int) []*mail.Message {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		files, _ := filepath.Glob(filepath.Join(s.maildir, "new", "*"))
		if len(files) >= n {
			var out []*mail.Message
			for _, f := range files {
				b, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				m, err := mail.ReadMessage(strings.NewReader(string(b)))
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, m)
			}
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d message(s) delivered, want %d", len(files), n)
		}
	}
}
