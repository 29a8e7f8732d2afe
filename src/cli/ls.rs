//! `isomgr ls [-l] [-R] [--json] IMAGE [PATH]`: list inside an image without mounting it;
//! `isomgr ls --boot IMAGE`: what makes it boot.

use std::io::Write;
use std::path::Path;
use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;

use crate::iso9660::eltorito::{self, Mbr};
use crate::iso9660::read::join_path;
use crate::iso9660::{ondisk, Entry, Kind};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Long listing: mode, links, owner, group, size, modification time, symlink target.
    #[arg(short = 'l')]
    pub long: bool,
    /// Walk the whole tree below PATH.
    #[arg(short = 'R')]
    pub recursive: bool,
    /// One JSON array of {path, type, size, mode, mtime, target}.
    #[arg(long)]
    pub json: bool,
    /// Show what makes the image boot instead: the El Torito catalog and boot images (which
    /// files they are, what their copies hold), the MBR, GPT and partitions, and the mkiso
    /// options that make an image boot the same way (what remastering it needs), with the
    /// commands that copy out of the image what only it holds (appended partitions, MBR code).
    /// With --json: one document {catalog, images, mbr, gpt, partitions, mkiso, copy,
    /// not_made}.
    #[arg(long, conflicts_with_all = ["long", "recursive"])]
    pub boot: bool,
    /// The image file or block device.
    pub image: PathBuf,
    /// Absolute path inside the image.
    #[arg(default_value = "/")]
    pub path: String,
}

#[derive(Serialize)]
struct JsonEntry<'a> {
    path: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    size: u64,
    mode: String,
    mtime: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
}

pub fn run(args: &Args, out: &mut impl Write) -> anyhow::Result<()> {
    let image = super::open_image(&args.image)?;
    let ctx = || args.image.display().to_string();
    if args.boot {
        let boot = eltorito::read(&image, image.info().boot_catalog).with_context(ctx)?;
        return show_boot(&boot, &args.image, args.json, out);
    }
    let start = image.lookup(&args.path).with_context(ctx)?;
    let start_path = if args.path.starts_with('/') {
        args.path.clone()
    } else {
        format!("/{}", args.path)
    };
    let mut listed: Vec<(String, Entry)> = Vec::new();
    if start.kind != Kind::Dir {
        listed.push((start_path.clone(), start));
    } else if args.recursive {
        image
            .walk(&start, &start_path, |p, e| {
                listed.push((p.to_owned(), e.clone()));
                Ok(())
            })
            .with_context(ctx)?;
    } else {
        for e in image.read_dir(&start).with_context(ctx)? {
            let p = join_path(&start_path, &e.name.to_string_lossy());
            listed.push((p, e));
        }
    }
    if args.json {
        let rows: Vec<JsonEntry<'_>> = listed
            .iter()
            .map(|(p, e)| JsonEntry {
                path: p,
                kind: e.kind.as_str(),
                size: e.size,
                mode: format!("{:04o}", e.mode),
                mtime: e.mtime.secs,
                target: e.target.as_ref().map(|t| t.to_string_lossy().into_owned()),
            })
            .collect();
        super::write_json(out, &rows)?;
        return Ok(());
    }
    for (path, e) in &listed {
        let shown = if args.recursive || start_path_is_file(&listed, path) {
            path.clone()
        } else {
            e.name.to_string_lossy().into_owned()
        };
        if args.long {
            let target = match &e.target {
                Some(t) => format!(" -> {}", t.to_string_lossy()),
                None => String::new(),
            };
            writeln!(
                out,
                "{} {:>3} {:>5} {:>5} {:>12} {} {shown}{target}",
                mode_string(e),
                e.nlink,
                e.uid,
                e.gid,
                e.size,
                format_time(e.mtime.secs),
            )?;
        } else {
            writeln!(out, "{shown}")?;
        }
    }
    out.flush()?;
    Ok(())
}

