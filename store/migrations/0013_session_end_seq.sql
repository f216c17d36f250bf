-- The ledger seq of a session's "session-end" entry moves into the
-- session's row: recording an end is then one update of that row instead
-- of an update plus a row and an index entry in session_ends. A session
-- ends once, so it has at most one such entry.
ALTER TABLE sessions ADD COLUMN end_seq INTEGER;
UPDATE sessions SET end_seq = (SELECT max(e.seq) FROM session_ends e WHERE e.session_id = sessions.id);
DROP TABLE session_ends;
