//! Images that also boot written to a USB stick or disk: the MBR in the first sector, with
//! isolinux's boot code ([`isohybrid_mbr`], as syslinux's isohybrid writes it, and the GPT
//! xorriso's `-isohybrid-gpt-basdat` writes beside it, [`gpt_tables`]) or GRUB's
//! ([`grub2_mbr`], as grub-mkrescue has xorriso write it). Each points at the El Torito BIOS
//! boot image ([`super::boot`]) that then runs from the disk.

use super::boot::{
    bios_image_head, is_grub2_image, is_hybrid_isolinux, BIOS_HEAD, GRUB2_BOOT_INFO, MBR_PARTITIONS,
};
use super::partition::{
    chs_bytes, gpt_parts, mbr_entries, mbr_entry, plain_mbr, GptPart, BASIC_DATA,
    XORRISO_ATTRIBUTES,
};
use super::tree::Tree;
use super::Error;
use crate::iso9660::ondisk::SECTOR_SIZE;
use std::path::Path;

/// Bytes of MBR boot code before the isohybrid fields (the rest of an MBR file is ignored).
pub const MBR_CODE: usize = 432;
/// Where GRUB's hybrid MBR takes the 512-byte sector of the core image (64-bit LE).
const GRUB2_MBR_CORE: usize = 0x1B0;
/// The type of the image's partition in GRUB's hybrid MBR (xorriso's protective label).
const GRUB2_PARTITION_TYPE: u8 = 0xCD;
/// isohybrid's disk geometry: 64 heads, 32 sectors a track, so a cylinder is 1 MiB; the image
/// is padded to whole cylinders, as isohybrid pads it.
const HEADS: u64 = 64;
const SECTORS_PER_TRACK: u64 = 32;
/// 2048-byte sectors in a cylinder.
pub const CYLINDER_SECTORS: u64 = HEADS * SECTORS_PER_TRACK * 512 / SECTOR_SIZE;
/// The partition type isohybrid gives the image's partition by default.
const PARTITION_TYPE: u8 = 0x17;
/// With a UEFI boot image, the image's partition is of type 0 (unused: UEFI firmware skips it
/// rather than finding it overlaps the next) and a second partition of the EFI system
/// partition's type covers the EFI image, as `isohybrid --uefi` writes them.
const EFI_PARTITION_TYPE: u8 = 0xEF;
/// The CHS address isohybrid gives the EFI partition's both ends (beyond what CHS reaches).
const CHS_BEYOND: [u8; 3] = [0xFE, 0xFF, 0xFF];

/// Which MBR an image gets: of its boot code file, the bytes before the fields written here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MbrKind {
    /// isolinux's isohdpfx.bin: its first 432 bytes.
    Isohybrid,
    /// GRUB's boot_hybrid.img: all before the partition table.
    Grub2,
}

impl MbrKind {
    /// What to call it, the file it comes from, how many of its bytes are kept.
    fn describe(self) -> (&'static str, &'static str, usize) {
        match self {
            MbrKind::Isohybrid => ("isohybrid MBR", "isolinux's isohdpfx.bin", MBR_CODE),
            MbrKind::Grub2 => ("GRUB hybrid MBR", "GRUB's boot_hybrid.img", MBR_PARTITIONS),
        }
    }
}

/// Reads the MBR boot code at `path` (432 to 512 bytes; as much of it is kept as `kind`
/// takes).
pub fn read_mbr_code(path: &Path, kind: MbrKind) -> Result<Vec<u8>, Error> {
    let (what, file, keep) = kind.describe();
    let data = std::fs::read(path).map_err(|e| Error::Boot {
        what,
        path: path.to_path_buf(),
        why: format!("reading it: {e}"),
    })?;
    if !(MBR_CODE..=512).contains(&data.len()) {
        return Err(Error::Boot {
            what,
            path: path.to_path_buf(),
            why: format!("{} bytes; MBR boot code ({file}) is 432 to 512", data.len()),
        });
    }
    Ok(data[..keep.min(data.len())].to_vec())
}

