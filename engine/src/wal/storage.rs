//! The one narrow trait between the WAL and a directory of files, and its implementations.
//!
//! - [`FileStorage`]: a real directory (`fdatasync` per batch, directory fsync after create,
//!   rename and remove; appends run ahead of themselves with zeros, see
//!   [`PREALLOCATE_CHUNK_LEN`]).
//! - [`MemStorage`]: keeps the *live* image (what was written) apart from the *durable* image
//!   (what was synced); [`MemStorage::crash`] returns what a power cut would leave.
//! - [`FaultyStorage`]: wraps a `MemStorage` and injects one fault at a chosen I/O operation.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

use super::format::TEMP_SUFFIX;

/// A directory of named files, as the WAL needs it and no more.
///
/// Names are plain file names (no separators). An appendable file may read back longer
/// than what was appended, with zero bytes after it (preallocation); readers of the log
/// treat an all-zero remainder as its end. Durability contract, which every
/// implementation keeps and the WAL relies on:
/// - bytes passed to [`StorageFile::append`] are durable only after
///   [`StorageFile::sync_data`] returns `Ok`;
/// - a newly created file's *name* is durable only after [`Storage::sync_dir`] returns `Ok`;
/// - [`Storage::write_atomic`] and [`Storage::truncate`] are durable when they return `Ok`;
/// - a removal is durable only after [`Storage::sync_dir`].
pub trait Storage: Send + Sync + 'static {
    /// Names of all files in the directory, in no particular order.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Opens `name` for appending, creating it if missing; writes go to its end.
    fn open_append(&self, name: &str) -> io::Result<Box<dyn StorageFile>>;
    /// Reads the whole file.
    fn read(&self, name: &str) -> io::Result<Vec<u8>>;
    /// Length of the file in bytes (for retention limits; no need to read it).
    fn len(&self, name: &str) -> io::Result<u64>;
    /// Replaces `name` with `bytes` atomically and durably: temp file, fsync, rename,
    /// directory fsync. After a crash the file is either absent/old or complete.
    fn write_atomic(&self, name: &str, bytes: &[u8]) -> io::Result<()>;
    /// Removes `name` (durable after the next [`Storage::sync_dir`]).
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Cuts `name` to `len_bytes` and syncs it.
    fn truncate(&self, name: &str, len_bytes: u64) -> io::Result<()>;
    /// Makes creations and removals of names durable.
    fn sync_dir(&self) -> io::Result<()>;
}

/// A file opened for appending.
pub trait StorageFile: Send {
    /// Appends all of `bytes` (one write call where the platform allows).
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes the appended bytes durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
}

/// [`Storage`] on a real directory.
#[derive(Debug, Clone)]
pub struct FileStorage {
    dir: PathBuf,
}

impl FileStorage {
    /// Uses `dir`, creating it (and its parents) if missing.
    pub fn open(dir: impl AsRef<Path>) -> io::Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir)?;
        Ok(FileStorage { dir })
    }

    /// The directory this storage lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> io::Result<PathBuf> {
        if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad file name {name:?}"),
            ));
        }
        Ok(self.dir.join(name))
    }
}

/// How far [`FileStorage`] appends run ahead of themselves: when an append would pass the
/// file's end, the file is first extended with this many zero bytes past the append.
///
/// Why: an `fdatasync` after an append that grows the file must also commit the new size
/// (a journal commit on ext4, about 30% of the sync time measured here); an `fdatasync`
/// after overwriting bytes that already exist commits data only. With the zeros written
/// ahead, only one sync in `PREALLOCATE_CHUNK_LEN` bytes pays for the metadata (the same
/// reason PostgreSQL zero-fills its WAL segments). 256 KiB is a few thousand records:
/// small enough that the one slower sync stays well under a millisecond.
pub const PREALLOCATE_CHUNK_LEN: u64 = 256 << 10;

