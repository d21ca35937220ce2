-- The per-camera capture (issue 16): each camera keeps pre_roll_sec of capture before an event's
-- moment and records post_roll_sec after its end; an event stores its moment (occurred_at, given
-- by the client or the request time); a playback stores the intervals its camera delivered
-- nothing (gaps) and whether the capture held less than the pre-roll (started_late).
ALTER TABLE cameras
    ADD COLUMN pre_roll_sec integer NOT NULL DEFAULT 5 CHECK (pre_roll_sec BETWEEN 0 AND 60),
    ADD COLUMN post_roll_sec integer NOT NULL DEFAULT 5 CHECK (post_roll_sec BETWEEN 0 AND 300);

ALTER TABLE events ADD COLUMN occurred_at timestamptz;
UPDATE events SET occurred_at = created_at;
ALTER TABLE events ALTER COLUMN occurred_at SET NOT NULL, ALTER COLUMN occurred_at SET DEFAULT now();

-- gaps: [{"from": <RFC 3339>, "to": <RFC 3339>}], oldest first.
ALTER TABLE playbacks
    ADD COLUMN gaps jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN started_late boolean NOT NULL DEFAULT false;
