-- 0008: least-privilege login roles for the services. The role that runs the migrations (the
-- owner: the RDS master user in AWS) keeps the schema; the router and training log in as:
--
--   manyheads_router    writes predictions, feedback and embedding centroids, reads what it
--                       serves and reports from, reads API keys and tenants, creates the daily
--                       partitions through ensure_prediction_partitions()
--   manyheads_training  reads; never writes, and never reads the API key hashes
--
-- No password here: the deployment sets them from its secrets (terraform/modules/migrations).
-- Roles belong to the whole server, so they may exist already (another database of the server).
-- An owner that may not create roles (a plain database user) skips this migration with a notice:
-- the services then keep logging in as the owner, as before. A later migration that adds a table
-- the router writes or reads must GRANT it to manyheads_router; training reads new tables
-- through the default privileges below.

DO $$
DECLARE
    may_create boolean := (SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user);
    statement text;
BEGIN
    IF NOT may_create AND (SELECT count(*) FROM pg_roles
                           WHERE rolname IN ('manyheads_router', 'manyheads_training')) < 2 THEN
        RAISE NOTICE 'manyheads: % may not create roles; the services keep using it', current_user;
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'manyheads_router') THEN
        CREATE ROLE manyheads_router LOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'manyheads_training') THEN
        CREATE ROLE manyheads_training LOGIN;
    END IF;
    FOREACH statement IN ARRAY ARRAY[
        format('GRANT CONNECT ON DATABASE %I TO manyheads_router, manyheads_training', current_database()),
        'GRANT USAGE ON SCHEMA public TO manyheads_router, manyheads_training',
        -- The router.
        'GRANT SELECT, INSERT ON predictions, embedding_centroids TO manyheads_router',
        'GRANT SELECT, INSERT, UPDATE ON feedback TO manyheads_router',  -- feedback is an upsert
        'GRANT SELECT ON api_keys, tenants, answered_predictions TO manyheads_router',
        'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO manyheads_router',
        'ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO manyheads_router',
        -- Creating a partition takes the owner's rights: the function runs as its owner, with a
        -- fixed search_path (pg_temp last, so a caller's temporary table cannot stand in).
        'ALTER FUNCTION ensure_prediction_partitions(integer, integer) SECURITY DEFINER SET search_path = public, pg_temp',
        'REVOKE EXECUTE ON FUNCTION ensure_prediction_partitions(integer, integer) FROM PUBLIC',
        'GRANT EXECUTE ON FUNCTION ensure_prediction_partitions(integer, integer) TO manyheads_router',
        'REVOKE EXECUTE ON FUNCTION drop_prediction_partitions(integer) FROM PUBLIC',
        -- Training: read everything, now and later, except the key hashes.
        'GRANT SELECT ON ALL TABLES IN SCHEMA public TO manyheads_training',
        'ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO manyheads_training',
        'REVOKE SELECT ON api_keys FROM manyheads_training'
    ] LOOP
        EXECUTE statement;
    END LOOP;
END
$$;
