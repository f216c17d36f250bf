// Package mail sends Meridian's email through one configured SMTP server:
// one-time codes that validate subscribers' email addresses, and incident
// reports.
package mail

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/smtp"
	"net/textproto"
	"strings"
	"time"
)

// Config says how to reach the SMTP server.
type Config struct {
	Server   string // host:port
	From     string // envelope and header sender
	Username string // optional; AUTH PLAIN, only over TLS or to loopback
	Password string
	// TLS: "starttls" (required), "opportunistic" (STARTTLS when offered;
	// the default) or "none". Implicit TLS (port 465) is "tls".
	TLS     string
	Timeout time.Duration // default 30 s
}

// Mailer sends messages.
type Mailer struct {
	cfg  Config
	from *mail.Address
}

// New checks the configuration.
func New(cfg Config) (*Mailer, error) {
	if _, _, err := net.SplitHostPort(cfg.Server); err != nil {
		return nil, fmt.Errorf("mail: SMTP server %q: want host:port", cfg.Server)
	}
	from, err := mail.ParseAddress(cfg.From)
	if err != nil {
		return nil, fmt.Errorf("mail: sender %q is not an email address", cfg.From)
	}
	switch cfg.TLS {
	case "":
		cfg.TLS = "opportunistic"
	case "starttls", "opportunistic", "none", "tls":
	default:
		return nil, fmt.Errorf("mail: TLS mode %q: want starttls, opportunistic, tls or none", cfg.TLS)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	return &Mailer{cfg: cfg, from: from}, nil
}

// Message is one plain-text email.
type Message struct {
	To      []string
	Subject string
	Body    string
}

// Send delivers msg to the SMTP server and returns the Message-ID it gave
// the message. Recipients are checked first; errors never contain the body.
func (m *Mailer) Send(ctx context.Context, msg Message) (string, error) {
	if len(msg.To) == 0 {
		return "", errors.New("mail: no recipient")
	}
	var to []*mail.Address
	for _, r := range msg.To {
		a, err := mail.ParseAddress(r)
		if err != nil {
			return "", fmt.Errorf("mail: recipient is not an email address")
		}
		to = append(to, a)
	}
	id := messageID(m.from.Address)
	data := m.render(msg, to, id)

	ctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	defer cancel()
	host, _, _ := net.SplitHostPort(m.cfg.Server)
	d := net.Dialer{}
	var conn net.Conn
	var err error
	if m.cfg.TLS == "tls" {
		conn, err = (&tls.Dialer{NetDialer: &d, Config: &tls.Config{ServerName: host}}).DialContext(ctx, "tcp", m.cfg.Server)
	} else {
		conn, err = d.DialContext(ctx, "tcp", m.cfg.Server)
	}
	if err != nil {
		return "", fmt.Errorf("mail: connecting to %s: %w", m.cfg.Server, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return "", fmt.Errorf("mail: %s: %w", m.cfg.Server, err)
	}
	defer c.Close()
	if m.cfg.TLS == "starttls" || m.cfg.TLS == "opportunistic" {
		if ok, _ := c.Extension("STARTTLS"); ok {
			if err := c.StartTLS(&tls.Config{ServerName: host}); err != nil {
				return "", fmt.Errorf("mail: STARTTLS with %s: %w", m.cfg.Server, err)
			}
		} else if m.cfg.TLS == "starttls" {
			return "", fmt.Errorf("mail: %s does not offer STARTTLS, which is required", m.cfg.Server)
		}
	}
	if m.cfg.Username != "" {
		if err := c.Auth(smtp.PlainAuth("", m.cfg.Username, m.cfg.Password, host)); err != nil {
			return "", fmt.Errorf("mail: authenticating to %s: %w", m.cfg.Server, err)
		}
	}
	if err := c.Mail(m.from.Address); err != nil {
		return "", fmt.Errorf("mail: sender refused by %s%s", m.cfg.Server, smtpCode(err))
	}
	for _, a := range to {
		if err := c.Rcpt(a.Address); err != nil {
			return "", fmt.Errorf("mail: recipient refused by %s%s", m.cfg.Server, smtpCode(err))
		}
	}
	w, err := c.Data()
	if err != nil {
		return "", fmt.Errorf("mail: %w", err)
	}
	if _, err := w.Write(data); err != nil {
		return "", fmt.Errorf("mail: sending data: %w", err)
	}
	if err := w.Close(); err != nil {
		return "", fmt.Errorf("mail: message refused by %s%s", m.cfg.Server, smtpCode(err))
	}
	return id, c.Quit()
}

func (m *Mailer) render(msg Message, to []*mail.Address, id string) []byte {
	var b bytes.Buffer
	var rcpt []string
	for _, a := range to {
		rcpt = append(rcpt, a.String())
	}
	header := func(k, v string) { fmt.Fprintf(&b, "%s: %s\r\n", k, v) }
	header("From", m.from.String())
	header("To", strings.Join(rcpt, ", "))
	header("Subject", mime.QEncoding.Encode("utf-8", msg.Subject))
	header("Date", time.Now().UTC().Format(time.RFC1123Z))
	header("Message-ID", id)
	header("MIME-Version", "1.0")
	header("Content-Type", "text/plain; charset=utf-8")
	header("Content-Transfer-Encoding", "quoted-printable")
	b.WriteString("\r\n")
	qp := quotedprintable.NewWriter(&b)
	qp.Write([]byte(strings.ReplaceAll(msg.Body, "\n", "\r\n")))
	qp.Close()
	return b.Bytes()
}

func messageID(from string) string {
	r := make([]byte, 16)
	rand.Read(r)
	domain := "meridian.invalid"
	if i := strings.LastIndex(from, "@"); i >= 0 {
		domain = from[i+1:]
	}
	return "<" + hex.EncodeToString(r) + "@" + domain + ">"
}

// smtpCode describes a server's refusal by its SMTP code only: the text of
// a refusal often repeats the address, which is personal data and must not
// reach logs or error messages.
func smtpCode(err error) string {
	var te *textproto.Error
	if errors.As(err, &te) {
		return fmt.Sprintf(" (SMTP %d)", te.Code)
	}
	return " (connection failed)"
}
