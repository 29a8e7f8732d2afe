//! What makes an image boot, read back: the El Torito boot catalog's entries (El Torito 1.0,
//! 2.1-2.5), which file of the image each boot image is, what was written into a BIOS boot
//! image's copy (a boot info table, GRUB's core image sector), and the MBR and GPT an image
//! carries to boot from a disk. `isomgr ls --boot` shows it, with the `mkiso` options that
//! make an image boot the same way: what remastering a served image needs to know.

use super::error::Result;
use super::ondisk::{le32, le64, SECTOR_SIZE};
use super::read::{Image, Kind};
use super::source::ReadAt;
use crate::iso9660::write::partition::PartType;
use std::collections::HashMap;

/// One boot entry of the catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootEntry {
    /// 0 x86 (BIOS), 0xEF UEFI, or another platform id.
    pub platform: u8,
    pub bootable: bool,
    /// 0 no emulation, 1-3 a 1.2/1.44/2.88 MB floppy, 4 a hard disk.
    pub media: u8,
    pub system_type: u8,
    pub load_segment: u16,
    /// 512-byte sectors loaded (0: the whole image, as xorriso records a large EFI image).
    pub sectors: u16,
    /// The image's first sector.
    pub lba: u32,
}

/// The entries of a boot catalog: the default entry (of the validation entry's platform),
/// then each section's, skipping extension records; nothing for a catalog whose validation
/// entry does not check out.
pub fn entries(catalog: &[u8]) -> Vec<BootEntry> {
    let mut out = Vec::new();
    if !super::descriptor::validation_entry_ok(catalog) {
        return out;
    }
    let validation = &catalog[..32];
    let entry = |r: &[u8], platform: u8| BootEntry {
        platform,
        bootable: r[0] == 0x88,
        media: r[1] & 0x0F,
        load_segment: u16::from_le_bytes([r[2], r[3]]),
        system_type: r[4],
        sectors: u16::from_le_bytes([r[6], r[7]]),
        lba: u32::from_le_bytes([r[8], r[9], r[10], r[11]]),
    };
    let mut records = catalog.chunks_exact(32).skip(1);
    match records.next() {
        Some(r) if r[0] == 0x88 || r[0] == 0 && r[1..].iter().any(|&b| b != 0) => {
            out.push(entry(r, validation[1]));
        }
        _ => return out,
    }
    // section headers (0x90, the last 0x91), each followed by its entries and their
    // extension records (0x44)
    while let Some(h) = records.next() {
        if h[0] != 0x90 && h[0] != 0x91 {
            break;
        }
        let mut left = u16::from_le_bytes([h[2], h[3]]);
        while left > 0 {
            let Some(r) = records.next() else { break };
            if r[0] == 0x44 {
                continue;
            }
            if r.iter().all(|&b| b == 0) {
                break; // the catalog's end: the header claimed more than there are
            }
            out.push(entry(r, h[1]));
            left -= 1;
        }
        if h[0] == 0x91 {
            break;
        }
    }
    out
}

/// The MBR an image carries in its first sector, by what it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mbr {
    /// isolinux's (isohdpfx.bin, as syslinux's isohybrid writes it): it holds the BIOS boot
    /// image's 512-byte sector at byte 432.
    Isohybrid,
    /// GRUB's (boot_hybrid.img, as grub-mkrescue has xorriso write it): it holds the core
    /// image's 512-byte sector (the boot image's × 4 + 4) at 0x1B0.
    Grub2,
    /// Some other MBR.
    Other,
}

/// One boot image: its entry, its file in the image, what its copy holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootImage {
    pub entry: BootEntry,
    /// Its path in the image; `None` when no file starts at its sector (hidden, or in an
    /// appended partition).
    pub path: Option<String>,
    /// Its copy has a boot info table naming its own sector.
    pub info_table: bool,
    /// Its copy has GRUB's core image sector at byte 2548 (xorriso's `--grub2-boot-info`).
    pub grub2_boot_info: bool,
}

/// What makes an image boot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Boot {
    /// The catalog's sector and path in the image; `None` without El Torito.
    pub catalog: Option<(u32, Option<String>)>,
    pub images: Vec<BootImage>,
    pub mbr: Option<Mbr>,
    /// A GPT header follows the MBR.
    pub gpt: bool,
    /// The MBR is a protective one (a partition of type 0xEE): the partitions are the GPT's.
    pub protective: bool,
    /// The partitions: the GPT's behind a protective MBR, else the MBR's.
    pub partitions: Vec<Partition>,
    /// The MBR holds an active entry of type 0 over its own sector alone (xorriso's
    /// `--mbr-force-bootable` beside a protective MBR).
    pub force_bootable_entry: bool,
    /// The MBR's bytes before its partition table (its boot code), when it has the signature.
    pub mbr_code: Vec<u8>,
}

