package datadir

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func mode(t *testing.T, p string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestPrepare(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	base := t.TempDir()

	fresh := filepath.Join(base, "a", "b")
	if err := Prepare(fresh); err != nil {
		t.Fatal(err)
	}
	if m := mode(t, fresh); m != 0o700 {
		t.Errorf("new directory mode %04o, want 0700", m)
	}

	loose := filepath.Join(base, "loose")
	os.Mkdir(loose, 0o750)
	os.Chmod(loose, 0o755)
	if err := Prepare(loose); err != nil {
		t.Fatal(err)
	}
	if m := mode(t, loose); m != 0o700 {
		t.Errorf("loose directory left at %04o, want 0700", m)
	}

	for i, m := range []uint32{0o777, 0o1777, 0o703} { // 0o1777: sticky, as /tmp
		open := filepath.Join(base, "open", string(rune('a'+i)))
		os.MkdirAll(open, 0o700)
		if err := syscall.Chmod(open, m); err != nil {
			t.Fatal(err)
		}
		err := Prepare(open)
		if err == nil || !strings.Contains(err.Error(), "writable by any user") {
			t.Errorf("mode %04o: %v, want a refusal", m, err)
		}
	}

	file := filepath.Join(base, "file")
	os.WriteFile(file, nil, 0o600)
	if err := Prepare(file); err == nil {
		t.Error("a file was accepted as a data directory")
	}
}

func TestPrivateFile(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	dir := t.TempDir()

	db := filepath.Join(dir, "new.db")
	if err := PrivateFile(db); err != nil {
		t.Fatal(err)
	}
	if m := mode(t, db); m != 0o600 {
		t.Errorf("created with %04o, want 0600", m)
	}

	old644 := filepath.Join(dir, "old.db")
	os.WriteFile(old644, []byte("keep"), 0o644)
	if err := PrivateFile(old644); err != nil {
		t.Fatal(err)
	}
	if m := mode(t, old644); m != 0o600 {
		t.Errorf("existing file left at %04o, want 0600", m)
	}
	if b, _ := os.ReadFile(old644); string(b) != "keep" {
		t.Errorf("content changed to %q", b)
	}

	wal := filepath.Join(dir, "old.db-wal")
	os.WriteFile(wal, nil, 0o644)
	if err := PrivateFiles(wal, filepath.Join(dir, "absent-shm")); err != nil {
		t.Fatal(err)
	}
	if m := mode(t, wal); m != 0o600 {
		t.Errorf("companion left at %04o, want 0600", m)
	}
	if _, err := os.Stat(filepath.Join(dir, "absent-shm")); !os.IsNotExist(err) {
		t.Error("PrivateFiles created a file that did not exist")
	}
}
