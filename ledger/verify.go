package ledger

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/meridian-vpn/meridian/store"
)

// Report is what Verify found. The ledger is intact when Problems is empty.
type Report struct {
	Chains      []ChainReport `json:"chains"`
	Checkpoints int           `json:"checkpoints"`          // checked: stored and held
	Held        []HeldResult  `json:"held,omitempty"`       // one for each held checkpoint, in the order given
	Divergence  []Divergence  `json:"divergence,omitempty"` // chains that part from what a checkpoint signed
	Problems    []Problem     `json:"problems"`
	Omitted     int           `json:"omitted,omitempty"` // problems past the first maxProblems
}

// HeldResult is what Verify found for one held checkpoint.
type HeldResult struct {
	ID      int64     `json:"id"`
	At      time.Time `json:"at"`
	Matched bool      `json:"matched"`        // signed by the key, and both chains still hold the heads it signed
	What    string    `json:"what,omitempty"` // what is wrong, when it did not match
}

// Divergence says where a chain parts from its checkpoints (stored and held,
// with valid signatures): entry LastMatched still carries the hash a
// checkpoint signed, entry FirstDiffering does not (or is missing). Hashes
// chain, so the first entry changed is among LastMatched+1 ... FirstDiffering
// and every entry from it on was rewritten, or cut off when FirstDiffering
// lies past the chain's end. Checkpoints alone cannot narrow it further:
// check more often to bracket it closer.
type Divergence struct {
	Chain          Chain  `json:"chain"`
	LastMatched    int64  `json:"last_matched"`    // 0: no checkpoint vouches for an earlier entry
	FirstDiffering int64  `json:"first_differing"` // the lowest entry a checkpoint signed that is now different or missing
	Head           int64  `json:"head"`            // the chain's last entry as found
	Truncated      bool   `json:"truncated"`       // FirstDiffering lies past Head: the tail was cut off
	What           string `json:"what"`
}

// ChainReport sums up one chain as Verify walked it.
type ChainReport struct {
	Chain   Chain `json:"chain"`
	Entries int64 `json:"entries"`
	Purged  int64 `json:"purged"`
	Head    Head  `json:"head"`
}

// OK reports whether Verify found nothing wrong.
func (r Report) OK() bool { return len(r.Problems) == 0 }

// Problem is one thing Verify found wrong, and where: entries First to Last
// of Chain, or none for a checkpoint's own signature.
type Problem struct {
	Chain Chain  `json:"chain,omitempty"`
	First int64  `json:"first,omitempty"`
	Last  int64  `json:"last,omitempty"`
	Kind  string `json:"kind,omitempty"`
	What  string `json:"what"`

	shift int64 // for entries found out of order: where written minus where found
}

func (p Problem) String() string {
	switch {
	case p.First == 0:
		return p.What
	case p.Last > p.First:
		return fmt.Sprintf("entries %d-%d (%s): %s", p.First, p.Last, p.Chain, p.What)
	case p.Kind != "":
		return fmt.Sprintf("entry %d (%s/%s): %s", p.First, p.Chain, p.Kind, p.What)
	}
	return fmt.Sprintf("entry %d (%s): %s", p.First, p.Chain, p.What)
}

// maxProblems bounds a report on a thoroughly damaged ledger.
const maxProblems = 1000

// add records p, merging a run of entries all moved by the same distance
// (as after an insertion) into one problem.
func (r *Report) add(p Problem) {
	if n := len(r.Problems); n > 0 && p.shift != 0 {
		last := &r.Problems[n-1]
		if last.shift == p.shift && last.Chain == p.Chain && last.Last+1 == p.First {
			last.Last, last.Kind = p.Last, ""
			last.What = movedWhat(last.First, last.Last, last.shift)
			return
		}
	}
	if len(r.Problems) == maxProblems {
		r.Omitted++
		return
	}
	r.Problems = append(r.Problems, p)
}

func movedWhat(first, last, shift int64) string {
	if first == last {
		return fmt.Sprintf("out of order: written as entry %d", first+shift)
	}
	return fmt.Sprintf("out of order: written as entries %d-%d", first+shift, last+shift)
}

