-- The incident register, point of contact and orders of CERT-In directions
-- (ii) and (iii) (package incident). What reports, the point of contact and
-- orders say (names, phone numbers, addresses, free text) may be personal
-- data: it lives in the ledger, sealed and hash-chained, one entry per
-- version; these tables index it and hold only what carries none.
CREATE TABLE incidents (
	id           INTEGER PRIMARY KEY,
	type         INTEGER NOT NULL CHECK (type BETWEEN 1 AND 20), -- Annexure I
	state        TEXT NOT NULL CHECK (state IN ('noticed', 'reported', 'updated', 'closed')),
	noticed_at   INTEGER NOT NULL, -- Unix seconds; the deadline counts from here
	deadline_at  INTEGER NOT NULL,
	deadline_why TEXT NOT NULL,    -- the duty that set the deadline
	recipient    TEXT NOT NULL,    -- where its reports go by default
	reported_at  INTEGER,          -- delivery of the initial report
	closed_at    INTEGER
) STRICT;

CREATE TRIGGER incidents_clock_fixed BEFORE UPDATE OF noticed_at, deadline_at ON incidents
BEGIN SELECT RAISE(ABORT, 'the time an incident was noticed, and so its deadline, cannot change'); END;

CREATE TRIGGER incidents_kept BEFORE DELETE ON incidents
BEGIN SELECT RAISE(ABORT, 'incidents are never deleted'); END;

-- Every version of an incident's content: version 1 at creation, one more
-- for each update. A version holds what it gave, never a rewrite of earlier
-- ones.
CREATE TABLE incident_versions (
	incident_id INTEGER NOT NULL REFERENCES incidents(id),
	version     INTEGER NOT NULL CHECK (version > 0),
	seq         INTEGER NOT NULL, -- the ledger entry (records chain) with the content
	at          INTEGER NOT NULL,
	actor       TEXT NOT NULL,
	PRIMARY KEY (incident_id, version)
) STRICT;

CREATE TRIGGER incident_versions_fixed BEFORE UPDATE ON incident_versions
BEGIN SELECT RAISE(ABORT, 'incident versions are append-only'); END;

CREATE TRIGGER incident_versions_kept BEFORE DELETE ON incident_versions
BEGIN SELECT RAISE(ABORT, 'incident versions are append-only'); END;

-- Reports that reached their recipient: sent by email through Meridian's
-- SMTP server, or made by phone or fax and recorded. The recipient is an
-- organisational address or number (CERT-In's by default).
CREATE TABLE incident_deliveries (
	id          INTEGER PRIMARY KEY,
	incident_id INTEGER NOT NULL REFERENCES incidents(id),
	version     INTEGER NOT NULL, -- the content version reported
	report      TEXT NOT NULL,    -- "initial report", "update 1" ...
	at          INTEGER NOT NULL,
	channel     TEXT NOT NULL CHECK (channel IN ('email', 'phone', 'fax')),
	recipient   TEXT NOT NULL,
	message_id  TEXT NOT NULL,    -- email: Message-ID; phone, fax: the reference given
	actor       TEXT NOT NULL
) STRICT;

CREATE TRIGGER incident_deliveries_fixed BEFORE UPDATE ON incident_deliveries
BEGIN SELECT RAISE(ABORT, 'incident deliveries are append-only'); END;

CREATE TRIGGER incident_deliveries_kept BEFORE DELETE ON incident_deliveries
BEGIN SELECT RAISE(ABORT, 'incident deliveries are append-only'); END;

-- Deadline alerts that fired: each kind once per incident.
CREATE TABLE incident_alerts (
	incident_id INTEGER NOT NULL REFERENCES incidents(id),
	kind        TEXT NOT NULL CHECK (kind IN ('one-hour-left', 'overdue')),
	at          INTEGER NOT NULL,
	PRIMARY KEY (incident_id, kind)
) STRICT;

-- Versions of the point of contact; the newest is current.
CREATE TABLE poc_versions (
	seq   INTEGER PRIMARY KEY, -- the ledger entry with the details
	at    INTEGER NOT NULL,
	actor TEXT NOT NULL
) STRICT;

-- Orders of CERT-In, with their due times.
CREATE TABLE certin_orders (
	id          INTEGER PRIMARY KEY,
	reference   TEXT NOT NULL,    -- CERT-In's reference
	received_at INTEGER NOT NULL,
	due_at      INTEGER NOT NULL,
	request_seq INTEGER NOT NULL, -- ledger entry: what the order asks for
	answered_at INTEGER,
	answer_seq  INTEGER,          -- ledger entry: what was provided
	actor       TEXT NOT NULL
) STRICT;