/// Writes what makes the image of `plan` boot from a disk into its first sectors: the hybrid
/// MBR of `boot` (isohybrid's, boot code `isohybrid_code`, once the BIOS boot image is found to
/// be an isolinux.bin it can start; or GRUB's, boot code `grub2_code`, once it is found to be
/// GRUB's El Torito image, also checked for `--grub2-boot-info` alone), the appended
/// partitions in the MBR or in a GPT behind a protective MBR, and the GPT of
/// `--isohybrid-gpt-basdat`. The disk signature and GUIDs are the image's own: the same for
/// the same label and time.
pub(super) fn put_system_area(
    plan: &mut super::layout::Plan,
    boot: &super::boot::Boot,
    (isohybrid_code, grub2_code): (Option<&[u8]>, Option<&[u8]>),
    tree: &Tree,
    (label, now): (&str, i64),
) -> Result<(), Error> {
    let volume = u64::from(plan.volume_sectors);
    let image = u64::from(plan.total_sectors);
    // the EFI boot image inside the volume, which isohybrid gives its own entry
    let efi_in_volume = plan.efi_boot.filter(|_| boot.efi_partition.is_none());
    let mut mbr = None;
    let mut geometry = xorriso_geometry(image * (SECTOR_SIZE / 512));
    if let Some(code) = isohybrid_code {
        let Some((head, path, lba)) = bios_image_head(plan, tree, 0x44)? else {
            return Ok(());
        };
        check_hybrid_capable(&head, &path)?;
        let id = label
            .bytes()
            .chain(now.to_le_bytes())
            .fold(0x811C_9DC5u32, |h, b| {
                (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
            });
        let uefi = plan.efi_boot.is_some();
        mbr = Some(isohybrid_mbr(code, lba, id, volume, efi_in_volume, uefi));
        geometry = (HEADS, SECTORS_PER_TRACK);
    }
    if boot.grub2_boot_info {
        let Some((head, path, lba)) = bios_image_head(plan, tree, BIOS_HEAD)? else {
            return Ok(());
        };
        check_grub2_image(&head, path)?;
        if let Some(code) = grub2_code {
            mbr = Some(grub2_mbr(code, lba, volume));
        }
    }
    let guid = |n: u8| guid_of(label, now, n);
    let mut gpt = None;
    if boot.appended_gpt {
        let mut m = mbr.unwrap_or_else(|| vec![0u8; 512]);
        super::partition::protective_mbr(&mut m, image, boot.mbr_force_bootable, geometry);
        mbr = Some(m);
        gpt = Some(gpt_tables(
            image,
            &gpt_parts(volume, u64::from(boot.partition_offset), &plan.appended),
            guid,
        ));
    } else if !plan.appended.is_empty() {
        mbr = Some(match mbr {
            Some(mut m) => {
                mbr_entries(&mut m, &plan.appended, geometry);
                m
            }
            None => plain_mbr(volume, &plan.appended, boot.mbr_force_bootable, geometry),
        });
    }
    if boot.gpt && isohybrid_code.is_some() {
        let parts = basdat_parts(image, volume, plan.efi_boot);
        gpt = Some(gpt_tables(image, &parts, guid));
    }
    if let Some(m) = mbr {
        if let Some(area) = plan.metadata.get_mut(..m.len()) {
            area.copy_from_slice(&m);
        }
    }
    if let Some((primary, backup)) = gpt {
        if let Some(area) = plan.metadata.get_mut(512..512 + primary.len()) {
            area.copy_from_slice(&primary);
        }
        plan.tail = backup;
    }
    Ok(())
}

/// A GUID made from the image's label and time and `n` (0 for the disk, 1 on for its
/// partitions), in GUID byte order, marked as random (version 4, RFC 4122 variant): the same
/// for the same label and time.
fn guid_of(label: &str, now: i64, n: u8) -> [u8; 16] {
    let hash = |seed: u64| {
        label
            .bytes()
            .chain(now.to_le_bytes())
            .chain([n])
            .fold(seed, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
            })
    };
    let mut g = [0u8; 16];
    g[..8].copy_from_slice(&hash(0xCBF2_9CE4_8422_2325).to_le_bytes());
    g[8..].copy_from_slice(&hash(0x6C62_272E_07BB_0142).to_le_bytes());
    g[7] = (g[7] & 0x0F) | 0x40;
    g[8] = (g[8] & 0x3F) | 0x80;
    g
}

