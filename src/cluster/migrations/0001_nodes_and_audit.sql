-- weerwal schema 1: the nodes of the cluster and the copy of every node's
-- audit records. The local hash-chained JSONL stays the evidence; a row
-- holds the line exactly as written, so `logs verify --witness` can compare.
CREATE TABLE weerwal_nodes (
    node           text PRIMARY KEY,
    version        text NOT NULL,
    policy_digest  text NOT NULL DEFAULT '',
    started_at     timestamptz NOT NULL DEFAULT now(),
    heartbeat_at   timestamptz NOT NULL DEFAULT now(),
    degraded       boolean NOT NULL DEFAULT false
);

CREATE TABLE audit_records (
    node        text   NOT NULL,
    seq         bigint NOT NULL,
    ts          text   NOT NULL,   -- RFC 3339 UTC with milliseconds: sorts as text
    event       text   NOT NULL,
    hash        text   NOT NULL,
    line        text   NOT NULL,
    shipped_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (node, seq)
);
CREATE INDEX audit_records_ts ON audit_records (ts, node, seq);
