package control

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/meridian-vpn/meridian/ledger"
	"github.com/meridian-vpn/meridian/store"
)

// retentionYears is how long an account's subscriber and session records
// are kept after the account is cancelled: the longest retention of any
// known duty profile's subscriber-record or session-record duty (never
// shorter than a year), so a record is never purged early because the
// operator has since left the country whose duty required it. The two kinds
// go together, with the account, so a session duty longer than the
// subscriber duty keeps the subscriber record as long.
func (s *Server) retentionYears(ctx context.Context) (int, error) {
	profiles, err := s.profiles(ctx)
	if err != nil {
		return 0, err
	}
	years := 1
	for _, p := range profiles {
		if p.SubscriberRecords != nil {
			years = max(years, p.SubscriberRecords.RetentionYears)
		}
		if p.SessionRecords != nil {
			years = max(years, p.SessionRecords.RetentionYears)
		}
	}
	return years, nil
}

// purgeResult says what a purge run removed: counts only.
type purgeResult struct {
	Accounts   int
	Orphans    int // session rows with no account (their device was gone when they arrived)
	EmailCodes int // expired email codes
	Entries    int
	Years      int
	Cutoff     time.Time
}

// purgeExpired removes the subscriber and session records (and the
// accounts they belong to, with their devices) of accounts cancelled more
// than the retention period before now. Each account's purge is one transaction and
// one purge entry in the ledger, which records counts and ranges, never
// personal data.
func (s *Server) purgeExpired(ctx context.Context, now time.Time) (res purgeResult, err error) {
	// One checkpoint of the write-ahead log after the last account, not one
	// per account: it took a third of a purge.
	defer func() {
		if res.Accounts+res.Orphans > 0 {
			err = errors.Join(err, s.ledger.ScrubLog(ctx), s.db.ScrubSessionIndexLog(ctx))
		}
	}()
	years, err := s.retentionYears(ctx)
	if err != nil {
		return purgeResult{}, err
	}
	res = purgeResult{Years: years, Cutoff: now.AddDate(-years, 0, 0)}
	// Accounts with records: a subscriber record here, or session rows in
	// the session index, a database of its own.
	rows, err := s.db.QueryContext(ctx, `SELECT u.id, u.name, EXISTS (SELECT 1 FROM subscriber_entries e WHERE e.user_id = u.id)
		FROM users u WHERE u.cancelled_at IS NOT NULL AND u.cancelled_at < ?`, res.Cutoff.Unix())
	if err != nil {
		return res, err
	}
	type account struct {
		id         int64
		name       string
		subscriber bool
	}
	var cancelled []account
	for rows.Next() {
		var a account
		if err := rows.Scan(&a.id, &a.name, &a.subscriber); err != nil {
			rows.Close()
			return res, err
		}
		cancelled = append(cancelled, a)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return res, err
	}
	var expired []account
	for _, a := range cancelled {
		has := a.subscriber
		if !has {
			if has, err = s.db.HasSessions(ctx, a.name); err != nil {
				return res, err
			}
		}
		if has {
			expired = append(expired, a)
		}
	}
	for _, a := range expired {
		seqs, err := s.db.SubscriberSeqs(ctx, a.name)
		if err != nil {
			return res, err
		}
		var freed []netip.Addr
		// The account's session records (both kinds of entry) go in the
		// same purge: their seqs are read first, which is safe as an
		// expired account gets no new sessions.
		sessionSeqs, err := s.db.SessionSeqs(ctx, a.name)
		if err != nil {
			return res, err
		}
		seqs = append(seqs, sessionSeqs...)
		reason := fmt.Sprintf("retention: subscriber and session records kept %d years after cancellation (cancelled before %s)", years, res.Cutoff.UTC().Format(time.DateOnly))
		del := func(tx *store.Tx) error {
			var err error
			freed, err = deleteAccount(ctx, tx, a.id, a.name)
			return err
		}
		if len(seqs) > 0 {
			err = s.ledger.PurgeWith(ctx, ledger.RecordChain, seqs, reason, del)
		} else { // only session rows stored before records were sealed
			err = s.db.Update(ctx, del)
		}
		if err != nil {
			return res, err
		}
		if err := s.db.FinishSessionPurges(ctx); err != nil {
			return res, err
		}
		for _, addr := range freed {
			if addr.Is4() {
				s.pool4.Release(addr)
			} else {
				s.pool6.Release(addr)
			}
		}
		res.Accounts++
		res.Entries += len(seqs)
	}
	return res, s.purgeOrphans(ctx, &res)
}

