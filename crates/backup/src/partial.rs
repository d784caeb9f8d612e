//! Partial files (PF-1 to PF-5): a writer names byte ranges of a file, and exactly those bytes are
//! backed up and, at restore, written back into the file at their offsets.
//!
//! The ranges of a partial file are read from the shadow copy and stored with the backup's
//! documents as `partial-<n>.bin` (the ranges' bytes one after the other), listed in the manifest
//! with the file's path and the resolved ranges; the file itself is left out of the backup's tree,
//! since only the ranges may be copied. A ranges file (`File=<path>`, PF-2: a little-endian u64
//! count, then that many offset/length u64 pairs) is read from the shadow copy and backed up as an
//! ordinary file too (PF-3), so it comes back before the ranges are written (RST-FILE-4).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use shadowcopy_metadata::validate::{Ranges, parse_ranges};

/// Byte ranges as (offset, length) pairs.
pub(crate) type RangeList = Vec<(u64, u64)>;

/// The most bytes of partial files one backup keeps, since they travel with the documents.
pub(crate) const MAX_PARTIAL_BYTES: u64 = 1 << 30;

/// Resolves a ranges string to (offset, length) pairs; a ranges file is read through `locate`,
/// which maps its original path to where it can be read (the shadow copy). Returns the pairs and
/// the ranges file's original path, if there is one.
pub(crate) fn resolve(
    ranges: &str,
    locate: impl Fn(&Path) -> Option<std::path::PathBuf>,
) -> Result<(RangeList, Option<String>), String> {
    match parse_ranges(ranges)? {
        Ranges::Inline(pairs) => Ok((pairs, None)),
        Ranges::File(path) => {
            let readable = locate(Path::new(&path)).ok_or_else(|| {
                format!("its ranges file {path} is on no volume of the shadow copy set (PF-1)")
            })?;
            let bytes = std::fs::read(&readable)
                .map_err(|e| format!("cannot read its ranges file {path}: {e}"))?;
            Ok((
                ranges_file(&bytes).map_err(|e| format!("ranges file {path}: {e}"))?,
                Some(path),
            ))
        }
    }
}

/// Decodes a binary ranges file (PF-2, little-endian).
pub(crate) fn ranges_file(bytes: &[u8]) -> Result<RangeList, String> {
    let word = |i: usize| -> Option<u64> {
        let chunk = bytes.get(i * 8..i * 8 + 8)?;
        Some(u64::from_le_bytes(chunk.try_into().ok()?))
    };
    let count = word(0).ok_or("it is shorter than its 8-byte count")?;
    let needed = count.checked_mul(16).and_then(|n| n.checked_add(8));
    if needed != Some(bytes.len() as u64) {
        return Err(format!(
            "it says {count} ranges, which takes {} bytes, but it has {}",
            count.saturating_mul(16).saturating_add(8),
            bytes.len()
        ));
    }
    (0..count as usize)
        .map(|i| {
            let (offset, length) = (word(1 + 2 * i).unwrap_or(0), word(2 + 2 * i).unwrap_or(0));
            offset
                .checked_add(length)
                .map(|_| (offset, length))
                .ok_or_else(|| format!("range {offset}:{length} runs past 2^64"))
        })
        .collect()
}

/// The bytes of `ranges` of the file at `path`, one range after the other.
pub(crate) fn capture(path: &Path, ranges: &[(u64, u64)]) -> Result<Vec<u8>, String> {
    let mut file = File::open(path).map_err(|e| format!("cannot open it: {e}"))?;
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    let mut out = Vec::new();
    for &(offset, length) in ranges {
        if offset + length > size {
            return Err(format!(
                "range {offset}:{length} runs past the end of the file ({size} bytes)"
            ));
        }
        let start = out.len();
        out.resize(start + length as usize, 0);
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(&mut out[start..]))
            .map_err(|e| format!("cannot read range {offset}:{length}: {e}"))?;
    }
    Ok(out)
}

/// Writes `data` (as [`capture`] made it) back into `path` at the offsets of `ranges`, creating
/// the file when it is missing and never following a symbolic link at its place.
pub(crate) fn write_back(path: &Path, ranges: &[(u64, u64)], data: &[u8]) -> Result<(), String> {
    let total: u64 = ranges.iter().map(|r| r.1).sum();
    if total != data.len() as u64 {
        return Err(format!(
            "the stored ranges hold {} bytes, and the ranges {total}",
            data.len()
        ));
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut at = 0usize;
    for &(offset, length) in ranges {
        let chunk = &data[at..at + length as usize];
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.write_all(chunk))
            .map_err(|e| {
                format!(
                    "cannot write range {offset}:{length} of {}: {e}",
                    path.display()
                )
            })?;
        at += length as usize;
    }
    file.sync_all()
        .map_err(|e| format!("cannot sync {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_files_are_little_endian_count_then_pairs() {
        let mut bytes = 2u64.to_le_bytes().to_vec();
        for v in [0u64, 5, 100, 20] {
            bytes.extend(v.to_le_bytes());
        }
        assert_eq!(ranges_file(&bytes).unwrap(), vec![(0, 5), (100, 20)]);
        assert!(ranges_file(&bytes[..20]).is_err(), "truncated");
        assert!(ranges_file(&[]).is_err());
    }

    #[test]
    fn captured_ranges_go_back_to_their_offsets() {
        let dir = std::env::temp_dir().join(format!("sc-partial-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f");
        std::fs::write(&file, (0..=255u8).collect::<Vec<_>>()).unwrap();
        let ranges = [(0, 5), (100, 20), (0x40, 0x10)];
        let data = capture(&file, &ranges).unwrap();
        assert_eq!(data.len(), 41);
        assert_eq!(&data[..5], &[0, 1, 2, 3, 4]);
        std::fs::write(&file, [0u8; 256]).unwrap();
        write_back(&file, &ranges, &data).unwrap();
        let back = std::fs::read(&file).unwrap();
        assert_eq!(&back[100..120], &(100..120).collect::<Vec<u8>>()[..]);
        assert_eq!(back[99], 0, "bytes outside the ranges are left alone");
        assert!(capture(&file, &[(250, 10)]).is_err(), "past the end");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
