//! Partitions appended after the ISO 9660 volume (xorriso's `-append_partition`), as Debian's
//! memtest86+ images (an EFI system partition in the MBR) and Ubuntu's (in a GPT,
//! `-appended_part_as_gpt`) hold their UEFI boot image: the El Torito UEFI entry then points
//! at the partition (xorriso's `-e --interval:appended_partition_N:all::`), and firmware
//! booting the image from a disk finds it in the partition table.
//!
//! Each partition is a file copied after the volume, from a 2048-byte sector (a cylinder with
//! an isohybrid MBR); the volume does not count it. The partition table: see [`mbr_entries`]
//! and [`gpt_parts`].

use super::Error;
use crate::iso9660::ondisk::SECTOR_SIZE;
use std::path::PathBuf;

/// The EFI system partition's type (C12A7328-F81F-11D2-BA4B-00A0C93EC93B), in GUID byte order.
pub const EFI_SYSTEM: [u8; 16] = [
    0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B,
];
/// The Basic Data partition type (EBD0A0A2-B9E5-4433-87C0-68B6B72699C7), in GUID byte order.
pub const BASIC_DATA: [u8; 16] = [
    0xA2, 0xA0, 0xD0, 0xEB, 0xE5, 0xB9, 0x33, 0x44, 0x87, 0xC0, 0x68, 0xB6, 0xB7, 0x26, 0x99, 0xC7,
];
/// The MBR type of an EFI system partition.
pub const EFI_MBR_TYPE: u8 = 0xEF;
/// The highest partition number: an MBR has 4 entries, and xorriso appends at most 8 to a GPT.
pub const MAX_MBR: u8 = 4;
pub const MAX_GPT: u8 = 8;

/// A partition type: an MBR type byte, or a GPT type GUID (in GUID byte order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartType {
    Mbr(u8),
    Guid([u8; 16]),
}

impl PartType {
    /// Reads `0xNN` (an MBR type) or a GUID, as `C12A7328-F81F-11D2-BA4B-00A0C93EC93B` or as
    /// xorriso writes one, its 16 bytes in hex (`28732ac11ff8d211ba4b00a0c93ec93b`).
    pub fn parse(s: &str) -> Result<PartType, String> {
        if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            if hex.len() <= 2 {
                if let Ok(b) = u8::from_str_radix(hex, 16) {
                    return Ok(PartType::Mbr(b));
                }
            }
        }
        let hex = |t: &str| -> Option<Vec<u8>> {
            if t.len() % 2 != 0 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            (0..t.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(t.get(i..i + 2)?, 16).ok())
                .collect()
        };
        let fields: Vec<&str> = s.split('-').collect();
        let guid = match fields.as_slice() {
            [raw] if raw.len() == 32 => hex(raw),
            [a, b, c, d, e]
                if [a.len(), b.len(), c.len(), d.len(), e.len()] == [8, 4, 4, 4, 12] =>
            {
                // the first three fields are little-endian in the GUID's bytes
                [(a, true), (b, true), (c, true), (d, false), (e, false)]
                    .into_iter()
                    .map(|(f, swap)| {
                        let mut bytes = hex(f)?;
                        if swap {
                            bytes.reverse();
                        }
                        Some(bytes)
                    })
                    .collect::<Option<Vec<Vec<u8>>>>()
                    .map(|v| v.concat())
            }
            _ => None,
        };
        match guid.and_then(|g| <[u8; 16]>::try_from(g).ok()) {
            Some(g) => Ok(PartType::Guid(g)),
            None => Err(format!(
                "{s:?} is not a partition type: an MBR type as 0xNN (0xef: an EFI system \
                 partition) or a GPT type GUID (C12A7328-F81F-11D2-BA4B-00A0C93EC93B)"
            )),
        }
    }

    /// The MBR type byte, if this is one.
    pub fn mbr(self) -> Option<u8> {
        match self {
            PartType::Mbr(b) => Some(b),
            PartType::Guid(_) => None,
        }
    }

    /// The GPT type: a GUID as given; an MBR type as xorriso maps it (0xEF: an EFI system
    /// partition; any other: Basic Data).
    pub fn guid(self) -> [u8; 16] {
        match self {
            PartType::Guid(g) => g,
            PartType::Mbr(EFI_MBR_TYPE) => EFI_SYSTEM,
            PartType::Mbr(_) => BASIC_DATA,
        }
    }
}

