-- Session index rows now live in a database file of their own
-- (store/sessionindex.go; the sessions table is moved there when the
-- database is opened). A purge removes an account's session entries from
-- the ledger here and its rows there, which one transaction cannot do:
-- the purge notes here what the index must drop, and the note goes once
-- the index has.
CREATE TABLE session_index_purges (
	user_name TEXT NOT NULL,
	up_to     INTEGER NOT NULL, -- rows of entries up to this ledger seq
	PRIMARY KEY (user_name, up_to)
) STRICT;
