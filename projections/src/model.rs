//! A read model: its tables and the one function that changes them.
//!
//! [`Model::fold`] is each model's only implementation of what an event
//! does to its rows. Live batches and `agora replay` both call it; they
//! differ only in which rows are in memory ([`Mode`]) and how they reach
//! Postgres, which [`crate::table`] does for every model alike.

use futures::future::BoxFuture;
use schemas::Recorded;
use sqlx::PgConnection;

use crate::changes::Change;
use crate::error::ProjectionError;
use crate::table::{AnyTable, Loads, Mode};

pub(crate) trait Model: Send + Sync + 'static {
    /// Empty tables of the given mode.
    fn new(mode: Mode) -> Self;

    /// Its tables, for loading, writing back and undoing a failed event.
    fn tables(&mut self) -> Vec<&mut dyn AnyTable>;

    /// The rows `event` reads or changes, so a live batch can load them all
    /// in one query per table before folding. A replay holds every row.
    fn touches(event: &Recorded, loads: &mut Loads);

    /// What `event` does to the rows, and which rows to announce as changed.
    /// On `Err` the caller undoes whatever it changed.
    fn fold(&mut self, event: &Recorded) -> Result<Vec<Change>, ProjectionError>;
}

/// A [`Model`] of any type, so a projection can be handled without naming
/// its model's type.
pub(crate) trait AnyModel: Send + Sync {
    fn touches(&self, event: &Recorded, loads: &mut Loads);
    /// Folds one event; on `Err`, nothing of it stays.
    fn fold(&mut self, event: &Recorded) -> Result<Vec<Change>, ProjectionError>;
    fn load<'a>(
        &'a mut self,
        conn: &'a mut PgConnection,
        loads: &'a Loads,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>>;
    fn write<'a>(
        &'a mut self,
        conn: &'a mut PgConnection,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>>;
    /// Its tables, to write by `COPY` one connection each.
    fn tables(&mut self) -> Vec<&mut dyn AnyTable>;
}

impl<M: Model> AnyModel for M {
    fn touches(&self, event: &Recorded, loads: &mut Loads) {
        M::touches(event, loads);
    }

    fn fold(&mut self, event: &Recorded) -> Result<Vec<Change>, ProjectionError> {
        let folded = Model::fold(self, event);
        for table in Model::tables(self) {
            if folded.is_ok() {
                table.commit();
            } else {
                table.rollback();
            }
        }
        folded
    }

    fn load<'a>(
        &'a mut self,
        conn: &'a mut PgConnection,
        loads: &'a Loads,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            for table in Model::tables(self) {
                table.load(&mut *conn, loads).await?;
            }
            Ok(())
        })
    }

    fn write<'a>(
        &'a mut self,
        conn: &'a mut PgConnection,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            for table in Model::tables(self) {
                table.write(&mut *conn).await?;
            }
            Ok(())
        })
    }

    fn tables(&mut self) -> Vec<&mut dyn AnyTable> {
        Model::tables(self)
    }
}
