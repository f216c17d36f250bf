-- Duty triggers: the readings under which a country's duty profile applies
-- (jurisdiction.ParseTriggers: placement, establishment, market), as a
-- comma-separated list. Placement only is today's behaviour and the default.
ALTER TABLE jurisdictions ADD COLUMN triggers TEXT NOT NULL DEFAULT 'placement';

-- The countries the operator declares itself established in, for the
-- establishment trigger: country codes, one a row.
CREATE TABLE operator_establishment (
	country TEXT PRIMARY KEY
);