impl std::fmt::Display for PartType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PartType::Mbr(b) => write!(f, "0x{b:02x}"),
            PartType::Guid(g) => f.write_str(&guid_text(g)),
        }
    }
}

/// A GUID in GUID byte order as text (`C12A7328-F81F-11D2-BA4B-00A0C93EC93B`).
pub fn guid_text(g: &[u8; 16]) -> String {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02X}")).collect::<String>();
    let rev = |b: &[u8]| hex(&b.iter().rev().copied().collect::<Vec<u8>>());
    format!(
        "{}-{}-{}-{}-{}",
        rev(&g[..4]),
        rev(&g[4..6]),
        rev(&g[6..8]),
        hex(&g[8..10]),
        hex(&g[10..])
    )
}

/// A partition to append, as the command line gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Append {
    /// Its number in the partition table (1 is the volume's).
    pub number: u8,
    pub ty: PartType,
    /// The file it is made of (outside the source tree, or anywhere).
    pub path: PathBuf,
}

impl Append {
    /// Reads `--append-partition N TYPE FILE`'s values.
    pub fn parse(values: &[String]) -> Result<Append, String> {
        let [n, ty, path] = values else {
            return Err("--append-partition takes N TYPE FILE".into());
        };
        let number = match n.parse::<u8>() {
            Ok(v) if (2..=MAX_GPT).contains(&v) => v,
            _ => {
                return Err(format!(
                    "partition number {n:?}: 2 to {MAX_GPT} (1 is the ISO 9660 volume's; an MBR \
                     has 4 entries)"
                ))
            }
        };
        Ok(Append {
            number,
            ty: PartType::parse(ty)?,
            path: PathBuf::from(path),
        })
    }
}

/// Checks what can only be told from all the appended partitions together: numbers used once,
/// each fitting the table (an MBR: 2 to 4, types as bytes), and the partition an El Torito
/// entry names (`efi`) appended. Returns the message for a usage error.
pub fn check(appended: &[Append], gpt: bool, efi: Option<u8>) -> Result<(), String> {
    for (i, a) in appended.iter().enumerate() {
        if appended[..i].iter().any(|b| b.number == a.number) {
            return Err(format!("partition {} is appended twice", a.number));
        }
        if !gpt {
            if a.number > MAX_MBR {
                return Err(format!(
                    "partition {}: an MBR has 4 entries (--appended-part-as-gpt puts the \
                     partitions in a GPT, up to {MAX_GPT})",
                    a.number
                ));
            }
            if let PartType::Guid(_) = a.ty {
                return Err(format!(
                    "partition {}: type {} is a GPT type; in an MBR a type is 0xNN \
                     (--appended-part-as-gpt puts the partitions in a GPT)",
                    a.number, a.ty
                ));
            }
        }
    }
    if let Some(n) = efi {
        if !appended.iter().any(|a| a.number == n) {
            return Err(format!(
                "--efi-boot-partition {n}: no partition {n} is appended (--append-partition \
                 {n} 0xef FILE)"
            ));
        }
    }
    Ok(())
}

/// An appended partition where the layout put it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    pub number: u8,
    pub ty: PartType,
    pub path: PathBuf,
    /// Its file's size in bytes, when planned (the file must still have it when copied).
    pub size: u64,
    /// Its first 2048-byte sector in the image.
    pub start: u64,
}

