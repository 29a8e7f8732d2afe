//! El Torito boot (the El Torito specification 1.0, and the UEFI platform id 0xEF of UEFI
//! 2.x 12.3.2.1): the boot record volume descriptor, the boot catalog and the boot info table
//! isolinux and GRUB read. Images boot without emulation (what BIOS boot loaders and UEFI use
//! today), or a BIOS one as an emulated floppy or hard disk ([`Emulation`]: memtest86+,
//! FreeDOS, firmware updaters).
//!
//! The catalog is a file of the image (at `--boot-catalog`, `boot.cat` by default), as
//! genisoimage and xorriso show it. [`add_catalog`] puts it into the tree before the layout,
//! [`resolve`] finds the boot images there, and the layout writes the record and the catalog's
//! bytes; the boot info table goes into the image's copy of the BIOS boot image as it is
//! streamed ([`Patch`]): the source file is never changed.
//!
//! An image can also boot written to a USB stick or disk, from an MBR in its first sector:
//! isolinux's ([`isohybrid_mbr`], as syslinux's isohybrid writes it) or GRUB's ([`grub2_mbr`],
//! as grub-mkrescue has xorriso write it).

use super::tree::{Kind, Meta, NodeId, Tree};
use super::{Error, Warning};
use crate::iso9660::ondisk::{boot_record, vd_type, SECTOR_SIZE, STANDARD_ID};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// 512-byte sectors a BIOS loads of a no-emulation boot image unless told: what isolinux's and
/// GRUB's documentation give (`-boot-load-size 4`), one CD sector.
pub const DEFAULT_LOAD_SIZE: u16 = 4;
/// Where the boot catalog goes unless told.
pub const DEFAULT_CATALOG: &str = "boot.cat";
/// The largest BIOS boot image that gets a boot info table: it is read whole to sum it (the
/// boot loaders that want a table are tens of KiB; a BIOS loads at most 32 MiB).
pub const MAX_INFO_TABLE_FILE: u64 = 64 << 20;

const PLATFORM_X86: u8 = 0;
const PLATFORM_EFI: u8 = 0xEF;
const BOOTABLE: u8 = 0x88;
const NO_EMULATION: u8 = 0;
/// The boot media types of emulated floppies (El Torito 2.2), by image size in bytes.
const FLOPPIES: [(u64, u8, &str); 3] = [
    (1_228_800, 1, "1.2 MB"),
    (1_474_560, 2, "1.44 MB"),
    (2_949_120, 3, "2.88 MB"),
];
const HARD_DISK: u8 = 4;
const HEADER_FINAL: u8 = 0x91;
const ENTRY: usize = 32;

/// What to make bootable, as the command line gave it; paths are inside the source tree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Boot {
    /// BIOS boot image (genisoimage's `-b`).
    pub bios: Option<PathBuf>,
    /// How the BIOS boots it: without emulation unless told.
    pub emulation: Emulation,
    /// 512-byte sectors the BIOS loads ([`DEFAULT_LOAD_SIZE`] when `None`).
    pub load_size: Option<u16>,
    /// Write the boot info table into the image's copy of the BIOS boot image.
    pub info_table: bool,
    /// UEFI boot image: a FAT file system image (xorriso's `-e`).
    pub efi: Option<PathBuf>,
    /// Where the catalog appears ([`DEFAULT_CATALOG`] when `None`).
    pub catalog: Option<PathBuf>,
    /// The MBR boot code (isolinux's `isohdpfx.bin`, 432 bytes) of an isohybrid image: the
    /// image then also boots written to a USB stick or disk. Read by [`read_mbr_code`].
    pub isohybrid_mbr: Option<PathBuf>,
    /// With an isohybrid MBR and a UEFI boot image: a GPT beside the MBR too, with the image
    /// and the EFI image as Basic Data partitions, as xorriso's `-isohybrid-gpt-basdat` writes
    /// it (Debian's and RHEL's installation images): what Apple's firmware boots a stick from.
    pub gpt: bool,
    /// Write where the rest of GRUB's core image lies into the image's copy of GRUB's El
    /// Torito image (`eltorito.img`), so that it also loads from a disk (xorriso's
    /// `--grub2-boot-info`).
    pub grub2_boot_info: bool,
    /// GRUB's hybrid MBR boot code (`boot_hybrid.img`): the image then boots written to a USB
    /// stick or disk through GRUB's El Torito image (xorriso's `--grub2-mbr` with
    /// `--protective-msdos-label`, as grub-mkrescue runs it). Read by [`read_mbr_code`].
    pub grub2_mbr: Option<PathBuf>,
}

/// How a BIOS boots the BIOS boot image (El Torito 2.2's boot media type).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Emulation {
    /// Loaded as it is and run (isolinux, GRUB).
    #[default]
    None,
    /// A floppy image of 1.2, 1.44 or 2.88 MB, which the BIOS then serves as drive 0x00
    /// (genisoimage's `-b` without `-no-emul-boot`).
    Floppy,
    /// An image of a hard disk, an MBR with one partition, which the BIOS then serves as drive
    /// 0x80 (genisoimage's `-hard-disk-boot`).
    HardDisk,
}

impl Boot {
    /// Whether the image boots at all (then it gets a catalog).
    pub fn any(&self) -> bool {
        self.bios.is_some() || self.efi.is_some()
    }

    /// Whether anything is written into the image's copy of the BIOS boot image.
    fn patches(&self) -> bool {
        self.info_table || self.grub2_boot_info
    }

    /// Whether the image gets an MBR that starts the BIOS boot image from a disk.
    fn hybrid(&self) -> bool {
        self.isohybrid_mbr.is_some() || self.grub2_mbr.is_some()
    }

