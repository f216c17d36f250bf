// Package ledger keeps compliance records so that they are tamper-evident,
// encrypted at rest, and read only on the record.
//
// # Chains
//
// Entries form two hash chains in the table ledger_entries: "records" holds
// the compliance records other packages append (subscriber records,
// sessions, port blocks ...) and the ledger's own purge entries; "access"
// holds one entry for every read of compliance data. Two chains, so that
// reading never interleaves with the records read, and each chain can be
// verified, counted and purged on its own. Each chain numbers its entries
// 1, 2, 3 ... (seq) and each entry commits to its predecessor:
//
//	hash = SHA-256( "meridian ledger entry v1" 0x00
//	                || prev_hash           32 bytes, zeros for entry 1
//	                || seq                 8 bytes big-endian
//	                || len(chain) || chain 1 byte, then the name
//	                || len(kind) || kind   1 byte, then the name
//	                || at                  8 bytes big-endian, Unix nanoseconds
//	                || len(body) || body   4 bytes big-endian, then the body as stored )
//
// The hash covers the body exactly as stored, so no canonical form is
// needed and verifying needs no key: an auditor checks integrity without
// being able to read a single record. Triggers in the schema refuse
// deletes, changes to hashed columns and entries that do not link to their
// chain's head, so that a bug elsewhere cannot break the chain; they stop
// mistakes, not someone with the file, which is what Verify is for.
//
// # Encryption
//
// A record's body is its JSON, sealed with AES-256-GCM under a data key of
// its own; the data key is sealed by the Keyring's active key and stored
// beside the body (data_key, "v1:<key id>:..."), both bound to the entry's
// chain and seq. The whole record is encrypted, not only its personal
// fields, so no field can be forgotten. Rotating the keyring re-seals data
// keys only: bodies, and so hashes, never change, and the chain is never
// rewritten.
//
// # Purges
//
// Entries are never deleted. Purge removes the bodies and data keys of the
// named entries, marks them purged_by the purge entry it appends, and that
// entry (clear JSON: reason, counts, seq ranges, no personal data) is
// chained like any other. A purged entry keeps its hashes, so the chain
// still links and Verify stays green.
//
// # Checkpoints
//
// Checkpoint signs the heads of both chains with ed25519. Someone who can
// write the database can rewrite entries after the newest checkpoint and
// recompute their hashes; nothing before it. Checkpoint often, and keep
// copies of checkpoints outside the database: Verify checks held copies too,
// which also catches a truncated tail whose checkpoints were deleted.
package ledger

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/meridian-vpn/meridian/store"
)

// Chain names one of the ledger's hash chains.
type Chain string

const (
	RecordChain Chain = "records" // compliance records, and purges
	AccessChain Chain = "access"  // reads of compliance data
)

var chains = []Chain{RecordChain, AccessChain}

func (c Chain) check() error {
	if c != RecordChain && c != AccessChain {
		return fmt.Errorf("ledger: unknown chain %q: want %s or %s", c, RecordChain, AccessChain)
	}
	return nil
}

// Kinds the ledger writes itself.
const (
	purgeKind  = "purge"
	accessKind = "access"
)

// Ledger appends, reads, purges and checkpoints compliance records.
type Ledger struct {
	db     *store.DB
	keys   *Keyring
	signer ed25519.PrivateKey

	// Prepared once: preparing dominated the cost of an append.
	head   *sql.Stmt
	insert *store.Values
	kinds  *sql.Stmt // of store.EachIn's chunk of seqs
	purge  *sql.Stmt // likewise

	mu      sync.Mutex
	headsTx *sql.Tx        // the transaction of the last append
	heads   map[Chain]Head // and the heads it left, see cachedHead
}

