//! What makes an image boot, read back: the El Torito boot catalog's entries (El Torito 1.0,
//! 2.1-2.5), which file of the image each boot image is, what was written into a BIOS boot
//! image's copy (a boot info table, GRUB's core image sector), and the MBR and GPT an image
//! carries to boot from a disk. `isomgr ls --boot` shows it, with the `mkiso` options that
//! make an image boot the same way: what remastering a served image needs to know.

use super::error::Result;
use super::ondisk::SECTOR_SIZE;
use super::read::{Image, Kind};
use super::source::ReadAt;
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
    if head.len() == 1024 && head[510..512] == [0x55, 0xAA] {
        boot.gpt = &head[512..520] == b"EFI PART";
    }
    let Some(cat_lba) = catalog else {
        boot.mbr = mbr_kind(&head, None);
        return Ok(boot);
    };
    // which file starts at which sector (first extent), for the catalog and the images;
    // empty files may all point at one sector, anywhere
    let mut starts: HashMap<u64, String> = HashMap::new();
    image.walk(&image.root(), "/", |path, e| {
        if e.kind == Kind::File && e.size > 0 {
            if let Some(s) = e.start_sector() {
                starts.entry(s).or_insert_with(|| path.to_owned());
            }
        }
        Ok(())
    })?;
    boot.catalog = Some((cat_lba, starts.get(&u64::from(cat_lba)).cloned()));
    let cat = read(u64::from(cat_lba) * SECTOR_SIZE, SECTOR_SIZE as usize);
    for entry in entries(&cat) {
        let at = u64::from(entry.lba) * SECTOR_SIZE;
        let copy = read(at, 2556);
        let le32 = |o: usize| {
            copy.get(o..o + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
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
    let u32_at = |o: usize| {
        u64::from(u32::from_le_bytes([
            head[o],
            head[o + 1],
            head[o + 2],
            head[o + 3],
        ]))
    };
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&head[o..o + 8]);
        u64::from_le_bytes(b)
    };
    Some(if u32_at(432) == lba * 4 {
        Mbr::Isohybrid
    } else if u64_at(0x1B0) == lba * 4 + 4 {
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
}