// Verify checks the ledger in db without any key but the control server's
// public key: an auditor can run it. It walks both chains from the start,
// recomputing every hash and checking every link, that seqs run without
// gaps, that every removed body was removed by a purge entry that names it,
// and that every checkpoint (stored, and held ones given) is signed by pub
// and still matches the entries it signed. Entries after the newest
// checkpoint can be rewritten undetected by someone able to write the
// database; nothing before it can.
func Verify(ctx context.Context, db *store.DB, pub ed25519.PublicKey, held ...Checkpoint) (Report, error) {
	return verify(ctx, db, pub, nil, held)
}

// Verify is the package's Verify, which in addition checks that every
// entry's data key opens under the ledger's keyring.
func (l *Ledger) Verify(ctx context.Context, held ...Checkpoint) (Report, error) {
	openKey := func(chain Chain, seq int64, dataKey string) error {
		_, err := l.keys.Open(dataKey, entryAAD(chain, seq))
		return err
	}
	return verify(ctx, l.db, l.signer.Public().(ed25519.PublicKey), openKey, held)
}

func verify(ctx context.Context, db *store.DB, pub ed25519.PublicKey, openKey func(Chain, int64, string) error, held []Checkpoint) (Report, error) {
	if len(pub) != ed25519.PublicKeySize {
		return Report{}, errors.New("ledger: verify needs the ed25519 public key that signs checkpoints")
	}
	r := Report{Problems: []Problem{}}
	for _, chain := range chains {
		w := walker{db: db, chain: chain, openKey: openKey, r: &r}
		cr, err := w.walk(ctx)
		if err != nil {
			return Report{}, fmt.Errorf("ledger: verify %s: %w", chain, err)
		}
		r.Chains = append(r.Chains, cr)
	}
	marks := map[Chain]*chainMarks{}
	for _, chain := range chains {
		marks[chain] = &chainMarks{}
	}
	for after := int64(0); ; {
		page, err := loadCheckpoints(ctx, db, after)
		if err != nil {
			return Report{}, fmt.Errorf("ledger: verify: reading checkpoints after %d: %w", after, err)
		}
		for _, c := range page {
			if _, err := checkCheckpoint(ctx, db, pub, c, fmt.Sprintf("checkpoint %d", c.ID), &r, marks); err != nil {
				return Report{}, err
			}
			after = c.ID
		}
		if len(page) < pageSize {
			break
		}
	}
	for _, c := range held {
		what, err := checkCheckpoint(ctx, db, pub, c, fmt.Sprintf("held checkpoint %d of %s", c.ID, c.At.Format(time.RFC3339)), &r, marks)
		if err != nil {
			return Report{}, err
		}
		r.Held = append(r.Held, HeldResult{ID: c.ID, At: c.At, Matched: what == "", What: what})
	}
	for _, cr := range r.Chains {
		if d, ok := marks[cr.Chain].divergence(cr.Chain, cr.Head.Seq); ok {
			r.Divergence = append(r.Divergence, d)
		}
	}
	return r, nil
}

// chainMarks collects, for one chain, what the checkpoints with valid
// signatures say of it: the entries whose hashes still match, and the
// lowest entry that is missing or differs.
type chainMarks struct {
	matched []mark
	differs *mark
}

type mark struct {
	seq     int64
	label   string
	missing bool
}