// Open returns the ledger kept in db, sealing bodies with keys and signing
// checkpoints with signer.
func Open(ctx context.Context, db *store.DB, keys *Keyring, signer ed25519.PrivateKey) (*Ledger, error) {
	if db == nil || keys == nil {
		return nil, errors.New("ledger: a database and a keyring are required")
	}
	if len(signer) != ed25519.PrivateKeySize {
		return nil, errors.New("ledger: the checkpoint signing key is not an ed25519 private key")
	}
	// SQLite leaves stale copies of rows in pages it rearranges unless
	// secure_delete is on while they are written; a purge could not reach
	// them. It is a setting of each connection, which store.Open makes:
	// check it rather than trust it.
	var secure int
	if err := db.QueryRowContext(ctx, `PRAGMA secure_delete`).Scan(&secure); err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	if secure != 1 {
		return nil, errors.New("ledger: the database's connections do not have secure_delete on")
	}
	l := &Ledger{db: db, keys: keys, signer: signer}
	var err error
	if l.head, err = db.PrepareContext(ctx, `SELECT seq, hash FROM ledger_entries WHERE chain = ? ORDER BY seq DESC LIMIT 1`); err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	if l.insert, err = store.PrepareInsert(ctx, db.DB, insertEntries, entryValues); err != nil {
		l.head.Close()
		return nil, fmt.Errorf("ledger: %w", err)
	}
	if l.kinds, err = db.PrepareContext(ctx, `SELECT seq, kind, body IS NULL FROM ledger_entries WHERE chain = ? AND seq`+store.InList); err == nil {
		l.purge, err = db.PrepareContext(ctx, `UPDATE ledger_entries SET body = NULL, data_key = NULL, purged_by = ? WHERE chain = ? AND seq`+store.InList)
	}
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("ledger: %w", err)
	}
	return l, nil
}

// Close releases the ledger's prepared statements; the database stays open.
func (l *Ledger) Close() error {
	var errs []error
	for _, st := range []*sql.Stmt{l.head, l.kinds, l.purge} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	return errors.Join(append(errs, l.insert.Close())...)
}

// Append seals record (as JSON) and appends it to the records chain in tx,
// the caller's transaction, so that the record and anything written with it
// commit together. kind says what the record is ("subscriber", "session").
// Appends are serialised by the database's write lock (store begins every
// transaction IMMEDIATE); the (chain, seq) primary key turns any race into
// an error, never a fork.
func (l *Ledger) Append(ctx context.Context, tx *store.Tx, kind string, record any) (seq int64, err error) {
	if err := checkKind(kind); err != nil {
		return 0, err
	}
	body, err := json.Marshal(record)
	if err != nil {
		return 0, fmt.Errorf("ledger: %s record: %w", kind, err)
	}
	return l.append(ctx, tx.SQL(), RecordChain, kind, body, true)
}

func checkKind(kind string) error {
	if kind == purgeKind || kind == accessKind {
		return fmt.Errorf("ledger: kind %q is the ledger's own", kind)
	}
	if len(kind) == 0 || len(kind) > 32 {
		return fmt.Errorf("ledger: a kind is 1 to 32 characters, not %d", len(kind))
	}
	for _, c := range kind {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return fmt.Errorf("ledger: kind %q: use lower-case letters, digits and '-'", kind)
		}
	}
	return nil
}

// AppendAll seals records (each as JSON) and appends them in order to the
// records chain in tx, as Append does one, and returns their seqs. Many
// entries go into one statement: appended one at a time, the statements
// cost more than the sealing and hashing.
func AppendAll[T any](ctx context.Context, l *Ledger, tx *store.Tx, kind string, records []T) ([]int64, error) {
	if err := checkKind(kind); err != nil {
		return nil, err
	}
	plains := make([][]byte, len(records))
	for i, r := range records {
		var err error
		if plains[i], err = json.Marshal(r); err != nil {
			return nil, fmt.Errorf("ledger: %s record: %w", kind, err)
		}
	}
	return l.appendAll(ctx, tx.SQL(), RecordChain, kind, plains, true)
}

// NextSeq returns the seq that the next entry appended to the record
// chain in tx will have, so that what refers to the entries can be written
// beside them (the session index).
func (l *Ledger) NextSeq(ctx context.Context, t *store.Tx) (int64, error) {
	tx := t.SQL()
	head, cached := l.cachedHead(tx, RecordChain)
	if !cached {
		var err error
		if head, err = l.chainHead(ctx, tx, RecordChain); err != nil {
			return 0, err
		}
		l.cacheHead(tx, RecordChain, head)
	}
	return head.Seq + 1, nil
}

