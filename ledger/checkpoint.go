package ledger

import (
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/binary"
	"time"
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
	err := l.db.Tx(ctx, func(tx *sql.Tx) error {
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