impl Placed {
    /// Its first 512-byte sector.
    pub fn first(&self) -> u64 {
        self.start * (SECTOR_SIZE / 512)
    }

    /// Its 512-byte sectors (the last one filled up with zeros).
    pub fn sectors(&self) -> u64 {
        self.size.div_ceil(512).max(1)
    }

    /// The 2048-byte sectors it takes in the image.
    pub fn image_sectors(&self) -> u64 {
        self.size.div_ceil(SECTOR_SIZE).max(1)
    }
}

/// Places `appended` after `end` (the image so far, in 2048-byte sectors), in the order of
/// their numbers, each from a multiple of `align` sectors. Reads each file's size.
pub fn place(appended: &[Append], mut end: u64, align: u64) -> Result<Vec<Placed>, Error> {
    let mut sorted: Vec<&Append> = appended.iter().collect();
    sorted.sort_by_key(|a| a.number);
    let mut out = Vec::with_capacity(sorted.len());
    for a in sorted {
        let what = "appended partition";
        let md = std::fs::metadata(&a.path).map_err(|e| Error::Boot {
            what,
            path: a.path.clone(),
            why: format!("reading it: {e}"),
        })?;
        if !md.is_file() {
            return Err(Error::Boot {
                what,
                path: a.path.clone(),
                why: "not a regular file".into(),
            });
        }
        if md.len() == 0 {
            return Err(Error::Boot {
                what,
                path: a.path.clone(),
                why: "empty: a partition needs at least one sector".into(),
            });
        }
        let start = end.next_multiple_of(align);
        let p = Placed {
            number: a.number,
            ty: a.ty,
            path: a.path.clone(),
            size: md.len(),
            start,
        };
        end = start + p.image_sectors();
        out.push(p);
    }
    Ok(out)
}

/// A CHS address in the geometry `(heads, sectors a track)` as a partition entry holds it
/// (head, sector with the cylinder's bits 8-9, the cylinder's bits 0-7); past cylinder 1023
/// the largest address.
pub fn chs(sector: u64, (heads, per_track): (u64, u64)) -> [u8; 3] {
    let cyl = sector / (heads * per_track);
    if cyl >= 1024 {
        return chs_bytes(1023, heads - 1, per_track);
    }
    let rest = sector % (heads * per_track);
    chs_bytes(cyl, rest / per_track, rest % per_track + 1)
}

/// A CHS address as a partition entry holds it: head, sector with the cylinder's bits 8-9,
/// the cylinder's bits 0-7.
pub fn chs_bytes(cyl: u64, head: u64, sector: u64) -> [u8; 3] {
    [
        head as u8,
        (sector as u8 & 0x3F) | ((cyl >> 2) as u8 & 0xC0),
        cyl as u8,
    ]
}

/// An MBR partition entry: `status` (0x80 active), `ty`, from 512-byte sector `first`,
/// `sectors` long, its CHS addresses in `geometry`.
pub fn mbr_entry(status: u8, ty: u8, first: u64, sectors: u64, geometry: (u64, u64)) -> [u8; 16] {
    let mut e = [0u8; 16];
    e[0] = status;
    e[1..4].copy_from_slice(&chs(first, geometry));
    e[4] = ty;
    e[5..8].copy_from_slice(&chs((first + sectors).saturating_sub(1), geometry));
    e[8..12].copy_from_slice(&u32::try_from(first).unwrap_or(u32::MAX).to_le_bytes());
    e[12..16].copy_from_slice(&u32::try_from(sectors).unwrap_or(u32::MAX).to_le_bytes());
    e
}

/// Writes the appended partitions' MBR entries into `mbr` (512 bytes), each in its number's
/// slot, as xorriso writes them.
pub fn mbr_entries(mbr: &mut [u8], parts: &[Placed], geometry: (u64, u64)) {
    for p in parts {
        let at = 446 + 16 * (usize::from(p.number) - 1);
        let e = mbr_entry(0, p.ty.mbr().unwrap_or(0), p.first(), p.sectors(), geometry);
        if let Some(slot) = mbr.get_mut(at..at + 16) {
            slot.copy_from_slice(&e);
        }
    }
}

