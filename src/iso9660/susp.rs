//! SUSP (IEEE P1281) entries and the Rock Ridge (RRIP 1.12) fields they carry.
//!
//! Pure: the caller hands in the system use area of a directory record and a function that
//! fetches continuation areas (CE). Every length is checked against the area; continuation
//! chains are capped and loops are errors.
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use super::ondisk::{
    both32, decode_dec_datetime, decode_dir_time, nm_flags, sig, sl_flags, tf_flags, Timestamp,
    RRIP_IDS, SP_CHECK,
};

/// Continuation areas followed for one record at most (SUSP 5.1 allows chains; real images
/// use one or two).
pub const MAX_CE_CHAIN: usize = 32;
/// Total bytes of continuation areas read for one record at most.
pub const MAX_CE_BYTES: u32 = 64 * 1024;
/// Longest Rock Ridge name accepted (NAME_MAX on Linux).
pub const MAX_NAME_LEN: usize = 255;
/// Longest symlink target accepted (PATH_MAX on Linux).
pub const MAX_TARGET_LEN: usize = 4096;

/// A continuation area: where the next part of the system use field lives (SUSP 5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ContinuationArea {
    pub block: u32,
    pub offset: u32,
    pub len: u32,
}

/// What the system use field of one directory record says, Rock Ridge fields decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RockRidge {
    /// SP seen (only meaningful on the root's "." record): bytes to skip in every other record.
    pub sp_skip: Option<u8>,
    /// An ER entry names one of the RRIP extension identifiers.
    pub er_rrip: bool,
    /// NM: the alternate name; `name_flags` keeps CURRENT/PARENT.
    pub name: Option<Vec<u8>>,
    pub name_flags: u8,
    /// PX: mode, links, uid, gid, and the serial number in the 1.12 form.
    pub mode: Option<u32>,
    pub nlink: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub ino: Option<u32>,
    /// SL: the symlink target with its components joined.
    pub target: Option<Vec<u8>>,
    /// TF timestamps.
    pub ctime_creation: Option<Timestamp>,
    pub mtime: Option<Timestamp>,
    pub atime: Option<Timestamp>,
    pub ctime: Option<Timestamp>,
    /// CL: this record stands for a directory relocated to this block.
    pub child_link: Option<u32>,
    /// PL: the real parent of a relocated directory.
    pub parent_link: Option<u32>,
    /// RE: this is the relocated directory itself; hide it where it stands.
    pub relocated: bool,
    /// ZF or Z2: the data is compressed (zisofs, zisofs2).
    pub zisofs: Option<Zisofs>,
    /// Some RRIP entry other than SP/ER/CE/ST was present.
    pub any_rrip: bool,
    /// A name or target was refused (too long); the record falls back to its ISO9660 name.
    pub refused: Option<&'static str>,
}

/// A ZF or Z2 entry: how a file's data is compressed, and its size uncompressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Zisofs {
    pub params: ZisofsParams,
    pub size: u64,
}

/// How a zisofs file is compressed: what its entry keeps beside its size (6 bytes, so that
/// entries stay as small as they were).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZisofsParams {
    /// zisofs2 (a Z2 entry): 64-bit block pointers.
    pub version2: bool,
    pub algorithm: [u8; 2],
    pub header_words: u8,
    pub log2_block: u8,
}

impl ZisofsParams {
    /// Bytes of one block pointer.
    pub fn pointer_bytes(self) -> u64 {
        if self.version2 {
            8
        } else {
            4
        }
    }

    /// The largest size a file of `stored` bytes can have uncompressed: as many blocks as
    /// pointers fit after the header, less the one past the last. A size claimed beyond it
    /// is cut to it, so that an entry cannot make a file of any size out of a few bytes.
    pub fn max_size(self, stored: u64) -> u64 {
        let table = stored.saturating_sub(u64::from(self.header_words) * 4);
        let blocks = (table / self.pointer_bytes()).saturating_sub(1);
        blocks.saturating_mul(1u64 << self.log2_block.min(32))
    }
}

