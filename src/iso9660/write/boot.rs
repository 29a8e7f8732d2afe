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
//! An image can also boot written to a USB stick or disk, from an MBR in its first sector
//! ([`super::hybrid`]).

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
    /// image then also boots written to a USB stick or disk. Read by [`super::hybrid::read_mbr_code`].
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
    /// `--protective-msdos-label`, as grub-mkrescue runs it). Read by [`super::hybrid::read_mbr_code`].
    pub grub2_mbr: Option<PathBuf>,
    /// Partitions appended after the volume (xorriso's `-append_partition`).
    pub appended: Vec<super::partition::Append>,
    /// The appended partition that is the UEFI boot image (xorriso's
    /// `-e --interval:appended_partition_N:all::`), in place of a file of the image.
    pub efi_partition: Option<u8>,
    /// Put the appended partitions in a GPT behind a protective MBR, rather than in the MBR
    /// (xorriso's `-appended_part_as_gpt`, as Ubuntu's images have them).
    pub appended_gpt: bool,
    /// Mark a partition active for BIOSes that boot only such a disk (xorriso's
    /// `--mbr-force-bootable`).
    pub mbr_force_bootable: bool,
    /// With the partitions in a GPT: the volume's partition starts this many sectors in, and
    /// holds a second volume (descriptors and tree) of its own there, so that it mounts by
    /// itself (xorriso's `-partition_offset`, 16 in Ubuntu's images); 0 for none.
    pub partition_offset: u32,
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
        self.bios.is_some() || self.efi.is_some() || self.efi_partition.is_some()
    }

    /// Whether anything is written into the image's copy of the BIOS boot image.
    fn patches(&self) -> bool {
        self.info_table || self.grub2_boot_info
    }

    /// Whether the image gets an MBR that starts the BIOS boot image from a disk.
    pub(super) fn hybrid(&self) -> bool {
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

/// Bytes of an MBR before its partition table.
pub(super) const MBR_PARTITIONS: usize = 446;
/// Where `--grub2-boot-info` writes into GRUB's El Torito image: 500 bytes into its core
/// image, which follows the 2048 bytes of cdboot.img, is diskboot.img's first blocklist entry,
/// the 512-byte sector (64-bit little-endian) the rest of the core image is loaded from.
pub const GRUB2_BOOT_INFO: usize = 2548;
/// The load segment of that blocklist entry in every GRUB 2 diskboot.img (0x800 + 0x20), 10
/// bytes after it: what tells GRUB's El Torito image from other boot images.
const GRUB2_DISKBOOT_SEGMENT: (usize, u16) = (2558, 0x0820);
/// The least a GRUB El Torito image holds: cdboot.img and diskboot.img.
const GRUB2_IMAGE_MIN: u64 = 2560;
/// What isolinux.bin holds at byte 0x40 when it can be booted from an isohybrid MBR.
const ISOLINUX_HYBRID_SIGNATURE: u32 = 0x7078_C0FB;
/// Bytes of the BIOS boot image's head that [`is_grub2_image`] and [`is_hybrid_isolinux`]
/// look at.
pub(super) const BIOS_HEAD: usize = GRUB2_DISKBOOT_SEGMENT.0 + 2;

/// The little-endian number in `head` at `at`, `N` bytes; `None` past its end.
fn le_at<const N: usize>(head: &[u8], at: usize) -> Option<u64> {
    let b: [u8; N] = head.get(at..at + N)?.try_into().ok()?;
    Some(b.iter().rev().fold(0u64, |v, &x| v << 8 | u64::from(x)))
}

/// Whether a BIOS boot image's first bytes are GRUB's El Torito image (`grub-mkimage -O
/// i386-pc-eltorito`): diskboot.img's load segment where every one has it.
pub(super) fn is_grub2_image(head: &[u8]) -> bool {
    let (at, segment) = GRUB2_DISKBOOT_SEGMENT;
    le_at::<2>(head, at) == Some(u64::from(segment))
}

/// Whether a BIOS boot image's first bytes are an isolinux.bin an isohybrid MBR can start
/// (its signature at byte 0x40, isolinux 3.72 and later).
pub(super) fn is_hybrid_isolinux(head: &[u8]) -> bool {
    le_at::<4>(head, 0x40) == Some(u64::from(ISOLINUX_HYBRID_SIGNATURE))
}
/// The BIOS boot image's first `n` bytes (fewer if it is shorter), its path and its sector.
pub(super) fn bios_image_head(
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
    let head = read_head(&path, n).map_err(|source| Error::Read {
        path: path.clone(),
        source,
    })?;
    Ok(Some((head, path, lba)))
}

/// The first `n` bytes of the file at `path` (fewer if it is shorter).
fn read_head(path: &Path, n: usize) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(n);
    std::fs::File::open(path).and_then(|f| f.take(n as u64).read_to_end(&mut head))?;
    Ok(head)
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
/// boots at all). Its directory must be in the tree and the name free, or taken by a boot
/// catalog (of the image the tree was served from), which it replaces. Owned by root,
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
    let mut parent = find(tree, parent_rel).map_err(|why| {
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
    if let Ok(old) = find(tree, relative(&rel)) {
        if !is_a_boot_catalog(tree, old) {
            return Err(boot_error(
                what,
                src,
                &rel,
                "already in the source tree, and not a boot catalog; give the catalog another \
                 place (--boot-catalog)",
            ));
        }
        // an earlier image's catalog (a served image being remastered): replaced, as
        // genisoimage and xorriso replace it
        super::tree::remove_child(tree, parent, old);
        *tree = super::tree::compact(tree);
        parent = find(tree, parent_rel).map_err(|_| Error::Layout("the catalog's directory"))?;
    }
    let data = tree.data.len();
    tree.data.push(super::tree::FileData {
        path: src.join(relative(&rel)),
        size: SECTOR_SIZE,
        inode: None,
    });
    let serial = tree.nodes.iter().map(|n| n.serial).max().unwrap_or(0) + 1;
    let id = tree.nodes.len();
    let meta = Meta::made(libc::S_IFREG | 0o444, now);
    super::tree::push_child(tree, parent, &name, meta, Kind::File { data }, serial);
    super::tree::insert_child(tree, parent, id);
    Ok(())
}

/// Whether node `id` is a regular file holding an El Torito boot catalog (a sector whose
/// validation entry checks out, with a bootable entry), as an image's catalog shows in it.
fn is_a_boot_catalog(tree: &Tree, id: NodeId) -> bool {
    let Some(Kind::File { data }) = tree.nodes.get(id).map(|n| &n.kind) else {
        return false;
    };
    let Some(file) = tree.data.get(*data).filter(|d| d.size == SECTOR_SIZE) else {
        return false;
    };
    read_head(&file.path, SECTOR_SIZE as usize)
        .is_ok_and(|sector| crate::iso9660::descriptor::catalog_is_bootable(&sector))
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
                warn_unless_fat(path, warnings);
            }
            Some(data)
        }
        None => None,
    };
    let efi_partition = boot
        .efi_partition
        .and_then(|n| boot.appended.iter().find(|a| a.number == n));
    if let Some(a) = efi_partition {
        warn_unless_fat(&a.path, warnings);
    }
    let rel = boot.catalog_path();
    let catalog = match find(tree, relative(&rel)).map(|id| tree.nodes.get(id).map(|n| &n.kind)) {
        Ok(Some(Kind::File { data })) => *data,
        _ => return Err(Error::Layout("the boot catalog is not in the tree")),
    };
    Ok(Some(Resolved { bios, efi, catalog }))
}

