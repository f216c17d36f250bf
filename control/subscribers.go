package control

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/mail"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/internal/check"
	"github.com/meridian-vpn/meridian/ledger"
	mailer "github.com/meridian-vpn/meridian/mail"
	"github.com/meridian-vpn/meridian/store"
)

// Ledger entry kinds of a subscriber record. The record is the fold of its
// entries: registration, then validations and the cancellation.
const (
	kindRegistered = "subscriber-registered"
	kindValidated  = "subscriber-validated"
	kindCancelled  = "subscriber-cancelled"
)

type validatedEntry struct {
	User       string         `json:"user"`
	Field      string         `json:"field"`
	Validation api.Validation `json:"validation"`
}

type cancelledEntry struct {
	User  string         `json:"user"`
	At    time.Time      `json:"at"`
	Clock *api.ClockSync `json:"clock,omitempty"` // the control node's sync state at At
}

// recordRequirement says whether accounts of kind k must have a subscriber
// record, and why: some in-service gateway owes subscriber records for
// such service whatever its location (placement or establishment), or the
// operator collects for all. accepted is set too when only some locations
// need one (market): details given are kept, and an account without them
// does not get those locations.
func (s *Server) recordRequirement(ctx context.Context, k api.TenantKind) (required, accepted bool, why []string, err error) {
	if s.cfg.CollectAll {
		return true, true, []string{"the operator collects subscriber records for all accounts"}, nil
	}
	f, err := s.loadFleet(ctx)
	if err != nil {
		return false, false, nil, err
	}
	need, _, why, err := f.recordNeed()
	if err != nil {
		return false, false, nil, err
	}
	for _, n := range need {
		accepted = accepted || n.of(k)
	}
	return need[""].of(k), accepted, why, nil
}

func (s *Server) handleRecordRequired(w http.ResponseWriter, r *http.Request) {
	kind := api.TenantKind(r.URL.Query().Get("kind"))
	if kind == "" {
		kind = api.Consumer
	}
	if kind != api.Consumer && kind != api.Enterprise {
		writeError(w, http.StatusBadRequest, `kind must be "consumer" or "enterprise"`)
		return
	}
	req, _, why, err := s.recordRequirement(r.Context(), kind)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"kind": kind, "required": req, "why": why})
}

var phoneRE = regexp.MustCompile(`^\+?[0-9][0-9 ()-]{5,23}$`)

// checkDetails validates the subscriber's fields. It returns the names of
// missing fields, or an error that names the field but never its value.
func checkDetails(d *api.SubscriberDetails) (missing []string, err error) {
	if d == nil {
		return []string{"subscriber.name", "subscriber.email", "subscriber.purpose", "subscriber.address", "subscriber.phones", "subscriber.ownership"}, nil
	}
	d.Name, d.Email, d.Purpose, d.Address = strings.TrimSpace(d.Name), strings.TrimSpace(d.Email), strings.TrimSpace(d.Purpose), strings.TrimSpace(d.Address)
	for _, f := range []struct{ name, v string }{{"name", d.Name}, {"email", d.Email}, {"purpose", d.Purpose}, {"address", d.Address}, {"ownership", string(d.Ownership)}} {
		if f.v == "" {
			missing = append(missing, "subscriber."+f.name)
		}
	}
	if len(d.Phones) == 0 {
		missing = append(missing, "subscriber.phones")
	}
	if len(missing) > 0 {
		return missing, nil
	}
	for _, f := range []struct {
		name, v string
		max     int
	}{{"name", d.Name, 200}, {"purpose", d.Purpose, 500}, {"address", d.Address, 500}} {
		if len(f.v) > f.max || check.Text(f.v, true) != nil {
			return nil, fmt.Errorf("subscriber.%s must be at most %d printable characters, without invisible or bidirectional control characters", f.name, f.max)
		}
	}
	if a, err := mail.ParseAddress(d.Email); err != nil || a.Address != d.Email {
		return nil, errors.New("subscriber.email is not a valid email address (give the bare address, e.g. name@example.com)")
	}
	if len(d.Phones) > 5 {
		return nil, errors.New("subscriber.phones: at most 5 numbers")
	}
	for i, p := range d.Phones {
		if !phoneRE.MatchString(strings.TrimSpace(p)) {
			return nil, fmt.Errorf("subscriber.phones[%d] is not a phone number (digits, spaces, ()-, optional leading +)", i)
		}
		d.Phones[i] = strings.TrimSpace(p)
	}
	switch d.Ownership {
	case api.Individual, api.Company, api.Partnership, api.Government, api.OtherOwner:
	default:
		return nil, errors.New("subscriber.ownership must be individual, company, partnership, government or other")
	}
	return nil, nil
}

