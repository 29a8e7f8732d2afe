//! ISO9660 and Joliet identifiers for the names of one directory, unique in it.
//!
//! Pure functions. ISO9660 identifiers are level-2 style (ECMA-119 7.5, 7.6): d-characters,
//! at most 31 for a directory and 30 for a file's name plus extension, files with `.` and `;1`.
//! Joliet identifiers are UCS-2 (UTF-16BE), at most 64 units, without the characters Joliet
//! forbids. Names that do not fit or collide get a `~N` suffix before the extension; names that
//! fit as they are keep priority over mangled ones.

use std::collections::{HashMap, HashSet};

/// Longest directory identifier (ECMA-119 7.6.3, level 2).
pub const MAX_ISO_DIR_ID: usize = 31;
/// Longest file name plus extension, separators excluded (ECMA-119 7.5.1, level 2).
pub const MAX_ISO_FILE_ID: usize = 30;
/// Longest extension kept from a source name.
const MAX_ISO_EXT: usize = 8;
/// Longest Joliet name in UTF-16 units (Joliet specification 3.3).
pub const MAX_JOLIET_UNITS: usize = 64;
/// Longest extension kept when shortening a Joliet name.
const MAX_JOLIET_EXT: usize = 16;
/// Longest volume label: the primary volume identifier's 32 bytes, one a character.
pub const MAX_LABEL: usize = 32;
/// Joliet's volume identifier: 16 UTF-16 units.
const JOLIET_LABEL_UNITS: usize = 16;

#[cfg(test)]
thread_local! {
    /// Mangled ids tried on this thread, so tests can see the work is linear.
    static TRIES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Counts one mangled id tried (tests only).
fn tried() {
    #[cfg(test)]
    TRIES.with(|t| t.set(t.get() + 1));
}

/// One name to place: its raw bytes and whether it names a directory.
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    pub name: &'a [u8],
    pub is_dir: bool,
}

fn d_char(c: char) -> u8 {
    match c {
        'a'..='z' => c.to_ascii_uppercase() as u8,
        'A'..='Z' | '0'..='9' | '_' => c as u8,
        _ => b'_',
    }
}

fn d_string(s: &str) -> Vec<u8> {
    s.chars().map(d_char).collect()
}

/// The primary volume identifier: the label's printable ASCII as given, anything else '_' (one
/// per character), at most 32 bytes.
///
/// ECMA-119 (8.4.6) asks for d-characters (upper case, digits, '_'), but Joliet holds only 16
/// characters of a label and blkid takes the rest from here, as it is: a d-character form would
/// make `-V Rocky-9.2-x86_64-dvd` read back as `Rocky-9.2-x86_64_DVD`. genisoimage and xorriso
/// write the label as given too, and readers (the kernel, blkid, isoinfo) take any ASCII.
/// One '_' per character keeps the positions blkid lines up with Joliet's characters.
pub fn volume_id(label: &str) -> Vec<u8> {
    label
        .chars()
        .map(|c| {
            if matches!(c, ' '..='~') {
                c as u8
            } else {
                b'_'
            }
        })
        .take(MAX_LABEL)
        .collect()
}

/// The Joliet volume identifier: the label in UTF-16BE, at most 16 units, no split pair.
pub fn joliet_volume_id(label: &str) -> Vec<u8> {
    let units = truncate_units(label.encode_utf16().collect(), JOLIET_LABEL_UNITS);
    units.iter().flat_map(|u| u.to_be_bytes()).collect()
}

/// The volume identifier field (32 bytes) of the primary descriptor, or with `joliet` of the
/// Joliet one: the label in that descriptor's form, padded with spaces.
pub fn volume_id_field(label: &str, joliet: bool) -> [u8; 32] {
    // UCS-2 spaces (0x0020) in Joliet, so the high byte of each unit is 0
    let (id, even_pad) = if joliet {
        (joliet_volume_id(label), 0)
    } else {
        (volume_id(label), b' ')
    };
    let mut field = [b' '; 32];
    for (i, b) in field.iter_mut().enumerate() {
        *b = id
            .get(i)
            .copied()
            .unwrap_or(if i % 2 == 0 { even_pad } else { b' ' });
    }
    field
}

/// The label blkid and `isomgr scan` will read from an image labelled `label` (with a Joliet
/// tree or without): where it differs from `label`, the command line warns.
pub fn label_read_back(label: &str, joliet: bool) -> Option<String> {
    crate::iso9660::descriptor::iso_label(
        &volume_id_field(label, false),
        joliet.then(|| volume_id_field(label, true)).as_ref(),
    )
}

