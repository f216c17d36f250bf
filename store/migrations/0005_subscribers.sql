-- Subscriber records (CERT-In direction (v)) live in the ledger, sealed
-- and hash-chained; these tables only index them and hold what carries no
-- personal data.
-- End of the period of hire (item b); retention counts from here.
ALTER TABLE users ADD COLUMN cancelled_at INTEGER;

-- Which ledger entries (records chain) belong to which account.
CREATE TABLE subscriber_entries (
	user_id INTEGER NOT NULL REFERENCES users(id),
	seq     INTEGER NOT NULL,
	PRIMARY KEY (user_id, seq)
);

-- One-time codes sent to validate an email address: only a hash is kept.
CREATE TABLE email_codes (
	user_id    INTEGER PRIMARY KEY REFERENCES users(id),
	code_hash  BLOB NOT NULL,
	expires_at INTEGER NOT NULL,
	attempts   INTEGER NOT NULL DEFAULT 0
);
