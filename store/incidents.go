package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/meridian-vpn/meridian/incident"
	"github.com/meridian-vpn/meridian/timesync/syncstamp"
)

// The incident register's tables index ledger entries: the caller appends
// the content to the ledger in the transaction these functions give it,
// and passes back the entry's seq.

func unix(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.Unix(), Valid: true}
}

func fromUnix(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.Unix(n.Int64, 0).UTC()
}

// stampJSON is a clock stamp as a column holds it: JSON, or NULL.
func stampJSON(s *syncstamp.Stamp) (sql.NullString, error) {
	if s == nil {
		return sql.NullString{}, nil
	}
	b, err := json.Marshal(s)
	return sql.NullString{String: string(b), Valid: err == nil}, err
}

// stampOf reads a clock stamp column; NULL is nil.
func stampOf(col string, v sql.NullString) (*syncstamp.Stamp, error) {
	if !v.Valid {
		return nil, nil
	}
	var s syncstamp.Stamp
	if err := json.Unmarshal([]byte(v.String), &s); err != nil {
		return nil, fmt.Errorf("%s: %w", col, err)
	}
	return &s, nil
}

// CreateIncident adds inc (state noticed, with its clock stamps) and runs
// first, which must add its version 1, in the same transaction. It returns
// the new id.
func (db *DB) CreateIncident(ctx context.Context, inc incident.Incident, first func(tx *Tx, id int64) error) (int64, error) {
	notice, err := stampJSON(inc.NoticeClock)
	if err != nil {
		return 0, err
	}
	confirm, err := stampJSON(inc.ConfirmClock)
	if err != nil {
		return 0, err
	}
	var id int64
	err = db.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO incidents (type, state, noticed_at, deadline_at, deadline_why, recipient, notice_clock, confirm_clock) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			int(inc.Type), string(incident.Noticed), inc.Noticed.Unix(), inc.Deadline.Unix(), inc.DeadlineWhy, inc.Recipient, notice, confirm)
		if err != nil {
			return err
		}
		if id, err = res.LastInsertId(); err != nil {
			return err
		}
		return first(&Tx{tx: tx}, id)
	})
	return id, err
}

