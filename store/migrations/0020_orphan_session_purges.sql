-- Session rows whose device was gone when their records arrived carry no
-- account name, so the purge of an account never finds them: they are
-- purged on their own once the retention, counted from the session's end
-- (its start, if it never ended), has passed. As for accounts
-- (session_index_purges), the purge notes here what the index must drop,
-- and the note goes once the index has.
CREATE TABLE session_orphan_purges (
	up_to        INTEGER NOT NULL, -- rows of entries up to this ledger seq
	ended_before INTEGER NOT NULL, -- rows whose end (or start) is before this, in Unix nanoseconds
	PRIMARY KEY (up_to, ended_before)
) STRICT;
