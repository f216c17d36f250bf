package mail

import (
	"context"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/internal/smtptest"
)

func TestSendThroughRealSMTPServer(t *testing.T) {
	srv := smtptest.Start(t)
	m, err := New(Config{Server: srv.Addr, From: "Meridian <noreply@vpn.example>"})
	if err != nil {
		t.Fatal(err)
	}
	id, err := m.Send(context.Background(), Message{To: []string{"incident@cert-in.org.in"}, Subject: "Incident report — type 8", Body: "Type of incident: DoS\nLine two = café"})
	if err != nil {
		t.Fatal(err)
	}
	msgs := srv.Wait(t, 1)
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

func TestRefusalsNameNoAddress(t *testing.T) {
	err := fmt.Errorf("mail: recipient refused by x%s", smtpCode(&textproto.Error{Code: 550, Msg: "5.1.1 <asha@example.in>: Recipient address rejected"}))
	if strings.Contains(err.Error(), "asha") || !strings.Contains(err.Error(), "SMTP 550") {
		t.Fatalf("refusal: %v", err)
	}
}
