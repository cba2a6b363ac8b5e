//! [`ChunkQueue`]: a FIFO queue kept as a run of bounded chunks.
//!
//! A store's aging queue of idempotency keys holds one entry per keyed hold placed in the
//! last day: millions at peak. `VecDeque` doubles its buffer, so at a given length it
//! holds up to twice the room it uses (a third more on average); here the entries sit in
//! chunks of at most [`CHUNK_LEN`] entries, and only the newest chunk has spare room (its
//! buffer doubles up to [`CHUNK_LEN`], so a short queue stays small). Popping the last
//! entry of the oldest chunk frees that chunk.

use std::collections::VecDeque;

/// Entries per chunk at most.
const CHUNK_LEN: usize = 1024;

/// A FIFO queue (see the module documentation).
///
/// Invariants (private fields; [`ChunkQueue::check`] verifies them): no chunk holds more
/// than `CHUNK` entries; every chunk but the newest is full; `head` is below the oldest
/// chunk's length (so no chunk is empty, and an empty queue has no chunk); `len` is the
/// number of entries from `head` on.
#[derive(Debug, Clone)]
pub(crate) struct ChunkQueue<T, const CHUNK: usize = CHUNK_LEN> {
    chunks: VecDeque<Vec<T>>,
    /// Entries of the oldest chunk before this one are popped.
    head: usize,
    len: usize,
}

impl<T, const CHUNK: usize> Default for ChunkQueue<T, CHUNK> {
    fn default() -> Self {
        ChunkQueue {
            chunks: VecDeque::new(),
            head: 0,
            len: 0,
        }
    }
}

impl<T: Copy, const CHUNK: usize> ChunkQueue<T, CHUNK> {
    /// Entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Appends `v` at the back.
    pub(crate) fn push_back(&mut self, v: T) {
        let chunk = match self.chunks.back_mut() {
            Some(c) if c.len() < CHUNK => c,
            _ => {
                self.chunks.push_back(Vec::new());
                self.chunks.back_mut().expect("just pushed")
            }
        };
        crate::chunk_map::grow(chunk, CHUNK);
        chunk.push(v);
        self.len += 1;
    }

    /// The oldest entry.
    pub(crate) fn front(&self) -> Option<&T> {
        self.chunks.front().map(|c| &c[self.head])
    }

    /// Removes and returns the oldest entry.
    pub(crate) fn pop_front(&mut self) -> Option<T> {
        let chunk = self.chunks.front()?;
        let v = chunk[self.head];
        self.head += 1;
        if self.head == chunk.len() {
            self.chunks.pop_front();
            self.head = 0;
        }
        self.len -= 1;
        Some(v)
    }

    /// The entries, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks
            .iter()
            .enumerate()
            .flat_map(|(i, c)| c[if i == 0 { self.head } else { 0 }..].iter())
    }

    /// Panics if an invariant does not hold (tests).
    #[cfg(test)]
    fn check(&self) {
        let n = self.chunks.len();
        for (i, c) in self.chunks.iter().enumerate() {
            assert!(c.len() <= CHUNK, "chunk over CHUNK");
            assert!(
                i + 1 == n || c.len() == CHUNK,
                "a chunk before the newest is not full"
            );
        }
        if let Some(c) = self.chunks.front() {
            assert!(self.head < c.len(), "head past the oldest chunk");
        } else {
            assert_eq!(self.head, 0);
        }
        assert_eq!(self.len, self.iter().count(), "len out of step");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Push(u32),
        Pop,
        /// Pushes `n` entries counting up.
        PushMany(u8),
        /// Pops up to `n` entries.
        PopMany(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => any::<u32>().prop_map(Op::Push),
            3 => Just(Op::Pop),
            2 => any::<u8>().prop_map(Op::PushMany),
            1 => any::<u8>().prop_map(Op::PopMany),
        ]
    }

    proptest! {
        /// Any sequence of pushes and pops gives what `VecDeque` gives, with small chunks
        /// so that chunks fill, empty and go.
        #[test]
        fn behaves_as_a_vecdeque(ops in proptest::collection::vec(op(), 0..400)) {
            let mut q = ChunkQueue::<u32, 8>::default();
            let mut model = VecDeque::new();
            let mut next = 0u32;
            for op in ops {
                match op {
                    Op::Push(v) => {
                        q.push_back(v);
                        model.push_back(v);
                    }
                    Op::Pop => prop_assert_eq!(q.pop_front(), model.pop_front()),
                    Op::PushMany(n) => {
                        for _ in 0..n {
                            q.push_back(next);
                            model.push_back(next);
                            next = next.wrapping_add(1);
                        }
                    }
                    Op::PopMany(n) => {
                        for _ in 0..n {
                            prop_assert_eq!(q.pop_front(), model.pop_front());
                        }
                    }
                }
                q.check();
                prop_assert_eq!(q.len(), model.len());
                prop_assert_eq!(q.front(), model.front());
            }
            prop_assert!(q.iter().eq(model.iter()));
        }
    }

    #[test]
    fn a_long_queue_has_spare_room_in_its_newest_chunk_only() {
        let mut q = ChunkQueue::<u64>::default();
        for i in 0..10 * CHUNK_LEN as u64 + 1 {
            q.push_back(i);
        }
        let room: usize = q.chunks.iter().map(Vec::capacity).sum();
        assert!(
            room <= q.len() + crate::chunk_map::CHUNK_CAPACITY_MIN,
            "room {room} for {}",
            q.len()
        );
        while q.pop_front().is_some() {}
        assert!(q.chunks.is_empty(), "an empty queue keeps no chunk");
    }
}