static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// [`FileStorage::remove`] frees a larger file this much at a time.
const REMOVE_STEP_LEN: u64 = 4 << 20;

/// An append-only file that writes at its logical end and keeps zeros ahead of it.
struct FileAppend {
    file: File,
    /// Logical end: where the next append goes.
    pos: u64,
    /// Physical length (the zeros after `pos` included).
    allocated: u64,
}

impl StorageFile for FileAppend {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let end = self.pos + bytes.len() as u64;
        self.file.write_all_at(bytes, self.pos)?;
        self.pos = end;
        if end > self.allocated {
            // Extend past the end, then let the caller's next `sync_data` commit the size
            // once for the whole chunk.
            let target = end + PREALLOCATE_CHUNK_LEN;
            let mut at = end;
            while at < target {
                let n = (target - at).min(ZEROS.len() as u64) as usize;
                self.file.write_all_at(&ZEROS[..n], at)?;
                at += n as u64;
            }
            self.allocated = target;
        }
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}

impl Storage for FileStorage {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file()
                && let Ok(name) = entry.file_name().into_string()
            {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn open_append(&self, name: &str) -> io::Result<Box<dyn StorageFile>> {
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(self.path(name)?)?;
        // Appends continue at the file's end: recovery has cut any zero tail of the
        // segment it continues.
        let len = file.metadata()?.len();
        Ok(Box::new(FileAppend {
            file,
            pos: len,
            allocated: len,
        }))
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        fs::read(self.path(name)?)
    }

    fn len(&self, name: &str) -> io::Result<u64> {
        Ok(fs::metadata(self.path(name)?)?.len())
    }

    fn write_atomic(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let path = self.path(name)?;
        let tmp = self.path(&format!("{name}{TEMP_SUFFIX}"))?;
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, &path)?;
        self.sync_dir()
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let path = self.path(name)?;
        let len = fs::metadata(&path)?.len();
        if len <= REMOVE_STEP_LEN {
            return fs::remove_file(path);
        }
        // A large file (a log segment) goes in steps: freeing all its blocks in one
        // unlink held the file system's journal for 17-25 ms (64 MiB, ext4), and every
        // log's `fdatasync` that needed a journal commit meanwhile waited that long
        // (issue 17's webhook tail). Renamed first to a temporary name, so a crash
        // between steps leaves a file recovery removes, never a cut segment.
        let doomed = self.path(&format!("{name}{TEMP_SUFFIX}"))?;
        fs::rename(&path, &doomed)?;
        let file = OpenOptions::new().write(true).open(&doomed)?;
        let mut left = len;
        while left > REMOVE_STEP_LEN {
            left -= REMOVE_STEP_LEN;
            file.set_len(left)?;
        }
        drop(file);
        fs::remove_file(doomed)
    }

    fn truncate(&self, name: &str, len_bytes: u64) -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(self.path(name)?)?;
        file.set_len(len_bytes)?;
        file.sync_all()
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
}

/// Small seeded PRNG (SplitMix64) for crash and fault simulation; not for anything else.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    /// A generator whose whole output is determined by `seed`.
    pub fn new(seed: u64) -> Self {
        SimRng(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }
}

#[derive(Debug, Clone, Default)]
struct MemFile {
    /// Live image: everything written.
    data: Vec<u8>,
    /// `data[..synced_len]` is the durable image. Files are append-only between syncs, so
    /// the durable image is always a prefix of the live one.
    synced_len: usize,
    /// Whether the directory entry survives a power cut.
    entry_durable: bool,
    /// Physical length when preallocating (zeros from `data.len()` up to it); 0 if not.
    zeros_to: usize,
    /// `zeros_to` as of the last sync: the length a power cut keeps for sure.
    zeros_to_durable: usize,
}

impl MemFile {
    /// The file as a reader sees it: the data, then the preallocated zeros.
    fn image(&self) -> Vec<u8> {
        let mut bytes = self.data.clone();
        bytes.resize(self.data.len().max(self.zeros_to), 0);
        bytes
    }

