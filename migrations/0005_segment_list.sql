-- Live view (issue 17): a completed playback names the closed HLS playlist of its segments
-- (playbacks/<id>/index.m3u8) when its worker uploaded one; NULL for clips recorded before.
ALTER TABLE playbacks ADD COLUMN segment_list_key text;
