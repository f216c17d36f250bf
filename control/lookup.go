package control

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/internal/check"
	"github.com/meridian-vpn/meridian/ledger"
	"github.com/meridian-vpn/meridian/store"
)

// parseTime reads an RFC 3339 time, which must carry its zone: a time
// without one is ambiguous by hours and is refused.
func parseTime(name, v string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		if _, err2 := time.Parse("2006-01-02T15:04:05", v); err2 == nil {
			return t, fmt.Errorf("%s has no time zone: write it as e.g. 2026-05-01T14:30:00+05:30 or ...Z", name)
		}
		return t, fmt.Errorf("%s must be an RFC 3339 time with a zone, e.g. 2026-05-01T14:30:00+05:30", name)
	}
	if err := check.Time(t); err != nil {
		return t, fmt.Errorf("%s must be a time in the years %d to %d", name, check.MinYear, check.MaxYear)
	}
	return t, nil
}

// handleLookup answers "who used this address at that time" for a lawful
// request (compliance role, case reference). Exactly one of exit_ip (with
// port and at), tunnel_ip (with at), endpoint_ip (with from and to) or
// subscriber (with from and to) is given. The answer holds the sessions,
// their devices, and the subscriber records of their owners; the read is
// recorded in the ledger's access chain before anything is returned.
func (s *Server) handleLookup(w http.ResponseWriter, r *http.Request) {
	ref, ok := s.caseRef(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	ip := func(name string) (netip.Addr, error) {
		a, err := netip.ParseAddr(q.Get(name))
		if err != nil {
			return a, fmt.Errorf("%s must be an IP address", name)
		}
		return a.Unmap(), nil
	}
	window := func() (time.Time, time.Time, error) {
		from, err := parseTime("from", q.Get("from"))
		if err != nil {
			return from, from, err
		}
		to, err := parseTime("to", q.Get("to"))
		if err == nil && !to.After(from) {
			err = fmt.Errorf("to must be after from")
		}
		return from, to, err
	}
	var sessions []store.Session
	var query string
	var err error
	given := 0
	for _, k := range []string{"exit_ip", "tunnel_ip", "endpoint_ip", "subscriber"} {
		if q.Get(k) != "" {
			given++
		}
	}
	if given != 1 {
		writeError(w, http.StatusBadRequest, "give exactly one of exit_ip (with port and at), tunnel_ip (with at), endpoint_ip (with from and to) or subscriber (with from and to)")
		return
	}
	switch {
	case q.Get("exit_ip") != "":
		var a netip.Addr
		var at time.Time
		port, perr := check.Port(q.Get("port"))
		if a, err = ip("exit_ip"); err == nil {
			if perr != nil {
				err = perr
			} else if at, err = parseTime("at", q.Get("at")); err == nil {
				query = fmt.Sprintf("exit %s port %d at %s", a, port, at.UTC().Format(time.RFC3339))
				sessions, err = s.db.SessionsByExit(r.Context(), a, port, at)
			}
		}
	case q.Get("tunnel_ip") != "":
		var a netip.Addr
		var at time.Time
		if a, err = ip("tunnel_ip"); err == nil {
			if at, err = parseTime("at", q.Get("at")); err == nil {
				query = fmt.Sprintf("tunnel %s at %s", a, at.UTC().Format(time.RFC3339))
				sessions, err = s.db.SessionsByTunnelAddr(r.Context(), a, at)
			}
		}
	case q.Get("endpoint_ip") != "":
		var a netip.Addr
		var from, to time.Time
		if a, err = ip("endpoint_ip"); err == nil {
			if from, to, err = window(); err == nil {
				query = fmt.Sprintf("endpoint %s from %s to %s", a, from.UTC().Format(time.RFC3339), to.UTC().Format(time.RFC3339))
				sessions, err = s.db.SessionsByEndpoint(r.Context(), s.endpointIndex(a), from, to)
			}
		}
	default:
		var from, to time.Time
		if from, to, err = window(); err == nil {
			query = fmt.Sprintf("subscriber %s from %s to %s", q.Get("subscriber"), from.UTC().Format(time.RFC3339), to.UTC().Format(time.RFC3339))
			sessions, err = s.db.SessionsOfUser(r.Context(), q.Get("subscriber"), from, to)
		}
	}
	if err != nil {
		if strings.Contains(err.Error(), "must") || strings.Contains(err.Error(), "zone") {
			writeError(w, http.StatusBadRequest, err.Error())
		} else {
			s.fail(w, r, err)
		}
		return
	}
	// The owners' subscriber records come from the ledger; reading them
	// records the access. A lookup without them is recorded too.
	users := map[string]bool{}
	if sub := q.Get("subscriber"); sub != "" {
		users[sub] = true
	}
	for _, x := range sessions {
		if x.User != "" {
			users[x.User] = true
		}
	}
	names := make([]string, 0, len(users))
	for u := range users {
		names = append(names, u)
	}
	sort.Strings(names)
	access := ledger.Access{Who: actor(r.Context()), Case: ref, Query: query}
	// The sessions' records and the owners' subscriber records come from
	// the ledger, in one read, which records the access. A lookup without
	// any is recorded too.
	records := map[string]api.SubscriberRecord{}
	var seqs []int64
	owner := map[int64]string{}
	for _, x := range sessions {
		for _, sq := range []int64{x.Seq, x.EndSeq} {
			if sq != 0 {
				seqs = append(seqs, sq)
			}
		}
	}
	for _, u := range names {
		us, err := s.db.SubscriberSeqs(r.Context(), u)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		for _, sq := range us {
			owner[sq] = u
		}
		seqs = append(seqs, us...)
	}
	sealed := map[int64]api.SessionRecord{}
	ended := map[int64]store.SessionEnd{}
	if len(seqs) > 0 {
		entries, err := s.ledger.Read(r.Context(), access, ledger.RecordChain, seqs...)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		byUser := map[string][]ledger.Entry{}
		for _, e := range entries {
			if e.Kind == "session" {
				if e.Body != nil {
					var rec api.SessionRecord
					if err := json.Unmarshal(e.Body, &rec); err != nil {
						s.fail(w, r, fmt.Errorf("session entry %d: %w", e.Seq, err))
						return
					}
					sealed[e.Seq] = rec
				}
				continue
			}
			if e.Kind == "session-end" {
				if e.Body != nil {
					var end store.SessionEnd
					if err := json.Unmarshal(e.Body, &end); err != nil {
						s.fail(w, r, fmt.Errorf("session-end entry %d: %w", e.Seq, err))
						return
					}
					ended[e.Seq] = end
				}
				continue
			}
			if u, ok := owner[e.Seq]; ok {
				byUser[u] = append(byUser[u], e)
			}
		}
		for u, es := range byUser {
			if records[u], err = foldRecord(es); err != nil {
				s.fail(w, r, err)
				return
			}
		}
	} else if err := s.ledger.RecordAccess(r.Context(), access, len(sessions)); err != nil {
		s.fail(w, r, err)
		return
	}
	out := api.LookupResult{Case: ref, Query: query, Sessions: []api.LookupSession{}, Subscribers: records}
	for _, x := range sessions {
		rec := x.SessionRecord
		if sr, ok := sealed[x.Seq]; ok && sr.ID == x.ID {
			rec = sr
			rec.End = x.End // set by a later "session-end" entry
		}
		ls := api.LookupSession{SessionRecord: rec, Gateway: x.Gateway, DeviceID: x.DeviceID, User: x.User}
		if end, ok := ended[x.EndSeq]; ok && end.ID == x.ID {
			ls.EndClock = end.Clock
			if end.Inferred {
				ls.EndSource = api.EndInferred
			}
		}
		if !ls.End.IsZero() && ls.EndSource == "" {
			ls.EndSource = api.EndReported
		}
		out.Sessions = append(out.Sessions, ls)
	}
	writeJSON(w, http.StatusOK, out)
}