    fn durable(data: Vec<u8>) -> MemFile {
        MemFile {
            synced_len: data.len(),
            data,
            entry_durable: true,
            zeros_to: 0,
            zeros_to_durable: 0,
        }
    }
}

#[derive(Debug, Default)]
struct MemState {
    files: BTreeMap<String, MemFile>,
    /// Removed files whose removal is not yet durable: a power cut may bring them back.
    removed: BTreeMap<String, MemFile>,
    /// Appends run this far ahead with zeros, like [`FileStorage`]'s (0: they do not).
    preallocate_chunk_len: usize,
}

/// In-memory [`Storage`] that keeps the live image apart from the durable image.
///
/// Clones share the same directory.
#[derive(Debug, Clone, Default)]
pub struct MemStorage {
    state: Arc<Mutex<MemState>>,
}

/// What a simulated power cut did to one file's unsynced bytes (for test diagnostics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrashEffect {
    /// The file's name was never made durable and it vanished.
    FileLost,
    /// Unsynced bytes dropped.
    Dropped,
    /// A prefix of `kept_len` unsynced bytes survived.
    Torn {
        /// Unsynced bytes that survived.
        kept_len: usize,
    },
    /// A prefix of the unsynced bytes survived, with bits flipped at these file offsets.
    Flipped {
        /// Unsynced bytes that survived.
        kept_len: usize,
        /// File offsets of the flipped bits' bytes.
        offsets: Vec<usize>,
    },
    /// A removed file came back because the removal was not durable.
    Resurrected,
}

impl MemStorage {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty directory whose appends, like [`FileStorage`]'s, extend the file with
    /// `chunk_len` zero bytes past the append whenever they pass its end. The zeros become
    /// durable with the next sync of the file; a power cut before that may keep or drop
    /// them.
    pub fn preallocating(chunk_len: usize) -> Self {
        let storage = Self::default();
        storage.state.lock().preallocate_chunk_len = chunk_len;
        storage
    }

    /// What a power cut at this instant would leave, as a new independent directory.
    ///
    /// Durable bytes survive. For every file with unsynced bytes, a choice seeded by `seed`:
    /// dropped, a torn prefix kept, or a prefix kept with 1-3 random bit flips in the kept
    /// unsynced part. Files whose name was never made durable may vanish; removals that were
    /// not made durable may be undone. Returns the new directory and what happened per file.
    pub fn crash(&self, seed: u64) -> (MemStorage, Vec<(String, CrashEffect)>) {
        let mut rng = SimRng::new(seed ^ 0xC4A5_4000_0000_0001);
        let state = self.state.lock();
        let mut files = BTreeMap::new();
        let mut effects = Vec::new();
        for (name, file) in &state.files {
            if !file.entry_durable && rng.chance(1, 2) {
                effects.push((name.clone(), CrashEffect::FileLost));
                continue;
            }
            let mut data = file.data[..file.synced_len].to_vec();
            let unsynced = &file.data[file.synced_len..];
            if !unsynced.is_empty() {
                match rng.below(3) {
                    0 => effects.push((name.clone(), CrashEffect::Dropped)),
                    1 => {
                        let kept_len = rng.below(unsynced.len() as u64 + 1) as usize;
                        data.extend_from_slice(&unsynced[..kept_len]);
                        effects.push((name.clone(), CrashEffect::Torn { kept_len }));
                    }
                    _ => {
                        let kept_len = 1 + rng.below(unsynced.len() as u64) as usize;
                        data.extend_from_slice(&unsynced[..kept_len]);
                        let mut offsets = Vec::new();
                        for _ in 0..1 + rng.below(3) {
                            let at = file.synced_len + rng.below(kept_len as u64) as usize;
                            data[at] ^= 1 << rng.below(8);
                            offsets.push(at);
                        }
                        effects.push((name.clone(), CrashEffect::Flipped { kept_len, offsets }));
                    }
                }
            }
            // An extension not yet synced may or may not have reached the disk.
            let zeros_to = if file.zeros_to != file.zeros_to_durable && rng.chance(1, 2) {
                file.zeros_to
            } else {
                file.zeros_to_durable
            };
            let mut crashed = MemFile::durable(data);
            crashed.zeros_to = zeros_to.max(crashed.data.len());
            crashed.zeros_to_durable = crashed.zeros_to;
            files.insert(name.clone(), crashed);
        }
        for (name, file) in &state.removed {
            if !files.contains_key(name) && rng.chance(1, 2) {
                let mut back = MemFile::durable(file.data[..file.synced_len].to_vec());
                back.zeros_to = file.zeros_to_durable.max(back.data.len());
                back.zeros_to_durable = back.zeros_to;
                files.insert(name.clone(), back);
                effects.push((name.clone(), CrashEffect::Resurrected));
            }
        }
        let crashed = MemStorage {
            state: Arc::new(Mutex::new(MemState {
                files,
                removed: BTreeMap::new(),
                preallocate_chunk_len: state.preallocate_chunk_len,
            })),
        };
        (crashed, effects)
    }

