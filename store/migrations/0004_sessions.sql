-- Attribution records of sessions on gateways whose duties require them
-- (api.SessionRecord): plain rows for now, to be chained by the compliance
-- ledger. A session held ports port_lo-port_hi on its exit addresses from
-- start_at until end_at (NULL while it is open), half-open: a port block
-- passes from one session to the next at one instant, and a lookup at that
-- instant finds the next. Times are Unix nanoseconds. Gateways without
-- such a duty send nothing, and the control server keeps no row for them.
CREATE TABLE sessions (
	id            TEXT PRIMARY KEY, -- 32 hex digits, made by the gateway
	gateway       TEXT NOT NULL,
	public_key    TEXT NOT NULL,
	device_id     INTEGER,          -- NULL if the device was gone when the record arrived
	user_name     TEXT,
	tunnel_ipv4   TEXT,
	tunnel_ipv6   TEXT,
	endpoint_ip   TEXT NOT NULL,    -- where the device connected from
	endpoint_port INTEGER NOT NULL,
	exit_ipv4     TEXT,
	exit_ipv6     TEXT,
	port_lo       INTEGER NOT NULL,
	port_hi       INTEGER NOT NULL,
	start_at      INTEGER NOT NULL,
	end_at        INTEGER,
	CHECK (port_lo BETWEEN 1 AND port_hi AND port_hi <= 65535),
	CHECK (end_at IS NULL OR end_at >= start_at)
) STRICT;

CREATE INDEX sessions_exit4 ON sessions (exit_ipv4, port_lo, start_at);
CREATE INDEX sessions_exit6 ON sessions (exit_ipv6, port_lo, start_at);
CREATE INDEX sessions_tunnel4 ON sessions (tunnel_ipv4, start_at);
CREATE INDEX sessions_tunnel6 ON sessions (tunnel_ipv6, start_at);
CREATE INDEX sessions_endpoint ON sessions (endpoint_ip, start_at);
CREATE INDEX sessions_user ON sessions (user_name, start_at);
