-- 0006: tenants and API keys.
--
-- A key is "mh_<key_id>_<secret>": key_id is public (it names the key in listings and logs),
-- the secret is 32 random bytes shown once at creation. Only sha256(salt || secret) is stored.
-- Keys are high-entropy random tokens, not passwords, so one salted SHA-256 is enough and keeps
-- every request fast; comparisons are constant-time. Changes are announced on the channel
-- api_keys (NOTIFY), so running routers drop a revoked key at once.

CREATE TABLE tenants (
    name       text        PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    rate_rps   real        CHECK (rate_rps IS NULL OR rate_rps > 0),
    burst      integer     CHECK (burst IS NULL OR burst > 0),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    key_id      text        PRIMARY KEY CHECK (key_id ~ '^[a-f0-9]{12}$'),
    tenant      text        REFERENCES tenants (name),
    role        text        NOT NULL CHECK (role IN ('tenant', 'operator')),
    salt        bytea       NOT NULL,
    secret_hash bytea       NOT NULL,
    description text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    CHECK ((role = 'tenant') = (tenant IS NOT NULL))
);

COMMENT ON TABLE tenants IS 'Customers or teams. Each owns its models (a model name is unique within a tenant) and its predictions. rate_rps / burst override the router''s default per-tenant rate limit.';
COMMENT ON TABLE api_keys IS 'API keys: a tenant key reaches only its tenant''s models and data; an operator key (tenant NULL) may change what serves, for any tenant. Only a salted hash of the secret is stored; revoked_at set means refused.';

CREATE FUNCTION notify_api_keys() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('api_keys', TG_TABLE_NAME);
    RETURN NULL;
END;
$$;

CREATE TRIGGER api_keys_changed AFTER INSERT OR UPDATE OR DELETE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION notify_api_keys();
CREATE TRIGGER tenants_changed AFTER INSERT OR UPDATE OR DELETE ON tenants
    FOR EACH STATEMENT EXECUTE FUNCTION notify_api_keys();
