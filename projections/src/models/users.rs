//! `rm_users`: one row per user.

use schemas::EventEnvelope;
use serde::Deserialize;
use sqlx::PgConnection;

use super::{aggregate_uuid, bump_version, change, decode, event_time, expect_row};
use crate::changes::Change;
use crate::error::ProjectionError;

const MODEL: &str = "users";

#[derive(Deserialize)]
struct Registered {
    email: String,
    name: String,
}

#[derive(Deserialize)]
struct NameChanged {
    name: String,
}

#[derive(Deserialize)]
struct EmailChanged {
    email: String,
}

pub(crate) async fn apply(
    conn: &mut PgConnection,
    event: &EventEnvelope,
) -> Result<Vec<Change>, ProjectionError> {
    if event.aggregate_type != "user" {
        return Ok(Vec::new());
    }
    let id = aggregate_uuid(event)?;
    let time = event_time(event);
    let version = event.sequence;
    let rows = match event.event_type.as_str() {
        "UserRegistered" => {
            let e: Registered = decode(event)?;
            sqlx::query(
                "INSERT INTO rm_users (id, email, email_lower, name, status, version, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, 'active', $5, $6, $6)
                 ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email, email_lower = EXCLUDED.email_lower,
                     name = EXCLUDED.name, status = EXCLUDED.status, version = EXCLUDED.version,
                     created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at",
            )
            .bind(id)
            .bind(&e.email)
            .bind(e.email.to_lowercase())
            .bind(&e.name)
            .bind(version)
            .bind(time)
            .execute(&mut *conn)
            .await?
            .rows_affected()
        }
        "UserNameChanged" => {
            let e: NameChanged = decode(event)?;
            sqlx::query("UPDATE rm_users SET name = $2, version = $3, updated_at = $4 WHERE id = $1")
                .bind(id)
                .bind(&e.name)
                .bind(version)
                .bind(time)
                .execute(&mut *conn)
                .await?
                .rows_affected()
        }
        "UserEmailChanged" => {
            let e: EmailChanged = decode(event)?;
            sqlx::query(
                "UPDATE rm_users SET email = $2, email_lower = $3, version = $4, updated_at = $5 WHERE id = $1",
            )
            .bind(id)
            .bind(&e.email)
            .bind(e.email.to_lowercase())
            .bind(version)
            .bind(time)
            .execute(&mut *conn)
            .await?
            .rows_affected()
        }
        "UserDeactivated" => sqlx::query(
            "UPDATE rm_users SET status = 'deactivated', version = $2, updated_at = $3 WHERE id = $1",
        )
        .bind(id)
        .bind(version)
        .bind(time)
        .execute(&mut *conn)
        .await?
        .rows_affected(),
        _ => return bump_version(conn, "rm_users", MODEL, event).await,
    };
    expect_row(rows, "rm_users", event)?;
    Ok(vec![change(MODEL, id, version)])
}

// The replay's fold: the same changes as `apply`, made to rows in memory, and
// written in bulk into a shadow table. Kept beside the SQL above so the two
// change together; `fold_equals_the_live_path` (projections' tests) holds
// them to the same result.

/// An `rm_users` row in memory (`email_lower` is derived when written).
#[derive(Debug, Clone)]
pub(crate) struct Row {
    email: String,
    name: String,
    status: &'static str,
    version: i64,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
}

pub(crate) type Rows = std::collections::HashMap<uuid::Uuid, Row>;

/// Applies `event` to `rows`; on `Err` nothing changed.
pub(crate) fn fold(rows: &mut Rows, event: &EventEnvelope) -> Result<(), ProjectionError> {
    let id = aggregate_uuid(event)?;
    let time = event_time(event);
    let version = event.sequence;
    let row = |rows| super::fold_row(rows, id, "rm_users", event);
    match event.event_type.as_str() {
        "UserRegistered" => {
            let e: Registered = decode(event)?;
            rows.insert(
                id,
                Row {
                    email: e.email,
                    name: e.name,
                    status: "active",
                    version,
                    created_at: time,
                    updated_at: time,
                },
            );
        }
        "UserNameChanged" => {
            let e: NameChanged = decode(event)?;
            let row = row(rows)?;
            row.name = e.name;
            row.version = version;
            row.updated_at = time;
        }
        "UserEmailChanged" => {
            let e: EmailChanged = decode(event)?;
            let row = row(rows)?;
            row.email = e.email;
            row.version = version;
            row.updated_at = time;
        }
        "UserDeactivated" => {
            let row = row(rows)?;
            row.status = "deactivated";
            row.version = version;
            row.updated_at = time;
        }
        _ => super::fold_bump_version(rows.get_mut(&id).map(|r| &mut r.version), event),
    }
    Ok(())
}

/// Writes `rows` into `rm_users` (of the connection's `search_path`).
pub(crate) async fn write(conn: &mut PgConnection, rows: &Rows) -> Result<(), sqlx::Error> {
    let mut copy = super::CopyText::default();
    for (id, r) in rows {
        copy.uuid(*id)
            .text(&r.email)
            .text(&r.email.to_lowercase())
            .text(&r.name)
            .text(r.status)
            .int(r.version)
            .time(r.created_at)
            .time(r.updated_at)
            .end();
    }
    copy.copy_into(
        conn,
        "rm_users (id, email, email_lower, name, status, version, created_at, updated_at)",
    )
    .await
}