/// A partition of the image's partition table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// Its number: its slot in the table, from 1.
    pub number: u8,
    pub ty: PartType,
    /// First 512-byte sector, and how many.
    pub first: u64,
    pub sectors: u64,
    /// Marked active (MBR status 0x80).
    pub active: bool,
    /// Its GPT name (empty in an MBR).
    pub name: String,
    /// The file of the image that starts where it does, if any.
    pub file: Option<String>,
    /// It holds an ISO 9660 volume of its own (descriptors 16 sectors in): the partition a
    /// partition offset makes (xorriso's `-partition_offset`).
    pub holds_volume: bool,
}

impl Partition {
    /// Whether it is a partition appended after the volume (xorriso's `-append_partition`):
    /// past the volume's descriptors, no file of the volume where it starts, no volume of its
    /// own (the volume's partition, with a partition offset), and not one of the partitions
    /// xorriso makes to fill a gap ("Gap0" over the volume, "Gap1" over its padding after the
    /// partition).
    pub fn appended(&self) -> bool {
        self.first >= 64
            && self.first % 4 == 0
            && self.file.is_none()
            && !self.holds_volume
            && !self.name.starts_with("Gap")
    }
}

/// GPT entries read at most (xorriso writes 248, most tools 128).
const MAX_GPT_ENTRIES: u64 = 1024;

/// The partitions of the MBR in `head` (its first 512 bytes or more).
fn mbr_partitions(head: &[u8]) -> Vec<Partition> {
    let Some(table) = head.get(446..510) else {
        return Vec::new();
    };
    let le32 = |b: &[u8], at: usize| le32(b, at).unwrap_or(0);
    table
        .chunks_exact(16)
        .enumerate()
        .filter(|(_, e)| e.get(4).is_some_and(|&t| t != 0) || le32(e, 12) != 0)
        .map(|(i, e)| Partition {
            number: i as u8 + 1,
            ty: PartType::Mbr(e.get(4).copied().unwrap_or(0)),
            first: u64::from(le32(e, 8)),
            sectors: u64::from(le32(e, 12)),
            active: e.first() == Some(&0x80),
            name: String::new(),
            file: None,
            holds_volume: false,
        })
        .collect()
}

/// The partitions of the GPT whose header is `header` (512 bytes), its entries read by `read`.
fn gpt_partitions(header: &[u8], read: impl Fn(u64, usize) -> Vec<u8>) -> Vec<Partition> {
    let le32 = |at: usize| u64::from(le32(header, at).unwrap_or(0));
    let (entries_at, count, size) = (le64(header, 72).unwrap_or(0), le32(80), le32(84));
    if !(128..=4096).contains(&size) || count == 0 {
        return Vec::new();
    }
    let count = count.min(MAX_GPT_ENTRIES);
    let Some(at) = entries_at.checked_mul(512) else {
        return Vec::new();
    };
    let table = read(at, (count * size) as usize);
    table
        .chunks_exact(size as usize)
        .enumerate()
        .filter_map(|(i, e)| {
            let ty: [u8; 16] = e.get(..16)?.try_into().ok()?;
            if ty == [0; 16] {
                return None;
            }
            let (first, last) = (le64(e, 32).unwrap_or(0), le64(e, 40).unwrap_or(0));
            let name: Vec<u16> = e
                .get(56..128)?
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&u| u != 0)
                .collect();
            Some(Partition {
                number: u8::try_from(i + 1).unwrap_or(u8::MAX),
                ty: PartType::Guid(ty),
                first,
                sectors: last.saturating_add(1).saturating_sub(first),
                active: false,
                name: String::from_utf16_lossy(&name),
                file: None,
                holds_volume: false,
            })
        })
        .collect()
}

