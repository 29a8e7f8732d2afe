//! `isomgr mkiso`: builds an ISO9660 image (Rock Ridge, Joliet) from a directory tree.
//!
//! The shell around [`crate::iso9660::write`]: reads `SOURCE_DATE_EPOCH`, shows progress on a
//! terminal, prints warnings to stderr. Nothing goes to stdout but the image, with `-o -`.

use crate::iso9660::write::{self, Options, Progress};
use anyhow::Context;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Build an ISO image from a directory tree (what `genisoimage -J -r` does).
#[derive(clap::Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("bootable")
    .args(["boot", "efi_boot", "efi_boot_partition"]).multiple(true)))]
#[command(group(clap::ArgGroup::new("efi").args(["efi_boot", "efi_boot_partition"])))]
pub struct Args {
    /// Directory whose contents become the image's root.
    pub src_dir: PathBuf,
    /// Image to write: a file (written under a temporary name beside it, then renamed over
    /// it), or `-` (standard output), a pipe or a device (written in place).
    #[arg(short = 'o', long = "output", value_name = "OUT.iso")]
    pub output: PathBuf,
    /// Volume label, at most 32 characters (default: the source directory's name).
    #[arg(short = 'V', long = "volume-label", value_name = "LABEL", value_parser = parse_label)]
    pub label: Option<String>,
    /// Leave out the Joliet tree.
    #[arg(long)]
    pub no_joliet: bool,
    /// Leave out Rock Ridge (POSIX names, modes, owners, times, symlinks).
    #[arg(long)]
    pub no_rock_ridge: bool,
    /// Owners 0, everything readable, no write bits (genisoimage's -r).
    #[arg(long)]
    pub rational: bool,
    /// Fail on FIFOs, sockets and devices instead of skipping them.
    #[arg(long)]
    pub strict: bool,
    /// Leave out entries matching PATTERN, a shell glob (*, ?, [...]): without a '/' it is
    /// matched against each name at any depth, with one against the path from SRC_DIR
    /// (`/boot.cat` is the root's only). A directory left out takes everything under it.
    /// Repeatable (genisoimage's -m and -x).
    #[arg(long, value_name = "PATTERN", value_parser = parse_exclude)]
    pub exclude: Vec<String>,
    /// Put the file or directory SOURCE (anywhere; a symlink there is followed) into the image
    /// at PATH_IN_IMAGE, in place of what SRC_DIR has there; missing directories on the way
    /// are made. Repeatable, applied in order (genisoimage's -graft-points, xorriso's -map).
    #[arg(long, value_name = "PATH_IN_IMAGE=SOURCE", value_parser = write::tree::Graft::parse)]
    pub graft: Vec<write::tree::Graft>,
    /// Do not end the image with 300 KiB of zeros (genisoimage and xorriso add them too:
    /// some readers, GRUB among them, fail on a file in the last sectors without them).
    #[arg(long)]
    pub no_pad: bool,
    /// BIOS El Torito boot image, booted without emulation (isolinux.bin, GRUB's
    /// eltorito.img) unless --boot-emulation says otherwise: a file of the image, named by its
    /// path in it (in SRC_DIR or grafted in; genisoimage's -b).
    #[arg(long = "boot", value_name = "PATH")]
    pub boot: Option<PathBuf>,
    /// Boot the BIOS boot image as an emulated disk: `floppy` (an image of 1.2, 1.44 or
    /// 2.88 MB, genisoimage's -b without -no-emul-boot) or `hard-disk` (an MBR with one
    /// partition, genisoimage's -hard-disk-boot). The BIOS then serves it as drive 0x00 or
    /// 0x80 (memtest86+, FreeDOS, firmware updaters).
    #[arg(long, value_name = "MODE", requires = "boot",
          conflicts_with_all = ["boot_load_size", "boot_info_table", "grub2_boot_info",
                                "isohybrid_mbr", "grub2_mbr"])]
    pub boot_emulation: Option<EmulationArg>,
    /// 512-byte sectors of the BIOS boot image the BIOS loads [default: 4].
    #[arg(long, value_name = "N", requires = "boot",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub boot_load_size: Option<u16>,
    /// Write the boot info table isolinux and GRUB need into the image's copy of the BIOS boot
    /// image (the source file is not changed).
    #[arg(long, requires = "boot")]
    pub boot_info_table: bool,
    /// UEFI El Torito boot image: a FAT image (holding EFI/BOOT/BOOTX64.EFI) of the image,
    /// named by its path in it (xorriso's -e).
    #[arg(long = "efi-boot", value_name = "PATH")]
    pub efi_boot: Option<PathBuf>,
    /// Append the file FILE (a path on this machine) after the ISO 9660 volume as partition
    /// N (2 to 4 in the MBR; to 8 with --appended-part-as-gpt) of type TYPE: 0xNN in an MBR
    /// (0xef: an EFI system partition), a GUID or 0xNN in a GPT (xorriso's
    /// -append_partition). Repeatable.
    #[arg(long, num_args = 3, value_names = ["N", "TYPE", "FILE"])]
    pub append_partition: Vec<String>,
    /// UEFI El Torito boot image: the appended partition N (a FAT image), as Debian's
    /// memtest86+ and Ubuntu's images have it (xorriso's
    /// -e --interval:appended_partition_N:all::). UEFI firmware then boots the image from a
    /// disk through the partition table too.
    #[arg(long, value_name = "N", conflicts_with = "efi_boot")]
    pub efi_boot_partition: Option<u8>,
    /// Put the appended partitions in a GPT behind a protective MBR (with --grub2-mbr or
    /// --isohybrid-mbr, its boot code stays in it), rather than in the MBR, as Ubuntu's and
    /// Arch Linux's images have them (xorriso's -appended_part_as_gpt).
    #[arg(
        long,
        requires = "append_partition",
        conflicts_with = "isohybrid_gpt_basdat"
    )]
    pub appended_part_as_gpt: bool,
    /// Mark a partition active for BIOSes that boot only a disk with one: partition 1 in the
    /// MBR, or a second entry over the first sector beside a protective MBR (xorriso's
    /// --mbr-force-bootable, as Ubuntu's images have it).
    #[arg(long, requires = "append_partition")]
    pub mbr_force_bootable: bool,
    /// With --appended-part-as-gpt: the volume's partition (1, "ISO9660") starts N sectors of
    /// 2048 bytes in, and holds a second set of descriptors and tree of its own there, so that
    /// it mounts by itself, as Ubuntu's images have it (xorriso's -partition_offset 16).
    #[arg(long, value_name = "N", requires = "appended_part_as_gpt",
          value_parser = clap::value_parser!(u32).range(16..=1_000_000))]
    pub partition_offset: Option<u32>,
    /// Make an isohybrid image, which also boots written to a USB stick or disk: this MBR boot
    /// code (isolinux's isohdpfx.bin, a file outside SRC_DIR) goes into its first sector with
    /// a partition table, as syslinux's isohybrid writes it (with --efi-boot, as
    /// `isohybrid --uefi`: an EFI system partition over the EFI image too). Needs --boot with
    /// an isolinux.bin and --boot-info-table.
    #[arg(long, value_name = "FILE", requires_all = ["boot", "boot_info_table"])]
    pub isohybrid_mbr: Option<PathBuf>,
    /// With --isohybrid-mbr and --efi-boot (or --efi-boot-partition): a GPT beside the MBR
    /// too, the image and the EFI image in it as Basic Data partitions, as xorriso's
    /// -isohybrid-gpt-basdat writes it for Debian's and RHEL's installation images (Apple's
    /// firmware boots a stick from it; PC firmware and Linux go by the MBR).
    #[arg(long, requires_all = ["isohybrid_mbr", "efi"])]
    pub isohybrid_gpt_basdat: bool,
    /// Write where the rest of GRUB's core image lies into the image's copy of the BIOS boot
    /// image, GRUB's eltorito.img (from grub-mkimage -O i386-pc-eltorito), so that it also
    /// loads from a disk (xorriso's --grub2-boot-info).
    #[arg(long, requires = "boot")]
    pub grub2_boot_info: bool,
    /// Make a GRUB hybrid image, which also boots written to a USB stick or disk: this MBR
    /// boot code (GRUB's boot_hybrid.img, a file outside SRC_DIR) goes into its first sector
    /// with an active partition over the image, as grub-mkrescue has xorriso write it
    /// (--grub2-mbr with --protective-msdos-label). Needs --boot with GRUB's eltorito.img,
    /// --boot-info-table and --grub2-boot-info.
    #[arg(long, value_name = "FILE", conflicts_with = "isohybrid_mbr",
          requires_all = ["boot", "boot_info_table", "grub2_boot_info"])]
    pub grub2_mbr: Option<PathBuf>,
    /// Where the boot catalog appears in the image [default: boot.cat].
    #[arg(long, value_name = "PATH", requires = "bootable")]
    pub boot_catalog: Option<PathBuf>,
}