// clientIP is the address a request came from: the connection's peer, or
// the last address in X-Forwarded-For that a trusted proxy added. It is a
// plain address: a link-local peer's zone (this host's interface name) is
// dropped, and a hop with a zone is malformed.
func (s *Server) clientIP(r *http.Request) netip.Addr {
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	ip, _ := netip.ParseAddr(host)
	ip = ip.Unmap().WithZone("")
	if !s.trusted(ip) {
		return ip
	}
	hops := strings.Split(r.Header.Get("X-Forwarded-For"), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil || a.Zone() != "" {
			return ip // a malformed hop: trust no further
		}
		a = a.Unmap()
		if !s.trusted(a) {
			return a
		}
		ip = a
	}
	return ip
}

func (s *Server) trusted(a netip.Addr) bool {
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// register creates an account, with its subscriber record when one is
// required, in one transaction; it sends the email code after commit.
// It answers the HTTP request itself.
//
// A public sign-up (public) is marked unconfirmed until it is used
// (expireRegistrations), and its verification mail counts against the
// address's daily limit.
func (s *Server) register(w http.ResponseWriter, r *http.Request, name string, kind api.TenantKind, d *api.SubscriberDetails, public bool) (api.SignupResponse, bool) {
	var resp api.SignupResponse
	required, accepted, _, err := s.recordRequirement(r.Context(), kind)
	if err != nil {
		s.fail(w, r, err)
		return resp, false
	}
	if d != nil && !accepted {
		// No duty, no data: details given anyway are not kept.
		d = nil
	}
	if (required || d != nil) && !detailsOK(w, d) {
		return resp, false
	}
	now := time.Now().UTC().Truncate(time.Second)
	var code string
	user, err := s.db.CreateUserWith(r.Context(), name, kind, func(tx *store.Tx, id int64) error {
		if public {
			if err := tx.MarkUnconfirmed(r.Context(), id); err != nil {
				return err
			}
		}
		if d == nil {
			return nil
		}
		if err := s.appendEntry(r.Context(), tx, id, kindRegistered, s.registration(r, name, now, now, d)); err != nil {
			return err
		}
		if s.mailer == nil {
			return nil
		}
		if public {
			if err := s.reserveSignupMail(r.Context(), tx, d.Email, now); err != nil {
				return err
			}
		}
		code = oneTimeCode()
		return tx.SetEmailCode(r.Context(), id, codeHash(name, code), now.Add(emailCodeTTL))
	})
	var quota *mailQuotaError
	if errors.As(err, &quota) {
		tooMany(w, quota.until.Sub(now), "too many verification mails were sent to this email address in the last 24 hours")
		return resp, false
	}
	if err != nil {
		s.storeError(w, r, err, "")
		return resp, false
	}
	resp.User, resp.RecordKept = user, d != nil
	if code != "" {
		resp.EmailCodeSent = s.sendEmailCode(r.Context(), d.Email, code)
	}
	return resp, true
}

// detailsOK checks the subscriber record's items (checkDetails); it
// answers 400, naming what is missing or bad, when they are not complete.
func detailsOK(w http.ResponseWriter, d *api.SubscriberDetails) bool {
	missing, err := checkDetails(d)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return false
	}
	if len(missing) > 0 {
		writeJSON(w, http.StatusBadRequest, api.Error{
			Error:   "a subscriber record is required for this account (a duty of a gateway's country applies); missing: " + strings.Join(missing, ", "),
			Missing: missing,
		})
		return false
	}
	return true
}

