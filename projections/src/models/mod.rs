//! One module per read model: how each event of its aggregate changes its
//! rows. Every statement names its tables unqualified, so a rebuild can point
//! `search_path` at another schema and reuse them unchanged.

pub(crate) mod notifications;
pub(crate) mod orders;
pub(crate) mod payments;
pub(crate) mod products;
pub(crate) mod users;

use chrono::{DateTime, Utc};
use schemas::EventEnvelope;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use uuid::Uuid;

use crate::changes::Change;
use crate::error::ProjectionError;

/// `{"amount": 1999, "currency": "EUR"}`, as the domain writes it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Money {
    pub amount: i64,
    pub currency: String,
}

/// When the event happened: its metadata's `time` (RFC 3339), else when it
/// was recorded. Both come from the stored row, so a rebuild finds the same.
pub(crate) fn event_time(event: &EventEnvelope) -> DateTime<Utc> {
    event
        .metadata
        .get("time")
        .and_then(serde_json::Value::as_str)
        .and_then(|time| DateTime::parse_from_rfc3339(time).ok())
        .map_or(event.recorded_at, |time| time.with_timezone(&Utc))
}

/// The event's fields as `T`; a payload of another shape is poison.
pub(crate) fn decode<T: DeserializeOwned>(event: &EventEnvelope) -> Result<T, ProjectionError> {
    T::deserialize(event.data()).map_err(|err| {
        ProjectionError::Poison(format!(
            "cannot decode {} of {} {} (sequence {}): {err}",
            event.event_type, event.aggregate_type, event.aggregate_id, event.sequence
        ))
    })
}

/// The aggregate's id, which is the read-model row's id.
pub(crate) fn aggregate_uuid(event: &EventEnvelope) -> Result<Uuid, ProjectionError> {
    Uuid::parse_str(&event.aggregate_id).map_err(|err| {
        ProjectionError::Poison(format!(
            "aggregate id {:?} of {} is not a UUID: {err}",
            event.aggregate_id, event.aggregate_type
        ))
    })
}

pub(crate) fn change(model: &str, id: impl ToString, version: i64) -> Change {
    Change {
        model: model.to_owned(),
        id: id.to_string(),
        version,
    }
}

/// An update that found no row: the event that creates it was never applied
/// (it was dead-lettered), so this one cannot apply either.
pub(crate) fn expect_row(
    rows: u64,
    table: &str,
    event: &EventEnvelope,
) -> Result<(), ProjectionError> {
    if rows == 0 {
        return Err(ProjectionError::Poison(format!(
            "{} (sequence {}) found no {table} row for {}",
            event.event_type, event.sequence, event.aggregate_id
        )));
    }
    Ok(())
}

/// An event type this model does not know (a newer one): its only effect is
/// that the row now reflects one more event of the stream.
pub(crate) async fn bump_version(
    conn: &mut sqlx::PgConnection,
    table: &'static str,
    model: &str,
    event: &EventEnvelope,
) -> Result<Vec<Change>, ProjectionError> {
    let id = aggregate_uuid(event)?;
    let rows = sqlx::query(&format!(
        "UPDATE {table} SET version = $2 WHERE id = $1 AND version < $2"
    ))
    .bind(id)
    .bind(event.sequence)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(if rows == 0 {
        Vec::new()
    } else {
        vec![change(model, id, event.sequence)]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn envelope(metadata: serde_json::Value) -> EventEnvelope {
        EventEnvelope {
            aggregate_type: "user".into(),
            aggregate_id: Uuid::nil().to_string(),
            sequence: 1,
            event_type: "UserDeactivated".into(),
            event_version: "1.0".into(),
            payload: json!({"UserDeactivated": {}}),
            metadata,
            position: 1,
            recorded_at: DateTime::parse_from_rfc3339("2024-01-02T03:04:05Z")
                .unwrap()
                .with_timezone(&Utc),
        }
    }

    #[test]
    fn time_comes_from_metadata_else_recorded_at() {
        let event = envelope(json!({"time": "2023-05-06T07:08:09.123456Z"}));
        assert_eq!(
            event_time(&event).to_rfc3339(),
            "2023-05-06T07:08:09.123456+00:00"
        );
        let event = envelope(json!({"time": "yesterday"}));
        assert_eq!(event_time(&event), event.recorded_at);
        let event = envelope(json!({}));
        assert_eq!(event_time(&event), event.recorded_at);
    }
}

/// A replay's fold found no row for an update: the same failure as
/// [`expect_row`] reports on the live path.
pub(crate) fn no_row(table: &str, event: &EventEnvelope) -> ProjectionError {
    ProjectionError::Poison(format!(
        "{} (sequence {}) found no {table} row for {}",
        event.event_type, event.sequence, event.aggregate_id
    ))
}

/// [`bump_version`] for a replay's fold.
pub(crate) fn fold_bump_version(version: Option<&mut i64>, event: &EventEnvelope) {
    if let Some(version) = version {
        if *version < event.sequence {
            *version = event.sequence;
        }
    }
}

/// The row an update of a replay's fold changes, or the failure
/// [`expect_row`] reports when there is none.
pub(crate) fn fold_row<'a, R>(
    rows: &'a mut std::collections::HashMap<Uuid, R>,
    id: Uuid,
    table: &str,
    event: &EventEnvelope,
) -> Result<&'a mut R, ProjectionError> {
    rows.get_mut(&id).ok_or_else(|| no_row(table, event))
}