/// `--boot-emulation`'s modes (no emulation is the default, without the option).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmulationArg {
    Floppy,
    HardDisk,
}

/// A label as `-V` takes it: what fits the primary volume descriptor, one byte a character.
fn parse_label(label: &str) -> Result<String, String> {
    let n = label.chars().count();
    if n > write::names::MAX_LABEL {
        return Err(format!(
            "{n} characters; an ISO 9660 volume label holds at most {}",
            write::names::MAX_LABEL
        ));
    }
    Ok(label.to_string())
}

/// An `--exclude` pattern, refused when it can match nothing.
fn parse_exclude(pattern: &str) -> Result<String, String> {
    write::tree::Exclude::new(&[pattern.to_string()])?;
    Ok(pattern.to_string())
}

fn default_label(src: &Path) -> String {
    let canon = std::fs::canonicalize(src).unwrap_or_else(|_| src.to_path_buf());
    canon
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "CDROM".to_string())
}

/// How long a build runs before progress shows: `ISOMGR_PROGRESS_DELAY` (seconds, as
/// `GIT_PROGRESS_DELAY` is for git), else half a second, so that quick builds print nothing.
fn progress_delay() -> Duration {
    std::env::var("ISOMGR_PROGRESS_DELAY")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .unwrap_or(Duration::from_millis(500))
}

