package ledger_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/ledger"
)

// signedFile is a held checkpoint file with one checkpoint, signed as the
// format documents it (api.CheckpointFile), by a fixed key so that fuzz
// workers build the same file.
func signedFile(t testing.TB) (api.CheckpointFile, []byte) {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	pub := priv.Public().(ed25519.PublicKey)
	c := api.Checkpoint{ID: 3, At: time.Date(2026, 5, 1, 9, 0, 0, 123456789, time.UTC),
		Records: api.ChainHead{Seq: 41, Hash: bytes.Repeat([]byte{0xab}, 32)},
		Access:  api.ChainHead{Seq: 0, Hash: make([]byte, 32)}}
	msg := []byte("meridian ledger checkpoint v1\x00")
	msg = binary.BigEndian.AppendUint64(msg, uint64(c.At.UnixNano()))
	for _, h := range []struct {
		name string
		api.ChainHead
	}{{"records", c.Records}, {"access", c.Access}} {
		msg = append(msg, byte(len(h.name)))
		msg = append(msg, h.name...)
		msg = binary.BigEndian.AppendUint64(msg, uint64(h.Seq))
		msg = append(msg, h.Hash...)
	}
	c.Signature = ed25519.Sign(priv, msg)
	f := api.CheckpointFile{Format: api.CheckpointsFormat, PublicKey: pub, KeyFingerprint: api.KeyFingerprint(pub),
		ExportedAt: time.Date(2026, 5, 1, 9, 5, 0, 0, time.UTC), Checkpoints: []api.Checkpoint{c}}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return f, b
}

// FuzzParseCheckpointFile: a held checkpoint file (compliance verify
// --checkpoints, POST /compliance/verify) is parsed without panicking; what
// is accepted passes Check and writes back to a file that parses the same;
// and a checkpoint verifies under the file's key only if it is the one
// that was signed: no edit to the heads, time, key or signature forges one.
func FuzzParseCheckpointFile(f *testing.F) {
	genuine, b := signedFile(f)
	if c := ledger.FromWire(genuine.Checkpoints[0]); !c.SignedBy(genuine.PublicKey) {
		f.Fatal("the genuine checkpoint does not verify: the documented format is not what the ledger signs")
	}
	f.Add(b)
	compact, _ := json.Marshal(genuine)
	f.Add(compact)
	two := genuine
	c2 := genuine.Checkpoints[0]
	c2.ID, c2.Records.Seq = 4, 42
	two.Checkpoints = append([]api.Checkpoint{}, genuine.Checkpoints[0], c2)
	b2, _ := json.Marshal(two)
	f.Add(b2)
	f.Add([]byte(strings.Replace(string(b), `"seq": 41`, `"seq": -1`, 1)))
	f.Add([]byte(strings.Replace(string(b), "checkpoints/v1", "checkpoints/v2", 1)))
	f.Add([]byte(strings.Replace(string(b), `"id": 3`, `"id": 0`, 1)))
	f.Add([]byte(`{"format":"meridian-ledger-checkpoints/v1","checkpoints":null}`))
	f.Add([]byte(`{"format":"meridian-ledger-checkpoints/v1","public_key":"AAAA","checkpoints":[{}]}`))
	f.Add([]byte("not json"))
	f.Add([]byte("null"))
	want := genuine.Checkpoints[0]
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := api.ParseCheckpointFile(data)
		if err != nil {
			return
		}
		if err := file.Check(); err != nil {
			t.Fatalf("accepted a file Check refuses: %v", err)
		}
		out, err := json.Marshal(file)
		if err != nil {
			t.Fatal(err)
		}
		again, err := api.ParseCheckpointFile(out)
		if err != nil {
			t.Fatalf("the accepted file written back does not parse: %v", err)
		}
		if out2, _ := json.Marshal(again); !bytes.Equal(out, out2) {
			t.Fatalf("written back as\n%s\nthen\n%s", out, out2)
		}
		for _, c := range file.Checkpoints {
			if !ledger.FromWire(c).SignedBy(file.PublicKey) {
				continue
			}
			if !bytes.Equal(file.PublicKey, genuine.PublicKey) || !c.At.Equal(want.At) || !bytes.Equal(c.Signature, want.Signature) ||
				c.Records.Seq != want.Records.Seq || !bytes.Equal(c.Records.Hash, want.Records.Hash) ||
				c.Access.Seq != want.Access.Seq || !bytes.Equal(c.Access.Hash, want.Access.Hash) {
				t.Fatalf("checkpoint %+v verifies under %x", c, file.PublicKey)
			}
		}
	})
}