/// GPT entries xorriso writes: 248 of 128 bytes, 62 sectors from the third, so that the first
/// usable sector is the 64th, past the ISO 9660 system area.
const GPT_ENTRIES: u32 = 248;
const GPT_ENTRY: usize = 128;
const GPT_ENTRY_SECTORS: u64 = GPT_ENTRIES as u64 * GPT_ENTRY as u64 / 512;
/// 2048-byte sectors at the end of the image the backup GPT takes (its entries and header,
/// 63 sectors of 512 bytes, rounded up).
pub const GPT_BACKUP_SECTORS: u64 = (GPT_ENTRY_SECTORS + 1).div_ceil(SECTOR_SIZE / 512);
/// The GPT xorriso writes beside an isohybrid MBR (`-isohybrid-gpt-basdat`) for an image of
/// `image_sectors` 2048-byte sectors whose volume is `volume` of them, with `efi` (its first
/// sector and size in bytes) as the boot image: Basic Data partitions "ISOHybrid" from sector
/// 0 (overlapping the GPT itself: such a GPT is not valid to a strict reader, and has no
/// protective MBR, so PC firmware and Linux go by the MBR; Apple's firmware reads it) over the
/// image, or the volume when partitions follow it, and "ISOHybrid1" over the EFI image.
pub(super) fn basdat_parts(
    image_sectors: u64,
    volume: u64,
    efi: Option<(u32, u64)>,
) -> Vec<GptPart> {
    let (_, last_usable) = gpt_bounds(image_sectors);
    let end = if volume < image_sectors.saturating_sub(GPT_BACKUP_SECTORS) {
        volume * (SECTOR_SIZE / 512) - 1
    } else {
        last_usable - 1
    };
    let mut parts = vec![(0u64, end)];
    if let Some((lba, size)) = efi {
        let start = u64::from(lba) * 4;
        parts.push((start, start + size.div_ceil(512).max(1) - 1));
    }
    parts
        .into_iter()
        .enumerate()
        .map(|(i, (first, last))| GptPart {
            index: i,
            ty: BASIC_DATA,
            first,
            last,
            attributes: XORRISO_ATTRIBUTES,
            name: if i == 0 {
                "ISOHybrid".to_string()
            } else {
                format!("ISOHybrid{i}")
            },
        })
        .collect()
}

/// The last 512-byte sector of an image of `image_sectors` 2048-byte sectors, and the last
/// one a partition may use (before the backup entries).
fn gpt_bounds(image_sectors: u64) -> (u64, u64) {
    let last = image_sectors * (SECTOR_SIZE / 512) - 1;
    (last, last - GPT_ENTRY_SECTORS - 1)
}

