package gateway

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/internal/atomicfile"
)

const (
	spoolFile = "sessions.spool"
	// spoolHeadFile holds the offset of the first record in the spool that
	// the control server has not acknowledged.
	spoolHeadFile = "sessions.spool.head"
	// refusedFile holds records set aside (refused.go): refused as wrong
	// (400), or not stored as no duty required them; kept, so that the
	// records behind them can go, until resent or past their retention.
	refusedFile = "sessions.refused"

	defaultSpoolLimit = 64 << 20
	// spoolCompactAt is how much acknowledged data the spool file may carry
	// before the unacknowledged rest is copied to a fresh file.
	spoolCompactAt = 1 << 20
)

// errSpoolFull refuses new records while the spool holds its limit.
var errSpoolFull = errors.New("session record spool is full: the control server has not taken records for a long time")

// spool keeps session records on disk until the control server has them:
// an append-only file of JSON lines, fsynced on every append, and the
// offset of the first record not yet acknowledged. Records are sent from
// that offset in order; an acknowledgement moves it; once everything is
// acknowledged the file is emptied. Sending again what was sent before a
// crash is harmless (the control server stores records idempotently). A
// gateway that never records a session never creates the file.
type spool struct {
	path, headPath string
	limit          int64 // bytes not yet acknowledged; records closing a session may exceed it
	open           func(name string, flag int, perm os.FileMode) (diskFile, error)

	mu   sync.Mutex
	f    diskFile // nil until the first record
	size int64    // bytes of whole records in f
	tail bool     // f may hold bytes of a failed append past size
	head int64    // offset of the first record not acknowledged
	wake chan struct{}
}

// diskFile is what the spool needs of its file; *os.File is one. It is a
// seam for tests, which put a file in its place that records or fails its
// calls: that a record is fsynced before append returns, and that a failed
// fsync is the caller's error, can only be seen from there (a crash test
// cannot tell a synced write from one still in the page cache).
type diskFile interface {
	io.ReaderAt
	io.WriterAt
	io.Seeker
	Sync() error
	Truncate(size int64) error
	Close() error
}

