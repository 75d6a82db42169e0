//! Shared resources (data): one data service, backed by an embedded
//! database, shared by several services, each with a read-through cache
//! in front of it that the data service's change events invalidate.
//!
//! The seed calls this pattern *transitional*: services that share one
//! database share its schema and its release cycle, so it is a step from
//! a monolith towards services that own their data and share it through
//! events and streams. This module makes the step safe to take.
//!
//! # The parts
//! - [`DataStore`]: customers in a `redb` file. Every write is one redb
//!   write transaction (redb runs one at a time, durably committed with
//!   fsync before it returns).
//! - [`serve`]: the data service on a node: [`CREATE`], [`GET`],
//!   [`UPDATE`], publishing a [`Changed`] on [`CHANGED_TOPIC`] after every
//!   committed change, before the write is answered.
//! - [`TtlCache`] (no I/O) and [`CustomerCache`] (the read-through cache
//!   over the fabric), with [`serve_cached`] and [`listen`] to put one on
//!   a node.
//!
//! # Guarantees
//! - **Business idempotency**: [`DataStore::create_customer`] with an
//!   email already stored returns the stored customer (`created:
//!   false`) instead of making another: the unique index on the email
//!   is read and written in the same write transaction as the customer,
//!   so two concurrent creates, or a create retried with a new call id,
//!   make exactly one customer and both get its id. Emails are compared
//!   trimmed and lower-cased.
//! - **Optimistic concurrency**: every customer has a `version` (1 when
//!   created, +1 per update); an update names the version it read, and a
//!   stale one is refused as [`DataError::Conflict`] (remote code
//!   [`RemoteCode::Conflict`]) without
//!   changing anything.
//! - **Durability**: an answered write is on disk; the store opened
//!   again (a restarted data service, even after SIGKILL) has it.
//! - **Bounded staleness**: a cache serves a value only while it is
//!   younger than its TTL, its age counted from when its read *started*
//!   at the data service; so whatever happens to invalidations, a value
//!   served is never older than the TTL. An invalidation removes the
//!   entry at once and leaves a marker of the new version, so a read
//!   already in flight with the old version is not cached behind it.
//! - **Bounded memory**: a cache holds at most `capacity` entries
//!   (values and invalidation markers); the oldest filled goes first.
//!
//! # Not guaranteed
//! - Invalidations are pub/sub, **at most once** ([`Node::publish`]): a
//!   cache that misses one (its node was away, its subscription not yet
//!   known to the data service, its queue full) serves the old value
//!   until its TTL: a missed invalidation costs at most a TTL of
//!   staleness, nothing more.
//! - No read-your-writes through a cache: the invalidation is published
//!   before the write is answered, but the cache applies it
//!   asynchronously, so a read right after a write may still see the old
//!   value for the time the event takes to arrive.
//! - One data service per file: two nodes cannot serve the same file
//!   (redb locks it: [`DataError::AlreadyOpen`]); no replication.
//! - No deletes, no queries beyond by id; the schema is this module's.
//!
//! Refusals of the data service are counted in [`DATA_REFUSED`] by
//! [`DataRefusal`]; cache look-ups in [`CACHE_LOOKUPS`] (`hit`, `miss`)
//! and entries leaving a cache in [`CACHE_EVICTED`] by [`Eviction`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::node::{CallError, CallOptions, Node, NodeBuilder, NodeSubscription};
use crate::wire::{RemoteCode, RemoteError};
use crate::RequestError;

/// Creates a customer ([`CreateCustomer`] → [`Stored`]), or returns the
/// one with that email.
pub const CREATE: &str = "customers.create";
/// Reads a customer ([`GetCustomer`] → [`Stored`]).
pub const GET: &str = "customers.get";
/// Updates a customer's name at a known version ([`UpdateCustomer`] →
/// [`Stored`]).
pub const UPDATE: &str = "customers.update";
/// Where the data service publishes a [`Changed`] after every change.
pub const CHANGED_TOPIC: &str = "customers.changed";
/// The remote error code of an unknown customer id.
pub const NOT_FOUND: &str = "not_found";
/// The remote error code of a store that cannot read or write its file.
pub const INTERNAL: &str = "internal";

/// Counter: calls the data service refused, by `reason` ([`DataRefusal`]).
pub const DATA_REFUSED: &str = "zfabric_data_refused_total";
/// Counter: cache look-ups, by `cache` and `result` (`hit`, `miss`).
pub const CACHE_LOOKUPS: &str = "zfabric_cache_lookups_total";
/// Counter: entries that left a cache, by `cache` and `reason`
/// ([`Eviction`]).
pub const CACHE_EVICTED: &str = "zfabric_cache_evicted_total";

/// Customers by id: MessagePack of [`Customer`].
const CUSTOMERS: TableDefinition<u64, &[u8]> = TableDefinition::new("customers");
/// The unique index: normalised email → customer id.
const EMAILS: TableDefinition<&str, u64> = TableDefinition::new("customers_by_email");
/// Counters: `next_id`.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The longest email taken (RFC 5321's path limit).
pub const MAX_EMAIL: usize = 254;
/// The longest name taken, in bytes.
pub const MAX_NAME: usize = 256;