// registration is the registration entry of user's subscriber record,
// taken at now by request r (whose address is item (d)'s registration
// IP), for a hire that began at hireStart; its items are unvalidated.
func (s *Server) registration(r *http.Request, user string, hireStart, now time.Time, d *api.SubscriberDetails) api.SubscriberRecord {
	return api.SubscriberRecord{
		User: user, Name: d.Name, HireStart: hireStart, Email: d.Email, RegistrationIP: s.clientIP(r), RegisteredAt: now,
		Purpose: d.Purpose, Address: d.Address, Phones: d.Phones, Ownership: d.Ownership,
		NameValidation: api.Validation{State: api.Unvalidated}, EmailValidation: api.Validation{State: api.Unvalidated},
		AddressValidation: api.Validation{State: api.Unvalidated}, PhoneValidation: api.Validation{State: api.Unvalidated},
		Clock: s.clockNow(),
	}
}

// sendEmailCode mails a verification code, reporting whether it went.
func (s *Server) sendEmailCode(ctx context.Context, to, code string) bool {
	_, err := s.mailer.Send(ctx, mailer.Message{To: []string{to}, Subject: "Your Meridian verification code",
		Body: fmt.Sprintf("Your verification code is %s\n\nIt is valid for %d minutes.\n", code, int(emailCodeTTL.Minutes()))})
	if err != nil {
		// The account exists; the code can be sent again later.
		s.log.Warn("sending an email code failed", "err", err)
		return false
	}
	return true
}

// handleAddRecord takes the subscriber record of an existing account that
// has none (made before a duty asked for one, as when a market or
// establishment reading is accepted), with the items user creation takes.
// The account's devices are sent to the gateways again: those that lost a
// location for want of the record are served there anew.
func (s *Server) handleAddRecord(w http.ResponseWriter, r *http.Request) {
	user := r.PathValue("name")
	var d api.SubscriberDetails
	if !decode(w, r, &d) {
		return
	}
	u, err := s.db.User(r.Context(), user)
	if err != nil {
		s.storeError(w, r, err, fmt.Sprintf("no user named %q", user))
		return
	}
	_, accepted, _, err := s.recordRequirement(r.Context(), u.Kind)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !accepted {
		// No duty, no data.
		writeError(w, http.StatusConflict, fmt.Sprintf("no duty asks for a subscriber record of %s accounts here (see GET /subscribers/required); none is kept", u.Kind))
		return
	}
	if !detailsOK(w, &d) {
		return
	}
	now := time.Now().UTC().Truncate(time.Second)
	var code string
	err = s.db.AddSubscriberRecord(r.Context(), user, func(tx *store.Tx, id int64, created time.Time) error {
		if err := s.appendEntry(r.Context(), tx, id, kindRegistered, s.registration(r, user, created, now, &d)); err != nil {
			return err
		}
		if s.mailer == nil {
			return nil
		}
		code = oneTimeCode()
		return tx.SetEmailCode(r.Context(), id, codeHash(user, code), now.Add(emailCodeTTL))
	})
	if err != nil {
		s.storeError(w, r, err, fmt.Sprintf("no user named %q", user))
		return
	}
	s.notifyAndWait(r.Context()) // its devices are sent again
	resp := api.SignupResponse{User: u, RecordKept: true}
	if code != "" {
		resp.EmailCodeSent = s.sendEmailCode(r.Context(), d.Email, code)
	}
	writeJSON(w, http.StatusCreated, resp)
}