    /// What a process crash (the OS survives) would leave: the live image, all of it.
    pub fn process_crash(&self) -> MemStorage {
        let state = self.state.lock();
        let files = state
            .files
            .iter()
            .map(|(name, f)| {
                let mut file = MemFile::durable(f.data.clone());
                file.zeros_to = f.zeros_to;
                file.zeros_to_durable = f.zeros_to;
                (name.clone(), file)
            })
            .collect();
        MemStorage {
            state: Arc::new(Mutex::new(MemState {
                files,
                removed: BTreeMap::new(),
                preallocate_chunk_len: state.preallocate_chunk_len,
            })),
        }
    }

    /// Live bytes of `name`, if it exists (preallocated zeros included).
    pub fn file(&self, name: &str) -> Option<Vec<u8>> {
        self.state.lock().files.get(name).map(MemFile::image)
    }

    /// Length of the durable image of `name`, if it exists.
    pub fn durable_len(&self, name: &str) -> Option<usize> {
        self.state.lock().files.get(name).map(|f| f.synced_len)
    }

    /// Replaces `name` with `bytes`, durably (test helper for hand-made corruption).
    pub fn put_file(&self, name: &str, bytes: Vec<u8>) {
        self.state
            .lock()
            .files
            .insert(name.to_string(), MemFile::durable(bytes));
    }

    /// Flips bit `bit` (0-7) of byte `offset` of `name`; false if out of range.
    pub fn flip_bit(&self, name: &str, offset: usize, bit: u8) -> bool {
        let mut state = self.state.lock();
        match state
            .files
            .get_mut(name)
            .and_then(|f| f.data.get_mut(offset))
        {
            Some(byte) => {
                *byte ^= 1 << (bit % 8);
                true
            }
            None => false,
        }
    }

    fn not_found(name: &str) -> io::Error {
        io::Error::new(io::ErrorKind::NotFound, format!("{name}: no such file"))
    }
}

struct MemAppend {
    state: Arc<Mutex<MemState>>,
    name: String,
}

impl StorageFile for MemAppend {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut state = self.state.lock();
        let chunk = state.preallocate_chunk_len;
        let file = state
            .files
            .get_mut(&self.name)
            .ok_or_else(|| MemStorage::not_found(&self.name))?;
        // Appends go to the logical end, over the zeros ahead of it.
        file.data.extend_from_slice(bytes);
        if chunk > 0 && file.data.len() > file.zeros_to {
            file.zeros_to = file.data.len() + chunk;
        }
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut state = self.state.lock();
        let file = state
            .files
            .get_mut(&self.name)
            .ok_or_else(|| MemStorage::not_found(&self.name))?;
        file.synced_len = file.data.len();
        file.zeros_to_durable = file.zeros_to;
        Ok(())
    }
}

