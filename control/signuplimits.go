package control

// Limits on the public sign-up (POST /signup): per client network address,
// per email address, verification mails per address a day; and the expiry
// of sign-ups never confirmed by use.

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meridian-vpn/meridian/ledger"
	"github.com/meridian-vpn/meridian/store"
)

// Defaults of the sign-up limits in Config (0 there means these).
const (
	DefaultSignupsPerSource  = 10 // per hour, burst the same
	DefaultSignupsPerEmail   = 3  // per hour, burst the same
	DefaultSignupMailsPerDay = 5
	DefaultSignupExpiry      = 7 * 24 * time.Hour
)

const (
	signupWindow     = time.Hour      // the window of the per-source and per-email limits
	signupMailWindow = 24 * time.Hour // the window of the mail count, in the database
	// maxLimiterKeys bounds each limiter's table; past it, new keys share
	// one bucket (limiter.take).
	maxLimiterKeys = 16384
)

// limitOr is a Config limit: 0 the default, negative none (0).
func limitOr(v, def int) int {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

func (s *Server) signupExpiry() time.Duration {
	switch {
	case s.cfg.SignupExpiry == 0:
		return DefaultSignupExpiry
	case s.cfg.SignupExpiry < 0:
		return 0
	}
	return s.cfg.SignupExpiry
}

// signupState holds the in-memory limiters; its zero value is ready.
type signupState struct {
	sources limiter // by client address (IPv6: /64)
	emails  limiter // by keyed hash of the email address
}

// limiter is a set of token buckets, one per key, each holding up to n
// tokens and gaining n per window. Its table holds at most maxKeys keys:
// when full, buckets that have filled up again (as good as new) are
// dropped, at most once per token's time; keys that still find no room
// share one overflow bucket, so a flood of new keys is limited as one.
type limiter struct {
	mu       sync.Mutex
	buckets  map[string]*bucket
	overflow bucket
	sweptAt  time.Time
	maxKeys  int // 0: maxLimiterKeys
}

type bucket struct {
	tokens float64
	at     time.Time
}

// take takes a token from key's bucket at now; if there is none, it says
// how long until there is.
func (l *limiter) take(key string, now time.Time, n int, window time.Duration) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	rate := float64(n) / window.Seconds() // tokens per second
	b, ok := l.buckets[key]
	if !ok {
		if l.buckets == nil {
			l.buckets = map[string]*bucket{}
		}
		max := l.maxKeys
		if max == 0 {
			max = maxLimiterKeys
		}
		if len(l.buckets) >= max && now.Sub(l.sweptAt) >= window/time.Duration(n) {
			l.sweptAt = now
			for k, b := range l.buckets {
				if b.tokens+now.Sub(b.at).Seconds()*rate >= float64(n) {
					delete(l.buckets, k)
				}
			}
		}
		if len(l.buckets) < max {
			b = &bucket{tokens: float64(n), at: now}
			l.buckets[key] = b
		} else {
			b = &l.overflow
			if b.at.IsZero() {
				b.tokens, b.at = float64(n), now
			}
		}
	}
	b.tokens = math.Min(float64(n), b.tokens+now.Sub(b.at).Seconds()*rate)
	b.at = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / rate * float64(time.Second))
}

// len is the number of keys in the table.
func (l *limiter) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// sourceKey is the limiter key of a client address: the address, or for
// IPv6 its /64, which one subscriber line usually holds whole.
func sourceKey(a netip.Addr) string {
	if a.Is6() {
		return netip.PrefixFrom(a, 64).Masked().String()
	}
	return a.String()
}

// normalEmail is the mailbox an address reaches, as far as can be told
// without knowing the provider: case folded, a "+tag" after the local part
// dropped.
func normalEmail(addr string) string {
	addr = strings.ToLower(strings.TrimSpace(addr))
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return addr
	}
	local, domain := addr[:at], addr[at+1:]
	if plus := strings.IndexByte(local, '+'); plus > 0 {
		local = local[:plus]
	}
	return local + "@" + domain
}

// emailKey is the keyed hash (HMAC-SHA256, key derived from the signing
// seed) of an email address's mailbox: the limiters and the database hold
// this, never the address.
func (s *Server) emailKey(addr string) []byte {
	k := sha256.Sum256(append([]byte("meridian sign-up email limit v1"), s.signer.Seed()...))
	m := hmac.New(sha256.New, k[:])
	m.Write([]byte(normalEmail(addr)))
	return m.Sum(nil)
}

