-- camrec schema, version 1. Forward-only: later changes are new files, never edits of this one.
-- Only event-api touches these tables.

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    username      text NOT NULL,
    password_hash text NOT NULL,
    role          text NOT NULL CHECK (role IN ('ADMIN', 'OPERATOR', 'VIEWER')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_username_key UNIQUE (username)
);

-- Refresh tokens are stored as SHA-256 hashes. A token belongs to a family (one login); reusing a
-- revoked token revokes its whole family.
CREATE TABLE refresh_tokens (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash  text NOT NULL,
    family_id   uuid NOT NULL,
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    replaced_by uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT refresh_tokens_token_hash_key UNIQUE (token_hash)
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);

-- rtsp_url is stored WITHOUT credentials; username and password are separate columns and the
-- password is never returned by the API.
CREATE TABLE cameras (
    id                 uuid PRIMARY KEY,
    name               text NOT NULL,
    ip_address         text NOT NULL,
    channel            integer NOT NULL DEFAULT 1,
    rtsp_port          integer NOT NULL DEFAULT 554,
    rtsp_url           text NOT NULL,
    username           text,
    password           text,
    codec              text,
    resolution         text,
    vendor             text,
    enabled            boolean NOT NULL DEFAULT true,
    site               text NOT NULL DEFAULT 'default',
    record_event_types text[] NOT NULL DEFAULT '{MOTION,MANUAL}',
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT cameras_ip_address_channel_key UNIQUE (ip_address, channel)
);
CREATE INDEX cameras_created_at_idx ON cameras (created_at);

-- An event is open until ended_at is set. Deleted events are kept (deleted_at) because their
-- playback may still be finishing; the API hides them.
CREATE TABLE events (
    id          uuid PRIMARY KEY,
    camera_id   uuid NOT NULL REFERENCES cameras (id),
    type        text NOT NULL CHECK (type IN ('MOTION', 'ALERT', 'ERROR', 'MANUAL')),
    description text,
    ack         boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    ended_at    timestamptz,
    end_reason  text,
    deleted_at  timestamptz
);
CREATE INDEX events_camera_created_idx ON events (camera_id, created_at DESC);
CREATE INDEX events_created_idx ON events (created_at DESC);

-- One playback per recording event. last_seq is the sequence of the last applied status message:
-- the projector applies a message only when its seq is greater (idempotent, monotonic).
CREATE TABLE playbacks (
    id              uuid PRIMARY KEY,
    event_id        uuid NOT NULL REFERENCES events (id),
    camera_id       uuid NOT NULL REFERENCES cameras (id),
    status          text NOT NULL DEFAULT 'PENDING'
                    CHECK (status IN ('PENDING', 'RECORDING', 'PROCESSING', 'COMPLETED', 'FAILED')),
    last_seq        bigint NOT NULL DEFAULT 0,
    last_status_at  timestamptz NOT NULL DEFAULT now(),
    worker_id       text,
    video_key       text,
    thumb_key       text,
    file_size_bytes bigint,
    duration_sec    double precision,
    codec           text,
    audio_codec     text,
    width           integer,
    height          integer,
    sha256          text,
    partial         boolean NOT NULL DEFAULT false,
    frames          bigint,
    bitrate_kbps    double precision,
    media_time_sec  double precision,
    started_at      timestamptz,
    ended_at        timestamptz,
    error_code      text,
    error_message   text,
    deleted_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT playbacks_event_id_key UNIQUE (event_id)
);
CREATE INDEX playbacks_camera_idx ON playbacks (camera_id, created_at DESC);
CREATE INDEX playbacks_unfinished_idx ON playbacks (status, last_status_at)
    WHERE status IN ('PENDING', 'RECORDING', 'PROCESSING');

-- The transactional outbox: a state change and the message announcing it are committed together;
-- the relay publishes unpublished rows with Nats-Msg-Id = msg_id.
CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    subject      text NOT NULL,
    msg_id       text NOT NULL,
    payload      bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz,
    CONSTRAINT outbox_msg_id_key UNIQUE (msg_id)
);
CREATE INDEX outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL;

-- Object keys whose deletion is queued; the sweeper deletes them through Storage and retries
-- with backoff.
CREATE TABLE object_deletions (
    key        text PRIMARY KEY,
    due_at     timestamptz NOT NULL DEFAULT now(),
    attempts   integer NOT NULL DEFAULT 0,
    last_error text
);
