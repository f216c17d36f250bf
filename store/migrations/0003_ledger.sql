-- The compliance ledger (package ledger): two hash chains of entries, and
-- signed checkpoints of their heads. STRICT, so that no value of another
-- type can be slipped into a column.
-- Entries are never deleted. A purge removes an entry's body and data key,
-- keeps its hashes so that the chain still links, and is itself an entry.
CREATE TABLE ledger_entries (
	chain     TEXT NOT NULL CHECK (chain IN ('records', 'access')),
	seq       INTEGER NOT NULL CHECK (seq > 0), -- 1, 2, 3 ... within the chain
	kind      TEXT NOT NULL,
	at        INTEGER NOT NULL,                 -- Unix nanoseconds
	body      BLOB,     -- as hashed: sealed under the entry's data key, or clear JSON for purge entries, NULL once purged
	data_key  TEXT,     -- the entry's data key sealed by a keyring key, NULL for clear or purged bodies
	prev_hash BLOB NOT NULL,
	hash      BLOB NOT NULL,
	purged_by INTEGER,  -- seq of the purge entry that removed the body
	PRIMARY KEY (chain, seq)
) STRICT, WITHOUT ROWID;

-- An entry must link to the head of its chain (the hash itself is checked by
-- ledger.Verify).
CREATE TRIGGER ledger_entries_linked BEFORE INSERT ON ledger_entries
WHEN NEW.prev_hash IS NOT coalesce((SELECT hash FROM ledger_entries WHERE chain = NEW.chain AND seq = NEW.seq - 1), CASE WHEN NEW.seq = 1 THEN zeroblob(32) END)
BEGIN SELECT RAISE(ABORT, 'a ledger entry must link to the head of its chain'); END;

CREATE TRIGGER ledger_entries_no_delete BEFORE DELETE ON ledger_entries
BEGIN SELECT RAISE(ABORT, 'ledger entries are never deleted, only their bodies purged'); END;

CREATE TRIGGER ledger_entries_fixed BEFORE UPDATE OF chain, seq, kind, at, prev_hash, hash ON ledger_entries
BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;

CREATE TRIGGER ledger_entries_purge_once BEFORE UPDATE OF body, purged_by ON ledger_entries
WHEN NEW.body IS NOT NULL OR OLD.body IS NULL OR NEW.purged_by IS NULL
BEGIN SELECT RAISE(ABORT, 'a ledger body can only be removed, once, by a purge entry'); END;

CREATE TABLE ledger_checkpoints (
	id           INTEGER PRIMARY KEY,
	at           INTEGER NOT NULL, -- Unix nanoseconds
	records_seq  INTEGER NOT NULL,
	records_hash BLOB NOT NULL,
	access_seq   INTEGER NOT NULL,
	access_hash  BLOB NOT NULL,
	signature    BLOB NOT NULL     -- ed25519 over the message of ledger.Checkpoint
) STRICT;

CREATE TRIGGER ledger_checkpoints_no_update BEFORE UPDATE ON ledger_checkpoints
BEGIN SELECT RAISE(ABORT, 'ledger checkpoints are append-only'); END;

CREATE TRIGGER ledger_checkpoints_no_delete BEFORE DELETE ON ledger_checkpoints
BEGIN SELECT RAISE(ABORT, 'ledger checkpoints are append-only'); END;
