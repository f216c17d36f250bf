package control

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/internal/atomicfile"
	"github.com/meridian-vpn/meridian/internal/recordseal"
)

// recordSealKeyFile holds the control server's X25519 private key that
// opens the endpoints gateways seal (api.SessionRecord.SealedEndpoint),
// in its data directory, 0600, as its other keys. Lose it and records
// sealed to it but not yet delivered cannot be opened.
const recordSealKeyFile = "record-seal.key"

// recordSeal loads (or creates) the key once, when first needed.
type recordSeal struct {
	once   sync.Once
	opener *recordseal.Opener
	err    error
}

func (s *Server) recordOpener() (*recordseal.Opener, error) {
	rs := &s.sessions.seal
	rs.once.Do(func() { rs.opener, rs.err = loadOrCreateRecordSealKey(filepath.Join(s.cfg.DataDir, recordSealKeyFile)) })
	return rs.opener, rs.err
}

func loadOrCreateRecordSealKey(file string) (*recordseal.Opener, error) {
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		priv, err := recordseal.NewKey()
		if err != nil {
			return nil, err
		}
		if err := atomicfile.Write(file, []byte(base64.StdEncoding.EncodeToString(priv)+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("record seal key: %w", err)
		}
		return recordseal.NewOpener(priv)
	}
	if err != nil {
		return nil, fmt.Errorf("record seal key: %w", err)
	}
	priv, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err == nil {
		var o *recordseal.Opener
		if o, err = recordseal.NewOpener(priv); err == nil {
			return o, nil
		}
	}
	return nil, fmt.Errorf("record seal key %s is unreadable", file)
}

// recordSealKey is the key gateways that owe records seal endpoints to.
func (s *Server) recordSealKey() (*api.RecordSealKey, error) {
	o, err := s.recordOpener()
	if err != nil {
		return nil, err
	}
	return &api.RecordSealKey{Scheme: api.RecordSealScheme, Key: o.PublicKey()}, nil
}

// errBothEndpoints refuses a record with an endpoint in clear and sealed.
var errBothEndpoints = errors.New("endpoint and sealed_endpoint are both set")

// openSealedEndpoints opens the sealed endpoints of recs in place. Its
// error names the record by index, never a value.
func (s *Server) openSealedEndpoints(recs []api.SessionRecord) error {
	for i := range recs {
		r := &recs[i]
		if r.SealedEndpoint == "" {
			continue // sent by a gateway from before sealing, or spooled by one
		}
		if r.Endpoint.IsValid() {
			return fmt.Errorf("record %d: %w", i, errBothEndpoints)
		}
		o, err := s.recordOpener()
		if err != nil {
			return err
		}
		if r.Endpoint, err = o.Open(r.ID, r.SealedEndpoint); err != nil {
			return fmt.Errorf("record %d: %w", i, err)
		}
		r.SealedEndpoint = ""
	}
	return nil
}
