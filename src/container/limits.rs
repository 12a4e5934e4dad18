//! Limits on what an image may cost to read: every archive, layer and JSON document that
//! comes from outside (an imported file, a pulled blob) is read through these, so a small
//! input cannot unpack into gigabytes (a "zip bomb") nor be read whole into memory.
//!
//! | limit                    | value    | applies to                                            |
//! |--------------------------|----------|-------------------------------------------------------|
//! | [`MAX_IMAGE_UNPACKED`]   | 16 GiB   | the sum of one image's layers as unpacked, and an     |
//! |                          |          | imported archive (`docker save`, OCI tar) as unpacked |
//! | [`MAX_RATIO`]            | 100 : 1  | unpacked / compressed bytes of a gzip stream, checked |
//! |                          |          | once more than [`RATIO_GRACE`] (16 MiB) is unpacked   |
//! | [`MAX_ENTRIES`]          | 1 000 000| tar entries in one layer or one imported archive      |
//! | [`MAX_METADATA`]         | 4 MiB    | manifest.json, index.json, a manifest, a config       |
//!
//! Real layers compress about 2:1 to 5:1 and rarely beyond 20:1; a layer of zeros
//! compresses about 1000:1, so the ratio cap stops a bomb after at most 100 times its own
//! size (a 2 MiB bomb stops before 200 MiB), and the size cap stops a large one that keeps
//! under the ratio. Change a limit here; the error names the limit it hit.
//!
//! [`Meter`] counts one stream; [`Counted`] wraps the compressed side (what is read from
//! the file or blob) and [`Capped`] the unpacked side (what the tar reader consumes, so
//! bytes skipped or drained count too). When a cap trips, the reader fails and the meter
//! remembers why, so the caller can say so by name ([`Meter::exceeded`]).
//!
//! Sync. May call: nothing else in the crate.

use std::cell::Cell;
use std::fmt;
use std::io::{self, Read};

/// The most one image may unpack to: the sum of its layers, or an imported archive.
pub const MAX_IMAGE_UNPACKED: u64 = 16 << 30;
/// The largest unpacked / compressed ratio of a gzip stream, past [`RATIO_GRACE`].
pub const MAX_RATIO: u64 = 100;
/// Unpacked bytes a stream may reach before [`MAX_RATIO`] applies (small files of zeros
/// or text compress far better than 100:1 and are harmless).
pub const RATIO_GRACE: u64 = 16 << 20;
/// Most entries (files, directories, links) in one layer or one imported archive.
pub const MAX_ENTRIES: u64 = 1_000_000;
/// Largest JSON document read into memory: manifest.json, index.json, a manifest, a config.
pub const MAX_METADATA: u64 = 4 << 20;

/// Which limit a stream went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    /// Unpacked more than this many bytes (the budget left for the image).
    Size(u64),
    /// Unpacked more than [`MAX_RATIO`] times the compressed bytes read.
    Ratio { unpacked: u64, compressed: u64 },
    /// More than [`MAX_ENTRIES`] tar entries.
    Entries,
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exceeded::Size(limit) => write!(
                f,
                "unpacks to more than {} (the limit per image is {})",
                bytes(*limit),
                bytes(MAX_IMAGE_UNPACKED)
            ),
            Exceeded::Ratio {
                unpacked,
                compressed,
            } => write!(
                f,
                "unpacks to more than {MAX_RATIO} times its compressed size ({} from {}; \
                 the limit is {MAX_RATIO}:1 beyond the first {})",
                bytes(*unpacked),
                bytes(*compressed),
                bytes(RATIO_GRACE)
            ),
            Exceeded::Entries => write!(f, "has more than {MAX_ENTRIES} entries (the limit)"),
        }
    }
}

/// `4194304` -> `4 MiB`; exact multiples only, else plain bytes.
pub fn bytes(n: u64) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{} {unit}", n >> shift);
        }
    }
    format!("{n} bytes")
}

