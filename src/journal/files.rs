//! The journal's storage seam: how its files are written in place, and why each sync is as
//! cheap as the device allows.
//!
//! ## Written in place, into zeros made durable beforehand
//!
//! A segment (`seg-*.jnl`, [`super::SEGMENT_BYTES`]) and `grey.dat` ([`super::grey`]) are
//! made their full size when they are created: zeros written and synced with the file's size
//! and its name in the folder ([`FileLayer::open_segment`]). Every later write lands inside
//! blocks the file system has already allocated and initialised, so making it durable
//! commits no metadata: no new size, no new block, no journal transaction of the file system,
//! only the data and the disk's cache flush. An append would commit a new size each time (on
//! ext4 a transaction of its journal as well as the data).
//!
//! On Linux the operating system's files ([`OsFiles`]) are opened `O_DIRECT | O_DSYNC`: each
//! write goes from an aligned buffer straight to the device and returns once it is durable,
//! so [`SegmentFile::sync`] has nothing left to do. Where the file system refuses direct I/O
//! (tmpfs), the file is written through the page cache and synced with `fdatasync`.
//!
//! ## Blocks, and the bytes already durable in them
//!
//! Direct I/O writes whole [`BLOCK_BYTES`] blocks. A write that starts inside a block
//! rewrites the block's bytes before it, and those are bytes already durable (the records or
//! entries before, which the passenger was told about). They are rewritten **unchanged**,
//! from a copy of the last block written (or read back when no copy is held), and the rest of
//! the last block after the new bytes is written as zeros. Disks and flash write a sector
//! atomically (power-loss protection of the sector, 512 bytes or 4 KiB): a cut during the
//! write leaves each sector with its old bytes or its new ones, and since both are the same
//! for every durable byte, a durable record cannot be damaged by the write after it,
//! whichever sectors made it. The new bytes of a cut write are partly there or not: each
//! record and grey entry carries its CRC, a slot of zeros is "no record", never a record, and
//! the open of the journal cuts (writes zeros over) whatever follows the last valid one. A
//! device that breaks the sector's atomicity (one that scrambles a whole sector when the
//! power goes mid-write) could damage the durable records in that block; the CRC then shows
//! it (the slot is reported as corrupt and declared lost to the depot), it cannot pass for
//! a record.
//!
//! ## The seam
//!
//! [`FileLayer`] and [`SegmentFile`] are the only way the journal reaches its segments and
//! `grey.dat`, so tests can put a full disk, an I/O error or a simulated power cut behind
//! them (`tests/journal_faults.rs`, `tests/power_cut_sweep.rs`, whose simulated storage keeps
//! what was synced, sector by sector, and zeroes the rest of a written sector as direct I/O
//! does).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Bytes of a block written with direct I/O: the physical sector of today's disks and flash,
/// and a multiple of every logical block size met (512, 4,096).
pub const BLOCK_BYTES: usize = 4_096;
/// Bytes one direct write carries at most (a larger write is made in several): a whole group
/// commit (1,024 records of 96 bytes) with the block it starts in.
pub const DIRECT_WRITE_BYTES_MAX: usize = 128 * 1_024;
/// Zeros written at once when a file is made its full size.
const ZERO_FILL_CHUNK_BYTES: usize = 64 * 1_024;

/// A file the journal writes in place: a segment or `grey.dat`.
pub trait SegmentFile: Send {
    /// Write `bytes` at `offset`. Bytes before `offset` are left as they are (rewritten
    /// unchanged); the rest of the block the write ends in may be overwritten with zeros, so
    /// nothing the caller needs may follow the bytes written in that block. Durable once
    /// [`SegmentFile::sync`] returns.
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()>;
    /// Make every write so far durable.
    fn sync(&mut self) -> io::Result<()>;
}

/// Opens the journal's files.
pub trait FileLayer: Send {
    /// Open `path` for writes in place, created when missing; a file shorter than `len`
    /// bytes is made `len` long with zeros, synced, and its folder synced, before this
    /// returns (so that a later write's sync commits no metadata, and the name survives a
    /// power cut as surely as what is written in it).
    fn open_segment(&self, path: &Path, len: u64) -> io::Result<Box<dyn SegmentFile>>;

    /// Open `path`, which another handle writes (a side file of its own), only to sync it.
    fn open_for_sync(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        self.open_segment(path, 0)
    }