// ChangeIncident runs change on incident id in a transaction and saves
// what it changed of the type, state and times. change adds versions and
// deliveries with AddIncidentVersion and AddIncidentDelivery.
func (db *DB) ChangeIncident(ctx context.Context, id int64, change func(tx *Tx, inc *incident.Incident) error) (incident.Incident, error) {
	var inc incident.Incident
	err := db.write(ctx, func(tx *sql.Tx) error {
		var err error
		if inc, err = incidentRow(tx.QueryRowContext(ctx, incidentSelect+` WHERE i.id = ?`, id)); err != nil {
			return err
		}
		if err := change(&Tx{tx: tx}, &inc); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE incidents SET type = ?, state = ?, reported_at = ?, closed_at = ? WHERE id = ?`,
			int(inc.Type), string(inc.State), unix(inc.Reported), unix(inc.Closed), id)
		return err
	})
	return inc, err
}

// AddIncidentVersion indexes the ledger entry seq as version u.Version of
// incident id.
func (t *Tx) AddIncidentVersion(ctx context.Context, id int64, u incident.Update, seq int64) error {
	tx := t.tx
	_, err := tx.ExecContext(ctx, `INSERT INTO incident_versions (incident_id, version, seq, at, actor) VALUES (?, ?, ?, ?, ?)`, id, u.Version, seq, u.At.Unix(), u.By)
	if isUnique(err) {
		return &ConflictError{What: "the incident changed at the same time; try again"}
	}
	return err
}

// AddIncidentDelivery records a report that reached its recipient.
func (t *Tx) AddIncidentDelivery(ctx context.Context, id int64, d incident.Delivery) error {
	tx := t.tx
	_, err := tx.ExecContext(ctx, `INSERT INTO incident_deliveries (incident_id, version, report, at, channel, recipient, message_id, actor) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		id, d.Version, d.Report, d.At.Unix(), string(d.Channel), d.Recipient, d.MessageID, d.By)
	return err
}

const incidentSelect = `SELECT i.id, i.type, i.state, i.noticed_at, i.deadline_at, i.deadline_why, i.recipient, i.reported_at, i.closed_at,
	i.notice_clock, i.confirm_clock, (SELECT coalesce(max(version), 0) FROM incident_versions v WHERE v.incident_id = i.id) FROM incidents i`

func incidentRow(row interface{ Scan(...any) error }) (incident.Incident, error) {
	var inc incident.Incident
	var typ int
	var state string
	var noticed, deadline int64
	var reported, closed sql.NullInt64
	var notice, confirm sql.NullString
	err := row.Scan(&inc.ID, &typ, &state, &noticed, &deadline, &inc.DeadlineWhy, &inc.Recipient, &reported, &closed, &notice, &confirm, &inc.Version)
	if errors.Is(err, sql.ErrNoRows) {
		return inc, ErrNotFound
	}
	if err != nil {
		return inc, err
	}
	inc.Type, inc.State = incident.Type(typ), incident.State(state)
	inc.Noticed, inc.Deadline = time.Unix(noticed, 0).UTC(), time.Unix(deadline, 0).UTC()
	inc.Reported, inc.Closed = fromUnix(reported), fromUnix(closed)
	if inc.NoticeClock, err = stampOf("notice_clock", notice); err != nil {
		return inc, fmt.Errorf("incident %d: %w", inc.ID, err)
	}
	if inc.ConfirmClock, err = stampOf("confirm_clock", confirm); err != nil {
		return inc, fmt.Errorf("incident %d: %w", inc.ID, err)
	}
	return inc, nil
}

// Incidents lists the register, newest first, with the alerts that fired:
// all incidents, or only those not closed.
func (db *DB) Incidents(ctx context.Context, all bool) ([]incident.Incident, error) {
	q := incidentSelect
	if !all {
		q += ` WHERE i.state <> 'closed'`
	}
	rows, err := db.QueryContext(ctx, q+` ORDER BY i.id DESC`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []incident.Incident
	byID := map[int64]int{}
	for rows.Next() {
		inc, err := incidentRow(rows)
		if err != nil {
			return nil, err
		}
		byID[inc.ID] = len(out)
		out = append(out, inc)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	alerts, err := db.QueryContext(ctx, `SELECT incident_id, kind, at FROM incident_alerts ORDER BY at`)
	if err != nil {
		return nil, err
	}
	defer alerts.Close()
	for alerts.Next() {
		var id, at int64
		var kind string
		if err := alerts.Scan(&id, &kind, &at); err != nil {
			return nil, err
		}
		if i, ok := byID[id]; ok {
			out[i].Alerts = append(out[i].Alerts, incident.FiredAlert{Kind: incident.AlertKind(kind), At: time.Unix(at, 0).UTC()})
		}
	}
	return out, alerts.Err()
}

// Incident returns one incident with its versions (without content: seqs
// holds each version's ledger entry), deliveries and fired alerts.
func (db *DB) Incident(ctx context.Context, id int64) (inc incident.Incident, seqs []int64, err error) {
	if inc, err = incidentRow(db.QueryRowContext(ctx, incidentSelect+` WHERE i.id = ?`, id)); err != nil {
		return inc, nil, err
	}
	err = db.each(ctx, `SELECT version, seq, at, actor FROM incident_versions WHERE incident_id = ? ORDER BY version`, []any{id}, func(rows *sql.Rows) error {
		var u incident.Update
		var seq, at int64
		if err := rows.Scan(&u.Version, &seq, &at, &u.By); err != nil {
			return err
		}
		u.At = time.Unix(at, 0).UTC()
		inc.Updates, seqs = append(inc.Updates, u), append(seqs, seq)
		return nil
	})
	if err != nil {
		return inc, nil, err
	}
	err = db.each(ctx, `SELECT version, report, at, channel, recipient, message_id, actor FROM incident_deliveries WHERE incident_id = ? ORDER BY id`, []any{id}, func(rows *sql.Rows) error {
		var d incident.Delivery
		var at int64
		if err := rows.Scan(&d.Version, &d.Report, &at, &d.Channel, &d.Recipient, &d.MessageID, &d.By); err != nil {
			return err
		}
		d.At = time.Unix(at, 0).UTC()
		inc.Deliveries = append(inc.Deliveries, d)
		return nil
	})
	if err != nil {
		return inc, nil, err
	}
	err = db.each(ctx, `SELECT kind, at FROM incident_alerts WHERE incident_id = ? ORDER BY at`, []any{id}, func(rows *sql.Rows) error {
		var a incident.FiredAlert
		var at int64
		if err := rows.Scan(&a.Kind, &at); err != nil {
			return err
		}
		a.At = time.Unix(at, 0).UTC()
		inc.Alerts = append(inc.Alerts, a)
		return nil
	})
	return inc, seqs, err
}

func (db *DB) each(ctx context.Context, q string, args []any, fn func(*sql.Rows) error) error {
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// RecordIncidentAlert records that an alert fired, and reports whether it
// is the first of its kind for the incident (only then is it raised).
func (db *DB) RecordIncidentAlert(ctx context.Context, id int64, kind incident.AlertKind, at time.Time) (bool, error) {
	res, err := db.ExecContext(ctx, `INSERT INTO incident_alerts (incident_id, kind, at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`, id, string(kind), at.Unix())
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// OpenIncidents counts incidents that are not closed.
func (db *DB) OpenIncidents(ctx context.Context) (int, error) {
	var n int
	err := db.QueryRowContext(ctx, `SELECT count(*) FROM incidents WHERE state <> 'closed'`).Scan(&n)
	return n, err
}

// AddPOCVersion indexes the ledger entry seq as the current point of
// contact.
func (t *Tx) AddPOCVersion(ctx context.Context, seq int64, at time.Time, actor string) error {
	tx := t.tx
	_, err := tx.ExecContext(ctx, `INSERT INTO poc_versions (seq, at, actor) VALUES (?, ?, ?)`, seq, at.Unix(), actor)
	return err
}

// POCVersion returns the ledger entry of the current point of contact and
// when it was set, or ErrNotFound if none was.
func (db *DB) POCVersion(ctx context.Context) (seq int64, at time.Time, err error) {
	var t int64
	err = db.QueryRowContext(ctx, `SELECT seq, at FROM poc_versions ORDER BY seq DESC LIMIT 1`).Scan(&seq, &t)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, time.Time{}, ErrNotFound
	}
	return seq, time.Unix(t, 0).UTC(), err
}

// OrderRow is an order as stored: its fields in clear, and the ledger
// entries with the request and the answer (0 while unanswered).
type OrderRow struct {
	incident.Order
	RequestSeq, AnswerSeq int64
}

// CreateOrder adds an order of CERT-In; request appends what it asks for to
// the ledger in the same transaction and returns the entry's seq.
func (db *DB) CreateOrder(ctx context.Context, o incident.Order, actor string, request func(tx *Tx) (int64, error)) (int64, error) {
	var id int64
	err := db.write(ctx, func(tx *sql.Tx) error {
		seq, err := request(&Tx{tx: tx})
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO certin_orders (reference, received_at, due_at, request_seq, actor) VALUES (?, ?, ?, ?, ?)`,
			o.Reference, o.Received.Unix(), o.Due.Unix(), seq, actor)
		if err != nil {
			return err
		}
		id, err = res.LastInsertId()
		return err
	})
	return id, err
}

const orderSelect = `SELECT id, reference, received_at, due_at, answered_at, request_seq, coalesce(answer_seq, 0) FROM certin_orders`

func orderRow(row interface{ Scan(...any) error }) (OrderRow, error) {
	var o OrderRow
	var received, due int64
	var answered sql.NullInt64
	err := row.Scan(&o.ID, &o.Reference, &received, &due, &answered, &o.RequestSeq, &o.AnswerSeq)
	if errors.Is(err, sql.ErrNoRows) {
		return o, ErrNotFound
	}
	o.Received, o.Due, o.Answered = time.Unix(received, 0).UTC(), time.Unix(due, 0).UTC(), fromUnix(answered)
	o.State = incident.OrderOpen
	if answered.Valid {
		o.State = incident.OrderAnswered
	}
	return o, err
}

// Orders lists the orders of CERT-In, open ones first, soonest due first,
// with the alerts that fired.
func (db *DB) Orders(ctx context.Context) ([]OrderRow, error) {
	var out []OrderRow
	byID := map[int64]int{}
	err := db.each(ctx, orderSelect+` ORDER BY answered_at IS NOT NULL, due_at`, nil, func(rows *sql.Rows) error {
		o, err := orderRow(rows)
		byID[o.ID] = len(out)
		out = append(out, o)
		return err
	})
	if err != nil {
		return nil, err
	}
	err = db.each(ctx, `SELECT order_id, kind, at FROM certin_order_alerts ORDER BY at`, nil, func(rows *sql.Rows) error {
		var id, at int64
		var kind string
		if err := rows.Scan(&id, &kind, &at); err != nil {
			return err
		}
		if i, ok := byID[id]; ok {
			out[i].Alerts = append(out[i].Alerts, incident.FiredAlert{Kind: incident.AlertKind(kind), At: time.Unix(at, 0).UTC()})
		}
		return nil
	})
	return out, err
}

// Order returns one order with the alerts that fired.
func (db *DB) Order(ctx context.Context, id int64) (OrderRow, error) {
	o, err := orderRow(db.QueryRowContext(ctx, orderSelect+` WHERE id = ?`, id))
	if err != nil {
		return o, err
	}
	err = db.each(ctx, `SELECT kind, at FROM certin_order_alerts WHERE order_id = ? ORDER BY at`, []any{id}, func(rows *sql.Rows) error {
		var a incident.FiredAlert
		var at int64
		if err := rows.Scan(&a.Kind, &at); err != nil {
			return err
		}
		a.At = time.Unix(at, 0).UTC()
		o.Alerts = append(o.Alerts, a)
		return nil
	})
	return o, err
}

// RecordOrderAlert records that an alert about order id fired, and
// reports whether it is the first of its kind for the order (only then is
// it raised).
func (db *DB) RecordOrderAlert(ctx context.Context, id int64, kind incident.AlertKind, at time.Time) (bool, error) {
	res, err := db.ExecContext(ctx, `INSERT INTO certin_order_alerts (order_id, kind, at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`, id, string(kind), at.Unix())
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// OpenOrders counts orders of CERT-In not yet answered.
func (db *DB) OpenOrders(ctx context.Context) (int, error) {
	var n int
	err := db.QueryRowContext(ctx, `SELECT count(*) FROM certin_orders WHERE answered_at IS NULL`).Scan(&n)
	return n, err
}

// AnswerOrder runs answer on order id in a transaction; it records the
// answer (o.Respond) and appends its text to the ledger, returning the
// entry's seq.
func (db *DB) AnswerOrder(ctx context.Context, id int64, answer func(tx *Tx, o *incident.Order) (int64, error)) (OrderRow, error) {
	var o OrderRow
	err := db.write(ctx, func(tx *sql.Tx) error {
		var err error
		if o, err = orderRow(tx.QueryRowContext(ctx, orderSelect+` WHERE id = ?`, id)); err != nil {
			return err
		}
		if o.AnswerSeq, err = answer(&Tx{tx: tx}, &o.Order); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE certin_orders SET answered_at = ?, answer_seq = ? WHERE id = ?`, o.Answered.Unix(), o.AnswerSeq, id)
		return err
	})
	return o, err
}