/// Reads what makes `image` boot (see [`Boot`]); `catalog` is the catalog's sector from the
/// boot record, if there is one.
pub fn read<R: ReadAt>(image: &Image<R>, catalog: Option<u32>) -> Result<Boot> {
    let src = image.source();
    let read = |at: u64, len: usize| -> Vec<u8> {
        let mut b = vec![0u8; len];
        let n = src.read_at(&mut b, at).unwrap_or(0);
        b.truncate(n);
        b
    };
    let mut boot = Boot::default();
    let head = read(0, 1024);
    if head.len() == 1024 && head.get(510..512) == Some(&[0x55, 0xAA][..]) {
        boot.gpt = head.get(512..520) == Some(&b"EFI PART"[..]);
        boot.mbr_code = head.get(..446).unwrap_or_default().to_vec();
        let mbr = mbr_partitions(&head);
        boot.protective = mbr.iter().any(|p| p.ty == PartType::Mbr(0xEE));
        boot.force_bootable_entry = boot.protective
            && mbr
                .iter()
                .any(|p| p.active && p.ty == PartType::Mbr(0) && p.first == 0 && p.sectors == 1);
        boot.partitions = match (boot.protective, boot.gpt, head.get(512..1024)) {
            (true, true, Some(header)) => gpt_partitions(header, read),
            (true, _, _) => Vec::new(),
            (false, _, _) => mbr,
        };
    }
    if catalog.is_none() && boot.partitions.is_empty() {
        boot.mbr = mbr_kind(&head, None);
        return Ok(boot);
    }
    // which file starts at which sector (first extent), for the catalog, the images and the
    // partitions; empty files may all point at one sector, anywhere
    let mut starts: HashMap<u64, String> = HashMap::new();
    image.walk(&image.root(), "/", |path, e| {
        if e.kind == Kind::File && e.size > 0 {
            if let Some(s) = e.start_sector() {
                starts.entry(s).or_insert_with(|| path.to_owned());
            }
        }
        Ok(())
    })?;
    for p in &mut boot.partitions {
        if p.first % 4 == 0 && p.first > 0 {
            p.file = starts.get(&(p.first / 4)).cloned();
            let pvd =
                (p.first / 4 + super::ondisk::FIRST_DESCRIPTOR_SECTOR).checked_mul(SECTOR_SIZE);
            p.holds_volume = pvd.is_some_and(|at| read(at, 6) == b"\x01CD001");
        }
    }
    let Some(cat_lba) = catalog else {
        boot.mbr = mbr_kind(&head, None);
        return Ok(boot);
    };
    boot.catalog = Some((cat_lba, starts.get(&u64::from(cat_lba)).cloned()));
    let cat = read(u64::from(cat_lba) * SECTOR_SIZE, SECTOR_SIZE as usize);
    for entry in entries(&cat) {
        let at = u64::from(entry.lba) * SECTOR_SIZE;
        let copy = read(at, 2556);
        let le32 = |o: usize| le32(&copy, o);
        let info_table = entry.media == 0 && le32(12) == Some(entry.lba) && le32(8) != Some(0);
        let grub2_boot_info = entry.media == 0
            && copy.get(2548..2556) == Some(&(u64::from(entry.lba) * 4 + 5).to_le_bytes()[..]);
        boot.images.push(BootImage {
            path: starts.get(&u64::from(entry.lba)).cloned(),
            entry,
            info_table,
            grub2_boot_info,
        });
    }
    let bios = boot
        .images
        .iter()
        .find(|i| i.entry.platform == 0)
        .map(|i| i.entry.lba);
    boot.mbr = mbr_kind(&head, bios);
    Ok(boot)
}