/// The MBR of an image with appended partitions and no MBR boot code, as xorriso writes it:
/// partition 1 (type 0x83; active with `bootable`) over the volume of `volume` 2048-byte
/// sectors from sector 0, and the appended ones.
pub fn plain_mbr(volume: u64, parts: &[Placed], bootable: bool, geometry: (u64, u64)) -> Vec<u8> {
    let mut v = vec![0u8; 512];
    let status = if bootable { 0x80 } else { 0 };
    let e = mbr_entry(status, 0x83, 0, volume * (SECTOR_SIZE / 512), geometry);
    v[446..462].copy_from_slice(&e);
    mbr_entries(&mut v, parts, geometry);
    v[510] = 0x55;
    v[511] = 0xAA;
    v
}

/// The protective MBR before a GPT (one partition of type 0xEE from the second 512-byte sector
/// over the image of `image` 2048-byte sectors, as far as 32 bits reach); with `bootable`, a
/// second entry, active, of type 0 over the first sector, for BIOSes that boot only a disk
/// with an active partition (xorriso's `--mbr-force-bootable`, as Ubuntu's images have it).
/// The boot code is left as it is in `mbr`.
pub fn protective_mbr(mbr: &mut [u8], image: u64, bootable: bool, geometry: (u64, u64)) {
    let sectors = (image * (SECTOR_SIZE / 512))
        .saturating_sub(1)
        .min(0xFFFF_FFFF);
    let mut table = [0u8; 64];
    table[..16].copy_from_slice(&mbr_entry(0, 0xEE, 1, sectors, geometry));
    if bootable {
        table[16..32].copy_from_slice(&mbr_entry(0x80, 0, 0, 1, geometry));
    }
    if let Some(t) = mbr.get_mut(446..510) {
        t.copy_from_slice(&table);
    }
    if let Some(sig) = mbr.get_mut(510..512) {
        sig.copy_from_slice(&[0x55, 0xAA]);
    }
}

/// A GPT partition entry's fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GptPart {
    /// Its slot, from 0.
    pub index: usize,
    pub ty: [u8; 16],
    /// First and last 512-byte sector.
    pub first: u64,
    pub last: u64,
    pub attributes: u64,
    pub name: String,
}

/// The attributes xorriso gives the partitions it makes itself: required by the platform
/// (bit 0), read-only (bit 60).
pub const XORRISO_ATTRIBUTES: u64 = 1 << 60 | 1;

