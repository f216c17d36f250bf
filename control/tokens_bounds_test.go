package control

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
)

// TestAdminTokenTTLBounds pins the lifetime bounds of an admin token at
// their edges: exactly 1 minute and exactly 10 years are accepted, and the
// token expires exactly that long after its creation (as created and as
// stored); one nanosecond less than a minute or more than 10 years (the
// ttl travels as nanoseconds) is refused with 400 and creates nothing.
func TestAdminTokenTTLBounds(t *testing.T) {
	ts := newTestServer(t, "10.200.0.0/24")
	ctx := context.Background()

	for _, ttl := range []time.Duration{time.Minute, maxTokenTTL} {
		tok, err := ts.admin.CreateAdminToken(ctx, api.AdminTokenRequest{Name: fmt.Sprintf("ttl-%d", ttl), Role: api.RoleAdmin, TTL: ttl})
		if err != nil {
			t.Fatalf("ttl %s refused: %v", ttl, err)
		}
		if !tok.ExpiresAt.Equal(tok.CreatedAt.Add(ttl)) {
			t.Fatalf("ttl %s: expires at %s, want %s (created %s)", ttl, tok.ExpiresAt, tok.CreatedAt.Add(ttl), tok.CreatedAt)
		}
		list, err := ts.admin.AdminTokens(ctx)
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(list, func(x api.AdminToken) bool { return x.ID == tok.ID })
		if i < 0 || !list[i].ExpiresAt.Equal(tok.CreatedAt.Add(ttl)) {
			t.Fatalf("ttl %s: listed %+v, want token %s expiring at %s", ttl, list, tok.ID, tok.CreatedAt.Add(ttl))
		}
	}
	if maxTokenTTL != 10*365*24*time.Hour {
		t.Fatalf("maxTokenTTL is %s, want 10 years of 365 days", maxTokenTTL)
	}

	before, err := ts.admin.AdminTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, ttl := range []time.Duration{time.Minute - time.Nanosecond, maxTokenTTL + time.Nanosecond} {
		_, err := ts.admin.CreateAdminToken(ctx, api.AdminTokenRequest{Name: "out-of-bounds", Role: api.RoleAdmin, TTL: ttl})
		wantStatus(t, err, 400, "want between 1 minute and 10 years")
	}
	after, err := ts.admin.AdminTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Fatalf("refused ttls created tokens: %d before, %d after", len(before), len(after))
	}
}