/// A customer as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    /// Its id (from 1, never reused).
    pub id: u64,
    /// Its email, trimmed and lower-cased; unique.
    pub email: String,
    /// Its name.
    pub name: String,
    /// 1 when created, +1 per update.
    pub version: u64,
}

/// [`CREATE`]'s request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateCustomer {
    /// The email (the business key).
    pub email: String,
    /// The name, used only if the customer is new.
    pub name: String,
}

/// [`GET`]'s request (also the cached services').
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetCustomer {
    /// The customer id.
    pub id: u64,
}

/// [`UPDATE`]'s request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateCustomer {
    /// The customer id.
    pub id: u64,
    /// The version the caller read; any other is a conflict.
    pub expected_version: u64,
    /// The new name.
    pub name: String,
}

/// What the data service answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// The customer as stored now.
    pub customer: Customer,
    /// Whether this call made it (only [`CREATE`] can say `true`).
    pub created: bool,
    /// The store's boot id: a random number drawn each time the store is
    /// opened, so a caller sees a restart.
    pub boot: u64,
}

/// The change event on [`CHANGED_TOPIC`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changed {
    /// The customer that changed.
    pub id: u64,
    /// Its version now.
    pub version: u64,
}

/// Rows in the store, counted in one read transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Rows {
    /// Customers.
    pub customers: u64,
    /// Entries of the email index (equal to `customers` in a sound store).
    pub emails: u64,
}

/// Why the data store refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// No customer with that id.
    #[error("no customer {0}")]
    NotFound(u64),
    /// The update named a version other than the stored one (someone
    /// updated it since the caller read it): read again and retry.
    #[error("customer {id}: version {expected} expected, {current} stored")]
    Conflict {
        /// The customer.
        id: u64,
        /// The version the caller named.
        expected: u64,
        /// The version stored.
        current: u64,
    },
    /// An email that is empty, longer than [`MAX_EMAIL`], or not one `@`
    /// between two non-empty parts.
    #[error("bad email {0:?}")]
    BadEmail(String),
    /// A name longer than [`MAX_NAME`] bytes.
    #[error("name of {0} bytes (at most {MAX_NAME})")]
    BadName(usize),
    /// The file is open elsewhere (another node or process serves it).
    #[error("{0} is open elsewhere")]
    AlreadyOpen(PathBuf),
    /// The store was closed ([`DataStore::close`]).
    #[error("the data store is closed")]
    Closed,
    /// A stored record that does not decode: the file was written by
    /// something else.
    #[error("customer {id} does not decode: {why}")]
    Corrupt {
        /// The record's id.
        id: u64,
        /// Why.
        why: String,
    },
    /// redb failed (disk, file, transaction).
    #[error("storage: {0}")]
    Storage(#[from] redb::Error),
}

fn storage<E: Into<redb::Error>>(e: E) -> DataError {
    DataError::Storage(e.into())
}

/// Why the data service refused a call: the `reason` of [`DATA_REFUSED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataRefusal {
    /// A stale version ([`DataError::Conflict`]).
    Conflict,
    /// An unknown id ([`DataError::NotFound`]).
    NotFound,
    /// A bad email or name ([`DataError::BadEmail`], [`DataError::BadName`]).
    Invalid,
    /// The store could not do it (closed, locked, corrupt, disk).
    Storage,
}

impl DataRefusal {
    /// Every reason, for docs and counters.
    pub const ALL: [DataRefusal; 4] = [
        DataRefusal::Conflict,
        DataRefusal::NotFound,
        DataRefusal::Invalid,
        DataRefusal::Storage,
    ];

    /// The label.
    pub const fn as_str(self) -> &'static str {
        match self {
            DataRefusal::Conflict => "conflict",
            DataRefusal::NotFound => "not_found",
            DataRefusal::Invalid => "invalid",
            DataRefusal::Storage => "storage",
        }
    }
}

impl DataError {
    /// The refusal reason it is counted under.
    pub fn refusal(&self) -> DataRefusal {
        match self {
            DataError::Conflict { .. } => DataRefusal::Conflict,
            DataError::NotFound(_) => DataRefusal::NotFound,
            DataError::BadEmail(_) | DataError::BadName(_) => DataRefusal::Invalid,
            _ => DataRefusal::Storage,
        }
    }

    /// The remote error a caller gets: `conflict`, `not_found`,
    /// `bad_request`, or `internal` (the details of a storage failure
    /// stay in this node's log).
    pub fn to_remote(&self) -> RemoteError {
        match self {
            DataError::Conflict { .. } => RemoteError::new(RemoteCode::Conflict, self.to_string()),
            DataError::NotFound(_) => RemoteError::new(NOT_FOUND, self.to_string()),
            DataError::BadEmail(_) | DataError::BadName(_) => {
                RemoteError::new(RemoteCode::BadRequest, self.to_string())
            }
            other => {
                tracing::warn!(error = %other, "the data service failed a call");
                RemoteError::new(INTERNAL, "the data service cannot do it now")
            }
        }
    }
}

/// The email as stored: trimmed, lower-cased, checked.
pub fn normalise_email(email: &str) -> Result<String, DataError> {
    let e = email.trim().to_lowercase();
    let ok = e.len() <= MAX_EMAIL
        && !e.chars().any(char::is_whitespace)
        && matches!(e.split_once('@'), Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains('@'));
    if ok {
        Ok(e)
    } else {
        Err(DataError::BadEmail(email.chars().take(64).collect()))
    }
}

