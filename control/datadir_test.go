package control

import (
	"context"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meridian-vpn/meridian/api"
)

// A data directory found open to others (made by hand, or by an installer
// with a loose umask) is made private, and every file the server keeps in
// it (databases and their logs, keys, the CA) is readable by its own user
// only.
func TestDataDirIsMadePrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "control")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil { // whatever the umask
		t.Fatal(err)
	}
	ts, stop := startTestServer(t, Config{DataDir: dir, IPv4Pool: DefaultIPv4Pool, IPv6Pool: DefaultIPv6Pool})
	if _, err := ts.admin.CreateUser(context.Background(), api.CreateUserRequest{Name: "alice"}); err != nil { // something written to the database
		t.Fatal(err)
	}
	checkPrivate := func() {
		t.Helper()
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o700 {
			t.Errorf("data directory mode %04o, want 0700", fi.Mode().Perm())
		}
		n := 0
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n++
			if d.Name() == "ca.pem" { // the CA's certificate is public (gateways pin its hash)
				return nil
			}
			if fi.Mode().Perm()&0o077 != 0 {
				t.Errorf("%s has mode %04o: open to other users", strings.TrimPrefix(p, dir), fi.Mode().Perm())
			}
			return nil
		})
		if n < 4 {
			t.Errorf("only %d files in the data directory; expected the databases, keys and CA", n)
		}
	}
	checkPrivate()
	stop()
	checkPrivate()
}

func TestWorldWritableDataDirIsRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "control")
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	_, err := New(context.Background(), Config{DataDir: dir, IPv4Pool: DefaultIPv4Pool, IPv6Pool: netip.MustParsePrefix("fd00::/64")})
	if err == nil || !strings.Contains(err.Error(), "writable by any user") {
		t.Fatalf("New on a world-writable data directory: %v, want a refusal", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("refused, but %d files were written to the directory", len(ents))
	}
}
