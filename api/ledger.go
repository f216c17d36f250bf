package api

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// CheckpointsFormat names the file format of checkpoints held outside the
// control server's database (CheckpointFile), version 1.
const CheckpointsFormat = "meridian-ledger-checkpoints/v1"

// CheckpointFile is the file `meridian compliance checkpoints --out` writes:
// checkpoints of the compliance ledger, each signed by the control server,
// kept where someone who can write the database cannot reach them. The
// format is stable; fields are only ever added.
//
//	{
//	  "format": "meridian-ledger-checkpoints/v1",
//	  "public_key": "<ed25519 public key, 32 bytes, base64>",
//	  "key_fingerprint": "<hex SHA-256 of those 32 bytes>",
//	  "exported_at": "<RFC 3339>",
//	  "checkpoints": [ Checkpoint, ... ]   // by id, oldest first
//	}
//
// Each checkpoint's signature is ed25519 over (see ledger.Checkpoint):
//
//	"meridian ledger checkpoint v1" 0x00
//	|| at (Unix nanoseconds, 8 bytes big-endian)
//	|| for "records", then "access": len(name) (1 byte) || name
//	   || seq (8 bytes big-endian) || hash (32 bytes)
//
// so an auditor can check it with nothing but the public key. Compare the
// key's fingerprint with one obtained from the operator out of band.
type CheckpointFile struct {
	Format         string       `json:"format"`
	PublicKey      []byte       `json:"public_key"`
	KeyFingerprint string       `json:"key_fingerprint"`
	ExportedAt     time.Time    `json:"exported_at"`
	Checkpoints    []Checkpoint `json:"checkpoints"`
}

// Checkpoint is one signed statement of both chains' heads.
type Checkpoint struct {
	ID        int64     `json:"id"` // its row in the control server's ledger_checkpoints
	At        time.Time `json:"at"` // signed to the nanosecond
	Records   ChainHead `json:"records"`
	Access    ChainHead `json:"access"`
	Signature []byte    `json:"signature"` // ed25519, 64 bytes, base64
}

// ChainHead is a chain's last entry: its seq (0 for an empty chain) and hash
// (32 bytes, base64; zeros for an empty chain).
type ChainHead struct {
	Seq  int64  `json:"seq"`
	Hash []byte `json:"hash"`
}

// KeyFingerprint is the hex SHA-256 of an ed25519 public key.
func KeyFingerprint(pub []byte) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:])
}

// Check reports what makes f unusable, if anything: its format, its key
// and fingerprint, and the shape of every checkpoint. It does not check
// signatures; the ledger does (see ledger.Checkpoint.SignedBy).
func (f CheckpointFile) Check() error {
	if f.Format != CheckpointsFormat {
		return fmt.Errorf("format %q, want %q", f.Format, CheckpointsFormat)
	}
	if len(f.PublicKey) != ed25519.PublicKeySize {
		return fmt.Errorf("public_key has %d bytes, want an ed25519 key of %d", len(f.PublicKey), ed25519.PublicKeySize)
	}
	if f.KeyFingerprint != KeyFingerprint(f.PublicKey) {
		return errors.New("key_fingerprint is not the SHA-256 of public_key")
	}
	seen := map[int64]bool{}
	for i, c := range f.Checkpoints {
		where := fmt.Sprintf("checkpoint %d (#%d in the file)", c.ID, i+1)
		switch {
		case c.ID <= 0:
			return fmt.Errorf("%s: id must be positive", where)
		case seen[c.ID]:
			return fmt.Errorf("%s: id appears twice", where)
		case c.At.IsZero():
			return fmt.Errorf("%s: at is missing", where)
		case len(c.Signature) != ed25519.SignatureSize:
			return fmt.Errorf("%s: signature has %d bytes, want %d", where, len(c.Signature), ed25519.SignatureSize)
		}
		seen[c.ID] = true
		for _, h := range []struct {
			name string
			ChainHead
		}{{"records", c.Records}, {"access", c.Access}} {
			if h.Seq < 0 || len(h.Hash) != sha256.Size {
				return fmt.Errorf("%s: %s head must have a seq >= 0 and a hash of %d bytes", where, h.name, sha256.Size)
			}
		}
	}
	return nil
}

// ParseCheckpointFile decodes and checks a checkpoint file.
func ParseCheckpointFile(b []byte) (CheckpointFile, error) {
	var f CheckpointFile
	if err := json.Unmarshal(b, &f); err != nil {
		return f, fmt.Errorf("not a checkpoint file: %w", err)
	}
	return f, f.Check()
}

// CheckpointList is a page of the control server's stored checkpoints
// (GET /compliance/checkpoints), with the key that verifies them.
type CheckpointList struct {
	PublicKey      []byte       `json:"public_key"`
	KeyFingerprint string       `json:"key_fingerprint"`
	Checkpoints    []Checkpoint `json:"checkpoints"`
	More           bool         `json:"more"` // ask again with after = the last id for the rest
}

// VerifyRequest is POST /compliance/verify: verify the ledger, and check
// the given held checkpoint files against it too.
type VerifyRequest struct {
	Held []CheckpointFile `json:"held"`
}

// VerifyReport is what verifying the ledger found (GET and POST
// /compliance/verify). The ledger is intact when OK.
type VerifyReport struct {
	OK             bool              `json:"ok"`
	PublicKey      []byte            `json:"public_key"`      // the key this server signs checkpoints with
	KeyFingerprint string            `json:"key_fingerprint"` // its hex SHA-256
	Chains         []LedgerChain     `json:"chains"`
	Checkpoints    int               `json:"checkpoints"`          // checked: stored and held
	Held           []HeldCheckpoint  `json:"held,omitempty"`       // one for each held checkpoint, in the order sent
	Divergence     []ChainDivergence `json:"divergence,omitempty"` // where a chain parts from what checkpoints signed
	Problems       []LedgerProblem   `json:"problems"`
	Omitted        int               `json:"omitted,omitempty"` // problems left out of a long list
}

// LedgerChain sums up one chain as verify walked it.
type LedgerChain struct {
	Chain   string    `json:"chain"`
	Entries int64     `json:"entries"`
	Purged  int64     `json:"purged"`
	Head    ChainHead `json:"head"`
}

// HeldCheckpoint is the verdict on one held checkpoint.
type HeldCheckpoint struct {
	File    int       `json:"file"` // index of its file in VerifyRequest.Held
	ID      int64     `json:"id"`
	At      time.Time `json:"at"`
	Matched bool      `json:"matched"`        // signed by this server's key, and both chains still hold the heads it signed
	What    string    `json:"what,omitempty"` // what is wrong, when not matched
}

// ChainDivergence says where a chain parts from its checkpoints: entry
// LastMatched is as a checkpoint signed it (0: none vouches for an earlier
// one), entry FirstDiffering is not, so the first changed entry is between
// them and the chain was rewritten from it on (or cut off, if Truncated).
type ChainDivergence struct {
	Chain          string `json:"chain"`
	LastMatched    int64  `json:"last_matched"`
	FirstDiffering int64  `json:"first_differing"`
	Head           int64  `json:"head"`
	Truncated      bool   `json:"truncated"`
	What           string `json:"what"`
}

// LedgerProblem is one thing verify found wrong, and where: entries First
// to Last of Chain, or none for a checkpoint's own signature. Message says
// it in one line, with the position.
type LedgerProblem struct {
	Chain   string `json:"chain,omitempty"`
	First   int64  `json:"first,omitempty"`
	Last    int64  `json:"last,omitempty"`
	Kind    string `json:"kind,omitempty"`
	What    string `json:"what"`
	Message string `json:"message"`
}
