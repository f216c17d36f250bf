package api

import (
	"encoding/hex"
	"fmt"
	"strings"
)

// A join token lets a new gateway join a control server. It carries the
// token's id and secret and the SHA-256 of the control server's CA
// certificate, so the gateway can pin the control server's identity on first
// contact without any prior trust (as kubeadm's discovery hash does):
//
//	mrdjoin1.<id>.<secret>.<sha256 of CA certificate, hex>
const joinTokenPrefix = "mrdjoin1"

// JoinTokenParts is a parsed join token.
type JoinTokenParts struct {
	ID, Secret string
	CAHash     string // hex SHA-256 of the control CA certificate (DER)
}

// String renders the token.
func (p JoinTokenParts) String() string {
	return strings.Join([]string{joinTokenPrefix, p.ID, p.Secret, p.CAHash}, ".")
}

// ParseJoinToken splits a join token into its parts, checking its form.
func ParseJoinToken(s string) (JoinTokenParts, error) {
	f := strings.Split(strings.TrimSpace(s), ".")
	if len(f) != 4 || f[0] != joinTokenPrefix {
		return JoinTokenParts{}, fmt.Errorf("malformed join token: want %s.<id>.<secret>.<ca-sha256>, as printed by 'meridian gateway token'", joinTokenPrefix)
	}
	p := JoinTokenParts{ID: f[1], Secret: f[2], CAHash: strings.ToLower(f[3])}
	if p.ID == "" || len(p.Secret) < 16 {
		return JoinTokenParts{}, fmt.Errorf("malformed join token: id or secret too short")
	}
	if strings.ContainsFunc(p.ID+p.Secret, func(r rune) bool { return !isBase64URL(r) }) {
		return JoinTokenParts{}, fmt.Errorf("malformed join token: it has characters that do not belong (was it wrapped or cut when copied?)")
	}
	if b, err := hex.DecodeString(p.CAHash); err != nil || len(b) != 32 {
		return JoinTokenParts{}, fmt.Errorf("malformed join token: CA fingerprint is not 64 hex digits")
	}
	return p, nil
}

// isBase64URL reports whether r is of the alphabet the control server
// writes a token's id and secret in (unpadded base64url).
func isBase64URL(r rune) bool {
	return r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_'
}
