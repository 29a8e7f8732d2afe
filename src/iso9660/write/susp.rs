//! SUSP (IEEE P1281) and RRIP 1.12 (IEEE P1282) entries, and their packing into a directory
//! record's system use field and continuation areas.
//!
//! Pure: entries are byte vectors built from values; [`CeArea`] is an in-memory region whose
//! sectors the layout places after the directories. A continuation area never crosses a sector
//! (the Linux kernel rejects one that does), so long entry lists chain several.

use crate::iso9660::ondisk::{put_both32, sig, sl_flags, tf_flags, SECTOR_SIZE, SP_CHECK};

/// Length of a CE entry (SUSP 5.1).
pub const CE_LEN: usize = 28;
/// Longest SUSP entry (its length is one byte).
const MAX_ENTRY: usize = 255;
/// Bytes of NM or SL payload per entry, after the 5-byte header.
const MAX_PAYLOAD: usize = MAX_ENTRY - 5;
const SECTOR: usize = SECTOR_SIZE as usize;

/// Extension identifier, descriptor and source of the ER entry for RRIP 1.12.
pub const ER_ID: &[u8] = b"IEEE_1282";
const ER_DESCRIPTOR: &[u8] =
    b"THE IEEE 1282 PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS.";
const ER_SOURCE: &[u8] =
    b"PLEASE CONTACT THE IEEE STANDARDS DEPARTMENT, PISCATAWAY, NJ, USA FOR THE 1282 SPECIFICATION.";

fn header(sig: [u8; 2], len: usize) -> Vec<u8> {
    let mut e = Vec::with_capacity(len);
    e.extend_from_slice(&sig);
    e.push(len.min(MAX_ENTRY) as u8);
    e.push(1);
    e
}

/// SP: SUSP is in use, no bytes skipped (SUSP 5.3). First entry of the root's `.` record.
pub fn sp() -> Vec<u8> {
    let mut e = header(sig::SP, 7);
    e.extend_from_slice(&SP_CHECK);
    e.push(0);
    e
}

/// ER naming RRIP 1.12 (SUSP 5.5).
pub fn er() -> Vec<u8> {
    let len = 8 + ER_ID.len() + ER_DESCRIPTOR.len() + ER_SOURCE.len();
    let mut e = header(sig::ER, len);
    e.push(ER_ID.len() as u8);
    e.push(ER_DESCRIPTOR.len() as u8);
    e.push(ER_SOURCE.len() as u8);
    e.push(1);
    e.extend_from_slice(ER_ID);
    e.extend_from_slice(ER_DESCRIPTOR);
    e.extend_from_slice(ER_SOURCE);
    e
}

fn both32(v: u32) -> [u8; 8] {
    let mut b = [0u8; 8];
    put_both32(&mut b, 0, v);
    b
}

/// PX in the 44-byte RRIP 1.12 form with the file serial number (RRIP 4.1.1).
pub fn px(mode: u32, nlink: u32, uid: u32, gid: u32, serial: u32) -> Vec<u8> {
    let mut e = header(sig::PX, 44);
    for v in [mode, nlink, uid, gid, serial] {
        e.extend_from_slice(&both32(v));
    }
    e
}

/// TF with modification, access and attribute-change times, short form (RRIP 4.1.6).
pub fn tf(mtime: i64, atime: i64, ctime: i64) -> Vec<u8> {
    use crate::iso9660::ondisk::encode_dir_time;
    let mut e = header(sig::TF, 5 + 3 * 7);
    e.push(tf_flags::MODIFY | tf_flags::ACCESS | tf_flags::ATTRIBUTES);
    for t in [mtime, atime, ctime] {
        e.extend_from_slice(&encode_dir_time(t));
    }
    e
}

/// Longest Rock Ridge name Linux's isofs shows whole: it stops adding NM entries once a name
/// would reach 254 bytes, and shows what it has (fs/isofs/rock.c, `get_rock_ridge_filename`).
pub const LINUX_NAME_MAX: usize = 253;

