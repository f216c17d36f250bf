package control

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"runtime/debug"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/internal/recordseal"
	"github.com/meridian-vpn/meridian/jurisdiction"
	"github.com/meridian-vpn/meridian/ledger"
	"github.com/meridian-vpn/meridian/store"
	"github.com/meridian-vpn/meridian/wg"
)

// recordDuty says, for a gateway, which sessions owe session records, as
// jurisdiction.Effective decides for the gateway's place, the location a
// session's device is configured for and its tenant kind; and which
// devices lose service because their location needs a subscriber record
// their account lacks. The zero value owes none and blocks none.
type recordDuty struct {
	none tenantKinds            // sessions of devices on no (known) location
	at   map[string]tenantKinds // by location code
	need map[string]tenantKinds // by location code: a missing subscriber record blocks (fleet.recordNeed's block)
}

// any reports whether the gateway owes records of some sessions.
func (d recordDuty) any() bool {
	if d.none.consumer || d.none.enterprise {
		return true
	}
	for _, k := range d.at {
		if k.consumer || k.enterprise {
			return true
		}
	}
	return false
}

// of reports whether sessions of device owner o owe records. A record of
// a device that is gone (not known) is kept if the gateway owes records at
// all: it sends records only of devices the control server marked.
func (d recordDuty) of(o store.SessionOwner) bool {
	if !o.Known {
		return d.any()
	}
	k, ok := d.at[o.Location]
	if !ok {
		k = d.none
	}
	return k.of(o.Kind)
}

// blocked reports whether device owner o loses service: its location needs
// a subscriber record its account lacks.
func (d recordDuty) blocked(o store.SessionOwner) bool {
	return o.Known && !o.Record && d.need[o.Location].of(o.Kind)
}

// blocks reports whether some device may lose service.
func (d recordDuty) blocks() bool {
	for _, k := range d.need {
		if k.consumer || k.enterprise {
			return true
		}
	}
	return false
}

// key encodes d so that two duties compare equal exactly when they mark
// every peer alike.
func (d recordDuty) key() string {
	return fmt.Sprint(d.none, d.at, d.need) // fmt sorts map keys
}

// sessionState is what the server keeps in memory about session records:
// the record duty each gateway's netmap was last computed with, so that a
// change of place, jurisdiction or profile sends it a full netmap with the
// peers' Record flags set anew.
type sessionState struct {
	mu      sync.Mutex
	sent    map[string]string // recordDuty.key by gateway; unknown (as after a restart): send a full netmap
	stored  prometheus.Counter
	ignored prometheus.Counter

	queue    sessionQueue
	decoding chan struct{} // held while a batch is decoded

	// dutyAt caches recordDutyOf per gateway for session ingest, valid
	// while no admin write happened since (Server.adminWrites): reading
	// the fleet for every batch cost a tenth of ingest.
	dutyAt map[string]cachedDuty

	silent silentGateways // used by watchSilentGateways only
	seal   recordSeal     // opens sealed endpoints (recordseal.go)
}

type cachedDuty struct {
	writes uint64 // Server.adminWrites when it was computed
	duty   recordDuty
}

// ingestDuty is recordDutyOf, cached until the next admin write (places,
// jurisdictions, profiles and service state change only by those).
func (s *Server) ingestDuty(ctx context.Context, gw string) (recordDuty, error) {
	ss := &s.sessions
	writes := s.adminWrites.Load()
	ss.mu.Lock()
	c, ok := ss.dutyAt[gw]
	ss.mu.Unlock()
	if ok && c.writes == writes {
		return c.duty, nil
	}
	d, err := s.recordDutyOf(ctx, gw)
	if err != nil {
		return recordDuty{}, err
	}
	ss.mu.Lock()
	if ss.dutyAt == nil {
		ss.dutyAt = map[string]cachedDuty{}
	}
	ss.dutyAt[gw] = cachedDuty{writes: writes, duty: d}
	ss.mu.Unlock()
	return d, nil
}

// setUp makes the state ready and registers its metrics in reg.
func (ss *sessionState) setUp(reg *prometheus.Registry) {
	ss.decoding = make(chan struct{}, 1)
	ss.stored = prometheus.NewCounter(prometheus.CounterOpts{Name: "meridian_control_session_records_stored_total", Help: "Session records received from gateways and stored (again, for resent ones)."})
	ss.ignored = prometheus.NewCounter(prometheus.CounterOpts{Name: "meridian_control_session_records_ignored_total", Help: "Session records received that no duty requires (any more): not stored."})
	ss.silent.inferred = prometheus.NewCounter(prometheus.CounterOpts{Name: "meridian_control_session_ends_inferred_total", Help: "Open sessions of gateways gone silent that the control server ended as of the last time it heard from them."})
	reg.MustRegister(ss.stored, ss.ignored, ss.silent.inferred)
}

