//! The volume descriptor set (ECMA-119 8), the El Torito boot catalog, the UDF volume
//! recognition sequence and label (ECMA-167 2/9, 3/10), and the label blkid would report.
//!
//! Pure functions over sectors; [`probe`] is the only part that reads, through [`ReadAt`].
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use super::error::{Error, Result};
use super::ondisk::{
    boot_record, both16, both32, decode_ucs2be, le16, le32, pvd, vd_type, FIRST_DESCRIPTOR_SECTOR,
    JOLIET_ESCAPES, SECTOR_SIZE, STANDARD_ID,
};
use super::source::{read_full, ReadAt};

/// Volume descriptors (and UDF recognition descriptors) examined at most.
pub const MAX_DESCRIPTORS: u64 = 64;
/// UDF anchor volume descriptor pointer location (ECMA-167 3/8.4.2.1).
/// UDF volume descriptor sequence entries examined at most.
const MAX_UDF_VDS: u32 = 64;

/// The parts of a primary or supplementary volume descriptor the reader uses (ECMA-119 8.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeDescriptor {
    pub sector: u64,
    pub volume_id: [u8; 32],
    pub volume_space_size: u32,
    pub logical_block_size: u16,
    /// The 34-byte root directory record (ECMA-119 8.4.18).
    pub root_record: [u8; 34],
    /// Both-endian fields whose halves disagreed (the little-endian half is used).
    pub endian_mismatch: bool,
}

/// Which filesystem blkid reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fs {
    Iso9660,
    Udf,
}

impl Fs {
    pub fn as_str(self) -> &'static str {
        match self {
            Fs::Iso9660 => "iso9660",
            Fs::Udf => "udf",
        }
    }
}

/// What the UDF structures say (only what labelling and sizing need).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UdfVolume {
    /// Logical volume identifier (the label blkid reports for UDF).
    pub logical_volume_id: Option<String>,
    /// End of the furthest partition, in bytes.
    pub partition_end: u64,
    /// The logical block size (2048 on optical media; a stick or disk formatted with UDF may
    /// use 512 or 4096).
    pub block_size: u64,
}

/// The descriptor set as found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Descriptors {
    pub primary: Option<VolumeDescriptor>,
    pub joliet: Option<VolumeDescriptor>,
    /// El Torito boot catalog sector, from the boot record.
    pub boot_catalog: Option<u32>,
    /// A UDF NSR02/NSR03 descriptor was in the recognition sequence.
    pub udf_nsr: bool,
}

/// Bytes of a sector that say what it is: the type and the five-character identifier.
pub const SECTOR_HEADER: usize = 6;

/// Bytes worth reading at sector 16 to identify an image: the three sectors of the usual set
/// (primary, Joliet, terminator) and the start of the next, where a UDF bridge's recognition
/// sequence goes on and xorriso puts the root directory (whose first record, at most 255
/// bytes, says whether Rock Ridge is there). Reading the fourth sector whole would copy
/// 1,792 bytes per image that nothing looks at.
pub const HEAD_BYTES: usize = 3 * SECTOR_SIZE as usize + 256;

