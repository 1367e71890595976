import { type Kysely, sql } from 'kysely';

/**
 * The `table.column` names of every column, in every table of the database, that holds `needle`:
 * text, JSON, arrays and bytes are all searched. Used to show that a server stores only
 * ciphertext of an encrypted room (each plaintext carries a marker found nowhere else).
 */
export async function columnsHolding(
  // biome-ignore lint/suspicious/noExplicitAny: any schema
  db: Kysely<any>,
  needle: string,
): Promise<{ searched: number; found: string[] }> {
  const columns = await sql<{ schema: string; table: string; column: string; type: string }>`
    select c.table_schema as schema, c.table_name as table, c.column_name as column,
           c.data_type as type
    from information_schema.columns c
    join information_schema.tables tb
      on tb.table_schema = c.table_schema and tb.table_name = c.table_name
    where tb.table_type = 'BASE TABLE'
      and c.table_schema not in ('pg_catalog', 'information_schema')
      and c.data_type in ('text', 'character varying', 'character', 'json', 'jsonb', 'bytea',
                          'ARRAY', 'USER-DEFINED', 'xml')`.execute(db);
  const found: string[] = [];
  for (const c of columns.rows) {
    const column = sql.ref(`${c.schema}.${c.table}.${c.column}`);
    const match =
      c.type === 'bytea'
        ? sql`position(convert_to(${needle}, 'UTF8') in ${column}) > 0`
        : sql`${column}::text like ${`%${needle}%`}`;
    const res = await sql<{ n: number }>`
      select count(*)::int as n from ${sql.table(`${c.schema}.${c.table}`)} where ${match}`.execute(db);
    if ((res.rows[0]?.n ?? 0) > 0) found.push(`${c.table}.${c.column}`);
  }
  return { searched: columns.rows.length, found };
}
