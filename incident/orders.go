package incident

import (
	"errors"
	"fmt"
	"time"
)

// OrderState says whether an order of CERT-In still waits for an answer.
type OrderState string

const (
	OrderOpen     OrderState = "open"
	OrderAnswered OrderState = "answered"
)

// Order is an order of CERT-In (direction (iii)) to provide information or
// assistance, in the format and within the time it sets.
type Order struct {
	ID        int64        `json:"id"`
	Reference string       `json:"reference"` // CERT-In's reference for the order
	Received  time.Time    `json:"received_at"`
	Due       time.Time    `json:"due_at"`
	State     OrderState   `json:"state"`
	Answered  time.Time    `json:"answered_at,omitzero"`
	Request   string       `json:"request,omitempty"` // what the order asks for, in which format
	Answer    string       `json:"answer,omitempty"`  // what was provided, and how
	Alerts    []FiredAlert `json:"alerts,omitempty"`  // deadline alerts that fired

	// Set by AsOf.
	Status      string `json:"status,omitempty"`
	SecondsLeft *int64 `json:"seconds_left,omitempty"` // while open; negative when overdue
}

// NewOrder checks an order as it was received. Times are RFC 3339 with a
// zone; the due time must follow the time received.
func NewOrder(reference, received, due, request string) (Order, error) {
	o := Order{Reference: reference, Request: request, State: OrderOpen}
	if err := errors.Join(CheckText("reference", &o.Reference, MaxShort), CheckText("request", &o.Request, MaxLong)); err != nil {
		return o, err
	}
	if o.Reference == "" {
		return o, fieldErr("reference", "required: CERT-In's reference for the order")
	}
	if o.Request == "" {
		return o, fieldErr("request", "required: what the order asks for, and in which format")
	}
	var err error
	if o.Received, err = ParseTime("received_at", received); err != nil {
		return o, err
	}
	if o.Due, err = ParseTime("due_at", due); err != nil {
		return o, err
	}
	if !o.Due.After(o.Received) {
		return o, fieldErr("due_at", "must be after received_at")
	}
	return o, nil
}

// Respond records the answer to an open order.
func (o *Order) Respond(at time.Time, answer string) error {
	if o.State != OrderOpen {
		return fmt.Errorf("order %d was already answered on %s", o.ID, formatTime(o.Answered))
	}
	if err := CheckText("answer", &answer, MaxLong); err != nil {
		return err
	}
	if answer == "" {
		return fieldErr("answer", "required: what was provided, and how")
	}
	if at.Before(o.Received) {
		return fieldErr("answered_at", "is before the order was received")
	}
	o.State, o.Answered, o.Answer = OrderAnswered, at, answer
	return nil
}

// TimeLeft is the time until the order is due at now; negative when
// overdue.
func (o Order) TimeLeft(now time.Time) time.Duration { return o.Due.Sub(now) }

// AsOf returns o with its status at now: time left while open, or whether
// the answer came in time.
func (o Order) AsOf(now time.Time) Order {
	o.SecondsLeft = nil
	if o.State == OrderOpen {
		o.Status = FormatLeft(o.TimeLeft(now))
		s := int64(o.TimeLeft(now) / time.Second)
		o.SecondsLeft = &s
		return o
	}
	o.Status = fmt.Sprintf("answered %s after receipt", FormatDuration(o.Answered.Sub(o.Received)))
	if late := o.Answered.Sub(o.Due); late > 0 {
		o.Status += fmt.Sprintf(", %s late", FormatDuration(late))
	} else {
		o.Status += ", in time"
	}
	return o
}

// OrderAlert is an alert about an order's due time that is due. Like
// Alert, it carries no personal data: it is logged and posted to the
// operator's webhook.
type OrderAlert struct {
	Order       int64     `json:"order"`
	Kind        AlertKind `json:"alert"`
	Due         time.Time `json:"due_at"`
	SecondsLeft int64     `json:"seconds_left"` // negative when overdue
	TimeLeft    string    `json:"time_left"`
}

// DueOrders returns the alerts due at now for orders still open, as Due
// does for incidents: "overdue" once the due time has passed, or
// "one-hour-left" within the last hour, each once. An answered order
// raises none.
func DueOrders(orders []Order, now time.Time) []OrderAlert {
	var out []OrderAlert
	for _, o := range orders {
		if o.State != OrderOpen {
			continue
		}
		left := o.TimeLeft(now)
		kind, ok := alertDue(left, o.Alerts)
		if !ok {
			continue
		}
		out = append(out, OrderAlert{Order: o.ID, Kind: kind, Due: o.Due, SecondsLeft: int64(left / time.Second), TimeLeft: FormatLeft(left)})
	}
	return out
}