/// A GPT with `parts` for an image of `image_sectors` 2048-byte sectors, laid out as xorriso
/// lays it out. Returns the primary header and entries (from the second 512-byte sector) and
/// the backup entries and header (the image's last 63 sectors). `guid(n)`: the disk's (0) and
/// each partition's GUID (its slot + 1).
pub(super) fn gpt_tables(
    image_sectors: u64,
    parts: &[GptPart],
    guid: impl Fn(u8) -> [u8; 16],
) -> (Vec<u8>, Vec<u8>) {
    let (last, last_usable) = gpt_bounds(image_sectors);
    let backup_entries = last_usable + 1;
    let mut entries = vec![0u8; GPT_ENTRIES as usize * GPT_ENTRY];
    for p in parts {
        let Some(e) = entries.chunks_exact_mut(GPT_ENTRY).nth(p.index) else {
            continue;
        };
        e[..16].copy_from_slice(&p.ty);
        e[16..32].copy_from_slice(&guid(p.index as u8 + 1));
        e[32..40].copy_from_slice(&p.first.to_le_bytes());
        e[40..48].copy_from_slice(&p.last.to_le_bytes());
        e[48..56].copy_from_slice(&p.attributes.to_le_bytes());
        for (c, u) in e[56..].chunks_exact_mut(2).zip(p.name.encode_utf16()) {
            c.copy_from_slice(&u.to_le_bytes());
        }
    }
    let entries_crc = crc32fast::hash(&entries);
    let header = |mine: u64, other: u64, entries_at: u64| {
        let mut h = vec![0u8; 512];
        h[..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&mine.to_le_bytes());
        h[32..40].copy_from_slice(&other.to_le_bytes());
        h[40..48].copy_from_slice(&(GPT_ENTRY_SECTORS + 2).to_le_bytes());
        h[48..56].copy_from_slice(&last_usable.to_le_bytes());
        h[56..72].copy_from_slice(&guid(0));
        h[72..80].copy_from_slice(&entries_at.to_le_bytes());
        h[80..84].copy_from_slice(&GPT_ENTRIES.to_le_bytes());
        h[84..88].copy_from_slice(&(GPT_ENTRY as u32).to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    };
    let mut primary = header(1, last, 2);
    primary.extend_from_slice(&entries);
    let mut backup = entries;
    backup.extend_from_slice(&header(last, 1, backup_entries));
    (primary, backup)
}

/// Checks that the BIOS boot image (its first bytes `head`, from `path`) is a GRUB El Torito
/// image (`grub-mkimage -O i386-pc-eltorito`), whose copy `--grub2-boot-info` may write into,
/// and which GRUB's hybrid MBR can start.
fn check_grub2_image(head: &[u8], path: std::path::PathBuf) -> Result<(), Error> {
    if is_grub2_image(head) {
        return Ok(());
    }
    Err(Error::Boot {
        what: "BIOS boot image",
        path,
        why: format!(
            "not GRUB's El Torito image (eltorito.img, from grub-mkimage -O \
             i386-pc-eltorito): no diskboot.img blocklist at byte {GRUB2_BOOT_INFO} for \
             --grub2-boot-info to write"
        ),
    })
}

/// Checks that the BIOS boot image's first bytes (`head`, at least 0x44 of them) are an
/// isolinux.bin an isohybrid MBR can start.
fn check_hybrid_capable(head: &[u8], path: &Path) -> Result<(), Error> {
    if is_hybrid_isolinux(head) {
        return Ok(());
    }
    Err(Error::Boot {
        what: "BIOS boot image",
        path: path.to_path_buf(),
        why: "not an isolinux.bin an isohybrid MBR can start (no isohybrid signature at byte \
              0x40; isolinux 3.72 and later have it)"
            .into(),
    })
}

/// The isohybrid MBR (what syslinux's isohybrid writes): the boot code, the boot image's place
/// in 512-byte sectors for it, the disk signature `id`, and one active partition of type 0x17
/// over the whole volume of `image_sectors` 2048-byte sectors (whole cylinders), with its CHS
/// addresses in isohybrid's geometry. With a UEFI boot image (`uefi`), that partition is of
/// type 0; when the EFI image is a file of the volume (`efi`: its first sector and size in
/// bytes), a second one, an EFI system partition, covers it (`isohybrid --uefi`).
pub(super) fn isohybrid_mbr(
    code: &[u8],
    boot_lba: u32,
    id: u32,
    image_sectors: u64,
    efi: Option<(u32, u64)>,
    uefi: bool,
) -> Vec<u8> {
    let mut v = vec![0u8; 512];
    let n = code.len().min(MBR_CODE);
    v[..n].copy_from_slice(&code[..n]);
    v[432..436].copy_from_slice(&boot_lba.wrapping_mul(4).to_le_bytes());
    v[440..444].copy_from_slice(&id.to_le_bytes());
    let sectors = image_sectors * (SECTOR_SIZE / 512);
    // isohybrid keeps head and sector past cylinder 1023
    let chs = |s: u64| {
        let cyl = (s / (HEADS * SECTORS_PER_TRACK)).min(1023);
        chs_bytes(
            cyl,
            (s / SECTORS_PER_TRACK) % HEADS,
            s % SECTORS_PER_TRACK + 1,
        )
    };
    let p = &mut v[446..462];
    p[0] = 0x80;
    p[1..4].copy_from_slice(&chs(0));
    p[4] = if uefi { 0 } else { PARTITION_TYPE };
    p[5..8].copy_from_slice(&chs(sectors.saturating_sub(1)));
    p[12..16].copy_from_slice(&u32::try_from(sectors).unwrap_or(u32::MAX).to_le_bytes());
    if let Some((lba, size)) = efi {
        let p = &mut v[462..478];
        p[1..4].copy_from_slice(&CHS_BEYOND);
        p[4] = EFI_PARTITION_TYPE;
        p[5..8].copy_from_slice(&CHS_BEYOND);
        p[8..12].copy_from_slice(&lba.wrapping_mul(4).to_le_bytes());
        let sectors = u32::try_from(size.div_ceil(512)).unwrap_or(u32::MAX);
        p[12..16].copy_from_slice(&sectors.to_le_bytes());
    }
    v[510] = 0x55;
    v[511] = 0xAA;
    v
}

/// The disk geometry (heads, sectors a track) xorriso gives an image of `sectors` 512-byte
/// sectors: 64 heads of 32 sectors while 1024 cylinders of them reach (1 GiB); else the
/// fewest heads, at most 255, that reach with 32 sectors a track, then with 63 (heads a
/// multiple of 4 there, so that a cylinder is whole 2 KiB sectors); else 255 and 63.
fn xorriso_geometry(sectors: u64) -> (u64, u64) {
    if sectors <= HEADS * SECTORS_PER_TRACK * 1024 {
        return (HEADS, SECTORS_PER_TRACK);
    }
    for per_track in [32u64, 63] {
        let mut heads = sectors.div_ceil(per_track * 1024);
        if per_track % 2 == 1 {
            heads = heads.next_multiple_of(4);
        }
        if heads <= 255 {
            return (heads, per_track);
        }
    }
    (255, 63)
}

/// GRUB's hybrid MBR, as xorriso writes it for grub-mkrescue (`--grub2-mbr` with
/// `--protective-msdos-label`): the boot code, the 512-byte sector of GRUB's core image (the
/// boot image's sector × 4 + 4, the core image following cdboot.img's 2048 bytes) at 0x1B0,
/// and one active partition of type 0xCD from the second 512-byte sector to the end of the
/// image of `image_sectors` 2048-byte sectors, its CHS end in xorriso's geometry
/// ([`xorriso_geometry`]; past cylinder 1023 the largest address).
pub(super) fn grub2_mbr(code: &[u8], boot_lba: u32, image_sectors: u64) -> Vec<u8> {
    let mut v = vec![0u8; 512];
    let n = code.len().min(MBR_PARTITIONS);
    v[..n].copy_from_slice(&code[..n]);
    let core = u64::from(boot_lba) * 4 + 4;
    v[GRUB2_MBR_CORE..GRUB2_MBR_CORE + 8].copy_from_slice(&core.to_le_bytes());
    let sectors = image_sectors * (SECTOR_SIZE / 512);
    let last = sectors.clamp(2, 0xFFFF_FFFC) - 1;
    let entry = mbr_entry(
        0x80,
        GRUB2_PARTITION_TYPE,
        1,
        last,
        xorriso_geometry(sectors),
    );
    v[MBR_PARTITIONS..MBR_PARTITIONS + 16].copy_from_slice(&entry);
    v[510] = 0x55;
    v[511] = 0xAA;
    v
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The partition entries xorriso 1.5.4 wrote (`--grub2-mbr` with
    /// `--protective-msdos-label`) for images of these sizes in bytes: 64 heads up to 1 GiB,
    /// then more heads of 32 sectors, then heads of 63 sectors.
    #[test]
    fn the_grub2_mbr_is_what_xorriso_writes() {
        let cases: &[(u64, &str)] = &[
            (9_500_672, "80000200cd031c09010000007b480000"),
            (629_553_152, "80000200cd189c58010000001bc31200"),
            (1_048_983_552, "80000200cd18dce8010000001b431f00"),
            (1_073_100_800, "80000200cd18dcff010000001bfb1f00"),
            (1_080_440_832, "80000200cd22dcf6010000001b332000"),
            (1_258_698_752, "80000200cd40dcf2010000001b832500"),
            (2_097_559_552, "80000200cd08dcf8010000001b833e00"),
            (4_194_711_552, "80000200cd04dcfc010000001b037d00"),
            (4_289_083_392, "80000200cd2ec6ef010000001bd37f00"),
            (6_291_863_552, "80000200cdb4d0f7010000001b83bb00"),
        ];
        let code: Vec<u8> = (0..512u32).map(|i| (i % 251) as u8).collect();
        for &(bytes, entry) in cases {
            let mbr = grub2_mbr(&code, 1396, bytes / 2048);
            let hex: String = mbr[446..462].iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(hex, entry, "{bytes} bytes");
            assert_eq!(&mbr[..0x1B0], &code[..0x1B0]);
            assert_eq!(&mbr[0x1B0..0x1B8], &(1396u64 * 4 + 4).to_le_bytes());
            assert_eq!(
                &mbr[0x1B8..446],
                &code[0x1B8..446],
                "the disk signature is the file's"
            );
            assert!(mbr[462..510].iter().all(|&b| b == 0));
            assert_eq!(&mbr[510..], &[0x55, 0xAA]);
        }
        // Past 255 heads of 63 sectors (8.4 GB): the largest CHS address.
        let mbr = grub2_mbr(&code, 20, 5_000_000);
        assert_eq!(&mbr[451..454], &[0xFE, 0xFF, 0xFF]);
    }
}
