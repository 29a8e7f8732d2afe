//! On-disk types and field codecs shared by the reader and the writer.
//!
//! This module owns the byte layout of ECMA-119 (ISO9660), the SUSP/RRIP signatures and the
//! Joliet escape sequences. It does no I/O and never panics: decoders take slices and return
//! `None` when a field does not fit; encoders write into slices the caller sized from the
//! constants here.
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

/// Logical sector size. ECMA-119 6.1.2 allows others; every disc and image in practice uses 2048.
pub const SECTOR_SIZE: u64 = 2048;
/// The volume descriptor set starts at sector 16 (ECMA-119 6.2.1).
pub const FIRST_DESCRIPTOR_SECTOR: u64 = 16;
/// Standard identifier of every ISO9660 volume descriptor (ECMA-119 8.1.2).
pub const STANDARD_ID: &[u8; 5] = b"CD001";

/// Volume descriptor types (ECMA-119 8.1.1).
pub mod vd_type {
    pub const BOOT_RECORD: u8 = 0;
    pub const PRIMARY: u8 = 1;
    pub const SUPPLEMENTARY: u8 = 2;
    pub const PARTITION: u8 = 3;
    pub const TERMINATOR: u8 = 255;
}

/// Byte offsets inside a primary or supplementary volume descriptor (ECMA-119 8.4, 8.5).
pub mod pvd {
    pub const SYSTEM_ID: core::ops::Range<usize> = 8..40;
    pub const VOLUME_ID: core::ops::Range<usize> = 40..72;
    pub const VOLUME_SPACE_SIZE: usize = 80;
    pub const ESCAPE_SEQUENCES: core::ops::Range<usize> = 88..120;
    pub const VOLUME_SET_SIZE: usize = 120;
    pub const VOLUME_SEQUENCE_NUMBER: usize = 124;
    pub const LOGICAL_BLOCK_SIZE: usize = 128;
    pub const PATH_TABLE_SIZE: usize = 132;
    pub const L_PATH_TABLE: usize = 140;
    pub const OPT_L_PATH_TABLE: usize = 144;
    pub const M_PATH_TABLE: usize = 148;
    pub const OPT_M_PATH_TABLE: usize = 152;
    pub const ROOT_DIRECTORY_RECORD: usize = 156;
    pub const VOLUME_SET_ID: core::ops::Range<usize> = 190..318;
    pub const PUBLISHER_ID: core::ops::Range<usize> = 318..446;
    pub const DATA_PREPARER_ID: core::ops::Range<usize> = 446..574;
    pub const APPLICATION_ID: core::ops::Range<usize> = 574..702;
    pub const COPYRIGHT_FILE_ID: core::ops::Range<usize> = 702..739;
    pub const ABSTRACT_FILE_ID: core::ops::Range<usize> = 739..776;
    pub const BIBLIOGRAPHIC_FILE_ID: core::ops::Range<usize> = 776..813;
    pub const CREATION_TIME: usize = 813;
    pub const MODIFICATION_TIME: usize = 830;
    pub const EXPIRATION_TIME: usize = 847;
    pub const EFFECTIVE_TIME: usize = 864;
    pub const FILE_STRUCTURE_VERSION: usize = 881;
}

/// El Torito boot record volume descriptor (El Torito 1.0, 2.0).
pub mod boot_record {
    pub const BOOT_SYSTEM_ID: core::ops::Range<usize> = 7..39;
    pub const BOOT_CATALOG_LBA: usize = 0x47;
    pub const EL_TORITO_ID: &[u8] = b"EL TORITO SPECIFICATION";
}

/// Joliet escape sequences in a supplementary volume descriptor (UCS-2 levels 1, 2, 3).
pub const JOLIET_ESCAPES: [&[u8; 3]; 3] = [b"%/@", b"%/C", b"%/E"];