impl Storage for MemStorage {
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.state.lock().files.keys().cloned().collect())
    }

    fn open_append(&self, name: &str) -> io::Result<Box<dyn StorageFile>> {
        let mut state = self.state.lock();
        if !state.files.contains_key(name) {
            state.removed.remove(name);
            state.files.insert(name.to_string(), MemFile::default());
        }
        Ok(Box::new(MemAppend {
            state: self.state.clone(),
            name: name.to_string(),
        }))
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        self.file(name).ok_or_else(|| Self::not_found(name))
    }

    fn len(&self, name: &str) -> io::Result<u64> {
        let state = self.state.lock();
        let file = state.files.get(name).ok_or_else(|| Self::not_found(name))?;
        Ok(file.data.len().max(file.zeros_to) as u64)
    }

    fn write_atomic(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let mut state = self.state.lock();
        state.removed.remove(name);
        state
            .files
            .insert(name.to_string(), MemFile::durable(bytes.to_vec()));
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut state = self.state.lock();
        let file = state
            .files
            .remove(name)
            .ok_or_else(|| Self::not_found(name))?;
        if file.entry_durable {
            state.removed.insert(name.to_string(), file);
        }
        Ok(())
    }

    fn truncate(&self, name: &str, len_bytes: u64) -> io::Result<()> {
        let mut state = self.state.lock();
        let file = state
            .files
            .get_mut(name)
            .ok_or_else(|| Self::not_found(name))?;
        let len = usize::try_from(len_bytes)
            .unwrap_or(usize::MAX)
            .min(file.data.len().max(file.zeros_to));
        // Cutting inside the zeros keeps the cut-off length of zeros as data.
        file.data.resize(len, 0);
        file.synced_len = len;
        file.zeros_to = 0;
        file.zeros_to_durable = 0;
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut state = self.state.lock();
        for file in state.files.values_mut() {
            file.entry_durable = true;
        }
        state.removed.clear();
        Ok(())
    }
}

/// The fault [`FaultyStorage`] injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// A write fails and writes nothing.
    WriteError,
    /// A write writes a seeded prefix of its bytes, then fails.
    TornWrite,
    /// A write "succeeds" with one bit flipped in the (unsynced) bytes; the power is cut
    /// right after, so the flipped bytes are never synced by this process.
    BitFlip,
    /// An `fdatasync` (file or directory) fails; nothing is synced.
    SyncError,
}

/// When and how [`FaultyStorage`] fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultPlan {
    /// The fault fires at the first operation of a matching type whose 0-based number
    /// (counting every storage and file call) is at least this.
    pub op_index: u64,
    /// What goes wrong.
    pub kind: FaultKind,
    /// Seeds the torn length and the flipped bit.
    pub seed: u64,
}

impl FaultPlan {
    /// A plan drawn from `seed`, firing somewhere in the first `op_count_max` operations.
    pub fn from_seed(seed: u64, op_count_max: u64) -> Self {
        let mut rng = SimRng::new(seed ^ 0xFA17_0000_0000_0003);
        let kind = match rng.below(4) {
            0 => FaultKind::WriteError,
            1 => FaultKind::TornWrite,
            2 => FaultKind::BitFlip,
            _ => FaultKind::SyncError,
        };
        FaultPlan {
            op_index: rng.below(op_count_max.max(1)),
            kind,
            seed: rng.next_u64(),
        }
    }
}

/// A fault that fired: which operation and what it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiredFault {
    /// Operation number at which it fired.
    pub op_index: u64,
    /// The fault.
    pub kind: FaultKind,
    /// File the operation was on (empty for directory operations).
    pub file: String,
}