/// Base and extension in d-characters (extension `None` for directories).
fn iso_parts(src: &Source<'_>) -> (Vec<u8>, Option<Vec<u8>>) {
    let s = String::from_utf8_lossy(src.name);
    if src.is_dir {
        return (d_string(&s), None);
    }
    match s.rfind('.') {
        Some(i) if i > 0 => {
            let mut ext = d_string(&s[i + 1..]);
            ext.truncate(MAX_ISO_EXT);
            (d_string(&s[..i]), Some(ext))
        }
        _ => (d_string(&s), Some(Vec::new())),
    }
}

fn iso_join(base: &[u8], ext: Option<&[u8]>) -> Vec<u8> {
    let mut id = base.to_vec();
    if let Some(ext) = ext {
        id.push(b'.');
        id.extend_from_slice(ext);
    }
    id
}

/// ISO9660 identifiers for the entries of one directory, in the given order: unique, files
/// ending in `;1`. The caller sorts records by [`iso_sort_key`].
pub fn iso_identifiers(entries: &[Source<'_>]) -> Vec<Vec<u8>> {
    let parts: Vec<_> = entries.iter().map(iso_parts).collect();
    let mut taken: HashSet<Vec<u8>> = HashSet::new();
    let mut next_n: HashMap<(Vec<u8>, Option<Vec<u8>>), u64> = HashMap::new();
    let mut out: Vec<Option<Vec<u8>>> = vec![None; entries.len()];
    for (slot, (base, ext)) in out.iter_mut().zip(&parts) {
        let limit = match ext {
            None => MAX_ISO_DIR_ID,
            Some(e) => MAX_ISO_FILE_ID - e.len(),
        };
        if !base.is_empty() && base.len() <= limit {
            let id = iso_join(base, ext.as_deref());
            if taken.insert(id.clone()) {
                *slot = Some(id);
            }
        }
    }
    for (slot, (base, ext)) in out.iter_mut().zip(&parts) {
        if slot.is_some() {
            continue;
        }
        let limit = match ext {
            None => MAX_ISO_DIR_ID,
            Some(e) => MAX_ISO_FILE_ID - e.len(),
        };
        // Names whose first `limit - 2` characters agree try the same ids (`~N` keeps at most
        // that many), so a family starts where its last member stopped: linear, not
        // quadratic, in a directory of many long names alike.
        let family = (
            base.get(..limit.saturating_sub(2)).unwrap_or(base).to_vec(),
            ext.clone(),
        );
        let next = next_n.entry(family).or_insert(1);
        loop {
            let suffix = format!("~{next}");
            *next += 1;
            tried();
            let keep = limit.saturating_sub(suffix.len()).min(base.len());
            let mut b = base.get(..keep).unwrap_or_default().to_vec();
            b.extend_from_slice(suffix.as_bytes());
            let id = iso_join(&b, ext.as_deref());
            if taken.insert(id.clone()) {
                *slot = Some(id);
                break;
            }
        }
    }
    out.into_iter()
        .zip(&parts)
        .map(|(id, (_, ext))| {
            let mut id = id.unwrap_or_default();
            if ext.is_some() {
                id.extend_from_slice(b";1");
            }
            id
        })
        .collect()
}

/// Sort key of an identifier (ECMA-119 9.3): name part, then extension, each compared as if
/// padded with spaces, which for d-characters is plain byte order.
pub fn iso_sort_key(id: &[u8]) -> (&[u8], &[u8]) {
    let id = match id.iter().position(|&c| c == b';') {
        Some(i) => id.get(..i).unwrap_or(id),
        None => id,
    };
    match id.iter().position(|&c| c == b'.') {
        Some(i) => (
            id.get(..i).unwrap_or_default(),
            id.get(i + 1..).unwrap_or_default(),
        ),
        None => (id, &[]),
    }
}

fn joliet_char(c: char) -> char {
    match c {
        '*' | '/' | ':' | ';' | '?' | '\\' => '_',
        c if (c as u32) < 0x20 => '_',
        c => c,
    }
}

/// Drops units past `max`, and a high surrogate left without its pair.
fn truncate_units(mut u: Vec<u16>, max: usize) -> Vec<u16> {
    u.truncate(max);
    if u.last().is_some_and(|&x| (0xD800..0xDC00).contains(&x)) {
        u.pop();
    }
    u
}

/// Joliet identifiers (UTF-16 units) for the entries of one directory, unique, each at most
/// [`MAX_JOLIET_UNITS`] long. Sorting by the unit sequence gives Joliet's record order.
pub fn joliet_identifiers(entries: &[Source<'_>]) -> Vec<Vec<u16>> {
    let natural: Vec<String> = entries
        .iter()
        .map(|e| {
            String::from_utf8_lossy(e.name)
                .chars()
                .map(joliet_char)
                .collect()
        })
        .collect();
    let mut taken: HashSet<Vec<u16>> = HashSet::new();
    let mut next_n: HashMap<(Vec<u16>, Vec<u16>), u64> = HashMap::new();
    let mut out: Vec<Option<Vec<u16>>> = vec![None; entries.len()];
    for (slot, s) in out.iter_mut().zip(&natural) {
        let u: Vec<u16> = s.encode_utf16().collect();
        if u.len() <= MAX_JOLIET_UNITS && taken.insert(u.clone()) {
            *slot = Some(u);
        }
    }
    for ((slot, s), e) in out.iter_mut().zip(&natural).zip(entries) {
        if slot.is_some() {
            continue;
        }
        let (base, ext) = match s.rfind('.') {
            Some(i) if i > 0 && !e.is_dir => {
                let ext: Vec<u16> = s[i..].encode_utf16().collect();
                if ext.len() <= MAX_JOLIET_EXT {
                    (s[..i].encode_utf16().collect::<Vec<u16>>(), ext)
                } else {
                    (s.encode_utf16().collect(), Vec::new())
                }
            }
            _ => (s.encode_utf16().collect(), Vec::new()),
        };
        // As for ISO9660 names: a family of names alike continues where it stopped.
        let widest = MAX_JOLIET_UNITS.saturating_sub(2 + ext.len());
        let family = (base.get(..widest).unwrap_or(&base).to_vec(), ext.clone());
        let next = next_n.entry(family).or_insert(1);
        loop {
            let suffix: Vec<u16> = format!("~{next}").encode_utf16().collect();
            *next += 1;
            tried();
            let room = MAX_JOLIET_UNITS.saturating_sub(suffix.len() + ext.len());
            let mut id = truncate_units(base.clone(), room);
            id.extend_from_slice(&suffix);
            id.extend_from_slice(&ext);
            if taken.insert(id.clone()) {
                *slot = Some(id);
                break;
            }
        }
    }
    out.into_iter().map(Option::unwrap_or_default).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn f(name: &str) -> Source<'_> {
        Source {
            name: name.as_bytes(),
            is_dir: false,
        }
    }
    fn d(name: &str) -> Source<'_> {
        Source {
            name: name.as_bytes(),
            is_dir: true,
        }
    }
    fn s(v: &[u8]) -> &str {
        std::str::from_utf8(v).unwrap()
    }

    #[test]
    fn maps_names_to_d_characters_with_version() {
        let ids = iso_identifiers(&[f("readme.txt"), f("Makefile"), d("src.d"), f(".bashrc")]);
        let ids: Vec<&str> = ids.iter().map(|v| s(v)).collect();
        assert_eq!(ids, ["README.TXT;1", "MAKEFILE.;1", "SRC_D", "_BASHRC.;1"]);
    }

    #[test]
    fn mangles_collisions_and_long_names_uniquely() {
        let long = "a".repeat(40);
        let ids = iso_identifiers(&[f("A.txt"), f("a.txt"), f(&long), f(&format!("{long}x"))]);
        let set: HashSet<_> = ids.iter().collect();
        assert_eq!(set.len(), 4);
        assert_eq!(s(&ids[0]), "A.TXT;1");
        assert_eq!(s(&ids[1]), "A~1.TXT;1");
        for id in &ids {
            let (n, e) = iso_sort_key(id);
            assert!(n.len() + e.len() <= MAX_ISO_FILE_ID, "{}", s(id));
            assert!(id.iter().all(|&c| crate::iso9660::ondisk::is_d_char(c)
                || c == b'.'
                || c == b';'
                || c == b'~'));
        }
    }

    #[test]
    fn repeated_collisions_count_up() {
        let ids = iso_identifiers(&[f("a.txt"), f("A.TXT"), f("a.TXT"), f("a~1.txt")]);
        let ids: Vec<&str> = ids.iter().map(|v| s(v)).collect();
        assert_eq!(ids, ["A.TXT;1", "A~1.TXT;1", "A~2.TXT;1", "A_1.TXT;1"]);
    }

    #[test]
    fn joliet_shortens_long_names_uniquely_keeping_extension() {
        let a = format!("{}.txt", "é".repeat(70));
        let b = format!("{}x.txt", "é".repeat(70));
        let ids = joliet_identifiers(&[f(&a), f(&b), f("short:name")]);
        assert!(ids.iter().all(|u| u.len() <= MAX_JOLIET_UNITS));
        assert_ne!(ids[0], ids[1]);
        assert!(String::from_utf16(&ids[0]).unwrap().ends_with("~1.txt"));
        assert_eq!(String::from_utf16(&ids[2]).unwrap(), "short_name");
    }

    #[test]
    fn joliet_truncation_never_splits_a_surrogate_pair() {
        let name = "\u{1F600}".repeat(40); // 80 units
        let ids = joliet_identifiers(&[d(&name)]);
        assert!(String::from_utf16(&ids[0]).is_ok());
        assert!(ids[0].len() <= MAX_JOLIET_UNITS);
    }

    #[test]
    fn many_long_names_alike_get_consecutive_suffixes() {
        // What a directory of 1,000 files named alike gets; each family continues where it
        // stopped (a regression here was quadratic: 27 s for 200,000 such files).
        let names: Vec<String> = (0..1000)
            .map(|i| format!("file-with-a-longer-name-{i:05}.txt"))
            .collect();
        let src: Vec<_> = names.iter().map(|n| f(n)).collect();
        TRIES.with(|t| t.set(0));
        let ids = iso_identifiers(&src);
        let jids = joliet_identifiers(&src);
        // one try each: starting every name at ~1 made it 500,500
        assert_eq!(TRIES.with(|t| t.get()), 1000);
        for (i, id) in ids.iter().enumerate() {
            // 30 characters at most: the base shrinks as the suffix grows
            let suffix = format!("~{}", i + 1);
            let base = &"FILE_WITH_A_LONGER_NAME_00"[..27 - suffix.len()];
            assert_eq!(s(id), format!("{base}{suffix}.TXT;1"));
        }
        // Joliet holds these names whole
        assert!(jids
            .iter()
            .zip(&names)
            .all(|(j, n)| *j == n.encode_utf16().collect::<Vec<_>>()));
        // Two families that differ only in the 25th character meet from ~10 on (the base is
        // cut to 24): the second skips the ids the first took.
        let two: Vec<String> = ["a", "b"]
            .iter()
            .flat_map(|c| (0..12).map(move |i| format!("file-with-a-longer-name-{c}{i:03}.txt")))
            .collect();
        let src: Vec<_> = two.iter().map(|n| f(n)).collect();
        let ids = iso_identifiers(&src);
        let suffixes: Vec<String> = ids
            .iter()
            .map(|id| s(id).trim_end_matches(".TXT;1").to_string())
            .collect();
        let mut want: Vec<String> = (1..=12)
            .map(|n| match n {
                1..=9 => format!("FILE_WITH_A_LONGER_NAME_A~{n}"),
                _ => format!("FILE_WITH_A_LONGER_NAME_~{n}"),
            })
            .collect();
        want.extend((1..=9).map(|n| format!("FILE_WITH_A_LONGER_NAME_B~{n}")));
        want.extend((13..=15).map(|n| format!("FILE_WITH_A_LONGER_NAME_~{n}")));
        assert_eq!(suffixes, want);
        // long Joliet names alike
        let long: Vec<String> = (0..200)
            .map(|i| format!("{}{i:03}.iso", "j".repeat(70)))
            .collect();
        let src: Vec<_> = long.iter().map(|n| f(n)).collect();
        let jids = joliet_identifiers(&src);
        let unique: HashSet<_> = jids.iter().collect();
        assert_eq!(unique.len(), 200);
        let last = String::from_utf16(&jids[199]).unwrap();
        assert_eq!(last, format!("{}~200.iso", "j".repeat(56)));
    }

    #[test]
    fn labels_read_back_as_given_where_the_format_can_hold_them() {
        for label in [
            "Rocky-9.2-x86_64-dvd",
            "Ubuntu 24.04.1 LTS amd64",
            "Données 2024",
        ] {
            assert_eq!(label_read_back(label, true).as_deref(), Some(label));
        }
        assert_eq!(
            label_read_back(&"x".repeat(32), false),
            Some("x".repeat(32))
        );
        for (label, joliet, back) in [
            ("Données 2024", false, Some("Donn_es 2024")),
            (
                "Données d'été 2024 – archive",
                true,
                Some("Données d'été 2024 _ archive"),
            ),
            ("trailing  ", true, Some("trailing")),
            ("", true, None),
        ] {
            assert_eq!(label_read_back(label, joliet).as_deref(), back, "{label:?}");
        }
    }

    #[test]
    fn volume_ids_follow_the_label() {
        assert_eq!(volume_id("Rocky-9.2-x86_64-dvd"), b"Rocky-9.2-x86_64-dvd");
        assert_eq!(volume_id("Donn\u{e9}es\tv\u{1f4bf}2"), b"Donn_es_v_2");
        assert_eq!(volume_id(&"x".repeat(40)).len(), 32);
        assert_eq!(volume_id(&"\u{e9}".repeat(40)), [b'_'; 32]);
        assert_eq!(joliet_volume_id("My Disk"), encode("My Disk"));
    }

    fn encode(s: &str) -> Vec<u8> {
        crate::iso9660::ondisk::encode_ucs2be(s)
    }
}
