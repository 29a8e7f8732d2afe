//! El Torito boot (the El Torito specification 1.0, and the UEFI platform id 0xEF of UEFI
//! 2.x 12.3.2.1): the boot record volume descriptor, the boot catalog and the boot info table
//! isolinux and GRUB read, all for images that boot without emulation (the only mode BIOS boot
//! loaders and UEFI use today).
//!
//! The catalog is a file of the image (at `--boot-catalog`, `boot.cat` by default), as
//! genisoimage and xorriso show it. [`add_catalog`] puts it into the tree before the layout,
//! [`resolve`] finds the boot images there, and the layout writes the record and the catalog's
//! bytes; the boot info table goes into the image's copy of the BIOS boot image as it is
//! streamed ([`put_info_table`]): the source file is never changed.

use super::tree::{Kind, Meta, Node, NodeId, Tree};
use super::Error;
use crate::iso9660::ondisk::{boot_record, vd_type, SECTOR_SIZE, STANDARD_ID};
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
const HEADER_FINAL: u8 = 0x91;
const ENTRY: usize = 32;

/// What to make bootable, as the command line gave it; paths are inside the source tree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Boot {
    /// BIOS boot image (genisoimage's `-b`, no emulation).
    pub bios: Option<PathBuf>,
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
}

impl Boot {
    /// Whether the image boots at all (then it gets a catalog).
    pub fn any(&self) -> bool {
        self.bios.is_some() || self.efi.is_some()
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
    /// The BIOS image and the sectors to load.
    pub bios: Option<(usize, u16)>,
    pub efi: Option<usize>,
    pub catalog: usize,
}

/// Bytes of MBR boot code before the isohybrid fields (the rest of an MBR file is ignored).
pub const MBR_CODE: usize = 432;
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

/// Reads the MBR boot code at `path` (432 to 512 bytes; the first 432 are used).
pub fn read_mbr_code(path: &Path) -> Result<Vec<u8>, Error> {
    let what = "isohybrid MBR";
    let data = std::fs::read(path).map_err(|e| Error::Boot {
        what,
        path: path.to_path_buf(),
        why: format!("reading it: {e}"),
    })?;
    if !(MBR_CODE..=512).contains(&data.len()) {
        return Err(Error::Boot {
            what,
            path: path.to_path_buf(),
            why: format!(
                "{} bytes; MBR boot code (isolinux's isohdpfx.bin) is 432 to 512",
                data.len()
            ),
        });
    }
    Ok(data[..MBR_CODE].to_vec())
}

/// Writes the isohybrid MBR ([`isohybrid_mbr`], boot code `code`) into the first sector of
/// `plan`, once the BIOS boot image (read from where `tree` takes it: the source tree, or
/// grafted in) is found to be an isolinux.bin it can start. The disk signature is the image's
/// own: the same for the same label and time.
pub(super) fn put_isohybrid_mbr(
    plan: &mut super::layout::Plan,
    code: &[u8],
    tree: &Tree,
    label: &str,
    now: i64,
) -> Result<(), Error> {
    let Some((data, lba)) = plan.bios_boot else {
        return Ok(());
    };
    let path = tree
        .data
        .get(data)
        .map(|d| d.path.clone())
        .ok_or(Error::Layout("the BIOS boot image is not in the tree"))?;
    let mut head = [0u8; 0x44];
    std::fs::File::open(&path)
        .and_then(|f| std::os::unix::fs::FileExt::read_exact_at(&f, &mut head, 0))
        .map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
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
    let chs = |s: u64| -> [u8; 3] {
        let cyl = (s / (HEADS * SECTORS_PER_TRACK)).min(1023);
        let head = (s / SECTORS_PER_TRACK) % HEADS;
        let sector = s % SECTORS_PER_TRACK + 1;
        [
            head as u8,
            (sector as u8) | ((cyl >> 2) as u8 & 0xC0),
            cyl as u8,
        ]
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
                at = tree
                    .children(at)
                    .iter()
                    .copied()
                    .find(|&id| {
                        tree.nodes
                            .get(id)
                            .is_some_and(|n| n.name == name.as_bytes())
                    })
                    .ok_or(NOT_IN_TREE)?;
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
    tree.nodes.push(Node {
        name: name.as_bytes().to_vec(),
        parent,
        meta: Meta {
            mode: libc::S_IFREG | 0o444,
            uid: 0,
            gid: 0,
            mtime: now,
            atime: now,
            ctime: now,
        },
        kind: Kind::File { data },
        serial,
        nlink: 1,
    });
    let at = tree.children(parent).partition_point(|&c| {
        tree.nodes
            .get(c)
            .is_some_and(|n| n.name.as_slice() < name.as_bytes())
    });
    if let Some(Node {
        kind: Kind::Dir { children },
        ..
    }) = tree.nodes.get_mut(parent)
    {
        children.insert(at, id);
    }
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
pub(super) fn resolve(tree: &Tree, boot: &Boot, src: &Path) -> Result<Option<Resolved>, Error> {
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
            if boot.info_table && size > MAX_INFO_TABLE_FILE {
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
            Some((data, boot.load_size.unwrap_or(DEFAULT_LOAD_SIZE)))
        }
        None => None,
    };
    let efi = match &boot.efi {
        Some(rel) => Some(boot_file(tree, rel, src, "EFI boot image")?.0),
        None => None,
    };
    let rel = boot.catalog_path();
    let catalog = match find(tree, relative(&rel)).map(|id| tree.nodes.get(id).map(|n| &n.kind)) {
        Ok(Some(Kind::File { data })) => *data,
        _ => return Err(Error::Layout("the boot catalog is not in the tree")),
    };
    Ok(Some(Resolved { bios, efi, catalog }))
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

/// A bootable no-emulation entry (El Torito 2.2, 2.5) loading `sectors` 512-byte sectors
/// from `lba`.
fn entry(lba: u32, sectors: u16) -> [u8; ENTRY] {
    let mut e = [0u8; ENTRY];
    e[0] = BOOTABLE;
    e[1] = NO_EMULATION;
    // load segment 0: the traditional 0x7C0
    e[6..8].copy_from_slice(&sectors.to_le_bytes());
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
/// with the EFI entry. Each image as (first sector, 512-byte sectors to load).
pub(super) fn catalog(bios: Option<(u32, u16)>, efi: Option<(u32, u16)>) -> Vec<u8> {
    let mut v = vec![0u8; SECTOR_SIZE as usize];
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
    if let Some((lba, sectors)) = default {
        v[ENTRY..2 * ENTRY].copy_from_slice(&entry(lba, sectors));
    }
    if let Some((lba, sectors)) = section {
        let header = &mut v[2 * ENTRY..3 * ENTRY];
        header[0] = HEADER_FINAL;
        header[1] = PLATFORM_EFI;
        header[2..4].copy_from_slice(&1u16.to_le_bytes());
        v[3 * ENTRY..4 * ENTRY].copy_from_slice(&entry(lba, sectors));
    }
    v
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
        let r = resolve(&t, &boot, tmp.path()).unwrap().unwrap();
        assert_eq!(t.data[r.catalog].size, 2048);
        assert_eq!(r.bios.map(|b| b.1), Some(DEFAULT_LOAD_SIZE));
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
                .and_then(|()| resolve(&t, boot, tmp.path()).map(|_| ()))
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{boot:?}: {e}");
            assert!(e.contains(&tmp.path().display().to_string()), "{e}");
        }
    }

    #[test]
    fn catalogs_for_bios_efi_and_both() {
        let both = catalog(Some((30, 4)), Some((40, 2880)));
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
