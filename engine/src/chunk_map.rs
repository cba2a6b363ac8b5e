//! [`ChunkMap`]: an ordered map kept as a B-tree of short sorted arrays ("chunks").
//!
//! A store's hold table and expiry index hold millions of small entries, mostly inserted
//! at the right edge (hold ids are a per-store sequence; expiries mostly grow with time).
//! `std`'s `BTreeMap` splits a full leaf in the middle even then, so its leaves stay about
//! half full: with a 48-byte hold, about 110 bytes per hold. Here a sorted run of up to
//! [`CHUNK_LEN`] entries is one `Vec`, found through a `BTreeMap` keyed by each chunk's
//! bound; an insert past the end of a full chunk starts a new chunk instead of splitting
//! it, so right-edge inserts fill every chunk. A lookup is a tree search over the chunks
//! (64 times fewer than entries) and a binary search in one chunk; an insert or removal
//! shifts entries of one chunk only.
//!
//! Memory stays bounded for every pattern: a chunk's buffer grows by doubling up to
//! [`CHUNK_LEN`] and shrinks to twice its length once a quarter of it is used, and a
//! chunk that falls below a quarter full is merged into a neighbour when the two fit in
//! half a chunk. Iteration is in key order, as `BTreeMap`'s.

use std::collections::BTreeMap;
use std::ops::Bound;

/// Entries per chunk at most.
pub(crate) const CHUNK_LEN: usize = 64;

/// A chunk's buffer is allocated for at least this many entries.
pub(crate) const CHUNK_CAPACITY_MIN: usize = 4;

/// An ordered map from `K` to `V` (see the module documentation). `CHUNK` is the most
/// entries a chunk holds; tests use small chunks to exercise splits and merges.
///
/// Invariants (private fields; [`ChunkMap::check`] verifies them): each chunk is sorted by
/// key with no key twice; a chunk's bound (its key in `chunks`) is at most its first key
/// and above every key of the chunks before it; no chunk holds more than `CHUNK` entries;
/// no chunk is empty unless it is the only one (kept, so that a table whose only entry
/// comes and goes does not reallocate); `len` is the number of entries.
#[derive(Clone)]
pub(crate) struct ChunkMap<K, V, const CHUNK: usize = CHUNK_LEN> {
    chunks: BTreeMap<K, Vec<(K, V)>>,
    len: usize,
}

impl<K, V, const CHUNK: usize> Default for ChunkMap<K, V, CHUNK> {
    fn default() -> Self {
        ChunkMap {
            chunks: BTreeMap::new(),
            len: 0,
        }
    }
}

impl<K: std::fmt::Debug, V: std::fmt::Debug, const CHUNK: usize> std::fmt::Debug
    for ChunkMap<K, V, CHUNK>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.chunks.values().flatten().map(|(k, v)| (k, v)))
            .finish()
    }
}

impl<K: Ord + Copy, V, const CHUNK: usize> ChunkMap<K, V, CHUNK> {
    /// Entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunk that holds `key` if any chunk does: the last whose bound is at most it.
    fn chunk_of(&self, key: &K) -> Option<&Vec<(K, V)>> {
        self.chunks.range(..=key).next_back().map(|(_, c)| c)
    }