/// The GPT partitions of an image whose appended partitions are in a GPT, as xorriso writes
/// them (`-appended_part_as_gpt`): Basic Data over the volume of `volume` 2048-byte sectors to
/// its end, from the first usable sector (64) as "Gap0", or with a partition offset (`offset`
/// 2048-byte sectors, 16 or more) from there as "ISO9660"; and each appended one as
/// "AppendedN", in slot N-1.
pub fn gpt_parts(volume: u64, offset: u64, parts: &[Placed]) -> Vec<GptPart> {
    let (first, name) = match offset {
        0 => (64, "Gap0"),
        o => (o * (SECTOR_SIZE / 512), "ISO9660"),
    };
    let mut v = vec![GptPart {
        index: 0,
        ty: BASIC_DATA,
        first,
        last: (volume * (SECTOR_SIZE / 512)).max(first + 1) - 1,
        attributes: XORRISO_ATTRIBUTES,
        name: name.into(),
    }];
    v.extend(parts.iter().map(|p| GptPart {
        index: usize::from(p.number) - 1,
        ty: p.ty.guid(),
        first: p.first(),
        last: p.first() + p.sectors() - 1,
        attributes: 0,
        name: format!("Appended{}", p.number),
    }));
    v
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn types_are_read_as_bytes_or_guids_and_shown_as_given() {
        assert_eq!(PartType::parse("0xef"), Ok(PartType::Mbr(0xEF)));
        assert_eq!(PartType::parse("0x0C"), Ok(PartType::Mbr(0x0C)));
        let efi = PartType::Guid(EFI_SYSTEM);
        assert_eq!(
            PartType::parse("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
            Ok(efi)
        );
        assert_eq!(
            PartType::parse("c12a7328-f81f-11d2-ba4b-00a0c93ec93b"),
            Ok(efi)
        );
        // xorriso's form, as Ubuntu's build passes it
        assert_eq!(PartType::parse("28732ac11ff8d211ba4b00a0c93ec93b"), Ok(efi));
        assert_eq!(
            PartType::parse("a2a0d0ebe5b9334487c068b6b72699c7"),
            Ok(PartType::Guid(BASIC_DATA))
        );
        assert_eq!(efi.to_string(), "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
        assert_eq!(PartType::Mbr(0xEF).to_string(), "0xef");
        for bad in [
            "ef",
            "0x1ff",
            "0x",
            "efi",
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93",
            "",
        ] {
            let e = PartType::parse(bad).unwrap_err();
            assert!(e.contains("not a partition type"), "{bad}: {e}");
        }
        assert_eq!(PartType::Mbr(0xEF).guid(), EFI_SYSTEM);
        assert_eq!(PartType::Mbr(0x83).guid(), BASIC_DATA);
    }

    fn append(n: u8, ty: &str) -> Append {
        Append::parse(&[n.to_string(), ty.into(), "f".into()]).unwrap()
    }

    #[test]
    fn numbers_and_types_must_fit_the_table() {
        assert!(Append::parse(&["1".into(), "0xef".into(), "f".into()])
            .unwrap_err()
            .contains("1 is the ISO 9660 volume's"));
        assert!(Append::parse(&["9".into(), "0xef".into(), "f".into()]).is_err());
        let guid = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
        assert!(check(&[append(2, "0xef")], false, Some(2)).is_ok());
        assert!(check(&[append(5, "0xef")], false, None)
            .unwrap_err()
            .contains("an MBR has 4 entries"));
        assert!(check(&[append(5, guid)], true, None).is_ok());
        assert!(check(&[append(2, guid)], false, None)
            .unwrap_err()
            .contains("is a GPT type"));
        assert!(check(&[append(2, "0xef"), append(2, "0x83")], true, None)
            .unwrap_err()
            .contains("appended twice"));
        assert!(check(&[append(2, "0xef")], false, Some(3))
            .unwrap_err()
            .contains("no partition 3 is appended"));
    }

    /// The entries xorriso 1.5.4 wrote: `-append_partition 2 0xef` (a 4 MiB file) after a
    /// volume of 40 sectors, without boot code, and the protective MBR of the same with
    /// `-appended_part_as_gpt` (an image of 9092 512-byte sectors) and with
    /// `--mbr-force-bootable`.
    #[test]
    fn mbr_entries_are_xorriso_s() {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let part = Placed {
            number: 2,
            ty: PartType::Mbr(0xEF),
            path: "f".into(),
            size: 4 << 20,
            start: 40,
        };
        let mbr = plain_mbr(40, &[part], false, (64, 32));
        assert_eq!(hex(&mbr[446..462]), "000001008304200000000000a0000000");
        assert_eq!(hex(&mbr[462..478]), "00050100ef042004a000000000200000");
        let mut mbr = vec![0u8; 512];
        protective_mbr(&mut mbr, 9092 / 4, false, (64, 32));
        assert_eq!(hex(&mbr[446..462]), "00000200ee1c04040100000083230000");
        protective_mbr(&mut mbr, 9192 / 4, true, (64, 32));
        assert_eq!(hex(&mbr[462..478]), "80000100000001000000000001000000");
        assert_eq!(&mbr[510..], &[0x55, 0xAA]);
    }
}