/// Directory record layout (ECMA-119 9.1).
pub mod dr {
    pub const LENGTH: usize = 0;
    pub const EXT_ATTR_LENGTH: usize = 1;
    pub const EXTENT: usize = 2;
    pub const DATA_LENGTH: usize = 10;
    pub const RECORDING_TIME: usize = 18;
    pub const FLAGS: usize = 25;
    pub const FILE_UNIT_SIZE: usize = 26;
    pub const INTERLEAVE_GAP: usize = 27;
    pub const VOLUME_SEQUENCE_NUMBER: usize = 28;
    pub const NAME_LENGTH: usize = 32;
    pub const NAME: usize = 33;
    /// Fixed part of a record; the smallest legal record is this plus a one-byte name.
    pub const FIXED_LEN: usize = 33;
    pub const MIN_LEN: usize = 34;
}

/// File flags of a directory record (ECMA-119 9.1.6).
pub mod file_flags {
    pub const HIDDEN: u8 = 0x01;
    pub const DIRECTORY: u8 = 0x02;
    pub const ASSOCIATED: u8 = 0x04;
    pub const RECORD: u8 = 0x08;
    pub const PROTECTION: u8 = 0x10;
    pub const MULTI_EXTENT: u8 = 0x80;
}

/// SUSP (IEEE P1281) and RRIP (IEEE P1282, 1.12) entry signatures.
pub mod sig {
    pub const CE: [u8; 2] = *b"CE";
    pub const PD: [u8; 2] = *b"PD";
    pub const SP: [u8; 2] = *b"SP";
    pub const ST: [u8; 2] = *b"ST";
    pub const ER: [u8; 2] = *b"ER";
    pub const ES: [u8; 2] = *b"ES";
    pub const RR: [u8; 2] = *b"RR";
    pub const PX: [u8; 2] = *b"PX";
    pub const PN: [u8; 2] = *b"PN";
    pub const SL: [u8; 2] = *b"SL";
    pub const NM: [u8; 2] = *b"NM";
    pub const CL: [u8; 2] = *b"CL";
    pub const PL: [u8; 2] = *b"PL";
    pub const RE: [u8; 2] = *b"RE";
    pub const TF: [u8; 2] = *b"TF";
    pub const SF: [u8; 2] = *b"SF";
    /// zisofs: the file's data is compressed (not part of RRIP; Linux reads it).
    pub const ZF: [u8; 2] = *b"ZF";
    /// zisofs2 (xorriso's successor of zisofs: 64-bit sizes and pointers).
    pub const Z2: [u8; 2] = *b"Z2";

    /// The Rock Ridge entries (any of them marks a record as using RRIP).
    pub const RRIP: [[u8; 2]; 10] = [RR, PX, PN, SL, NM, CL, PL, RE, TF, SF];
}

/// zisofs, H. Peter Anvin's compressed files (`mkisofs -z`, `xorriso -zisofs`), as libisofs's
/// doc/zisofs_format.txt describes them: a ZF entry gives the algorithm, the header's size in
/// 4-byte words, log2 of the block size and the uncompressed size; the data is a 16-byte
/// header, one 32-bit little-endian pointer per block and one past the last, then each block
/// as a zlib stream (none for a block of zeros).
///
/// zisofs2 (libisofs's doc/zisofs2_format.txt), marked by a Z2 entry of the same layout with a
/// 64-bit little-endian size, has 64-bit pointers and names zlib "PZ" (its other compressors,
/// xz, lz4, zstd and bzip2, are not read here).
pub mod zisofs {
    /// The one algorithm of zisofs version 1: zlib.
    pub const ZLIB: [u8; 2] = *b"pz";
    /// zlib as zisofs2 names it.
    pub const ZLIB2: [u8; 2] = *b"PZ";
    /// Block sizes readers must handle: 32, 64 and 128 KiB.
    pub const LOG2_BLOCK: std::ops::RangeInclusive<u8> = 15..=17;
    /// zisofs2's block sizes: 32 KiB to 1 MiB.
    pub const LOG2_BLOCK2: std::ops::RangeInclusive<u8> = 15..=20;
}