// append adds an entry to chain; seal says whether plain is sealed under a
// new data key or stored clear.
func (l *Ledger) append(ctx context.Context, tx *sql.Tx, chain Chain, kind string, plain []byte, seal bool) (int64, error) {
	seqs, err := l.appendAll(ctx, tx, chain, kind, [][]byte{plain}, seal)
	if err != nil {
		return 0, err
	}
	return seqs[0], nil
}

// appendAll adds an entry to chain for each of plains, in order, each
// sealed under a data key of its own if seal is set, else stored clear.
func (l *Ledger) appendAll(ctx context.Context, tx *sql.Tx, chain Chain, kind string, plains [][]byte, seal bool) ([]int64, error) {
	if len(plains) == 0 {
		return nil, nil
	}
	head, cached := l.cachedHead(tx, chain)
	if !cached {
		var err error
		if head, err = l.chainHead(ctx, tx, chain); err != nil {
			return nil, err
		}
	}
	seqs := make([]int64, len(plains))
	args := make([]any, 0, entryValues*len(plains))
	at := time.Now().UnixNano()
	prev := head.Hash
	for i, plain := range plains {
		seq, body := head.Seq+1+int64(i), plain
		var dataKey sql.NullString
		if seal {
			aad := entryAAD(chain, seq)
			key := newDataKey()
			body = newAEAD(key).Seal(nil, nil, plain, []byte(aad))
			dataKey = sql.NullString{String: l.keys.Seal(string(key), aad), Valid: true}
		}
		hash := entryHash(prev, seq, chain, kind, at, body)
		args = append(args, string(chain), seq, kind, at, body, dataKey, prev, hash)
		seqs[i], prev = seq, hash
	}
	if err := l.insert.Exec(ctx, tx, args); err != nil {
		l.cacheHead(nil, chain, Head{})
		// A stale cached head (a rolled back savepoint took our last
		// entries) fails the first row, before any of ours landed: read
		// the head again and retry.
		if real, herr := l.chainHead(ctx, tx, chain); cached && herr == nil && real.Seq < head.Seq {
			return l.appendAll(ctx, tx, chain, kind, plains, seal)
		}
		return nil, fmt.Errorf("ledger: append %s entries %d-%d: %w", chain, seqs[0], seqs[len(seqs)-1], err)
	}
	l.cacheHead(tx, chain, Head{Seq: seqs[len(seqs)-1], Hash: prev})
	return seqs, nil
}

const (
	insertEntries = `INSERT INTO ledger_entries (chain, seq, kind, at, body, data_key, prev_hash, hash) VALUES `
	entryValues   = 8
)

// cachedHead returns the head of chain as the last append in tx left it.
// Within one transaction nobody else can append (it holds SQLite's write
// lock), and the ledger_entries_linked trigger refuses an entry that does
// not link to the real head, so a stale cache costs a retry, never a fork.
// It spares a query that took a third of an append.
func (l *Ledger) cachedHead(tx *sql.Tx, chain Chain) (Head, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	h, ok := l.heads[chain]
	return h, ok && l.headsTx == tx
}

// cacheHead records h as chain's head in tx; a nil tx empties the cache.
func (l *Ledger) cacheHead(tx *sql.Tx, chain Chain, h Head) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if tx == nil || l.headsTx != tx {
		l.headsTx, l.heads = tx, map[Chain]Head{}
	}
	if tx != nil {
		l.heads[chain] = h
	}
}

// Head is the newest entry of a chain: seq 0 and a zero hash when empty.
type Head struct {
	Seq  int64  `json:"seq"`
	Hash []byte `json:"hash"`
}

var zeroHash = make([]byte, sha256.Size)

func (l *Ledger) chainHead(ctx context.Context, tx *sql.Tx, chain Chain) (Head, error) {
	var h Head
	err := tx.StmtContext(ctx, l.head).QueryRowContext(ctx, string(chain)).Scan(&h.Seq, &h.Hash)
	if errors.Is(err, sql.ErrNoRows) {
		return Head{Hash: zeroHash}, nil
	}
	if err != nil {
		return Head{}, fmt.Errorf("ledger: %s head: %w", chain, err)
	}
	return h, nil
}

// entryAAD binds a body and its data key to their place in the ledger.
func entryAAD(chain Chain, seq int64) string {
	return "ledger/" + string(chain) + "/" + strconv.FormatInt(seq, 10)
}

