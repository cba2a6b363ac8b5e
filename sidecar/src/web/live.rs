//! The live feed of the pages: one reader of the engine's event stream fans order
//! changes out to every open page, and keeps what the pages need from the stream.
//!
//! - **One reader.** A task reads the stream as the in-memory consumer [`CONSUMER`] and
//!   acknowledges in memory as it goes, so the stream's retention is never held by the
//!   pages. It publishes one [`Change`] per `OrderChanged` event on a
//!   `tokio::sync::broadcast` channel of [`FANOUT_CAPACITY`] entries: every browser's
//!   server-sent-event stream is a receiver. A slow browser does not hold memory: its
//!   receiver falls behind the ring, gets `Lagged`, and is told to resynchronize (the
//!   page fetches itself again). Memory is the ring, whatever the browsers do.
//! - **Link index.** Customer links are HMACs of the order id (`crate::order_link`); the
//!   reader indexes the token of every order it sees, after first indexing every order
//!   the engine remembers, so `/p/<token>` resolves in one map lookup. At most
//!   [`LINK_INDEX_MAX`] entries: beyond that the index is rebuilt from the engine's
//!   orders (which forgets the oldest finished ones itself).
//! - **Today's KPIs.** The engine's [`Kpis`] fold per store over the records of the
//!   store's current local day (from the oldest record the stream still held when the
//!   pages started; a new day starts a new fold).
//!
//! Architecture invariant: the pages never read the stream themselves; only this reader
//! does, and nothing it keeps grows with the number of browsers.

use std::{
    collections::HashMap,
    sync::{Arc, Weak},
    time::Duration,
};

use parking_lot::{Mutex, RwLock};
use pickline_engine::{
    Event, Kpis, LoggedRecord, Lsn, OrderId, OrderStatus, StoreId, StoreKpis, StreamError,
    durable::DurableEngine,
};
use tokio::sync::broadcast;

use super::EngineSource;
use crate::order_link::{OrderLinks, TokenBytes};

/// The stream consumer the pages read as (in memory; acknowledged as read).
pub const CONSUMER: &str = "web-pages";
/// Order changes buffered for the browsers; a browser further behind resynchronizes.
pub const FANOUT_CAPACITY: usize = 1_024;
/// Customer link tokens indexed at most before the index is rebuilt.
pub const LINK_INDEX_MAX: usize = 4_000_000;
/// Records read per stream read.
const READ_BATCH: usize = 1_024;
/// How often the reader polls the stream when it is idle.
const POLL: Duration = Duration::from_millis(100);

/// What the browsers are told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// An order changed; its status after.
    Order {
        /// The order.
        order: OrderId,
        /// Its status after the change.
        status: OrderStatus,
    },
    /// Changes were missed: fetch the page again.
    Resync,
}

/// What the reader keeps for the pages.
#[derive(Debug)]
pub struct Live {
    tx: broadcast::Sender<Change>,
    links: OrderLinks,
    index: RwLock<HashMap<TokenBytes, OrderId>>,
    kpis: Mutex<HashMap<StoreId, DayKpis>>,
}

#[derive(Debug)]
struct DayKpis {
    day: jiff::civil::Date,
    fold: Kpis,
}

impl Live {
    /// A feed deriving customer links with `links`; start its reader with [`Live::spawn`].
    pub fn new(links: OrderLinks) -> Arc<Live> {
        let (tx, _) = broadcast::channel(FANOUT_CAPACITY);
        Arc::new(Live {
            tx,
            links,
            index: RwLock::new(HashMap::new()),
            kpis: Mutex::new(HashMap::new()),
        })
    }

    /// Starts the reader; it stops when the last handle to `live` is dropped.
    pub fn spawn(live: &Arc<Live>, source: EngineSource) {
        let weak = Arc::downgrade(live);
        tokio::spawn(read_loop(weak, source));
    }

