//! The change listener: read-model changes announced on core NATS
//! (`<prefix>.changes.<model>.<id>`, payload the row's new version, header
//! `Agora-Change: stock` when only a product's stock moved) drop the cached
//! answer of that row and the search caches' entries it may touch, and wake
//! the requests waiting for it.
//!
//! Core NATS delivers at most once, so a notice can be lost: while the
//! connection is down the cache is kept empty, and when it comes back every
//! waiter reads again; the cache's time-to-live covers the rest.

use std::time::Duration;

use async_nats::connection::State as Connection;
use async_nats::{Client, Message, Subscriber};
use futures::StreamExt;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::state::AppState;

/// The model name under which a revocation of a user's sign-ins is
/// announced (`<prefix>.changes.credentials.<user id>`, payload `0`): no
/// read model, only the user caches of [`crate::auth::access`].
pub const CREDENTIALS: &str = "credentials";

/// How often the connection state is looked at.
const CONNECTION_CHECK: Duration = Duration::from_secs(1);

/// Subscribes to every change under `prefix` and applies them to `state`'s
/// cache until the client closes. Meant to be spawned next to the server;
/// a failure is logged (the cache then only expires by its time-to-live).
pub async fn listen(nats: Client, prefix: String, state: AppState) {
    match nats
        .subscribe(schemas::subjects::changes_wildcard(&prefix))
        .await
    {
        Ok(subscriber) => run(nats, prefix, subscriber, state).await,
        Err(err) => tracing::error!(error = %err, "cannot subscribe to read-model changes"),
    }
}

/// Like [`listen`], but returns once the NATS server has registered the
/// subscription (a notice published from then on, from any connection,
/// reaches it), with the listener running on its own task.
pub async fn spawn(
    nats: Client,
    prefix: String,
    state: AppState,
) -> Result<JoinHandle<()>, async_nats::Error> {
    let subscriber = nats
        .subscribe(schemas::subjects::changes_wildcard(&prefix))
        .await?;
    // The server handles one connection's operations in order, so once a
    // message we publish comes back, the subscription before it is in place.
    let inbox = nats.new_inbox();
    let mut echo = nats.subscribe(inbox.clone()).await?;
    nats.publish(inbox, bytes::Bytes::new()).await?;
    tokio::time::timeout(Duration::from_secs(10), echo.next())
        .await
        .map_err(|_| "NATS did not confirm the change subscription within 10 s")?
        .ok_or("the NATS connection closed while subscribing to changes")?;
    drop(echo);
    Ok(tokio::spawn(run(nats, prefix, subscriber, state)))
}

async fn run(nats: Client, prefix: String, mut subscriber: Subscriber, state: AppState) {
    let head = format!("{prefix}.changes.");
    let mut check = tokio::time::interval(CONNECTION_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut was_connected = true;
    state.reads.set_search_live(true);
    tracing::info!(subject = %schemas::subjects::changes_wildcard(&prefix), "listening for read-model changes");
    loop {
        tokio::select! {
            message = subscriber.next() => match message {
                Some(message) => apply(&state, &head, &message),
                None => {
                    tracing::warn!("the change subscription ended; the read cache is off");
                    state.reads.set_search_live(false);
                    state.reads.invalidate_all();
                    state.authenticator.users.clear();
                    return;
                }
            },
            _ = check.tick() => {
                let connected = nats.connection_state() == Connection::Connected;
                if !connected {
                    // Notices are being missed: keep nothing that could go stale.
                    state.reads.set_search_live(false);
                    state.reads.clear();
                    state.authenticator.users.clear();
                    state.aggregates.vault.forget_all();
                } else if !was_connected {
                    tracing::info!("NATS is back: the read cache starts afresh");
                    state.reads.invalidate_all();
                    state.reads.set_search_live(true);
                    state.authenticator.users.clear();
                }
                was_connected = connected;
            }
        }
    }
}

fn apply(state: &AppState, head: &str, message: &Message) {
    let Some((model, id)) = message
        .subject
        .as_str()
        .strip_prefix(head)
        .and_then(|rest| rest.split_once('.'))
    else {
        tracing::debug!(subject = %message.subject, "ignoring a change on an unexpected subject");
        return;
    };
    // Keys use the canonical (lower-case, hyphenated) form of ids.
    let id = Uuid::parse_str(id)
        .map(|u| u.to_string())
        .unwrap_or_else(|_| id.to_owned());
    if id == schemas::subjects::ALL_ROWS {
        // A replay swapped the whole model: any cached answer may be stale.
        tracing::info!(model, "read model rebuilt; the read cache starts afresh");
        state.reads.invalidate_all();
        state.authenticator.users.clear();
        return;
    }
    // A user changed (deactivated, say) or its sign-ins were revoked: its
    // tokens are checked afresh.
    if model == "users" || model == CREDENTIALS {
        if let Ok(user_id) = Uuid::parse_str(&id) {
            state.authenticator.users.forget(user_id);
            // An erasure destroyed its data key: drop any copy cached here.
            state.aggregates.vault.forget(user_id);
        }
        if model == CREDENTIALS {
            return;
        }
    }
    let version = version_of(&message.payload);
    let stock_only = message
        .headers
        .as_ref()
        .and_then(|headers| headers.get(schemas::subjects::CHANGE_HEADER))
        .is_some_and(|value| value.as_str() == schemas::subjects::STOCK_ONLY);
    tracing::trace!(model, id, version, stock_only, "read model changed");
    state.reads.changed(model, &id, version, stock_only);
}

/// The payload is the row's new version as decimal text (a JSON `Change` is
/// understood too); anything else still invalidates, as version 0.
fn version_of(payload: &[u8]) -> i64 {
    let text = std::str::from_utf8(payload).unwrap_or("").trim();
    text.parse::<i64>()
        .ok()
        .or_else(|| {
            serde_json::from_str::<projections::changes::Change>(text)
                .ok()
                .map(|c| c.version)
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::version_of;

    #[test]
    fn versions_from_payloads() {
        assert_eq!(version_of(b"7"), 7);
        assert_eq!(version_of(b" 12\n"), 12);
        assert_eq!(version_of(br#"{"model":"users","id":"x","version":3}"#), 3);
        assert_eq!(version_of(b""), 0);
        assert_eq!(version_of(b"nope"), 0);
    }
}