    /// The value of `key`.
    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        let chunk = self.chunk_of(key)?;
        let i = chunk.binary_search_by(|(k, _)| k.cmp(key)).ok()?;
        Some(&chunk[i].1)
    }

    /// The value of `key`, to change.
    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let (_, chunk) = self.chunks.range_mut(..=key).next_back()?;
        let i = chunk.binary_search_by(|(k, _)| k.cmp(key)).ok()?;
        Some(&mut chunk[i].1)
    }

    /// Whether `key` is in the map.
    pub(crate) fn contains_key(&self, key: &K) -> bool {
        self.get(key).is_some()
    }

    /// Inserts `key` with `value`; returns the value it replaced.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        let Some((&bound, chunk)) = self.chunks.range_mut(..=key).next_back() else {
            // Below every bound (or no chunk at all): the first chunk takes it in front
            // and is re-keyed, or a new first chunk does when it is full.
            let mut entry = vec_for(1);
            entry.push((key, value));
            match self.chunks.pop_first() {
                Some((_, mut first)) if first.len() < CHUNK => {
                    grow(&mut first, CHUNK);
                    first.insert(0, entry.pop().expect("one entry"));
                    self.chunks.insert(key, first);
                }
                Some((first_bound, first)) => {
                    self.chunks.insert(first_bound, first);
                    self.chunks.insert(key, entry);
                }
                None => {
                    self.chunks.insert(key, entry);
                }
            }
            self.len += 1;
            return None;
        };
        let i = match chunk.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => return Some(std::mem::replace(&mut chunk[i].1, value)),
            Err(i) => i,
        };
        self.len += 1;
        if chunk.len() < CHUNK {
            grow(chunk, CHUNK);
            chunk.insert(i, (key, value));
            return None;
        }
        if i == chunk.len() {
            // Past the end of a full chunk (the common right-edge insert): a new chunk,
            // so that the full one stays full.
            let mut next = vec_for(1);
            next.push((key, value));
            self.chunks.insert(key, next);
            return None;
        }
        // Into a full chunk: split it in halves.
        let half = CHUNK / 2;
        let mut right = vec_for(CHUNK);
        right.extend(chunk.drain(half..));
        if i <= half {
            chunk.insert(i, (key, value));
        } else {
            right.insert(i - half, (key, value));
        }
        let right_bound = right[0].0;
        debug_assert!(right_bound > bound);
        self.chunks.insert(right_bound, right);
        None
    }

    /// Removes `key`; returns its value.
    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let (&bound, chunk) = self.chunks.range_mut(..=key).next_back()?;
        let i = chunk.binary_search_by(|(k, _)| k.cmp(key)).ok()?;
        let (_, value) = chunk.remove(i);
        self.len -= 1;
        let left = chunk.len();
        if chunk.capacity() > 4 * CHUNK_CAPACITY_MIN && left * 4 <= chunk.capacity() {
            chunk.shrink_to((left * 2).max(CHUNK_CAPACITY_MIN));
        }
        if left < CHUNK / 4 && self.chunks.len() > 1 {
            self.rebalance(bound, left);
        }
        Some(value)
    }

    /// After a removal left the chunk at `bound` with `left` entries (below a quarter):
    /// drops it if empty, else merges it with a neighbour when the two fit in half a
    /// chunk. There is more than one chunk.
    fn rebalance(&mut self, bound: K, left: usize) {
        if left == 0 {
            self.chunks.remove(&bound);
            return;
        }
        let prev = self
            .chunks
            .range(..bound)
            .next_back()
            .map(|(b, c)| (*b, c.len()));
        if let Some((prev_bound, prev_len)) = prev
            && prev_len + left <= CHUNK / 2
        {
            let moved = self.chunks.remove(&bound).expect("the chunk is there");
            let prev = self.chunks.get_mut(&prev_bound).expect("its neighbour too");
            prev.reserve_exact(moved.len());
            prev.extend(moved);
            return;
        }
        let next = self
            .chunks
            .range((Bound::Excluded(bound), Bound::Unbounded))
            .next()
            .map(|(b, c)| (*b, c.len()));
        if let Some((next_bound, next_len)) = next
            && next_len + left <= CHUNK / 2
        {
            let moved = self
                .chunks
                .remove(&next_bound)
                .expect("the neighbour is there");
            let chunk = self.chunks.get_mut(&bound).expect("the chunk too");
            chunk.reserve_exact(moved.len());
            chunk.extend(moved);
        }
    }

    /// The entries in key order.
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = (&K, &V)> {
        self.chunks.values().flatten().map(|(k, v)| (k, v))
    }

    /// The keys in order.
    pub(crate) fn keys(&self) -> impl DoubleEndedIterator<Item = &K> {
        self.iter().map(|(k, _)| k)
    }

    /// The values in key order.
    pub(crate) fn values(&self) -> impl DoubleEndedIterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }

    /// Builds a map from entries in strictly ascending key order, every chunk full but
    /// the last (snapshot loading). `None` if the keys are not strictly ascending.
    pub(crate) fn from_sorted(entries: impl IntoIterator<Item = (K, V)>) -> Option<Self> {
        let mut map = ChunkMap::default();
        let mut chunk: Vec<(K, V)> = Vec::new();
        let mut last: Option<K> = None;
        for (k, v) in entries {
            if last.is_some_and(|l| l >= k) {
                return None;
            }
            last = Some(k);
            if chunk.len() == CHUNK {
                let full = std::mem::replace(&mut chunk, vec_for(CHUNK));
                map.chunks.insert(full[0].0, full);
            } else if chunk.capacity() == 0 {
                chunk = vec_for(CHUNK);
            }
            chunk.push((k, v));
            map.len += 1;
        }
        if !chunk.is_empty() {
            chunk.shrink_to_fit();
            map.chunks.insert(chunk[0].0, chunk);
        }
        Some(map)
    }

    /// Checks the invariants (tests).
    #[cfg(test)]
    pub(crate) fn check(&self) -> Result<(), String> {
        let mut prev: Option<K> = None;
        let mut n = 0;
        for (bound, chunk) in &self.chunks {
            if chunk.is_empty() && self.chunks.len() > 1 {
                return Err("an empty chunk beside others".into());
            }
            if chunk.len() > CHUNK {
                return Err(format!("a chunk of {} entries", chunk.len()));
            }
            if prev.is_some_and(|p| p >= *bound) {
                return Err("a bound at or below a key before it".into());
            }
            for (k, _) in chunk {
                if prev.is_some_and(|p| p >= *k) || k < bound {
                    return Err("keys out of order".into());
                }
                prev = Some(*k);
            }
            n += chunk.len();
        }
        if n != self.len {
            return Err(format!("len {} but {n} entries", self.len));
        }
        Ok(())
    }
}

