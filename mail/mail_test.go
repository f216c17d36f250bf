package mail

import (
	"context"
	"io"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// smtpServer runs a real SMTP server (aiosmtpd from Debian's
// python3-aiosmtpd) on loopback, delivering into a maildir.
func smtpServer(t *testing.T) (addr, maildir string) {
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
	addr = l.Addr().String()
	l.Close()
	maildir = filepath.Join(t.TempDir(), "Maildir")
	cmd := exec.Command("/usr/bin/python3", "-m", "aiosmtpd", "-n", "-l", addr, "-c", "aiosmtpd.handlers.Mailbox", maildir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return addr, maildir
		}
		if time.Now().After(deadline) {
			t.Fatalf("SMTP server did not start: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// delivered returns the messages in the maildir.
func delivered(t *testing.T, maildir string) []*mail.Message {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(maildir, "new", "*"))
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

func TestSendThroughRealSMTPServer(t *testing.T) {
	addr, maildir := smtpServer(t)
	m, err := New(Config{Server: addr, From: "Meridian <noreply@vpn.example>"})
	if err != nil {
		t.Fatal(err)
	}
	id, err := m.Send(context.Background(), Message{To: []string{"incident@cert-in.org.in"}, Subject: "Incident report — type 8", Body: "Type of incident: DoS\nLine two = café"})
	if err != nil {
		t.Fatal(err)
	}
	var msgs []*mail.Message
	for deadline := time.Now().Add(5 * time.Second); len(msgs) == 0 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		msgs = delivered(t, maildir)
	}
	if len(msgs) != 1 {
		t.Fatalf("%d messages delivered, want 1", len(msgs))
	}
	h := msgs[0].Header
	subj, _ := new(mime.WordDecoder).DecodeHeader(h.Get("Subject"))
	if h.Get("To") != "<incident@cert-in.org.in>" || h.Get("Message-Id") != id || subj != "Incident report — type 8" {
		t.Fatalf("headers: To %q, Message-Id %q (want %q), Subject %q", h.Get("To"), h.Get("Message-Id"), id, subj)
	}
	raw, _ := io.ReadAll(msgs[0].Body)
	body, err := io.ReadAll(quotedprintable.NewReader(strings.NewReader(string(raw))))
	if err != nil || !strings.Contains(strings.ReplaceAll(string(body), "\r\n", "\n"), "Type of incident: DoS\nLine two = café") {
		t.Fatalf("body: %q %v", body, err)
	}
}

func TestBadInput(t *testing.T) {
	for _, c := range []Config{{Server: "nohost", From: "a@b.c"}, {Server: "127.0.0.1:25", From: "not an address"}, {Server: "127.0.0.1:25", From: "a@b.c", TLS: "maybe"}} {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
	m, _ := New(Config{Server: "127.0.0.1:1", From: "a@b.c", Timeout: time.Second})
	if _, err := m.Send(context.Background(), Message{To: []string{"x"}}); err == nil || !strings.Contains(err.Error(), "not an email address") {
		t.Errorf("bad recipient: %v", err)
	}
	_, err := m.Send(context.Background(), Message{To: []string{"a@b.c"}, Subject: "s", Body: "secret body"})
	if err == nil || strings.Contains(err.Error(), "secret body") {
		t.Errorf("unreachable server: %v", err)
	}
}
