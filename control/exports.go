package control

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"database/sql"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/internal/check"
	"github.com/meridian-vpn/meridian/ledger"
)

const exportAAD = "export.query"

func (s *Server) handleCreateExport(w http.ResponseWriter, r *http.Request) {
	var req api.ExportRequest
	if !decode(w, r, &req) {
		return
	}
	req.Case = strings.TrimSpace(req.Case)
	if err := check.CaseRef(req.Case, s.casePattern); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.Subscriber == "" {
		writeError(w, http.StatusBadRequest, "subscriber is required: the account whose records are exported")
		return
	}
	q, _ := json.Marshal(req)
	now := time.Now().UTC().Truncate(time.Second)
	e := api.Export{ID: randomString(9), Case: req.Case, RequestedBy: actor(r.Context()), RequestedAt: now}
	var approvedBy, approvedAt any
	if !s.cfg.TwoPersonRule {
		e.ApprovedBy, e.ApprovedAt = e.RequestedBy, now
		approvedBy, approvedAt = e.ApprovedBy, now.Unix()
	}
	_, err := s.db.ExecContext(r.Context(), `INSERT INTO exports (id, case_ref, query, requested_by, requested_at, approved_by, approved_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		e.ID, e.Case, s.keys.Seal(string(q), exportAAD), e.RequestedBy, now.Unix(), approvedBy, approvedAt)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, e)
}

// export reads an export request.
func (s *Server) export(r *http.Request, id string) (api.Export, api.ExportRequest, error) {
	var e api.Export
	var q api.ExportRequest
	var sealed string
	var at int64
	var by sql.NullString
	var approvedAt sql.NullInt64
	err := s.db.QueryRowContext(r.Context(), `SELECT id, case_ref, query, requested_by, requested_at, approved_by, approved_at FROM exports WHERE id = ?`, id).
		Scan(&e.ID, &e.Case, &sealed, &e.RequestedBy, &at, &by, &approvedAt)
	if err != nil {
		return e, q, err
	}
	e.RequestedAt = time.Unix(at, 0).UTC()
	e.ApprovedBy = by.String
	if approvedAt.Valid {
		e.ApprovedAt = time.Unix(approvedAt.Int64, 0).UTC()
	}
	plain, err := s.keys.Open(sealed, exportAAD)
	if err != nil {
		return e, q, err
	}
	return e, q, json.Unmarshal([]byte(plain), &q)
}

func (s *Server) handleApproveExport(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	e, _, err := s.export(r, id)
	if errors.Is(err, sql.ErrNoRows) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no export %q", id))
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	me := actor(r.Context())
	switch {
	case e.ApprovedBy != "":
		writeError(w, http.StatusConflict, "this export is already approved")
		return
	case me == e.RequestedBy:
		writeError(w, http.StatusForbidden, "the two-person rule needs a second compliance officer to approve an export, not the one who asked for it")
		return
	}
	now := time.Now().UTC().Truncate(time.Second)
	if _, err := s.db.ExecContext(r.Context(), `UPDATE exports SET approved_by = ?, approved_at = ? WHERE id = ? AND approved_by IS NULL`, me, now.Unix(), id); err != nil {
		s.fail(w, r, err)
		return
	}
	e.ApprovedBy, e.ApprovedAt = me, now
	writeJSON(w, http.StatusOK, e)
}

// handleExportBundle builds an approved export's bundle. Reading the
// records is recorded in the ledger's access chain under the case.
func (s *Server) handleExportBundle(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	e, q, err := s.export(r, id)
	if errors.Is(err, sql.ErrNoRows) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no export %q", id))
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if e.ApprovedBy == "" {
		writeError(w, http.StatusConflict, "this export waits for a second compliance officer's approval ('meridian compliance approve "+id+"')")
		return
	}
	seqs, err := s.db.SubscriberSeqs(r.Context(), q.Subscriber)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	access := ledger.Access{Who: actor(r.Context()), Case: e.Case, Query: "export " + e.ID + " subscriber " + q.Subscriber}
	var rec api.SubscriberRecord
	if len(seqs) > 0 {
		entries, err := s.ledger.Read(r.Context(), access, ledger.RecordChain, seqs...)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if rec, err = foldRecord(entries); err != nil {
			s.fail(w, r, err)
			return
		}
	} else if err := s.ledger.RecordAccess(r.Context(), access, 0); err != nil {
		s.fail(w, r, err)
		return
	}
	devs, err := s.db.Devices(r.Context(), q.Subscriber)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	files := map[string][]byte{}
	files["subscriber.json"], _ = json.MarshalIndent(map[string]any{"case": e.Case, "record": rec, "devices": devs}, "", "  ")
	files["subscriber.csv"] = recordCSV(rec)
	files["devices.csv"] = devicesCSV(devs)
	b, err := s.bundle(e, files)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, b)
}

// bundle signs a manifest of files.
func (s *Server) bundle(e api.Export, files map[string][]byte) (api.Bundle, error) {
	m := api.Manifest{Case: e.Case, Export: e.ID, CreatedAt: time.Now().UTC().Truncate(time.Second), RequestedBy: e.RequestedBy, ApprovedBy: e.ApprovedBy}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		sum := sha256.Sum256(files[n])
		m.Files = append(m.Files, api.ManifestFile{Name: n, SHA256: hex.EncodeToString(sum[:]), Bytes: len(files[n])})
	}
	mb, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return api.Bundle{}, err
	}
	return api.Bundle{Files: files, Manifest: mb, Signature: ed25519.Sign(s.signer, mb), PublicKey: s.signer.Public().(ed25519.PublicKey)}, nil
}

func csvBytes(rows [][]string) []byte {
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	w.WriteAll(rows)
	return b.Bytes()
}

// recordCSV lays out a subscriber record by the items of CERT-In direction
// (v), with the control node's clock sync state when each value was taken.
func recordCSV(r api.SubscriberRecord) []byte {
	clock := func(c *api.ClockSync) string {
		if c == nil {
			return ""
		}
		return c.String()
	}
	v := func(x api.Validation) string {
		if x.State == "" {
			return ""
		}
		s := fmt.Sprintf("%s %s %s %s", x.State, x.Method, x.Evidence, x.At.Format(time.RFC3339))
		if x.Clock != nil {
			s += " (clock: " + x.Clock.String() + ")"
		}
		return s
	}
	ts := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.Format(time.RFC3339)
	}
	return csvBytes([][]string{
		{"item", "field", "value", "validation"},
		{"a", "name", r.Name, v(r.NameValidation)},
		{"b", "hire_start", ts(r.HireStart), ""},
		{"b", "cancelled_at", ts(r.CancelledAt), ""},
		{"b", "cancelled_at_clock", clock(r.CancelledClock), ""},
		{"d", "email", r.Email, v(r.EmailValidation)},
		{"d", "registration_ip", r.RegistrationIP.String(), ""},
		{"d", "registered_at", ts(r.RegisteredAt), ""},
		{"d", "registered_at_clock", clock(r.Clock), ""},
		{"e", "purpose", r.Purpose, ""},
		{"f", "address", r.Address, v(r.AddressValidation)},
		{"f", "phones", strings.Join(r.Phones, "; "), v(r.PhoneValidation)},
		{"g", "ownership", string(r.Ownership), ""},
	})
}

func devicesCSV(devs []api.Device) []byte {
	rows := [][]string{{"id", "name", "public_key", "ipv4", "ipv6", "status", "location", "created_at"}}
	for _, d := range devs {
		rows = append(rows, []string{fmt.Sprint(d.ID), d.Name, d.PublicKey.String(), d.IPv4.String(), d.IPv6.String(), string(d.Status), d.Location, d.CreatedAt.Format(time.RFC3339)})
	}
	return csvBytes(rows)
}