/// The counts of one stream and why it was stopped, if it was.
#[derive(Debug)]
pub struct Meter {
    /// Unpacked bytes allowed (the image's budget left when the stream started).
    limit: u64,
    compressed: Cell<u64>,
    unpacked: Cell<u64>,
    entries: Cell<u64>,
    exceeded: Cell<Option<Exceeded>>,
    /// Whether [`MAX_RATIO`] applies (the stream is compressed).
    ratio: bool,
}

impl Meter {
    /// A meter allowing `limit` unpacked bytes; `compressed` turns the ratio check on.
    pub fn new(limit: u64, compressed: bool) -> Meter {
        Meter {
            limit,
            compressed: Cell::new(0),
            unpacked: Cell::new(0),
            entries: Cell::new(0),
            exceeded: Cell::new(None),
            ratio: compressed,
        }
    }

    pub fn unpacked(&self) -> u64 {
        self.unpacked.get()
    }

    /// The limit that stopped the stream, if one did.
    pub fn exceeded(&self) -> Option<Exceeded> {
        self.exceeded.get()
    }

    fn trip(&self, why: Exceeded) -> io::Error {
        self.exceeded.set(Some(why));
        io::Error::other(why.to_string())
    }

    /// Counts one tar entry; fails past [`MAX_ENTRIES`].
    pub fn entry(&self) -> io::Result<()> {
        let n = self.entries.get() + 1;
        self.entries.set(n);
        if n > MAX_ENTRIES {
            return Err(self.trip(Exceeded::Entries));
        }
        Ok(())
    }

    fn add_unpacked(&self, n: u64) -> io::Result<()> {
        let total = self.unpacked.get() + n;
        self.unpacked.set(total);
        if total > self.limit {
            return Err(self.trip(Exceeded::Size(self.limit)));
        }
        let compressed = self.compressed.get();
        if self.ratio && total > RATIO_GRACE && total > compressed.saturating_mul(MAX_RATIO) {
            return Err(self.trip(Exceeded::Ratio {
                unpacked: total,
                compressed,
            }));
        }
        Ok(())
    }
}

/// Counts the compressed bytes read from `inner` into a [`Meter`].
pub struct Counted<'m, R> {
    pub inner: R,
    pub meter: &'m Meter,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let m = self.meter;
        m.compressed.set(m.compressed.get() + n as u64);
        Ok(n)
    }
}

/// Counts the unpacked bytes read from `inner` and fails once a limit is crossed.
pub struct Capped<'m, R> {
    pub inner: R,
    pub meter: &'m Meter,
}

impl<R: Read> Read for Capped<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(why) = self.meter.exceeded() {
            return Err(io::Error::other(why.to_string()));
        }
        let n = self.inner.read(buf)?;
        self.meter.add_unpacked(n as u64)?;
        Ok(n)
    }
}

/// Reads at most `limit` bytes of a JSON document; `None` if it is longer.
pub fn read_limited(mut r: impl Read, limit: u64) -> io::Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    (&mut r).take(limit + 1).read_to_end(&mut out)?;
    Ok((out.len() as u64 <= limit).then_some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_applies_past_the_grace_and_size_always() {
        let m = Meter::new(u64::MAX, true);
        m.compressed.set(1000);
        // Under the grace, any ratio passes.
        m.add_unpacked(RATIO_GRACE).unwrap();
        let e = m.add_unpacked(1).unwrap_err();
        assert!(
            e.to_string().contains("100 times its compressed size"),
            "{e}"
        );
        assert!(matches!(m.exceeded(), Some(Exceeded::Ratio { .. })));
        // Uncompressed streams have no ratio, only the size.
        let m = Meter::new(RATIO_GRACE * 2, false);
        m.add_unpacked(RATIO_GRACE * 2).unwrap();
        assert!(m.add_unpacked(1).is_err());
        assert_eq!(m.exceeded(), Some(Exceeded::Size(RATIO_GRACE * 2)));
        assert_eq!(bytes(MAX_METADATA), "4 MiB");
        assert_eq!(bytes(5), "5 bytes");
        assert_eq!(read_limited(&b"abcd"[..], 4).unwrap().unwrap(), b"abcd");
        assert_eq!(read_limited(&b"abcde"[..], 4).unwrap(), None);
    }
}
