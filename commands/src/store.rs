//! The aggregate store: loads aggregates (cache, then snapshot plus tail, then
//! the whole stream) and appends the events a command yields.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{EventUpcaster, PersistedEventRepository, SerializedEvent};
use cqrs_es::{Aggregate, DomainEvent};
use moka::ops::compute::Op;
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlx::{PgPool, Row};

use crate::aggregates::{StoredAggregate, UniqueChange};
use crate::error::{unique_violation, CommandError, StoreError, Violation};
use crate::metadata::CommandMetadata;
use crate::vault::Vault;

/// Tuning of an [`AggregateStore`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Loaded aggregates kept in memory per aggregate type.
    pub cache_capacity: u64,
    /// A snapshot is written each time a stream's length crosses a multiple
    /// of this, so a cold load reads at most this many events.
    pub snapshot_every: usize,
    /// How often a command that lost a race on its aggregate is run again.
    pub max_retries: usize,
    /// Called after every append commits: wakes the relay.
    pub on_append: Option<AppendHook>,
    /// `AGORA_DATA_KEY`, which wraps the data keys that seal personal data.
    pub data_key: crate::vault::MasterKey,
}

/// A callback run after each committed append. It must not block: it only
/// hints that there is something new to relay.
#[derive(Clone)]
pub struct AppendHook(pub Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for AppendHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppendHook")
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_capacity: 100_000,
            snapshot_every: 100,
            max_retries: 16,
            on_append: None,
            data_key: crate::vault::MasterKey::development(),
        }
    }
}

/// An aggregate as of a version (the number of events in its stream).
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<A> {
    pub aggregate: A,
    pub version: usize,
}

/// The outcome of a command that was accepted: the version after it, and the
/// events it appended (none when the command changed nothing).
#[derive(Debug, Clone)]
pub struct Committed<A: Aggregate> {
    pub id: String,
    pub version: usize,
    pub events: Vec<A::Event>,
    pub aggregate: A,
}

/// Loads and commits one aggregate type. Cheap to clone; clones share the cache.
pub struct AggregateStore<A: StoredAggregate>
where
    A::Command: Clone + Send,
    A::Error: Send,
{
    inner: Arc<Inner<A>>,
}

impl<A: StoredAggregate> Clone for AggregateStore<A>
where
    A::Command: Clone + Send,
    A::Error: Send,
{
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<A: Aggregate> {
    pool: PgPool,
    // The commands waiting for their aggregate's turn, by aggregate id; an
    // aggregate is here only while a turn runs on it.
    queues: std::sync::Mutex<HashMap<String, VecDeque<Queued<A>>>>,
    repository: PostgresEventRepository,
    cache: moka::sync::Cache<String, Arc<Loaded<A>>>,
    upcasters: Vec<Box<dyn EventUpcaster>>,
    vault: Vault,
    options: StoreOptions,
}

/// A command waiting for its aggregate's turn.
struct Queued<A: Aggregate> {
    command: A::Command,
    expected: Option<usize>,
    metadata: Value,
    reply: tokio::sync::oneshot::Sender<Decided<A>>,
}

/// A command's answer, as decided in its batch.
type Decided<A> = Result<Committed<A>, CommandError<<A as Aggregate>::Error>>;

/// Sends the decided answers to the commands at the front of `batch`, in
/// order, and takes those commands off.
fn answer<A: Aggregate>(batch: &mut VecDeque<Queued<A>>, decided: Vec<Decided<A>>) {
    for (queued, decided) in batch.drain(..decided.len()).zip(decided) {
        // A caller that stopped waiting has nothing to be told.
        let _ = queued.reply.send(decided);
    }
}

/// Answers the first `count` commands of `batch` with one failure each, and
/// takes them off.
fn fail<A: Aggregate>(
    batch: &mut VecDeque<Queued<A>>,
    count: usize,
    error: impl Fn() -> CommandError<A::Error>,
) {
    for queued in batch.drain(..count) {
        let _ = queued.reply.send(Err(error()));
    }
}

enum AppendError {
    SequenceTaken,
    Claimed(String),
    Store(StoreError),
}

// One statement appends the events, takes and releases unique claims and
// refreshes the snapshot, so the command costs one round trip and either all
// of it commits or none does. A clash on the events' primary key means another
// writer appended this sequence first; a clash on unique_claims_pkey means the
// value belongs to another aggregate.
//
// The statement holds only the parts an append needs: Postgres sets up every
// part of a statement on each execution, even one that writes nothing, and
// with all four parts always present that setup cost as much as the writes.
// Each shape is its own prepared statement. Public only so that the
// integration tests can prepare every shape against the real schema.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendShape {
    /// One event (most commands): `VALUES` instead of `unnest` of arrays.
    pub single: bool,
    pub releases: bool,
    pub claims: bool,
    pub snapshot: bool,
}

