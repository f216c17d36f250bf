package store

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/incident"
)

func TestIncidentRegister(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t)
	noticed := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	at := noticed.Add(time.Minute)
	inc := incident.Incident{Type: 8, Noticed: noticed, Deadline: incident.Deadline(noticed, 6*time.Hour), DeadlineWhy: "IN / cert-in-2022 / direction (ii)", Recipient: incident.DefaultRecipient}
	id, err := db.CreateIncident(ctx, inc, func(tx *Tx, id int64) error {
		return tx.AddIncidentVersion(ctx, id, incident.Update{Version: 1, At: at, By: "admin:1"}, 11)
	})
	if err != nil {
		t.Fatal(err)
	}
	// An update adds a version and a delivery; the first version stays.
	_, err = db.ChangeIncident(ctx, id, func(tx *Tx, inc *incident.Incident) error {
		if inc.Version != 1 || inc.State != incident.Noticed {
			t.Fatalf("loaded %+v", inc)
		}
		inc.State, inc.Reported = incident.Reported, at.Add(time.Hour)
		return tx.AddIncidentDelivery(ctx, id, incident.Delivery{At: inc.Reported, Version: 1, Report: "initial report", Channel: incident.Email, Recipient: inc.Recipient, MessageID: "<1@x>", By: "admin:1"})
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = db.ChangeIncident(ctx, id, func(tx *Tx, inc *incident.Incident) error {
		return tx.AddIncidentVersion(ctx, id, incident.Update{Version: inc.Version + 1, At: at.Add(2 * time.Hour), By: "admin:1"}, 12)
	})
	if err != nil {
		t.Fatal(err)
	}
	got, seqs, err := db.Incident(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != 2 || len(got.Updates) != 2 || seqs[0] != 11 || seqs[1] != 12 || got.State != incident.Reported || !got.Reported.Equal(at.Add(time.Hour)) {
		t.Fatalf("incident %+v seqs %v", got, seqs)
	}
	if len(got.Deliveries) != 1 || got.Deliveries[0].MessageID != "<1@x>" || got.Deliveries[0].Channel != incident.Email {
		t.Fatalf("deliveries %+v", got.Deliveries)
	}

	// History and the clock cannot be rewritten.
	for _, q := range []string{
		`UPDATE incident_versions SET seq = 99`,
		`DELETE FROM incident_versions`,
		`UPDATE incidents SET noticed_at = noticed_at + 3600`,
		`UPDATE incident_deliveries SET message_id = 'x'`,
		`DELETE FROM incidents`,
	} {
		if _, err := db.ExecContext(ctx, q); err == nil {
			t.Errorf("%s: allowed", q)
		}
	}
	// A version number taken twice is a conflict, not a fork.
	_, err = db.ChangeIncident(ctx, id, func(tx *Tx, inc *incident.Incident) error {
		return tx.AddIncidentVersion(ctx, id, incident.Update{Version: 2, At: at, By: "admin:1"}, 13)
	})
	if _, ok := err.(*ConflictError); !ok {
		t.Fatalf("duplicate version: %v", err)
	}

	// Each alert kind is recorded once per incident.
	for i, want := range []bool{true, false} {
		first, err := db.RecordIncidentAlert(ctx, id, incident.Overdue, at)
		if err != nil || first != want {
			t.Fatalf("alert %d: %v %v", i, first, err)
		}
	}
	list, err := db.Incidents(ctx, false)
	if err != nil || len(list) != 1 || len(list[0].Alerts) != 1 || list[0].Alerts[0].Kind != incident.Overdue {
		t.Fatalf("open incidents %+v %v", list, err)
	}
	if n, _ := db.OpenIncidents(ctx); n != 1 {
		t.Fatalf("open: %d", n)
	}
	db.ChangeIncident(ctx, id, func(tx *Tx, inc *incident.Incident) error {
		inc.State, inc.Closed = incident.Closed, at.Add(3*time.Hour)
		return nil
	})
	if list, _ := db.Incidents(ctx, false); len(list) != 0 {
		t.Fatalf("closed incident listed as open")
	}
	if list, _ := db.Incidents(ctx, true); len(list) != 1 || list[0].State != incident.Closed {
		t.Fatalf("all incidents: %+v", list)
	}
	if _, _, err := db.Incident(ctx, 99); err != ErrNotFound {
		t.Fatalf("unknown incident: %v", err)
	}
}

func TestOrdersAndPOC(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t)
	if _, _, err := db.POCVersion(ctx); err != ErrNotFound {
		t.Fatalf("no PoC yet: %v", err)
	}
	now := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	for seq := int64(3); seq <= 4; seq++ {
		db.Update(ctx, func(tx *Tx) error { return tx.AddPOCVersion(ctx, seq, now, "admin:1") })
	}
	if seq, _, err := db.POCVersion(ctx); err != nil || seq != 4 {
		t.Fatalf("current PoC: %d %v", seq, err)
	}

	o, err := incident.NewOrder("CERT-In/1", "2026-05-01T10:00:00Z", "2026-05-02T10:00:00Z", "logs")
	if err != nil {
		t.Fatal(err)
	}
	id, err := db.CreateOrder(ctx, o, "admin:1", func(*Tx) (int64, error) { return 7, nil })
	if err != nil {
		t.Fatal(err)
	}
	later, _ := incident.NewOrder("CERT-In/2", "2026-05-01T10:00:00Z", "2026-05-03T10:00:00Z", "logs")
	db.CreateOrder(ctx, later, "admin:1", func(*Tx) (int64, error) { return 8, nil })
	got, err := db.Order(ctx, id)
	if err != nil || got.Reference != "CERT-In/1" || got.RequestSeq != 7 || got.State != incident.OrderOpen || !got.Due.Equal(o.Due) {
		t.Fatalf("order %+v %v", got, err)
	}
	ans, err := db.AnswerOrder(ctx, id, func(tx *Tx, o *incident.Order) (int64, error) {
		return 9, o.Respond(now.Add(time.Hour), "sent")
	})
	if err != nil || ans.AnswerSeq != 9 || ans.State != incident.OrderAnswered {
		t.Fatalf("answer %+v %v", ans, err)
	}
	_, err = db.AnswerOrder(ctx, id, func(tx *Tx, o *incident.Order) (int64, error) {
		return 10, o.Respond(now.Add(time.Hour), "again")
	})
	if err == nil || !strings.Contains(err.Error(), "already answered") {
		t.Fatalf("second answer: %v", err)
	}
	list, err := db.Orders(ctx)
	if err != nil || len(list) != 2 || list[0].Reference != "CERT-In/2" || list[1].State != incident.OrderAnswered {
		t.Fatalf("orders (open first): %+v %v", list, err)
	}
}