/// What `ls --boot` shows (also as its JSON document).
#[derive(Serialize)]
struct BootView {
    /// The catalog's path in the image (null when no file is it) and sector.
    catalog: Option<CatalogView>,
    images: Vec<BootImageView>,
    /// "isohybrid", "grub2", "other", or null.
    mbr: Option<&'static str>,
    gpt: bool,
    /// The partition table's partitions (the GPT's behind a protective MBR, else the MBR's).
    partitions: Vec<PartitionView>,
    /// The mkiso options that make an image boot the same way.
    mkiso: Vec<String>,
    /// The commands that copy out of the image the files those options name that it holds
    /// only there (an appended partition, the MBR's boot code), into the current directory.
    copy: Vec<String>,
    /// What of it mkiso does not make.
    not_made: Vec<String>,
}

#[derive(Serialize)]
struct PartitionView {
    number: u8,
    /// "0xNN" in an MBR, a GUID in a GPT.
    #[serde(rename = "type")]
    ty: String,
    /// First 512-byte sector, and how many.
    first: u64,
    sectors: u64,
    active: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    name: String,
    /// The file of the image that starts where it does.
    file: Option<String>,
    /// It holds an ISO 9660 volume of its own (a partition offset's).
    volume: bool,
    /// Appended after the volume (no file of it): the file `--append-partition` takes, to be
    /// copied out of the image first (see `copy`).
    #[serde(skip_serializing_if = "Option::is_none")]
    appended_as: Option<String>,
}

#[derive(Serialize)]
struct CatalogView {
    path: Option<String>,
    sector: u32,
}

#[derive(Serialize)]
struct BootImageView {
    /// "bios", "uefi" or the platform id ("0x02").
    platform: String,
    /// "none", "floppy" or "hard-disk" (or "media N").
    emulation: String,
    /// The emulated floppy's size ("1.44 MB"), or the emulated disk's partition type.
    #[serde(skip_serializing_if = "Option::is_none")]
    disk: Option<String>,
    sectors: u16,
    sector: u32,
    path: Option<String>,
    bootable: bool,
    boot_info_table: bool,
    grub2_boot_info: bool,
}

/// Where Debian puts the MBR boot code `--isohybrid-mbr` and `--grub2-mbr` take.
const ISOHDPFX: &str = "/usr/lib/ISOLINUX/isohdpfx.bin";
const BOOT_HYBRID: &str = "/usr/lib/grub/i386-pc/boot_hybrid.img";

