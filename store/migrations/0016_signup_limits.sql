-- Self-service sign-up abuse (control/signuplimits.go).
-- A public sign-up stays unconfirmed until its email is verified, an
-- operator validates its record or it gets a device; one still unconfirmed
-- after the expiry window is withdrawn and purged (no service was hired).
ALTER TABLE users ADD COLUMN unconfirmed INTEGER NOT NULL DEFAULT 0;

-- Verification mails sent per email address in a rolling 24 hours, so the
-- limit holds across restarts. The address is kept only as a keyed hash
-- (HMAC under a key derived from the server's signing seed), and a row is
-- deleted once its 24 hours have passed.
CREATE TABLE signup_mails (
	addr_key     BLOB PRIMARY KEY,
	window_start INTEGER NOT NULL,
	sent         INTEGER NOT NULL
);
