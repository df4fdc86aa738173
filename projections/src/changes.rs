//! A read-model row changed: announced on core NATS after the change commits,
//! so every API process can drop its cached copy and wake requests waiting for
//! that version (`?min_version=`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// `users`, `products`, `orders`, `payments` or `notifications`.
    pub model: String,
    /// The row's id (for notifications, the user's id).
    pub id: String,
    /// The row's version after the change (for notifications, 0).
    pub version: i64,
}
