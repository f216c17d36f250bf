-- Export bundles for lawful requests. The query names people, so it is
-- sealed; with the two-person rule a second compliance officer approves.
CREATE TABLE exports (
	id           TEXT PRIMARY KEY,
	case_ref     TEXT NOT NULL,
	query        TEXT NOT NULL,
	requested_by TEXT NOT NULL,
	requested_at INTEGER NOT NULL,
	approved_by  TEXT,
	approved_at  INTEGER
);