// entryHash is the hash defined in the package documentation.
func entryHash(prev []byte, seq int64, chain Chain, kind string, at int64, body []byte) []byte {
	h := sha256.New()
	b := make([]byte, 0, 128)
	b = append(b, "meridian ledger entry v1\x00"...)
	b = append(b, prev...)
	b = binary.BigEndian.AppendUint64(b, uint64(seq))
	b = append(b, byte(len(chain)))
	b = append(b, chain...)
	b = append(b, byte(len(kind)))
	b = append(b, kind...)
	b = binary.BigEndian.AppendUint64(b, uint64(at))
	b = binary.BigEndian.AppendUint32(b, uint32(len(body)))
	h.Write(b)
	h.Write(body)
	return h.Sum(nil)
}

// Access says who reads compliance data, under which case, asking what.
type Access struct {
	Who   string // the person or admin token reading
	Case  string // the case reference that authorises the read
	Query string // what was asked; personal data allowed, it is sealed
}

func (a Access) check() error {
	if a.Who == "" || a.Case == "" {
		return errors.New("ledger: reading compliance data needs who is reading and a case reference")
	}
	return nil
}

// accessRecord is the body of an access entry.
type accessRecord struct {
	Who     string  `json:"who"`
	Case    string  `json:"case"`
	Query   string  `json:"query"`
	Results int     `json:"results"`
	Chain   Chain   `json:"chain,omitempty"` // set when the ledger itself was read
	Seqs    []int64 `json:"seqs,omitempty"`
}

// RecordAccess appends a read of compliance data made elsewhere (a lookup
// in another package's tables) to the access chain. Record it before
// handing the results over.
func (l *Ledger) RecordAccess(ctx context.Context, a Access, results int) error {
	if err := a.check(); err != nil {
		return err
	}
	return l.db.Update(ctx, func(t *store.Tx) error {
		tx := t.SQL()
		return l.recordAccess(ctx, tx, accessRecord{Who: a.Who, Case: a.Case, Query: a.Query, Results: results})
	})
}

func (l *Ledger) recordAccess(ctx context.Context, tx *sql.Tx, r accessRecord) error {
	body, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = l.append(ctx, tx, AccessChain, accessKind, body, true)
	return err
}

// Entry is one ledger entry, opened.
type Entry struct {
	Chain Chain           `json:"chain"`
	Seq   int64           `json:"seq"`
	Kind  string          `json:"kind"`
	At    time.Time       `json:"at"`
	Body  json.RawMessage `json:"body,omitempty"` // nil once purged
}

