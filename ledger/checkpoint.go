package ledger

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/store"
)

// A Checkpoint is the control server's signed statement of both chains'
// heads at a moment. Its signature is ed25519 over:
//
//	"meridian ledger checkpoint v1" 0x00
//	|| at                  8 bytes big-endian, Unix nanoseconds
//	|| for records, then access:
//	   len(chain) || chain 1 byte, then the name
//	   || seq              8 bytes big-endian (0 for an empty chain)
//	   || hash             32 bytes (zeros for an empty chain)
type Checkpoint struct {
	ID        int64     `json:"id"` // row in ledger_checkpoints
	At        time.Time `json:"at"`
	Records   Head      `json:"records"`
	Access    Head      `json:"access"`
	Signature []byte    `json:"signature"`
}

// Wire is c as the API carries it (api.Checkpoint).
func (c Checkpoint) Wire() api.Checkpoint {
	return api.Checkpoint{ID: c.ID, At: c.At, Signature: c.Signature,
		Records: api.ChainHead{Seq: c.Records.Seq, Hash: c.Records.Hash}, Access: api.ChainHead{Seq: c.Access.Seq, Hash: c.Access.Hash}}
}

// FromWire is a checkpoint the API carried (one held outside the
// database), to be checked.
func FromWire(c api.Checkpoint) Checkpoint {
	return Checkpoint{ID: c.ID, At: c.At.UTC(), Signature: c.Signature,
		Records: Head{Seq: c.Records.Seq, Hash: c.Records.Hash}, Access: Head{Seq: c.Access.Seq, Hash: c.Access.Hash}}
}

func (c Checkpoint) message() []byte {
	b := []byte("meridian ledger checkpoint v1\x00")
	b = binary.BigEndian.AppendUint64(b, uint64(c.At.UnixNano()))
	for _, h := range c.heads() {
		b = append(b, byte(len(h.chain)))
		b = append(b, h.chain...)
		b = binary.BigEndian.AppendUint64(b, uint64(h.Seq))
		b = append(b, h.Hash...)
	}
	return b
}

type signedHead struct {
	chain Chain
	Head
}

func (c Checkpoint) heads() []signedHead {
	return []signedHead{{RecordChain, c.Records}, {AccessChain, c.Access}}
}

// Checkpoint signs the current heads of both chains, stores the checkpoint
// and returns it. Keep a copy outside the database, for Verify.
func (l *Ledger) Checkpoint(ctx context.Context) (Checkpoint, error) {
	var c Checkpoint
	err := l.db.Update(ctx, func(t *store.Tx) error {
		tx := t.SQL()
		var err error
		if c.Records, err = l.chainHead(ctx, tx, RecordChain); err != nil {
			return err
		}
		if c.Access, err = l.chainHead(ctx, tx, AccessChain); err != nil {
			return err
		}
		c.At = time.Unix(0, time.Now().UnixNano()).UTC()
		c.Signature = ed25519.Sign(l.signer, c.message())
		res, err := tx.ExecContext(ctx, `INSERT INTO ledger_checkpoints (at, records_seq, records_hash, access_seq, access_hash, signature) VALUES (?, ?, ?, ?, ?, ?)`,
			c.At.UnixNano(), c.Records.Seq, c.Records.Hash, c.Access.Seq, c.Access.Hash, c.Signature)
		if err != nil {
			return err
		}
		c.ID, err = res.LastInsertId()
		return err
	})
	if err != nil {
		return Checkpoint{}, err
	}
	return c, nil
}

// SignedBy reports whether c carries a valid signature of pub over its
// heads and time. A checkpoint held outside the database is checked with it
// before it is trusted.
func (c Checkpoint) SignedBy(pub ed25519.PublicKey) bool {
	return len(pub) == ed25519.PublicKeySize && ed25519.Verify(pub, c.message(), c.Signature)
}

// PublicKey returns the key that verifies the ledger's checkpoints.
func (l *Ledger) PublicKey() ed25519.PublicKey { return l.signer.Public().(ed25519.PublicKey) }

// MaxCheckpoints is the most checkpoints Checkpoints returns at once.
const MaxCheckpoints = pageSize

// Checkpoints returns the stored checkpoints with an id above after, signed
// at or after since (zero: any time), oldest first, at most limit of them
// (at most MaxCheckpoints). They are what an operator copies out of the
// database, so that Verify can later be given them as held checkpoints.
func (l *Ledger) Checkpoints(ctx context.Context, after int64, since time.Time, limit int) ([]Checkpoint, error) {
	if limit <= 0 || limit > MaxCheckpoints {
		limit = MaxCheckpoints
	}
	var sinceNano int64
	if !since.IsZero() {
		sinceNano = since.UnixNano()
	}
	rows, err := l.db.QueryContext(ctx, `SELECT id, at, records_seq, records_hash, access_seq, access_hash, signature FROM ledger_checkpoints
		WHERE id > ? AND at >= ? ORDER BY id LIMIT ?`, after, sinceNano, limit)
	if err != nil {
		return nil, fmt.Errorf("ledger: reading checkpoints: %w", err)
	}
	defer rows.Close()
	cs := []Checkpoint{}
	for rows.Next() {
		var c Checkpoint
		var at int64
		if err := rows.Scan(&c.ID, &at, &c.Records.Seq, &c.Records.Hash, &c.Access.Seq, &c.Access.Hash, &c.Signature); err != nil {
			return nil, fmt.Errorf("ledger: reading checkpoints: %w", err)
		}
		c.At = time.Unix(0, at).UTC()
		cs = append(cs, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("ledger: reading checkpoints: %w", err)
	}
	return cs, nil
}
