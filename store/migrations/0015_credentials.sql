-- Admin tokens may expire (expires_at NULL: never) and are revoked with a
-- time; when each was last used (to the minute) helps find the ones nobody
-- needs any more.
ALTER TABLE admin_tokens ADD COLUMN expires_at INTEGER;
ALTER TABLE admin_tokens ADD COLUMN revoked_at INTEGER;
ALTER TABLE admin_tokens ADD COLUMN last_used_at INTEGER;
