//! Reading zisofs files ([`super::ondisk::zisofs`]): what `mkisofs -z` and `xorriso -zisofs`
//! store compressed, and Linux's iso9660 shows uncompressed. Only the blocks a read covers are
//! read and inflated, so random access costs at most a block on either side.
//!
//! The data is untrusted: pointers that go backwards or past the stored bytes, a block larger
//! than zlib can make of one, or a stream that does not inflate to exactly its block are
//! errors naming the file, never a panic or an allocation the image chooses.

use super::error::{Error, Result};
use super::ondisk::zisofs::{LOG2_BLOCK, LOG2_BLOCK2, ZLIB, ZLIB2};
use super::susp::ZisofsParams;
use flate2::{Decompress, FlushDecompress, Status};

/// The most a zlib stream of one block can take, with room to spare: deflate's stored blocks
/// add 5 bytes per 64 KiB at worst, zlib 6 more; anything above this is not a block of this
/// file.
fn max_stream(block: u64) -> u64 {
    block + block / 1024 + 64
}

/// Reads the uncompressed bytes of the zisofs file `path` (compressed as `z` says, `size` bytes
/// uncompressed) at `offset` into `buf`; `stored(at, buf)` reads its stored (compressed) bytes.
/// Returns fewer bytes than asked only at the end of the file.
pub(super) fn read_at(
    z: ZisofsParams,
    size: u64,
    path: &str,
    mut stored: impl FnMut(u64, &mut [u8]) -> Result<usize>,
    offset: u64,
    buf: &mut [u8],
) -> Result<usize> {
    let bad = |why: String| Error::Compressed {
        path: path.to_string(),
        why,
    };
    let pointer = z.pointer_bytes();
    let (zlib, sizes) = if z.version2 {
        (ZLIB2, LOG2_BLOCK2)
    } else {
        (ZLIB, LOG2_BLOCK)
    };
    if z.algorithm != zlib {
        return Err(bad(format!(
            "algorithm {:?}; only zlib ({:?}) is read",
            String::from_utf8_lossy(&z.algorithm),
            String::from_utf8_lossy(&zlib)
        )));
    }
    if !sizes.contains(&z.log2_block) {
        return Err(bad(format!(
            "blocks of 2^{} bytes; zisofs{} has 2^{} to 2^{}",
            z.log2_block,
            if z.version2 { "2" } else { "" },
            sizes.start(),
            sizes.end()
        )));
    }
    if offset >= size || buf.is_empty() {
        return Ok(0);
    }
    let block = 1u64 << z.log2_block;
    let end = size.min(offset.saturating_add(buf.len() as u64));
    let (first, last) = (offset / block, (end - 1) / block);
    let mut read_exact = |at: u64, len: u64, what: &str| -> Result<Vec<u8>> {
        let mut v = vec![0u8; len as usize];
        let got = stored(at, &mut v)?;
        if got < v.len() {
            return Err(bad(format!(
                "{what} at byte {at} run past the {} bytes stored",
                at + got as u64
            )));
        }
        Ok(v)
    };
    let table = (first.checked_mul(pointer))
        .and_then(|t| t.checked_add(u64::from(z.header_words) * 4))
        .ok_or_else(|| bad(format!("block {first} is past any pointer table")))?;
    let pointers: Vec<u64> = read_exact(table, (last - first + 2) * pointer, "block pointers")?
        .chunks_exact(pointer as usize)
        .map(|w| {
            let mut le = [0u8; 8];
            le[..w.len()].copy_from_slice(w);
            u64::from_le_bytes(le)
        })
        .collect();
    let base = pointers.first().copied().unwrap_or(0);
    for (i, w) in pointers.windows(2).enumerate() {
        if w[1] < w[0] || w[1] - w[0] > max_stream(block) {
            return Err(bad(format!(
                "block {} has pointers {} to {}",
                first + i as u64,
                w[0],
                w[1]
            )));
        }
    }
    let span = pointers.last().copied().unwrap_or(base) - base;
    let compressed = read_exact(base, span, "compressed blocks")?;
    let mut plain = vec![0u8; block as usize];
    for (i, w) in pointers.windows(2).enumerate() {
        let n = first + i as u64;
        let start = n * block;
        let len = block.min(size - start) as usize;
        let out = plain.get_mut(..len).unwrap_or_default();
        if w[0] == w[1] {
            out.fill(0);
        } else {
            let input = compressed
                .get((w[0] - base) as usize..(w[1] - base) as usize)
                .unwrap_or_default();
            inflate(input, out).map_err(|why| bad(format!("block {n}: {why}")))?;
        }
        let from = offset.max(start);
        let to = end.min(start + len as u64);
        if let (Some(dst), Some(src)) = (
            buf.get_mut((from - offset) as usize..(to - offset) as usize),
            out.get((from - start) as usize..(to - start) as usize),
        ) {
            dst.copy_from_slice(src);
        }
    }
    Ok((end - offset) as usize)
}