/// Rows in `COPY`'s text format, for a replay's bulk writes: one round trip
/// per megabyte, and the cheapest way into a table Postgres has. Values are
/// written as sqlx would bind them (timestamps to the microsecond, truncated).
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

    pub fn text(&mut self, value: &str) -> &mut Self {
        self.field();
        for byte in value.bytes() {
            match byte {
                b'\\' => self.buf.extend_from_slice(b"\\\\"),
                b'\t' => self.buf.extend_from_slice(b"\\t"),
                b'\n' => self.buf.extend_from_slice(b"\\n"),
                b'\r' => self.buf.extend_from_slice(b"\\r"),
                other => self.buf.push(other),
            }
        }
        self
    }

    pub fn opt_text(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            Some(value) => self.text(value),
            None => self.null(),
        }
    }

    pub fn null(&mut self) -> &mut Self {
        self.field();
        self.buf.extend_from_slice(b"\\N");
        self
    }

    pub fn int(&mut self, value: i64) -> &mut Self {
        self.field();
        self.buf.extend_from_slice(value.to_string().as_bytes());
        self
    }

    pub fn uuid(&mut self, value: Uuid) -> &mut Self {
        self.field();
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        self.buf
            .extend_from_slice(value.hyphenated().encode_lower(&mut text).as_bytes());
        self
    }

    pub fn opt_uuid(&mut self, value: Option<Uuid>) -> &mut Self {
        match value {
            Some(value) => self.uuid(value),
            None => self.null(),
        }
    }

    pub fn time(&mut self, value: DateTime<Utc>) -> &mut Self {
        self.field();
        use std::io::Write;
        let _ = write!(self.buf, "{}", value.format("%Y-%m-%d %H:%M:%S%.6f+00"));
        self
    }

    pub fn json(&mut self, value: &serde_json::Value) -> &mut Self {
        self.text(&value.to_string())
    }

    pub fn end(&mut self) {
        self.buf.push(b'\n');
        self.fresh = false;
    }

    /// `COPY target FROM STDIN` of the rows so far.
    pub async fn copy_into(
        &self,
        conn: &mut sqlx::PgConnection,
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
mod copy_tests {
    use super::*;

    #[test]
    fn copy_text_escapes_and_formats() {
        let mut rows = CopyText::default();
        rows.text("a\tb\\c\nd")
            .null()
            .int(-7)
            .uuid(Uuid::nil())
            .time(
                DateTime::parse_from_rfc3339("2024-01-02T03:04:05.123456789Z")
                    .unwrap()
                    .with_timezone(&Utc),
            )
            .json(&serde_json::json!({"k": "v\n"}))
            .end();
        assert_eq!(
            String::from_utf8(rows.buf).unwrap(),
            "a\\tb\\\\c\\nd\t\\N\t-7\t00000000-0000-0000-0000-000000000000\t2024-01-02 03:04:05.123456+00\t{\"k\":\"v\\\\n\"}\n"
        );
    }
}