#[derive(Debug)]
struct FaultState {
    plan: Option<FaultPlan>,
    ops: AtomicU64,
    /// After the fault every operation fails: the simulated machine has lost power.
    dead: AtomicBool,
    fired: Mutex<Option<FiredFault>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Write,
    Sync,
    Other,
}

/// What an operation should do, decided by the fault plan.
enum Verdict {
    Proceed,
    Fail,
    Fire(FaultPlan),
}

impl FaultState {
    fn begin(&self, op: OpKind, file: &str) -> Verdict {
        if self.dead.load(Ordering::Acquire) {
            return Verdict::Fail;
        }
        let n = self.ops.fetch_add(1, Ordering::AcqRel);
        let Some(plan) = self.plan else {
            return Verdict::Proceed;
        };
        let matches = match plan.kind {
            FaultKind::WriteError | FaultKind::TornWrite | FaultKind::BitFlip => {
                op == OpKind::Write
            }
            FaultKind::SyncError => op == OpKind::Sync,
        };
        if n < plan.op_index || !matches {
            return Verdict::Proceed;
        }
        let mut fired = self.fired.lock();
        if fired.is_some() {
            return Verdict::Fail;
        }
        *fired = Some(FiredFault {
            op_index: n,
            kind: plan.kind,
            file: file.to_string(),
        });
        self.dead.store(true, Ordering::Release);
        Verdict::Fire(plan)
    }
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected fault: {what}"))
}

/// [`Storage`] that wraps a [`MemStorage`] and injects one fault, deterministically.
///
/// After the fault fires every later operation fails too (the simulated machine is down);
/// the test then calls [`MemStorage::crash`] on [`FaultyStorage::inner`] and reopens.
#[derive(Debug, Clone)]
pub struct FaultyStorage {
    inner: MemStorage,
    state: Arc<FaultState>,
}

impl FaultyStorage {
    /// Wraps `inner`; `plan == None` never injects anything (but still counts operations).
    pub fn new(inner: MemStorage, plan: Option<FaultPlan>) -> Self {
        let state = FaultState {
            plan,
            ops: AtomicU64::new(0),
            dead: AtomicBool::new(false),
            fired: Mutex::new(None),
        };
        FaultyStorage {
            inner,
            state: Arc::new(state),
        }
    }

    /// The wrapped directory (live and durable images).
    pub fn inner(&self) -> &MemStorage {
        &self.inner
    }

    /// The fault, once it has fired.
    pub fn fired(&self) -> Option<FiredFault> {
        self.state.fired.lock().clone()
    }

    /// Operations counted so far.
    pub fn op_count(&self) -> u64 {
        self.state.ops.load(Ordering::Acquire)
    }

    fn gate(&self, op: OpKind, file: &str) -> io::Result<Option<FaultPlan>> {
        match self.state.begin(op, file) {
            Verdict::Proceed => Ok(None),
            Verdict::Fail => Err(injected("device is down after an earlier fault")),
            Verdict::Fire(plan) => Ok(Some(plan)),
        }
    }
}

struct FaultyAppend {
    inner: Box<dyn StorageFile>,
    state: Arc<FaultState>,
    name: String,
}

impl StorageFile for FaultyAppend {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self.state.begin(OpKind::Write, &self.name) {
            Verdict::Proceed => self.inner.append(bytes),
            Verdict::Fail => Err(injected("device is down after an earlier fault")),
            Verdict::Fire(plan) => {
                let mut rng = SimRng::new(plan.seed);
                match plan.kind {
                    FaultKind::TornWrite => {
                        let kept = rng.below(bytes.len() as u64) as usize;
                        self.inner.append(&bytes[..kept])?;
                        Err(injected("torn write"))
                    }
                    FaultKind::BitFlip if !bytes.is_empty() => {
                        let mut copy = bytes.to_vec();
                        let at = rng.below(copy.len() as u64) as usize;
                        copy[at] ^= 1 << rng.below(8);
                        self.inner.append(&copy)
                    }
                    _ => Err(injected("write error")),
                }
            }
        }
    }

    fn sync_data(&mut self) -> io::Result<()> {
        match self.state.begin(OpKind::Sync, &self.name) {
            Verdict::Proceed => self.inner.sync_data(),
            Verdict::Fail => Err(injected("device is down after an earlier fault")),
            Verdict::Fire(_) => Err(injected("fdatasync error")),
        }
    }
}