    fn catalog_path(&self) -> PathBuf {
        self.catalog
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CATALOG))
    }
}

/// The boot images and the catalog as [`Tree::data`] indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Resolved {
    /// The BIOS image and its entry's fields.
    pub bios: Option<(usize, Load)>,
    pub efi: Option<usize>,
    pub catalog: usize,
}

/// What a catalog entry holds besides the image's sector (El Torito 2.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Load {
    /// The boot media type: 0 no emulation, 1-3 a floppy, 4 a hard disk.
    pub media: u8,
    /// The system type: a hard disk image's partition type, else 0.
    pub system: u8,
    /// 512-byte sectors the BIOS loads (1 for an emulated disk: its boot sector).
    pub sectors: u16,
}

impl Load {
    fn no_emulation(sectors: u16) -> Load {
        Load {
            media: NO_EMULATION,
            system: 0,
            sectors,
        }
    }
}

/// Bytes of MBR boot code before the isohybrid fields (the rest of an MBR file is ignored).
pub const MBR_CODE: usize = 432;
/// Bytes of an MBR before its partition table.
const MBR_PARTITIONS: usize = 446;
/// Where `--grub2-boot-info` writes into GRUB's El Torito image: 500 bytes into its core
/// image, which follows the 2048 bytes of cdboot.img, is diskboot.img's first blocklist entry,
/// the 512-byte sector (64-bit little-endian) the rest of the core image is loaded from.
pub const GRUB2_BOOT_INFO: usize = 2548;
/// The load segment of that blocklist entry in every GRUB 2 diskboot.img (0x800 + 0x20), 10
/// bytes after it: what tells GRUB's El Torito image from other boot images.
const GRUB2_DISKBOOT_SEGMENT: (usize, u16) = (2558, 0x0820);
/// The least a GRUB El Torito image holds: cdboot.img and diskboot.img.
const GRUB2_IMAGE_MIN: u64 = 2560;
/// Where GRUB's hybrid MBR takes the 512-byte sector of the core image (64-bit LE).
const GRUB2_MBR_CORE: usize = 0x1B0;
/// The type of the image's partition in GRUB's hybrid MBR (xorriso's protective label).
const GRUB2_PARTITION_TYPE: u8 = 0xCD;
/// What isolinux.bin holds at byte 0x40 when it can be booted from an isohybrid MBR.
const ISOLINUX_HYBRID_SIGNATURE: u32 = 0x7078_C0FB;
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

/// The BIOS boot image's first `n` bytes (fewer if it is shorter), its path and its sector.
fn bios_image_head(
    plan: &super::layout::Plan,
    tree: &Tree,
    n: usize,
) -> Result<Option<(Vec<u8>, PathBuf, u32)>, Error> {
    let Some((data, lba)) = plan.bios_boot else {
        return Ok(None);
    };
    let path = tree
        .data
        .get(data)
        .map(|d| d.path.clone())
        .ok_or(Error::Layout("the BIOS boot image is not in the tree"))?;
    let mut head = Vec::with_capacity(n);
    std::fs::File::open(&path)
        .and_then(|f| f.take(n as u64).read_to_end(&mut head))
        .map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
    Ok(Some((head, path, lba)))
}

