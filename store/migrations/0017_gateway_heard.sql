-- When the control server last heard from each gateway (a report, a
-- netmap request, session records): kept across restarts of the control
-- server, so that the sessions of a gateway gone silent are ended as of
-- that time (an inferred end), never as of a later one.
CREATE TABLE gateway_heard (
	gateway  TEXT PRIMARY KEY,
	heard_at INTEGER NOT NULL -- Unix nanoseconds
) STRICT;