impl Storage for FaultyStorage {
    fn list(&self) -> io::Result<Vec<String>> {
        self.gate(OpKind::Other, "")?;
        self.inner.list()
    }

    fn open_append(&self, name: &str) -> io::Result<Box<dyn StorageFile>> {
        self.gate(OpKind::Other, name)?;
        let inner = self.inner.open_append(name)?;
        Ok(Box::new(FaultyAppend {
            inner,
            state: self.state.clone(),
            name: name.to_string(),
        }))
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        self.gate(OpKind::Other, name)?;
        self.inner.read(name)
    }

    fn len(&self, name: &str) -> io::Result<u64> {
        self.gate(OpKind::Other, name)?;
        self.inner.len(name)
    }

    fn write_atomic(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        match self.gate(OpKind::Write, name)? {
            // The atomic path never exposes a partial file: any fault means "not written".
            Some(_) => Err(injected("atomic write failed")),
            None => self.inner.write_atomic(name, bytes),
        }
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.gate(OpKind::Other, name)?;
        self.inner.remove(name)
    }

    fn truncate(&self, name: &str, len_bytes: u64) -> io::Result<()> {
        match self.gate(OpKind::Write, name)? {
            Some(_) => Err(injected("truncate failed")),
            None => self.inner.truncate(name, len_bytes),
        }
    }