/// Writes the isohybrid MBR ([`isohybrid_mbr`], boot code `code`) into the first sector of
/// `plan`, once the BIOS boot image (read from where `tree` takes it: the source tree, or
/// grafted in) is found to be an isolinux.bin it can start; with `gpt`, the GPT
/// ([`gpt_tables`]) too. The disk signature and GUIDs are the image's own: the same for the
/// same label and time.
pub(super) fn put_isohybrid_mbr(
    plan: &mut super::layout::Plan,
    code: &[u8],
    gpt: bool,
    tree: &Tree,
    label: &str,
    now: i64,
) -> Result<(), Error> {
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
    let mbr = isohybrid_mbr(code, lba, id, u64::from(plan.total_sectors), plan.efi_boot);
    if let Some(area) = plan.metadata.get_mut(..mbr.len()) {
        area.copy_from_slice(&mbr);
    }
    if gpt {
        let guid = |n: u8| guid_of(label, now, n);
        let (primary, backup) = gpt_tables(u64::from(plan.total_sectors), plan.efi_boot, guid);
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
/// The Basic Data partition type (EBD0A0A2-B9E5-4433-87C0-68B6B72699C7), in GUID byte order.
const GPT_BASIC_DATA: [u8; 16] = [
    0xA2, 0xA0, 0xD0, 0xEB, 0xE5, 0xB9, 0x33, 0x44, 0x87, 0xC0, 0x68, 0xB6, 0xB7, 0x26, 0x99, 0xC7,
];
/// The attributes xorriso gives its partitions: required by the platform (bit 0), read-only
/// (bit 60).
const GPT_ATTRIBUTES: u64 = 1 << 60 | 1;

/// The GPT xorriso writes beside an isohybrid MBR (`-isohybrid-gpt-basdat`) for an image of
/// `image_sectors` 2048-byte sectors, with `efi` (its first sector and size in bytes) as the
/// boot image: Basic Data partitions "ISOHybrid" over the image from sector 0 (overlapping the
/// GPT itself: such a GPT is not valid to a strict reader, and has no protective MBR, so PC
/// firmware and Linux go by the MBR; Apple's firmware reads it) and "ISOHybrid1" over the EFI
/// image. Returns the primary header and entries (from the second 512-byte sector) and the
/// backup entries and header (the image's last 63 sectors). `guid(n)`: the disk's (0) and
/// each partition's GUID.
pub(super) fn gpt_tables(
    image_sectors: u64,
    efi: Option<(u32, u64)>,
    guid: impl Fn(u8) -> [u8; 16],
) -> (Vec<u8>, Vec<u8>) {
    let last = image_sectors * (SECTOR_SIZE / 512) - 1;
    let backup_entries = last - GPT_ENTRY_SECTORS;
    let last_usable = backup_entries - 1;
    let mut entries = vec![0u8; GPT_ENTRIES as usize * GPT_ENTRY];
    let mut parts = vec![(0u64, last_usable - 1)];
    if let Some((lba, size)) = efi {
        let start = u64::from(lba) * 4;
        parts.push((start, start + size.div_ceil(512).max(1) - 1));
    }
    for (i, (e, (first, end))) in entries.chunks_exact_mut(GPT_ENTRY).zip(parts).enumerate() {
        e[..16].copy_from_slice(&GPT_BASIC_DATA);
        e[16..32].copy_from_slice(&guid(i as u8 + 1));
        e[32..40].copy_from_slice(&first.to_le_bytes());
        e[40..48].copy_from_slice(&end.to_le_bytes());
        e[48..56].copy_from_slice(&GPT_ATTRIBUTES.to_le_bytes());
        let name = if i == 0 {
            "ISOHybrid".to_string()
        } else {
            format!("ISOHybrid{i}")
        };
        for (c, u) in e[56..].chunks_exact_mut(2).zip(name.encode_utf16()) {
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

/// Checks that the BIOS boot image is a GRUB El Torito image (`grub-mkimage -O
/// i386-pc-eltorito`), whose copy `--grub2-boot-info` may write into; then writes GRUB's
/// hybrid MBR ([`grub2_mbr`], boot code `code`) into the first sector of `plan`, if given.
pub(super) fn check_grub2_image_and_put_mbr(
    plan: &mut super::layout::Plan,
    code: Option<&[u8]>,
    tree: &Tree,
) -> Result<(), Error> {
    let (at, segment) = GRUB2_DISKBOOT_SEGMENT;
    let Some((head, path, lba)) = bios_image_head(plan, tree, at + 2)? else {
        return Ok(());
    };
    let found = head
        .get(at..at + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]));
    if found != Some(segment) {
        return Err(Error::Boot {
            what: "BIOS boot image",
            path,
            why: format!(
                "not GRUB's El Torito image (eltorito.img, from grub-mkimage -O \
                 i386-pc-eltorito): no diskboot.img blocklist at byte {GRUB2_BOOT_INFO} for \
                 --grub2-boot-info to write"
            ),
        });
    }
    if let Some(code) = code {
        let mbr = grub2_mbr(code, lba, u64::from(plan.total_sectors));
        if let Some(area) = plan.metadata.get_mut(..mbr.len()) {
            area.copy_from_slice(&mbr);
        }
    }
    Ok(())
}

/// Checks that the BIOS boot image's first bytes (`head`, at least 0x44 of them) are an
/// isolinux.bin an isohybrid MBR can start.
fn check_hybrid_capable(head: &[u8], path: &Path) -> Result<(), Error> {
    let sig = head
        .get(0x40..0x44)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    if sig == Some(ISOLINUX_HYBRID_SIGNATURE) {
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
/// over the whole image of `image_sectors` 2048-byte sectors (whole cylinders), with its CHS
/// addresses in isohybrid's geometry. With a UEFI boot image (`efi`: its first sector and size
/// in bytes), that partition is of type 0 and a second one, an EFI system partition, covers
/// the EFI image (`isohybrid --uefi`).
pub(super) fn isohybrid_mbr(
    code: &[u8],
    boot_lba: u32,
    id: u32,
    image_sectors: u64,
    efi: Option<(u32, u64)>,
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
    p[4] = if efi.is_some() { 0 } else { PARTITION_TYPE };
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

/// A CHS address as a partition entry holds it: head, sector with the cylinder's bits 8-9,
/// the cylinder's bits 0-7.
fn chs_bytes(cyl: u64, head: u64, sector: u64) -> [u8; 3] {
    [
        head as u8,
        (sector as u8 & 0x3F) | ((cyl >> 2) as u8 & 0xC0),
        cyl as u8,
    ]
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
    let (heads, per_track) = xorriso_geometry(sectors);
    let last = sectors.clamp(2, 0xFFFF_FFFC) - 1;
    let cyl = last / (heads * per_track);
    let end = if cyl >= 1024 {
        chs_bytes(1023, heads - 1, per_track)
    } else {
        let rest = last % (heads * per_track);
        chs_bytes(cyl, rest / per_track, rest % per_track + 1)
    };
    let p = &mut v[MBR_PARTITIONS..MBR_PARTITIONS + 16];
    p[0] = 0x80;
    p[1..4].copy_from_slice(&chs_bytes(0, 0, 2));
    p[4] = GRUB2_PARTITION_TYPE;
    p[5..8].copy_from_slice(&end);
    p[8..12].copy_from_slice(&1u32.to_le_bytes());
    p[12..16].copy_from_slice(&(last as u32).to_le_bytes());
    v[510] = 0x55;
    v[511] = 0xAA;
    v
}

fn boot_error(what: &'static str, src: &Path, rel: &Path, why: impl Into<String>) -> Error {
    Error::Boot {
        what,
        path: src.join(relative(rel)),
        why: why.into(),
    }
}

/// `rel` without a leading `/`: paths inside the image may be given either way.
fn relative(rel: &Path) -> &Path {
    rel.strip_prefix("/").unwrap_or(rel)
}

/// The node at `rel` below the root, following names only (no `..`, no symlinks).
fn find(tree: &Tree, rel: &Path) -> Result<NodeId, &'static str> {
    let mut at: NodeId = 0;
    for c in rel.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => {
                if !is_dir(tree, at) {
                    return Err("a path component is not a directory");
                }
                at = super::tree::child_named(tree, at, name.as_bytes()).ok_or(NOT_IN_TREE)?;
            }
            Component::ParentDir | Component::Prefix(_) => {
                return Err("a path inside the source tree may not use `..`")
            }
        }
    }
    Ok(at)
}

/// Why [`find`] found no node for a path.
const NOT_IN_TREE: &str = "not in the source tree";

fn is_dir(tree: &Tree, id: NodeId) -> bool {
    matches!(tree.nodes.get(id).map(|n| &n.kind), Some(Kind::Dir { .. }))
}

/// Puts the boot catalog, a 2048-byte file, into `tree` where `boot` says (when the image
/// boots at all). Its directory must be in the tree and the name free. Owned by root,
/// read-only for all, dated `now`.
pub fn add_catalog(tree: &mut Tree, boot: &Boot, src: &Path, now: i64) -> Result<(), Error> {
    if !boot.any() {
        return Ok(());
    }
    let rel = boot.catalog_path();
    let what = "boot catalog";
    let name = relative(&rel)
        .file_name()
        .ok_or_else(|| boot_error(what, src, &rel, "not a file name"))?
        .to_owned();
    let parent_rel = relative(&rel).parent().unwrap_or(Path::new(""));
    let parent = find(tree, parent_rel).map_err(|why| {
        boot_error(
            what,
            src,
            &rel,
            format!(
                "its directory {}: {why}",
                src.join(relative(parent_rel)).display()
            ),
        )
    })?;
    if !is_dir(tree, parent) {
        return Err(boot_error(what, src, &rel, "its parent is not a directory"));
    }
    if find(tree, relative(&rel)).is_ok() {
        return Err(boot_error(
            what,
            src,
            &rel,
            "already in the source tree; give the catalog another place (--boot-catalog)",
        ));
    }
    let data = tree.data.len();
    tree.data.push(super::tree::FileData {
        path: src.join(relative(&rel)),
        size: SECTOR_SIZE,
    });
    let serial = tree.nodes.iter().map(|n| n.serial).max().unwrap_or(0) + 1;
    let id = tree.nodes.len();
    let meta = Meta {
        mode: libc::S_IFREG | 0o444,
        uid: 0,
        gid: 0,
        mtime: now,
        atime: now,
        ctime: now,
    };
    super::tree::push_child(tree, parent, &name, meta, Kind::File { data }, serial);
    super::tree::insert_child(tree, parent, id);
    Ok(())
}

/// The data index of the regular file at `rel`, checked for use as a boot image.
fn boot_file(
    tree: &Tree,
    rel: &Path,
    src: &Path,
    what: &'static str,
) -> Result<(usize, u64), Error> {
    let id = find(tree, rel).map_err(|why| {
        let there = std::fs::symlink_metadata(src.join(relative(rel))).is_ok();
        match why {
            NOT_IN_TREE if there => boot_error(
                what,
                src,
                rel,
                "left out of the image (by --exclude, or as a FIFO, socket or device)",
            ),
            _ => boot_error(what, src, rel, why),
        }
    })?;
    let data = match tree.nodes.get(id).map(|n| &n.kind) {
        Some(Kind::File { data }) => *data,
        Some(Kind::Dir { .. }) => return Err(boot_error(what, src, rel, "a directory")),
        _ => {
            return Err(boot_error(
                what,
                src,
                rel,
                "a symlink; name the file it points to",
            ))
        }
    };
    let size = tree.data.get(data).map_or(0, |d| d.size);
    if size == 0 {
        return Err(boot_error(what, src, rel, "an empty file"));
    }
    Ok((data, size))
}

/// Finds the boot images and the catalog of `boot` in `tree` (after [`add_catalog`]).
pub(super) fn resolve(
    tree: &Tree,
    boot: &Boot,
    src: &Path,
    warnings: &mut Vec<Warning>,
) -> Result<Option<Resolved>, Error> {
    if !boot.any() {
        return Ok(None);
    }
    let bios = match &boot.bios {
        Some(rel) => {
            let what = "BIOS boot image";
            let (data, size) = boot_file(tree, rel, src, what)?;
            if boot.info_table && size < 64 {
                return Err(boot_error(
                    what,
                    src,
                    rel,
                    format!("{size} bytes; a boot info table needs at least 64"),
                ));
            }
            if boot.grub2_boot_info && size < GRUB2_IMAGE_MIN {
                return Err(boot_error(
                    what,
                    src,
                    rel,
                    format!(
                        "{size} bytes; not GRUB's El Torito image (eltorito.img), which \
                         --grub2-boot-info writes into at byte {GRUB2_BOOT_INFO}"
                    ),
                ));
            }
            if (boot.info_table || boot.grub2_boot_info) && size > MAX_INFO_TABLE_FILE {
                return Err(boot_error(
                    what,
                    src,
                    rel,
                    format!(
                        "{size} bytes; a boot info table is written into images of at most {} MiB",
                        MAX_INFO_TABLE_FILE >> 20
                    ),
                ));
            }
            let load = match boot.emulation {
                Emulation::None => Load::no_emulation(boot.load_size.unwrap_or(DEFAULT_LOAD_SIZE)),
                emulated => {
                    if boot.load_size.is_some() || boot.patches() || boot.hybrid() {
                        return Err(boot_error(
                            what,
                            src,
                            rel,
                            "an emulated disk is loaded by its boot sector alone and is not \
                             written into: no load size, boot info table, GRUB boot info or \
                             hybrid MBR with it",
                        ));
                    }
                    let path = tree.data.get(data).map(|d| d.path.as_path());
                    emulated_disk(emulated, path.unwrap_or(src), size, warnings)
                        .map_err(|why| boot_error(what, src, rel, why))?
                }
            };
            Some((data, load))
        }
        None => None,
    };
    let efi = match &boot.efi {
        Some(rel) => {
            let (data, _) = boot_file(tree, rel, src, "EFI boot image")?;
            if let Some(path) = tree.data.get(data).map(|d| &d.path) {
                if let Some(why) = not_a_fat_image(path) {
                    warnings.push(Warning::BootImage {
                        path: path.clone(),
                        why,
                    });
                }
            }
            Some(data)
        }
        None => None,
    };
    let rel = boot.catalog_path();
    let catalog = match find(tree, relative(&rel)).map(|id| tree.nodes.get(id).map(|n| &n.kind)) {
        Ok(Some(Kind::File { data })) => *data,
        _ => return Err(Error::Layout("the boot catalog is not in the tree")),
    };
    Ok(Some(Resolved { bios, efi, catalog }))
}

/// Why the EFI boot image at `path` will not boot, if it is neither a FAT file system (a boot
/// sector with a BIOS parameter block) nor a disk image with an MBR partition: UEFI firmware
/// looks for a FAT file system holding EFI/BOOT/BOOTX64.EFI in it. (Unreadable: the copy
/// fails later, naming it.)
fn not_a_fat_image(path: &Path) -> Option<String> {
    let mut b = Vec::with_capacity(512);
    std::fs::File::open(path)
        .and_then(|f| f.take(512).read_to_end(&mut b))
        .ok()?;
    let signed = b.len() == 512 && b[510..] == [0x55, 0xAA];
    let per_sector = b.get(11..13).map(|w| u16::from_le_bytes([w[0], w[1]]));
    let per_cluster = b.get(13).copied().unwrap_or(0);
    let fats = b.get(16).copied().unwrap_or(0);
    let bpb = matches!(per_sector, Some(512 | 1024 | 2048 | 4096))
        && per_cluster.is_power_of_two()
        && fats > 0;
    let partitioned = signed
        && b[MBR_PARTITIONS..510]
            .chunks_exact(16)
            .any(|p| p[4] != 0 && p[0] & 0x7F == 0);
    if signed && (bpb || partitioned) {
        return None;
    }
    let make = "UEFI firmware looks for a FAT file system holding EFI/BOOT/BOOTX64.EFI in it \
                (mkfs.vfat -C, mmd and mcopy make one)";
    Some(if b.starts_with(b"MZ") {
        format!("a PE executable (a boot loader such as BOOTX64.EFI), not a FAT image: {make}")
    } else {
        format!("not a FAT file system image (no FAT boot sector): {make}")
    })
}

/// Warns where the BIOS boot image, as planned, will not boot for want of
/// `--boot-info-table`: GRUB's El Torito image without one (it then hangs after the BIOS
/// loads it), or an isolinux.bin whose table, copied with it out of another image, names
/// another sector than its own here (isolinux then stops with "Image checksum error"; with a
/// zeroed table it asks the BIOS and boots).
pub(super) fn check_info_table(
    plan: &super::layout::Plan,
    tree: &Tree,
    boot: &Boot,
    warnings: &mut Vec<Warning>,
) -> Result<(), Error> {
    if boot.info_table || boot.emulation != Emulation::None {
        return Ok(());
    }
    let (at, segment) = GRUB2_DISKBOOT_SEGMENT;
    let Some((head, path, lba)) = bios_image_head(plan, tree, at + 2)? else {
        return Ok(());
    };
    let word = |r: std::ops::Range<usize>| {
        head.get(r)
            .map(|b| b.iter().rev().fold(0u32, |v, &x| v << 8 | u32::from(x)))
    };
    let why = if word(at..at + 2) == Some(u32::from(segment)) {
        "GRUB's El Torito image needs --boot-info-table: without one it hangs once the BIOS \
         has loaded it"
            .to_string()
    } else if word(0x40..0x44) == Some(ISOLINUX_HYBRID_SIGNATURE) {
        match word(12..16) {
            Some(stale) if stale != 0 && stale != lba => format!(
                "isolinux.bin's boot info table says it is at sector {stale}, as it was in the \
                 image it was copied from, but here it is at {lba}: isolinux will stop with \
                 \"Image checksum error\"; give --boot-info-table"
            ),
            _ => return Ok(()),
        }
    } else {
        return Ok(());
    };
    warnings.push(Warning::BootImage { path, why });
    Ok(())
}

/// The catalog entry's fields for the image at `path` of `size` bytes booted as an emulated
/// disk, or why it cannot be: a floppy image must have a floppy's size; a hard disk image must
/// hold an MBR with one partition, in its first entry, whose type the entry takes. A BIOS
/// emulates the hard disk with the geometry of that entry's CHS end (SeaBIOS reads no other
/// entry), so an image that is not whole cylinders of it gets a warning, as genisoimage gives
/// one.
fn emulated_disk(
    emulation: Emulation,
    path: &Path,
    size: u64,
    warnings: &mut Vec<Warning>,
) -> Result<Load, String> {
    let emulated = |media, system| Load {
        media,
        system,
        sectors: 1,
    };
    if emulation == Emulation::Floppy {
        return match FLOPPIES.iter().find(|&&(bytes, ..)| bytes == size) {
            Some(&(_, media, _)) => Ok(emulated(media, 0)),
            None => Err(format!(
                "{size} bytes; an emulated floppy is {}",
                FLOPPIES
                    .map(|(b, _, name)| format!("{b} ({name})"))
                    .join(", ")
            )),
        };
    }
    let mut mbr = Vec::with_capacity(512);
    std::fs::File::open(path)
        .and_then(|f| f.take(512).read_to_end(&mut mbr))
        .map_err(|e| format!("reading its MBR: {e}"))?;
    if mbr.len() < 512 || mbr[510..] != [0x55, 0xAA] {
        return Err("not a hard disk image: no MBR (0x55AA at byte 510)".into());
    }
    let used: Vec<&[u8]> = mbr[MBR_PARTITIONS..510]
        .chunks_exact(16)
        .filter(|p| p[4] != 0)
        .collect();
    if let Some(p) = used.iter().find(|p| p[0] & 0x7F != 0) {
        return Err(format!(
            "not a hard disk image: its first sector is no MBR (a partition's boot flag is \
             {:#04x}, not 0x00 or 0x80; a file system's boot sector, as a floppy image has?)",
            p[0]
        ));
    }
    let [p] = used[..] else {
        return Err(match used.len() {
            0 => "no partition in its MBR; an emulated hard disk has exactly one (a floppy \
                  image is booted with --boot-emulation floppy)"
                .into(),
            n => format!("{n} partitions in its MBR; an emulated hard disk has exactly one"),
        });
    };
    if mbr[MBR_PARTITIONS + 4] == 0 {
        let n = mbr[MBR_PARTITIONS..510]
            .chunks_exact(16)
            .position(|e| e[4] != 0)
            .map_or(0, |i| i + 1);
        return Err(format!(
            "its partition is the MBR's entry {n}; BIOSes take the emulated disk's geometry \
             from entry 1 (SeaBIOS hangs without it): move the partition there"
        ));
    }
    let heads = u64::from(p[5]) + 1;
    let per_track = u64::from(p[6] & 0x3F);
    let cylinders = (u64::from(p[6] & 0xC0) << 2 | u64::from(p[7])) + 1;
    if per_track == 0 {
        return Err(
            "its partition's CHS end has sector 0, and BIOSes take the emulated \
                    disk's geometry from it"
                .into(),
        );
    }
    let disk = cylinders * heads * per_track * 512;
    if disk != size {
        warnings.push(Warning::HardDiskGeometry {
            path: path.to_path_buf(),
            cylinders,
            heads,
            per_track,
            size,
        });
    }
    Ok(emulated(HARD_DISK, p[4]))
}

/// The boot record volume descriptor (El Torito 2.0) naming the catalog's sector.
pub(super) fn record(catalog_lba: u32) -> Vec<u8> {
    let mut v = vec![0u8; SECTOR_SIZE as usize];
    v[0] = vd_type::BOOT_RECORD;
    v[1..6].copy_from_slice(STANDARD_ID);
    v[6] = 1;
    let id = boot_record::BOOT_SYSTEM_ID.start;
    v[id..id + boot_record::EL_TORITO_ID.len()].copy_from_slice(boot_record::EL_TORITO_ID);
    let at = boot_record::BOOT_CATALOG_LBA;
    v[at..at + 4].copy_from_slice(&catalog_lba.to_le_bytes());
    v
}

/// A bootable entry (El Torito 2.2, 2.5) for the image at `lba`.
fn entry(lba: u32, load: Load) -> [u8; ENTRY] {
    let mut e = [0u8; ENTRY];
    e[0] = BOOTABLE;
    e[1] = load.media;
    // load segment 0: the traditional 0x7C0
    e[4] = load.system;
    e[6..8].copy_from_slice(&load.sectors.to_le_bytes());
    e[8..12].copy_from_slice(&lba.to_le_bytes());
    e
}

/// 512-byte sectors of an EFI boot image of `size` bytes, as the entry holds them. An image
/// over 65535 sectors (32 MiB) gets 0, as xorriso records it: UEFI firmware (EDK2) then takes
/// the rest of the medium and the FAT file system its own size. 65535 would cut such an image
/// short (OVMF then does not find a loader past the cut).
pub(super) fn efi_sectors(size: u64) -> u16 {
    u16::try_from(size.div_ceil(512)).unwrap_or(0)
}

/// The boot catalog (El Torito 2.1-2.5): the validation entry, the default entry (BIOS where
/// there is a BIOS image, else EFI) and, with both, a final section header for platform 0xEF
/// with the EFI entry. Each image as its first sector and entry fields; the EFI image as its
/// first sector and the 512-byte sectors to load.
pub(super) fn catalog(bios: Option<(u32, Load)>, efi: Option<(u32, u16)>) -> Vec<u8> {
    let mut v = vec![0u8; SECTOR_SIZE as usize];
    let efi = efi.map(|(lba, sectors)| (lba, Load::no_emulation(sectors)));
    let (platform, default, section) = match (bios, efi) {
        (Some(b), e) => (PLATFORM_X86, Some(b), e),
        (None, e) => (PLATFORM_EFI, e, None),
    };
    let mut validation = [0u8; ENTRY];
    validation[0] = 1;
    validation[1] = platform;
    validation[30] = 0x55;
    validation[31] = 0xAA;
    let sum = validation.chunks_exact(2).fold(0u16, |s, w| {
        s.wrapping_add(u16::from_le_bytes([w[0], w.get(1).copied().unwrap_or(0)]))
    });
    validation[28..30].copy_from_slice(&0u16.wrapping_sub(sum).to_le_bytes());
    v[..ENTRY].copy_from_slice(&validation);
    if let Some((lba, load)) = default {
        v[ENTRY..2 * ENTRY].copy_from_slice(&entry(lba, load));
    }
    if let Some((lba, load)) = section {
        let header = &mut v[2 * ENTRY..3 * ENTRY];
        header[0] = HEADER_FINAL;
        header[1] = PLATFORM_EFI;
        header[2..4].copy_from_slice(&1u16.to_le_bytes());
        v[3 * ENTRY..4 * ENTRY].copy_from_slice(&entry(lba, load));
    }
    v
}

/// What goes into the image's copy of the BIOS boot image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Patch {
    /// The boot info table ([`put_info_table`]).
    pub info_table: bool,
    /// GRUB's core image sector ([`GRUB2_BOOT_INFO`]).
    pub grub2_boot_info: bool,
}

impl Patch {
    /// Whether anything goes in.
    pub fn any(&self) -> bool {
        self.info_table || self.grub2_boot_info
    }

    /// Writes into `file`, the image's copy of the boot image starting at sector `lba`:
    /// GRUB's core image sector first, as xorriso does, so that the info table's sum counts it.
    pub fn apply(&self, file: &mut [u8], pvd_lba: u32, lba: u32) {
        if self.grub2_boot_info {
            let rest = u64::from(lba) * 4 + 5;
            if let Some(at) = file.get_mut(GRUB2_BOOT_INFO..GRUB2_BOOT_INFO + 8) {
                at.copy_from_slice(&rest.to_le_bytes());
            }
        }
        if self.info_table {
            put_info_table(file, pvd_lba, lba);
        }
    }
}

/// Writes the boot info table (56 bytes at offset 8: the primary volume descriptor's sector,
/// the file's sector and length, and the sum of its 32-bit little-endian words from byte 64 on;
/// 40 bytes zeroed) into `file`, the image's copy of a boot image starting at sector `lba`.
pub fn put_info_table(file: &mut [u8], pvd_lba: u32, lba: u32) {
    let len = u32::try_from(file.len()).unwrap_or(u32::MAX);
    let sum = file
        .get(64..)
        .unwrap_or_default()
        .chunks(4)
        .fold(0u32, |s, w| {
            let mut word = [0u8; 4];
            word[..w.len()].copy_from_slice(w);
            s.wrapping_add(u32::from_le_bytes(word))
        });
    if let Some(table) = file.get_mut(8..64) {
        table.fill(0);
        table[0..4].copy_from_slice(&pvd_lba.to_le_bytes());
        table[4..8].copy_from_slice(&lba.to_le_bytes());
        table[8..12].copy_from_slice(&len.to_le_bytes());
        table[12..16].copy_from_slice(&sum.to_le_bytes());
    }
}

/// The names in directory `dir`, in order.
#[cfg(test)]
fn child_names(tree: &Tree, dir: NodeId) -> Vec<&std::ffi::OsStr> {
    tree.children(dir)
        .iter()
        .filter_map(|&c| tree.nodes.get(c))
        .map(|n| std::ffi::OsStr::from_bytes(&n.name))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::iso9660::descriptor::catalog_is_bootable;
    use std::fs;

    fn tree_of(files: &[&str]) -> (tempfile::TempDir, Tree) {
        let tmp = tempfile::tempdir().unwrap();
        for f in files {
            let p = tmp.path().join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, vec![7u8; 100]).unwrap();
        }
        let t = super::super::tree::walk(tmp.path(), false, &Default::default(), &mut Vec::new())
            .unwrap();
        (tmp, t)
    }

    #[test]
    fn the_catalog_goes_into_its_directory_in_name_order() {
        let (tmp, mut t) = tree_of(&["isolinux/a.bin", "isolinux/z.cfg"]);
        let boot = Boot {
            bios: Some("isolinux/a.bin".into()),
            catalog: Some("/isolinux/boot.cat".into()),
            ..Boot::default()
        };
        add_catalog(&mut t, &boot, tmp.path(), 5).unwrap();
        let dir = find(&t, Path::new("isolinux")).unwrap();
        assert_eq!(child_names(&t, dir), ["a.bin", "boot.cat", "z.cfg"]);
        let r = resolve(&t, &boot, tmp.path(), &mut Vec::new())
            .unwrap()
            .unwrap();
        assert_eq!(t.data[r.catalog].size, 2048);
        assert_eq!(
            r.bios.map(|b| b.1),
            Some(Load::no_emulation(DEFAULT_LOAD_SIZE))
        );
        let serials: std::collections::HashSet<u32> = t.nodes.iter().map(|n| n.serial).collect();
        assert_eq!(
            serials.len(),
            t.nodes.len(),
            "the catalog has a serial of its own"
        );
    }

    #[test]
    fn bad_places_are_errors_naming_the_path() {
        let (tmp, mut t) = tree_of(&["boot.cat", "b.bin", "d/x"]);
        let cases: &[(Boot, &str)] = &[
            (
                Boot {
                    bios: Some("b.bin".into()),
                    ..Boot::default()
                },
                "already in the source tree",
            ),
            (
                Boot {
                    bios: Some("b.bin".into()),
                    catalog: Some("nodir/boot.cat".into()),
                    ..Boot::default()
                },
                "not in the source tree",
            ),
            (
                Boot {
                    bios: Some("b.bin".into()),
                    catalog: Some("b.bin/boot.cat".into()),
                    ..Boot::default()
                },
                "not a directory",
            ),
            (
                Boot {
                    bios: Some("../b.bin".into()),
                    catalog: Some("c.cat".into()),
                    ..Boot::default()
                },
                "`..`",
            ),
            (
                Boot {
                    bios: Some("d".into()),
                    catalog: Some("c2.cat".into()),
                    ..Boot::default()
                },
                "a directory",
            ),
        ];
        for (boot, why) in cases {
            let e = add_catalog(&mut t, boot, tmp.path(), 0)
                .and_then(|()| resolve(&t, boot, tmp.path(), &mut Vec::new()).map(|_| ()))
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{boot:?}: {e}");
            assert!(e.contains(&tmp.path().display().to_string()), "{e}");
        }
    }

    #[test]
    fn catalogs_for_bios_efi_and_both() {
        let both = catalog(Some((30, Load::no_emulation(4))), Some((40, 2880)));
        assert!(catalog_is_bootable(&both));
        assert_eq!(both[1], PLATFORM_X86);
        assert_eq!(&both[32..44], &[0x88, 0, 0, 0, 0, 0, 4, 0, 30, 0, 0, 0]);
        assert_eq!(&both[64..68], &[0x91, 0xEF, 1, 0]);
        assert_eq!(
            &both[96..108],
            &[0x88, 0, 0, 0, 0, 0, 0x40, 0x0B, 40, 0, 0, 0]
        );
        let efi = catalog(None, Some((40, 8)));
        assert!(catalog_is_bootable(&efi));
        assert_eq!(efi[1], PLATFORM_EFI);
        assert_eq!(&efi[32..44], &[0x88, 0, 0, 0, 0, 0, 8, 0, 40, 0, 0, 0]);
        assert!(efi[64..].iter().all(|&b| b == 0), "no section");
        assert_eq!(efi_sectors(1 << 30), 0);
        assert_eq!(efi_sectors(65535 * 512), 65535);
        assert_eq!(efi_sectors(65535 * 512 + 1), 0);
        assert_eq!(efi_sectors(513), 2);
    }

    #[test]
    fn emulated_disks_get_their_media_and_system_type() {
        let tmp = tempfile::tempdir().unwrap();
        let mut w = Vec::new();
        let p = tmp.path().join("x");
        for (size, media) in [(1_228_800, 1), (1_474_560, 2), (2_949_120, 3)] {
            let load = emulated_disk(Emulation::Floppy, &p, size, &mut w).unwrap();
            assert_eq!((load.media, load.system, load.sectors), (media, 0, 1));
        }
        let e = emulated_disk(Emulation::Floppy, &p, 1_474_561, &mut w).unwrap_err();
        assert!(
            e.contains("1474561 bytes") && e.contains("1474560 (1.44 MB)"),
            "{e}"
        );
        // 4 cylinders of 2 heads of 8 sectors, one FAT32 partition: in the third entry, then
        // in the first
        let mut disk = vec![0u8; 4 * 2 * 8 * 512];
        disk[478..486].copy_from_slice(&[0x80, 0, 2, 0, 0x0B, 1, 8, 3]);
        disk[510..512].copy_from_slice(&[0x55, 0xAA]);
        fs::write(&p, &disk).unwrap();
        let e = emulated_disk(Emulation::HardDisk, &p, disk.len() as u64, &mut w).unwrap_err();
        assert!(e.contains("entry 3"), "{e}");
        disk.copy_within(478..494, 446);
        disk[478..494].fill(0);
        fs::write(&p, &disk).unwrap();
        let load = emulated_disk(Emulation::HardDisk, &p, disk.len() as u64, &mut w).unwrap();
        assert_eq!((load.media, load.system, load.sectors), (4, 0x0B, 1));
        assert!(w.is_empty(), "{w:?}");
        emulated_disk(Emulation::HardDisk, &p, disk.len() as u64 + 512, &mut w).unwrap();
        assert!(
            matches!(
                w[..],
                [Warning::HardDiskGeometry {
                    cylinders: 4,
                    heads: 2,
                    per_track: 8,
                    ..
                }]
            ),
            "{w:?}"
        );
        let cat = catalog(Some((30, load)), None);
        assert_eq!(&cat[32..44], &[0x88, 4, 0, 0, 0x0B, 0, 1, 0, 30, 0, 0, 0]);
    }

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

    #[test]
    fn the_grub2_boot_info_goes_in_before_the_info_table_sums() {
        let mut f = vec![0u8; 3000];
        let patch = Patch {
            info_table: true,
            grub2_boot_info: true,
        };
        patch.apply(&mut f, 16, 100);
        assert_eq!(&f[2548..2556], &405u64.to_le_bytes());
        assert_eq!(&f[20..24], &405u32.to_le_bytes(), "the sum counts it");
        let mut g = vec![0u8; 3000];
        Patch {
            grub2_boot_info: false,
            ..patch
        }
        .apply(&mut g, 16, 100);
        assert!(g[2548..2556].iter().all(|&b| b == 0));
    }

    #[test]
    fn the_info_table_sums_the_file_after_its_first_64_bytes() {
        let mut f: Vec<u8> = (0..70u8).collect();
        put_info_table(&mut f, 16, 33);
        assert_eq!(&f[..8], &[0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(&f[8..20], &[16, 0, 0, 0, 33, 0, 0, 0, 70, 0, 0, 0]);
        // words 64..68 and 68..70 (zero-padded): 0x43424140 + 0x4544
        let sum = 0x4342_4140u32 + 0x4544;
        assert_eq!(&f[20..24], &sum.to_le_bytes());
        assert!(f[24..64].iter().all(|&b| b == 0));
        assert_eq!(&f[64..], &[64, 65, 66, 67, 68, 69]);
    }
}