    /// Replace the file at `path` by `bytes` atomically and durably (a temporary file,
    /// synced, renamed over it, the folder synced): after a power cut the old content or the
    /// new, never a mix.
    fn replace(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let tmp = path.with_extension("tmp");
        {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        match path.parent() {
            Some(dir) => super::sync_dir(dir),
            None => Ok(()),
        }
    }
}

/// The operating system's files: written in place with direct, synchronous I/O.
pub struct OsFiles;

/// Files whose sync does nothing. NOT durable: for measuring what durability costs, and
/// for simulations whose records need not survive a power cut.
pub struct UnsyncedFiles;

/// A byte buffer whose start is aligned to [`BLOCK_BYTES`], as direct I/O requires: a zeroed
/// allocation one block longer than needed, used from its first aligned byte. Sized once.
struct BlockBuf {
    storage: Vec<u8>,
    offset: usize,
}

impl BlockBuf {
    fn new(len: usize) -> BlockBuf {
        let storage = vec![0u8; len + BLOCK_BYTES];
        let offset = storage.as_ptr().align_offset(BLOCK_BYTES);
        BlockBuf { storage, offset }
    }

    fn bytes(&mut self) -> &mut [u8] {
        let len = self.storage.len() - BLOCK_BYTES;
        &mut self.storage[self.offset..self.offset + len]
    }
}

/// How an OS file is written.
enum Mode {
    /// `O_DIRECT | O_DSYNC`: whole aligned blocks, each write durable when it returns.
    Direct {
        buf: BlockBuf,
        /// The last block written, as written (sized at open).
        held: Box<[u8; BLOCK_BYTES]>,
        /// Its index in the file; `None` when no block is held (then it is read back).
        held_index: Option<u64>,
    },
    /// Through the page cache; `sync` is `fdatasync` (or nothing, for [`UnsyncedFiles`]).
    Buffered { durable: bool, dirty: bool },
}

struct OsSegment {
    file: fs::File,
    mode: Mode,
}

impl SegmentFile for OsSegment {
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        match &mut self.mode {
            Mode::Buffered { dirty, .. } => {
                *dirty = true;
                self.file.write_all_at(bytes, offset)
            }
            Mode::Direct {
                buf,
                held,
                held_index,
            } => {
                let written = write_direct(&self.file, buf, held, held_index, offset, bytes);
                if written.is_err() {
                    // What the device holds of that block is unknown: read it back next time.
                    *held_index = None;
                }
                written
            }
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        match &mut self.mode {
            Mode::Direct { .. } => Ok(()),
            Mode::Buffered { durable, dirty } => {
                if *durable && *dirty {
                    self.file.sync_data()?;
                }
                *dirty = false;
                Ok(())
            }
        }
    }
}

/// Write `bytes` at `offset` in whole blocks: the block's bytes before `offset` rewritten as
/// they are (from `last`, else read back), zeros after the bytes to the block's end.
fn write_direct(
    file: &fs::File,
    buf: &mut BlockBuf,
    held: &mut [u8; BLOCK_BYTES],
    held_index: &mut Option<u64>,
    offset: u64,
    bytes: &[u8],
) -> io::Result<()> {
    let block = BLOCK_BYTES as u64;
    let mut at = offset;
    let mut rest = bytes;
    while !rest.is_empty() {
        let first_block = at / block;
        let head = (at % block) as usize;
        let b = buf.bytes();
        let take = rest.len().min(b.len() - head);
        if head > 0 {
            if *held_index == Some(first_block) {
                b[..head].copy_from_slice(&held[..head]);
            } else {
                read_block(file, &mut b[..BLOCK_BYTES], first_block * block)?;
            }
        }
        b[head..head + take].copy_from_slice(&rest[..take]);
        let end = (head + take).next_multiple_of(BLOCK_BYTES);
        b[head + take..end].fill(0);
        file.write_all_at(&b[..end], first_block * block)?;
        held.copy_from_slice(&b[end - BLOCK_BYTES..end]);
        *held_index = Some(first_block + (end / BLOCK_BYTES) as u64 - 1);
        at += take as u64;
        rest = &rest[take..];
    }
    Ok(())
}

/// Write zeros over `from..to` of `f` and sync them (a torn tail, older laps, a failed
/// write cut so that no later open takes them for entries); nothing when the range is empty.
pub(super) fn zero_range(f: &mut dyn SegmentFile, from: u64, to: u64) -> io::Result<()> {
    if to <= from {
        return Ok(());
    }
    let zeros = [0u8; BLOCK_BYTES];
    let mut at = from;
    while at < to {
        let n = (to - at).min(BLOCK_BYTES as u64) as usize;
        f.write_at(at, &zeros[..n])?;
        at += n as u64;
    }
    f.sync()
}

/// Read the block at `at` into `into` (zeros past the end of the file).
fn read_block(file: &fs::File, into: &mut [u8], at: u64) -> io::Result<()> {
    let mut got = 0;
    while got < into.len() {
        match file.read_at(&mut into[got..], at + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    into[got..].fill(0);
    Ok(())
}

/// Create `path` if missing and make it at least `len` bytes long with zeros; synced (the
/// size, and the folder when the file is new) when `durable`.
fn make_full_size(path: &Path, len: u64, durable: bool) -> io::Result<()> {
    let created = !path.exists();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let have = f.metadata()?.len();
    if have < len && !durable {
        // Nothing here is synced, so nothing gains from blocks written ahead: a sparse file
        // (it reads as zeros and takes no room; a thousand simulated buses in a test).
        return f.set_len(len);
    }
    if have < len {
        let zeros = [0u8; ZERO_FILL_CHUNK_BYTES];
        let mut at = have;
        while at < len {
            let n = (len - at).min(ZERO_FILL_CHUNK_BYTES as u64) as usize;
            f.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        f.sync_all()?;
    }
    if durable && created {
        if let Some(dir) = path.parent() {
            super::sync_dir(dir)?;
        }
    }
    Ok(())
}

fn open_buffered(path: &Path, durable: bool) -> io::Result<OsSegment> {
    let file = fs::OpenOptions::new().read(true).write(true).open(path)?;
    Ok(OsSegment {
        file,
        mode: Mode::Buffered {
            durable,
            dirty: false,
        },
    })
}

#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> io::Result<Option<OsSegment>> {
    let opened = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
        .open(path);
    match opened {
        Ok(file) => Ok(Some(OsSegment {
            file,
            mode: Mode::Direct {
                buf: BlockBuf::new(DIRECT_WRITE_BYTES_MAX),
                held: Box::new([0u8; BLOCK_BYTES]),
                held_index: None,
            },
        })),
        // The file system has no direct I/O (tmpfs): through the page cache.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_path: &Path) -> io::Result<Option<OsSegment>> {
    Ok(None)
}

impl FileLayer for OsFiles {
    fn open_segment(&self, path: &Path, len: u64) -> io::Result<Box<dyn SegmentFile>> {
        make_full_size(path, len, true)?;
        match open_direct(path)? {
            Some(f) => Ok(Box::new(f)),
            None => Ok(Box::new(open_buffered(path, true)?)),
        }
    }

    fn open_for_sync(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let file = fs::OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Box::new(AlwaysSync(file)))
    }
}

/// A side file synced on every call (its writes come through another handle, so no write
/// through this one tells whether a sync is needed).
struct AlwaysSync(fs::File);

impl SegmentFile for AlwaysSync {
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all_at(bytes, offset)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
}

impl FileLayer for UnsyncedFiles {
    fn open_segment(&self, path: &Path, len: u64) -> io::Result<Box<dyn SegmentFile>> {
        make_full_size(path, len, false)?;
        Ok(Box::new(open_buffered(path, false)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Appends of every size, in place, through direct I/O (or the page cache where the
    /// file system has none): the file holds exactly what a plain append would, with zeros
    /// after, whatever the block each write starts and ends in.
    #[test]
    fn writes_in_place_keep_every_byte_before_them_and_zeros_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        let len = 64 * BLOCK_BYTES as u64;
        let mut f = OsFiles.open_segment(&path, len).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), len);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut model: Vec<u8> = Vec::new();
        while model.len() < 60 * BLOCK_BYTES {
            let n = if rng.gen_bool(0.1) {
                rng.gen_range(BLOCK_BYTES..3 * BLOCK_BYTES)
            } else {
                rng.gen_range(1..300)
            };
            let bytes: Vec<u8> = (0..n).map(|_| rng.gen_range(1..=255)).collect();
            f.write_at(model.len() as u64, &bytes).unwrap();
            f.sync().unwrap();
            model.extend_from_slice(&bytes);
            if rng.gen_bool(0.05) {
                // Reopened: the block the next write starts in is read back.
                drop(f);
                f = OsFiles.open_segment(&path, len).unwrap();
            }
        }
        let on_disk = fs::read(&path).unwrap();
        assert_eq!(on_disk.len() as u64, len, "the size never changes");
        assert_eq!(&on_disk[..model.len()], &model[..]);
        assert!(on_disk[model.len()..].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_write_larger_than_the_buffer_goes_in_several() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        let len = 4 * DIRECT_WRITE_BYTES_MAX as u64;
        let mut f = OsFiles.open_segment(&path, len).unwrap();
        let bytes: Vec<u8> = (0..2 * DIRECT_WRITE_BYTES_MAX + 77)
            .map(|i| (i % 251) as u8 + 1)
            .collect();
        f.write_at(5, &bytes).unwrap();
        let on_disk = fs::read(&path).unwrap();
        assert_eq!(&on_disk[5..5 + bytes.len()], &bytes[..]);
        assert!(on_disk[..5].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_shorter_file_is_made_full_size_with_its_bytes_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old");
        fs::write(&path, [7u8; 100]).unwrap();
        let mut f = OsFiles.open_segment(&path, 8_192).unwrap();
        f.write_at(100, &[9u8; 10]).unwrap();
        let on_disk = fs::read(&path).unwrap();
        assert_eq!(on_disk.len(), 8_192);
        assert_eq!(&on_disk[..100], &[7u8; 100][..]);
        assert_eq!(&on_disk[100..110], &[9u8; 10][..]);
        assert!(on_disk[110..].iter().all(|&b| b == 0));
    }
}
