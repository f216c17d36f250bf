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

// ExportRequest asks for an evidence bundle under a case reference.
type ExportRequest struct {
	Case       string `json:"case"`
	Subscriber string `json:"subscriber"` // the account whose records are exported
}

// Export is an export request and its approval state.
type Export struct {
	ID          string    `json:"id"`
	Case        string    `json:"case"`
	RequestedBy string    `json:"requested_by"`
	RequestedAt time.Time `json:"requested_at"`
	ApprovedBy  string    `json:"approved_by,omitempty"`
	ApprovedAt  time.Time `json:"approved_at,omitzero"`
}

// Bundle is an approved export: files, a manifest with the SHA-256 of every
// file, and the control server's ed25519 signature over the manifest.
type Bundle struct {
	Files     map[string][]byte `json:"files"`     // name -> content
	Manifest  []byte            `json:"manifest"`  // manifest.json as signed
	Signature []byte            `json:"signature"` // ed25519 over Manifest
	PublicKey []byte            `json:"public_key"`
}

// Manifest lists a bundle's files.
type Manifest struct {
	Case        string         `json:"case"`
	Export      string         `json:"export"`
	CreatedAt   time.Time      `json:"created_at"`
	RequestedBy string         `json:"requested_by"`
	ApprovedBy  string         `json:"approved_by"`
	Files       []ManifestFile `json:"files"`
}

// ManifestFile is one file of a bundle.
type ManifestFile struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
	Bytes  int    `json:"bytes"`
}

// Verify checks the bundle's signature and that every file matches the
// manifest (and that no file is missing or extra), and returns the manifest.
func (b Bundle) Verify() (Manifest, error) {
	var m Manifest
	if len(b.PublicKey) != ed25519.PublicKeySize || !ed25519.Verify(b.PublicKey, b.Manifest, b.Signature) {
		return m, errors.New("bundle: the manifest's signature does not verify")
	}
	if err := json.Unmarshal(b.Manifest, &m); err != nil {
		return m, fmt.Errorf("bundle: manifest: %w", err)
	}
	if len(m.Files) != len(b.Files) {
		return m, fmt.Errorf("bundle: %d files, but the manifest lists %d", len(b.Files), len(m.Files))
	}
	listed := map[string]bool{}
	for _, f := range m.Files {
		if listed[f.Name] {
			return m, fmt.Errorf("bundle: the manifest lists %s twice", f.Name)
		}
		listed[f.Name] = true
		content, ok := b.Files[f.Name]
		sum := sha256.Sum256(content)
		if !ok || hex.EncodeToString(sum[:]) != f.SHA256 || len(content) != f.Bytes {
			return m, fmt.Errorf("bundle: %s does not match the manifest", f.Name)
		}
	}
	return m, nil
}