/// Warns when the EFI boot image at `path` is not one UEFI firmware boots ([`not_a_fat_image`]).
fn warn_unless_fat(path: &Path, warnings: &mut Vec<Warning>) {
    if let Some(why) = not_a_fat_image(path) {
        warnings.push(Warning::BootImage {
            path: path.to_path_buf(),
            why,
        });
    }
}

/// Why the EFI boot image at `path` will not boot, if it is neither a FAT file system (a boot
/// sector with a BIOS parameter block) nor a disk image with an MBR partition: UEFI firmware
/// looks for a FAT file system holding EFI/BOOT/BOOTX64.EFI in it. (Unreadable: the copy
/// fails later, naming it.)
fn not_a_fat_image(path: &Path) -> Option<String> {
    let b = read_head(path, 512).ok()?;
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
    let Some((head, path, lba)) = bios_image_head(plan, tree, BIOS_HEAD)? else {
        return Ok(());
    };
    let why = if is_grub2_image(&head) {
        "GRUB's El Torito image needs --boot-info-table: without one it hangs once the BIOS \
         has loaded it"
            .to_string()
    } else if is_hybrid_isolinux(&head) {
        match le_at::<4>(&head, 12) {
            Some(stale) if stale != 0 && stale != u64::from(lba) => format!(
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
    let mbr = read_head(path, 512).map_err(|e| format!("reading its MBR: {e}"))?;
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
        let why = "its partition's CHS end has sector 0: BIOSes take the emulated disk's \
                   geometry from it";
        return Err(why.into());
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
    fn an_earlier_image_s_catalog_is_replaced() {
        let (tmp, mut t) = tree_of(&["isolinux/a.bin", "isolinux/boot.cat", "z.txt"]);
        let old = catalog(Some((30, Load::no_emulation(4))), None);
        fs::write(tmp.path().join("isolinux/boot.cat"), &old).unwrap();
        let mut t2 =
            super::super::tree::walk(tmp.path(), false, &Default::default(), &mut Vec::new())
                .unwrap();
        let boot = Boot {
            bios: Some("isolinux/a.bin".into()),
            catalog: Some("isolinux/boot.cat".into()),
            ..Boot::default()
        };
        add_catalog(&mut t2, &boot, tmp.path(), 5).unwrap();
        let dir = find(&t2, Path::new("isolinux")).unwrap();
        assert_eq!(child_names(&t2, dir), ["a.bin", "boot.cat"]);
        assert_eq!(
            t2.data.len(),
            3,
            "the old catalog's data is gone: {:?}",
            t2.data
        );
        let r = resolve(&t2, &boot, tmp.path(), &mut Vec::new())
            .unwrap()
            .unwrap();
        assert_eq!(r.catalog, 2, "the new catalog is the last data");
        // A file of that name that is no catalog stays an error.
        let e = add_catalog(&mut t, &boot, tmp.path(), 5)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a boot catalog"), "{e}");
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