// holds reports whether gateway gw's netmap was computed with duty d.
func (ss *sessionState) holds(gw string, d recordDuty) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	cur, ok := ss.sent[gw]
	return ok && cur == d.key()
}

func (ss *sessionState) sentTo(gw string, d recordDuty) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.sent == nil {
		ss.sent = map[string]string{}
	}
	ss.sent[gw] = d.key()
}

// recordDutyOf decides which sessions gateway gw owes session records of,
// by location and tenant kind, and which devices lose service for want of
// a subscriber record. A gateway without a declared place, or out of
// service, owes none.
func (s *Server) recordDutyOf(ctx context.Context, gw string) (recordDuty, error) {
	f, err := s.loadFleet(ctx)
	if err != nil {
		return recordDuty{}, err
	}
	var d recordDuty
	if _, d.need, _, err = f.recordNeed(); err != nil {
		return recordDuty{}, err
	}
	g := f.gateway(gw)
	if g == nil || g.Place == nil || !g.InService {
		return d, nil
	}
	owes := func(code string) (tenantKinds, error) {
		var ks tenantKinds
		for _, k := range tenantKindsAll {
			duties, err := f.duties(g, code, k)
			if err != nil {
				return ks, err
			}
			if slices.ContainsFunc(duties, func(duty jurisdiction.Duty) bool { return duty.Kind == jurisdiction.SessionRecords }) {
				ks.set(k)
			}
		}
		return ks, nil
	}
	if d.none, err = owes(""); err != nil {
		return recordDuty{}, err
	}
	d.at = map[string]tenantKinds{}
	for _, l := range f.locations {
		if d.at[l.Code], err = owes(l.Code); err != nil {
			return recordDuty{}, err
		}
	}
	return d, nil
}