    /// A receiver of the changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.tx.subscribe()
    }

    /// The order a customer link token names.
    pub fn resolve(&self, token: &TokenBytes) -> Option<OrderId> {
        self.index.read().get(token).copied()
    }

    /// The link derivation.
    pub fn links(&self) -> &OrderLinks {
        &self.links
    }

    /// Today's KPIs of `store` (empty when nothing happened there today).
    pub fn today(&self, store: StoreId, today: jiff::civil::Date) -> StoreKpis {
        match self.kpis.lock().get(&store) {
            Some(d) if d.day == today => d.fold.store(store),
            _ => StoreKpis::default(),
        }
    }

    /// Indexes every order the engine remembers (start-up, and when the index is full).
    pub fn reindex(&self, db: &DurableEngine) {
        let engine = db.engine();
        let mut fresh = HashMap::new();
        for (_, def) in engine.stores() {
            let Ok(views) = engine.store_orders(&def.external_id, None, usize::MAX, |_| true)
            else {
                continue;
            };
            for v in views {
                fresh.insert(self.links.token_bytes(v.order), v.order);
            }
        }
        *self.index.write() = fresh;
    }

    /// Indexes `order`'s link.
    pub fn index_order(&self, order: OrderId) {
        let token = self.links.token_bytes(order);
        if self.index.read().contains_key(&token) {
            return;
        }
        self.index.write().insert(token, order);
    }

    /// Takes one record into account: links, KPIs, and the browsers.
    fn observe(&self, rec: &LoggedRecord, zones: &mut ZoneCache, db: &DurableEngine) {
        let record = &rec.record;
        let mut stores_seen: Vec<StoreId> = Vec::new();
        for ev in &record.events {
            if let Event::OrderChanged { order, facts, .. } = ev {
                self.index_order(*order);
                let _ = self.tx.send(Change::Order {
                    order: *order,
                    status: facts.status(),
                });
            }
            if let Some(store) = ev.store()
                && !stores_seen.contains(&store)
            {
                stores_seen.push(store);
            }
        }
        let mut kpis = self.kpis.lock();
        for store in stores_seen {
            let Some(day) = zones.local_date(db, store, record.at.as_ms()) else {
                continue;
            };
            let entry = kpis.entry(store).or_insert_with(|| DayKpis {
                day,
                fold: Kpis::new(),
            });
            if entry.day != day {
                *entry = DayKpis {
                    day,
                    fold: Kpis::new(),
                };
            }
            entry.fold.observe(record);
        }
    }

    fn resync(&self) {
        let _ = self.tx.send(Change::Resync);
    }
}

/// Store time zones, looked up once per store.
#[derive(Default)]
pub struct ZoneCache(HashMap<StoreId, jiff::tz::TimeZone>);

impl ZoneCache {
    /// The store-local date of `at_ms` at `store`.
    pub fn local_date(
        &mut self,
        db: &DurableEngine,
        store: StoreId,
        at_ms: i64,
    ) -> Option<jiff::civil::Date> {
        let tz = match self.0.entry(store) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let def = db.engine().store_def(store)?;
                v.insert(jiff::tz::TimeZone::get(&def.time_zone).unwrap_or(jiff::tz::TimeZone::UTC))
            }
        };
        let ts = jiff::Timestamp::from_millisecond(at_ms).ok()?;
        Some(ts.to_zoned_datetime(tz.clone()).date())
    }
}

async fn read_loop(live: Weak<Live>, source: EngineSource) {
    let mut cursor: Option<Lsn> = None;
    let mut zones = ZoneCache::default();
    loop {
        let Some(live) = live.upgrade() else { return };
        let Some(db) = source() else {
            drop(live);
            tokio::time::sleep(POLL).await;
            continue;
        };
        let stream = db.stream();
        let after = match cursor {
            Some(c) => c,
            None => match stream.register_consumer(CONSUMER) {
                Ok(start) => {
                    live.reindex(&db);
                    cursor = Some(start);
                    start
                }
                Err(e) => {
                    tracing::warn!(error = %e, "web pages: cannot read the event stream");
                    drop(live);
                    tokio::time::sleep(POLL * 50).await;
                    continue;
                }
            },
        };
        let read = match stream.read(CONSUMER, after, READ_BATCH) {
            Ok(records) => records,
            Err(StreamError::Truncated { oldest, .. }) => {
                cursor = Some(Lsn(oldest.saturating_sub(1)));
                live.reindex(&db);
                live.resync();
                continue;
            }
            Err(_) => {
                cursor = None;
                continue;
            }
        };
        let full = read.len() == READ_BATCH;
        if let Some(last) = read.last() {
            let last = last.lsn;
            for rec in &read {
                live.observe(rec, &mut zones, &db);
            }
            if live.index.read().len() > LINK_INDEX_MAX {
                live.reindex(&db);
            }
            stream.ack(CONSUMER, last);
            cursor = Some(last);
        }
        drop(live);
        if !full {
            tokio::time::sleep(POLL).await;
        }
    }
}