/// Walks the descriptor set from sector 16. `head` holds the bytes from sector 16 on, as
/// already read (the set usually fits); what it lacks is read from `src`: a sector whole
/// plus the header of the next, since of a sector that is not a volume descriptor only its
/// header matters. Also notes UDF NSR descriptors, which follow the ISO9660 terminator in a
/// UDF bridge image.
pub fn read_descriptors(
    src: &(impl ReadAt + ?Sized),
    head: &[u8],
    size: u64,
) -> Result<Descriptors> {
    let mut out = Descriptors::default();
    let mut terminated = false;
    // In a UDF recognition sequence on blocks over 2048 bytes each descriptor starts a block:
    // the 2048-byte units between are zeros (ECMA-167 2/8.4).
    let mut in_udf_sequence = false;
    let mut sectors = Sectors {
        src,
        head,
        extra: Vec::new(),
        extra_at: 0,
    };
    for sector in FIRST_DESCRIPTOR_SECTOR..FIRST_DESCRIPTOR_SECTOR + MAX_DESCRIPTORS {
        let Some([ty, id @ ..]) = sectors
            .get(sector, SECTOR_HEADER)?
            .and_then(|h| <[u8; SECTOR_HEADER]>::try_from(h).ok())
        else {
            break;
        };
        match &id {
            b"NSR02" | b"NSR03" => out.udf_nsr = true,
            b"BEA01" => in_udf_sequence = true,
            b"TEA01" => in_udf_sequence = false,
            b"BOOT2" | b"CDW02" => {}
            [0, 0, 0, 0, 0] if ty == 0 && in_udf_sequence => {}
            _ if id == *STANDARD_ID && !terminated => {
                let wanted = match ty {
                    vd_type::PRIMARY => out.primary.is_none(),
                    vd_type::SUPPLEMENTARY => out.joliet.is_none(),
                    vd_type::BOOT_RECORD => true,
                    vd_type::TERMINATOR => {
                        terminated = true;
                        false
                    }
                    _ => false,
                };
                if !wanted {
                    continue;
                }
                // A descriptor the image cuts short is not taken, as before the end.
                let Some(d) = sectors.get(sector, SECTOR_SIZE as usize)? else {
                    break;
                };
                match ty {
                    vd_type::PRIMARY => out.primary = Some(parse_volume_descriptor(d, sector)?),
                    vd_type::SUPPLEMENTARY if is_joliet(d) => {
                        out.joliet = Some(parse_volume_descriptor(d, sector)?);
                    }
                    vd_type::BOOT_RECORD if is_el_torito(d) => {
                        out.boot_catalog = le32(d, boot_record::BOOT_CATALOG_LBA);
                    }
                    _ => {}
                }
            }
            _ if id == *STANDARD_ID => {}
            // ECMA-167 2/8.3.1: the recognition sequence ends at the first unknown sector.
            _ => break,
        }
    }
    if out.primary.is_none() && !out.udf_nsr {
        if size < (FIRST_DESCRIPTOR_SECTOR + 1) * SECTOR_SIZE {
            return Err(Error::Truncated {
                what: "the first volume descriptor",
                offset: FIRST_DESCRIPTOR_SECTOR * SECTOR_SIZE,
                need: SECTOR_SIZE,
                size,
            });
        }
        return Err(Error::NotAnImage);
    }
    Ok(out)
}

/// The descriptor area as [`read_descriptors`] needs it: the head already read, then what it
/// lacks, read a sector and the next one's header at a time.
struct Sectors<'a, S: ?Sized> {
    src: &'a S,
    /// Bytes from sector 16 on.
    head: &'a [u8],
    extra: Vec<u8>,
    /// Byte offset of `extra` in the image.
    extra_at: u64,
}

impl<S: ReadAt + ?Sized> Sectors<'_, S> {
    /// `len` bytes from the start of `sector`; `None` where the image ends first.
    fn get(&mut self, sector: u64, len: usize) -> Result<Option<&[u8]>> {
        let at = sector * SECTOR_SIZE;
        let rel = (at - FIRST_DESCRIPTOR_SECTOR * SECTOR_SIZE) as usize;
        if let Some(b) = self.head.get(rel..rel + len) {
            return Ok(Some(b));
        }
        let covered =
            at >= self.extra_at && (at - self.extra_at) as usize + len <= self.extra.len();
        if !covered {
            let want = SECTOR_SIZE as usize + SECTOR_HEADER;
            self.extra.resize(want, 0);
            self.extra_at = at;
            let n = read_full(self.src, &mut self.extra, at).map_err(|source| Error::Io {
                offset: at,
                len: want,
                source,
            })?;
            self.extra.truncate(n);
        }
        let from = (at - self.extra_at) as usize;
        Ok(self.extra.get(from..from + len))
    }
}

fn is_el_torito(d: &[u8]) -> bool {
    d.get(boot_record::BOOT_SYSTEM_ID)
        .is_some_and(|s| s.starts_with(boot_record::EL_TORITO_ID))
}

