package api

import (
	"context"
	"time"
)

// InventoryCategory is one category of personal data an installation can
// hold, as the data inventory shows it (GET /compliance/inventory).
type InventoryCategory struct {
	Name string `json:"name"`
	What string `json:"what"`
	// Duties cite what requires the category, as 'jurisdiction explain'
	// does ("gateway in1: IN / cert-in-2022 / direction (v)"); Choice is
	// an operator's choice that does (as --collect-all), not a duty.
	Duties []string  `json:"duties"`
	Choice string    `json:"operator_choice,omitempty"`
	Where  string    `json:"where"`
	Count  int       `json:"count"`
	Oldest time.Time `json:"oldest,omitzero"`
	// Retention is the rule; Overdue counts the items past it now (the
	// retention job purges them).
	Retention string `json:"retention"`
	Overdue   int    `json:"overdue"`
	// NoDuty is set when nothing requires the category and it holds items:
	// a breach of "no duty, no data".
	NoDuty bool `json:"no_duty_breach,omitempty"`
}

// Inventory answers GET /compliance/inventory and POST
// /compliance/retention-check.
type Inventory struct {
	At         time.Time           `json:"at"`
	Categories []InventoryCategory `json:"categories"`
	// NextPurge is when the retention job runs next (zero: it is not
	// running, as in a test).
	NextPurge time.Time `json:"next_purge,omitzero"`
	Overdue   int       `json:"overdue"`  // items past their retention, all categories
	Breaches  int       `json:"breaches"` // categories flagged NoDuty
}

// Inventory returns the data inventory.
func (c *Client) Inventory(ctx context.Context) (Inventory, error) {
	var out Inventory
	return out, c.Do(ctx, "GET", "/compliance/inventory", nil, &out)
}

// RetentionCheck finds the items past their retention: the inventory,
// with a metric set and an incident candidate raised if any is overdue.
func (c *Client) RetentionCheck(ctx context.Context) (Inventory, error) {
	var out Inventory
	return out, c.Do(ctx, "POST", "/compliance/retention-check", nil, &out)
}