fn check_name(name: &str) -> Result<(), DataError> {
    if name.len() > MAX_NAME {
        return Err(DataError::BadName(name.len()));
    }
    Ok(())
}

fn decode_customer(id: u64, raw: &[u8]) -> Result<Customer, DataError> {
    rmp_serde::from_slice(raw).map_err(|e| DataError::Corrupt {
        id,
        why: e.to_string(),
    })
}

fn encode_customer(c: &Customer) -> Vec<u8> {
    // A struct of strings and integers always encodes.
    rmp_serde::to_vec_named(c).unwrap_or_default()
}

/// Customers in a redb file.
///
/// Every method blocks on the disk (a write waits for fsync): call them
/// from `spawn_blocking` in async code, as [`serve`] does.
#[derive(Debug)]
pub struct DataStore {
    /// Every call holds it shared while it runs; [`DataStore::close`]
    /// takes it exclusively, so the file is released when close returns.
    db: RwLock<Option<redb::Database>>,
    path: PathBuf,
    boot: u64,
    rows_at_open: Rows,
}

impl DataStore {
    /// Opens the store at `path`, creating the file and its tables if
    /// needed.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, DataError> {
        let path = path.as_ref().to_path_buf();
        let db = match redb::Database::create(&path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(DataError::AlreadyOpen(path))
            }
            Err(e) => return Err(storage(e)),
        };
        let tx = db.begin_write().map_err(storage)?;
        {
            tx.open_table(CUSTOMERS).map_err(storage)?;
            tx.open_table(EMAILS).map_err(storage)?;
            tx.open_table(META).map_err(storage)?;
        }
        tx.commit().map_err(storage)?;
        let store = DataStore {
            db: RwLock::new(Some(db)),
            path,
            boot: crate::wire::random_u64() | 1,
            rows_at_open: Rows::default(),
        };
        let rows_at_open = store.rows()?;
        Ok(DataStore {
            rows_at_open,
            ..store
        })
    }

    fn db(&self) -> Result<RwLockReadGuard<'_, Option<redb::Database>>, DataError> {
        let g = self.db.read();
        if g.is_none() {
            return Err(DataError::Closed);
        }
        Ok(g)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// This opening's boot id (see [`Stored::boot`]).
    pub fn boot(&self) -> u64 {
        self.boot
    }

    /// The rows the file held when it was opened.
    pub fn rows_at_open(&self) -> Rows {
        self.rows_at_open
    }

    /// Waits for the calls in progress, then closes the file: when it
    /// returns the file can be opened again. Every call after this is
    /// [`DataError::Closed`].
    pub fn close(&self) {
        drop(self.db.write().take());
    }

    /// The customer with `email`, made (version 1) if there is none, in
    /// one write transaction. `created` says which.
    pub fn create_customer(&self, email: &str, name: &str) -> Result<(Customer, bool), DataError> {
        let email = normalise_email(email)?;
        check_name(name)?;
        let guard = self.db()?;
        let db = guard.as_ref().ok_or(DataError::Closed)?;
        let tx = db.begin_write().map_err(storage)?;
        let out =
            {
                let mut emails = tx.open_table(EMAILS).map_err(storage)?;
                let mut customers = tx.open_table(CUSTOMERS).map_err(storage)?;
                let existing = emails
                    .get(email.as_str())
                    .map_err(storage)?
                    .map(|g| g.value());
                match existing {
                    Some(id) => {
                        let raw = customers.get(id).map_err(storage)?.ok_or_else(|| {
                            DataError::Corrupt {
                                id,
                                why: "indexed by email but not stored".into(),
                            }
                        })?;
                        (decode_customer(id, raw.value())?, false)
                    }
                    None => {
                        let mut meta = tx.open_table(META).map_err(storage)?;
                        let id = meta
                            .get("next_id")
                            .map_err(storage)?
                            .map_or(1, |g| g.value());
                        meta.insert("next_id", id + 1).map_err(storage)?;
                        let c = Customer {
                            id,
                            email: email.clone(),
                            name: name.to_owned(),
                            version: 1,
                        };
                        customers
                            .insert(id, encode_customer(&c).as_slice())
                            .map_err(storage)?;
                        emails.insert(email.as_str(), id).map_err(storage)?;
                        (c, true)
                    }
                }
            };
        if out.1 {
            tx.commit().map_err(storage)?;
        } else {
            tx.abort().map_err(storage)?;
        }
        Ok(out)
    }

    /// The customer with `id`.
    pub fn get(&self, id: u64) -> Result<Customer, DataError> {
        let guard = self.db()?;
        let db = guard.as_ref().ok_or(DataError::Closed)?;
        let tx = db.begin_read().map_err(storage)?;
        let t = tx.open_table(CUSTOMERS).map_err(storage)?;
        let raw = t.get(id).map_err(storage)?.ok_or(DataError::NotFound(id))?;
        decode_customer(id, raw.value())
    }

    /// Sets the name of customer `id` if it is at `expected_version`
    /// (then at the next one); else [`DataError::Conflict`], nothing
    /// changed.
    pub fn update(
        &self,
        id: u64,
        expected_version: u64,
        name: &str,
    ) -> Result<Customer, DataError> {
        check_name(name)?;
        let guard = self.db()?;
        let db = guard.as_ref().ok_or(DataError::Closed)?;
        let tx = db.begin_write().map_err(storage)?;
        let c = {
            let mut customers = tx.open_table(CUSTOMERS).map_err(storage)?;
            let mut c = {
                let raw = customers
                    .get(id)
                    .map_err(storage)?
                    .ok_or(DataError::NotFound(id))?;
                decode_customer(id, raw.value())?
            };
            if c.version != expected_version {
                return Err(DataError::Conflict {
                    id,
                    expected: expected_version,
                    current: c.version,
                });
            }
            c.version += 1;
            c.name = name.to_owned();
            customers
                .insert(id, encode_customer(&c).as_slice())
                .map_err(storage)?;
            c
        };
        tx.commit().map_err(storage)?;
        Ok(c)
    }

    /// Counts the rows, in one read transaction.
    pub fn rows(&self) -> Result<Rows, DataError> {
        let guard = self.db()?;
        let db = guard.as_ref().ok_or(DataError::Closed)?;
        let tx = db.begin_read().map_err(storage)?;
        let customers = tx.open_table(CUSTOMERS).map_err(storage)?.len();
        let emails = tx.open_table(EMAILS).map_err(storage)?.len();
        Ok(Rows {
            customers: customers.map_err(storage)?,
            emails: emails.map_err(storage)?,
        })
    }
}