/// The SP entry's check bytes (SUSP 5.3).
pub const SP_CHECK: [u8; 2] = [0xBE, 0xEF];
/// Extension identifiers an ER entry uses for Rock Ridge (RRIP 1.09, 1.10, 1.12).
pub const RRIP_IDS: [&[u8]; 3] = [b"RRIP_1991A", b"IEEE_P1282", b"IEEE_1282"];

/// NM flags (RRIP 4.1.4).
pub mod nm_flags {
    pub const CONTINUE: u8 = 0x01;
    pub const CURRENT: u8 = 0x02;
    pub const PARENT: u8 = 0x04;
}

/// SL flags and component flags (RRIP 4.1.3).
pub mod sl_flags {
    pub const CONTINUE: u8 = 0x01;
    pub const CURRENT: u8 = 0x02;
    pub const PARENT: u8 = 0x04;
    pub const ROOT: u8 = 0x08;
    pub const VOLROOT: u8 = 0x10;
    pub const HOST: u8 = 0x20;
}

/// TF flags (RRIP 4.1.6): which timestamps follow, in this order, and their form.
pub mod tf_flags {
    pub const CREATION: u8 = 0x01;
    pub const MODIFY: u8 = 0x02;
    pub const ACCESS: u8 = 0x04;
    pub const ATTRIBUTES: u8 = 0x08;
    pub const BACKUP: u8 = 0x10;
    pub const EXPIRATION: u8 = 0x20;
    pub const EFFECTIVE: u8 = 0x40;
    pub const LONG_FORM: u8 = 0x80;
}

/// POSIX file type bits as RRIP PX stores them (RRIP 4.1.1).
pub mod mode {
    pub const S_IFMT: u32 = 0o170000;
    pub const S_IFSOCK: u32 = 0o140000;
    pub const S_IFLNK: u32 = 0o120000;
    pub const S_IFREG: u32 = 0o100000;
    pub const S_IFBLK: u32 = 0o060000;
    pub const S_IFDIR: u32 = 0o040000;
    pub const S_IFCHR: u32 = 0o020000;
    pub const S_IFIFO: u32 = 0o010000;
}

/// Little-endian u16 at `at`.
pub fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

/// Big-endian u16 at `at`.
pub fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

/// Little-endian u32 at `at`.
pub fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// Little-endian u64 at `at`.
pub fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Big-endian u32 at `at`.
pub fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// Both-endian u32 (ECMA-119 7.3.3): the little-endian half, and whether the halves agree.
/// Real discs are sloppy, so callers use the little-endian half and warn on mismatch, as the
/// Linux kernel does.
pub fn both32(b: &[u8], at: usize) -> Option<(u32, bool)> {
    let le = le32(b, at)?;
    let be = be32(b, at.checked_add(4)?)?;
    Some((le, le == be))
}

/// Both-endian u16 (ECMA-119 7.2.3), as [`both32`].
pub fn both16(b: &[u8], at: usize) -> Option<(u16, bool)> {
    let le = le16(b, at)?;
    let be = be16(b, at.checked_add(2)?)?;
    Some((le, le == be))
}

/// Writes a both-endian u32 (ECMA-119 7.3.3) into `out[at..at + 8]`.
pub fn put_both32(out: &mut [u8], at: usize, v: u32) {
    if let Some(s) = out.get_mut(at..at.saturating_add(8)) {
        let (le, be) = s.split_at_mut(4);
        le.copy_from_slice(&v.to_le_bytes());
        be.copy_from_slice(&v.to_be_bytes());
    }
}

/// Writes a both-endian u16 (ECMA-119 7.2.3) into `out[at..at + 4]`.
pub fn put_both16(out: &mut [u8], at: usize, v: u16) {
    if let Some(s) = out.get_mut(at..at.saturating_add(4)) {
        let (le, be) = s.split_at_mut(2);
        le.copy_from_slice(&v.to_le_bytes());
        be.copy_from_slice(&v.to_be_bytes());
    }
}

