-- A job scan's first chunk claim (Unix ms): a self-scan's duration_ms is the wall time from
-- it to the scan's last chunk commit.
ALTER TABLE job_scans ADD COLUMN started_at_ms BIGINT;
