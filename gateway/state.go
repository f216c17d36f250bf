package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/meridian-vpn/meridian/internal/atomicfile"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/wg"
)

// state is what a gateway keeps in its state directory: its key, the
// control server it joined (pinned by CA fingerprint), its own credential,
// and the last netmap it applied, so that it can forward traffic after a
// restart even while the control server is away.
type state struct {
	Control    string         `json:"control"`
	CAHash     string         `json:"ca_sha256"`
	Name       string         `json:"name"`
	Credential string         `json:"credential,omitempty"`
	PrivateKey wg.Key         `json:"private_key"`
	Addresses  []netip.Prefix `json:"addresses,omitempty"`
	// RecordSealKey is the control server's public key that session
	// records' endpoints are sealed to (from the netmap).
	RecordSealKey *api.RecordSealKey `json:"record_seal_key,omitempty"`
}

const (
	stateFile  = "gateway.json"
	netmapFile = "netmap.json"
)

func loadState(dir string) (*state, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, stateFile), err)
	}
	return &st, nil
}

func (st *state) save(dir string) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, stateFile), b, 0o600)
}

// cachedNetmap is the last applied netmap.
type cachedNetmap struct {
	Version int64      `json:"version"`
	Peers   []api.Peer `json:"peers"`
}

func loadNetmap(dir string) (cachedNetmap, error) {
	var nm cachedNetmap
	b, err := os.ReadFile(filepath.Join(dir, netmapFile))
	if errors.Is(err, os.ErrNotExist) {
		return nm, nil
	}
	if err != nil {
		return nm, err
	}
	if err := json.Unmarshal(b, &nm); err != nil {
		return nm, fmt.Errorf("%s: %w", filepath.Join(dir, netmapFile), err)
	}
	return nm, nil
}

func saveNetmap(dir string, nm cachedNetmap) error {
	b, err := json.Marshal(nm)
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, netmapFile), b, 0o600)
}
