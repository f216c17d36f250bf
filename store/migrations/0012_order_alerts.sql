-- Deadline alerts of CERT-In orders that fired: each kind once per order,
-- as incident_alerts for incidents.
CREATE TABLE certin_order_alerts (
	order_id INTEGER NOT NULL REFERENCES certin_orders(id),
	kind     TEXT NOT NULL CHECK (kind IN ('one-hour-left', 'overdue')),
	at       INTEGER NOT NULL,
	PRIMARY KEY (order_id, kind)
) STRICT;
