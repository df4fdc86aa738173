//! A read-model table in memory: the rows a fold sees and changes, and the
//! two ways they reach Postgres.
//!
//! A live batch loads only the rows its events touch (one query per table
//! and key column), folds the events into them, then writes back what
//! changed in one statement per table; a replay holds every row and writes
//! them all by `COPY`. Both write the same columns: the fields a row
//! serializes to, so a row type is the one description of its table.
//!
//! Every change a fold makes is journaled until the event is done with: if
//! the fold of an event fails, [`AnyTable::rollback`] puts back what it had
//! changed, so a failed event never leaves half of its effect behind.

use std::collections::{HashMap, HashSet};

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

/// A row of a read-model table.
///
/// The row's serialized fields are the table's columns (a generated column,
/// such as a search vector, is left out and computed by Postgres). Every field
/// is serialized (no `skip_serializing_if`); lists and maps are `jsonb`
/// columns, never SQL arrays, so a `COPY` line can be written from the
/// serialized value alone.
pub(crate) trait Record:
    Serialize + DeserializeOwned + Clone + Send + Sync + 'static
{
    /// The table, unqualified: a replay aims `search_path` at its shadow schema.
    const TABLE: &'static str;
    /// Its primary key column, a UUID.
    const KEY: &'static str;
    /// Its `jsonb` columns that may hold a JSON string (a sealed value):
    /// `COPY` must write those as JSON, where a text column takes the bare
    /// string, to store what `json_populate_recordset` stores.
    const JSON_STRINGS: &'static [&'static str] = &[];
    fn key(&self) -> Uuid;
}

/// The rows a live batch must load before folding: per table and key
/// column, the ids.
#[derive(Debug, Default)]
pub(crate) struct Loads {
    wanted: HashMap<(&'static str, &'static str), HashSet<Uuid>>,
    whole: HashSet<&'static str>,
}

impl Loads {
    /// The row of `R` with primary key `id`.
    pub fn key<R: Record>(&mut self, id: Uuid) {
        self.by::<R>(R::KEY, id);
    }

    /// Every row of `R`: for a small table a fold reads whole (the category
    /// tree), or a rare event that recounts from all rows.
    pub fn all<R: Record>(&mut self) {
        self.whole.insert(R::TABLE);
    }

    /// Every row of `R` whose `column` is `id` (an indexed column).
    pub fn by<R: Record>(&mut self, column: &'static str, id: Uuid) {
        self.wanted
            .entry((R::TABLE, column))
            .or_default()
            .insert(id);
    }
}

/// How a model's tables are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A live batch: the rows its events touch are loaded, and what changed
    /// is written back.
    Live,
    /// A replay: every row is in memory and written whole.
    Whole,
}

/// What a fold reads and changes: the rows of one table, by primary key.
pub(crate) struct Table<R: Record> {
    rows: HashMap<Uuid, R>,
    /// Live batches only: keys whose rows changed (written back) or went
    /// (deleted). A replay writes every row anyway.
    changed: Option<HashSet<Uuid>>,
    /// The current event's first change of each row: what `rollback` restores.
    journal: Vec<(Uuid, Option<R>)>,
}

impl<R: Record> Table<R> {
    pub fn new(mode: Mode) -> Self {
        Self {
            rows: HashMap::new(),
            changed: match mode {
                Mode::Live => Some(HashSet::new()),
                Mode::Whole => None,
            },
            journal: Vec::new(),
        }
    }

    pub fn get(&self, id: Uuid) -> Option<&R> {
        self.rows.get(&id)
    }

    /// The row to change in place.
    pub fn get_mut(&mut self, id: Uuid) -> Option<&mut R> {
        if !self.rows.contains_key(&id) {
            return None;
        }
        self.touch(id);
        self.rows.get_mut(&id)
    }

    /// Every row in memory.
    pub fn rows(&self) -> impl Iterator<Item = &R> {
        self.rows.values()
    }

    /// Deletes the row with key `id`, if there is one.
    pub fn remove(&mut self, id: Uuid) {
        if self.rows.contains_key(&id) {
            self.touch(id);
            self.rows.remove(&id);
        }
    }

    /// Adds the row, or replaces the one with its key.
    pub fn put(&mut self, row: R) {
        let id = row.key();
        self.touch(id);
        self.rows.insert(id, row);
    }

    fn touch(&mut self, id: Uuid) {
        if !self.journal.iter().any(|(journaled, _)| *journaled == id) {
            self.journal.push((id, self.rows.get(&id).cloned()));
        }
        if let Some(changed) = &mut self.changed {
            changed.insert(id);
        }
    }