// purgeOrphans removes the session records of devices that were gone
// when their records arrived: they name no account, so no account's
// purge finds them. Their retention counts from the session's end (its
// start, if it never ended): the device was deleted before then.
func (s *Server) purgeOrphans(ctx context.Context, res *purgeResult) error {
	seqs, rows, err := s.db.OrphanSessionSeqs(ctx, res.Cutoff)
	if err != nil || rows == 0 {
		return err
	}
	reason := fmt.Sprintf("retention: session records of deleted devices kept %d years after the session (ended before %s)", res.Years, res.Cutoff.UTC().Format(time.DateOnly))
	mark := func(tx *store.Tx) error { return tx.MarkOrphanSessionsPurgedTx(ctx, res.Cutoff) }
	if len(seqs) > 0 {
		err = s.ledger.PurgeWith(ctx, ledger.RecordChain, seqs, reason, mark)
	} else { // only rows stored before records were sealed
		err = s.db.Update(ctx, mark)
	}
	if err != nil {
		return err
	}
	if err := s.db.FinishSessionPurges(ctx); err != nil {
		return err
	}
	res.Orphans += rows
	res.Entries += len(seqs)
	return nil
}

// deleteAccount removes account userID (named name) and everything
// indexed under it, and returns the tunnel addresses its devices held. Its
// session rows, in the session index, go once tx has committed
// (store.FinishSessionPurges); they are found by the account's name,
// which also finds those of devices deleted since.
func deleteAccount(ctx context.Context, tx *store.Tx, userID int64, name string) ([]netip.Addr, error) {
	rows, err := tx.SQL().QueryContext(ctx, `SELECT ipv4, ipv6 FROM devices WHERE user_id = ?`, userID)
	if err != nil {
		return nil, err
	}
	var freed []netip.Addr
	for rows.Next() {
		var v4, v6 string
		if err := rows.Scan(&v4, &v6); err != nil {
			rows.Close()
			return nil, err
		}
		for _, s := range []string{v4, v6} {
			if a, err := netip.ParseAddr(s); err == nil {
				freed = append(freed, a)
			}
		}
	}
	rows.Close()
	if err := tx.MarkSessionsPurgedTx(ctx, name); err != nil {
		return nil, err
	}
	for _, q := range []struct {
		stmt string
		arg  any
	}{
		{`DELETE FROM subscriber_entries WHERE user_id = ?`, userID},
		{`DELETE FROM email_codes WHERE user_id = ?`, userID},
		{`DELETE FROM devices WHERE user_id = ?`, userID},
		{`DELETE FROM users WHERE id = ?`, userID},
	} {
		if _, err := tx.SQL().ExecContext(ctx, q.stmt, q.arg); err != nil {
			return nil, err
		}
	}
	return freed, nil
}

// purgeAll purges at now everything past its retention in every
// category the retention check counts: expired email codes, expired
// sign-ups, ICT log entries past the duty's days, and the subscriber and
// session records of purgeExpired (orphans included).
func (s *Server) purgeAll(ctx context.Context, now time.Time) (purgeResult, error) {
	codes, err := s.db.PurgeExpiredEmailCodes(ctx, now)
	if err != nil {
		return purgeResult{}, err
	}
	if err := s.expireRegistrations(ctx, now); err != nil {
		return purgeResult{}, err
	}
	if _, err := s.db.PurgeICTLog(ctx, now, s.ict.longest()); err != nil {
		return purgeResult{}, err
	}
	res, err := s.purgeExpired(ctx, now)
	res.EmailCodes = int(codes)
	return res, err
}

// runPurge is the daily retention job.
func (s *Server) runPurge(ctx context.Context) {
	s.nextPurge.Store(time.Now().Add(24 * time.Hour).Unix())
	res, err := s.purgeAll(ctx, time.Now())
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("retention purge failed", "err", err)
		}
		return
	}
	if res.Accounts+res.Orphans > 0 {
		s.log.Info("retention purge", "accounts", res.Accounts, "orphan_sessions", res.Orphans, "expired_email_codes", res.EmailCodes, "ledger_entries", res.Entries, "retention_years", res.Years)
		if _, err := s.ledger.Checkpoint(ctx); err != nil {
			s.log.Warn("ledger checkpoint after purge", "err", err)
		}
	}
}