fn is_joliet(d: &[u8]) -> bool {
    d.get(pvd::ESCAPE_SEQUENCES.start..pvd::ESCAPE_SEQUENCES.start + 3)
        .is_some_and(|e| JOLIET_ESCAPES.iter().any(|j| &j[..] == e))
}

/// Parses a primary or supplementary volume descriptor (ECMA-119 8.4, 8.5).
pub fn parse_volume_descriptor(d: &[u8], sector: u64) -> Result<VolumeDescriptor> {
    let bad = |why: &str| Error::descriptor(sector, why);
    let volume_id: [u8; 32] = d
        .get(pvd::VOLUME_ID)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| bad("too short"))?;
    let (volume_space_size, ok1) =
        both32(d, pvd::VOLUME_SPACE_SIZE).ok_or_else(|| bad("too short"))?;
    let (logical_block_size, ok2) =
        both16(d, pvd::LOGICAL_BLOCK_SIZE).ok_or_else(|| bad("too short"))?;
    let root_record: [u8; 34] = d
        .get(pvd::ROOT_DIRECTORY_RECORD..pvd::ROOT_DIRECTORY_RECORD + 34)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| bad("too short"))?;
    Ok(VolumeDescriptor {
        sector,
        volume_id,
        volume_space_size,
        logical_block_size,
        root_record,
        endian_mismatch: !(ok1 && ok2),
    })
}

/// Reads the El Torito boot catalog and says whether it holds a bootable entry
/// (El Torito 1.0, 2.1-2.4: a valid validation entry, then an entry with indicator 0x88).
pub fn catalog_is_bootable(catalog: &[u8]) -> bool {
    if !validation_entry_ok(catalog) {
        return false;
    }
    catalog
        .chunks_exact(32)
        .skip(1)
        .any(|e| e.first() == Some(&0x88))
}

/// Whether a boot catalog starts with a valid validation entry (El Torito 2.1): header 1, key
/// 55 AA, its 16-bit words summing to 0.
pub fn validation_entry_ok(catalog: &[u8]) -> bool {
    let Some(validation) = catalog.get(..32) else {
        return false;
    };
    let sum = validation.chunks_exact(2).fold(0u16, |acc, w| {
        acc.wrapping_add(u16::from_le_bytes([
            w.first().copied().unwrap_or(0),
            w.get(1).copied().unwrap_or(0),
        ]))
    });
    validation.first() == Some(&1) && validation.get(30..32) == Some(&[0x55, 0xAA][..]) && sum == 0
}