    /// The columns: the fields `row` serializes to.
    fn columns(row: &R) -> Result<Vec<String>, sqlx::Error> {
        match serde_json::to_value(row).map_err(encode)? {
            Value::Object(fields) => Ok(fields.keys().cloned().collect()),
            _ => Err(encode(format!("a {} row is not a JSON object", R::TABLE))),
        }
    }
}

fn encode(error: impl ToString) -> sqlx::Error {
    sqlx::Error::Encode(error.to_string().into())
}

/// A [`Table`] of any row type, for the code that loads, writes and
/// journals a model's tables without knowing their rows.
pub(crate) trait AnyTable: Send + Sync {
    /// The current event is done with: its changes stay.
    fn commit(&mut self);
    /// The current event failed: its changes are undone.
    fn rollback(&mut self);
    /// Loads the rows `loads` names for this table (a live batch).
    fn load<'a>(
        &'a mut self,
        conn: &'a mut PgConnection,
        loads: &'a Loads,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>>;
    /// Writes back the rows that changed, and deletes those that went: one
    /// statement each (a live batch).
    fn write<'a>(
        &'a mut self,
        conn: &'a mut PgConnection,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>>;
    /// Writes every row into the (empty) table by `COPY` (a replay).
    fn copy<'a>(&'a self, conn: &'a mut PgConnection) -> BoxFuture<'a, Result<(), sqlx::Error>>;
}

impl<R: Record> AnyTable for Table<R> {
    fn commit(&mut self) {
        self.journal.clear();
    }

    fn rollback(&mut self) {
        for (id, row) in self.journal.drain(..).rev() {
            match row {
                Some(row) => self.rows.insert(id, row),
                None => self.rows.remove(&id),
            };
        }
    }

    fn load<'a>(
        &'a mut self,
        conn: &'a mut PgConnection,
        loads: &'a Loads,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            if loads.whole.contains(R::TABLE) {
                let rows: Vec<String> =
                    sqlx::query_scalar(&format!("SELECT to_json(t)::text FROM {} t", R::TABLE))
                        .fetch_all(&mut *conn)
                        .await?;
                for text in rows {
                    let row: R = serde_json::from_str(&text).map_err(|err| {
                        sqlx::Error::Decode(format!("a {} row: {err}", R::TABLE).into())
                    })?;
                    self.rows.entry(row.key()).or_insert(row);
                }
                return Ok(());
            }
            for ((table, column), ids) in &loads.wanted {
                if *table != R::TABLE || ids.is_empty() {
                    continue;
                }
                let ids: Vec<Uuid> = ids.iter().copied().collect();
                let rows: Vec<String> = sqlx::query_scalar(&format!(
                    "SELECT to_json(t)::text FROM {} t WHERE {column} = ANY($1)",
                    R::TABLE
                ))
                .bind(&ids)
                .fetch_all(&mut *conn)
                .await?;
                for text in rows {
                    let row: R = serde_json::from_str(&text).map_err(|err| {
                        sqlx::Error::Decode(format!("a {} row: {err}", R::TABLE).into())
                    })?;
                    self.rows.entry(row.key()).or_insert(row);
                }
            }
            Ok(())
        })
    }

    fn write<'a>(
        &'a mut self,
        conn: &'a mut PgConnection,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            let Some(changed) = self.changed.take() else {
                return Ok(());
            };
            let mut kept = Vec::new();
            let mut gone = Vec::new();
            for id in changed {
                match self.rows.get(&id) {
                    Some(row) => kept.push(row),
                    None => gone.push(id),
                }
            }
            if let Some(first) = kept.first() {
                let columns = Self::columns(first)?.join(", ");
                let updates = Self::columns(first)?
                    .iter()
                    .filter(|column| column.as_str() != R::KEY)
                    .map(|column| format!("{column} = EXCLUDED.{column}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let table = R::TABLE;
                let key = R::KEY;
                let sql = format!(
                    "INSERT INTO {table} ({columns})
                     SELECT {columns} FROM json_populate_recordset(NULL::{table}, $1::json)
                     ON CONFLICT ({key}) DO UPDATE SET {updates}"
                );
                let json = serde_json::to_string(&kept).map_err(encode)?;
                sqlx::query(&sql).bind(json).execute(&mut *conn).await?;
            }
            if !gone.is_empty() {
                sqlx::query(&format!(
                    "DELETE FROM {} WHERE {} = ANY($1)",
                    R::TABLE,
                    R::KEY
                ))
                .bind(&gone)
                .execute(&mut *conn)
                .await?;
            }
            self.changed = Some(HashSet::new());
            Ok(())
        })
    }

    fn copy<'a>(&'a self, conn: &'a mut PgConnection) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            let Some(first) = self.rows.values().next() else {
                return Ok(());
            };
            let columns = Self::columns(first)?;
            let mut text = CopyText::default();
            for row in self.rows.values() {
                let Value::Object(fields) = serde_json::to_value(row).map_err(encode)? else {
                    return Err(encode(format!("a {} row is not a JSON object", R::TABLE)));
                };
                for column in &columns {
                    match fields.get(column) {
                        Some(Value::String(s)) if R::JSON_STRINGS.contains(&column.as_str()) => {
                            text.value(&Value::String(Value::String(s.clone()).to_string()))
                        }
                        value => text.value(value.unwrap_or(&Value::Null)),
                    }
                }
                text.end();
            }
            text.copy_into(conn, &format!("{} ({})", R::TABLE, columns.join(", ")))
                .await
        })
    }
}