    fn sync_dir(&self) -> io::Result<()> {
        match self.gate(OpKind::Sync, "")? {
            Some(_) => Err(injected("directory fsync error")),
            None => self.inner.sync_dir(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_storage_keeps_live_and_durable_apart() {
        let s = MemStorage::new();
        let mut f = s.open_append("a").unwrap();
        f.append(b"durable").unwrap();
        f.sync_data().unwrap();
        s.sync_dir().unwrap();
        f.append(b"-unsynced").unwrap();
        assert_eq!(s.file("a").unwrap(), b"durable-unsynced");
        assert_eq!(s.durable_len("a"), Some(7));
        let mut seen_drop = false;
        let mut seen_partial = false;
        for seed in 0..64 {
            let (c, effects) = s.crash(seed);
            let data = c.file("a").unwrap();
            assert!(
                data.starts_with(b"durable"),
                "seed {seed}: durable bytes lost"
            );
            assert!(data.len() <= b"durable-unsynced".len());
            seen_drop |= data.len() == 7;
            seen_partial |= data.len() > 7;
            assert_eq!(effects.len(), 1);
        }
        assert!(seen_drop && seen_partial);
    }

    #[test]
    fn unsynced_names_and_removals_may_be_undone_by_a_crash() {
        let s = MemStorage::new();
        s.write_atomic("kept", b"x").unwrap();
        s.remove("kept").unwrap();
        let mut f = s.open_append("new").unwrap();
        f.append(b"y").unwrap();
        f.sync_data().unwrap();
        let outcomes: Vec<_> = (0..64)
            .map(|seed| {
                let (c, _) = s.crash(seed);
                (c.file("kept").is_some(), c.file("new").is_some())
            })
            .collect();
        assert!(outcomes.iter().any(|o| o.0) && outcomes.iter().any(|o| !o.0));
        assert!(outcomes.iter().any(|o| o.1) && outcomes.iter().any(|o| !o.1));
        s.sync_dir().unwrap();
        let (c, _) = s.crash(1);
        assert!(c.file("kept").is_none());
        assert_eq!(c.file("new").unwrap(), b"y");
    }

    #[test]
    fn preallocated_zeros_survive_a_crash_only_once_synced() {
        let s = MemStorage::preallocating(8);
        let mut f = s.open_append("a").unwrap();
        f.append(b"abc").unwrap();
        assert_eq!(s.file("a").unwrap(), b"abc\0\0\0\0\0\0\0\0");
        f.sync_data().unwrap();
        s.sync_dir().unwrap();
        f.append(b"defghijkl").unwrap(); // past the zeros: extends again
        assert_eq!(s.len("a").unwrap(), 12 + 8);
        for seed in 0..64 {
            let (c, _) = s.crash(seed);
            let data = c.file("a").unwrap();
            assert!(data.starts_with(b"abc"), "seed {seed}");
            assert!(
                data.len() >= 11,
                "seed {seed}: the synced zeros are durable"
            );
        }
        s.truncate("a", 3).unwrap();
        assert_eq!(s.file("a").unwrap(), b"abc");
    }

    #[test]
    fn faulty_storage_fires_once_then_stays_down() {
        let plan = FaultPlan {
            op_index: 2,
            kind: FaultKind::SyncError,
            seed: 0,
        };
        let s = FaultyStorage::new(MemStorage::new(), Some(plan));
        let mut f = s.open_append("a").unwrap(); // op 0
        f.append(b"abc").unwrap(); // op 1
        f.append(b"def").unwrap(); // op 2: a write, not a sync: proceeds
        assert!(f.sync_data().is_err()); // op 3: fires
        assert!(f.append(b"g").is_err());
        assert!(s.list().is_err());
        assert_eq!(s.fired().unwrap().op_index, 3);
        assert_eq!(s.inner().durable_len("a"), Some(0));
        assert_eq!(s.inner().file("a").unwrap(), b"abcdef");
    }

    #[test]
    fn file_storage_round_trip() {
        let dir = std::env::temp_dir().join(format!("pickline-wal-fs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let s = FileStorage::open(&dir).unwrap();
        let mut f = s.open_append("seg").unwrap();
        f.append(b"hello ").unwrap();
        f.append(b"world").unwrap();
        f.sync_data().unwrap();
        s.sync_dir().unwrap();
        // The appends are followed by preallocated zeros.
        let read = s.read("seg").unwrap();
        assert_eq!(&read[..11], b"hello world");
        assert_eq!(read.len() as u64, 6 + PREALLOCATE_CHUNK_LEN);
        assert!(read[11..].iter().all(|&b| b == 0));
        s.truncate("seg", 5).unwrap();
        assert_eq!(s.read("seg").unwrap(), b"hello");
        // Reopened, appends continue at the end (zeros run ahead again).
        let mut f = s.open_append("seg").unwrap();
        f.append(b"!").unwrap();
        f.sync_data().unwrap();
        assert_eq!(&s.read("seg").unwrap()[..6], b"hello!");
        s.write_atomic("snap", b"state").unwrap();
        let mut names = s.list().unwrap();
        names.sort();
        assert_eq!(names, vec!["seg".to_string(), "snap".to_string()]);
        s.remove("seg").unwrap();
        s.sync_dir().unwrap();
        assert_eq!(s.list().unwrap(), vec!["snap".to_string()]);
        assert!(s.read("../etc/passwd").is_err());
        // A file larger than a removal step goes in steps and leaves nothing behind.
        let mut f = s.open_append("big").unwrap();
        f.append(&vec![7u8; (REMOVE_STEP_LEN * 2 + 5) as usize])
            .unwrap();
        f.sync_data().unwrap();
        drop(f);
        s.remove("big").unwrap();
        s.sync_dir().unwrap();
        assert_eq!(s.list().unwrap(), vec!["snap".to_string()]);
        assert!(
            s.remove("big").is_err(),
            "removing a missing file is an error"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