/// Reads the UDF anchor and the main volume descriptor sequence: the logical volume
/// identifier (the label), the partition extents (ECMA-167 3/10.5, 3/10.6) and the block size
/// the anchor was found with.
pub fn read_udf(src: &(impl ReadAt + ?Sized)) -> Result<Option<UdfVolume>> {
    let size = src.size().map_err(|source| Error::Io {
        offset: 0,
        len: 0,
        source,
    })?;
    let Some((bs, anchor)) = super::udf::find_anchor(src, size)? else {
        return Ok(None);
    };
    let read = |sector: u64| -> Result<Vec<u8>> {
        let mut b = vec![0u8; bs as usize];
        let n = read_full(src, &mut b, sector * bs).map_err(|source| Error::Io {
            offset: sector * bs,
            len: bs as usize,
            source,
        })?;
        b.truncate(n);
        Ok(b)
    };
    let (Some(len), Some(loc)) = (le32(&anchor, 16), le32(&anchor, 20)) else {
        return Ok(None);
    };
    let count = (u64::from(len) / bs).min(u64::from(MAX_UDF_VDS));
    let mut vol = UdfVolume {
        block_size: bs,
        ..UdfVolume::default()
    };
    // The first partition (start, length) and whether the volume maps a virtual one.
    let mut first_partition = None;
    let mut virtual_partition = false;
    for i in 0..count {
        let sector = u64::from(loc) + i;
        let d = read(sector)?;
        let tag = le16(&d, 0).unwrap_or(0);
        if tag == 0 || le32(&d, 12) != Some(sector as u32) || tag == 8 {
            break;
        }
        match tag {
            // Partition descriptor: starting location at 188, length at 192 (in blocks).
            5 => {
                if let (Some(start), Some(blocks)) = (le32(&d, 188), le32(&d, 192)) {
                    let end = (u64::from(start) + u64::from(blocks)) * bs;
                    vol.partition_end = vol.partition_end.max(end);
                    first_partition.get_or_insert((start, blocks));
                }
            }
            // Logical volume descriptor: LogicalVolumeIdentifier, a dstring at 84..212; the
            // partition maps from 440 (a type 2 map names its kind at 5).
            6 if vol.logical_volume_id.is_none() => {
                vol.logical_volume_id = d.get(84..212).and_then(decode_dstring);
                let table = le32(&d, 264).map_or(0, |n| n as usize);
                let maps = d
                    .get(440..440usize.saturating_add(table))
                    .unwrap_or_default();
                virtual_partition = maps.windows(22).any(|w| w == b"*UDF Virtual Partition");
            }
            _ => {}
        }
    }
    if let (true, Some((start, blocks))) = (virtual_partition, first_partition) {
        if super::udf::vat_at_end(src, size, bs, start, blocks) {
            vol.partition_end = size;
        }
    }
    Ok(Some(vol))
}

/// A UDF dstring (ECMA-167 1/7.2.12): compression id 8 (Latin-1) or 16 (UTF-16BE), the
/// used length in the last byte. Trailing white space trimmed; `None` if empty or unknown.
pub fn decode_dstring(field: &[u8]) -> Option<String> {
    let (&cid, rest) = field.split_first()?;
    let clen = usize::from(*field.last()?)
        .saturating_sub(1)
        .min(rest.len().saturating_sub(1));
    let chars = rest.get(..clen)?;
    let s: String = match cid {
        8 => chars.iter().map(|&b| char::from(b)).collect(),
        16 => decode_ucs2be(chars),
        _ => return None,
    };
    finish_label(s)
}

/// The label blkid (and so /dev/disk/by-label) reports for an ISO9660 volume: the Joliet label
/// merged with the primary one where Joliet's is a prefix of it, else the Joliet label, else
/// the primary label; cut at NUL, trailing white space trimmed.
pub fn iso_label(primary: &[u8; 32], joliet: Option<&[u8; 32]>) -> Option<String> {
    match joliet {
        Some(j) => merge_ascii_label(j, primary).unwrap_or_else(|| joliet_label(j, primary)),
        None => finish_label(String::from_utf8_lossy(primary).into_owned()),
    }
}

/// [`iso_label`] with a Joliet descriptor, any characters.
fn joliet_label(joliet: &[u8; 32], primary: &[u8; 32]) -> Option<String> {
    let mut merged = Utf16Label::default();
    let utf16 = if merge_joliet_label(joliet, primary, &mut merged) {
        merged.bytes()
    } else {
        &joliet[..]
    };
    finish_label(decode_ucs2be(utf16))
}

/// Cuts `s` at its first NUL and trims trailing white space (and vertical tab).
fn finish_label(mut s: String) -> Option<String> {
    // Both are ASCII, so the byte after the last one kept starts a character.
    s.truncate(label_len(s.as_bytes()));
    (!s.is_empty()).then_some(s)
}

/// The length of `b` up to its first NUL, less trailing white space (and vertical tab).
fn label_len(b: &[u8]) -> usize {
    let cut = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    b.get(..cut)
        .unwrap_or_default()
        .iter()
        .rposition(|&c| !(c.is_ascii_whitespace() || c == 0x0b))
        .map_or(0, |i| i + 1)
}

