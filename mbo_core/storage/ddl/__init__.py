"""ClickHouse schema: versioned migrations applied in order by
mbo_core.storage.clickhouse.apply_schema.

`NNNN_name.sql` files run in version order, each once per database, recorded in
`schema_migrations` (its own DDL is `schema_migrations.sql`). To change the schema add a new file
with the next number; never edit an applied one (apply_schema refuses a changed checksum).
Rules for a file: statements end with `;` at the end of a line; every statement is idempotent
(`IF NOT EXISTS`, `ADD COLUMN IF NOT EXISTS`, ...) because two stages starting together may apply
the same migration; table names are unqualified (the connection's database is used).
"""
