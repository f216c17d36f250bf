package control

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/ictlog"
	"github.com/meridian-vpn/meridian/store"
)

// retentionAccount is an account made for a retention test: cancelled at
// a set time, with a device (and its tunnel addresses) and a session
// record, and a subscriber record if it is a consumer's.
type retentionAccount struct {
	name      string
	cancelled time.Time
	device    api.Device
}

// cancelledAccounts makes one account per entry of cancelled, consumer
// accounts with subscriber records, or enterprise accounts with session
// records only. Their session records' IDs start at firstID.
func cancelledAccounts(t *testing.T, ts *testServer, kind api.TenantKind, firstID int, cancelled map[string]time.Time) []retentionAccount {
	t.Helper()
	ctx := context.Background()
	var out []retentionAccount
	for name, at := range cancelled {
		req := api.CreateUserRequest{Name: name, Kind: kind}
		if kind != api.Enterprise {
			req.Subscriber = details()
		}
		if _, err := ts.admin.CreateUser(ctx, req); err != nil {
			t.Fatal(err)
		}
		d, err := ts.admin.CreateDevice(ctx, api.CreateDeviceRequest{User: name, Name: "phone", PublicKey: newKey(t)})
		if err != nil {
			t.Fatal(err)
		}
		if n, err := ts.saveSessions(ctx, store.GatewaySessions{Gateway: "in1", Records: []api.SessionRecord{sessionRecord(t, d.Device, firstID+len(out))},
			Keep: func(store.SessionOwner) bool { return true }}); err != nil || n != 1 {
			t.Fatalf("session record of %s: %d stored, %v", name, n, err)
		}
		if err := ts.admin.Do(ctx, "POST", "/users/"+name+"/cancel", nil, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := ts.db.Exec(`UPDATE users SET cancelled_at = ? WHERE name = ?`, at.Unix(), name); err != nil {
			t.Fatal(err)
		}
		out = append(out, retentionAccount{name: name, cancelled: at, device: d.Device})
	}
	return out
}

// kept returns which of accounts are still there: the account, its
// devices, its session rows and, for consumers, its subscriber record.
// An account is either wholly kept or wholly gone.
func kept(t *testing.T, ts *testServer, accounts []retentionAccount) []string {
	t.Helper()
	ctx := context.Background()
	var out []string
	for _, a := range accounts {
		_, errUser := ts.db.User(ctx, a.name)
		var devices, subscriber, sessions int
		ts.db.QueryRow(`SELECT count(*) FROM devices WHERE public_key = ?`, a.device.PublicKey.String()).Scan(&devices)
		ts.db.QueryRow(`SELECT count(*) FROM subscriber_entries e JOIN users u ON u.id = e.user_id WHERE u.name = ?`, a.name).Scan(&subscriber)
		ts.db.SessionIndex().QueryRow(`SELECT count(*) FROM sessions WHERE user_name = ?`, a.name).Scan(&sessions)
		switch {
		case errUser == nil && devices == 1 && sessions == 1:
			out = append(out, a.name)
		case errUser != nil && devices == 0 && subscriber == 0 && sessions == 0:
		default:
			t.Fatalf("%s half purged: account %v, %d devices, %d subscriber entries, %d session rows", a.name, errUser, devices, subscriber, sessions)
		}
	}
	slices.Sort(out)
	return out
}

// The retention period's edges under cert-in-2022: subscriber and session
// records (and the accounts, devices and tunnel addresses they come with)
// are kept for 5 calendar years after cancellation, up to the very second,
// and purged after. The period spans two leap days (29 February 2028 and
// 2032), so 5 years are 1827 days here: 5 × 365 days would purge two days
// early.
func TestRetentionPurgeBoundaries(t *testing.T) {
	ts, _ := complianceServer(t, Config{})
	ctx := context.Background()
	now := time.Date(2032, 3, 10, 12, 0, 0, 0, time.UTC)
	five := now.AddDate(-5, 0, 0) // 2027-03-10 12:00
	if now.Sub(five) != 1827*24*time.Hour {
		t.Fatalf("the test's period is %s, want one spanning two leap days", now.Sub(five))
	}
	consumers := cancelledAccounts(t, ts, api.Consumer, 100, map[string]time.Time{
		"day-short":   five.AddDate(0, 0, 1),  // 5 years less a day ago: kept
		"exact":       five,                   // 5 years ago to the second: kept
		"second-over": five.Add(-time.Second), // purged
		"day-over":    five.AddDate(0, 0, -1), // purged
		"two-days":    five.AddDate(0, 0, 2),  // what 5 × 365 days would purge
	})
	enterprises := cancelledAccounts(t, ts, api.Enterprise, 200, map[string]time.Time{
		"ent-day-short": five.AddDate(0, 0, 1),
		"ent-exact":     five,
		"ent-day-over":  five.AddDate(0, 0, -1),
	})
	all := append(consumers, enterprises...)
	used4, used6 := ts.pool4.Used(), ts.pool6.Used()

	// A year before, and a day before, nothing goes: even the account
	// cancelled 5 years and a day before now is then exactly 5 years gone.
	for _, at := range []time.Time{now.AddDate(-1, 0, 0), now.AddDate(0, 0, -1)} {
		res, err := ts.purgeExpired(ctx, at)
		if err != nil {
			t.Fatal(err)
		}
		if got := kept(t, ts, all); len(got) != len(all) || res.Accounts != 0 {
			t.Fatalf("purge at %s (%d accounts): kept only %v", at.Format(time.DateOnly), res.Accounts, got)
		}
	}
	res, err := ts.purgeExpired(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"day-short", "ent-day-short", "ent-exact", "exact", "two-days"}; !slices.Equal(kept(t, ts, all), want) {
		t.Fatalf("purge at %s: kept %v, want %v", now, kept(t, ts, all), want)
	}
	if res.Years != 5 || !res.Cutoff.Equal(five) || res.Accounts != 3 {
		t.Fatalf("purge: %+v", res)
	}
	// The three purged accounts' tunnel addresses are free again.
	if d4, d6 := used4-ts.pool4.Used(), used6-ts.pool6.Used(); d4 != 3 || d6 != 3 {
		t.Fatalf("the purge at %s freed %d IPv4 and %d IPv6 addresses, want 3 of each", now, d4, d6)
	}
	// A second later, the account cancelled exactly five years before goes.
	if _, err := ts.purgeExpired(ctx, now.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if want := []string{"day-short", "ent-day-short", "two-days"}; !slices.Equal(kept(t, ts, all), want) {
		t.Fatalf("a second later: kept %v, want %v", kept(t, ts, all), want)
	}
}

// Session records are kept for their own duty's retention: a profile whose
// session-record duty is longer than its subscriber-record duty (or that
// has no subscriber-record duty at all) keeps the sessions, and with them
// the account they belong to, for the longer period.
func TestRetentionFollowsSessionRecordDuty(t *testing.T) {
	ts, _ := complianceServer(t, Config{})
	ctx := context.Background()
	body := []byte(`{"name": "long-sessions", "title": "Session records for seven years",
		"session_records": {"retention_years": 7, "consumer_only": false, "cite": "test"}}`)
	if err := ts.admin.SetProfile(ctx, "long-sessions", body); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2034, 6, 1, 0, 0, 0, 0, time.UTC)
	seven := now.AddDate(-7, 0, 0)
	all := cancelledAccounts(t, ts, api.Consumer, 100, map[string]time.Time{
		"six-years":  now.AddDate(-6, 0, 0),   // past the 5-year subscriber duty, within the 7-year session duty
		"day-short":  seven.AddDate(0, 0, 1),  // kept
		"over-seven": seven.Add(-time.Second), // purged
	})
	all = append(all, cancelledAccounts(t, ts, api.Enterprise, 200, map[string]time.Time{
		"ent-six-years": now.AddDate(-6, 0, 0),
	})...)
	res, err := ts.purgeExpired(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"day-short", "ent-six-years", "six-years"}; !slices.Equal(kept(t, ts, all), want) {
		t.Fatalf("purge (%+v): kept %v, want %v", res, kept(t, ts, all), want)
	}
	if res.Years != 7 || res.Accounts != 1 {
		t.Fatalf("purge: %+v", res)
	}
}

// An account cancelled on 29 February is kept through 28 February five
// years later, whichever day one takes its anniversary to be, and purged
// once 1 March has passed the hour of its cancellation.
func TestRetentionFromALeapDay(t *testing.T) {
	ts, _ := complianceServer(t, Config{})
	ctx := context.Background()
	cancelled := time.Date(2028, 2, 29, 12, 0, 0, 0, time.UTC)
	all := cancelledAccounts(t, ts, api.Consumer, 100, map[string]time.Time{"leap": cancelled})
	for _, c := range []struct {
		at   time.Time
		kept bool
	}{
		{time.Date(2033, 2, 28, 23, 59, 59, 0, time.UTC), true},
		{time.Date(2033, 3, 1, 12, 0, 1, 0, time.UTC), false},
	} {
		if _, err := ts.purgeExpired(ctx, c.at); err != nil {
			t.Fatal(err)
		}
		if got := len(kept(t, ts, all)) == 1; got != c.kept {
			t.Fatalf("purge at %s: kept %v, want %v", c.at, got, c.kept)
		}
	}
}

// The control server's ICT log under cert-in-2022 keeps each entry a
// rolling 180 days, to the nanosecond, and purges it after: the daily
// purge (purgeICT) at 179, 180 and 181 days.
func TestICTLogPurgeBoundaries(t *testing.T) {
	t0 := time.Date(2027, 1, 10, 8, 0, 0, 0, time.UTC)
	clock := &fakeClock{t: t0}
	ts, stop := startTestServer(t, Config{DataDir: t.TempDir(), ictNow: clock.Now})
	t.Cleanup(stop)
	ctx := context.Background()
	if _, err := ts.admin.SetPlace(ctx, api.ControlNode, api.Place{PhysicalCountry: "IN", Ownership: api.Rented}); err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"day 0", "day 1"} {
		ts.ict.record(api.ControlNode, api.ICTLogEntry{At: t0.AddDate(0, 0, i), Category: ictlog.Admin, Event: name, Outcome: ictlog.Info}, 0)
	}
	if err := ts.ict.log.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	left := func(at time.Time) []string {
		t.Helper()
		clock.t = at
		ts.purgeICT(ctx)
		rows, err := ts.db.Query(`SELECT event, keep_days FROM ict_log WHERE event LIKE 'day %' ORDER BY at`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var e string
			var keep int
			rows.Scan(&e, &keep)
			if keep != 180 {
				t.Fatalf("%q is kept %d days, want 180", e, keep)
			}
			out = append(out, e)
		}
		return out
	}
	for _, c := range []struct {
		at   time.Time
		want string
	}{
		{t0.AddDate(0, 0, 179), "day 0,day 1"},
		{t0.AddDate(0, 0, 180), "day 0,day 1"}, // day 0 is exactly 180 days old
		{t0.AddDate(0, 0, 180).Add(time.Nanosecond), "day 1"},
		{t0.AddDate(0, 0, 181), "day 1"},
		{t0.AddDate(0, 0, 182), ""},
	} {
		if got := strings.Join(left(c.at), ","); got != c.want {
			t.Fatalf("after the purge %s after day 0: %q left, want %q", c.at.Sub(t0), got, c.want)
		}
	}
}