/// Runs a store call off the async threads.
async fn blocking<T: Send + 'static>(
    store: &Arc<DataStore>,
    f: impl FnOnce(&DataStore) -> Result<T, DataError> + Send + 'static,
) -> Result<T, DataError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .unwrap_or(Err(DataError::Closed))
}

/// How long the data service waits for subscribers to take a [`Changed`].
pub const PUBLISH_TIMEOUT: Duration = Duration::from_millis(250);

/// Counts a refusal and makes the caller's error.
fn refuse(e: DataError) -> RemoteError {
    metrics::counter!(DATA_REFUSED, "reason" => e.refusal().as_str()).increment(1);
    e.to_remote()
}

/// Adds the data service ([`CREATE`], [`GET`], [`UPDATE`]) to `builder`,
/// answering from `store` and publishing a [`Changed`] on
/// [`CHANGED_TOPIC`] after each committed change, before answering.
/// `on_publish` is told how many subscriptions took each one (0 when
/// the node knows none).
pub fn serve(
    builder: NodeBuilder,
    store: Arc<DataStore>,
    on_publish: impl Fn(u32) + Send + Sync + 'static,
) -> NodeBuilder {
    let handle = builder.handle();
    let on_publish = Arc::new(on_publish);
    let publish = move |c: Changed| {
        let (handle, on_publish) = (handle.clone(), on_publish.clone());
        async move {
            let Some(node) = handle.node() else { return };
            let n = node
                .publish(CHANGED_TOPIC, &c, PUBLISH_TIMEOUT)
                .await
                .unwrap_or(0);
            on_publish(n);
        }
    };
    let (s1, s2, s3) = (store.clone(), store.clone(), store);
    let p1 = publish.clone();
    builder
        .serve(CREATE, move |req: crate::Request<CreateCustomer>| {
            let (store, publish) = (s1.clone(), p1.clone());
            async move {
                let CreateCustomer { email, name } = req.body;
                let (customer, created) =
                    blocking(&store, move |s| s.create_customer(&email, &name))
                        .await
                        .map_err(refuse)?;
                if created {
                    publish(Changed {
                        id: customer.id,
                        version: customer.version,
                    })
                    .await;
                }
                Ok::<_, RemoteError>(Stored {
                    customer,
                    created,
                    boot: store.boot(),
                })
            }
        })
        .serve(GET, move |req: crate::Request<GetCustomer>| {
            let store = s2.clone();
            async move {
                let id = req.body.id;
                let customer = blocking(&store, move |s| s.get(id)).await.map_err(refuse)?;
                Ok::<_, RemoteError>(Stored {
                    customer,
                    created: false,
                    boot: store.boot(),
                })
            }
        })
        .serve(UPDATE, move |req: crate::Request<UpdateCustomer>| {
            let (store, publish) = (s3.clone(), publish.clone());
            async move {
                let UpdateCustomer {
                    id,
                    expected_version,
                    name,
                } = req.body;
                let customer = blocking(&store, move |s| s.update(id, expected_version, &name))
                    .await
                    .map_err(refuse)?;
                publish(Changed {
                    id: customer.id,
                    version: customer.version,
                })
                .await;
                Ok::<_, RemoteError>(Stored {
                    customer,
                    created: false,
                    boot: store.boot(),
                })
            }
        })
}

/// Why an entry left a cache: the `reason` of [`CACHE_EVICTED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Eviction {
    /// The cache was full; the entry filled longest ago went.
    Capacity,
    /// It was older than the TTL when looked up.
    Expired,
    /// A [`Changed`] with a newer version removed it.
    Invalidated,
    /// A read came back with an older version than the cache already
    /// knows of (it raced an invalidation): not cached.
    StaleFill,
}

