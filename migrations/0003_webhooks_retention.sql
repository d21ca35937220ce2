-- Signed webhooks, their deliveries, per-camera retention and the indexes analytics and the
-- retention sweeper read (issue 19, ADR 0017).

-- NULL: the global RETENTION_DAYS applies (unset: keep forever).
ALTER TABLE cameras ADD COLUMN retention_days integer
    CHECK (retention_days BETWEEN 1 AND 36500);

-- A receiver of playback notifications. The secret signs every request and is never returned by
-- the API. camera_ids NULL: every camera.
CREATE TABLE webhooks (
    id         uuid PRIMARY KEY,
    url        text NOT NULL,
    secret     text NOT NULL,
    events     text[] NOT NULL,
    camera_ids uuid[],
    enabled    boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One notification for one webhook: the exact body sent (every retry sends the same bytes),
-- its attempts and outcome. Unique per (webhook, status message): a redelivered message adds
-- nothing.
CREATE TABLE webhook_deliveries (
    id               uuid PRIMARY KEY,
    webhook_id       uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    message_id       text NOT NULL,
    event_type       text NOT NULL,
    body             text NOT NULL,
    status           text NOT NULL DEFAULT 'PENDING'
                     CHECK (status IN ('PENDING', 'DELIVERED', 'DEAD')),
    attempts         integer NOT NULL DEFAULT 0,
    status_code      integer,
    last_error       text,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    first_attempt_at timestamptz,
    last_attempt_at  timestamptz,
    delivered_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_deliveries_message_key UNIQUE (webhook_id, message_id)
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE status = 'PENDING';
CREATE INDEX webhook_deliveries_webhook_idx ON webhook_deliveries (webhook_id, created_at DESC);

-- Analytics over every camera buckets playbacks by created_at (per camera:
-- playbacks_camera_idx).
CREATE INDEX playbacks_created_idx ON playbacks (created_at);
-- The retention sweeper's candidates: finished playbacks not yet deleted, oldest first.
CREATE INDEX playbacks_retention_idx ON playbacks (created_at)
    WHERE deleted_at IS NULL AND status IN ('COMPLETED', 'FAILED');
