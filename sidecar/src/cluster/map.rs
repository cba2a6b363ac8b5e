//! The partition map as one node sees it: a local cache of the cluster bucket's
//! `store.*` keys (store to partition) and `lease.*` keys (partition to leader), fed by a
//! JetStream key-value watch ([`follow`]).
//!
//! The admission of every store-scoped request asks [`PartitionMap::place`] (through
//! [`crate::grpc::auth::Caller::authorize_store`], the one check every handler that names
//! a store already passes), so a node serves only the stores of its own partition and
//! answers the others with the partition and its leader's address (`WRONG_PARTITION`).
//!
//! A store the map does not name is served by whichever partition is asked (as before
//! the map was checked): the map is the operator's statement of where a store lives, and
//! a store without one has no other home to send the client to.
//!
//! The map also keeps where each partition's stores are (`geo.<partition>`, published by
//! its leader, [`publish_geo`]), so a node whose own stores cannot serve an allocation
//! asks the partitions next nearest ([`PartitionMap::partitions_near`],
//! [`crate::cluster::span`]) or names them.
//!
//! Until the watch has read the bucket once, the map does not know: store-scoped requests
//! are then refused as UNAVAILABLE (retry shortly) rather than served on a guess.

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt as _;
use parking_lot::RwLock;

use super::{ClusterConfig, ClusterError, cli::StoreEntry, lease::LeaseValue, node, wire};

/// How long [`follow`] waits before it watches again after NATS trouble.
const REWATCH_DELAY: Duration = Duration::from_millis(250);

/// The partition map cache. Cheap to clone; every clone sees the same map.
#[derive(Clone, Debug)]
pub struct PartitionMap(Arc<MapInner>);

#[derive(Debug)]
struct MapInner {
    /// This node's partition.
    own: String,
    state: RwLock<Option<MapState>>,
    /// Told when the map is first loaded ([`PartitionMap::loaded`]).
    loaded: tokio::sync::Notify,
}

/// What the bucket said, as of the watch's last entry.
#[derive(Debug, Default, Clone, PartialEq)]
struct MapState {
    /// Store external id to partition.
    stores: HashMap<String, String>,
    /// Partition to its lease's holder.
    leaders: HashMap<String, LeaseValue>,
    /// Partition to its stores' positions (degrees), as its leader published them.
    geo: HashMap<String, Vec<[f64; 2]>>,
}

/// What a partition's leader publishes under `geo.<partition>`: its stores' positions.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PartitionGeo {
    /// `[latitude, longitude]` in degrees, one per store (at most [`GEO_STORES_MAX`]).
    pub stores: Vec<[f64; 2]>,
}

/// Most store positions a partition publishes: 16,384 positions are about 600 KiB of
/// JSON, inside NATS's default 1 MiB message.
pub const GEO_STORES_MAX: usize = 16_384;

/// How often a leader looks whether its stores changed, to publish their positions.
pub const GEO_PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// Another partition that has a store near a position ([`PartitionMap::partitions_near`]).
#[derive(Debug, Clone, PartialEq)]
pub struct NearPartition {
    /// The partition.
    pub partition: String,
    /// Its leader, if the map knows one.
    pub leader: Option<LeaseValue>,
    /// Great-circle distance to its nearest store, km.
    pub distance_km: f64,
}

/// The engine's Earth radius (`pickline_engine`'s allocation uses the same), km.
const EARTH_RADIUS_KM: f64 = 6_371.008_8;

/// Great-circle distance between two positions in degrees, km (haversine).
fn distance_km(a: [f64; 2], b: [f64; 2]) -> f64 {
    let (la1, la2) = (a[0].to_radians(), b[0].to_radians());
    let dla = la2 - la1;
    let dlo = (b[1] - a[1]).to_radians();
    let h = (dla / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlo / 2.0).sin().powi(2);
    2.0 * h.sqrt().clamp(0.0, 1.0).asin() * EARTH_RADIUS_KM
}

/// Where a store is served, as the map says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// This node's partition serves it (mapped here, or not mapped at all).
    Here,
    /// Another partition serves it.
    Elsewhere {
        /// That partition.
        partition: String,
        /// Its leader, if the map knows one.
        leader: Option<LeaseValue>,
    },
    /// The map has not been read yet.
    NotLoaded,
}

impl PartitionMap {
    /// An empty, not yet loaded map for a node of partition `own`.
    pub fn new(own: &str) -> PartitionMap {
        PartitionMap(Arc::new(MapInner {
            own: own.to_owned(),
            state: RwLock::new(None),
            loaded: tokio::sync::Notify::new(),
        }))
    }

