package control

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/ledger"
	"github.com/meridian-vpn/meridian/store"
)

// maxHeldBody bounds POST /compliance/verify: held checkpoint files grow by
// one checkpoint (about 300 bytes of JSON) an hour, so 16 MiB holds years
// of them.
const maxHeldBody = 16 << 20

// handleCheckpoints lists the stored ledger checkpoints (after an id, and
// signed at or after a time), with the key that verifies them, for copies
// kept outside the database.
func (s *Server) handleCheckpoints(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var after int64
	if v := q.Get("after"); v != "" {
		var err error
		if after, err = strconv.ParseInt(v, 10, 64); err != nil || after < 0 {
			writeError(w, http.StatusBadRequest, "after must be a checkpoint id (an integer >= 0)")
			return
		}
	}
	var since time.Time
	if v := q.Get("since"); v != "" {
		var err error
		if since, err = parseTime("since", v); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	limit := ledger.MaxCheckpoints
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > ledger.MaxCheckpoints {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit must be 1-%d", ledger.MaxCheckpoints))
			return
		}
		limit = n
	}
	cs, err := s.ledger.Checkpoints(r.Context(), after, since, limit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	pub := s.ledger.PublicKey()
	out := api.CheckpointList{PublicKey: pub, KeyFingerprint: api.KeyFingerprint(pub), Checkpoints: make([]api.Checkpoint, len(cs)), More: len(cs) == limit}
	for i, c := range cs {
		out.Checkpoints[i] = c.Wire()
	}
	writeJSON(w, http.StatusOK, out)
}

// handleVerifyLedger verifies the ledger: GET with the stored checkpoints
// only, POST with checkpoint files held outside the database too. A held
// checkpoint counts only if this server's key signed it; one signed by
// another key (the file's) is reported as such, never trusted.
func (s *Server) handleVerifyLedger(w http.ResponseWriter, r *http.Request) {
	var req api.VerifyRequest
	if r.Method == http.MethodPost {
		if !decodeUpTo(w, r, &req, maxHeldBody) {
			return
		}
		if len(req.Held) == 0 {
			writeError(w, http.StatusBadRequest, "held: give at least one checkpoint file (GET verifies without held checkpoints)")
			return
		}
		for i, f := range req.Held {
			if err := f.Check(); err != nil {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("held file %d: %v", i+1, err))
				return
			}
		}
	}
	out, err := verifyHeld(s.ledger.PublicKey(), req.Held, func(held ...ledger.Checkpoint) (ledger.Report, error) {
		return s.ledger.Verify(r.Context(), held...)
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// verifyHeld runs verify with the held checkpoints of files under pub, judges
// those of files under another key itself, and puts the two together.
func verifyHeld(pub ed25519.PublicKey, files []api.CheckpointFile, verify func(held ...ledger.Checkpoint) (ledger.Report, error)) (api.VerifyReport, error) {
	fp := api.KeyFingerprint(pub)

	// Checkpoints from files under this server's key go to the ledger; those
	// of files under another key are judged here.
	type slot struct {
		file    int
		idx     int                // index among those given to verify, or -1
		verdict api.HeldCheckpoint // when judged here
	}
	var slots []slot
	var held []ledger.Checkpoint
	var foreign []api.LedgerProblem
	for i, f := range files {
		if bytes.Equal(f.PublicKey, pub) {
			for _, c := range f.Checkpoints {
				slots = append(slots, slot{file: i, idx: len(held)})
				held = append(held, ledger.FromWire(c))
			}
			continue
		}
		valid := 0
		for _, c := range f.Checkpoints {
			v := api.HeldCheckpoint{File: i, ID: c.ID, At: c.At}
			if ledger.FromWire(c).SignedBy(f.PublicKey) {
				valid++
				v.What = fmt.Sprintf("signed by another key (%s), not this ledger's signing key (%s)", f.KeyFingerprint, fp)
			} else {
				v.What = fmt.Sprintf("signature does not verify under the file's key (%s), which is not this ledger's signing key (%s) either", f.KeyFingerprint, fp)
			}
			slots = append(slots, slot{file: i, idx: -1, verdict: v})
		}
		what := fmt.Sprintf("held file %d is under another key (%s), not this ledger's signing key (%s): %d of its %d checkpoints verify under that key, and none is trusted; the signing key was replaced, or the file is another server's",
			i+1, f.KeyFingerprint, fp, valid, len(f.Checkpoints))
		foreign = append(foreign, api.LedgerProblem{What: what, Message: what})
	}

	rep, err := verify(held...)
	if err != nil {
		return api.VerifyReport{}, err
	}
	out := api.VerifyReport{PublicKey: pub, KeyFingerprint: fp, Checkpoints: rep.Checkpoints, Omitted: rep.Omitted, Problems: []api.LedgerProblem{}}
	for _, c := range rep.Chains {
		out.Chains = append(out.Chains, api.LedgerChain{Chain: string(c.Chain), Entries: c.Entries, Purged: c.Purged, Head: api.ChainHead{Seq: c.Head.Seq, Hash: c.Head.Hash}})
	}
	for _, sl := range slots {
		if sl.idx < 0 {
			out.Checkpoints++
			out.Held = append(out.Held, sl.verdict)
			continue
		}
		h := rep.Held[sl.idx]
		out.Held = append(out.Held, api.HeldCheckpoint{File: sl.file, ID: h.ID, At: h.At, Matched: h.Matched, What: h.What})
	}
	for _, d := range rep.Divergence {
		out.Divergence = append(out.Divergence, api.ChainDivergence{Chain: string(d.Chain), LastMatched: d.LastMatched,
			FirstDiffering: d.FirstDiffering, Head: d.Head, Truncated: d.Truncated, What: d.What})
	}
	for _, p := range rep.Problems {
		out.Problems = append(out.Problems, api.LedgerProblem{Chain: string(p.Chain), First: p.First, Last: p.Last, Kind: p.Kind, What: p.What, Message: p.String()})
	}
	out.Problems = append(out.Problems, foreign...)
	out.OK = len(out.Problems) == 0 && out.Omitted == 0
	return out, nil
}

// VerifyDatabase verifies the ledger in a copy of the control server's
// database, opened read-only, as an auditor can without any key but pub:
// the hash chains, the stored checkpoints and the held ones. Data keys are
// not opened (that needs the keyring).
func VerifyDatabase(ctx context.Context, file string, pub ed25519.PublicKey, held []api.CheckpointFile) (api.VerifyReport, error) {
	if len(pub) != ed25519.PublicKeySize {
		return api.VerifyReport{}, errors.New("verify needs the ed25519 public key that signs checkpoints")
	}
	for i, f := range held {
		if err := f.Check(); err != nil {
			return api.VerifyReport{}, fmt.Errorf("held file %d: %w", i+1, err)
		}
	}
	if _, err := os.Stat(file); err != nil {
		return api.VerifyReport{}, err
	}
	sdb, err := sql.Open("sqlite", "file:"+file+"?mode=ro&_pragma=busy_timeout(10000)")
	if err != nil {
		return api.VerifyReport{}, err
	}
	defer sdb.Close()
	db := &store.DB{DB: sdb}
	return verifyHeld(pub, held, func(cs ...ledger.Checkpoint) (ledger.Report, error) {
		return ledger.Verify(ctx, db, pub, cs...)
	})
}