impl Eviction {
    /// Every reason, for docs and counters.
    pub const ALL: [Eviction; 4] = [
        Eviction::Capacity,
        Eviction::Expired,
        Eviction::Invalidated,
        Eviction::StaleFill,
    ];

    /// The label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Eviction::Capacity => "capacity",
            Eviction::Expired => "expired",
            Eviction::Invalidated => "invalidated",
            Eviction::StaleFill => "stale_fill",
        }
    }
}

/// A cache's size and freshness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// Entries held at most (values and invalidation markers); each costs
    /// its value plus about 64 bytes. At least 1.
    pub capacity: usize,
    /// How long a value may be served after its read started: the bound
    /// on staleness when invalidations are missed. Shorter: fresher
    /// values, more reads at the data service.
    pub ttl: Duration,
}

impl Default for CacheConfig {
    /// 1024 entries, 1 s: a small working set, staleness bounded by a
    /// second.
    fn default() -> Self {
        CacheConfig {
            capacity: 1024,
            ttl: Duration::from_secs(1),
        }
    }
}

/// What the cache has counted since it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CacheStats {
    /// Look-ups answered from the cache.
    pub hits: u64,
    /// Look-ups that were not.
    pub misses: u64,
    /// Entries gone by each reason, in [`Eviction::ALL`] order.
    pub evicted: [u64; 4],
    /// Entries held now.
    pub len: u64,
}

impl CacheStats {
    /// Entries gone for `why`.
    pub fn evicted(&self, why: Eviction) -> u64 {
        self.evicted[Eviction::ALL.iter().position(|e| *e == why).unwrap_or(0)]
    }
}

#[derive(Debug, Clone)]
struct Slot<V> {
    /// `None`: an invalidation marker.
    value: Option<V>,
    version: u64,
    /// When the read that filled it started (or the invalidation came).
    since: Instant,
    /// Its place in the fill order.
    seq: u64,
}

/// What a look-up found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<V> {
    /// A value younger than the TTL, and its age.
    Hit(V, Duration),
    /// Nothing to serve: read through.
    Miss,
}

/// A bounded cache of versioned values with a TTL, keyed by id; no I/O,
/// the time is passed in. What each call did is in [`TtlCache::stats`]
/// and returned as [`Eviction`]s for the caller to count.
#[derive(Debug)]
pub struct TtlCache<V> {
    config: CacheConfig,
    slots: HashMap<u64, Slot<V>>,
    /// Fill order: seq → key.
    order: BTreeMap<u64, u64>,
    next_seq: u64,
    stats: CacheStats,
}

impl<V: Clone> TtlCache<V> {
    /// An empty cache.
    pub fn new(config: CacheConfig) -> Self {
        TtlCache {
            config: CacheConfig {
                capacity: config.capacity.max(1),
                ..config
            },
            slots: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
            stats: CacheStats::default(),
        }
    }

    /// Its settings.
    pub fn config(&self) -> CacheConfig {
        self.config
    }

    fn count(&mut self, why: Eviction) -> Eviction {
        if let Some(i) = Eviction::ALL.iter().position(|e| *e == why) {
            self.stats.evicted[i] += 1;
        }
        why
    }

    fn remove(&mut self, key: u64) -> Option<Slot<V>> {
        let s = self.slots.remove(&key)?;
        self.order.remove(&s.seq);
        Some(s)
    }

    fn put(&mut self, key: u64, slot: Slot<V>, out: &mut Vec<Eviction>) {
        self.remove(key);
        while self.slots.len() >= self.config.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.slots.remove(&oldest);
            out.push(self.count(Eviction::Capacity));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, key);
        self.slots.insert(key, Slot { seq, ..slot });
    }

    /// The value for `key` if it is younger than the TTL at `now`; an
    /// older one is dropped ([`Eviction::Expired`]).
    pub fn lookup(&mut self, key: u64, now: Instant) -> (Lookup<V>, Option<Eviction>) {
        let ttl = self.config.ttl;
        let found = self
            .slots
            .get(&key)
            .map(|s| (now.saturating_duration_since(s.since), s.value.clone()));
        match found {
            Some((age, Some(v))) if age < ttl => {
                self.stats.hits += 1;
                (Lookup::Hit(v, age), None)
            }
            Some((age, value)) => {
                self.stats.misses += 1;
                if age >= ttl {
                    self.remove(key);
                    // A marker that ages out is not a value evicted.
                    let why = value.map(|_| self.count(Eviction::Expired));
                    return (Lookup::Miss, why);
                }
                (Lookup::Miss, None)
            }
            None => {
                self.stats.misses += 1;
                (Lookup::Miss, None)
            }
        }
    }

    /// Stores `value` at `version` for `key`, read from the source at
    /// `read_at`, unless the cache already knows a newer version that is
    /// still within the TTL ([`Eviction::StaleFill`]). Returns what went.
    pub fn fill(
        &mut self,
        key: u64,
        value: V,
        version: u64,
        read_at: Instant,
        now: Instant,
    ) -> Vec<Eviction> {
        let mut out = Vec::new();
        if let Some(s) = self.slots.get(&key) {
            let fresh = now.saturating_duration_since(s.since) < self.config.ttl;
            if fresh && s.version > version {
                out.push(self.count(Eviction::StaleFill));
                return out;
            }
        }
        if now.saturating_duration_since(read_at) >= self.config.ttl {
            // Already too old to serve.
            return out;
        }
        self.put(
            key,
            Slot {
                value: Some(value),
                version,
                since: read_at,
                seq: 0,
            },
            &mut out,
        );
        out
    }

    /// `key` is at `version` now: a cached older value goes
    /// ([`Eviction::Invalidated`]) and a marker stays for a TTL, so that
    /// an older read in flight is not cached after it.
    pub fn invalidate(&mut self, key: u64, version: u64, now: Instant) -> Vec<Eviction> {
        let mut out = Vec::new();
        match self.slots.get(&key) {
            Some(s) if s.version >= version => return out,
            Some(s) if s.value.is_some() => out.push(self.count(Eviction::Invalidated)),
            _ => {}
        }
        self.put(
            key,
            Slot {
                value: None,
                version,
                since: now,
                seq: 0,
            },
            &mut out,
        );
        out
    }

    /// What it counted, and its size now.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            len: self.slots.len() as u64,
            ..self.stats
        }
    }
}