/// What `ls --boot` shows of `boot`, with the mkiso options that make an image boot the same
/// way and what of it mkiso does not make.
fn boot_view(boot: &eltorito::Boot, image: &Path) -> BootView {
    let mut mkiso: Vec<String> = Vec::new();
    let mut copy: Vec<String> = Vec::new();
    let img = shell_word(image);
    let mut not_made: Vec<String> = Vec::new();
    let rel = |p: &str| p.trim_start_matches('/').to_string();
    if let Some(p) = boot
        .catalog
        .as_ref()
        .and_then(|(_, p)| p.as_deref())
        .filter(|p| *p != "/boot.cat")
    {
        mkiso.extend(["--boot-catalog".into(), rel(p)]);
    }
    let (mut bios_seen, mut efi_seen) = (false, false);
    let mut images = Vec::new();
    for img in &boot.images {
        let e = &img.entry;
        let platform = match e.platform {
            0 => "bios".to_string(),
            0xEF => "uefi".to_string(),
            p => format!("{p:#04x}"),
        };
        let (emulation, disk) = match e.media {
            0 => ("none".to_string(), None),
            1 => ("floppy".into(), Some("1.2 MB".to_string())),
            2 => ("floppy".into(), Some("1.44 MB".into())),
            3 => ("floppy".into(), Some("2.88 MB".into())),
            4 => (
                "hard-disk".into(),
                Some(format!("partition type {:#04x}", e.system_type)),
            ),
            m => (format!("media {m}"), None),
        };
        let partition = boot
            .partitions
            .iter()
            .find(|p| p.appended() && p.first == u64::from(e.lba) * 4);
        match (&img.path, e.platform) {
            (None, 0xEF) if !efi_seen && e.media == 0 && partition.is_some() => {
                efi_seen = true;
                if let Some(p) = partition {
                    mkiso.extend(["--efi-boot-partition".into(), p.number.to_string()]);
                }
            }
            (None, _) => not_made.push(format!(
                "the {} image at sector {}, which no file of the image holds (an appended \
                 partition?)",
                platform.to_uppercase(),
                e.lba
            )),
            (Some(path), 0) if !bios_seen => {
                bios_seen = true;
                mkiso.extend(["--boot".into(), rel(path)]);
                match emulation.as_str() {
                    "none" if e.sectors != 4 => {
                        mkiso.extend(["--boot-load-size".into(), e.sectors.to_string()]);
                    }
                    "none" => {}
                    "floppy" | "hard-disk" => {
                        mkiso.extend(["--boot-emulation".into(), emulation.clone()]);
                    }
                    other => not_made.push(format!("boot {other}")),
                }
                if img.info_table {
                    mkiso.push("--boot-info-table".into());
                }
                if img.grub2_boot_info {
                    mkiso.push("--grub2-boot-info".into());
                }
            }
            (Some(path), 0xEF) if !efi_seen && e.media == 0 => {
                efi_seen = true;
                mkiso.extend(["--efi-boot".into(), rel(path)]);
            }
            (Some(path), _) => {
                not_made.push(format!("the {} image {path}", platform.to_uppercase()));
            }
        }
        images.push(BootImageView {
            platform,
            emulation,
            disk,
            sectors: e.sectors,
            sector: e.lba,
            path: img.path.clone(),
            bootable: e.bootable,
            boot_info_table: img.info_table,
            grub2_boot_info: img.grub2_boot_info,
        });
    }
    // what mkiso's hybrid MBRs start: a BIOS image without emulation, with a boot info table
    // (and GRUB's boot info, for GRUB's)
    let bios = boot
        .images
        .iter()
        .find(|i| i.entry.platform == 0 && i.path.is_some());
    let startable = |grub: bool| {
        bios.is_some_and(|i| i.entry.media == 0 && i.info_table && (!grub || i.grub2_boot_info))
    };
    let mbr = match boot.mbr {
        None => None,
        Some(Mbr::Isohybrid) => {
            if startable(false) {
                let code = [(0, 432)];
                let file = mbr_code_file(boot, ISOHDPFX, &code, &img, &mut copy);
                mkiso.extend(["--isohybrid-mbr".into(), file]);
            } else {
                not_made.push("its isohybrid MBR, which starts no BIOS image mkiso can".into());
            }
            Some("isohybrid")
        }
        Some(Mbr::Grub2) => {
            if startable(true) {
                // (GRUB's core image sector at 0x1B0 is the image's own)
                let code = [(0, 0x1B0), (0x1B8, 446)];
                let file = mbr_code_file(boot, BOOT_HYBRID, &code, &img, &mut copy);
                mkiso.extend(["--grub2-mbr".into(), file]);
            } else {
                not_made.push(
                    "its GRUB hybrid MBR (mkiso writes one for GRUB's El Torito image with a \
                     boot info table and GRUB boot info)"
                        .into(),
                );
            }
            Some("grub2")
        }
        Some(Mbr::Other) => {
            not_made.push("its MBR".into());
            Some("other")
        }
    };
    let appended: Vec<&eltorito::Partition> =
        boot.partitions.iter().filter(|p| p.appended()).collect();
    for p in &appended {
        mkiso.extend([
            "--append-partition".into(),
            p.number.to_string(),
            p.ty.to_string(),
            appended_file(p),
        ]);
        copy.push(format!(
            "dd if={img} of={} bs=512 skip={} count={}",
            appended_file(p),
            p.first,
            p.sectors
        ));
    }
    // the appended partitions are in a GPT behind a protective MBR
    let appended_gpt = boot.protective && !appended.is_empty();
    if appended_gpt {
        mkiso.push("--appended-part-as-gpt".into());
    }
    let plain_active = !boot.protective
        && boot.mbr.is_none()
        && boot
            .partitions
            .first()
            .is_some_and(|p| p.number == 1 && p.active);
    if !appended.is_empty() && (boot.force_bootable_entry || plain_active) {
        mkiso.push("--mbr-force-bootable".into());
    }
    if let Some(p) = boot.partitions.iter().find(|p| p.holds_volume) {
        if appended_gpt {
            mkiso.extend(["--partition-offset".into(), (p.first / 4).to_string()]);
        } else {
            not_made.push(format!(
                "its partition offset (a second volume in partition {} from sector {}) \
                 without appended partitions in a GPT",
                p.number, p.first
            ));
        }
    }
    if boot.gpt {
        let basdat =
            !boot.protective && boot.mbr == Some(Mbr::Isohybrid) && startable(false) && efi_seen;
        if basdat {
            mkiso.push("--isohybrid-gpt-basdat".into());
        } else if !appended_gpt {
            not_made.push("its GPT".into());
        }
    }
    let partitions = boot
        .partitions
        .iter()
        .map(|p| PartitionView {
            number: p.number,
            ty: p.ty.to_string(),
            first: p.first,
            sectors: p.sectors,
            active: p.active,
            name: p.name.clone(),
            file: p.file.clone(),
            volume: p.holds_volume,
            appended_as: p.appended().then(|| appended_file(p)),
        })
        .collect();
    BootView {
        catalog: boot.catalog.as_ref().map(|(sector, path)| CatalogView {
            path: path.clone(),
            sector: *sector,
        }),
        images,
        mbr,
        gpt: boot.gpt,
        partitions,
        mkiso,
        copy,
        not_made,
    }
}

