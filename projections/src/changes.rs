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
    /// Only a product's stock moved (a reservation, a release, an
    /// adjustment): what a search matches and how it orders does not depend
    /// on it unless it filters on stock, so search caches keep the rest.
    /// Sent as the `Agora-Change: stock` header.
    #[serde(default)]
    pub stock_only: bool,
}

/// Announces committed changes on core NATS, one per row at its latest
/// version. Fire and forget: a lost announcement only delays a waiting
/// reader until its own timeout or the next change.
pub async fn announce(nats: &async_nats::Client, prefix: &str, changes: Vec<Change>) {
    // Per row: its latest version, and stock only if every change was.
    let mut latest: std::collections::HashMap<(String, String), (i64, bool)> = Default::default();
    let mut order = Vec::new();
    for change in changes {
        let key = (change.model, change.id);
        match latest.get_mut(&key) {
            Some((version, stock_only)) => {
                *version = (*version).max(change.version);
                *stock_only &= change.stock_only;
            }
            None => {
                order.push(key.clone());
                latest.insert(key, (change.version, change.stock_only));
            }
        }
    }
    for key in order {
        let (version, stock_only) = latest[&key];
        let subject = schemas::subjects::change(prefix, &key.0, &key.1);
        let payload = version.to_string().into();
        let sent = if stock_only {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(
                schemas::subjects::CHANGE_HEADER,
                schemas::subjects::STOCK_ONLY,
            );
            nats.publish_with_headers(subject.clone(), headers, payload)
                .await
        } else {
            nats.publish(subject.clone(), payload).await
        };
        if let Err(error) = sent {
            tracing::warn!(%subject, %error, "cannot announce a change");
        }
    }
}
