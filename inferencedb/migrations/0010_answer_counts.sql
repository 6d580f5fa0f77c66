-- 0010: answers counted per minute by the router, for the drift monitor (inferencedb/answer_counts.py).
-- The monitor compared each version's label and confidence distributions over the last hour by
-- scanning that hour of predictions every 5 minutes, a cost that grew with the traffic; it now sums
-- these rows, a few per version, label and bucket a minute, whatever the traffic.
CREATE TABLE answer_counts (
    bucket_start      timestamptz NOT NULL,
    tenant            text        NOT NULL,
    model             text        NOT NULL,
    version           text        NOT NULL,
    role              text        NOT NULL,
    label             text,
    confidence_bucket smallint,
    n                 bigint      NOT NULL
);

CREATE INDEX answer_counts_time ON answer_counts USING brin (bucket_start);

COMMENT ON TABLE answer_counts IS 'Per minute and router worker: how many answers (status ok) a model version gave in a role, per label and confidence bucket (floor(probability * 10), 1.0 in bucket 9; NULL without a probability). Sums over a window give the label distribution and the confidence histogram that drift compares with the training baseline.';

-- The router writes and reads it (see 0008); training reads every table by default privileges.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'manyheads_router') THEN
        GRANT SELECT, INSERT ON answer_counts TO manyheads_router;
    END IF;
END
$$;
