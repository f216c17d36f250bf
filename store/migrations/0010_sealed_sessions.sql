-- Session records live in the ledger, sealed and hash-chained (kind
-- "session" for the record, "session-end" when its end arrives); the
-- sessions table only indexes them. The client's endpoint address is
-- personal data and leaves the table: lookups by it go through a blind
-- index (hex HMAC-SHA256 of the address under a key the control server
-- derives from its signing seed). Rows stored before this migration lose
-- their clear endpoint and have no ledger entry (seq NULL).
DROP INDEX sessions_endpoint;
ALTER TABLE sessions DROP COLUMN endpoint_ip;
ALTER TABLE sessions DROP COLUMN endpoint_port;
ALTER TABLE sessions ADD COLUMN seq INTEGER;            -- ledger seq of the "session" entry
ALTER TABLE sessions ADD COLUMN endpoint_index TEXT;    -- blind index of the endpoint address
CREATE INDEX sessions_endpoint_index ON sessions (endpoint_index, start_at);

-- The "session-end" ledger entries of sessions, so a purge finds them.
CREATE TABLE session_ends (
	session_id TEXT NOT NULL,
	seq        INTEGER NOT NULL,
	PRIMARY KEY (session_id, seq)
);
