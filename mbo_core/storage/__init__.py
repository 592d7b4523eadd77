"""ClickHouse storage: the client and versioned DDL (clickhouse, ddl/) and the SQL that the
sink and the API share (queries)."""
