-- Scans as durable chunk jobs (issue 8): any worker node claims a chunk from the queue
-- (apalis, in its own `Jobs`/`Workers` tables), runs it on its engine and commits the
-- chunk's results and its completion in one transaction. Portable SQL, kept identical to
-- migrations/postgres/0003_jobs.sql. Times in Unix milliseconds. Statuses and reasons are
-- enums of the jobs module, stored as text.
CREATE TABLE job_scans (
    id            TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,
    status        TEXT NOT NULL,
    fail_reason   TEXT,
    chunks_total  BIGINT NOT NULL,
    chunks_done   BIGINT NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL,
    finished_at_ms BIGINT
);
CREATE INDEX job_scans_by_status ON job_scans (status);

-- One row per chunk: what to scan, who ran it and how often.
-- `runs`: times a worker started it; `first_node`: the first node that did; `node`: the
-- node whose results were committed. Closed ports are counted (`closed`), not stored.
CREATE TABLE scan_chunks (
    scan_id    TEXT NOT NULL REFERENCES job_scans (id) ON DELETE CASCADE,
    chunk      BIGINT NOT NULL,
    targets    TEXT NOT NULL,
    ports      TEXT NOT NULL,
    probes     BIGINT NOT NULL,
    status     TEXT NOT NULL,
    job_id     TEXT,
    runs       BIGINT NOT NULL DEFAULT 0,
    first_node TEXT,
    node       TEXT,
    closed     BIGINT,
    sent       BIGINT,
    done_at_ms BIGINT,
    PRIMARY KEY (scan_id, chunk)
);

-- Open and filtered ports of a job scan, one row per (scan, address, port): a re-run chunk
-- upserts the same keys, so it can neither duplicate nor lose a pair.
CREATE TABLE port_results (
    scan_id   TEXT NOT NULL REFERENCES job_scans (id) ON DELETE CASCADE,
    address   TEXT NOT NULL,
    port      INTEGER NOT NULL,
    state     TEXT NOT NULL,
    reason    TEXT NOT NULL,
    ttl       SMALLINT,
    icmp_type SMALLINT,
    icmp_code SMALLINT,
    chunk     BIGINT NOT NULL,
    PRIMARY KEY (scan_id, address, port)
);