/// A chunk's buffer for `n` entries.
fn vec_for<T>(n: usize) -> Vec<T> {
    Vec::with_capacity(n.max(CHUNK_CAPACITY_MIN))
}

/// Makes room for one more entry in `chunk` (below `max` entries): its buffer doubles, up
/// to `max` (also [`crate::chunk_queue::ChunkQueue`]'s chunks).
pub(crate) fn grow<T>(chunk: &mut Vec<T>, max: usize) {
    if chunk.len() == chunk.capacity() {
        let more = chunk.len().max(CHUNK_CAPACITY_MIN).min(max - chunk.len());
        chunk.reserve_exact(more);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16, u32),
        Remove(u16),
        /// Inserts `n` keys counting up from the largest (right-edge growth).
        Append(u8),
        /// Removes the `n` smallest keys (expiry).
        PopFront(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u16..600, any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            4 => (0u16..600).prop_map(Op::Remove),
            1 => (0u8..40).prop_map(Op::Append),
            1 => (0u8..40).prop_map(Op::PopFront),
        ]
    }

    /// Runs `ops` on a map with chunks of `CHUNK` and on a `BTreeMap`, comparing every
    /// answer, the entries in order and the invariants after each step.
    fn check<const CHUNK: usize>(ops: &[Op]) -> Result<(), TestCaseError> {
        let mut map: ChunkMap<u32, u32, CHUNK> = ChunkMap::default();
        let mut model: BTreeMap<u32, u32> = BTreeMap::new();
        for op in ops {
            match *op {
                Op::Insert(k, v) => {
                    let k = u32::from(k);
                    prop_assert_eq!(map.insert(k, v), model.insert(k, v));
                }
                Op::Remove(k) => {
                    let k = u32::from(k);
                    prop_assert_eq!(map.remove(&k), model.remove(&k));
                }
                Op::Append(n) => {
                    let from = model.keys().next_back().map_or(0, |k| k + 1);
                    for k in from..from + u32::from(n) {
                        prop_assert_eq!(map.insert(k, k), model.insert(k, k));
                    }
                }
                Op::PopFront(n) => {
                    let front: Vec<u32> = model.keys().take(usize::from(n)).copied().collect();
                    for k in front {
                        prop_assert_eq!(map.remove(&k), model.remove(&k));
                    }
                }
            }
            map.check().map_err(TestCaseError::fail)?;
            prop_assert_eq!(map.len(), model.len());
            prop_assert!(map.iter().eq(model.iter()));
            prop_assert!(map.iter().rev().eq(model.iter().rev()));
        }
        for k in 0..700u32 {
            prop_assert_eq!(map.get(&k), model.get(&k));
            prop_assert_eq!(map.contains_key(&k), model.contains_key(&k));
        }
        let rebuilt = ChunkMap::<u32, u32, CHUNK>::from_sorted(model.iter().map(|(k, v)| (*k, *v)))
            .expect("sorted");
        rebuilt.check().map_err(TestCaseError::fail)?;
        prop_assert!(rebuilt.iter().eq(model.iter()));
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn small_chunks_behave_as_a_btree_map(ops in prop::collection::vec(op(), 0..300)) {
            check::<4>(&ops)?;
        }

        #[test]
        fn full_size_chunks_behave_as_a_btree_map(ops in prop::collection::vec(op(), 0..300)) {
            check::<CHUNK_LEN>(&ops)?;
        }
    }

    #[test]
    fn right_edge_inserts_fill_every_chunk() {
        let mut map: ChunkMap<u64, u64> = ChunkMap::default();
        for k in 0..10_000u64 {
            map.insert(k, k);
        }
        map.check().unwrap();
        let full = map.chunks.values().filter(|c| c.len() == CHUNK_LEN).count();
        assert_eq!(full, 10_000 / CHUNK_LEN);
        assert!(map.chunks.values().all(|c| c.capacity() <= CHUNK_LEN));
    }

    #[test]
    fn a_table_whose_only_entry_comes_and_goes_keeps_its_chunk() {
        let mut map: ChunkMap<u64, u64> = ChunkMap::default();
        for k in 0..100u64 {
            map.insert(k, k);
            assert_eq!(map.remove(&k), Some(k));
            assert_eq!(map.chunks.len(), 1);
        }
        assert!(map.is_empty());
        map.check().unwrap();
    }

    #[test]
    fn sparse_chunks_merge_and_shrink() {
        let mut map: ChunkMap<u64, u64> = ChunkMap::default();
        for k in 0..64_000u64 {
            map.insert(k, k);
        }
        // Keep one key in 64: each chunk would hold one entry in a buffer for 64.
        for k in 0..64_000u64 {
            if k % 64 != 0 {
                map.remove(&k);
            }
        }
        map.check().unwrap();
        assert_eq!(map.len(), 1_000);
        let capacity: usize = map.chunks.values().map(Vec::capacity).sum();
        assert!(
            capacity <= 4 * map.len(),
            "{capacity} slots for {} entries",
            map.len()
        );
        assert!(map.chunks.len() <= 1_000 / (CHUNK_LEN / 4));
    }

    #[test]
    fn from_sorted_refuses_unsorted_keys() {
        assert!(ChunkMap::<u32, (), 4>::from_sorted([(1, ()), (1, ())]).is_none());
        assert!(ChunkMap::<u32, (), 4>::from_sorted([(2, ()), (1, ())]).is_none());
        let map = ChunkMap::<u32, (), 4>::from_sorted((0..10).map(|k| (k, ()))).unwrap();
        map.check().unwrap();
        assert_eq!(map.len(), 10);
    }
}