/// The MBR in `head` (the image's first bytes), told apart by where it points: at the BIOS
/// boot image `bios` (its first sector), if any.
fn mbr_kind(head: &[u8], bios: Option<u32>) -> Option<Mbr> {
    if head.len() < 512 || head[510..512] != [0x55, 0xAA] {
        return None;
    }
    if head[..440].iter().all(|&b| b == 0) {
        return None;
    }
    let Some(lba) = bios.map(u64::from) else {
        return Some(Mbr::Other);
    };
    Some(if le32(head, 432).map(u64::from) == Some(lba * 4) {
        Mbr::Isohybrid
    } else if le64(head, 0x1B0) == Some(lba * 4 + 4) {
        Mbr::Grub2
    } else {
        Mbr::Other
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A catalog as xorriso writes one for BIOS and UEFI: validation entry (x86), default
    /// entry, a final section header for 0xEF with one entry and its extension record.
    #[test]
    fn entries_of_a_catalog_with_a_section() {
        let mut c = vec![0u8; 2048];
        c[0] = 1;
        c[30] = 0x55;
        c[31] = 0xAA;
        let sum = c[..32].chunks_exact(2).fold(0u16, |s, w| {
            s.wrapping_add(u16::from_le_bytes([w[0], w[1]]))
        });
        c[28..30].copy_from_slice(&0u16.wrapping_sub(sum).to_le_bytes());
        c[32..44].copy_from_slice(&[0x88, 0, 0, 0, 0, 0, 4, 0, 30, 0, 0, 0]);
        c[64..68].copy_from_slice(&[0x91, 0xEF, 1, 0]);
        c[96..108].copy_from_slice(&[0x88, 0, 0, 0, 0, 0, 0, 0, 40, 0, 0, 0]);
        c[128] = 0x44;
        let e = entries(&c);
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!((e[0].platform, e[0].sectors, e[0].lba), (0, 4, 30));
        assert_eq!((e[1].platform, e[1].sectors, e[1].lba), (0xEF, 0, 40));
        c[28] ^= 1;
        assert!(entries(&c).is_empty(), "a bad checksum");
        assert!(entries(&[]).is_empty());
        // a header claiming more entries than the sector holds
        c[28] ^= 1;
        c[66] = 0xFF;
        assert_eq!(entries(&c).len(), 2);
    }

    /// The GPT's partitions: slots as numbers, names, sizes; nothing from a header whose entry
    /// size or place makes no sense, and no more entries than the bytes read hold.
    #[test]
    fn gpt_partitions_are_read_and_bad_headers_give_none() {
        let mut header = vec![0u8; 512];
        header[..8].copy_from_slice(b"EFI PART");
        header[72..80].copy_from_slice(&2u64.to_le_bytes());
        header[80..84].copy_from_slice(&4u32.to_le_bytes());
        header[84..88].copy_from_slice(&128u32.to_le_bytes());
        let mut entries = vec![0u8; 4 * 128];
        let e = &mut entries[128..256];
        e[..16].copy_from_slice(&crate::iso9660::write::partition::EFI_SYSTEM);
        e[32..40].copy_from_slice(&740u64.to_le_bytes());
        e[40..48].copy_from_slice(&8931u64.to_le_bytes());
        for (c, u) in e[56..].chunks_exact_mut(2).zip("Appended2".encode_utf16()) {
            c.copy_from_slice(&u.to_le_bytes());
        }
        let read = |at: u64, len: usize| -> Vec<u8> {
            assert_eq!(at, 1024);
            entries[..len.min(entries.len())].to_vec()
        };
        let parts = gpt_partitions(&header, read);
        assert_eq!(parts.len(), 1, "{parts:?}");
        let p = &parts[0];
        assert_eq!((p.number, p.first, p.sectors), (2, 740, 8192));
        assert_eq!(p.name, "Appended2");
        assert_eq!(p.ty.to_string(), "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
        assert!(p.appended());
        // an entry size of 0, a table past the end of what 64 bits count, a count of 2^32-1
        let none = |_: u64, _: usize| Vec::new();
        let mut bad = header.clone();
        bad[84..88].copy_from_slice(&0u32.to_le_bytes());
        assert!(gpt_partitions(&bad, read).is_empty());
        let mut bad = header.clone();
        bad[72..80].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(gpt_partitions(&bad, none).is_empty());
        let mut bad = header;
        bad[80..84].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(gpt_partitions(&bad, read).len(), 1);
    }

    /// The MBR's entries, empty ones left out.
    #[test]
    fn mbr_partitions_are_read_by_slot() {
        let mut head = vec![0u8; 512];
        head[446] = 0x80;
        head[450] = 0xCD;
        head[454..458].copy_from_slice(&1u32.to_le_bytes());
        head[458..462].copy_from_slice(&739u32.to_le_bytes());
        head[478] = 0xEF;
        head[486..490].copy_from_slice(&740u32.to_le_bytes());
        head[490..494].copy_from_slice(&8192u32.to_le_bytes());
        let parts = mbr_partitions(&head);
        assert_eq!(parts.len(), 2, "{parts:?}");
        assert_eq!((parts[0].number, parts[0].active), (1, true));
        assert_eq!(
            (parts[1].number, parts[1].first, parts[1].sectors),
            (3, 740, 8192)
        );
        assert!(!parts[0].appended() && parts[1].appended());
        let mut own = parts[1].clone();
        own.holds_volume = true;
        assert!(!own.appended(), "the volume's own partition");
        assert!(mbr_partitions(&head[..400]).is_empty());
    }
}