    /// This node's partition.
    pub fn own(&self) -> &str {
        &self.0.own
    }

    /// Where `store` is served.
    pub fn place(&self, store: &str) -> Placement {
        let state = self.0.state.read();
        let Some(state) = state.as_ref() else {
            return Placement::NotLoaded;
        };
        match state.stores.get(store) {
            Some(partition) if *partition != self.0.own => Placement::Elsewhere {
                partition: partition.clone(),
                leader: state.leaders.get(partition).cloned(),
            },
            _ => Placement::Here,
        }
    }

    /// The leader the map names for `partition` (this node's own when it leads).
    pub fn leader(&self, partition: &str) -> Option<LeaseValue> {
        let state = self.0.state.read();
        state.as_ref()?.leaders.get(partition).cloned()
    }

    /// The other partitions with a store within `max_km` of `origin` (degrees), nearest
    /// first, at most `limit`.
    pub fn partitions_near(
        &self,
        origin: [f64; 2],
        max_km: f64,
        limit: usize,
    ) -> Vec<NearPartition> {
        let state = self.0.state.read();
        let Some(state) = state.as_ref() else {
            return Vec::new();
        };
        let mut near: Vec<NearPartition> = state
            .geo
            .iter()
            .filter(|(partition, _)| **partition != self.0.own)
            .filter_map(|(partition, stores)| {
                let nearest = stores
                    .iter()
                    .map(|s| distance_km(origin, *s))
                    .fold(f64::INFINITY, f64::min);
                (nearest <= max_km).then(|| NearPartition {
                    partition: partition.clone(),
                    leader: state.leaders.get(partition).cloned(),
                    distance_km: nearest,
                })
            })
            .collect();
        near.sort_by(|a, b| {
            a.distance_km
                .total_cmp(&b.distance_km)
                .then_with(|| a.partition.cmp(&b.partition))
        });
        near.truncate(limit);
        near
    }

    /// Returns once the map has been read (a leader waits for it before it serves, so
    /// that its first store-scoped requests are not refused as "not loaded").
    pub async fn loaded(&self) {
        loop {
            let notified = self.0.loaded.notified();
            if self.0.state.read().is_some() {
                return;
            }
            notified.await;
        }
    }

    /// Replaces the whole map (a watch that has read the bucket to its end).
    fn install(&self, state: MapState) {
        *self.0.state.write() = Some(state);
        self.0.loaded.notify_waiters();
    }

    /// Applies one change to the loaded map.
    fn apply(&self, change: Change<'_>) {
        if let Some(state) = self.0.state.write().as_mut() {
            state.apply(change);
        }
    }
}

/// One entry of the bucket's history: a key written (`value: Some`) or deleted.
#[derive(Debug, Clone, Copy)]
struct Change<'a> {
    key: &'a str,
    value: Option<&'a [u8]>,
}