/// [`iso_label`]'s usual case without a detour through UTF-16: a Joliet label and a primary
/// one both in ASCII, Joliet's 16 characters agreeing with the primary's first 16 as
/// [`merge_joliet_label`] has them agree. `None` where that does not hold (the general path
/// then decides); otherwise the label, by the same rules.
fn merge_ascii_label(utf16: &[u8; 32], ascii: &[u8; 32]) -> Option<Option<String>> {
    let mut out = *ascii;
    let mut ok = ascii.is_ascii();
    for (i, unit) in utf16.chunks_exact(2).enumerate() {
        let (&[hi, lo], Some(o)) = (unit, out.get_mut(i)) else {
            return None;
        };
        let ac = *o;
        ok &=
            hi == 0 && lo.is_ascii() && (ac == b'_' || lo == b'_' || ac.eq_ignore_ascii_case(&lo));
        // Joliet's character where the primary has '_' or an upper-case letter (Joliet keeps
        // the case); the primary's where Joliet has '_' or the primary has lower case.
        if ac == b'_' || (lo != b'_' && ac.is_ascii_uppercase()) {
            *o = lo;
        }
    }
    if !ok {
        return None;
    }
    let label = out.get(..label_len(&out)).unwrap_or_default();
    Some((!label.is_empty()).then(|| String::from_utf8(label.to_vec()).unwrap_or_default()))
}

/// A label rebuilt as UTF-16BE, on the stack: at most 16 Joliet units (8 when all are pairs,
/// each then one primary character) and the primary label's remaining characters, 2 bytes
/// each.
struct Utf16Label {
    buf: [u8; 96],
    len: usize,
}

impl Default for Utf16Label {
    fn default() -> Self {
        Utf16Label {
            buf: [0; 96],
            len: 0,
        }
    }
}

impl Utf16Label {
    fn push(&mut self, hi: u8, lo: u8) {
        if let Some([h, l]) = self.buf.get_mut(self.len..self.len + 2) {
            (*h, *l) = (hi, lo);
            self.len += 2;
        }
    }