/// Where `name` splits between NM entries: at most 250 bytes per entry, and never inside a
/// UTF-8 sequence, so that a reader which keeps only the first entry (Linux, for names over
/// [`LINUX_NAME_MAX`]) shows whole characters.
fn nm_chunks(name: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = name;
    while rest.len() > MAX_PAYLOAD {
        let mut cut = MAX_PAYLOAD;
        // A continuation byte (10xxxxxx) at the cut: move back to its character's lead byte
        // (at most 3 back). Bytes that are not UTF-8 split where they fall.
        let continuation = |i: usize| rest.get(i).is_some_and(|b| b & 0xC0 == 0x80);
        if continuation(cut) {
            let lead = (1..=3).map(|b| cut - b).find(|&i| !continuation(i));
            if let Some(i) = lead.filter(|&i| rest.get(i).is_some_and(|&b| b >= 0xC0)) {
                cut = i;
            }
        }
        let (head, tail) = rest.split_at(cut);
        out.push(head);
        rest = tail;
    }
    out.push(rest);
    out
}

/// How much of `name` Linux's isofs shows: all of it up to [`LINUX_NAME_MAX`] bytes, else the
/// first NM entry.
pub fn linux_shown_len(name: &[u8]) -> usize {
    if name.len() <= LINUX_NAME_MAX {
        name.len()
    } else {
        nm_chunks(name).first().map_or(0, |c| c.len())
    }
}

/// NM entries holding `name`, split with the CONTINUE flag past 250 bytes (RRIP 4.1.4).
pub fn nm(name: &[u8]) -> Vec<Vec<u8>> {
    let chunks = nm_chunks(name);
    let last = chunks.len().saturating_sub(1);
    chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut e = header(sig::NM, 5 + c.len());
            e.push(if i < last { 1 } else { 0 });
            e.extend_from_slice(c);
            e
        })
        .collect()
}

/// SL entries for a symlink target (RRIP 4.1.3): `/` gives a ROOT component, `.` and `..`
/// CURRENT and PARENT, empty components (`a//b`, a trailing `/`) are dropped. Components and
/// entries longer than an entry holds are split with their CONTINUE flags.
pub fn sl(target: &[u8]) -> Vec<Vec<u8>> {
    let mut comps: Vec<(u8, &[u8])> = Vec::new();
    if target.first() == Some(&b'/') {
        comps.push((sl_flags::ROOT, &[]));
    }
    for c in target.split(|&b| b == b'/') {
        match c {
            b"" => {}
            b"." => comps.push((sl_flags::CURRENT, &[])),
            b".." => comps.push((sl_flags::PARENT, &[])),
            c => comps.push((0, c)),
        }
    }
    if comps.is_empty() {
        comps.push((sl_flags::CURRENT, &[]));
    }
    let mut payloads: Vec<Vec<u8>> = vec![Vec::new()];
    for (flags, mut content) in comps {
        loop {
            let cur = payloads.last().map_or(0, Vec::len);
            let room = MAX_PAYLOAD.saturating_sub(cur + 2);
            if room == 0 || (room < content.len() && room < 16) {
                payloads.push(Vec::new());
                continue;
            }
            let take = content.len().min(room);
            let (head, rest) = content.split_at(take);
            let mut f = flags;
            if !rest.is_empty() {
                f |= sl_flags::CONTINUE;
            }
            if let Some(p) = payloads.last_mut() {
                p.push(f);
                p.push(head.len() as u8);
                p.extend_from_slice(head);
            }
            content = rest;
            if content.is_empty() {
                break;
            }
        }
    }
    let last = payloads.len().saturating_sub(1);
    payloads
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let mut e = header(sig::SL, 5 + p.len());
            e.push(if i < last { sl_flags::CONTINUE } else { 0 });
            e.extend_from_slice(&p);
            e
        })
        .collect()
}

/// RE: this directory was relocated here (RRIP 4.1.5.3).
pub fn re() -> Vec<u8> {
    header(sig::RE, 4)
}

/// CL: the directory that belongs here lives at `lba` (RRIP 4.1.5.1).
pub fn cl(lba: u32) -> Vec<u8> {
    let mut e = header(sig::CL, 12);
    e.extend_from_slice(&both32(lba));
    e
}

/// PL: the original parent of a relocated directory is at `lba` (RRIP 4.1.5.2).
pub fn pl(lba: u32) -> Vec<u8> {
    let mut e = header(sig::PL, 12);
    e.extend_from_slice(&both32(lba));
    e
}