// tooMany answers 429 with Retry-After. msg names no personal data.
func tooMany(w http.ResponseWriter, wait time.Duration, msg string) {
	secs := max(1, int(math.Ceil(wait.Seconds())))
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	writeError(w, http.StatusTooManyRequests, fmt.Sprintf("%s; try again in %s", msg, (time.Duration(secs)*time.Second).String()))
}

// allowSignupFrom takes a sign-up from the request's client address, or
// answers 429.
func (s *Server) allowSignupFrom(w http.ResponseWriter, r *http.Request) bool {
	n := limitOr(s.cfg.SignupsPerSource, DefaultSignupsPerSource)
	if n == 0 {
		return true
	}
	ok, wait := s.signup.sources.take(sourceKey(s.clientIP(r)), time.Now(), n, signupWindow)
	if !ok {
		tooMany(w, wait, "too many sign-ups from this network address")
	}
	return ok
}

// allowSignupFor takes a sign-up naming email address addr, or answers 429.
func (s *Server) allowSignupFor(w http.ResponseWriter, addr string) bool {
	n := limitOr(s.cfg.SignupsPerEmail, DefaultSignupsPerEmail)
	if n == 0 || strings.TrimSpace(addr) == "" {
		return true
	}
	ok, wait := s.signup.emails.take(string(s.emailKey(addr)), time.Now(), n, signupWindow)
	if !ok {
		tooMany(w, wait, "too many sign-ups for this email address")
	}
	return ok
}

// mailQuotaError refuses a sign-up whose verification mail would pass the
// address's daily limit; the window ends at until.
type mailQuotaError struct{ until time.Time }

func (e *mailQuotaError) Error() string { return "verification mail limit reached" }

// reserveSignupMail counts, in the sign-up's transaction, the verification
// mail it will send to addr, or refuses with a *mailQuotaError.
func (s *Server) reserveSignupMail(ctx context.Context, tx *store.Tx, addr string, now time.Time) error {
	n := limitOr(s.cfg.SignupMailsPerDay, DefaultSignupMailsPerDay)
	if n == 0 {
		return nil
	}
	ok, until, err := tx.ReserveSignupMail(ctx, s.emailKey(addr), now, signupMailWindow, n)
	if err == nil && !ok {
		err = &mailQuotaError{until: until}
	}
	return err
}

// expireRegistrations withdraws the self-service sign-ups still
// unconfirmed (no verified email, no validation by an operator, no device,
// hence no session) a window after they were made, purging their
// subscriber records: such a sign-up never hired the service, so it made
// no subscriber whose record a duty keeps (docs/architecture.md). It also
// drops the mail counters whose day has passed.
func (s *Server) expireRegistrations(ctx context.Context, now time.Time) error {
	if _, err := s.db.TrimSignupMails(ctx, now.Add(-signupMailWindow)); err != nil {
		return err
	}
	window := s.signupExpiry()
	if window == 0 {
		return nil
	}
	accounts, err := s.db.UnconfirmedBefore(ctx, now.Add(-window))
	if err != nil {
		return err
	}
	expired, purged := 0, false
	within := window.String()
	if window%(24*time.Hour) == 0 {
		within = fmt.Sprintf("%d days", window/(24*time.Hour))
	}
	reason := fmt.Sprintf("expired sign-up: neither email verified nor a device within %s, so no service was hired", within)
	for _, a := range accounts {
		del := func(tx *store.Tx) error { return tx.DeleteUnconfirmed(ctx, a.ID) }
		if len(a.Seqs) > 0 {
			err = s.ledger.PurgeWith(ctx, ledger.RecordChain, a.Seqs, reason, del)
		} else {
			err = s.db.Update(ctx, del)
		}
		if errors.Is(err, store.ErrConfirmed) {
			continue // confirmed since it was listed
		}
		if err != nil {
			return err
		}
		expired++
		purged = purged || len(a.Seqs) > 0
	}
	if expired > 0 {
		s.log.Info("expired unconfirmed sign-ups", "accounts", expired)
	}
	if purged {
		return s.ledger.ScrubLog(ctx)
	}
	return nil
}

// runSignupExpiry is the hourly job of expireRegistrations.
func (s *Server) runSignupExpiry(ctx context.Context) {
	if err := s.expireRegistrations(ctx, time.Now()); err != nil && ctx.Err() == nil {
		s.log.Error("expiring unconfirmed sign-ups", "err", err)
	}
}