    fn bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

/// Joliet holds 16 characters of the label, the primary descriptor 32 in a restricted set
/// ('_' standing for what it cannot hold). Where Joliet's agrees with the start of the primary
/// one (case aside), rebuild the whole label as UTF-16BE into `out`: Joliet's characters first,
/// then the primary label's tail. False where they disagree.
fn merge_joliet_label(utf16: &[u8; 32], ascii: &[u8; 32], out: &mut Utf16Label) -> bool {
    let u16at = |i: usize| utf16.get(i).copied().unwrap_or(0);
    let (mut a, mut u) = (0usize, 0usize);
    while u + 1 < 32 && a < 32 {
        if (0xD8..=0xDB).contains(&u16at(u)) && u + 3 < 32 && (0xDC..=0xDF).contains(&u16at(u + 2))
        {
            out.push(u16at(u), u16at(u + 1));
            u += 2;
        }
        let ac = ascii.get(a).copied().unwrap_or(0);
        let (hi, lo) = (u16at(u), u16at(u + 1));
        if ac == b'_' {
            out.push(hi, lo);
        } else if hi == 0 && lo == b'_' {
            out.push(0, ac);
        } else if hi == 0 && ac.eq_ignore_ascii_case(&lo) {
            out.push(0, if ac.is_ascii_uppercase() { lo } else { ac });
        } else {
            return false;
        }
        a += 1;
        u += 2;
    }
    for &c in ascii.get(a..).unwrap_or_default() {
        out.push(0, c);
    }
    true
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::iso9660::ondisk::encode_ucs2be;

    fn pad32(s: &[u8], fill: u8) -> [u8; 32] {
        let mut b = [fill; 32];
        b[..s.len()].copy_from_slice(s);
        b
    }

    fn joliet32(s: &str) -> [u8; 32] {
        let mut b = [0u8; 32];
        for i in (0..32).step_by(2) {
            b[i + 1] = b' ';
        }
        let e = encode_ucs2be(s);
        b[..e.len()].copy_from_slice(&e);
        b
    }

    #[test]
    fn label_is_primary_when_no_joliet() {
        assert_eq!(
            iso_label(&pad32(b"ROCKY_9", b' '), None).as_deref(),
            Some("ROCKY_9")
        );
        assert_eq!(iso_label(&pad32(b"", b' '), None), None);
    }

    #[test]
    fn label_merges_truncated_joliet_with_primary_tail() {
        let p = pad32(b"A very long label over sixteen", b' ');
        let j = joliet32("A very long labe");
        assert_eq!(
            iso_label(&p, Some(&j)).as_deref(),
            Some("A very long label over sixteen")
        );
    }

    #[test]
    fn label_takes_joliet_where_primary_could_not_hold_it() {
        let p = pad32(b"_BER", b' ');
        let j = joliet32("\u{dc}BER");
        assert_eq!(iso_label(&p, Some(&j)).as_deref(), Some("\u{dc}BER"));
        // Disagreement: Joliet wins.
        let p = pad32(b"OTHER", b' ');
        assert_eq!(iso_label(&p, Some(&j)).as_deref(), Some("\u{dc}BER"));
    }

    #[test]
    fn label_keeps_joliet_case_where_primary_is_upper() {
        let p = pad32(b"MY DISC", b' ');
        let j = joliet32("my disc");
        assert_eq!(iso_label(&p, Some(&j)).as_deref(), Some("my disc"));
    }

    #[test]
    fn bootable_needs_valid_validation_entry_and_0x88() {
        let mut cat = vec![0u8; 2048];
        cat[0] = 1;
        cat[30] = 0x55;
        cat[31] = 0xAA;
        let sum = cat[..32].chunks_exact(2).fold(0u16, |a, w| {
            a.wrapping_add(u16::from_le_bytes([w[0], w[1]]))
        });
        let fix = 0u16.wrapping_sub(sum);
        cat[28..30].copy_from_slice(&fix.to_le_bytes());
        cat[32] = 0x88;
        assert!(catalog_is_bootable(&cat));
        cat[32] = 0;
        assert!(!catalog_is_bootable(&cat));
        cat[32] = 0x88;
        cat[31] = 0;
        assert!(!catalog_is_bootable(&cat));
    }

    #[test]
    fn dstring_decodes_latin1_and_utf16() {
        let mut f = vec![0u8; 128];
        f[0] = 8;
        f[1..4].copy_from_slice(b"abc");
        f[127] = 4;
        assert_eq!(decode_dstring(&f).as_deref(), Some("abc"));
        let mut f = vec![0u8; 128];
        f[0] = 16;
        f[1..5].copy_from_slice(&encode_ucs2be("\u{e9}x"));
        f[127] = 5;
        assert_eq!(decode_dstring(&f).as_deref(), Some("\u{e9}x"));
    }

    /// The ASCII fast path gives what the general merge gives, wherever it answers: labels
    /// that agree, differ in case, have '_' on either side, or disagree, with NULs and spaces.
    #[test]
    fn ascii_label_merge_agrees_with_the_general_one() {
        let alphabet = b"ABCabc_ 09\0.-";
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut answered = 0;
        for _ in 0..20_000 {
            let mut primary = [b' '; 32];
            for c in &mut primary {
                *c = alphabet[(next() % alphabet.len() as u64) as usize];
            }
            // Joliet mostly derived from the primary (so the two often agree), sometimes not.
            let mut joliet = [0u8; 32];
            for i in 0..16 {
                let r = next() % 8;
                joliet[2 * i + 1] = match r {
                    0 => b'_',
                    1 => alphabet[(next() % alphabet.len() as u64) as usize],
                    2 | 3 => primary[i].to_ascii_lowercase(),
                    _ => primary[i],
                };
            }
            if let Some(fast) = merge_ascii_label(&joliet, &primary) {
                answered += 1;
                assert_eq!(
                    fast,
                    joliet_label(&joliet, &primary),
                    "primary {primary:?} joliet {joliet:?}"
                );
            }
        }
        assert!(
            answered > 1000,
            "the fast path answered only {answered} times"
        );
    }
}