/// Why a system use field could not be followed.
#[derive(Debug, PartialEq, Eq)]
pub enum SuspError {
    /// The continuation chain loops or exceeds the caps.
    Continuation(String),
    /// Fetching a continuation area failed (message from the fetcher).
    Fetch(String),
}

/// State carried across entries (and continuation areas) of one record.
#[derive(Default)]
struct Acc {
    rr: RockRidge,
    /// Only whether Rock Ridge is there: SP, CE and ER read, other entries only noted.
    detect_only: bool,
    name_done: bool,
    sl: Vec<u8>,
    sl_sep: bool,
    sl_in_component: bool,
    sl_done: bool,
    sl_seen: bool,
}

/// Parses a system use field (after the SP skip) and its continuation areas.
/// `fetch(ce)` returns the bytes of a continuation area.
pub fn parse_system_use(
    area: &[u8],
    fetch: impl FnMut(ContinuationArea) -> Result<Vec<u8>, String>,
) -> Result<RockRidge, SuspError> {
    parse_areas(area, fetch, false)
}

/// What [`parse_system_use`] gives of SP, ER and whether any Rock Ridge entry is present,
/// without decoding the entries (names, attributes, times): enough to tell whether an image
/// uses Rock Ridge.
pub fn detect_rock_ridge(
    area: &[u8],
    fetch: impl FnMut(ContinuationArea) -> Result<Vec<u8>, String>,
) -> Result<RockRidge, SuspError> {
    parse_areas(area, fetch, true)
}

fn parse_areas(
    area: &[u8],
    mut fetch: impl FnMut(ContinuationArea) -> Result<Vec<u8>, String>,
    detect_only: bool,
) -> Result<RockRidge, SuspError> {
    let mut acc = Acc {
        detect_only,
        ..Acc::default()
    };
    let mut next = parse_area(area, &mut acc);
    let mut seen: Vec<ContinuationArea> = Vec::new();
    let mut total: u32 = 0;
    while let Some(ce) = next {
        if seen.contains(&ce) {
            return Err(SuspError::Continuation(format!(
                "continuation area at block {} offset {} loops back on itself",
                ce.block, ce.offset
            )));
        }
        if seen.len() >= MAX_CE_CHAIN {
            return Err(SuspError::Continuation(format!(
                "more than {MAX_CE_CHAIN} continuation areas"
            )));
        }
        total = total.saturating_add(ce.len);
        if total > MAX_CE_BYTES {
            return Err(SuspError::Continuation(format!(
                "continuation areas total {total} bytes, over the limit of {MAX_CE_BYTES}"
            )));
        }
        seen.push(ce);
        let bytes = fetch(ce).map_err(SuspError::Fetch)?;
        next = parse_area(&bytes, &mut acc);
    }
    if acc.sl_seen {
        if acc.sl.len() > MAX_TARGET_LEN {
            acc.rr.refused = Some("symlink target longer than 4096 bytes");
        } else if acc.sl.contains(&0) {
            // readlink(2) ends a target at its first NUL: what it showed would not be the target.
            acc.rr.refused = Some("symlink target with a NUL byte");
        } else {
            acc.rr.target = Some(acc.sl);
        }
    }
    if let Some(name) = &acc.rr.name {
        if name.len() > MAX_NAME_LEN {
            acc.rr.name = None;
            acc.rr.refused = Some("Rock Ridge name longer than 255 bytes");
        }
    }
    Ok(acc.rr)
}

/// Parses the entries of one area; returns the continuation area it points to, if any.
/// A malformed entry (length below 4 or past the area) ends the area, as the Linux kernel does.
fn parse_area(area: &[u8], acc: &mut Acc) -> Option<ContinuationArea> {
    let mut pos = 0usize;
    let mut ce = None;
    while pos + 4 <= area.len() {
        let (Some(&s0), Some(&s1), Some(&len)) =
            (area.get(pos), area.get(pos + 1), area.get(pos + 2))
        else {
            break;
        };
        let len = usize::from(len);
        if len < 4 {
            break;
        }
        let Some(e) = area.get(pos..pos + len) else {
            break;
        };
        let signature = [s0, s1];
        if signature == sig::ST {
            break;
        }
        entry(signature, e, acc, &mut ce);
        pos += len;
    }
    ce
}