const emailCodeTTL = 30 * time.Minute

func oneTimeCode() string {
	n, _ := rand.Int(rand.Reader, big.NewInt(1_000_000))
	return fmt.Sprintf("%06d", n.Int64())
}

func codeHash(user, code string) []byte {
	h := sha256.Sum256([]byte("meridian email code\x00" + user + "\x00" + code))
	return h[:]
}

func (s *Server) handleSignup(w http.ResponseWriter, r *http.Request) {
	if !s.cfg.Signup {
		writeError(w, http.StatusNotFound, "self-service sign-up is not enabled on this server")
		return
	}
	if !s.allowSignupFrom(w, r) {
		return
	}
	var req api.SignupRequest
	if !decode(w, r, &req) {
		return
	}
	if err := checkName("user", req.User); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.Subscriber != nil && !s.allowSignupFor(w, req.Subscriber.Email) {
		return
	}
	resp, ok := s.register(w, r, req.User, api.Consumer, req.Subscriber, true)
	if ok {
		writeJSON(w, http.StatusCreated, resp)
	}
}

func (s *Server) handleVerifyEmail(w http.ResponseWriter, r *http.Request) {
	var req api.VerifyEmailRequest
	if !decode(w, r, &req) {
		return
	}
	if req.User == "" || len(req.Code) != 6 {
		writeError(w, http.StatusBadRequest, "user and the 6-digit code are required")
		return
	}
	err := s.db.CheckEmailCode(r.Context(), req.User, codeHash(req.User, req.Code), time.Now(), func(tx *store.Tx, id int64) error {
		if err := tx.ConfirmUser(r.Context(), id); err != nil {
			return err
		}
		return s.appendEntry(r.Context(), tx, id, kindValidated, validatedEntry{User: req.User, Field: "email",
			Validation: api.Validation{State: api.Validated, Method: "email-code", By: "subscriber", At: time.Now().UTC().Truncate(time.Second), Clock: s.clockNow()}})
	})
	if err != nil {
		s.storeError(w, r, err, "")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) appendEntry(ctx context.Context, tx *store.Tx, userID int64, kind string, entry any) error {
	seq, err := s.ledger.Append(ctx, tx, kind, entry)
	if err != nil {
		return err
	}
	return tx.AddSubscriberEntry(ctx, userID, seq)
}

func (s *Server) handleValidate(w http.ResponseWriter, r *http.Request) {
	user := r.PathValue("name")
	var req api.ValidateRequest
	if !decode(w, r, &req) {
		return
	}
	switch req.Field {
	case "name", "email", "address", "phones":
	default:
		writeError(w, http.StatusBadRequest, "field must be name, email, address or phones")
		return
	}
	if req.State != api.Validated && req.State != api.Rejected {
		writeError(w, http.StatusBadRequest, "state must be validated or rejected")
		return
	}
	if req.Method == "" || req.Evidence == "" || len(req.Evidence) > 200 || len(req.Method) > 50 {
		writeError(w, http.StatusBadRequest, "method and an evidence reference (up to 200 characters) are required")
		return
	}
	if check.Text(req.Method, false) != nil || check.Text(req.Evidence, false) != nil {
		writeError(w, http.StatusBadRequest, "method and evidence must be one line without control, invisible or bidirectional control characters")
		return
	}
	seqs, err := s.db.SubscriberSeqs(r.Context(), user)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if len(seqs) == 0 {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no subscriber record is kept for %q", user))
		return
	}
	id, err := s.db.UserID(r.Context(), user)
	if err != nil {
		s.storeError(w, r, err, fmt.Sprintf("no user named %q", user))
		return
	}
	v := api.Validation{State: req.State, Method: req.Method, Evidence: req.Evidence, By: actor(r.Context()), At: time.Now().UTC().Truncate(time.Second), Clock: s.clockNow()}
	err = s.db.Update(r.Context(), func(tx *store.Tx) error {
		if v.State == api.Validated { // an operator took the sign-up on
			if err := tx.ConfirmUser(r.Context(), id); err != nil {
				return err
			}
		}
		return s.appendEntry(r.Context(), tx, id, kindValidated, validatedEntry{User: user, Field: req.Field, Validation: v})
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) handleCancelUser(w http.ResponseWriter, r *http.Request) {
	user := r.PathValue("name")
	now := time.Now().UTC().Truncate(time.Second)
	err := s.db.CancelUser(r.Context(), user, now, func(tx *store.Tx, id int64) error {
		var n int
		if err := tx.SQL().QueryRowContext(r.Context(), `SELECT count(*) FROM subscriber_entries WHERE user_id = ?`, id).Scan(&n); err != nil || n == 0 {
			return err
		}
		return s.appendEntry(r.Context(), tx, id, kindCancelled, cancelledEntry{User: user, At: now, Clock: s.clockNow()})
	})
	if err != nil {
		s.storeError(w, r, err, fmt.Sprintf("no user named %q", user))
		return
	}
	s.notifyAndWait(r.Context()) // its devices were revoked
	w.WriteHeader(http.StatusNoContent)
}

// foldRecord builds the current subscriber record from its ledger entries.
func foldRecord(entries []ledger.Entry) (api.SubscriberRecord, error) {
	var rec api.SubscriberRecord
	for _, e := range entries {
		if e.Body == nil {
			continue // purged
		}
		switch e.Kind {
		case kindRegistered:
			if err := json.Unmarshal(e.Body, &rec); err != nil {
				return rec, fmt.Errorf("ledger entry %d: %w", e.Seq, err)
			}
		case kindValidated:
			var v validatedEntry
			if err := json.Unmarshal(e.Body, &v); err != nil {
				return rec, fmt.Errorf("ledger entry %d: %w", e.Seq, err)
			}
			switch v.Field {
			case "name":
				rec.NameValidation = v.Validation
			case "email":
				rec.EmailValidation = v.Validation
			case "address":
				rec.AddressValidation = v.Validation
			case "phones":
				rec.PhoneValidation = v.Validation
			}
		case kindCancelled:
			var c cancelledEntry
			if err := json.Unmarshal(e.Body, &c); err != nil {
				return rec, fmt.Errorf("ledger entry %d: %w", e.Seq, err)
			}
			rec.CancelledAt, rec.CancelledClock = c.At, c.Clock
		}
	}
	return rec, nil
}

// handleSubscriberRecord is a lawful lookup of one subscriber's record
// (compliance role, case reference), recorded in the access chain.
func (s *Server) handleSubscriberRecord(w http.ResponseWriter, r *http.Request) {
	ref, ok := s.caseRef(w, r)
	if !ok {
		return
	}
	user := r.PathValue("name")
	seqs, err := s.db.SubscriberSeqs(r.Context(), user)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	access := ledger.Access{Who: actor(r.Context()), Case: ref, Query: "subscriber " + user}
	if len(seqs) == 0 {
		if err := s.ledger.RecordAccess(r.Context(), access, 0); err != nil {
			s.fail(w, r, err)
			return
		}
		writeError(w, http.StatusNotFound, "no subscriber record is kept for this account")
		return
	}
	entries, err := s.ledger.Read(r.Context(), access, ledger.RecordChain, seqs...)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	rec, err := foldRecord(entries)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	devs, err := s.db.Devices(r.Context(), user)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"case": ref, "record": rec, "devices": devs})
}

// handleRotateKey re-seals every ledger data key under the keyring's active
// key (the last line of the key file, loaded at start), so older keys can
// then be removed from the file.
func (s *Server) handleRotateKey(w http.ResponseWriter, r *http.Request) {
	n, err := s.ledger.RotateKey(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"resealed": n})
}
