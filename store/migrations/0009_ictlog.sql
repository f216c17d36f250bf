-- The ICT log of CERT-In direction (iv) (package ictlog): events of the
-- nodes whose place brings an ICT-log duty, kept for the duty's rolling
-- retention. Nothing here names a person: actors are admin tokens (id and
-- name) and gateways, details are routes, counts and names of things.
CREATE TABLE ict_log (
	id        INTEGER PRIMARY KEY,
	at        INTEGER NOT NULL, -- Unix nanoseconds
	node      TEXT NOT NULL,    -- 'control' or a gateway's name
	country   TEXT NOT NULL,    -- the node's physical country when recorded
	category  TEXT NOT NULL,
	event     TEXT NOT NULL,
	outcome   TEXT NOT NULL CHECK (outcome IN ('success', 'failure', 'info')),
	actor     TEXT NOT NULL DEFAULT '',
	details   TEXT NOT NULL DEFAULT '{}', -- JSON object
	keep_days INTEGER NOT NULL CHECK (keep_days > 0) -- the retention of the duty it was recorded under
) STRICT;

CREATE INDEX ict_log_at ON ict_log (at);

-- Entries are written once; only the retention purge removes them.
CREATE TRIGGER ict_log_fixed BEFORE UPDATE ON ict_log
BEGIN SELECT RAISE(ABORT, 'the ICT log is append-only'); END;

-- Incident candidates: what the detectors saw (a handshake flood, a failed
-- ledger verification, a burst of failed admin logins), waiting for an
-- operator to confirm (an incident is added, noticed at detected_at) or
-- dismiss it.
CREATE TABLE incident_candidates (
	id           INTEGER PRIMARY KEY,
	kind         TEXT NOT NULL,
	node         TEXT NOT NULL,
	types        TEXT NOT NULL, -- JSON list of Annexure I numbers
	summary      TEXT NOT NULL,
	details      TEXT NOT NULL DEFAULT '{}',
	detected_at  INTEGER NOT NULL, -- Unix seconds
	last_seen_at INTEGER NOT NULL,
	sightings    INTEGER NOT NULL DEFAULT 1,
	state        TEXT NOT NULL CHECK (state IN ('pending', 'confirmed', 'dismissed')),
	decided_at   INTEGER,
	decided_by   TEXT NOT NULL DEFAULT '',
	reason       TEXT NOT NULL DEFAULT '',
	incident_id  INTEGER REFERENCES incidents(id)
) STRICT;

-- One pending candidate per kind and node: later sightings add to it.
CREATE UNIQUE INDEX incident_candidates_pending ON incident_candidates (kind, node) WHERE state = 'pending';

CREATE TRIGGER incident_candidates_detected_fixed BEFORE UPDATE OF detected_at ON incident_candidates
BEGIN SELECT RAISE(ABORT, 'the time a candidate was detected cannot change'); END;

CREATE TRIGGER incident_candidates_decided BEFORE UPDATE ON incident_candidates
WHEN OLD.state <> 'pending'
BEGIN SELECT RAISE(ABORT, 'a decided candidate cannot change'); END;

CREATE TRIGGER incident_candidates_kept BEFORE DELETE ON incident_candidates
BEGIN SELECT RAISE(ABORT, 'incident candidates are never deleted'); END;