fn entry(signature: [u8; 2], e: &[u8], acc: &mut Acc, ce: &mut Option<ContinuationArea>) {
    let rr = &mut acc.rr;
    if sig::RRIP.contains(&signature) {
        rr.any_rrip = true;
        if acc.detect_only {
            return;
        }
    }
    match signature {
        sig::SP if e.get(4..6) == Some(&SP_CHECK[..]) => {
            rr.sp_skip = e.get(6).copied();
        }
        sig::CE => {
            if let (Some((block, _)), Some((offset, _)), Some((len, _))) =
                (both32(e, 4), both32(e, 12), both32(e, 20))
            {
                *ce = Some(ContinuationArea { block, offset, len });
            }
        }
        sig::ER => {
            let id_len = e.get(4).copied().map(usize::from).unwrap_or(0);
            if let Some(id) = e.get(8..8 + id_len) {
                if RRIP_IDS.contains(&id) {
                    rr.er_rrip = true;
                }
            }
        }
        sig::PX => {
            rr.mode = both32(e, 4).map(|v| v.0);
            rr.nlink = both32(e, 12).map(|v| v.0);
            rr.uid = both32(e, 20).map(|v| v.0);
            rr.gid = both32(e, 28).map(|v| v.0);
            if e.len() >= 44 {
                rr.ino = both32(e, 36).map(|v| v.0);
            }
        }
        sig::NM => {
            let flags = e.get(4).copied().unwrap_or(0);
            if acc.name_done {
                return;
            }
            if flags & (nm_flags::CURRENT | nm_flags::PARENT) != 0 {
                rr.name_flags |= flags & (nm_flags::CURRENT | nm_flags::PARENT);
            }
            let part = e.get(5..).unwrap_or_default();
            let name = rr.name.get_or_insert_with(Vec::new);
            // Cap growth: a name over the limit is refused later anyway.
            if name.len() <= MAX_NAME_LEN {
                name.extend_from_slice(part);
            }
            if flags & nm_flags::CONTINUE == 0 {
                acc.name_done = true;
            }
        }
        sig::SL => {
            if acc.sl_done {
                return;
            }
            acc.sl_seen = true;
            let flags = e.get(4).copied().unwrap_or(0);
            let mut comps = e.get(5..).unwrap_or_default();
            while let (Some(&cflags), Some(&clen)) = (comps.first(), comps.get(1)) {
                let Some(content) = comps.get(2..2 + usize::from(clen)) else {
                    break;
                };
                sl_component(acc, cflags, content);
                comps = comps.get(2 + usize::from(clen)..).unwrap_or_default();
            }
            if flags & sl_flags::CONTINUE == 0 {
                acc.sl_done = true;
            }
        }
        sig::TF => {
            let flags = e.get(4).copied().unwrap_or(0);
            let long = flags & tf_flags::LONG_FORM != 0;
            let width = if long { 17 } else { 7 };
            let mut at = 5usize;
            let order = [
                tf_flags::CREATION,
                tf_flags::MODIFY,
                tf_flags::ACCESS,
                tf_flags::ATTRIBUTES,
                tf_flags::BACKUP,
                tf_flags::EXPIRATION,
                tf_flags::EFFECTIVE,
            ];
            for bit in order {
                if flags & bit == 0 {
                    continue;
                }
                let field = e.get(at..at + width);
                let t = field.and_then(|f| {
                    if long {
                        decode_dec_datetime(f)
                    } else {
                        decode_dir_time(f)
                    }
                });
                match bit {
                    tf_flags::CREATION => rr.ctime_creation = t,
                    tf_flags::MODIFY => rr.mtime = t,
                    tf_flags::ACCESS => rr.atime = t,
                    tf_flags::ATTRIBUTES => rr.ctime = t,
                    _ => {}
                }
                at += width;
            }
        }
        sig::CL => {
            rr.child_link = both32(e, 4).map(|v| v.0);
        }
        sig::ZF | sig::Z2 => {
            let version2 = signature == sig::Z2;
            let size = if version2 {
                e.get(8..16)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_le_bytes)
            } else {
                both32(e, 8).map(|v| u64::from(v.0))
            };
            if let (Some(&[a, b, header_words, log2_block]), Some(size)) = (e.get(4..8), size) {
                rr.zisofs = Some(Zisofs {
                    params: ZisofsParams {
                        version2,
                        algorithm: [a, b],
                        header_words,
                        log2_block,
                    },
                    size,
                });
            }
        }
        sig::PL => {
            rr.parent_link = both32(e, 4).map(|v| v.0);
        }
        sig::RE => {
            rr.relocated = true;
        }
        _ => {}
    }
}

