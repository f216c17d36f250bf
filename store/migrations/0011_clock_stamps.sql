-- The control node's clock sync state (CERT-In direction (i)) when an
-- incident's noticed time was taken and when a candidate was detected or
-- confirmed: JSON of a syncstamp.Stamp (no personal data), NULL for rows
-- recorded before it was kept. Written once, like the times they stamp.
ALTER TABLE incidents ADD COLUMN notice_clock TEXT;  -- when added, or when its candidate was detected
ALTER TABLE incidents ADD COLUMN confirm_clock TEXT; -- when confirmed from a candidate; NULL otherwise
ALTER TABLE incident_candidates ADD COLUMN detected_clock TEXT;

CREATE TRIGGER incidents_clocks_fixed BEFORE UPDATE OF notice_clock, confirm_clock ON incidents
BEGIN SELECT RAISE(ABORT, 'the clock state an incident was recorded with cannot change'); END;

CREATE TRIGGER incident_candidates_clock_fixed BEFORE UPDATE OF detected_clock ON incident_candidates
BEGIN SELECT RAISE(ABORT, 'the clock state a candidate was detected with cannot change'); END;