func (m *chainMarks) divergence(chain Chain, head int64) (Divergence, bool) {
	if m.differs == nil {
		return Divergence{}, false
	}
	d := Divergence{Chain: chain, FirstDiffering: m.differs.seq, Head: head, Truncated: m.differs.seq > head}
	var last *mark
	for i, x := range m.matched {
		// A checkpoint signed after the change matches the changed chain:
		// only those below the first difference bound where it began.
		if x.seq < d.FirstDiffering && (last == nil || x.seq > last.seq) {
			last = &m.matched[i]
		}
	}
	vouched := "no checkpoint vouches for any entry before it"
	if last != nil {
		d.LastMatched = last.seq
		vouched = fmt.Sprintf("entry %d is as %s signed it", last.seq, last.label)
	}
	switch {
	case d.Truncated:
		d.What = fmt.Sprintf("the %s chain was cut off: it ends at entry %d, but %s signed entry %d (entries %d-%d are gone)",
			chain, head, m.differs.label, d.FirstDiffering, head+1, d.FirstDiffering)
		switch {
		case last == nil && head > 0:
			d.What += fmt.Sprintf("; no checkpoint vouches for entries 1-%d either", head)
		case last != nil && last.seq < head:
			d.What += fmt.Sprintf("; %s, entries %d-%d may have been rewritten too", vouched, last.seq+1, head)
		}
	case d.LastMatched+1 == d.FirstDiffering:
		d.What = fmt.Sprintf("the %s chain parts from its checkpoints at entry %d: %s; %s, and every entry from %d on was rewritten",
			chain, d.FirstDiffering, m.differs.what(), vouched, d.FirstDiffering)
	default:
		d.What = fmt.Sprintf("the %s chain parts from its checkpoints between entries %d and %d: %s; %s, and the chain was rewritten from the first changed entry on",
			chain, d.LastMatched+1, d.FirstDiffering, m.differs.what(), vouched)
	}
	return d, true
}

func (x mark) what() string {
	if x.missing {
		return fmt.Sprintf("entry %d is missing, though %s signed it", x.seq, x.label)
	}
	return fmt.Sprintf("entry %d differs from what %s signed", x.seq, x.label)
}

// pageSize is how many rows Verify reads at a time: memory stays flat, and
// no transaction holds the database while a long ledger is walked.
const pageSize = 1000

type row struct {
	seq      int64
	kind     string
	at       int64
	body     []byte
	dataKey  sql.NullString
	prev     []byte
	hash     []byte
	purgedBy sql.NullInt64
}

func loadEntries(ctx context.Context, db *store.DB, chain Chain, after int64) ([]row, error) {
	rows, err := db.QueryContext(ctx, `SELECT seq, kind, at, body, data_key, prev_hash, hash, purged_by FROM ledger_entries
		WHERE chain = ? AND seq > ? ORDER BY seq LIMIT ?`, string(chain), after, pageSize)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var page []row
	for rows.Next() {
		var e row
		if err := rows.Scan(&e.seq, &e.kind, &e.at, &e.body, &e.dataKey, &e.prev, &e.hash, &e.purgedBy); err != nil {
			return nil, err
		}
		page = append(page, e)
	}
	return page, rows.Err()
}

// walker checks one chain, entry by entry.
type walker struct {
	db      *store.DB
	chain   Chain
	openKey func(Chain, int64, string) error // nil: data keys are not opened
	r       *Report

	purge struct { // the last purge entry looked up
		seq int64
		rec *purgeRecord // nil: not a readable purge entry
	}
}

func (w *walker) walk(ctx context.Context) (ChainReport, error) {
	cr := ChainReport{Chain: w.chain, Head: Head{Hash: zeroHash}}
	expect, prev, prevMisplaced := int64(1), zeroHash, false
	for after := int64(0); ; {
		page, err := loadEntries(ctx, w.db, w.chain, after)
		if err != nil {
			return cr, fmt.Errorf("reading entries after %d: %w", after, err)
		}
		for _, e := range page {
			cr.Entries++
			gap := e.seq > expect
			if gap {
				w.r.add(Problem{Chain: w.chain, First: expect, Last: e.seq - 1, What: "missing"})
			}
			// Whether e links to its predecessor: not checked across a gap
			// (already reported) or after an entry not written where it
			// stands (its hash is not the one e was chained to).
			linked := gap || prevMisplaced || bytes.Equal(e.prev, prev)
			misplaced, err := w.check(ctx, e, linked)
			if err != nil {
				return cr, err
			}
			if e.body == nil {
				cr.Purged++
			}
			expect, prev, prevMisplaced = e.seq+1, e.hash, misplaced
			cr.Head = Head{Seq: e.seq, Hash: e.hash}
			after = e.seq
		}
		if len(page) < pageSize {
			return cr, nil
		}
	}
}