/// Inflates the zlib stream `input` into `out`, which it must fill exactly.
fn inflate(input: &[u8], out: &mut [u8]) -> std::result::Result<(), String> {
    let mut z = Decompress::new(true);
    match z.decompress(input, out, FlushDecompress::Sync) {
        // A full block, with or without the stream's end (libarchive flushes each block
        // rather than ending it; Linux takes either).
        Ok(_) if z.total_out() == out.len() as u64 => Ok(()),
        Ok(Status::StreamEnd) => Err(format!(
            "inflates to {} bytes, not {}",
            z.total_out(),
            out.len()
        )),
        Ok(_) => Err(format!(
            "{} compressed bytes inflate to {} bytes, not {}",
            input.len(),
            z.total_out(),
            out.len()
        )),
        Err(e) => Err(format!("not a zlib stream: {e}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use flate2::{write::ZlibEncoder, Compression};
    use std::io::Write;

    /// A zisofs file of `data` in blocks of 2^`log2`: header, pointers, zlib blocks (none for
    /// a block of zeros).
    fn compress(data: &[u8], log2: u8) -> Vec<u8> {
        let block = 1usize << log2;
        let n = data.len().div_ceil(block);
        let mut out = vec![0x37, 0xE4, 0x53, 0x96, 0xC9, 0xDB, 0xD6, 0x07];
        out.extend((data.len() as u32).to_le_bytes());
        out.extend([4, log2, 0, 0]);
        let mut streams = Vec::new();
        for c in data.chunks(block) {
            if c.iter().all(|&b| b == 0) {
                streams.push(Vec::new());
            } else {
                let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
                e.write_all(c).unwrap();
                streams.push(e.finish().unwrap());
            }
        }
        let mut at = (16 + (n + 1) * 4) as u32;
        for s in &streams {
            out.extend(at.to_le_bytes());
            at += s.len() as u32;
        }
        out.extend(at.to_le_bytes());
        for s in streams {
            out.extend(s);
        }
        out
    }

    fn zf(log2: u8) -> ZisofsParams {
        ZisofsParams {
            version2: false,
            algorithm: *b"pz",
            header_words: 4,
            log2_block: log2,
        }
    }

    fn reader(stored: &[u8]) -> impl FnMut(u64, &mut [u8]) -> Result<usize> + '_ {
        move |at, buf| {
            let from = (at as usize).min(stored.len());
            let n = buf.len().min(stored.len() - from);
            buf[..n].copy_from_slice(&stored[from..from + n]);
            Ok(n)
        }
    }

    #[test]
    fn any_range_reads_back_as_it_was() {
        let mut data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 / 13) as u8).collect();
        data[40_000..140_000].fill(0);
        let stored = compress(&data, 15);
        for (offset, len) in [
            (0, data.len()),
            (0, 1),
            (32_767, 2),
            (65_536, 65_536),
            (100_000, 150_000),
            (199_999, 10),
            (200_000, 10),
        ] {
            let mut buf = vec![0xAAu8; len];
            let n = read_at(
                zf(15),
                data.len() as u64,
                "f",
                reader(&stored),
                offset,
                &mut buf,
            )
            .unwrap();
            let want = &data[(offset as usize).min(data.len())..];
            let want = &want[..want.len().min(len)];
            assert_eq!(n, want.len(), "{offset}+{len}");
            assert!(buf[..n] == *want, "{offset}+{len}");
        }
    }

    #[test]
    fn a_size_is_at_most_what_the_pointers_stored_can_cover() {
        let z = zf(15);
        // 16-byte header, 4 pointers: 3 blocks of 32 KiB
        assert_eq!(z.max_size(16 + 16), 3 * 32768);
        assert_eq!(z.max_size(10), 0);
        let z2 = ZisofsParams {
            version2: true,
            header_words: 6,
            log2_block: 20,
            ..z
        };
        assert_eq!(z2.max_size(24 + 8 * 257), 256 << 20);
        assert_eq!(
            ZisofsParams {
                log2_block: 255,
                ..z
            }
            .max_size(u64::MAX),
            u64::MAX
        );
    }

    #[test]
    fn damaged_files_are_errors_naming_them() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let good = compress(&data, 15);
        let mut backwards = good.clone();
        backwards[20..24].copy_from_slice(&1_000_000u32.to_le_bytes());
        let mut garbled = good.clone();
        let first = u32::from_le_bytes(good[16..20].try_into().unwrap()) as usize;
        garbled[first..first + 8].fill(0xFF);
        let cut = good[..good.len() - 100].to_vec();
        let n = data.len() as u64;
        let cases: [(&[u8], ZisofsParams, u64, &str); 6] = [
            (&backwards, zf(15), n, "pointers"),
            (&garbled, zf(15), n, "zlib"),
            (&cut, zf(15), n, "run past"),
            (&good, zf(15), n + 5000, "block 3"),
            (&good, zf(18), n, "2^18"),
            (
                &good,
                ZisofsParams {
                    algorithm: *b"xz",
                    ..zf(15)
                },
                n,
                "xz",
            ),
        ];
        for (stored, z, size, why) in cases {
            let mut buf = vec![0u8; data.len()];
            let e = read_at(z, size, "dir/f.bin", reader(stored), 0, &mut buf)
                .unwrap_err()
                .to_string();
            assert!(e.contains("dir/f.bin") && e.contains(why), "{why}: {e}");
        }
    }
}