impl<'a> Change<'a> {
    fn of(entry: &'a kv::Entry) -> Change<'a> {
        Change {
            key: &entry.key,
            value: (entry.operation == kv::Operation::Put).then_some(&entry.value[..]),
        }
    }
}

impl MapState {
    /// Applies one bucket entry; keys of other kinds and values that do not decode are
    /// skipped (logged), never guessed at.
    fn apply(&mut self, entry: Change<'_>) {
        let Change { key, value } = entry;
        if key.starts_with("store.") {
            // The value names the store; a deleted key has no value, so find it by key.
            let Some(value) = value else {
                self.stores.retain(|store, _| wire::store_key(store) != key);
                return;
            };
            match serde_json::from_slice::<StoreEntry>(value) {
                Ok(e) if wire::store_key(&e.store) == key => {
                    self.stores.insert(e.store, e.partition);
                }
                Ok(_) => tracing::warn!(key, "map entry names another store; skipped"),
                Err(e) => tracing::warn!(key, error = %e, "map entry does not decode; skipped"),
            }
        } else if let Some(partition) = key.strip_prefix("geo.") {
            let Some(value) = value else {
                self.geo.remove(partition);
                return;
            };
            match serde_json::from_slice::<PartitionGeo>(value) {
                // Positions outside the globe are not guessed into it.
                Ok(g)
                    if g.stores.iter().all(|[lat, lon]| {
                        (-90.0..=90.0).contains(lat) && (-180.0..=180.0).contains(lon)
                    }) =>
                {
                    self.geo.insert(partition.to_owned(), g.stores);
                }
                Ok(_) => tracing::warn!(key, "store positions out of range; skipped"),
                Err(e) => tracing::warn!(key, error = %e, "store positions do not decode; skipped"),
            }
        } else if let Some(partition) = key.strip_prefix("lease.") {
            let Some(value) = value else {
                self.leaders.remove(partition);
                return;
            };
            match serde_json::from_slice::<LeaseValue>(value) {
                Ok(v) => {
                    self.leaders.insert(partition.to_owned(), v);
                }
                Err(e) => tracing::warn!(key, error = %e, "lease does not decode; skipped"),
            }
        }
    }
}

/// A leader's publication of its stores' positions: every [`GEO_PUBLISH_INTERVAL`], when
/// they changed, written to `geo.<partition>` (at most [`GEO_STORES_MAX`]; beyond, the
/// first ones by store id, with a warning). Runs until the task is aborted.
pub async fn publish_geo(engine: Arc<pickline_engine::Engine>, kv: kv::Store, partition: String) {
    let key = wire::geo_key(&partition);
    let mut published: Option<bytes::Bytes> = None;
    let mut tick = tokio::time::interval(GEO_PUBLISH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let stores = engine.stores();
        if stores.len() > GEO_STORES_MAX && published.is_none() {
            tracing::warn!(
                stores = stores.len(),
                published = GEO_STORES_MAX,
                "more stores than a partition publishes positions of; others' allocation hints see the first"
            );
        }
        let geo = PartitionGeo {
            stores: stores
                .iter()
                .take(GEO_STORES_MAX)
                .map(|(_, def)| [def.lat, def.lon])
                .collect(),
        };
        let Ok(bytes) = serde_json::to_vec(&geo) else {
            continue;
        };
        let bytes = bytes::Bytes::from(bytes);
        if published.as_ref() == Some(&bytes) {
            continue;
        }
        match kv.put(&key, bytes.clone()).await {
            Ok(_) => published = Some(bytes),
            Err(e) => tracing::warn!(error = %e, "store positions not published; retrying"),
        }
    }
}

/// Keeps `map` equal to the cluster bucket for as long as it runs: watches every key
/// (last value of each, then every change), and after NATS trouble watches again from
/// the start, swapping in the new map once it has read the bucket to its end (until
/// then the old map answers). Runs until the task is aborted.
pub async fn follow(config: ClusterConfig, map: PartitionMap) {
    loop {
        if let Err(e) = watch_once(&config, &map).await {
            tracing::warn!(error = %e, "partition map: watching again");
        }
        tokio::time::sleep(REWATCH_DELAY).await;
    }
}

async fn watch_once(config: &ClusterConfig, map: &PartitionMap) -> Result<(), ClusterError> {
    let js = jetstream::new(node::connect_client(config).await?);
    // The first node to join creates the bucket ([`node::connect`]); wait for it.
    let kv = loop {
        match js.get_key_value(wire::BUCKET).await {
            Ok(kv) => break kv,
            Err(_) => tokio::time::sleep(REWATCH_DELAY).await,
        }
    };
    let mut watch = kv
        .watch_with_history(">")
        .await
        .map_err(|e| ClusterError::nats("watch the cluster bucket", e))?;
    // An empty bucket delivers nothing to say the watch has read it: ask its stream.
    let mut bucket = js
        .get_stream(format!("KV_{}", wire::BUCKET))
        .await
        .map_err(|e| ClusterError::nats("the cluster bucket's stream", e))?;
    let empty = bucket
        .info()
        .await
        .map_err(|e| ClusterError::nats("the cluster bucket's stream", e))?
        .state
        .messages
        == 0;
    let mut fresh = Some(MapState::default());
    if empty && let Some(state) = fresh.take() {
        map.install(state);
    }
    while let Some(entry) = watch.next().await {
        let entry = entry.map_err(|e| ClusterError::nats("watch the cluster bucket", e))?;
        match fresh.as_mut() {
            Some(state) => {
                state.apply(Change::of(&entry));
                // `delta` counts the newer entries still to come: 0 is the bucket's end.
                if entry.delta == 0
                    && let Some(state) = fresh.take()
                {
                    map.install(state);
                }
            }
            None => map.apply(Change::of(&entry)),
        }
    }
    Err(ClusterError::Nats("the bucket watch ended".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(map: &PartitionMap, key: &str, value: &[u8]) {
        map.apply(Change {
            key,
            value: Some(value),
        });
    }

    fn delete(map: &PartitionMap, key: &str) {
        map.apply(Change { key, value: None });
    }

    fn store(map: &PartitionMap, store: &str, partition: &str) {
        let value = serde_json::to_vec(&StoreEntry {
            store: store.to_owned(),
            partition: partition.to_owned(),
        })
        .unwrap();
        put(map, &wire::store_key(store), &value);
    }

    #[test]
    fn stores_are_placed_by_the_map_with_the_leader_it_names() {
        let map = PartitionMap::new("eu");
        assert_eq!(map.place("BER-01"), Placement::NotLoaded);
        map.install(MapState::default());
        assert_eq!(
            map.place("BER-01"),
            Placement::Here,
            "unmapped: served here"
        );
        store(&map, "BER-01", "eu");
        store(&map, "NYC-01", "us");
        assert_eq!(map.place("BER-01"), Placement::Here);
        assert_eq!(
            map.place("NYC-01"),
            Placement::Elsewhere {
                partition: "us".into(),
                leader: None
            }
        );
        let leader = LeaseValue {
            node: "us-a".into(),
            addr: "10.0.0.9:50051".into(),
            epoch: 3,
        };
        put(
            &map,
            &wire::lease_key("us"),
            &serde_json::to_vec(&leader).unwrap(),
        );
        assert_eq!(
            map.place("NYC-01"),
            Placement::Elsewhere {
                partition: "us".into(),
                leader: Some(leader)
            }
        );
        // Moved to this partition, then removed from the map: served here both times.
        store(&map, "NYC-01", "eu");
        assert_eq!(map.place("NYC-01"), Placement::Here);
        store(&map, "NYC-01", "us");
        delete(&map, &wire::store_key("NYC-01"));
        assert_eq!(map.place("NYC-01"), Placement::Here);
        // A lease deleted at a graceful stop: the partition, no leader.
        store(&map, "NYC-01", "us");
        delete(&map, &wire::lease_key("us"));
        assert_eq!(
            map.place("NYC-01"),
            Placement::Elsewhere {
                partition: "us".into(),
                leader: None
            }
        );
    }

    #[test]
    fn partitions_near_are_the_others_in_reach_nearest_first() {
        let map = PartitionMap::new("berlin");
        assert!(map.partitions_near([52.52, 13.40], 1_000.0, 3).is_empty());
        map.install(MapState::default());
        let geo = |map: &PartitionMap, p: &str, stores: &[[f64; 2]]| {
            let value = serde_json::to_vec(&PartitionGeo {
                stores: stores.to_vec(),
            })
            .unwrap();
            put(map, &wire::geo_key(p), &value);
        };
        // Berlin's own stores never count; Hamburg (~255 km) and Munich (~505 km) do,
        // each by its nearest store; New York is out of reach; a bad position is skipped.
        geo(&map, "berlin", &[[52.52, 13.40]]);
        geo(&map, "munich", &[[48.14, 11.58], [40.0, 0.0]]);
        geo(&map, "hamburg", &[[53.55, 9.99]]);
        geo(&map, "nyc", &[[40.71, -74.01]]);
        geo(&map, "bad", &[[95.0, 0.0]]);
        let leader = LeaseValue {
            node: "hh-a".into(),
            addr: "10.0.0.2:50051".into(),
            epoch: 1,
        };
        put(
            &map,
            &wire::lease_key("hamburg"),
            &serde_json::to_vec(&leader).unwrap(),
        );
        let near = map.partitions_near([52.52, 13.40], 1_000.0, 3);
        let names: Vec<&str> = near.iter().map(|n| n.partition.as_str()).collect();
        assert_eq!(names, ["hamburg", "munich"]);
        assert_eq!(near[0].leader, Some(leader.clone()));
        assert_eq!(map.leader("hamburg"), Some(leader));
        assert_eq!(map.leader("munich"), None);
        assert!((250.0..260.0).contains(&near[0].distance_km), "{near:?}");
        assert!((500.0..510.0).contains(&near[1].distance_km), "{near:?}");
        assert_eq!(near[1].leader, None);
        assert_eq!(map.partitions_near([52.52, 13.40], 1_000.0, 1).len(), 1);
        assert!(map.partitions_near([52.52, 13.40], 100.0, 3).is_empty());
        delete(&map, &wire::geo_key("hamburg"));
        assert_eq!(
            map.partitions_near([52.52, 13.40], 1_000.0, 3)[0].partition,
            "munich"
        );
    }

    #[test]
    fn entries_that_do_not_read_are_skipped_not_guessed() {
        let map = PartitionMap::new("eu");
        map.install(MapState::default());
        put(&map, &wire::store_key("X"), b"not json");
        // A value naming another store than its key.
        let wrong = serde_json::to_vec(&StoreEntry {
            store: "Y".into(),
            partition: "us".into(),
        })
        .unwrap();
        put(&map, &wire::store_key("X"), &wrong);
        assert_eq!(map.place("X"), Placement::Here);
        assert_eq!(map.place("Y"), Placement::Here);
    }
}
