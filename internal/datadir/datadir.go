// Package datadir makes the directories that hold Meridian's state
// private: databases, keys and spools are readable by the service's own
// user only, whatever state the directory was found in.
package datadir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// Prepare creates dir (mode 0700) if it does not exist. An existing
// directory open to others is tightened to 0700; one that anyone may write
// to is refused, since files planted there before start (a database, a
// key, a symlink in place of one) cannot be told from the service's own.
func Prepare(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("data directory %s is not a directory", dir)
	}
	perm := fi.Mode().Perm()
	if perm&0o002 != 0 {
		return fmt.Errorf("data directory %s is writable by any user (mode %04o): refusing to keep records there; make it private (chmod 700) or use another directory", dir, perm)
	}
	if perm&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("data directory %s is open to other users (mode %04o) and could not be made private: %w", dir, perm, err)
		}
	}
	return nil
}

// PrivateFile makes sure file exists with mode 0600, creating it empty if
// it does not, and removes the permissions of others from an existing
// one. SQLite creates its write-ahead log and shared-memory files with
// the database file's mode, so a database created through PrivateFile
// stays private with all its companions.
func PrivateFile(file string) error {
	f, err := os.OpenFile(file, os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	f.Close()
	if err != nil {
		return err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return os.Chmod(file, 0o600)
	}
	return nil
}

// PrivateFiles applies PrivateFile's tightening to those of files that
// exist (a database's -wal and -shm companions, say), creating none.
func PrivateFiles(files ...string) error {
	var errs []error
	for _, f := range files {
		fi, err := os.Stat(f)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err == nil && fi.Mode().Perm()&0o077 != 0 {
			err = os.Chmod(f, 0o600)
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