impl AppendShape {
    pub const COUNT: usize = 16;

    pub fn index(self) -> usize {
        usize::from(self.single)
            | usize::from(self.releases) << 1
            | usize::from(self.claims) << 2
            | usize::from(self.snapshot) << 3
    }

    pub fn from_index(index: usize) -> Self {
        Self {
            single: index & 1 != 0,
            releases: index & 2 != 0,
            claims: index & 4 != 0,
            snapshot: index & 8 != 0,
        }
    }

    /// The statement's text, built once per shape. Parameters: $1 type,
    /// $2 id, $3 metadata (an array, one per event, unless single),
    /// $4..$7 the events (sequence, type, version,
    /// payload: scalars or arrays), then releases (kinds, values), claims
    /// (kinds, values) and the snapshot (version, payload), each only when
    /// present, numbered on in that order.
    pub fn sql(self) -> &'static str {
        static STATEMENTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        let all = STATEMENTS.get_or_init(|| {
            (0..Self::COUNT)
                .map(|i| Self::from_index(i).build())
                .collect()
        });
        &all[self.index()]
    }

    fn build(self) -> String {
        let mut parts = Vec::new();
        // Each optional part takes the next two parameter numbers.
        let mut next = 8;
        let mut pair = || {
            let pair = (next, next + 1);
            next += 2;
            pair
        };
        if self.releases {
            let (kinds, values) = pair();
            parts.push(format!(
                "released AS (
    DELETE FROM unique_claims c
     USING unnest(${kinds}::text[], ${values}::text[]) AS r(kind, value)
     WHERE c.kind = r.kind AND c.value = r.value
       AND c.aggregate_type = $1 AND c.aggregate_id = $2
)"
            ));
        }
        if self.claims {
            let (kinds, values) = pair();
            parts.push(format!(
                "claimed AS (
    INSERT INTO unique_claims (kind, value, aggregate_type, aggregate_id)
    SELECT kind, value, $1, $2 FROM unnest(${kinds}::text[], ${values}::text[]) AS c(kind, value)
)"
            ));
        }
        if self.snapshot {
            let (version, payload) = pair();
            parts.push(format!(
                "snapshot AS (
    INSERT INTO aggregate_snapshots (aggregate_type, aggregate_id, version, payload)
    VALUES ($1, $2, ${version}, ${payload})
    ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE
       SET version = EXCLUDED.version, payload = EXCLUDED.payload, taken_at = clock_timestamp()
     WHERE aggregate_snapshots.version < EXCLUDED.version
)"
            ));
        }
        let with = if parts.is_empty() {
            String::new()
        } else {
            format!("WITH {}\n", parts.join(", "))
        };
        let insert = "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)";
        if self.single {
            format!("{with}{insert}\nVALUES ($1, $2, $4, $5, $6, $7, $3)")
        } else {
            format!(
                "{with}{insert}
SELECT $1, $2, e.sequence, e.event_type, e.event_version, e.payload, e.metadata
  FROM unnest($4::bigint[], $5::text[], $6::text[], $7::jsonb[], $3::jsonb[])
       AS e(sequence, event_type, event_version, payload, metadata)"
            )
        }
    }
}

/// The most commands one turn decides and appends together: a bound on one
/// statement's size, far above what queues on one aggregate in practice.
const MAX_BATCH: usize = 256;

/// The snapshot (its row has no `sequence`), then the events after it: one
/// round trip for a load.
const SELECT_SNAPSHOT_AND_EVENTS: &str = "WITH s AS MATERIALIZED (
    SELECT version, payload FROM aggregate_snapshots WHERE aggregate_type = $1 AND aggregate_id = $2)