/// Writes a little-endian u16 into `out[at..at + 2]`; a field that does not fit is left alone.
pub fn put_le16(out: &mut [u8], at: usize, v: u16) {
    put_bytes(out, at, &v.to_le_bytes());
}

/// Writes a big-endian u16 into `out[at..at + 2]`.
pub fn put_be16(out: &mut [u8], at: usize, v: u16) {
    put_bytes(out, at, &v.to_be_bytes());
}

/// Writes a little-endian u32 into `out[at..at + 4]` (type L path table fields, ECMA-119 7.3.1).
pub fn put_le32(out: &mut [u8], at: usize, v: u32) {
    put_bytes(out, at, &v.to_le_bytes());
}

/// Writes a big-endian u32 into `out[at..at + 4]` (type M path table fields, ECMA-119 7.3.2).
pub fn put_be32(out: &mut [u8], at: usize, v: u32) {
    put_bytes(out, at, &v.to_be_bytes());
}

/// Copies `src` into `out` at `at`, clipped to what fits.
pub fn put_bytes(out: &mut [u8], at: usize, src: &[u8]) {
    if let Some(dst) = out.get_mut(at..) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = *s;
        }
    }
}

/// Fills `out[range]` with `text`, padded with `pad` (a-/d-character fields, ECMA-119 7.4;
/// padded with spaces).
pub fn put_padded(out: &mut [u8], range: core::ops::Range<usize>, text: &[u8], pad: u8) {
    if let Some(dst) = out.get_mut(range) {
        let mut src = text.iter();
        for d in dst.iter_mut() {
            *d = src.next().copied().unwrap_or(pad);
        }
    }
}

/// Whether `c` is a d-character (ECMA-119 7.4.1): `A-Z`, `0-9`, `_`.
pub fn is_d_char(c: u8) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_'
}

/// The largest legal directory record (its length is one byte, ECMA-119 9.1.1); writers keep
/// records at an even length, so 254 in practice.
pub const MAX_RECORD_LEN: usize = 254;

/// The length of a directory record with an identifier of `id_len` bytes and `su_len` bytes of
/// system use (ECMA-119 9.1.12, 9.1.13): the identifier is padded to an even offset, and the
/// whole record kept even.
pub fn record_len(id_len: usize, su_len: usize) -> usize {
    let base = dr::FIXED_LEN + id_len + usize::from(id_len % 2 == 0);
    let len = base + su_len;
    len + len % 2
}

/// The fields of one directory record to encode (ECMA-119 9.1).
#[derive(Clone, Copy, Debug)]
pub struct DirectoryRecordFields<'a> {
    pub extent: u32,
    pub data_length: u32,
    pub recorded: [u8; 7],
    pub flags: u8,
    pub identifier: &'a [u8],
    pub system_use: &'a [u8],
}

/// Appends one directory record (ECMA-119 9.1) to `out` and returns its length. The caller
/// keeps `record_len(identifier, system_use)` within [`MAX_RECORD_LEN`]; a longer one would be
/// unreadable, so it is cut at 255 bytes rather than written with a wrapped length byte.
pub fn encode_directory_record(f: &DirectoryRecordFields<'_>, out: &mut Vec<u8>) -> usize {
    let len = record_len(f.identifier.len(), f.system_use.len()).min(255);
    let start = out.len();
    out.resize(start + len, 0);
    if let Some(r) = out.get_mut(start..) {
        if let Some(b) = r.get_mut(dr::LENGTH) {
            *b = len as u8;
        }
        put_both32(r, dr::EXTENT, f.extent);
        put_both32(r, dr::DATA_LENGTH, f.data_length);
        put_bytes(r, dr::RECORDING_TIME, &f.recorded);
        if let Some(b) = r.get_mut(dr::FLAGS) {
            *b = f.flags;
        }
        put_both16(r, dr::VOLUME_SEQUENCE_NUMBER, 1);
        if let Some(b) = r.get_mut(dr::NAME_LENGTH) {
            *b = f.identifier.len().min(255) as u8;
        }
        put_bytes(r, dr::NAME, f.identifier);
        let su_at = dr::FIXED_LEN + f.identifier.len() + usize::from(f.identifier.len() % 2 == 0);
        put_bytes(r, su_at, f.system_use);
    }
    len
}