func openOSFile(name string, flag int, perm os.FileMode) (diskFile, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// openSpool opens the spool in dir, if there is one, dropping a record
// torn by a crash: its append never returned, so no session relied on it.
func openSpool(dir string, limit int64) (*spool, error) {
	s := &spool{path: filepath.Join(dir, spoolFile), headPath: filepath.Join(dir, spoolHeadFile), limit: limit, open: openOSFile, wake: make(chan struct{}, 1)}
	f, err := s.open(s.path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("session spool: %w", err)
	}
	size, err := wholeLines(f)
	if err == nil {
		err = f.Truncate(size)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("session spool %s: %w", s.path, err)
	}
	s.f, s.size = f, size
	if err := s.readHead(); err != nil {
		f.Close()
		return nil, fmt.Errorf("session spool %s: %w", s.headPath, err)
	}
	if s.head < s.size {
		s.wake <- struct{}{}
	}
	return s, nil
}

// readHead takes the offset in the head file if it is the start of a
// record in the file. Else the file was emptied after the offset was
// written (a crash in ack), or the offset is damaged: the records are sent
// again from the start, and the offset is removed for good before anything
// is appended, lest the file grow past it and a later start trust it.
func (s *spool) readHead() error {
	b, err := os.ReadFile(s.headPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err == nil {
		h, perr := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if perr == nil && h == 0 {
			return nil
		}
		if perr == nil && h > 0 && h <= s.size {
			var before [1]byte
			if _, err = s.f.ReadAt(before[:], h-1); err == nil && before[0] == '\n' {
				s.head = h
				return nil
			}
		}
	}
	if err := os.Remove(s.headPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return syncDir(filepath.Dir(s.headPath))
}

// wholeLines returns the length of f up to and including its last newline.
func wholeLines(f diskFile) (int64, error) {
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, err
	}
	buf := make([]byte, 4096)
	for end > 0 {
		n := min(end, int64(len(buf)))
		if _, err := f.ReadAt(buf[:n], end-n); err != nil {
			return 0, err
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			return end - n + int64(i) + 1, nil
		}
		end -= n
	}
	return 0, nil
}

// append writes records to the spool and fsyncs it. Unless force is set it
// refuses (errSpoolFull) when the unacknowledged records would exceed the
// limit; records that close sessions are forced, so that no session stays
// open in the records for want of space.
func (s *spool) append(recs []api.SessionRecord, force bool) error {
	if len(recs) == 0 {
		return nil
	}
	var buf bytes.Buffer
	for _, r := range recs {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		buf.Write(b)
		buf.WriteByte('\n')
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !force && s.size-s.head+int64(buf.Len()) > s.limit {
		return errSpoolFull
	}
	if s.f == nil {
		f, err := s.open(s.path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return fmt.Errorf("session spool: %w", err)
		}
		if err := syncDir(filepath.Dir(s.path)); err != nil {
			f.Close()
			return fmt.Errorf("session spool: %w", err)
		}
		s.f = f
	}
	if s.tail {
		if err := s.f.Truncate(s.size); err != nil {
			return fmt.Errorf("session spool: %w", err)
		}
		s.tail = false
	}
	_, err := s.f.WriteAt(buf.Bytes(), s.size)
	if err == nil {
		err = s.f.Sync()
	}
	if err != nil {
		// The records are not spooled: cut them off now, or before the
		// next records, lest they follow those and a restart send them.
		s.tail = s.f.Truncate(s.size) != nil
		return fmt.Errorf("session spool: %w", err)
	}
	s.size += int64(buf.Len())
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil
}

// peek reads up to max records (and about maxBytes of them) from the first
// unacknowledged one; next is the offset to acknowledge once they are
// delivered. Lines that do not decode are skipped (and counted in skipped):
// they cannot be delivered ever.
func (s *spool) peek(max, maxBytes int) (recs []api.SessionRecord, next int64, skipped int, err error) {
	s.mu.Lock()
	f, head, size := s.f, s.head, s.size
	s.mu.Unlock()
	if f == nil || head >= size {
		return nil, head, 0, nil
	}
	r := bufio.NewReader(io.NewSectionReader(f, head, size-head))
	next = head
	for len(recs) < max {
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, head, 0, fmt.Errorf("session spool: %w", err)
		}
		if len(recs) > 0 && next-head+int64(len(line)) > int64(maxBytes) {
			break
		}
		next += int64(len(line))
		var rec api.SessionRecord
		if json.Unmarshal(line, &rec) != nil {
			skipped++
			continue
		}
		recs = append(recs, rec)
	}
	return recs, next, skipped, nil
}

// ack records that everything before offset next has been delivered.
func (s *spool) ack(next int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if next <= s.head || s.f == nil {
		return nil
	}
	s.head = min(next, s.size)
	switch {
	case s.head == s.size:
		// All delivered: forget the offset for good, then empty the file.
		// A crash in between resends what was delivered; the other order
		// would leave an offset that the records spooled next outgrow.
		if err := os.Remove(s.headPath); err == nil {
			err = syncDir(filepath.Dir(s.headPath))
			if err != nil {
				return fmt.Errorf("session spool: %w", err)
			}
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("session spool: %w", err)
		}
		if err := s.f.Truncate(0); err != nil {
			return fmt.Errorf("session spool: %w", err)
		}
		// The file is empty now, synced or not: the next record goes at
		// its start, not after a hole.
		s.size, s.head, s.tail = 0, 0, false
		if err := s.f.Sync(); err != nil {
			return fmt.Errorf("session spool: %w", err)
		}
		return nil
	case s.head >= spoolCompactAt:
		return s.compactLocked()
	}
	return atomicfile.Write(s.headPath, []byte(strconv.FormatInt(s.head, 10)+"\n"), 0o600)
}

// compactLocked copies the unacknowledged records to a fresh file. The
// offset is forgotten before the new file takes the old one's place: a
// crash in between resends acknowledged records, never skips any.
func (s *spool) compactLocked() error {
	rest := make([]byte, s.size-s.head)
	if _, err := s.f.ReadAt(rest, s.head); err != nil {
		return fmt.Errorf("session spool: %w", err)
	}
	tmp := s.path + ".tmp"
	if err := atomicfile.Write(tmp, rest, 0o600); err != nil {
		return fmt.Errorf("session spool: %w", err)
	}
	// Opened before it takes the old file's place: once it has, records
	// must go to it, not to the old file, which no restart reads.
	f, err := s.open(tmp, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("session spool: %w", err)
	}
	if err := os.Remove(s.headPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		f.Close()
		return fmt.Errorf("session spool: %w", err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		f.Close()
		return fmt.Errorf("session spool: %w", err)
	}
	s.f.Close()
	s.f, s.size, s.head, s.tail = f, int64(len(rest)), 0, false
	if err := syncDir(filepath.Dir(s.path)); err != nil {
		return fmt.Errorf("session spool: %w", err)
	}
	return nil
}

// pending is the number of bytes of records not yet acknowledged.
func (s *spool) pending() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size - s.head
}

func (s *spool) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}

// syncDir makes a file's creation or renaming in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