// Read returns the entries of chain at seqs, opened, and records the read in
// the access chain in the same transaction: no record leaves the ledger
// unrecorded. Purged entries come back without a body.
func (l *Ledger) Read(ctx context.Context, a Access, chain Chain, seqs ...int64) ([]Entry, error) {
	if err := a.check(); err != nil {
		return nil, err
	}
	if err := chain.check(); err != nil {
		return nil, err
	}
	var out []Entry
	err := l.db.Update(ctx, func(t *store.Tx) error {
		tx := t.SQL()
		out = out[:0]
		results := 0
		for _, seq := range seqs {
			e, err := l.entry(ctx, tx, chain, seq)
			if err != nil {
				return err
			}
			if e.Body != nil {
				results++
			}
			out = append(out, e)
		}
		return l.recordAccess(ctx, tx, accessRecord{Who: a.Who, Case: a.Case, Query: a.Query, Results: results, Chain: chain, Seqs: seqs})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (l *Ledger) entry(ctx context.Context, tx *sql.Tx, chain Chain, seq int64) (Entry, error) {
	e := Entry{Chain: chain, Seq: seq}
	var at int64
	var body, prev, hash []byte
	var dataKey sql.NullString
	err := tx.QueryRowContext(ctx, `SELECT kind, at, body, data_key, prev_hash, hash FROM ledger_entries WHERE chain = ? AND seq = ?`, string(chain), seq).
		Scan(&e.Kind, &at, &body, &dataKey, &prev, &hash)
	if errors.Is(err, sql.ErrNoRows) {
		return Entry{}, fmt.Errorf("ledger: %s entry %d does not exist", chain, seq)
	}
	if err != nil {
		return Entry{}, fmt.Errorf("ledger: %s entry %d: %w", chain, seq, err)
	}
	e.At = time.Unix(0, at).UTC()
	if body == nil {
		return e, nil
	}
	if !slices.Equal(entryHash(prev, seq, chain, e.Kind, at, body), hash) {
		return Entry{}, fmt.Errorf("ledger: %s entry %d does not match its hash: run verify", chain, seq)
	}
	if !dataKey.Valid { // a clear purge entry
		e.Body = body
		return e, nil
	}
	aad := entryAAD(chain, seq)
	key, err := l.keys.Open(dataKey.String, aad)
	if err != nil {
		return Entry{}, fmt.Errorf("ledger: %s entry %d: data key: %w", chain, seq, err)
	}
	plain, err := newAEAD([]byte(key)).Open(nil, nil, body, []byte(aad))
	if err != nil {
		return Entry{}, fmt.Errorf("ledger: %s entry %d: body does not open under its data key", chain, seq)
	}
	e.Body = plain
	return e, nil
}

// purgeRecord is the clear body of a purge entry. It names what was purged,
// never what it held.
type purgeRecord struct {
	Reason string         `json:"reason"`
	Count  int            `json:"count"`
	Kinds  map[string]int `json:"kinds"`  // purged entries by kind
	Ranges [][2]int64     `json:"ranges"` // purged seqs, as inclusive ranges
}

func (p purgeRecord) names(seq int64) bool {
	for _, r := range p.Ranges {
		if r[0] <= seq && seq <= r[1] {
			return true
		}
	}
	return false
}

// Purge removes the bodies and data keys of chain's entries at seqs, and
// appends a purge entry naming them, their count and reason (stored in
// clear: no personal data). The entries keep their hashes, so the chain
// still verifies. Removed bytes are overwritten in the database file
// (secure_delete, see Open) and the write-ahead log is checkpointed and
// truncated (ScrubLog), so no copy remains on disk; backups are another
// matter.
func (l *Ledger) Purge(ctx context.Context, chain Chain, seqs []int64, reason string) error {
	if err := l.PurgeWith(ctx, chain, seqs, reason, nil); err != nil {
		return err
	}
	return l.ScrubLog(ctx)
}

// PurgeWith purges like Purge and runs also (if not nil) in the same
// transaction, so that the caller's own rows about the purged records (an
// index, an account) go with them or not at all. It leaves the
// write-ahead log as it is: call ScrubLog after the last of several
// purges.
func (l *Ledger) PurgeWith(ctx context.Context, chain Chain, seqs []int64, reason string, also func(tx *store.Tx) error) error {
	if err := chain.check(); err != nil {
		return err
	}
	if len(seqs) == 0 || reason == "" {
		return errors.New("ledger: purge needs entries and a reason")
	}
	seqs = slices.Clone(seqs)
	slices.Sort(seqs)
	seqs = slices.Compact(seqs)

	err := l.db.Update(ctx, func(t *store.Tx) error {
		tx := t.SQL()
		rec := purgeRecord{Reason: reason, Count: len(seqs), Kinds: map[string]int{}}
		kinds, err := l.entryKinds(ctx, tx, chain, seqs)
		if err != nil {
			return err
		}
		for _, seq := range seqs {
			k, ok := kinds[seq]
			switch {
			case !ok:
				return fmt.Errorf("ledger: purge: %s entry %d does not exist", chain, seq)
			case k.purged:
				return fmt.Errorf("ledger: purge: %s entry %d is already purged", chain, seq)
			case k.kind == purgeKind:
				return fmt.Errorf("ledger: purge: %s entry %d is a purge entry: those hold no personal data and stay", chain, seq)
			}
			rec.Kinds[k.kind]++
			if n := len(rec.Ranges); n > 0 && rec.Ranges[n-1][1] == seq-1 {
				rec.Ranges[n-1][1] = seq
			} else {
				rec.Ranges = append(rec.Ranges, [2]int64{seq, seq})
			}
		}
		body, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		purgeSeq, err := l.append(ctx, tx, chain, purgeKind, body, false)
		if err != nil {
			return err
		}
		err = store.EachIn(int64s(seqs), func(chunk []any) error {
			_, err := tx.StmtContext(ctx, l.purge).ExecContext(ctx, append([]any{purgeSeq, string(chain)}, chunk...)...)
			return err
		})
		if err != nil {
			return fmt.Errorf("ledger: purge %s entries: %w", chain, err)
		}
		if also != nil {
			return also(t)
		}
		return nil
	})
	return err
}

// ScrubLog checkpoints the write-ahead log into the database file and
// truncates it, so that no copy of a purged body remains in the log.
func (l *Ledger) ScrubLog(ctx context.Context) error {
	if err := store.TruncateLog(ctx, l.db.DB); err != nil {
		return fmt.Errorf("ledger: old copies of purged entries may remain in the write-ahead log until its next checkpoint: %w", err)
	}
	return nil
}

// int64s returns vs as values for a query.
func int64s(vs []int64) []any {
	out := make([]any, len(vs))
	for i, v := range vs {
		out[i] = v
	}
	return out
}

// entryKind is what a purge needs to know of an entry.
type entryKind struct {
	kind   string
	purged bool
}

// entryKinds returns the kind of each of chain's entries at seqs; seqs
// without an entry are left out.
func (l *Ledger) entryKinds(ctx context.Context, tx *sql.Tx, chain Chain, seqs []int64) (map[int64]entryKind, error) {
	out := make(map[int64]entryKind, len(seqs))
	err := store.EachIn(int64s(seqs), func(chunk []any) error {
		rows, err := tx.StmtContext(ctx, l.kinds).QueryContext(ctx, append([]any{string(chain)}, chunk...)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var seq int64
			var k entryKind
			if err := rows.Scan(&seq, &k.kind, &k.purged); err != nil {
				return err
			}
			out[seq] = k
		}
		return rows.Err()
	})
	return out, err
}

// RotateKey re-seals every data key that is not under the keyring's active
// key, a batch to a transaction, and returns how many it re-sealed. Bodies
// and hashes do not change. If interrupted, run it again: it continues where
// it stopped. Afterwards older keys can be removed from the keyring.
func (l *Ledger) RotateKey(ctx context.Context) (int, error) {
	total := 0
	for _, chain := range chains {
		for after := int64(0); ; {
			n, last, err := l.rotateBatch(ctx, chain, after)
			total += n
			if err != nil {
				return total, fmt.Errorf("ledger: rotate key: %w", err)
			}
			if n < rotateBatch {
				break
			}
			after = last
		}
	}
	return total, nil
}

const rotateBatch = 1000

// rotateBatch re-seals the next rotateBatch data keys of chain after seq
// after that are not under the active key, and returns how many and the
// last seq.
func (l *Ledger) rotateBatch(ctx context.Context, chain Chain, after int64) (n int, last int64, err error) {
	prefix := sealedVersion + ":" + l.keys.active + ":"
	err = l.db.Update(ctx, func(t *store.Tx) error {
		tx := t.SQL()
		rows, err := tx.QueryContext(ctx, `SELECT seq, data_key FROM ledger_entries
			WHERE chain = ? AND seq > ? AND data_key IS NOT NULL AND substr(data_key, 1, ?) <> ?
			ORDER BY seq LIMIT ?`, string(chain), after, len(prefix), prefix, rotateBatch)
		if err != nil {
			return err
		}
		var seqs []int64
		var dataKeys []string
		for rows.Next() {
			var seq int64
			var dataKey string
			if err := rows.Scan(&seq, &dataKey); err != nil {
				rows.Close()
				return err
			}
			seqs, dataKeys = append(seqs, seq), append(dataKeys, dataKey)
		}
		if err := rows.Close(); err != nil {
			return err
		}
		if err := rows.Err(); err != nil {
			return err
		}
		for i, seq := range seqs {
			aad := entryAAD(chain, seq)
			key, err := l.keys.Open(dataKeys[i], aad)
			if err != nil {
				return fmt.Errorf("%s entry %d: %w", chain, seq, err)
			}
			if _, err := tx.ExecContext(ctx, `UPDATE ledger_entries SET data_key = ? WHERE chain = ? AND seq = ?`, l.keys.Seal(key, aad), string(chain), seq); err != nil {
				return err
			}
		}
		n = len(seqs)
		if n > 0 {
			last = seqs[n-1]
		}
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	return n, last, nil
}