/// A customer read through a [`CustomerCache`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cached {
    /// The customer.
    pub customer: Customer,
    /// Whether it came from the cache.
    pub hit: bool,
    /// How long ago its read at the data service started, µs (0 for a
    /// miss).
    pub age_us: u64,
    /// The data service's boot id, from the read that filled it.
    pub boot: u64,
}

/// Why a read through the cache failed.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The data service has no such customer.
    #[error("no customer {0}")]
    NotFound(u64),
    /// The call to the data service failed (no member, timeout, …).
    #[error(transparent)]
    Call(#[from] CallError),
}

impl CacheError {
    /// The remote error a caller of [`serve_cached`] gets: `not_found`,
    /// or the data service's failure as `upstream`.
    pub fn to_remote(&self) -> RemoteError {
        match self {
            CacheError::NotFound(_) => RemoteError::new(NOT_FOUND, self.to_string()),
            CacheError::Call(e) => crate::topology::chain::upstream_error(GET, e),
        }
    }
}

/// A read-through cache of customers in front of the data service, named
/// (the `cache` label of its counters).
#[derive(Debug)]
pub struct CustomerCache {
    name: String,
    inner: Mutex<TtlCache<(Customer, u64)>>,
}

impl CustomerCache {
    /// An empty cache named `name` (bounded label: a service's name).
    pub fn new(name: impl Into<String>, config: CacheConfig) -> Arc<Self> {
        let name = name.into();
        for r in ["hit", "miss"] {
            metrics::counter!(CACHE_LOOKUPS, "cache" => name.clone(), "result" => r).absolute(0);
        }
        for e in Eviction::ALL {
            metrics::counter!(CACHE_EVICTED, "cache" => name.clone(), "reason" => e.as_str())
                .absolute(0);
        }
        Arc::new(CustomerCache {
            name,
            inner: Mutex::new(TtlCache::new(config)),
        })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn evicted(&self, why: impl IntoIterator<Item = Eviction>) {
        for e in why {
            metrics::counter!(CACHE_EVICTED, "cache" => self.name.clone(), "reason" => e.as_str())
                .increment(1);
        }
    }

    /// Customer `id`: from the cache while fresh, else read from the data
    /// service ([`GET`], idempotent, within `timeout`) and cached.
    pub async fn get(&self, node: &Node, id: u64, timeout: Duration) -> Result<Cached, CacheError> {
        let (found, why) = self.inner.lock().lookup(id, Instant::now());
        self.evicted(why);
        if let Lookup::Hit((customer, boot), age) = found {
            metrics::counter!(CACHE_LOOKUPS, "cache" => self.name.clone(), "result" => "hit")
                .increment(1);
            return Ok(Cached {
                customer,
                hit: true,
                age_us: age.as_micros() as u64,
                boot,
            });
        }
        metrics::counter!(CACHE_LOOKUPS, "cache" => self.name.clone(), "result" => "miss")
            .increment(1);
        let read_at = Instant::now();
        let opts = CallOptions::default().timeout(timeout).idempotent();
        let stored: Stored = match node.request_with(GET, &GetCustomer { id }, opts).await {
            Ok(s) => s,
            Err(CallError::Request(RequestError::Remote(e))) if e.code == NOT_FOUND => {
                return Err(CacheError::NotFound(id))
            }
            Err(e) => return Err(e.into()),
        };
        let why = self.inner.lock().fill(
            id,
            (stored.customer.clone(), stored.boot),
            stored.customer.version,
            read_at,
            Instant::now(),
        );
        self.evicted(why);
        Ok(Cached {
            customer: stored.customer,
            hit: false,
            age_us: 0,
            boot: stored.boot,
        })
    }

    /// Applies a change event.
    pub fn invalidate(&self, changed: Changed) {
        let why = self
            .inner
            .lock()
            .invalidate(changed.id, changed.version, Instant::now());
        self.evicted(why);
    }

    /// What it counted.
    pub fn stats(&self) -> CacheStats {
        self.inner.lock().stats()
    }
}

/// Serves `service` on `builder`: [`GetCustomer`] → [`Cached`], read
/// through `cache` from the data service within `timeout`.
pub fn serve_cached(
    builder: NodeBuilder,
    service: impl Into<String>,
    cache: Arc<CustomerCache>,
    timeout: Duration,
) -> NodeBuilder {
    let handle = builder.handle();
    builder.serve(service, move |req: crate::Request<GetCustomer>| {
        let (cache, handle) = (cache.clone(), handle.clone());
        async move {
            let node = handle
                .node()
                .ok_or_else(|| RemoteError::new(RemoteCode::Stopping, "the node is stopping"))?;
            cache
                .get(&node, req.body.id, timeout)
                .await
                .map_err(|e| e.to_remote())
        }
    })
}

/// Subscribes `node` to [`CHANGED_TOPIC`] (up to `capacity` events
/// waiting; beyond that they are dropped and counted as
/// `subscriber_queue_full`, and the TTL bounds the staleness that costs).
pub fn subscribe(node: &Node, capacity: usize) -> NodeSubscription {
    node.subscribe(CHANGED_TOPIC, capacity)
}

/// Applies every change event of `sub` to `cache` until the node is gone.
/// An event that does not decode is skipped (counted as `bad_body`).
pub async fn listen(mut sub: NodeSubscription, cache: Arc<CustomerCache>) {
    while let Some(p) = sub.recv().await {
        match p.decode::<Changed>() {
            Ok(c) => cache.invalidate(c),
            Err(_) => crate::telemetry::dropped(crate::telemetry::DropReason::BadBody, 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Arc<DataStore>) {
        let dir = tempfile::tempdir().unwrap();
        let s = DataStore::open(dir.path().join("customers.redb")).unwrap();
        (dir, Arc::new(s))
    }

    #[test]
    fn creating_the_same_email_twice_makes_one_customer() {
        let (_d, s) = store();
        let (a, made_a) = s.create_customer("Ada@Example.com ", "Ada").unwrap();
        let (b, made_b) = s
            .create_customer("ada@example.com", "Someone else")
            .unwrap();
        assert!(made_a && !made_b);
        assert_eq!(a, b, "the second create returns the first customer");
        assert_eq!(b.name, "Ada");
        let (c, made_c) = s.create_customer("bob@example.com", "Bob").unwrap();
        assert!(made_c);
        assert_ne!(c.id, a.id);
        assert_eq!(
            s.rows().unwrap(),
            Rows {
                customers: 2,
                emails: 2
            }
        );
    }

    #[test]
    fn concurrent_creates_of_one_email_make_one_customer_and_share_its_id() {
        let (_d, s) = store();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let s = s.clone();
                std::thread::spawn(move || s.create_customer("eve@example.com", &format!("e{i}")))
            })
            .collect();
        let results: Vec<(Customer, bool)> = threads
            .into_iter()
            .map(|t| t.join().unwrap().unwrap())
            .collect();
        assert_eq!(results.iter().filter(|(_, made)| *made).count(), 1);
        let id = results[0].0.id;
        assert!(results.iter().all(|(c, _)| c.id == id), "{results:?}");
        assert_eq!(s.rows().unwrap().customers, 1);
    }

    #[test]
    fn a_stale_version_is_a_conflict_and_changes_nothing() {
        let (_d, s) = store();
        let (c, _) = s.create_customer("a@b.c", "A").unwrap();
        let c2 = s.update(c.id, 1, "A2").unwrap();
        assert_eq!(c2.version, 2);
        let e = s.update(c.id, 1, "lost update").unwrap_err();
        assert!(
            matches!(
                e,
                DataError::Conflict {
                    expected: 1,
                    current: 2,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(e.refusal(), DataRefusal::Conflict);
        assert_eq!(e.to_remote().known_code(), Some(RemoteCode::Conflict));
        assert_eq!(s.get(c.id).unwrap().name, "A2");
        assert!(matches!(s.update(99, 1, "x"), Err(DataError::NotFound(99))));
        assert_eq!(s.get(99).unwrap_err().to_remote().code, NOT_FOUND);
    }

    #[test]
    fn bad_emails_and_names_are_refused_as_bad_requests() {
        let (_d, s) = store();
        for e in ["", "no-at", "@x", "x@", "a@b@c", "a b@c", &"x".repeat(300)] {
            let err = s.create_customer(e, "n").unwrap_err();
            assert!(matches!(err, DataError::BadEmail(_)), "{e:?}: {err}");
            assert_eq!(err.to_remote().known_code(), Some(RemoteCode::BadRequest));
        }
        let err = s
            .create_customer("a@b", &"n".repeat(MAX_NAME + 1))
            .unwrap_err();
        assert!(matches!(err, DataError::BadName(_)), "{err}");
        assert_eq!(s.rows().unwrap().customers, 0);
    }

    #[test]
    fn the_data_survives_reopening_and_a_second_opener_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.redb");
        let s = DataStore::open(&path).unwrap();
        let boot = s.boot();
        let (c, _) = s.create_customer("x@y.z", "X").unwrap();
        s.update(c.id, 1, "X2").unwrap();
        assert!(matches!(
            DataStore::open(&path),
            Err(DataError::AlreadyOpen(_))
        ));
        s.close();
        assert!(matches!(s.get(c.id), Err(DataError::Closed)));
        drop(s);
        let s = DataStore::open(&path).unwrap();
        assert_ne!(s.boot(), boot);
        assert_eq!(s.rows_at_open().customers, 1);
        assert_eq!(s.get(c.id).unwrap().version, 2);
        let (again, made) = s.create_customer("X@Y.Z", "X").unwrap();
        assert_eq!((again.id, made), (c.id, false));
        let (next, _) = s.create_customer("w@y.z", "W").unwrap();
        assert_eq!(next.id, c.id + 1, "ids are never reused");
    }

    fn cache(capacity: usize, ttl_ms: u64) -> TtlCache<&'static str> {
        TtlCache::new(CacheConfig {
            capacity,
            ttl: Duration::from_millis(ttl_ms),
        })
    }

    #[test]
    fn a_value_is_served_until_its_ttl_then_read_again() {
        let mut c = cache(4, 100);
        let t0 = Instant::now();
        assert_eq!(c.lookup(1, t0).0, Lookup::Miss);
        assert!(c.fill(1, "v1", 1, t0, t0).is_empty());
        let at = t0 + Duration::from_millis(99);
        assert_eq!(
            c.lookup(1, at).0,
            Lookup::Hit("v1", Duration::from_millis(99))
        );
        let (found, why) = c.lookup(1, t0 + Duration::from_millis(100));
        assert_eq!((found, why), (Lookup::Miss, Some(Eviction::Expired)));
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.len), (1, 2, 0));
        assert_eq!(s.evicted(Eviction::Expired), 1);
    }

