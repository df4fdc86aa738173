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

/// Announces committed changes on core NATS, one per row at its latest
/// version. Fire and forget: a lost announcement only delays a waiting
/// reader until its own timeout or the next change.
pub async fn announce(nats: &async_nats::Client, prefix: &str, changes: Vec<Change>) {
    let mut latest: std::collections::HashMap<(String, String), i64> = Default::default();
    let mut order = Vec::new();
    for change in changes {
        let key = (change.model, change.id);
        match latest.get_mut(&key) {
            Some(version) => *version = (*version).max(change.version),
            None => {
                order.push(key.clone());
                latest.insert(key, change.version);
            }
        }
    }
    for key in order {
        let version = latest[&key];
        let subject = schemas::subjects::change(prefix, &key.0, &key.1);
        if let Err(error) = nats
            .publish(subject.clone(), version.to_string().into())
            .await
        {
            tracing::warn!(%subject, %error, "cannot announce a change");
        }
    }
}
