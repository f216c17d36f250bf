-- Where machines stand, what subscribers choose, and which duties apply.
-- Where a node physically stands and where its exit addresses appear to
-- be. node is a gateway's name, or 'control' for the control server.
CREATE TABLE node_places (
	node               TEXT PRIMARY KEY,
	physical_country   TEXT NOT NULL,
	city               TEXT NOT NULL DEFAULT '',
	provider           TEXT NOT NULL DEFAULT '',
	ownership          TEXT NOT NULL CHECK (ownership IN ('owned', 'rented')),
	entry_endpoints    TEXT NOT NULL DEFAULT '[]', -- JSON list of host:port
	exit_addresses     TEXT NOT NULL DEFAULT '[]', -- JSON list of IP addresses
	advertised_country TEXT NOT NULL,
	capacity           INTEGER NOT NULL CHECK (capacity > 0),
	updated_at         INTEGER NOT NULL
);

CREATE TABLE locations (
	code       TEXT PRIMARY KEY,
	country    TEXT NOT NULL,
	city       TEXT NOT NULL DEFAULT '',
	created_at INTEGER NOT NULL
);

CREATE TABLE location_gateways (
	location TEXT NOT NULL REFERENCES locations(code) ON DELETE CASCADE,
	gateway  TEXT NOT NULL REFERENCES gateways(name),
	PRIMARY KEY (location, gateway)
);

-- The location a device's config points at ('' = none chosen).
ALTER TABLE devices ADD COLUMN location TEXT NOT NULL DEFAULT '';

CREATE TABLE duty_profiles (
	name TEXT PRIMARY KEY,
	body TEXT NOT NULL -- JSON, as accepted by jurisdiction.ParseProfileJSON
);

CREATE TABLE jurisdictions (
	country    TEXT PRIMARY KEY,
	profile    TEXT NOT NULL,
	stance     TEXT NOT NULL CHECK (stance IN ('comply', 'virtual-only')),
	updated_at INTEGER NOT NULL
);

-- Admin actions that change where things stand or which duties apply.
CREATE TABLE audit_log (
	id     INTEGER PRIMARY KEY AUTOINCREMENT,
	at     INTEGER NOT NULL,
	actor  TEXT NOT NULL,
	action TEXT NOT NULL,
	detail TEXT NOT NULL -- JSON
);