SELECT NULL::int8 AS sequence, NULL::text AS event_type, NULL::text AS event_version, payload, version AS snapshot_version FROM s
UNION ALL
SELECT sequence, event_type, event_version, payload, NULL::int8 FROM events
 WHERE aggregate_type = $1 AND aggregate_id = $2
   AND sequence > coalesce((SELECT version FROM s), 0)
ORDER BY sequence NULLS FIRST";

const SELECT_EVENTS_AFTER: &str = "SELECT sequence, event_type, event_version, payload FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3 ORDER BY sequence";

/// The last sequence read off the end of the primary key. Not `max()`:
/// the planner expects one event per aggregate and aggregated every event
/// of the stream (2,000 index entries and heap fetches for a flash sale's
/// product, about 2 ms), where the backward scan reads one.
const SELECT_VERSION: &str = "SELECT sequence FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence DESC LIMIT 1";

impl<A: StoredAggregate> AggregateStore<A>
where
    A::Command: Clone + Send,
    A::Error: Send,
{
    pub fn new(pool: PgPool, options: StoreOptions) -> Self {
        Self::with_upcasters(pool, options, Vec::new())
    }

    /// A store whose reads pass every stored event through `upcasters`
    /// first, so old event versions reach the aggregate in today's shape.
    pub fn with_upcasters(
        pool: PgPool,
        options: StoreOptions,
        upcasters: Vec<Box<dyn EventUpcaster>>,
    ) -> Self {
        let vault = Vault::new(pool.clone(), &options.data_key);
        Self::with_vault(pool, options, upcasters, vault)
    }

    /// [`with_upcasters`](Self::with_upcasters), sealing and opening
    /// personal data with a vault shared with other stores.
    pub fn with_vault(
        pool: PgPool,
        options: StoreOptions,
        upcasters: Vec<Box<dyn EventUpcaster>>,
        vault: Vault,
    ) -> Self {
        let cache = moka::sync::Cache::builder()
            .max_capacity(options.cache_capacity)
            .build();
        Self {
            inner: Arc::new(Inner {
                repository: PostgresEventRepository::new(pool.clone()),
                queues: std::sync::Mutex::new(HashMap::new()),
                pool,
                cache,
                upcasters,
                vault,
                options,
            }),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The vault that seals this store's personal data.
    pub fn vault(&self) -> &Vault {
        &self.inner.vault
    }

    /// Runs `command` on aggregate `id` and appends what it yields.
    ///
    /// With `expected` (from `If-Match`), a different version is refused and
    /// nothing is written. Without it, a lost race is retried on fresh state,
    /// up to the configured budget.
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
        expected: Option<usize>,
        metadata: &CommandMetadata,
    ) -> Result<Committed<A>, CommandError<A::Error>> {
        let started = std::time::Instant::now();
        let mut result = self
            .execute_counted(id, command.clone(), expected, metadata)
            .await;
        if lost_connection(&result) {
            result = self.execute_counted(id, command, expected, metadata).await;
        }
        record_command(A::TYPE, &result, started);
        result
    }

    // Commands on one aggregate in this process queue up behind one another
    // instead of racing: the first to arrive starts a turn, and the turn
    // takes everything that queued meanwhile as one batch, decides it on the
    // state in memory, command after command, and appends all of the
    // batch's events in one statement. Each command still gets its own
    // answer, and only after the append that holds its events committed. A
    // hot aggregate (a flash sale's product) so costs one round trip per
    // batch, not per command; only writers in other processes still
    // conflict, and those rounds are retried on fresh state.
    //
    // The turn runs as a task of its own, so a caller that goes away (a
    // client that hangs up) does not take the others' answers with it.
    async fn execute_counted(
        &self,
        id: &str,
        command: A::Command,
        expected: Option<usize>,
        metadata: &CommandMetadata,
    ) -> Result<Committed<A>, CommandError<A::Error>> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let queued = Queued {
            command,
            expected,
            metadata: metadata.to_json(),
            reply,
        };
        let starts_turn = {
            let mut queues = self.queues();
            match queues.entry(id.to_owned()) {
                std::collections::hash_map::Entry::Occupied(mut waiting) => {
                    waiting.get_mut().push_back(queued);
                    false
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(VecDeque::from([queued]));
                    true
                }
            }
        };
        if starts_turn {
            let store = self.clone();
            let id = id.to_owned();
            tokio::spawn(async move { store.take_turn(id).await });
        }
        answer.await.unwrap_or_else(|_| {
            Err(CommandError::Store(StoreError::Corrupt(
                "the aggregate's turn ended without an answer".to_owned(),
            )))
        })
    }

    fn queues(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Queued<A>>>> {
        // Nothing panics while holding it; should something, the map is
        // still whole (every change to it is one call).
        self.inner
            .queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs batches of the commands queued on `id` until none is left.
    async fn take_turn(&self, id: String) {
        // Should this task die (a panic), the queue goes with it: its
        // commands are answered with an error instead of waiting forever,
        // and the next command on the aggregate starts a new turn.
        struct EndTurn<'a, A: StoredAggregate>(&'a AggregateStore<A>, &'a str)
        where
            A::Command: Clone + Send,
            A::Error: Send;
        impl<A: StoredAggregate> Drop for EndTurn<'_, A>
        where
            A::Command: Clone + Send,
            A::Error: Send,
        {
            fn drop(&mut self) {
                // Only when unwinding: a turn that ended normally removed its
                // entry itself, and the entry here now may be a new turn's.
                if std::thread::panicking() {
                    self.0.queues().remove(self.1);
                }
            }
        }
        let _end = EndTurn(self, &id);
        loop {
            let mut batch: VecDeque<Queued<A>> = {
                let mut queues = self.queues();
                let Some(waiting) = queues.get_mut(&id) else {
                    return;
                };
                if waiting.is_empty() {
                    // Under the lock: a command queued from here on starts
                    // a turn of its own.
                    queues.remove(&id);
                    return;
                }
                let take = waiting.len().min(MAX_BATCH);
                waiting.drain(..take).collect()
            };
            while !batch.is_empty() {
                self.decide_and_append(&id, &mut batch).await;
            }
        }
    }

    /// Decides commands from the front of `batch` on one loaded state and
    /// appends their events in one statement, then answers them and takes
    /// them off. Stops early where a command claims or releases a unique
    /// value: such a command goes alone, so a clash is its own answer.
    async fn decide_and_append(&self, id: &str, batch: &mut VecDeque<Queued<A>>) {
        let retries = self.inner.options.max_retries;
        for attempt in 0..=retries {
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt)).await;
            }
            let (loaded, from_cache) = match self.load(id).await {
                Ok(loaded) => loaded,
                Err(err) => return fail(batch, batch.len(), || err.clone().into()),
            };
            // Borrowed until a command changes it: a batch of refusals
            // copies nothing.
            let mut state = std::borrow::Cow::Borrowed(&loaded.aggregate);
            let mut version = loaded.version;
            let mut decided: Vec<Decided<A>> = Vec::new();
            let mut appended = 0;
            let mut claims = false;
            // Owned before the awaits below: a command need not be `Sync`.
            let commands: Vec<(A::Command, Option<usize>)> = batch
                .iter()
                .map(|queued| (queued.command.clone(), queued.expected))
                .collect();
            for (command, expected) in commands {
                if claims {
                    break;
                }
                if let Some(expected) = expected.filter(|&e| e != version) {
                    decided.push(Err(CommandError::PreconditionFailed {
                        expected,
                        current: version,
                    }));
                    continue;
                }
                let mut next = A::clone(&state);
                let sink = EventSink::default();
                if let Err(refusal) = next.handle(command, &(), &sink).await {
                    decided.push(Err(CommandError::Rejected(refusal)));
                    continue;
                }
                let events = sink.collect().await;
                let unique = events.iter().any(|e| !A::unique_changes(e).is_empty());
                if unique && appended > 0 {
                    break;
                }
                claims = unique;
                version += events.len();
                appended += events.len();
                decided.push(Ok(Committed {
                    id: id.to_owned(),
                    version,
                    events,
                    aggregate: next.clone(),
                }));
                state = std::borrow::Cow::Owned(next);
            }
            if appended == 0 {
                // A refusal read from the cache may rest on a state another
                // process has moved past: confirm before answering.
                let refused = decided.iter().any(Result::is_err);
                if from_cache && refused {
                    match self.stored_version(id).await {
                        Ok(stored) if stored != loaded.version => {
                            self.forget(id);
                            continue;
                        }
                        Ok(_) => {}
                        Err(err) => return fail(batch, batch.len(), || err.clone().into()),
                    }
                }
                return answer(batch, decided);
            }
            let parts: Vec<(&[A::Event], &Value)> = decided
                .iter()
                .zip(batch.iter())
                .filter_map(|(d, q)| d.as_ref().ok().map(|c| (&c.events[..], &q.metadata)))
                .collect();
            match self.append(id, loaded.version, &parts, &state).await {
                Ok(version) => {
                    self.after_append(id, state.into_owned(), version);
                    return answer(batch, decided);
                }
                Err(AppendError::SequenceTaken) => {
                    self.forget(id);
                    tracing::debug!(
                        aggregate_type = A::TYPE,
                        aggregate_id = id,
                        "lost a race, retrying"
                    );
                    metrics::counter!("agora_command_retries_total", "aggregate" => A::TYPE)
                        .increment(1);
                }
                Err(AppendError::Claimed(kind)) => {
                    // The last decided command is the one that claims: the
                    // clash is its answer. The refusals before it may rest
                    // on a stale cache, which no append confirmed: they are
                    // decided again.
                    let claimer = decided.len() - 1;
                    if let Some(queued) = batch.remove(claimer) {
                        let _ = queued.reply.send(Err(CommandError::Duplicate {
                            field: A::unique_field(&kind),
                        }));
                    }
                    if batch.is_empty() {
                        return;
                    }
                }
                Err(AppendError::Store(err)) => {
                    return fail(batch, decided.len(), || err.clone().into())
                }
            }
        }
        fail(batch, batch.len(), || CommandError::Conflict);
    }

    /// Runs `command` on an aggregate the caller has just named (a fresh
    /// UUID v7): no stream can exist yet, so nothing is loaded and the
    /// command costs one round trip. Should the id exist after all, the append
    /// clashes on its first sequence and the command runs the usual way.
    pub async fn execute_new(
        &self,
        id: &str,
        command: A::Command,
        metadata: &CommandMetadata,
    ) -> Result<Committed<A>, CommandError<A::Error>> {
        let started = std::time::Instant::now();
        let mut result = self
            .execute_new_counted(id, command.clone(), metadata)
            .await;
        if lost_connection(&result) {
            result = self.execute_new_counted(id, command, metadata).await;
        }
        record_command(A::TYPE, &result, started);
        result
    }

    async fn execute_new_counted(
        &self,
        id: &str,
        command: A::Command,
        metadata: &CommandMetadata,
    ) -> Result<Committed<A>, CommandError<A::Error>> {
        let mut aggregate = A::default();
        let sink = EventSink::default();
        aggregate
            .handle(command.clone(), &(), &sink)
            .await
            .map_err(CommandError::Rejected)?;
        let events = sink.collect().await;
        if events.is_empty() {
            return Ok(Committed {
                id: id.to_owned(),
                version: 0,
                events,
                aggregate,
            });
        }
        let metadata_json = metadata.to_json();
        match self
            .append(id, 0, &[(&events[..], &metadata_json)], &aggregate)
            .await
        {
            Ok(version) => {
                self.after_append(id, aggregate.clone(), version);
                Ok(Committed {
                    id: id.to_owned(),
                    version,
                    events,
                    aggregate,
                })
            }
            Err(AppendError::SequenceTaken) => {
                metrics::counter!("agora_command_retries_total", "aggregate" => A::TYPE)
                    .increment(1);
                self.execute_counted(id, command, None, metadata).await
            }
            Err(AppendError::Claimed(kind)) => Err(CommandError::Duplicate {
                field: A::unique_field(&kind),
            }),
            Err(AppendError::Store(err)) => Err(err.into()),
        }
    }

    /// The aggregate as the cache holds it, else as stored. The flag says
    /// whether it came from the cache (and so may lag another process).
    pub async fn load(&self, id: &str) -> Result<(Arc<Loaded<A>>, bool), StoreError> {
        if let Some(hit) = self.inner.cache.get(id) {
            metrics::counter!("agora_aggregate_cache_hits_total", "aggregate" => A::TYPE)
                .increment(1);
            return Ok((hit, true));
        }
        metrics::counter!("agora_aggregate_cache_misses_total", "aggregate" => A::TYPE)
            .increment(1);
        let loaded = Arc::new(self.load_stored(id).await?);
        if loaded.version > 0 {
            self.keep_newest(id, Arc::clone(&loaded));
        }
        Ok((loaded, false))
    }

    /// [`load`](Self::load) by UUID, without the cache flag.
    pub async fn load_id(&self, id: uuid::Uuid) -> Result<Arc<Loaded<A>>, StoreError> {
        Ok(self.load(&id.to_string()).await?.0)
    }

    /// The aggregate from its snapshot and the events after it, bypassing the
    /// cache: one statement (the snapshot's row first, if there is one).
    pub async fn load_stored(&self, id: &str) -> Result<Loaded<A>, StoreError> {
        if !A::SNAPSHOTS {
            return self.load_events_after(id, A::default(), 0).await;
        }
        let rows = sqlx::query(SELECT_SNAPSHOT_AND_EVENTS)
            .bind(A::TYPE)
            .bind(id)
            .fetch_all(&self.inner.pool)
            .await?;
        let mut rows = rows.into_iter().peekable();
        let snapshot =
            rows.next_if(|row| matches!(row.try_get::<Option<i64>, _>("sequence"), Ok(None)));
        let (aggregate, version) = match snapshot {
            Some(row) => {
                let version: i64 = row.try_get("snapshot_version")?;
                let payload: Value = row.try_get("payload")?;
                match serde_json::from_value::<A>(payload) {
                    Ok(aggregate) => (aggregate, to_version(version)?),
                    // The aggregate's shape changed since the snapshot was
                    // taken: the stream is the truth, so rebuild from it.
                    Err(err) => {
                        tracing::warn!(aggregate_type = A::TYPE, aggregate_id = id, error = %err, "snapshot unreadable, replaying the stream");
                        return self.load_events_after(id, A::default(), 0).await;
                    }
                }
            }
            None => (A::default(), 0),
        };
        self.apply_rows(id, aggregate, version, rows).await
    }

    /// `aggregate` at `version`, and the stored events after it applied.
    async fn load_events_after(
        &self,
        id: &str,
        aggregate: A,
        version: usize,
    ) -> Result<Loaded<A>, StoreError> {
        let rows = sqlx::query(SELECT_EVENTS_AFTER)
            .bind(A::TYPE)
            .bind(id)
            .bind(version as i64)
            .fetch_all(&self.inner.pool)
            .await?;
        self.apply_rows(id, aggregate, version, rows).await
    }

    /// Applies rows of the events table, in order, to `aggregate` at `version`.
    async fn apply_rows(
        &self,
        id: &str,
        mut aggregate: A,
        mut version: usize,
        rows: impl IntoIterator<Item = sqlx::postgres::PgRow>,
    ) -> Result<Loaded<A>, StoreError> {
        for row in rows {
            let sequence: i64 = row.try_get("sequence")?;
            let event = SerializedEvent::new(
                id.to_owned(),
                to_version(sequence)?,
                A::TYPE.to_owned(),
                row.try_get("event_type")?,
                row.try_get("event_version")?,
                row.try_get("payload")?,
                Value::Null,
            );
            aggregate.apply(self.decode(event).await?);
            version = to_version(sequence)?;
        }
        Ok(Loaded { aggregate, version })
    }

    /// The aggregate rebuilt from every stored event through the stock
    /// postgres-es repository, ignoring cache and snapshots: the reference
    /// that cached and snapshotted states must equal.
    pub async fn load_from_all_events(&self, id: &str) -> Result<Loaded<A>, StoreError> {
        let events = self
            .inner
            .repository
            .get_events::<A>(id)
            .await
            .map_err(|err| StoreError::Corrupt(err.to_string()))?;
        let mut loaded = Loaded {
            aggregate: A::default(),
            version: 0,
        };
        for event in events {
            loaded.version = event.sequence;
            loaded.aggregate.apply(self.decode(event).await?);
        }
        Ok(loaded)
    }

    /// The length of the stream as stored.
    pub async fn stored_version(&self, id: &str) -> Result<usize, StoreError> {
        let version: Option<i64> = sqlx::query_scalar(SELECT_VERSION)
            .bind(A::TYPE)
            .bind(id)
            .fetch_optional(&self.inner.pool)
            .await?;
        to_version(version.unwrap_or(0))
    }

    /// Drops the cached copy of an aggregate, if any.
    pub fn forget(&self, id: &str) {
        self.inner.cache.invalidate(id);
    }

    /// Drops every cached aggregate of this type.
    pub fn forget_all(&self) {
        self.inner.cache.invalidate_all();
    }

    /// A stored event as the aggregate takes it: upcast to its current
    /// version, its sealed fields opened.
    async fn decode(&self, event: SerializedEvent) -> Result<A::Event, StoreError> {
        let mut event = self.inner.upcasters.iter().fold(event, |event, upcaster| {
            if upcaster.can_upcast(&event.event_type, &event.event_version) {
                upcaster.upcast(event)
            } else {
                event
            }
        });
        self.inner
            .vault
            .open_event(&event.event_type, &event.event_version, &mut event.payload)
            .await?;
        serde_json::from_value(event.payload).map_err(|err| {
            StoreError::Corrupt(format!(
                "{} {} v{}: {err}",
                A::TYPE,
                event.event_type,
                event.event_version
            ))
        })
    }

    /// After an append committed: wake the relay, cache the new state.
    fn after_append(&self, id: &str, aggregate: A, version: usize) {
        if let Some(hook) = &self.inner.options.on_append {
            (hook.0)();
        }
        self.remember(id, aggregate, version);
    }

    // Keeps the newest state only: a slower command or load finishing late
    // must not put back a version older than one already cached.
    fn remember(&self, id: &str, aggregate: A, version: usize) {
        self.keep_newest(id, Arc::new(Loaded { aggregate, version }));
    }

    fn keep_newest(&self, id: &str, fresh: Arc<Loaded<A>>) {
        let version = fresh.version;
        self.inner
            .cache
            .entry(id.to_owned())
            .and_compute_with(|current| match current {
                Some(entry) if entry.value().version >= version => Op::Nop,
                _ => Op::Put(fresh),
            });
    }

    async fn append(
        &self,
        id: &str,
        version: usize,
        parts: &[(&[A::Event], &Value)],
        after: &A,
    ) -> Result<usize, AppendError> {
        let count: usize = parts.iter().map(|(events, _)| events.len()).sum();
        let mut sequences = Vec::with_capacity(count);
        let mut types = Vec::with_capacity(count);
        let mut versions = Vec::with_capacity(count);
        let mut payloads = Vec::with_capacity(count);
        let mut metadata = Vec::with_capacity(count);
        let (mut claim_kinds, mut claim_values) = (Vec::new(), Vec::new());
        let (mut release_kinds, mut release_values) = (Vec::new(), Vec::new());
        // Plain loops: a closure's iterator held across the await below would
        // make the future's lifetimes too general for `tokio::spawn`.
        for &(events, meta) in parts {
            for event in events {
                sequences.push((version + sequences.len() + 1) as i64);
                metadata.push(meta);
                let (event_type, event_version) = (event.event_type(), event.event_version());
                let mut payload =
                    serde_json::to_value(event).map_err(|err| AppendError::Store(err.into()))?;
                self.inner
                    .vault
                    .seal_event(&event_type, &event_version, id, &mut payload)
                    .await
                    .map_err(|err| AppendError::Store(err.into()))?;
                types.push(event_type);
                versions.push(event_version);
                payloads.push(payload);
                // An email is claimed by its keyed hash, never in clear.
                let claim = |kind: &str, value: String| match kind {
                    "email" => self.inner.vault.email_claim(&value),
                    _ => value,
                };
                for change in A::unique_changes(event) {
                    match change {
                        UniqueChange::Claim { kind, value } => {
                            claim_kinds.push(kind);
                            claim_values.push(claim(kind, value));
                        }
                        UniqueChange::Release { kind, value } => {
                            release_kinds.push(kind);
                            release_values.push(claim(kind, value));
                        }
                    }
                }
            }
        }
        let new_version = version + count;
        let every = self.inner.options.snapshot_every.max(1);
        let snapshot = if A::SNAPSHOTS && new_version / every > version / every {
            Some(serde_json::to_value(after).map_err(|err| AppendError::Store(err.into()))?)
        } else {
            None
        };
        let shape = AppendShape {
            single: count == 1,
            releases: !release_kinds.is_empty(),
            claims: !claim_kinds.is_empty(),
            snapshot: snapshot.is_some(),
        };
        let query = sqlx::query(shape.sql()).bind(A::TYPE).bind(id);
        let mut query = if shape.single {
            query
                .bind(metadata[0])
                .bind(sequences[0])
                .bind(types.swap_remove(0))
                .bind(versions.swap_remove(0))
                .bind(payloads.swap_remove(0))
        } else {
            query
                .bind(metadata)
                .bind(sequences)
                .bind(types)
                .bind(versions)
                .bind(payloads)
        };
        if shape.releases {
            query = query.bind(release_kinds).bind(release_values);
        }
        if shape.claims {
            query = query.bind(&claim_kinds).bind(claim_values);
        }
        if let Some(snapshot) = snapshot {
            query = query.bind(new_version as i64).bind(snapshot);
        }
        // Acquired first, so that a failure to get a connection (nothing
        // sent) is told apart from one while the append is in flight.
        let mut conn = self
            .inner
            .pool
            .acquire()
            .await
            .map_err(|err| AppendError::Store(err.into()))?;
        let result = query.execute(&mut *conn).await;
        match result {
            Ok(_) => {
                metrics::counter!("agora_events_appended_total", "aggregate" => A::TYPE)
                    .increment(count as u64);
                Ok(new_version)
            }
            Err(err) => match unique_violation(&err) {
                Some(Violation::Sequence) => Err(AppendError::SequenceTaken),
                Some(Violation::Claim) => Err(AppendError::Claimed(claim_kind(&err, &claim_kinds))),
                None => Err(AppendError::Store(StoreError::of_write(err))),
            },
        }
    }
}

