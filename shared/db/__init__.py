"""The database layer: the connection pool, named queries, schema migrations, the private server."""
