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
	"slices"
	"strings"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/internal/atomicfile"
)

// Set-aside records: nothing leaves the spool unaccounted. A record
// leaves it stored by the control server, or set aside in refusedFile
// with its reason (refused as wrong, or taken but not stored as no duty
// required it), where it stays, across restarts, until the operator has
// it sent again (after fixing the cause) or its retention ends. The
// gateway reports the set-aside records (counts and ids, no personal
// data) with its load, and takes the resend and purge instructions from
// the report's reply.

// setAsideRecord is a line of refusedFile: the record, and why it was set
// aside. Lines written before reasons were kept have none: refused.
type setAsideRecord struct {
	api.SessionRecord
	Reason string `json:"set_aside_reason,omitempty"`
}

func (r setAsideRecord) reason() string {
	if r.Reason == "" {
		return api.SetAsideRefused
	}
	return r.Reason
}

// setAsideFile is the gateway's file of set-aside records; setAsideMu
// orders appends against rewrites.
func (g *Gateway) setAsideFile() string {
	return filepath.Join(filepath.Dir(g.spool.path), refusedFile)
}

// setAside appends recs to the file of set-aside records with reason,
// and fsyncs it. The caller acknowledges them in the spool afterwards.
func (g *Gateway) setAside(recs []api.SessionRecord, reason string) error {
	var buf bytes.Buffer
	for _, r := range recs {
		b, err := json.Marshal(setAsideRecord{r, reason})
		if err != nil {
			return err
		}
		buf.Write(append(b, '\n'))
	}
	g.setAsideMu.Lock()
	defer g.setAsideMu.Unlock()
	name := g.setAsideFile()
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("set-aside session records: %w", err)
	}
	_, err = f.Write(buf.Bytes())
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncDir(filepath.Dir(name))
	}
	if err != nil {
		return fmt.Errorf("set-aside session records: %w", err)
	}
	return nil
}

// setAsideIgnored sets aside the records of recs the control server took
// but did not store as no duty required them (res.IgnoredIDs).
func (g *Gateway) setAsideIgnored(recs []api.SessionRecord, res api.SessionBatchResult) error {
	if len(res.IgnoredIDs) == 0 {
		if res.Ignored > 0 {
			g.log.Warn("the control server did not store session records no duty requires, and (older than this gateway) did not say which", "records", res.Ignored)
		}
		return nil
	}
	var aside []api.SessionRecord
	for _, r := range recs {
		if slices.Contains(res.IgnoredIDs, r.ID) {
			aside = append(aside, r)
		}
	}
	if err := g.setAside(aside, api.SetAsideNoDuty); err != nil {
		return err
	}
	g.recordsNoDuty.Add(uint64(len(aside)))
	g.log.Warn("the control server did not store session records as no duty requires them; set aside in "+refusedFile+" in the state directory ('meridian gateway records')", "records", len(aside))
	return nil
}

// readSetAside reads the set-aside records; lines that do not decode are
// counted in bad (and kept in the file).
func readSetAside(name string) (recs []setAsideRecord, bad int, err error) {
	b, err := os.ReadFile(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("set-aside session records: %w", err)
	}
	for line := range bytes.Lines(b) {
		var r setAsideRecord
		if json.Unmarshal(line, &r) != nil || r.ID == "" {
			bad++
			continue
		}
		recs = append(recs, r)
	}
	return recs, bad, nil
}

// heldRecords is what the gateway reports of the records it holds: the
// spooled ones, and the set-aside ones by reason.
func (g *Gateway) heldRecords() (*api.GatewayHeldRecords, error) {
	g.setAsideMu.Lock()
	recs, _, err := readSetAside(g.setAsideFile())
	g.setAsideMu.Unlock()
	if err != nil {
		return nil, err
	}
	spooled, err := g.spool.count()
	if err != nil {
		return nil, err
	}
	return &api.GatewayHeldRecords{Spooled: spooled, SetAside: groupSetAside(recs)}, nil
}