// markRecorded sets Record on the peers of nm that owe session records
// under duty d, and takes out those that lose service (d.blocked): left
// out of a full netmap, removed by a delta.
func (s *Server) markRecorded(ctx context.Context, nm *api.Netmap, d recordDuty) error {
	if !d.any() && !d.blocks() {
		return nil // no owner needs looking up
	}
	var keys []wg.Key
	for _, p := range nm.Peers {
		if !p.Remove {
			keys = append(keys, p.PublicKey)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	owners, err := s.db.PeerOwners(ctx, keys)
	if err != nil {
		return err
	}
	peers := nm.Peers[:0]
	for _, p := range nm.Peers {
		if p.Remove {
			peers = append(peers, p)
			continue
		}
		o := owners[p.PublicKey]
		if d.blocked(o) {
			if !nm.Full {
				peers = append(peers, api.Peer{PublicKey: p.PublicKey, Remove: true})
			}
			continue
		}
		p.Record = d.of(o)
		peers = append(peers, p)
	}
	nm.Peers = peers
	if d.any() && nm.RecordSealKey == nil {
		if nm.RecordSealKey, err = s.recordSealKey(); err != nil {
			return err
		}
	}
	return nil
}

// handleGatewaySessions stores session records from a gateway. Records
// that no duty requires now are not kept: a gateway is told which devices
// owe records (Peer.Record), and the control server checks again on
// arrival, so no record of a duty-free gateway or tenant reaches the
// database.
func (s *Server) handleGatewaySessions(w http.ResponseWriter, r *http.Request) {
	gw := principalOf(r.Context()).gateway
	// Batches are read whole, then decoded one at a time: decoded all at
	// once they took both cores in bursts, and the one goroutine that
	// writes records, which all of them wait for, got a fraction of one.
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, api.MaxSessionBatchBytes))
	if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", api.MaxSessionBatchBytes))
		return
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "reading the request body failed")
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	var b api.SessionBatch
	s.sessions.decoding <- struct{}{}
	ok := decodeUpTo(w, r, &b, api.MaxSessionBatchBytes)
	<-s.sessions.decoding
	if !ok {
		return
	}
	if len(b.Records) > api.MaxSessionBatch {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("at most %d records per batch", api.MaxSessionBatch))
		return
	}
	// Sealed endpoints are opened first: the blind index and the ledger
	// need the endpoint; the sealed form is not kept.
	if err := s.openSealedEndpoints(b.Records); err != nil {
		if errors.Is(err, recordseal.ErrNotOpened) || errors.Is(err, errBothEndpoints) {
			s.recordRefused(r.Context(), gw.Name, loggableID(firstSealed(b.Records)), "sealed_endpoint_not_opened")
			writeError(w, http.StatusBadRequest, err.Error())
		} else {
			s.fail(w, r, err)
		}
		return
	}
	for i, rec := range b.Records {
		if err := rec.Validate(); err != nil {
			s.recordRefused(r.Context(), gw.Name, loggableID(rec.ID), "invalid")
			writeError(w, http.StatusBadRequest, fmt.Sprintf("record %d: %v", i, err))
			return
		}
	}
	s.seen(gw.Name, nil)
	duty, err := s.ingestDuty(r.Context(), gw.Name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var stored int
	ignored := map[string]bool{} // ids of records no duty requires
	if duty.any() {
		stored, err = s.saveSessions(r.Context(), store.GatewaySessions{Gateway: gw.Name, Records: b.Records,
			Keep:    duty.of,
			Ignored: func(id string) { ignored[id] = true }})
		if bad := (*store.BadSessionRecordError)(nil); errors.As(err, &bad) {
			s.recordRefused(r.Context(), gw.Name, bad.ID, "ends_before_start")
		}
		if errors.Is(err, store.ErrBadSessionRecord) {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
	}
	res := api.SessionBatchResult{Stored: stored, Ignored: len(b.Records) - stored}
	for _, rec := range b.Records {
		if !duty.any() || ignored[rec.ID] {
			res.IgnoredIDs = append(res.IgnoredIDs, rec.ID)
		}
	}
	s.sessions.stored.Add(float64(res.Stored))
	s.sessions.ignored.Add(float64(res.Ignored))
	writeJSON(w, http.StatusOK, res)
}

// sessionQueue gathers the batches of concurrent POST /gateway/sessions
// into shared transactions (group commit): a transaction costs about the
// same for one batch as for several, as index pages that records share
// are written once. The request at the head of the queue leads: it writes
// the waiting batches, up to maxGroupRecords, and hands the lead to the
// next request still waiting, so that no request writes for long for
// others and no goroutine outlives the requests.
type sessionQueue struct {
	mu      sync.Mutex
	waiting []*queuedSessions
	leading bool // some request leads
}

// maxGroupRecords bounds one shared transaction: large enough that
// records share index pages, small enough that batches arriving meanwhile
// are decoded while it writes, and that it holds the write lock briefly.
const maxGroupRecords = 8 * api.MaxSessionBatch

type queuedSessions struct {
	batch  store.GatewaySessions
	stored int
	err    error
	lead   chan struct{} // this request leads now
	done   chan struct{} // stored and err are set
}

// saveSessions stores b, in a transaction shared with the batches of
// other requests waiting at the same time, and returns how many records
// it kept.
func (s *Server) saveSessions(ctx context.Context, b store.GatewaySessions) (int, error) {
	q := &s.sessions.queue
	me := &queuedSessions{batch: b, lead: make(chan struct{}, 1), done: make(chan struct{})}
	q.mu.Lock()
	q.waiting = append(q.waiting, me)
	if !q.leading {
		q.leading = true
		me.lead <- struct{}{}
	}
	q.mu.Unlock()
	for {
		select {
		case <-me.done:
			return me.stored, me.err
		case <-me.lead:
			s.writeSessionGroup(context.WithoutCancel(ctx))
		}
	}
}

// writeSessionGroup writes the batches at the head of the queue (the
// leader's among them) and passes the lead on.
func (s *Server) writeSessionGroup(ctx context.Context) {
	q := &s.sessions.queue
	q.mu.Lock()
	n, records := 0, 0
	for n < len(q.waiting) && (n == 0 || records+len(q.waiting[n].batch.Records) <= maxGroupRecords) {
		records += len(q.waiting[n].batch.Records)
		n++
	}
	group := q.waiting[:n:n]
	q.waiting = q.waiting[n:]
	q.mu.Unlock()

	batches := make([]store.GatewaySessions, len(group))
	for i, g := range group {
		batches[i] = g.batch
	}
	stored, err := s.saveGroup(ctx, batches)
	switch {
	case err == nil:
		for i, g := range group {
			g.stored = stored[i]
		}
	case len(group) == 1:
		group[0].err = err
	default: // one batch must not fail the others: each again on its own
		for _, g := range group {
			var n []int
			if n, g.err = s.saveGroup(ctx, []store.GatewaySessions{g.batch}); g.err == nil {
				g.stored = n[0]
			}
		}
	}
	// A failed batch may have taken uncommitted index rows of stored ones
	// with it: they are indexed again from the ledger before anyone is
	// answered, so that no reader finds the index behind.
	if s.db.SessionIndexBehind() {
		if err := s.catchUpSessionIndex(ctx); err != nil {
			s.log.Error("session index", "err", err) // the next batch tries again
		}
	}
	// Session ingest leaves its index rows uncommitted while more batches
	// come (store.SessionIndex); when none waits, they are committed
	// before the requests are answered, so that what a gateway was told is
	// stored can be read at once.
	q.mu.Lock()
	idle := len(q.waiting) == 0
	q.mu.Unlock()
	if idle {
		if err := s.db.FlushSessionIndex(ctx); err != nil {
			// The records are in the ledger; the next batch catches up.
			s.log.Warn("committing the session index", "err", err)
		}
	}
	for _, g := range group {
		close(g.done)
	}

	q.mu.Lock()
	if len(q.waiting) > 0 {
		q.waiting[0].lead <- struct{}{}
	} else {
		q.leading = false
	}
	q.mu.Unlock()
}

// saveGroup stores batches in one transaction. A panic becomes an error:
// the requests waiting on the group, and those queued behind it, must be
// answered.
func (s *Server) saveGroup(ctx context.Context, batches []store.GatewaySessions) (stored []int, err error) {
	defer func() {
		if p := recover(); p != nil {
			// The stack, not the panic's value, which could quote a record.
			s.log.Error("storing session records panicked", "stack", string(debug.Stack()))
			stored, err = nil, errors.New("storing session records failed")
		}
	}()
	if s.db.SessionIndexBehind() {
		if err := s.catchUpSessionIndex(ctx); err != nil {
			return nil, err
		}
	}
	stored, err = s.db.SaveSessions(ctx, batches, s.sessionHook(ctx))
	if errors.Is(err, store.ErrSessionIndexBehind) && stored != nil {
		// The records are in the ledger; only their rows are missing.
		s.log.Warn("session index write failed after the ledger's; catching up", "err", err)
		if cerr := s.catchUpSessionIndex(ctx); cerr != nil {
			return nil, errors.Join(err, cerr)
		}
		return stored, nil
	}
	return stored, err
}

// catchUpSessionIndex indexes the session entries of the ledger that the
// session index lacks (after a crash, or a failed write of the index),
// reading them as the system (an access entry says so).
func (s *Server) catchUpSessionIndex(ctx context.Context) error {
	read, pages := 0, 0
	open := func(seqs []int64) ([]store.IndexedEntry, error) {
		if pages++; pages%100 == 0 { // a rebuild of a whole index takes a while
			s.log.Info("session index catching up with the ledger", "entries", read, "ledger_seq", seqs[0])
		}
		read += len(seqs)
		access := ledger.Access{Who: "meridian", Case: "session-index", Query: fmt.Sprintf("catch up the session index: entries %d-%d", seqs[0], seqs[len(seqs)-1])}
		entries, err := s.ledger.Read(ctx, access, ledger.RecordChain, seqs...)
		if err != nil {
			return nil, err
		}
		out := make([]store.IndexedEntry, 0, len(entries))
		for _, e := range entries {
			x := store.IndexedEntry{Seq: e.Seq}
			switch e.Kind {
			case "session":
				x.Session = new(store.SessionEntry)
				err = json.Unmarshal(e.Body, x.Session)
			case "session-end":
				x.End = new(store.SessionEnd)
				err = json.Unmarshal(e.Body, x.End)
			}
			if err != nil {
				return nil, fmt.Errorf("%s entry %d: %w", e.Kind, e.Seq, err)
			}
			out = append(out, x)
		}
		return out, nil
	}
	n, err := s.db.CatchUpSessionIndex(ctx, open, s.endpointIndex)
	if n > 0 {
		s.log.Info("session index caught up with the ledger", "entries", n)
	}
	if err != nil {
		return fmt.Errorf("catching up the session index: %w", err)
	}
	return nil
}

// sessionHook puts session records, and the ends of sessions
// (store.SessionEnd), in the ledger, in the transaction that indexes them.
func (s *Server) sessionHook(ctx context.Context) store.SessionHook {
	return store.SessionHook{
		Index: s.endpointIndex,
		Next:  func(tx *store.Tx) (int64, error) { return s.ledger.NextSeq(ctx, tx) },
		Stored: func(tx *store.Tx, recs []store.SessionEntry) ([]int64, error) {
			return ledger.AppendAll(ctx, s.ledger, tx, "session", recs)
		},
		Ended: func(tx *store.Tx, ends []store.SessionEnd) ([]int64, error) {
			return ledger.AppendAll(ctx, s.ledger, tx, "session-end", ends)
		},
	}
}

// endpointIndex is the blind index of a session's endpoint address: hex
// HMAC-SHA256 of the address under a key derived from the signing seed
// (Server.endpointKey, derived once: this runs for every record), so the
// table can be searched by address without holding it.
func (s *Server) endpointIndex(ip netip.Addr) string {
	m := hmac.New(sha256.New, s.endpointKey[:])
	m.Write([]byte(ip.Unmap().String()))
	return hex.EncodeToString(m.Sum(nil))
}