// check reports what is wrong with e, and whether e is not where it was
// written (so its successor's link cannot be judged).
func (w *walker) check(ctx context.Context, e row, linked bool) (misplaced bool, err error) {
	p := Problem{Chain: w.chain, First: e.seq, Last: e.seq, Kind: e.kind}
	switch {
	case e.body == nil:
		what, err := w.checkPurged(ctx, e)
		if what != "" {
			p.What = what
			w.r.add(p)
		}
		if !linked {
			p.What = fmt.Sprintf("does not link to entry %d (prev hash differs)", e.seq-1)
			w.r.add(p)
		}
		return false, err

	case !bytes.Equal(entryHash(e.prev, e.seq, w.chain, e.kind, e.at, e.body), e.hash):
		if s, ok := writtenAs(w.chain, e); ok {
			p.shift = s - e.seq
			p.What = movedWhat(e.seq, e.seq, p.shift)
			w.r.add(p)
			return true, nil
		}
		if linked {
			p.What = "contents changed (hash mismatch)"
			w.r.add(p)
			return false, nil
		}
		p.What = fmt.Sprintf("not in chain: hash does not match and prev hash does not link to entry %d (inserted, or rewritten)", e.seq-1)
		w.r.add(p)
		return true, nil
	}

	if !linked {
		p.What = fmt.Sprintf("does not link to entry %d (prev hash differs): one of them was replaced, or this one inserted", e.seq-1)
		w.r.add(p)
	}
	switch {
	case e.kind == purgeKind:
		return false, w.checkPurgeEntry(ctx, e)
	case !e.dataKey.Valid:
		p.What = "data key missing: the body cannot be opened"
		w.r.add(p)
	case w.openKey != nil:
		if err := w.openKey(w.chain, e.seq, e.dataKey.String); err != nil {
			p.What = "data key: " + err.Error()
			w.r.add(p)
		}
	}
	return false, nil
}

// moveWindow is how far from where it stands Verify looks for the position
// an entry was written at.
const moveWindow = 64

// writtenAs returns the seq e's hash was computed for, if it is near.
func writtenAs(chain Chain, e row) (int64, bool) {
	for d := int64(1); d <= moveWindow; d++ {
		for _, s := range []int64{e.seq - d, e.seq + d} {
			if s > 0 && bytes.Equal(entryHash(e.prev, s, chain, e.kind, e.at, e.body), e.hash) {
				return s, true
			}
		}
	}
	return 0, false
}

// checkPurged says what is wrong with an entry whose body is gone, if
// anything: a later purge entry must name it.
func (w *walker) checkPurged(ctx context.Context, e row) (string, error) {
	if !e.purgedBy.Valid || e.purgedBy.Int64 <= e.seq {
		return "body removed without a purge entry", nil
	}
	by := e.purgedBy.Int64
	if w.purge.seq != by {
		rec, err := w.loadPurge(ctx, by)
		if err != nil {
			return "", err
		}
		w.purge.seq, w.purge.rec = by, rec
	}
	if w.purge.rec == nil || !w.purge.rec.names(e.seq) {
		return fmt.Sprintf("body removed, but entry %d is no purge entry naming it", by), nil
	}
	return "", nil
}

// loadPurge returns the purge record of entry seq, or nil if it is not a
// readable purge entry. Its hash is checked when the walk gets there.
func (w *walker) loadPurge(ctx context.Context, seq int64) (*purgeRecord, error) {
	var kind string
	var body []byte
	err := w.db.QueryRowContext(ctx, `SELECT kind, body FROM ledger_entries WHERE chain = ? AND seq = ?`, string(w.chain), seq).Scan(&kind, &body)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading entry %d: %w", seq, err)
	}
	var rec purgeRecord
	if kind != purgeKind || json.Unmarshal(body, &rec) != nil {
		return nil, nil
	}
	return &rec, nil
}