// groupSetAside counts recs by reason, in the order of the reasons' names.
func groupSetAside(recs []setAsideRecord) []api.SetAsideGroup {
	var out []api.SetAsideGroup
	at := map[string]int{}
	for _, r := range recs {
		i, ok := at[r.reason()]
		if !ok {
			i = len(out)
			at[r.reason()] = i
			out = append(out, api.SetAsideGroup{Reason: r.reason()})
		}
		grp := &out[i]
		grp.Count++
		if len(grp.IDs) < api.MaxSetAsideIDs {
			grp.IDs = append(grp.IDs, r.ID)
		}
		if grp.Oldest.IsZero() || r.Start.Before(grp.Oldest) {
			grp.Oldest = r.Start.UTC()
		}
	}
	slices.SortFunc(out, func(a, b api.SetAsideGroup) int { return strings.Compare(a.Reason, b.Reason) })
	return out
}

// applyReportReply carries out the control server's instructions about
// set-aside records: records of the reasons to resend go back into the
// spool (then out of the file: a crash between leaves them in both, and
// sending twice stores once); records past PurgeSetAsideBefore, and
// no-duty records the operator discards, are deleted.
func (g *Gateway) applyReportReply(rep api.GatewayReportReply) error {
	if len(rep.Resend) == 0 && len(rep.Discard) == 0 && rep.PurgeSetAsideBefore.IsZero() {
		return nil
	}
	g.setAsideMu.Lock()
	defer g.setAsideMu.Unlock()
	name := g.setAsideFile()
	b, err := os.ReadFile(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("set-aside session records: %w", err)
	}
	var keep bytes.Buffer
	var resend []api.SessionRecord
	purged, discarded := 0, 0
	for line := range bytes.Lines(b) {
		var r setAsideRecord
		if json.Unmarshal(line, &r) != nil || r.ID == "" {
			keep.Write(bytes.TrimSuffix(line, []byte("\n"))) // kept for the operator to look at,
			keep.WriteByte('\n')                             // whole lines, so that appends stay lines
			continue
		}
		last := r.End
		if last.IsZero() {
			last = r.Start
		}
		switch {
		case !rep.PurgeSetAsideBefore.IsZero() && last.Before(rep.PurgeSetAsideBefore):
			purged++
		case r.reason() == api.SetAsideNoDuty && slices.Contains(rep.Discard, api.SetAsideNoDuty):
			discarded++
		case slices.Contains(rep.Resend, r.reason()):
			resend = append(resend, r.SessionRecord)
		default:
			keep.Write(line)
		}
	}
	if len(resend)+purged+discarded == 0 {
		return nil
	}
	if err := g.spool.append(resend, true); err != nil {
		return err
	}
	if err := atomicfile.Write(name, keep.Bytes(), 0o600); err != nil {
		return fmt.Errorf("set-aside session records: %w", err)
	}
	if len(resend) > 0 {
		g.log.Info("set-aside session records sent again, as the control server asked", "records", len(resend))
	}
	if purged > 0 {
		g.log.Info("set-aside session records past their retention deleted", "records", purged)
	}
	if discarded > 0 {
		g.log.Info("set-aside session records no duty requires deleted, as the control server asked", "records", discarded)
	}
	return nil
}

// count returns how many records the spool holds undelivered.
func (s *spool) count() (int, error) {
	s.mu.Lock()
	f, head, size := s.f, s.head, s.size
	s.mu.Unlock()
	if f == nil || head >= size {
		return 0, nil
	}
	n := 0
	r := bufio.NewReader(io.NewSectionReader(f, head, size-head))
	for {
		_, err := r.ReadSlice('\n')
		switch {
		case err == nil:
			n++
		case errors.Is(err, bufio.ErrBufferFull):
		case errors.Is(err, io.EOF):
			return n, nil
		default:
			return 0, fmt.Errorf("session spool: %w", err)
		}
	}
}
