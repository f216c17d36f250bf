-- Foundation: accounts, devices, gateways, tokens, and the peer change log
-- that gateways follow.
CREATE TABLE settings (
	key   TEXT PRIMARY KEY,
	value TEXT NOT NULL
);

CREATE TABLE users (
	id         INTEGER PRIMARY KEY,
	name       TEXT NOT NULL UNIQUE,
	kind       TEXT NOT NULL CHECK (kind IN ('consumer', 'enterprise')),
	created_at INTEGER NOT NULL
);

CREATE TABLE devices (
	id         INTEGER PRIMARY KEY,
	user_id    INTEGER NOT NULL REFERENCES users(id),
	name       TEXT NOT NULL,
	public_key TEXT NOT NULL UNIQUE,
	ipv4       TEXT NOT NULL UNIQUE,
	ipv6       TEXT NOT NULL UNIQUE,
	status     TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
	created_at INTEGER NOT NULL,
	UNIQUE (user_id, name)
);

-- Tokens are stored as SHA-256 hashes only; the token itself is shown once.
CREATE TABLE admin_tokens (
	id         TEXT PRIMARY KEY,
	hash       BLOB NOT NULL UNIQUE,
	name       TEXT NOT NULL,
	role       TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	revoked    INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE join_tokens (
	id         TEXT PRIMARY KEY,
	hash       BLOB NOT NULL,
	reusable   INTEGER NOT NULL,
	expires_at INTEGER NOT NULL,
	used_at    INTEGER,
	revoked    INTEGER NOT NULL DEFAULT 0,
	created_at INTEGER NOT NULL
);

CREATE TABLE gateways (
	id         INTEGER PRIMARY KEY,
	name       TEXT NOT NULL UNIQUE,
	public_key TEXT NOT NULL UNIQUE,
	endpoint   TEXT NOT NULL,
	mode       TEXT NOT NULL,
	cred_hash  BLOB NOT NULL UNIQUE,
	joined_at  INTEGER NOT NULL
);

-- Every change to the set of peers gateways must accept, in order. A
-- gateway that knows version V asks for the changes after V.
CREATE TABLE peer_changes (
	version    INTEGER PRIMARY KEY AUTOINCREMENT,
	public_key TEXT NOT NULL,
	ipv4       TEXT,
	ipv6       TEXT,
	removed    INTEGER NOT NULL
);