/// The MBR boot code file the options name: `installed` (where Debian keeps it) when it is
/// there and holds the image's boot code in `ranges` (from, to), else `mbr.bin`, copied out
/// of the image (a command added to `copy`), as another distribution's or build's code is.
fn mbr_code_file(
    boot: &eltorito::Boot,
    installed: &str,
    ranges: &[(usize, usize)],
    img: &str,
    copy: &mut Vec<String>,
) -> String {
    let file = std::fs::read(installed).unwrap_or_default();
    let same = ranges.iter().all(|&(a, b)| {
        file.get(a..b)
            .is_some_and(|f| boot.mbr_code.get(a..b) == Some(f))
    });
    if same {
        return installed.to_string();
    }
    let n = ranges.iter().map(|&(_, b)| b).max().unwrap_or(446);
    copy.push(format!("dd if={img} of=mbr.bin bs={n} count=1"));
    "mbr.bin".into()
}

/// The file `ls --boot`'s options name for an appended partition, copied out of the image.
fn appended_file(p: &eltorito::Partition) -> String {
    format!("partition{}.img", p.number)
}

/// `path` as one shell word.
fn shell_word(path: &Path) -> String {
    let s = path.to_string_lossy();
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._/-+=:,@".contains(&b))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// `ls --boot`: a line per part of what makes the image boot, then the mkiso options and what
/// mkiso does not make; or, with `json`, the [`BootView`] document.
fn show_boot(
    boot: &eltorito::Boot,
    image: &Path,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let v = boot_view(boot, image);
    if json {
        return super::write_json(out, &v);
    }
    let unnamed = "(not a file of the image)";
    match &v.catalog {
        None => writeln!(out, "catalog  none (no El Torito boot record)")?,
        Some(c) => writeln!(
            out,
            "catalog  {} (sector {})",
            c.path.as_deref().unwrap_or(unnamed),
            c.sector
        )?,
    }
    for i in &v.images {
        let platform = match i.platform.as_str() {
            "bios" | "uefi" => i.platform.to_uppercase(),
            p => format!("platform {p}"),
        };
        let mut what = vec![match (&i.disk, i.emulation.as_str()) {
            (_, "none") => "no emulation".to_string(),
            (Some(d), "floppy") => format!("{d} floppy"),
            (Some(d), "hard-disk") => format!("hard disk ({d})"),
            (_, e) => e.to_string(),
        }];
        what.push(match i.sectors {
            1 => "1 sector".to_string(),
            n => format!("{n} sectors"),
        });
        for (on, name) in [
            (!i.bootable, "not bootable"),
            (i.boot_info_table, "boot info table"),
            (i.grub2_boot_info, "GRUB boot info"),
        ] {
            if on {
                what.push(name.into());
            }
        }
        let path = i.path.as_deref().unwrap_or(unnamed);
        writeln!(out, "{platform:<8} {path}  {}", what.join(", "))?;
    }
    let mbr = match v.mbr {
        None => "none",
        Some("isohybrid") => "isohybrid (isolinux's isohdpfx.bin)",
        Some("grub2") => "GRUB hybrid (boot_hybrid.img)",
        Some(_) => "another",
    };
    writeln!(out, "MBR      {mbr}")?;
    writeln!(out, "GPT      {}", if v.gpt { "yes" } else { "no" })?;
    for p in &v.partitions {
        let mut what = vec![format!("from sector {}, {} sectors", p.first, p.sectors)];
        if p.active {
            what.push("active".into());
        }
        if !p.name.is_empty() {
            what.push(format!("\"{}\"", p.name));
        }
        if let Some(f) = &p.file {
            what.push(format!("the file {f}"));
        }
        if p.volume {
            what.push("a volume of its own".into());
        }
        if let Some(file) = &p.appended_as {
            what.push(format!("appended ({file})"));
        }
        writeln!(out, "part {:<3} {} {}", p.number, p.ty, what.join(", "))?;
    }
    if v.mkiso.is_empty() {
        writeln!(
            out,
            "mkiso    (no options: nothing of it boots as mkiso makes images boot)"
        )?;
    } else {
        writeln!(out, "mkiso    {}", v.mkiso.join(" "))?;
    }
    for c in &v.copy {
        writeln!(out, "copy     {c}")?;
    }
    if !v.not_made.is_empty() {
        writeln!(out, "not made by mkiso: {}", v.not_made.join("; "))?;
    }
    out.flush()?;
    Ok(())
}

fn start_path_is_file(listed: &[(String, Entry)], path: &str) -> bool {
    listed.len() == 1
        && listed
            .first()
            .is_some_and(|(p, e)| p == path && e.kind != Kind::Dir)
}

/// `ls -l` style mode: type letter and rwx triplets with setuid/setgid/sticky.
fn mode_string(e: &Entry) -> String {
    let t = match e.kind {
        Kind::Dir => 'd',
        Kind::Symlink => 'l',
        Kind::File => '-',
        Kind::Other => '?',
    };
    let m = e.mode;
    let bit = |mask: u32, c: char| if m & mask != 0 { c } else { '-' };
    let special = |x: u32, s: u32, lower: char, upper: char| match (m & x != 0, m & s != 0) {
        (true, true) => lower,
        (false, true) => upper,
        (true, false) => 'x',
        (false, false) => '-',
    };
    [
        t,
        bit(0o400, 'r'),
        bit(0o200, 'w'),
        special(0o100, 0o4000, 's', 'S'),
        bit(0o040, 'r'),
        bit(0o020, 'w'),
        special(0o010, 0o2000, 's', 'S'),
        bit(0o004, 'r'),
        bit(0o002, 'w'),
        special(0o001, 0o1000, 't', 'T'),
    ]
    .iter()
    .collect()
}

/// UTC "YYYY-MM-DD HH:MM".
fn format_time(secs: i64) -> String {
    let (y, m, d) = ondisk::civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem / 60 % 60
    )
}