fn ce(lba: u32, offset: u32, len: u32) -> Vec<u8> {
    let mut e = header(sig::CE, CE_LEN);
    for v in [lba, offset, len] {
        e.extend_from_slice(&both32(v));
    }
    e
}

/// The continuation areas of an image: a run of sectors filled front to back, each area inside
/// one sector. `base` is the LBA of its first sector (0 while only sizes are wanted).
#[derive(Debug, Default)]
pub struct CeArea {
    pub base: u32,
    pub bytes: Vec<u8>,
}

impl CeArea {
    /// Reserves `len` (at most a sector) bytes; returns (LBA, offset in that sector).
    fn alloc(&mut self, len: usize) -> (u32, usize) {
        let used = self.bytes.len() % SECTOR;
        if used != 0 && used + len > SECTOR {
            self.bytes.resize(self.bytes.len() + SECTOR - used, 0);
        }
        let at = self.bytes.len();
        self.bytes.resize(at + len, 0);
        (self.base + (at / SECTOR) as u32, at)
    }

    /// The region padded to whole sectors.
    pub fn finish(mut self) -> Vec<u8> {
        let used = self.bytes.len() % SECTOR;
        if used != 0 {
            self.bytes.resize(self.bytes.len() + SECTOR - used, 0);
        }
        self.bytes
    }
}