/// The progress line on a terminal: nothing before `delay`, then at most ten updates a second,
/// each rewriting the line (`\r`), and always the last one once something was shown.
struct ProgressLine {
    started: Instant,
    delay: Duration,
    last: Option<Instant>,
}

impl ProgressLine {
    const INTERVAL: Duration = Duration::from_millis(100);

    fn new(delay: Duration, started: Instant) -> Self {
        Self {
            started,
            delay,
            last: None,
        }
    }

    /// Whether a line has been printed (and so needs ending).
    fn shown(&self) -> bool {
        self.last.is_some()
    }

    /// The text to print for `p` at `now`, if any.
    fn update(&mut self, p: Progress, now: Instant) -> Option<String> {
        let finished = p.done >= p.total;
        let due = match self.last {
            None => now.duration_since(self.started) >= self.delay,
            Some(last) => finished || now.duration_since(last) >= Self::INTERVAL,
        };
        if !due {
            return None;
        }
        self.last = Some(now);
        let pct = (p.done * 100).checked_div(p.total).unwrap_or(100);
        Some(format!(
            "\rmkiso: {} / {} MiB ({pct}%)   ",
            p.done >> 20,
            p.total >> 20
        ))
    }
}

fn source_date_epoch() -> anyhow::Result<Option<i64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => {
            v.trim().parse::<i64>().map(Some).with_context(|| {
                format!("SOURCE_DATE_EPOCH={v:?} is not a whole number of seconds")
            })
        }
        _ => Ok(None),
    }
}

