"""The inference database: schema and migrations, the prediction log writer and its spool, the
API key store, feedback and the monitoring report queries. Both the router (api/) and the
training CLI (heads/) use it; it imports neither."""