/// A point in time as Unix seconds plus nanoseconds, the form every caller wants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

/// Days from 1970-01-01 to the given civil date (proleptic Gregorian).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date (year, month 1-12, day 1-31) of a day count from 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The 7-byte recording date of a directory record and RRIP TF short form (ECMA-119 9.1.5):
/// years since 1900, month, day, hour, minute, second, offset from GMT in 15-minute units.
/// An all-zero field means "not specified" and decodes to `None`.
pub fn decode_dir_time(b: &[u8]) -> Option<Timestamp> {
    let f: [u8; 7] = b.get(..7)?.try_into().ok()?;
    if f == [0; 7] {
        return None;
    }
    let [y, mo, d, h, mi, s, off] = f;
    let (year, month, day) = (1900 + i64::from(y), u32::from(mo), u32::from(d));
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let (h, mi, s) = (i64::from(h), i64::from(mi), i64::from(s));
    let offset = gmt_offset_secs(off);
    let secs = days_from_civil(year, month, day) * 86_400 + h * 3600 + mi * 60 + s - offset;
    Some(Timestamp { secs, nanos: 0 })
}

/// The GMT offset field in seconds. Values outside -48..=52 quarter hours (ECMA-119 9.1.5) are
/// ignored, as the Linux kernel and libarchive do: some writers put garbage there.
fn gmt_offset_secs(field: u8) -> i64 {
    let q = i64::from(field as i8);
    if (-48..=52).contains(&q) {
        q * 15 * 60
    } else {
        0
    }
}

/// Encodes a Unix time as a 7-byte recording date in GMT (ECMA-119 9.1.5). Times outside
/// 1900..=2155 are clamped to the representable range.
pub fn encode_dir_time(t: i64) -> [u8; 7] {
    let min = days_from_civil(1900, 1, 1) * 86_400;
    let max = days_from_civil(2155, 12, 31) * 86_400 + 86_399;
    let t = t.clamp(min, max);
    let (y, m, d) = civil_from_days(t.div_euclid(86_400));
    let rem = t.rem_euclid(86_400);
    [
        (y - 1900) as u8,
        m as u8,
        d as u8,
        (rem / 3600) as u8,
        (rem / 60 % 60) as u8,
        (rem % 60) as u8,
        0,
    ]
}

/// The 17-byte dec-datetime of volume descriptors and RRIP TF long form (ECMA-119 8.4.26.1):
/// "YYYYMMDDHHMMSScc" in ASCII digits and a GMT offset in 15-minute units. All-zero digits
/// mean "not specified".
pub fn decode_dec_datetime(b: &[u8]) -> Option<Timestamp> {
    let f = b.get(..17)?;
    let digits = f.get(..16)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let num = |r: core::ops::Range<usize>| -> i64 {
        digits
            .get(r)
            .unwrap_or_default()
            .iter()
            .fold(0, |acc, &c| acc * 10 + i64::from(c - b'0'))
    };
    let (year, month, day) = (num(0..4), num(4..6) as u32, num(6..8) as u32);
    if year == 0 || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let offset = gmt_offset_secs(*f.get(16)?);
    let secs = days_from_civil(year, month, day) * 86_400
        + num(8..10) * 3600
        + num(10..12) * 60
        + num(12..14)
        - offset;
    Some(Timestamp {
        secs,
        nanos: (num(14..16) as u32) * 10_000_000,
    })
}

