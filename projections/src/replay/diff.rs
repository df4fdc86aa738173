//! `agora replay --verify`: what differs between the live read models and
//! their rebuild.

use crate::apply::quote_ident;

/// Rows that differ between the live `tables` and their copies in `schema`,
/// compared on every column but `updated_at`, as readable lines; empty when
/// they are equal. At most 100 lines per table. On the caller's connection:
/// `--verify` compares while it holds the projections' locks.
pub(crate) async fn diff_tables(
    conn: &mut sqlx::PgConnection,
    schema: &str,
    tables: &[&str],
) -> Result<Vec<String>, sqlx::Error> {
    let quoted = quote_ident(schema);
    let mut lines = Vec::new();
    for &table in tables {
        let columns: Vec<String> = sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = 'public' AND table_name = $1 AND column_name <> 'updated_at'
             ORDER BY ordinal_position",
        )
        .bind(table)
        .fetch_all(&mut *conn)
        .await?;
        let columns = columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let rows: Vec<(String, String)> = sqlx::query_as(&format!(
            "SELECT side, row FROM (
                 SELECT 'live' AS side, row_to_json(x)::text AS row FROM (
                     SELECT {columns} FROM public.{table} EXCEPT SELECT {columns} FROM {quoted}.{table}) x
                 UNION ALL
                 SELECT 'rebuilt' AS side, row_to_json(y)::text AS row FROM (
                     SELECT {columns} FROM {quoted}.{table} EXCEPT SELECT {columns} FROM public.{table}) y
             ) d ORDER BY row, side LIMIT 101"
        ))
        .fetch_all(&mut *conn)
        .await?;
        let more = rows.len() > 100;
        for (side, row) in rows.into_iter().take(100) {
            lines.push(match side.as_str() {
                "live" => format!("{table}: live row not in the rebuild: {row}"),
                _ => format!("{table}: rebuilt row not in the live table: {row}"),
            });
        }
        if more {
            lines.push(format!("{table}: ... and more differing rows"));
        }
    }
    Ok(lines)
}