/// Whether a command failed because its database session was lost before
/// anything of it could commit: then it runs once more, on another
/// connection (the pool tests each before handing it out). Counted in
/// `agora_command_reconnects_total`.
fn lost_connection<A: Aggregate, E: std::error::Error>(
    result: &Result<Committed<A>, CommandError<E>>,
) -> bool {
    let lost = matches!(result, Err(CommandError::Store(err)) if err.may_retry());
    if let Err(CommandError::Store(err)) = result {
        if lost {
            tracing::warn!(aggregate_type = A::TYPE, error = %err, "lost the database session before the commit; running the command once more");
            metrics::counter!("agora_command_reconnects_total", "aggregate" => A::TYPE)
                .increment(1);
        }
    }
    lost
}

/// Counts and times one command by its outcome, the labels of
/// `agora_commands_total`.
fn record_command<A: Aggregate, E: std::error::Error>(
    aggregate: &'static str,
    result: &Result<Committed<A>, CommandError<E>>,
    started: std::time::Instant,
) {
    let outcome = match result {
        Ok(_) => "ok",
        // A taken email or sku is a business refusal like any other.
        Err(CommandError::Rejected(_) | CommandError::Duplicate { .. }) => "rejected",
        Err(CommandError::Conflict) => "conflict",
        Err(CommandError::PreconditionFailed { .. }) => "precondition_failed",
        Err(CommandError::Store(_)) => "error",
    };
    metrics::counter!("agora_commands_total", "aggregate" => aggregate, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("agora_command_duration_seconds", "aggregate" => aggregate)
        .record(started.elapsed().as_secs_f64());
}

// Postgres names the clashing key in the detail: `Key (kind, value)=(email, a@b.c) already exists.`
fn claim_kind(err: &sqlx::Error, kinds: &[&'static str]) -> String {
    let detail = err
        .as_database_error()
        .and_then(|db| db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>())
        .and_then(|pg| pg.detail())
        .unwrap_or_default();
    kinds
        .iter()
        .find(|kind| detail.contains(&format!("=({kind},")))
        .or(kinds.first())
        .map(|kind| (*kind).to_owned())
        .unwrap_or_default()
}

// Retries after a lost race wait a little, growing and jittered, so writers in
// different processes stop colliding in lockstep. The first retries (after a
// stale cache) are immediate enough not to matter.
fn backoff(attempt: usize) -> std::time::Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let ceiling_us = 500 * (1u64 << attempt.min(6));
    std::time::Duration::from_micros(u64::from(nanos) % ceiling_us)
}

fn to_version(value: i64) -> Result<usize, StoreError> {
    usize::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative sequence {value}")))
}