// checkPurgeEntry checks that every entry a purge entry names was purged by
// it.
func (w *walker) checkPurgeEntry(ctx context.Context, e row) error {
	var rec purgeRecord
	if e.dataKey.Valid || json.Unmarshal(e.body, &rec) != nil {
		w.r.add(Problem{Chain: w.chain, First: e.seq, Last: e.seq, Kind: e.kind, What: "purge entry does not parse"})
		return nil
	}
	for _, rg := range rec.Ranges {
		if rg[0] < 1 || rg[0] > rg[1] || rg[1] >= e.seq {
			w.r.add(Problem{Chain: w.chain, First: e.seq, Last: e.seq, Kind: e.kind, What: fmt.Sprintf("purge entry names entries %d-%d, which do not precede it", rg[0], rg[1])})
			continue
		}
		rows, err := w.db.QueryContext(ctx, `SELECT seq, kind, body IS NOT NULL, purged_by FROM ledger_entries
			WHERE chain = ? AND seq BETWEEN ? AND ? AND (body IS NOT NULL OR purged_by IS NOT ?)`, string(w.chain), rg[0], rg[1], e.seq)
		if err != nil {
			return fmt.Errorf("reading entries %d-%d: %w", rg[0], rg[1], err)
		}
		for rows.Next() {
			p := Problem{Chain: w.chain}
			var held bool
			var by sql.NullInt64
			if err := rows.Scan(&p.First, &p.Kind, &held, &by); err != nil {
				rows.Close()
				return err
			}
			p.Last = p.First
			if held {
				p.What = fmt.Sprintf("still holds its body, though purge entry %d removed it", e.seq)
			} else {
				p.What = fmt.Sprintf("marked purged by entry %d, though purge entry %d removed it", by.Int64, e.seq)
			}
			w.r.add(p)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
	}
	return nil
}

func loadCheckpoints(ctx context.Context, db *store.DB, after int64) ([]Checkpoint, error) {
	rows, err := db.QueryContext(ctx, `SELECT id, at, records_seq, records_hash, access_seq, access_hash, signature FROM ledger_checkpoints
		WHERE id > ? ORDER BY id LIMIT ?`, after, pageSize)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var page []Checkpoint
	for rows.Next() {
		var c Checkpoint
		var at int64
		if err := rows.Scan(&c.ID, &at, &c.Records.Seq, &c.Records.Hash, &c.Access.Seq, &c.Access.Hash, &c.Signature); err != nil {
			return nil, err
		}
		c.At = time.Unix(0, at).UTC()
		page = append(page, c)
	}
	return page, rows.Err()
}

// checkCheckpoint checks c's signature and that the entries it signed still
// carry the hashes it signed, notes what it found in marks, and returns
// what is wrong with c ("" if nothing).
func checkCheckpoint(ctx context.Context, db *store.DB, pub ed25519.PublicKey, c Checkpoint, label string, r *Report, marks map[Chain]*chainMarks) (string, error) {
	r.Checkpoints++
	if !ed25519.Verify(pub, c.message(), c.Signature) {
		r.add(Problem{What: label + ": signature does not verify"})
		return "signature does not verify", nil
	}
	var wrong []string
	for _, h := range c.heads() {
		if h.Seq == 0 {
			continue
		}
		var hash []byte
		err := db.QueryRowContext(ctx, `SELECT hash FROM ledger_entries WHERE chain = ? AND seq = ?`, string(h.chain), h.Seq).Scan(&hash)
		p := Problem{Chain: h.chain, First: h.Seq, Last: h.Seq}
		m := marks[h.chain]
		x := mark{seq: h.Seq, label: label}
		switch {
		case errors.Is(err, sql.ErrNoRows):
			p.What = "missing, though " + label + " signed it"
			r.add(p)
			x.missing = true
			wrong = append(wrong, fmt.Sprintf("%s entry %d, which it signed, is missing", h.chain, h.Seq))
		case err != nil:
			return "", fmt.Errorf("ledger: verify %s: %w", label, err)
		case !bytes.Equal(hash, h.Hash):
			p.What = "differs from the hash " + label + " signed"
			r.add(p)
			wrong = append(wrong, fmt.Sprintf("%s entry %d differs from the hash it signed", h.chain, h.Seq))
		default:
			m.matched = append(m.matched, x)
			continue
		}
		if m.differs == nil || x.seq < m.differs.seq {
			m.differs = &x
		}
	}
	return strings.Join(wrong, "; "), nil
}