/// Encodes a Unix time as a 17-byte dec-datetime in GMT (ECMA-119 8.4.26.1); years are clamped
/// to 1..=9999.
pub fn encode_dec_datetime(t: i64) -> [u8; 17] {
    let min = days_from_civil(1, 1, 1) * 86_400;
    let max = days_from_civil(9999, 12, 31) * 86_400 + 86_399;
    let t = t.clamp(min, max);
    let (y, m, d) = civil_from_days(t.div_euclid(86_400));
    let rem = t.rem_euclid(86_400);
    let s = format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}00",
        y,
        m,
        d,
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    let mut out = [0u8; 17];
    for (o, c) in out.iter_mut().zip(s.bytes()) {
        *o = c;
    }
    out
}

/// The "unspecified" dec-datetime: sixteen ASCII zeros and a zero offset (ECMA-119 8.4.26.1).
pub const DEC_DATETIME_UNSET: [u8; 17] = *b"0000000000000000\0";

/// Decodes UCS-2 / UTF-16 big-endian (Joliet names and identifiers); unpaired surrogates
/// become U+FFFD. An odd trailing byte is ignored.
pub fn decode_ucs2be(b: &[u8]) -> String {
    // ASCII (a zero high byte, the usual case): the low bytes are the string.
    if b.len() % 2 == 0
        && b.chunks_exact(2)
            .all(|c| matches!(c, [0, lo] if lo.is_ascii()))
    {
        let ascii: Vec<u8> = b
            .chunks_exact(2)
            .map(|c| c.get(1).copied().unwrap_or(0))
            .collect();
        return String::from_utf8(ascii).unwrap_or_default();
    }
    let units = b
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes(c.try_into().unwrap_or_default()));
    // Exact for ASCII, the usual case: one allocation rather than a few as it grows.
    let mut out = String::with_capacity(b.len() / 2);
    out.extend(char::decode_utf16(units).map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER)));
    out
}

/// Encodes a string as UTF-16 big-endian (Joliet names); characters above U+FFFF become
/// surrogate pairs, which Windows and Linux read back.
pub fn encode_ucs2be(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn dir_time_round_trips_through_unix_seconds() {
        for t in [0i64, 1_700_000_000, 86_399, -1, 4_102_444_800] {
            let enc = encode_dir_time(t);
            assert_eq!(decode_dir_time(&enc).unwrap().secs, t);
        }
    }

    #[test]
    fn dec_datetime_round_trips_and_unset_is_none() {
        let enc = encode_dec_datetime(1_700_000_000);
        assert_eq!(decode_dec_datetime(&enc).unwrap().secs, 1_700_000_000);
        assert_eq!(decode_dec_datetime(&DEC_DATETIME_UNSET), None);
    }

    #[test]
    fn dir_time_applies_gmt_offset() {
        // 2000-01-01 01:00 at GMT+1 (offset 4 quarter hours) is 2000-01-01 00:00 UTC.
        let b = [100, 1, 1, 1, 0, 0, 4];
        assert_eq!(
            decode_dir_time(&b).unwrap().secs,
            days_from_civil(2000, 1, 1) * 86_400
        );
    }

    #[test]
    fn out_of_range_gmt_offset_is_ignored() {
        // genisoimage writes offset -96 for some dates past 2038.
        let b = [200, 1, 1, 0, 0, 0, 0xa0];
        assert_eq!(decode_dir_time(&b).unwrap().secs, 4_102_444_800);
    }

    #[test]
    fn both_endian_reports_mismatch() {
        let mut b = [0u8; 8];
        put_both32(&mut b, 0, 0x1234_5678);
        assert_eq!(both32(&b, 0), Some((0x1234_5678, true)));
        b[7] = 0;
        assert_eq!(both32(&b, 0), Some((0x1234_5678, false)));
        assert_eq!(both32(&b, 1), None);
    }

    #[test]
    fn ucs2_decodes_surrogates_and_replaces_lone_halves() {
        assert_eq!(decode_ucs2be(&encode_ucs2be("a\u{1F600}é")), "a\u{1F600}é");
        assert_eq!(decode_ucs2be(&[0xD8, 0x00, 0x00, 0x41]), "\u{FFFD}A");
    }
}
