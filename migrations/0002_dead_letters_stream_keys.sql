-- Outbox rows that can never be published (larger than NATS's max_payload, refused by the
-- stream) are set aside with their reason instead of blocking every row behind them.
ALTER TABLE outbox ADD COLUMN dead_at timestamptz, ADD COLUMN dead_reason text;
DROP INDEX outbox_unpublished_idx;
CREATE INDEX outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL AND dead_at IS NULL;

-- A camera is unique by the stream it serves: host, port and path (with query) of its RTSP URL,
-- not by (ip_address, channel): several cameras may sit behind one address on different ports or
-- paths. event-api computes the key (RtspUrl::stream_key); rows written before this migration get
-- the same form computed here from the stored URL (the oldest of any duplicates keeps it).
ALTER TABLE cameras ADD COLUMN stream_key text;
WITH parts AS (
    SELECT id, created_at, rtsp_port,
           split_part(regexp_replace(rtsp_url, '^[A-Za-z]+://', ''), '/', 1) AS authority,
           regexp_replace(rtsp_url, '^[A-Za-z]+://[^/]*', '') AS path
    FROM cameras),
keys AS (
    SELECT id, created_at,
           lower(CASE WHEN authority ~ ':[0-9]+$' THEN authority
                      ELSE authority || ':' || rtsp_port END) || path AS key
    FROM parts),
ranked AS (
    SELECT id, key, row_number() OVER (PARTITION BY key ORDER BY created_at, id) AS n FROM keys)
UPDATE cameras c SET stream_key = ranked.key FROM ranked WHERE ranked.id = c.id AND ranked.n = 1;
ALTER TABLE cameras DROP CONSTRAINT cameras_ip_address_channel_key;
CREATE UNIQUE INDEX cameras_stream_key_key ON cameras (stream_key);
