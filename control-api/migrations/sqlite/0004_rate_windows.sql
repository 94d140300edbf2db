-- Rate-limit windows shared by every API node (issue 8). Used when the store is PostgreSQL
-- (several nodes); the embedded SQLite default keeps its windows in memory, but has the
-- table so both backends have one schema. 0003 is the job queue's.
-- One fixed window per limiter and key: its start (Unix seconds) and requests counted.
CREATE TABLE rate_windows (
    limiter TEXT NOT NULL,
    key     TEXT NOT NULL,
    start   BIGINT NOT NULL,
    count   BIGINT NOT NULL,
    allowed BIGINT NOT NULL,
    PRIMARY KEY (limiter, key)
);
CREATE INDEX rate_windows_by_start ON rate_windows (limiter, start);
