package main

import (
	"bytes"
	"context"
	"database/sql"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/control"
)

// TestComplianceCheckpointsCommands runs `compliance checkpoints` and
// `compliance verify` against a control server in this process: the file is
// written, added to, checked by the server and offline; bad files and a
// checkpoint that no longer verifies leave the file as it was.
func TestComplianceCheckpointsCommands(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	dir := t.TempDir()
	srv, err := control.New(ctx, control.Config{DataDir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l, nil) }()
	t.Cleanup(func() { cancel(); <-done; srv.Close() })
	tok, err := srv.CreateToken(ctx, "auditor", api.RoleAuditor)
	if err != nil {
		t.Fatal(err)
	}
	server := control.URLFor(l)
	flags := []string{"--server", server, "--token", tok, "--data", dir}
	run := func(f func(context.Context, []string) error, args ...string) error {
		return f(ctx, append(append([]string(nil), flags...), args...))
	}
	// The server signs a checkpoint as it starts.
	c, _ := api.NewClient(server, tok, "")
	for deadline := time.Now().Add(5 * time.Second); ; {
		var list api.CheckpointList
		if err := c.Do(ctx, "GET", "/compliance/checkpoints", nil, &list); err == nil && len(list.Checkpoints) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no checkpoint signed at start")
		}
		time.Sleep(20 * time.Millisecond)
	}

	held := filepath.Join(t.TempDir(), "checkpoints.json")
	for range 2 {
		if err := run(runComplianceCheckpoints, "--out", held); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(held)
	if err != nil {
		t.Fatal(err)
	}
	f, err := api.ParseCheckpointFile(b)
	if err != nil || len(f.Checkpoints) != 1 || f.Format != api.CheckpointsFormat {
		t.Fatalf("file: %+v %v", f, err)
	}
	if err := run(runComplianceVerify, "--checkpoints", held); err != nil {
		t.Fatalf("verify with the held file: %v", err)
	}
	if err := runComplianceVerify(ctx, []string{"--db", filepath.Join(dir, "meridian.db"), "--checkpoints", held}); err != nil {
		t.Fatalf("offline verify: %v", err)
	}

	// A malformed file: a clear error, and the file stays as it was.
	bad := filepath.Join(t.TempDir(), "bad.json")
	badContent := []byte(`{"format": "meridian-ledger-checkpoints/v1", "checkpoints": [`)
	os.WriteFile(bad, badContent, 0o644)
	if err := run(runComplianceVerify, "--checkpoints", bad); err == nil || !strings.Contains(err.Error(), bad+": not a checkpoint file") {
		t.Fatalf("verify with a malformed file: %v", err)
	}
	if err := run(runComplianceCheckpoints, "--out", bad); err == nil || !strings.Contains(err.Error(), "left as it is") {
		t.Fatalf("adding to a malformed file: %v", err)
	}
	if b2, _ := os.ReadFile(bad); !bytes.Equal(b2, badContent) {
		t.Fatalf("the malformed file was changed: %q", b2)
	}

	// The stored checkpoint is altered in the database: adding to the file
	// is refused, and verify with the held copy fails.
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "meridian.db")+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, stmt := range []string{`DROP TRIGGER ledger_checkpoints_no_update`, `UPDATE ledger_checkpoints SET at = at + 1`} {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatal(err)
		}
	}
	if err := run(runComplianceCheckpoints, "--out", held); err == nil || !strings.Contains(err.Error(), "does not verify under its own key") {
		t.Fatalf("adding an altered checkpoint: %v", err)
	}
	if b2, _ := os.ReadFile(held); !bytes.Equal(b, b2) {
		t.Fatal("the held file was changed")
	}
	if err := run(runComplianceVerify); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("verify after a checkpoint was altered: %v", err)
	}
}