    #[test]
    fn the_age_counts_from_when_the_read_started() {
        let mut c = cache(4, 100);
        let t0 = Instant::now();
        c.fill(1, "v1", 1, t0, t0 + Duration::from_millis(60));
        assert_eq!(
            c.lookup(1, t0 + Duration::from_millis(99)).0,
            Lookup::Hit("v1", Duration::from_millis(99))
        );
        assert_eq!(c.lookup(1, t0 + Duration::from_millis(100)).0, Lookup::Miss);
        // A read that took longer than the TTL is not cached at all.
        c.fill(2, "v1", 1, t0, t0 + Duration::from_millis(150));
        assert_eq!(c.stats().len, 0);
    }

    #[test]
    fn an_invalidation_removes_the_value_and_blocks_an_older_fill() {
        let mut c = cache(4, 100);
        let t0 = Instant::now();
        c.fill(1, "v1", 1, t0, t0);
        assert_eq!(c.invalidate(1, 2, t0), vec![Eviction::Invalidated]);
        assert_eq!(c.lookup(1, t0).0, Lookup::Miss);
        // A read that started before the change comes back with v1.
        assert_eq!(c.fill(1, "v1", 1, t0, t0), vec![Eviction::StaleFill]);
        assert_eq!(c.lookup(1, t0).0, Lookup::Miss);
        assert!(c.fill(1, "v2", 2, t0, t0).is_empty());
        assert_eq!(c.lookup(1, t0).0, Lookup::Hit("v2", Duration::ZERO));
        // An invalidation for a version it already has changes nothing.
        assert!(c.invalidate(1, 2, t0).is_empty());
        assert_eq!(c.lookup(1, t0).0, Lookup::Hit("v2", Duration::ZERO));
    }

