//! `rm_users`: one row per user.

use chrono::{DateTime, Utc};
use schemas::events::{Event, UserEvent};
use schemas::Recorded;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{change, newer, no_row, Versioned};
use crate::changes::Change;
use crate::error::ProjectionError;
use crate::model::Model;
use crate::table::{AnyTable, Loads, Mode, Record, Table};

pub(crate) const MODEL: &str = "users";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct UserRow {
    pub id: Uuid,
    /// Sealed (`schemas::sealed`) as the event holds it; `None` once erased.
    pub email: Option<String>,
    /// Sealed too; `None` once erased.
    pub name: Option<String>,
    pub status: String,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Versioned for UserRow {
    fn version(&mut self) -> &mut i64 {
        &mut self.version
    }
}

impl Record for UserRow {
    const TABLE: &'static str = "rm_users";
    const KEY: &'static str = "id";
    fn key(&self) -> Uuid {
        self.id
    }
}

pub(crate) struct Users {
    users: Table<UserRow>,
}

impl Model for Users {
    fn new(mode: Mode) -> Self {
        Self {
            users: Table::new(mode),
        }
    }

    fn tables(&mut self) -> Vec<&mut dyn AnyTable> {
        vec![&mut self.users]
    }

    fn touches(event: &Recorded, loads: &mut Loads) {
        loads.key::<UserRow>(event.id);
    }

    fn fold(&mut self, event: &Recorded) -> Result<Vec<Change>, ProjectionError> {
        match &event.event {
            Event::User(UserEvent::UserRegistered { email, name }) => self.users.put(UserRow {
                id: event.id,
                email: Some(email.clone()),
                name: Some(name.clone()),
                status: "active".into(),
                version: event.sequence,
                created_at: event.time,
                updated_at: event.time,
            }),
            Event::User(UserEvent::UserNameChanged { name }) => {
                self.update(event)?.name = Some(name.clone());
            }
            Event::User(UserEvent::UserEmailChanged { email }) => {
                self.update(event)?.email = Some(email.clone());
            }
            Event::User(UserEvent::UserDeactivated {}) => {
                self.update(event)?.status = "deactivated".into();
            }
            Event::User(UserEvent::UserErased {}) => {
                let row = self.update(event)?;
                row.status = "erased".into();
                row.email = None;
                row.name = None;
            }
            _ => return Ok(newer(&mut self.users, MODEL, event)),
        }
        Ok(vec![change(MODEL, event.id, event.sequence)])
    }
}

impl Users {
    /// The row an event of its stream changes, at the event's version.
    fn update(&mut self, event: &Recorded) -> Result<&mut UserRow, ProjectionError> {
        let row = self
            .users
            .get_mut(event.id)
            .ok_or_else(|| no_row(UserRow::TABLE, event))?;
        row.version = event.sequence;
        row.updated_at = event.time;
        Ok(row)
    }
}