/// Packs `entries` for a record whose system use field may hold `room` bytes: what fits goes
/// in the record, the rest into chained continuation areas. Returns the record's part.
pub fn pack(entries: &[Vec<u8>], room: usize, ce_area: &mut CeArea) -> Vec<u8> {
    let total: usize = entries.iter().map(Vec::len).sum();
    let mut out = Vec::new();
    if total <= room {
        for e in entries {
            out.extend_from_slice(e);
        }
        return out;
    }
    let mut i = 0;
    while let Some(e) = entries.get(i) {
        if out.len() + e.len() + CE_LEN > room {
            break;
        }
        out.extend_from_slice(e);
        i += 1;
    }
    // group the rest into areas of at most a sector, each but the last ending in a CE
    let mut chunks: Vec<Vec<&Vec<u8>>> = Vec::new();
    let rest = entries.get(i..).unwrap_or_default();
    let mut j = 0;
    while j < rest.len() {
        let mut chunk = Vec::new();
        let mut used = 0;
        while let Some(e) = rest.get(j) {
            let remaining: usize = rest
                .get(j..)
                .unwrap_or_default()
                .iter()
                .map(|e| e.len())
                .sum();
            if used + remaining <= SECTOR {
                chunk.extend(rest.get(j..).unwrap_or_default());
                j = rest.len();
                break;
            }
            if used + e.len() + CE_LEN > SECTOR {
                break;
            }
            chunk.push(e);
            used += e.len();
            j += 1;
        }
        if chunk.is_empty() {
            // cannot happen: an entry is at most 255 bytes; stop rather than loop forever
            break;
        }
        chunks.push(chunk);
    }
    let sizes: Vec<usize> = chunks
        .iter()
        .enumerate()
        .map(|(k, c)| {
            c.iter().map(|e| e.len()).sum::<usize>() + if k + 1 < chunks.len() { CE_LEN } else { 0 }
        })
        .collect();
    let places: Vec<(u32, usize)> = sizes.iter().map(|&s| ce_area.alloc(s)).collect();
    if let (Some(&(lba, at)), Some(&size)) = (places.first(), sizes.first()) {
        out.extend_from_slice(&ce(lba, (at % SECTOR) as u32, size as u32));
    }
    for (k, chunk) in chunks.iter().enumerate() {
        let Some(&(_, mut at)) = places.get(k) else {
            break;
        };
        let mut put = |b: &[u8], at: &mut usize| {
            if let Some(dst) = ce_area.bytes.get_mut(*at..*at + b.len()) {
                dst.copy_from_slice(b);
            }
            *at += b.len();
        };
        for e in chunk {
            put(e, &mut at);
        }
        if let (Some(&(lba, nat)), Some(&size)) = (places.get(k + 1), sizes.get(k + 1)) {
            put(&ce(lba, (nat % SECTOR) as u32, size as u32), &mut at);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// Reassembles all entries of a record's system use through its CE chain.
    fn follow(record_su: &[u8], area: &[u8], base: u32) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut cur = record_su.to_vec();
        loop {
            let mut next = None;
            let mut k = 0;
            while k + 4 <= cur.len() {
                let len = cur[k + 2] as usize;
                let e = cur[k..k + len].to_vec();
                if e[..2] == sig::CE {
                    let lba = u32::from_le_bytes(e[4..8].try_into().unwrap());
                    let off = u32::from_le_bytes(e[12..16].try_into().unwrap()) as usize;
                    let l = u32::from_le_bytes(e[20..24].try_into().unwrap()) as usize;
                    assert!(off + l <= SECTOR, "continuation area crosses a sector");
                    let at = (lba - base) as usize * SECTOR + off;
                    next = Some(area[at..at + l].to_vec());
                } else {
                    out.push(e);
                }
                k += len;
            }
            match next {
                Some(n) => cur = n,
                None => return out,
            }
        }
    }

    #[test]
    fn long_names_split_between_characters() {
        let payload = |e: &[Vec<u8>]| e.iter().map(|x| x[5..].to_vec()).collect::<Vec<_>>();
        // ASCII: 250 then the rest.
        let n = nm(&[b'n'; 255]);
        assert_eq!(payload(&n), vec![vec![b'n'; 250], vec![b'n'; 5]]);
        assert_eq!((n[0][4], n[1][4]), (1, 0), "CONTINUE on all but the last");
        assert_eq!(linux_shown_len(&[b'n'; 255]), 250);
        assert_eq!(linux_shown_len(&[b'n'; 253]), 253);
        // "xx" then 3-byte characters: byte 250 is inside the one at 248, so the first entry
        // ends before it.
        let name = format!("xx{}", "語".repeat(83)); // 251 bytes
        let parts = payload(&nm(name.as_bytes()));
        assert_eq!(parts[0].len(), 248);
        assert!(std::str::from_utf8(&parts[0]).is_ok());
        assert_eq!(parts.concat(), name.as_bytes());
        let long = format!("xx{}", "語".repeat(84)); // 254 bytes: Linux shows the first entry
        assert_eq!(linux_shown_len(long.as_bytes()), 248);
        // Not UTF-8: split at 250 as before.
        let raw = [0x80u8; 300];
        assert_eq!(payload(&nm(&raw))[0].len(), 250);
    }

    #[test]
    fn long_symlink_survives_packing_through_chained_areas() {
        let target: Vec<u8> = (0..4000).map(|i| b'a' + (i % 26) as u8).collect();
        let mut target = target;
        target[100] = b'/';
        target[2000] = b'/';
        let mut entries = vec![px(0o120777, 1, 0, 0, 7), tf(1, 2, 3)];
        entries.extend(nm(&[b'n'; 255]));
        entries.extend(sl(&target));
        let mut area = CeArea {
            base: 100,
            bytes: vec![],
        };
        let rec = pack(&entries, 150, &mut area);
        assert!(rec.len() <= 150);
        let bytes = area.finish();
        let got = follow(&rec, &bytes, 100);
        assert_eq!(got, entries);
        // reassemble the SL components
        let mut path = Vec::new();
        let mut comp_continues = false;
        for e in got.iter().filter(|e| e[..2] == sig::SL) {
            let mut k = 5;
            while k < e.len() {
                let (f, l) = (e[k], e[k + 1] as usize);
                if !path.is_empty() && !comp_continues {
                    path.push(b'/');
                }
                path.extend_from_slice(&e[k + 2..k + 2 + l]);
                comp_continues = f & sl_flags::CONTINUE != 0;
                k += 2 + l;
            }
        }
        assert_eq!(path, target);
    }

    #[test]
    fn entries_fitting_the_record_stay_in_it() {
        let entries = vec![px(0o100644, 1, 0, 0, 1), tf(0, 0, 0)];
        let mut area = CeArea::default();
        let rec = pack(&entries, 200, &mut area);
        assert_eq!(rec.len(), 44 + 26);
        assert!(area.bytes.is_empty());
    }

    #[test]
    fn symlink_components_map_to_flags() {
        let e = &sl(b"/usr/../.")[0];
        assert_eq!(
            &e[5..],
            &[
                sl_flags::ROOT,
                0,
                0,
                3,
                b'u',
                b's',
                b'r',
                sl_flags::PARENT,
                0,
                sl_flags::CURRENT,
                0
            ]
        );
    }
}