/// Appends one SL component (RRIP 4.1.3.1) to the target being built.
fn sl_component(acc: &mut Acc, cflags: u8, content: &[u8]) {
    let out = &mut acc.sl;
    if out.len() > MAX_TARGET_LEN {
        return;
    }
    if cflags & sl_flags::ROOT != 0 {
        if !out.ends_with(b"/") {
            out.push(b'/');
        }
        acc.sl_sep = false;
        acc.sl_in_component = false;
        return;
    }
    if acc.sl_sep && !acc.sl_in_component {
        out.push(b'/');
    }
    if cflags & sl_flags::CURRENT != 0 {
        out.push(b'.');
    } else if cflags & sl_flags::PARENT != 0 {
        out.extend_from_slice(b"..");
    } else if cflags & sl_flags::VOLROOT != 0 || cflags & sl_flags::HOST != 0 {
        // Volume root and host name have no meaning on this system: treat as the root.
        if out.is_empty() {
            out.push(b'/');
            acc.sl_sep = false;
            acc.sl_in_component = false;
            return;
        }
    } else {
        out.extend_from_slice(content);
    }
    acc.sl_in_component = cflags & sl_flags::CONTINUE != 0;
    acc.sl_sep = true;
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn e(sig: &[u8; 2], body: &[u8]) -> Vec<u8> {
        let mut v = vec![sig[0], sig[1], (4 + body.len()) as u8, 1];
        v.extend_from_slice(body);
        v
    }

    fn both(v: u32) -> Vec<u8> {
        let mut b = v.to_le_bytes().to_vec();
        b.extend_from_slice(&v.to_be_bytes());
        b
    }

    fn no_ce(_: ContinuationArea) -> Result<Vec<u8>, String> {
        Err("unexpected".into())
    }

    #[test]
    fn joins_name_split_over_several_nm_entries() {
        let mut area = e(b"NM", b"\x01hello-");
        area.extend(e(b"NM", b"\x00world"));
        let rr = parse_system_use(&area, no_ce).unwrap();
        assert_eq!(rr.name.as_deref(), Some(&b"hello-world"[..]));
    }

    #[test]
    fn builds_symlink_targets_from_all_component_kinds() {
        // /usr/../lib + "./x" continued over two SL entries, with a split component.
        let mut area = e(
            b"SL",
            b"\x01\x08\x00\x00\x03usr\x04\x00\x00\x03lib\x01\x02ab",
        );
        area.extend(e(b"SL", b"\x00\x00\x01c\x02\x00"));
        let rr = parse_system_use(&area, no_ce).unwrap();
        assert_eq!(rr.target.as_deref(), Some(&b"/usr/../lib/abc/."[..]));
    }

    #[test]
    fn follows_continuation_area_and_stops_loops() {
        let mut ce_body = both(20);
        ce_body.extend(both(0));
        ce_body.extend(both(10));
        let area = e(b"CE", &ce_body);
        let rr = parse_system_use(&area, |_| Ok(e(b"NM", b"\x00cont"))).unwrap();
        assert_eq!(rr.name.as_deref(), Some(&b"cont"[..]));
        // A continuation area that points at itself.
        let looping = area.clone();
        let err = parse_system_use(&area, move |_| Ok(looping.clone())).unwrap_err();
        assert!(matches!(err, SuspError::Continuation(m) if m.contains("loops")));
    }

    /// Detection reads SP, ER and CE as the full parse does and notes every Rock Ridge entry,
    /// but decodes none of them.
    #[test]
    fn detection_finds_what_the_full_parse_finds_and_decodes_nothing() {
        let mut sp = b"\xBE\xEF".to_vec();
        sp.push(0);
        let mut er = vec![10, 0, 0, 1];
        er.extend_from_slice(b"RRIP_1991A");
        for (extra, rrip) in [
            (e(b"NM", b"\x00name"), true),
            (e(b"RE", b""), true),
            (e(b"PD", b"\x00\x00"), false),
        ] {
            let mut area = e(b"SP", &sp);
            area.extend(extra);
            let full = parse_system_use(&area, no_ce).unwrap();
            let seen = detect_rock_ridge(&area, no_ce).unwrap();
            assert_eq!((seen.sp_skip, seen.any_rrip), (Some(0), rrip));
            assert_eq!((full.sp_skip, full.any_rrip), (seen.sp_skip, seen.any_rrip));
            assert_eq!((seen.name, seen.relocated), (None, false));
        }
        // ER in a continuation area is found too.
        let mut ce_body = both(20);
        ce_body.extend(both(0));
        ce_body.extend(both(30));
        let area = e(b"CE", &ce_body);
        let seen = detect_rock_ridge(&area, |_| Ok(e(b"ER", &er))).unwrap();
        assert!(seen.er_rrip && !seen.any_rrip);
    }

    #[test]
    fn short_entry_ends_the_area_without_error() {
        let mut area = e(b"NM", b"\x00ok");
        area.extend_from_slice(b"PX\x02\x01garbage");
        let rr = parse_system_use(&area, no_ce).unwrap();
        assert_eq!(rr.name.as_deref(), Some(&b"ok"[..]));
        assert_eq!(rr.mode, None);
    }

    #[test]
    fn refuses_symlink_targets_with_a_nul_byte() {
        let rr = parse_system_use(&e(b"SL", b"\x00\x00\x03a\x00b"), no_ce).unwrap();
        assert_eq!(rr.target, None);
        assert_eq!(rr.refused, Some("symlink target with a NUL byte"));
    }

    #[test]
    fn refuses_names_over_255_bytes() {
        let mut area = Vec::new();
        for _ in 0..3 {
            area.extend(e(b"NM", &[&[1u8][..], &[b'x'; 100]].concat()));
        }
        area.extend(e(b"NM", b"\x00y"));
        let rr = parse_system_use(&area, no_ce).unwrap();
        assert_eq!(rr.name, None);
        assert!(rr.refused.is_some());
    }

    #[test]
    fn reads_px_tf_and_relocation_entries() {
        let mut px = Vec::new();
        for v in [0o100644u32, 1, 1000, 100, 7] {
            px.extend(both(v));
        }
        let mut area = e(b"PX", &px);
        area.extend(e(b"TF", &[tf_flags::MODIFY, 120, 1, 2, 3, 4, 5, 0]));
        area.extend(e(b"CL", &both(99)));
        area.extend(e(b"RE", b""));
        let rr = parse_system_use(&area, no_ce).unwrap();
        assert_eq!(
            (rr.mode, rr.uid, rr.gid, rr.ino),
            (Some(0o100644), Some(1000), Some(100), Some(7))
        );
        assert!(rr.mtime.is_some());
        assert_eq!(rr.child_link, Some(99));
        assert!(rr.relocated);
    }
}