/// Rows in `COPY`'s text format: one round trip per megabyte, and the
/// cheapest way into a table Postgres has. Each value is written as the text
/// Postgres would parse from the same JSON in `json_populate_recordset`, so
/// both ways into a table store the same.
#[derive(Default)]
pub(crate) struct CopyText {
    buf: Vec<u8>,
    fresh: bool,
}

impl CopyText {
    fn field(&mut self) {
        if self.fresh {
            self.buf.push(b'\t');
        }
        self.fresh = true;
    }

    pub fn text(&mut self, text: &str) -> &mut Self {
        self.field();
        self.escaped(text);
        self
    }

    pub fn int(&mut self, value: i64) -> &mut Self {
        self.field();
        self.buf.extend_from_slice(value.to_string().as_bytes());
        self
    }

    fn value(&mut self, value: &Value) {
        self.field();
        match value {
            Value::Null => self.buf.extend_from_slice(b"\\N"),
            Value::Bool(true) => self.buf.push(b't'),
            Value::Bool(false) => self.buf.push(b'f'),
            Value::Number(number) => self.buf.extend_from_slice(number.to_string().as_bytes()),
            Value::String(text) => self.escaped(text),
            nested => self.escaped(&nested.to_string()),
        }
    }

    fn escaped(&mut self, text: &str) {
        for byte in text.bytes() {
            match byte {
                b'\\' => self.buf.extend_from_slice(b"\\\\"),
                b'\t' => self.buf.extend_from_slice(b"\\t"),
                b'\n' => self.buf.extend_from_slice(b"\\n"),
                b'\r' => self.buf.extend_from_slice(b"\\r"),
                other => self.buf.push(other),
            }
        }
    }

    pub fn end(&mut self) {
        self.buf.push(b'\n');
        self.fresh = false;
    }

    /// `COPY target FROM STDIN` of the rows so far.
    pub async fn copy_into(
        &self,
        conn: &mut PgConnection,
        target: &str,
    ) -> Result<(), sqlx::Error> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut copy = conn
            .copy_in_raw(&format!("COPY {target} FROM STDIN"))
            .await?;
        for chunk in self.buf.chunks(1 << 20) {
            if let Err(error) = copy.send(chunk).await {
                let _ = copy.abort(error.to_string()).await;
                return Err(error);
            }
        }
        copy.finish().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Row {
        id: Uuid,
        name: String,
    }

    impl Record for Row {
        const TABLE: &'static str = "rows";
        const KEY: &'static str = "id";
        fn key(&self) -> Uuid {
            self.id
        }
    }

    fn row(n: u128, name: &str) -> Row {
        Row {
            id: Uuid::from_u128(n),
            name: name.into(),
        }
    }

    #[test]
    fn a_rollback_restores_what_the_event_changed() {
        let mut table = Table::<Row>::new(Mode::Live);
        table.put(row(1, "a"));
        table.commit();
        table.get_mut(Uuid::from_u128(1)).unwrap().name = "b".into();
        table.put(row(2, "new"));
        table.rollback();
        assert_eq!(table.get(Uuid::from_u128(1)), Some(&row(1, "a")));
        assert_eq!(table.get(Uuid::from_u128(2)), None);
    }

    #[test]
    fn copy_text_escapes_and_writes_json_for_nested_values() {
        let mut text = CopyText::default();
        text.value(&json!("a\tb\\c\nd"));
        text.value(&Value::Null);
        text.value(&json!(-7));
        text.value(&json!(true));
        text.value(&json!({"k": "v\n"}));
        text.end();
        assert_eq!(
            String::from_utf8(text.buf).unwrap(),
            "a\\tb\\\\c\\nd\t\\N\t-7\tt\t{\"k\":\"v\\\\n\"}\n"
        );
    }
}
