//! One module per read model: its rows, and its fold, the one function that
//! says what each event does to them (see [`crate::model::Model`]).

pub(crate) mod carts;
pub(crate) mod categories;
pub(crate) mod notifications;
pub(crate) mod orders;
pub(crate) mod payments;
pub(crate) mod products;
pub(crate) mod users;

use schemas::Recorded;

use crate::changes::Change;
use crate::error::ProjectionError;
use crate::table::{Record, Table};

/// A row that counts the events of its aggregate it reflects (`version`).
pub(crate) trait Versioned: Record {
    fn version(&mut self) -> &mut i64;
}

/// An event of a type this build does not know (a newer build wrote it):
/// its only effect is that the row reflects one more event of its stream.
pub(crate) fn newer<R: Versioned>(
    table: &mut Table<R>,
    model: &str,
    event: &Recorded,
) -> Vec<Change> {
    match table.get_mut(event.id) {
        Some(row) => {
            let version = row.version();
            *version = (*version).max(event.sequence);
            vec![change(model, event.id, event.sequence)]
        }
        None => Vec::new(),
    }
}

pub(crate) fn change(model: &str, id: impl ToString, version: i64) -> Change {
    Change {
        model: model.to_owned(),
        id: id.to_string(),
        version,
        stock_only: false,
    }
}

/// An update that found no row: the event that creates it was never applied
/// (it was dead-lettered), so this one cannot apply either.
pub(crate) fn no_row(table: &str, event: &Recorded) -> ProjectionError {
    ProjectionError::Poison(format!(
        "{} (sequence {}) found no {table} row for {}",
        event.event_type, event.sequence, event.aggregate_id
    ))
}

/// A sum out of the column's range: the event can never apply.
pub(crate) fn out_of_range(event: &Recorded) -> ProjectionError {
    ProjectionError::Poison(format!(
        "{} (sequence {}) of {}: a number out of range",
        event.event_type, event.sequence, event.aggregate_id
    ))
}