    #[test]
    fn a_missed_invalidation_is_served_stale_for_at_most_the_ttl() {
        let mut c = cache(4, 100);
        let t0 = Instant::now();
        c.fill(1, "v1", 1, t0, t0);
        // v2 is written at t0 + 10 ms; its invalidation never arrives.
        let mut last_stale = None;
        for ms in (10..300).step_by(5) {
            let now = t0 + Duration::from_millis(ms);
            match c.lookup(1, now).0 {
                Lookup::Hit("v1", age) => {
                    assert!(age < Duration::from_millis(100));
                    last_stale = Some(ms);
                }
                _ => {
                    c.fill(1, "v2", 2, now, now);
                }
            }
        }
        assert_eq!(last_stale, Some(95));
    }

    #[test]
    fn a_full_cache_drops_the_entry_filled_longest_ago() {
        let mut c = cache(2, 1000);
        let t0 = Instant::now();
        c.fill(1, "a", 1, t0, t0);
        c.fill(2, "b", 1, t0, t0);
        c.fill(1, "a", 1, t0, t0); // refilled: now the newest
        assert_eq!(c.fill(3, "c", 1, t0, t0), vec![Eviction::Capacity]);
        assert_eq!(c.lookup(2, t0).0, Lookup::Miss);
        assert!(matches!(c.lookup(1, t0).0, Lookup::Hit("a", _)));
        assert!(matches!(c.lookup(3, t0).0, Lookup::Hit("c", _)));
        assert_eq!(c.stats().len, 2);
        // Markers count against the bound too.
        for k in 10..20 {
            c.invalidate(k, 1, t0);
        }
        assert_eq!(c.stats().len, 2);
    }

    #[test]
    fn every_reason_has_a_distinct_label() {
        let r: std::collections::HashSet<_> = DataRefusal::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(r.len(), DataRefusal::ALL.len());
        let e: std::collections::HashSet<_> = Eviction::ALL.iter().map(|e| e.as_str()).collect();
        assert_eq!(e.len(), Eviction::ALL.len());
    }
}