/// On SIGINT, SIGTERM and SIGHUP, removes the image's temporary file where it has a name (see
/// [`write::target`]), then lets the signal end the process as it would have.
fn remove_the_unfinished_image_on_signals() {
    extern "C" fn on_signal(sig: libc::c_int) {
        write::target::remove_pending_tmp();
        // SA_RESETHAND put the default action back, and SA_NODEFER lets it act at once.
        // SAFETY: raise is async-signal-safe.
        unsafe { libc::raise(sig) };
    }
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction is valid; the handler makes only async-signal-safe calls.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            libc::sigaction(sig, std::ptr::null(), &mut old);
            if old.sa_sigaction == libc::SIG_IGN {
                // nohup, or `&` in a script: a signal that was ignored stays ignored
                continue;
            }
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESETHAND | libc::SA_NODEFER;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// The partitions `--append-partition` appends, checked together with the options that
/// place them (a usage error, exit code 2, names the option and the cause).
fn appended_partitions(args: &Args) -> anyhow::Result<Vec<write::partition::Append>> {
    let flag = |value: String, message: String| crate::config::Error::Flag {
        flag: "--append-partition",
        value,
        message,
    };
    let mut out = Vec::new();
    // each occurrence takes exactly three values
    for values in args.append_partition.chunks(3) {
        let a = write::partition::Append::parse(values)
            .map_err(|message| flag(values.join(" "), message))?;
        out.push(a);
    }
    write::partition::check(&out, args.appended_part_as_gpt, args.efi_boot_partition)
        .map_err(|message| flag(args.append_partition.join(" "), message))?;
    if args.isohybrid_gpt_basdat {
        if let Some(a) = out
            .iter()
            .find(|a| Some(a.number) != args.efi_boot_partition)
        {
            return Err(flag(
                a.path.display().to_string(),
                "--isohybrid-gpt-basdat: the GPT holds the volume and the EFI boot image; \
                 only the --efi-boot-partition may be appended"
                    .into(),
            )
            .into());
        }
    }
    Ok(out)
}

/// Runs `mkiso`; `_out` gets nothing (the image is the output).
pub fn run(args: &Args, _out: &mut impl Write) -> anyhow::Result<()> {
    let opts = Options {
        label: args
            .label
            .clone()
            .unwrap_or_else(|| default_label(&args.src_dir)),
        joliet: !args.no_joliet,
        rock_ridge: !args.no_rock_ridge,
        rational: args.rational,
        strict: args.strict,
        source_date_epoch: source_date_epoch()?,
        boot: write::boot::Boot {
            bios: args.boot.clone(),
            emulation: match args.boot_emulation {
                None => write::boot::Emulation::None,
                Some(EmulationArg::Floppy) => write::boot::Emulation::Floppy,
                Some(EmulationArg::HardDisk) => write::boot::Emulation::HardDisk,
            },
            load_size: args.boot_load_size,
            info_table: args.boot_info_table,
            efi: args.efi_boot.clone(),
            catalog: args.boot_catalog.clone(),
            isohybrid_mbr: args.isohybrid_mbr.clone(),
            gpt: args.isohybrid_gpt_basdat,
            grub2_boot_info: args.grub2_boot_info,
            grub2_mbr: args.grub2_mbr.clone(),
            appended: appended_partitions(args)?,
            efi_partition: args.efi_boot_partition,
            appended_gpt: args.appended_part_as_gpt,
            mbr_force_bootable: args.mbr_force_bootable,
            partition_offset: args.partition_offset.unwrap_or(0),
        },
        pad: !args.no_pad,
        exclude: write::tree::Exclude::new(&args.exclude).map_err(anyhow::Error::msg)?,
        grafts: args.graft.clone(),
    };
    remove_the_unfinished_image_on_signals();
    let mut line = std::io::stderr()
        .is_terminal()
        .then(|| ProgressLine::new(progress_delay(), Instant::now()));
    let mut progress = |p: Progress| {
        if let Some(text) = line.as_mut().and_then(|l| l.update(p, Instant::now())) {
            eprint!("{text}");
        }
    };
    let result = write::build(&args.src_dir, &args.output, &opts, &mut progress);
    if line.as_ref().is_some_and(ProgressLine::shown) {
        eprintln!();
    }
    let report = result.with_context(|| match args.output.as_os_str() {
        o if o == "-" => "building the image on standard output".to_string(),
        _ => format!("building {}", args.output.display()),
    })?;
    for w in &report.warnings {
        eprintln!("isomgr: warning: {w}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn at(line: &mut ProgressLine, t0: Instant, ms: u64, done: u64) -> Option<String> {
        line.update(
            Progress {
                done: done * MIB,
                total: 100 * MIB,
            },
            t0 + Duration::from_millis(ms),
        )
    }

    #[test]
    fn quick_builds_show_nothing() {
        let t0 = Instant::now();
        let mut line = ProgressLine::new(Duration::from_millis(500), t0);
        for (ms, done) in [(0, 0), (100, 50), (499, 100)] {
            assert_eq!(at(&mut line, t0, ms, done), None, "at {ms} ms");
        }
    }

    #[test]
    fn long_builds_update_ten_times_a_second_and_always_show_the_end() {
        let t0 = Instant::now();
        let mut line = ProgressLine::new(Duration::from_millis(500), t0);
        assert_eq!(at(&mut line, t0, 0, 0), None);
        assert_eq!(at(&mut line, t0, 400, 10), None);
        let first = at(&mut line, t0, 500, 20).unwrap();
        assert!(first.starts_with('\r'), "{first:?}");
        assert!(first.contains("20 / 100 MiB (20%)"), "{first:?}");
        assert_eq!(at(&mut line, t0, 550, 25), None);
        assert!(at(&mut line, t0, 600, 30).unwrap().contains("(30%)"));
        assert!(at(&mut line, t0, 610, 100)
            .unwrap()
            .contains("100 / 100 MiB (100%)"));
    }

    #[test]
    fn an_empty_build_is_complete() {
        let t0 = Instant::now();
        let mut line = ProgressLine::new(Duration::ZERO, t0);
        let p = Progress { done: 0, total: 0 };
        assert!(line.update(p, t0).unwrap().contains("0 / 0 MiB (100%)"));
    }
}
