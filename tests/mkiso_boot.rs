//! `isomgr mkiso --boot/--efi-boot`: El Torito images booted for real (SeaBIOS and isolinux,
//! OVMF and GRUB, in QEMU), read by tools no one here wrote (xorriso, isoinfo, bsdtar) and
//! compared with what genisoimage and xorriso write for the same tree; and the errors.

mod common;
#[path = "mkiso_support/mod.rs"]
mod support;

use common::{have_tool, in_ci, output_ok};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::*;

const ISOLINUX_BIN: &str = "/usr/lib/ISOLINUX/isolinux.bin";
const LDLINUX_C32: &str = "/usr/lib/syslinux/modules/bios/ldlinux.c32";
/// OVMF (code, variables template), the first pair present.
const OVMF: [(&str, &str); 2] = [
    (
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "/usr/share/OVMF/OVMF_VARS_4M.fd",
    ),
    (
        "/usr/share/OVMF/OVMF_CODE.fd",
        "/usr/share/OVMF/OVMF_VARS.fd",
    ),
];
/// How long one boot may take to show what it is waited for (TCG on a loaded machine).
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const SECTOR: usize = 2048;

fn tools(list: &[&str]) -> bool {
    list.iter().all(|t| have_tool(t))
}

/// Whether a file a test needs (from `package`) is there. Missing under CI is a failure;
/// elsewhere the test says why it skips and returns false.
fn have_file(path: &str, package: &str) -> bool {
    if Path::new(path).is_file() {
        return true;
    }
    assert!(
        !in_ci(),
        "{path} (package {package}) is required under CI=true but is not installed"
    );
    eprintln!("SKIP: {path} is missing (package {package}; scripts/setup.sh installs it)");
    false
}

fn isolinux_installed() -> bool {
    have_file(ISOLINUX_BIN, "isolinux") && have_file(LDLINUX_C32, "syslinux-common")
}

fn ovmf() -> Option<(PathBuf, PathBuf)> {
    if let Some((c, v)) = OVMF
        .iter()
        .find(|(c, v)| Path::new(c).is_file() && Path::new(v).is_file())
    {
        return Some((PathBuf::from(c), PathBuf::from(v)));
    }
    assert!(
        !in_ci(),
        "OVMF (package ovmf, {OVMF:?}) is required under CI=true but is not installed"
    );
    eprintln!("SKIP: no OVMF firmware (package ovmf; scripts/setup.sh installs it)");
    None
}

/// A string that shows up on a guest's serial port only if what was built into the image ran.
fn marker(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("isomgr-{what}-{}-{nanos:09}", std::process::id())
}

fn write(path: &Path, data: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
}

/// A few ordinary files and directories besides the boot files.
fn ordinary_files(src: &Path) {
    write(&src.join("README.txt"), b"a bootable test image\n");
    write(
        &src.join("docs/notes.txt"),
        b"notes\n".repeat(500).as_slice(),
    );
    let blob: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    write(&src.join("data/blob.bin"), &blob);
    write(&src.join("data/empty"), b"");
    fs::create_dir_all(src.join("empty-dir")).unwrap();
    std::os::unix::fs::symlink("../README.txt", src.join("docs/readme-link")).unwrap();
}

/// isolinux (isolinux.bin, ldlinux.c32 and a configuration) in `src/isolinux`, whose boot shows
/// `marker` on the first serial port.
///
/// ldlinux runs SAY (and DISPLAY) while it reads the configuration, before it turns its serial
/// console on: they reach the screen only (seen with isolinux 6.04 and SeaBIOS). What it
/// prints once it has read the configuration goes to the serial port too, so the marker is also
/// the DEFAULT label: "Loading MARKER... failed: No such file or directory", then `boot:`.
fn isolinux_tree(src: &Path, marker: &str) {
    ordinary_files(src);
    let dir = src.join("isolinux");
    fs::create_dir_all(&dir).unwrap();
    fs::copy(ISOLINUX_BIN, dir.join("isolinux.bin")).unwrap();
    fs::copy(LDLINUX_C32, dir.join("ldlinux.c32")).unwrap();
    let cfg = format!("SERIAL 0 115200\nSAY {marker}\nPROMPT 0\nTIMEOUT 0\nDEFAULT {marker}\n");
    fs::write(dir.join("isolinux.cfg"), cfg).unwrap();
}

/// Where GRUB looks for a file in the image's ISO 9660 tree (see `efi_fat_image`).
const GRUB_READS: &str = "boot/grub-reads-this.txt";

/// A 4 MiB FAT image holding EFI/BOOT/BOOTX64.EFI: GRUB (grub-mkstandalone) with a built-in
/// grub.cfg that echoes `marker`, then finds the CD holding GRUB_READS through its own ISO 9660
/// driver, shows that file and halts.
fn efi_fat_image(dir: &Path, marker: &str) -> PathBuf {
    efi_fat_image_of(dir, marker, 4, 0)
}

/// [`efi_fat_image`] of `mib` MiB, with a file of `filler_mib` MiB of zeros copied in first,
/// so that the loader lies past it.
fn efi_fat_image_of(dir: &Path, marker: &str, mib: u64, filler_mib: u64) -> PathBuf {
    let work = dir.join(format!("grub-{marker}"));
    fs::create_dir_all(&work).unwrap();
    let cfg = work.join("grub.cfg");
    fs::write(
        &cfg,
        format!(
            "echo {marker}\nsearch --no-floppy --file --set=root /{GRUB_READS}\n\
             cat ($root)/{GRUB_READS}\nhalt\n"
        ),
    )
    .unwrap();
    let efi = work.join("BOOTX64.EFI");
    // Only the modules the configuration needs: all of them (~10 MB) would not fit. (search
    // also tries the file systems it does not have on the FAT image and says so: harmless.)
    run(
        "grub-mkstandalone",
        &[
            "-O",
            "x86_64-efi",
            "--install-modules=normal echo halt search search_fs_file iso9660 cat",
            "--modules=",
            "--locales=",
            "--themes=",
            "--fonts=",
            "-o",
            efi.to_str().unwrap(),
            &format!("boot/grub/grub.cfg={}", cfg.display()),
        ],
    );
    let img = work.join("efiboot.img");
    let i = img.to_str().unwrap();
    run("mkfs.vfat", &["-C", i, &(mib * 1024).to_string()]);
    if filler_mib > 0 {
        let filler = work.join("FILLER");
        fs::File::create(&filler)
            .unwrap()
            .set_len(filler_mib << 20)
            .unwrap();
        run("mcopy", &["-i", i, filler.to_str().unwrap(), "::/FILLER"]);
    }
    run("mmd", &["-i", i, "::/EFI", "::/EFI/BOOT"]);
    run(
        "mcopy",
        &["-i", i, efi.to_str().unwrap(), "::/EFI/BOOT/BOOTX64.EFI"],
    );
    img
}

/// QEMU's accelerator: KVM where the CPU shows virtualisation (as scripts/kernel-vm.sh
/// decides: a nested /dev/kvm without vmx/svm hangs the guest), else TCG.
fn accel() -> &'static str {
    let kvm = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let cpu = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let virt = cpu.split_whitespace().any(|w| w == "vmx" || w == "svm");
    if kvm && virt {
        "kvm"
    } else {
        "tcg"
    }
}

/// A running QEMU whose serial port is its standard output; killed when dropped (also when
/// the test panics), and when the test process dies.
struct Qemu {
    child: Child,
    chunks: mpsc::Receiver<Vec<u8>>,
    serial: Vec<u8>,
    stderr: PathBuf,
    what: String,
}

/// How a guest is booted.
enum Firmware<'a> {
    /// SeaBIOS from the CD; only what the guest writes to its serial port shows.
    SeaBios,
    /// SeaBIOS with no display: SeaBIOS copies the screen to the serial port too (its serial
    /// console), so messages written through the BIOS (isolinux's errors) show. What goes to
    /// both can arrive mixed up, so this is only for what is written to one of them.
    SeaBiosScreenOnSerial,
    /// OVMF, with its own copy of the variable store.
    Ovmf { code: &'a Path, vars: &'a Path },
    /// SeaBIOS from a hard disk holding the image (as written to a USB stick): the MBR boots.
    SeaBiosDisk,
    /// SeaBiosDisk with SeaBIOS's serial console, as SeaBiosScreenOnSerial.
    SeaBiosDiskScreenOnSerial,
    /// OVMF from a hard disk holding the image: an EFI system partition boots.
    OvmfDisk { code: &'a Path, vars: &'a Path },
}

impl Qemu {
    fn boot(iso: &Path, firmware: Firmware, log_dir: &Path) -> Qemu {
        use std::os::unix::process::CommandExt;
        let what = format!(
            "{} under {}",
            iso.display(),
            match firmware {
                Firmware::SeaBios | Firmware::SeaBiosScreenOnSerial => "SeaBIOS",
                Firmware::SeaBiosDisk | Firmware::SeaBiosDiskScreenOnSerial => "SeaBIOS as a disk",
                Firmware::Ovmf { .. } => "OVMF",
                Firmware::OvmfDisk { .. } => "OVMF as a disk",
            }
        );
        let strs = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        let mut args = strs(&["-accel", accel(), "-m", "256", "-no-reboot", "-nic", "none"]);
        match firmware {
            Firmware::SeaBios => args.extend(strs(&[
                "-display", "none", "-serial", "stdio", "-boot", "d",
            ])),
            Firmware::SeaBiosScreenOnSerial => args.extend(strs(&["-nographic", "-boot", "d"])),
            Firmware::SeaBiosDisk => args.extend(strs(&["-display", "none", "-serial", "stdio"])),
            Firmware::SeaBiosDiskScreenOnSerial => args.extend(strs(&["-nographic"])),
            Firmware::Ovmf { code, vars } | Firmware::OvmfDisk { code, vars } => {
                args.extend(strs(&["-display", "none", "-serial", "stdio"]));
                for (ro, file) in [(",readonly=on", code), ("", vars)] {
                    args.push("-drive".into());
                    args.push(format!("if=pflash,format=raw{ro},file={}", file.display()).into());
                }
            }
        }
        args.extend(["-monitor", "none"].map(OsString::from));
        if let Firmware::SeaBiosDisk
        | Firmware::SeaBiosDiskScreenOnSerial
        | Firmware::OvmfDisk { .. } = firmware
        {
            args.extend(strs(&["-boot", "c", "-drive"]));
            args.push(format!("file={},format=raw,if=ide", iso.display()).into());
        } else {
            args.push("-cdrom".into());
            args.push(iso.into());
        }
        let stderr = log_dir.join(format!("qemu-{}.stderr", marker("log")));
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&stderr).unwrap());
        // SAFETY: only prctl(2), async-signal-safe, between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("starting qemu-system-x86_64");
        let mut out = child.stdout.take().unwrap();
        let (tx, chunks) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match out.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Qemu {
            child,
            chunks,
            serial: Vec::new(),
            stderr,
            what,
        }
    }

    /// Reads the serial port until one of `wanted` shows (the index of the first in `wanted`
    /// that has), QEMU exits or `BOOT_TIMEOUT` passes (None).
    fn wait_for(&mut self, wanted: &[&str]) -> Option<usize> {
        self.wait_for_within(wanted, BOOT_TIMEOUT)
    }

    /// [`Qemu::wait_for`], giving up after `timeout`.
    fn wait_for_within(&mut self, wanted: &[&str], timeout: Duration) -> Option<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.serial();
            if let Some(i) = wanted.iter().position(|w| seen.contains(w)) {
                return Some(i);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match self.chunks.recv_timeout(left) {
                Ok(c) => self.serial.extend_from_slice(&c),
                Err(mpsc::RecvTimeoutError::Timeout) => return None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let seen = self.serial();
                    return wanted.iter().position(|w| seen.contains(w));
                }
            }
        }
    }

    /// What the guest wrote, without terminal escape sequences and carriage returns: SeaBIOS's
    /// serial console moves the cursor with them, at times in the middle of a line the screen
    /// shows whole (seen: "isomgr-remastere\x1b[05;16H\x1b[05;17Hd-...", and
    /// "i\rsomgr-remastered-...").
    fn serial(&self) -> String {
        let raw = String::from_utf8_lossy(&self.serial);
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\r' {
                continue;
            }
            if c != '\x1b' {
                out.push(c);
                continue;
            }
            // ESC [ parameters final-byte, or ESC and one character
            if chars.next() == Some('[') {
                for p in chars.by_ref() {
                    if ('\x40'..='\x7e').contains(&p) {
                        break;
                    }
                }
            }
        }
        out
    }

    /// What to show when a boot did not go as expected.
    fn report(&self) -> String {
        let serial = self.serial();
        let tail: String = {
            let chars: Vec<char> = serial.chars().collect();
            chars[chars.len().saturating_sub(3000)..].iter().collect()
        };
        format!(
            "{} (waited up to {BOOT_TIMEOUT:?})\n--- serial (last 3000 characters) ---\n{}\n--- qemu stderr ---\n{}",
            self.what,
            tail,
            fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Boots `iso` and fails the test unless each of `markers` shows on the serial port, in
/// order; returns what did.
fn boots_to(iso: &Path, firmware: Firmware, markers: &[&str], log_dir: &Path) -> String {
    // What shows when the boot went on without the marker: isolinux's prompt, the UEFI shell
    // OVMF falls back to. (A boot that stops earlier shows nothing and takes BOOT_TIMEOUT.)
    let too_late = match firmware {
        Firmware::Ovmf { .. } | Firmware::OvmfDisk { .. } => "Shell> ",
        _ => "boot:",
    };
    let mut q = Qemu::boot(iso, firmware, log_dir);
    let started = Instant::now();
    for marker in markers {
        let hit = q.wait_for(&[marker, too_late]);
        assert_eq!(
            hit,
            Some(0),
            "{marker} did not show on the serial port: {}",
            q.report()
        );
        eprintln!("{}: {marker} after {:?}", q.what, started.elapsed());
    }
    q.serial()
}

/// What booting a GRUB EFI image with OVMF next to isolinux takes (QEMU, GRUB's x86_64-efi
/// modules, the FAT tools, isolinux), and `more` tools: OVMF's code and variables template, or
/// None when something is missing (outside CI; under CI that fails).
fn efi_boot_tools(more: &[&str]) -> Option<(PathBuf, PathBuf)> {
    let mut need = vec![
        "qemu-system-x86_64",
        "grub-mkstandalone",
        "mkfs.vfat",
        "mmd",
        "mcopy",
    ];
    need.extend(more);
    if !tools(&need)
        || !isolinux_installed()
        || !have_file("/usr/lib/grub/x86_64-efi/normal.mod", "grub-efi-amd64-bin")
    {
        return None;
    }
    ovmf()
}

/// Builds `name` in `t` from ordinary files, the FAT image `fat` as its only (EFI) boot image
/// and GRUB_READS holding the last of `markers`, and boots it with OVMF (`ovmf`: code and
/// variables template) until `markers` show; returns the image.
fn efi_only_image_boots(
    t: &Path,
    fat: &Path,
    name: &str,
    ovmf: (&Path, &Path),
    markers: &[&str],
) -> PathBuf {
    let src = t.join(format!("{name}-src"));
    ordinary_files(&src);
    fs::create_dir(src.join("boot")).unwrap();
    fs::copy(fat, src.join("boot/efiboot.img")).unwrap();
    let last = markers.last().copied().unwrap_or_default();
    fs::write(src.join(GRUB_READS), format!("{last}\n")).unwrap();
    let iso = t.join(name);
    mkiso_ok(&src, &iso, &["--efi-boot", "boot/efiboot.img"], None);
    let v = ovmf_vars_copy(ovmf.1, t);
    boots_to(
        &iso,
        Firmware::Ovmf {
            code: ovmf.0,
            vars: &v,
        },
        markers,
        t,
    );
    iso
}

fn ovmf_vars_copy(template: &Path, dir: &Path) -> PathBuf {
    let vars = dir.join(format!("{}.fd", marker("vars")));
    fs::copy(template, &vars).unwrap();
    vars
}

#[test]
fn a_bios_boot_image_boots_in_qemu() {
    if !tools(&["qemu-system-x86_64"]) || !isolinux_installed() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let m = marker("bios");
    let src = t.join("src");
    isolinux_tree(&src, &m);
    let before = fs::read(src.join("isolinux/isolinux.bin")).unwrap();
    let iso = t.join("x.iso");
    mkiso_ok(
        &src,
        &iso,
        &[
            "--boot",
            "isolinux/isolinux.bin",
            "--boot-catalog",
            "isolinux/boot.cat",
            "--boot-info-table",
        ],
        None,
    );
    assert!(
        fs::read(src.join("isolinux/isolinux.bin")).unwrap() == before,
        "the source isolinux.bin was modified"
    );
    // isolinux found its own sectors (through the boot info table: its LBA field is not 0),
    // then ldlinux.c32 and isolinux.cfg in the ISO 9660 tree.
    let serial = boots_to(&iso, Firmware::SeaBios, &[&m], t);
    assert!(serial.contains("ISOLINUX"), "{serial}");

    // The stock isolinux.bin boots without a boot info table too: it carries its own length
    // and checksum, and with 0 in the table's LBA field asks the BIOS where it was loaded from
    // (El Torito INT 13h AX=4B01h), so leaving out --boot-info-table is no failure to see.
    // Leaving it out of an isolinux.bin copied out of another image is: that table names the
    // sector the file had *there*.
    // isolinux then trusts that LBA, loads the wrong sectors and stops with "Image checksum
    // error" (written through the BIOS only: SeaBIOS's serial console shows it); with
    // --boot-info-table the image's copy names its own place again and boots.
    let stale = t.join("stale");
    isolinux_tree(&stale, &m);
    let bin = stale.join("isolinux/isolinux.bin");
    let mut data = fs::read(&bin).unwrap();
    data[12..16].copy_from_slice(&16u32.to_le_bytes()); // the primary volume descriptor's
    fs::write(&bin, &data).unwrap();
    let no_table = t.join("stale-no-table.iso");
    let o = mkiso(
        &stale,
        &no_table,
        &["--boot", "isolinux/isolinux.bin"],
        None,
    );
    let warning = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{warning}");
    assert!(
        warning.contains("warning")
            && warning.contains("isolinux/isolinux.bin")
            && warning.contains("sector 16")
            && warning.contains("Image checksum error")
            && warning.contains("--boot-info-table"),
        "no warning of the stale table: {warning}"
    );
    {
        let mut q = Qemu::boot(&no_table, Firmware::SeaBiosScreenOnSerial, t);
        let hit = q.wait_for(&["Image checksum error", &m]);
        assert_eq!(
            hit,
            Some(0),
            "a stale boot info table should make isolinux fail: {}",
            q.report()
        );
    }
    let table = t.join("stale-table.iso");
    let o = mkiso(
        &stale,
        &table,
        &["--boot", "isolinux/isolinux.bin", "--boot-info-table"],
        None,
    );
    assert!(o.status.success() && o.stderr.is_empty(), "{o:?}");
    assert!(fs::read(&bin).unwrap() == data, "the source was modified");
    boots_to(&table, Firmware::SeaBios, &[&m], t);
}

/// `src` with GRUB's BIOS El Torito image (made by `grub-mkimage -O i386-pc-eltorito`) at
/// boot/grub/eltorito.img and a grub.cfg that echoes `m` to the serial port.
fn grub_bios_tree(src: &Path, m: &str) {
    let grub = src.join("boot/grub");
    fs::create_dir_all(&grub).unwrap();
    output_ok(
        Command::new("grub-mkimage")
            .args(["-O", "i386-pc-eltorito", "-p", "/boot/grub", "-o"])
            .arg(grub.join("eltorito.img"))
            .args([
                "biosdisk",
                "iso9660",
                "normal",
                "echo",
                "configfile",
                "serial",
                "terminal",
                "halt",
                "cat",
            ]),
    );
    write(
        &grub.join("grub.cfg"),
        format!("serial --unit=0 --speed=115200\nterminal_output serial\necho {m}\nhalt\n")
            .as_bytes(),
    );
}

/// GRUB's BIOS CD image (`grub-mkimage -O i386-pc-eltorito`, which needs the boot info table)
/// boots and runs its grub.cfg, which mkiso puts last but the catalog, so this also reads the
/// image's last sectors through the BIOS. It needs the 300 KiB of zeros mkiso ends images with
/// (as genisoimage and xorriso do): with `--no-pad`, GRUB 2.06 under SeaBIOS read grub.cfg
/// from 8 sectors before it (the end of its own core image) and stopped on a syntax error.
#[test]
fn grub_boots_from_a_bios_image_and_reads_its_last_file() {
    if !tools(&["qemu-system-x86_64", "grub-mkimage"])
        || !have_file("/usr/lib/grub/i386-pc/moddep.lst", "grub-pc-bin")
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let m = marker("grub-bios");
    let src = t.join("src");
    grub_bios_tree(&src, &m);
    let args = ["--boot", "boot/grub/eltorito.img", "--boot-info-table"];
    let iso = t.join("grub.iso");
    mkiso_ok(&src, &iso, &args, Some("0"));
    let files = isoinfo_lbas(&iso);
    let last = files.values().max().copied().unwrap();
    let cfg = files.get("/boot/grub/grub.cfg").copied().unwrap();
    assert!(
        last - cfg <= 1,
        "grub.cfg is the last file but the catalog: {files:?}"
    );
    boots_to(&iso, Firmware::SeaBios, &[&m], t);

    // The same without the padding: GRUB's errors go to the screen (its serial terminal is
    // not set up yet), which SeaBIOS's serial console shows.
    let bare = t.join("grub-no-pad.iso");
    let mut no_pad = args.to_vec();
    no_pad.push("--no-pad");
    mkiso_ok(&src, &bare, &no_pad, Some("0"));
    let mut q = Qemu::boot(&bare, Firmware::SeaBiosScreenOnSerial, t);
    let hit = q.wait_for(&["syntax error", &m]);
    assert_eq!(
        hit,
        Some(0),
        "without the padding GRUB misread grub.cfg here; if it now reads it, this GRUB or \
         BIOS reads the last sectors right and the padding is for other readers only: {}",
        q.report()
    );
}

const BOOT_HYBRID: &str = "/usr/lib/grub/i386-pc/boot_hybrid.img";

/// `--grub2-mbr` with `--grub2-boot-info`: a GRUB image boots from a hard disk (as written to
/// a USB stick) and still from a CD. xorriso reads its first sector as the MBR grub-mkrescue
/// has it write (GRUB's hybrid MBR with a protective label) and finds the GRUB boot info in
/// the boot image; sfdisk reads the partition. Without the MBR the disk does not boot, and
/// without the boot info GRUB stops after loading its first sector.
#[test]
fn a_grub_hybrid_image_boots_from_a_disk_as_grub_mkrescue_makes_it() {
    if !tools(&["qemu-system-x86_64", "grub-mkimage", "xorriso", "sfdisk"])
        || !have_file(BOOT_HYBRID, "grub-pc-bin")
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let m = marker("grub-hybrid");
    let src = t.join("src");
    grub_bios_tree(&src, &m);
    let source_image = fs::read(src.join("boot/grub/eltorito.img")).unwrap();
    let base = ["--boot", "boot/grub/eltorito.img", "--boot-info-table"];
    let mut args = base.to_vec();
    args.extend(["--grub2-boot-info", "--grub2-mbr", BOOT_HYBRID]);
    let iso = t.join("grub-hybrid.iso");
    mkiso_ok(&src, &iso, &args, Some("0"));
    let ours = fs::read(&iso).unwrap();
    let sectors = ours.len() / 512;
    assert_eq!(boot_options(&iso), args, "ls --boot");

    let report = run(
        "xorriso",
        &[
            "-indev",
            iso.to_str().unwrap(),
            "-report_system_area",
            "plain",
            "-report_el_torito",
            "plain",
        ],
    );
    let lines: Vec<String> = report
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let has = |want: &str| lines.iter().any(|l| l == want);
    for want in [
        "System area summary: MBR protective-msdos-label grub2-mbr cyl-align-off".to_string(),
        format!("MBR partition : 1 0x80 0xcd 1 {}", sectors - 1),
        "El Torito img opts : 1 boot-info-table grub2-boot-info".to_string(),
    ] {
        assert!(has(&want), "xorriso does not report {want:?}:\n{report}");
    }
    let lba = lines
        .iter()
        .find_map(|l| l.strip_prefix("El Torito boot img : 1 BIOS y none 0x0000 0x00 4 "))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("no boot image in:\n{report}"));
    let code = fs::read(BOOT_HYBRID).unwrap();
    assert!(
        ours[..0x1B0] == code[..0x1B0],
        "the boot code is boot_hybrid.img's"
    );
    let le64 = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    assert_eq!(
        le64(&ours, 0x1B0),
        lba as u64 * 4 + 4,
        "the core image's sector"
    );
    let copy = &ours[lba * SECTOR..lba * SECTOR + source_image.len()];
    assert_eq!(
        le64(copy, 2548),
        lba as u64 * 4 + 5,
        "diskboot.img's blocklist"
    );
    assert_eq!(
        le32(copy, 20),
        boot_info_checksum(copy),
        "the sum counts the patch"
    );
    assert!(
        copy[2556..] == source_image[2556..] && copy[64..2548] == source_image[64..2548],
        "nothing else of the boot image changes"
    );
    assert_eq!(
        fs::read(src.join("boot/grub/eltorito.img")).unwrap(),
        source_image,
        "the source was modified"
    );
    let table = run("sfdisk", &["-d", iso.to_str().unwrap()]);
    assert!(
        table.contains(&format!(
            "start=           1, size={:>12}, type=cd, bootable",
            sectors - 1
        )),
        "{table}"
    );
    boots_to(&iso, Firmware::SeaBiosDisk, &[&m], t);
    boots_to(&iso, Firmware::SeaBios, &[&m], t);

    // Without the MBR, no disk boot.
    let plain = t.join("plain.iso");
    mkiso_ok(&src, &plain, &base, Some("0"));
    let mut q = Qemu::boot(&plain, Firmware::SeaBiosDiskScreenOnSerial, t);
    assert_eq!(
        q.wait_for(&["No bootable device", &m]),
        Some(0),
        "{}",
        q.report()
    );
    drop(q);
    // Without the boot info (the blocklist as grub-mkimage left it), GRUB's first sector
    // loads and then the wrong sectors: it stops there. (A slow machine can only make this
    // pass, not fail.)
    let unpatched = t.join("unpatched.iso");
    let mut bytes = ours.clone();
    let at = lba * SECTOR + 2548;
    bytes[at..at + 8].copy_from_slice(&source_image[2548..2556]);
    fs::write(&unpatched, &bytes).unwrap();
    let mut q = Qemu::boot(&unpatched, Firmware::SeaBiosDiskScreenOnSerial, t);
    assert_eq!(q.wait_for(&["GRUB loading"]), Some(0), "{}", q.report());
    assert_eq!(
        q.wait_for_within(&[&m, "Welcome to GRUB"], Duration::from_secs(20)),
        None,
        "GRUB went on without the boot info: {}",
        q.report()
    );
    drop(q);

    // With a UEFI boot image too, OVMF boots the stick through El Torito, which EDK2 reads
    // from a disk as well (the partition is GRUB's, not an EFI system partition).
    if let Some((ovmf_code, vars)) = efi_boot_tools(&[]) {
        let efi_marker = marker("grub-hybrid-efi");
        let iso_marker = marker("grub-hybrid-reads");
        let fat = efi_fat_image(t, &efi_marker);
        fs::copy(&fat, src.join("boot/efiboot.img")).unwrap();
        fs::write(src.join(GRUB_READS), format!("{iso_marker}\n")).unwrap();
        let both = t.join("both.iso");
        let mut a = args.clone();
        a.extend(["--efi-boot", "boot/efiboot.img"]);
        mkiso_ok(&src, &both, &a, Some("0"));
        let v = ovmf_vars_copy(&vars, t);
        let uefi = Firmware::OvmfDisk {
            code: &ovmf_code,
            vars: &v,
        };
        boots_to(&both, uefi, &[&efi_marker, &iso_marker], t);
        boots_to(&both, Firmware::SeaBiosDisk, &[&m], t);
    }

    // Refused: a boot image that is not GRUB's (exit 1, naming it); an MBR without the boot
    // info, or beside an isohybrid MBR (usage errors, exit 2).
    write(&src.join("not-grub.bin"), &[0x90; 4096]);
    let out = t.join("refused.iso");
    let o = mkiso(
        &src,
        &out,
        &[
            "--boot",
            "not-grub.bin",
            "--boot-info-table",
            "--grub2-boot-info",
        ],
        None,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("not-grub.bin") && err.contains("not GRUB's El Torito image"),
        "{err}"
    );
    for extra in [
        vec!["--grub2-mbr", BOOT_HYBRID],
        vec![
            "--grub2-boot-info",
            "--grub2-mbr",
            BOOT_HYBRID,
            "--isohybrid-mbr",
            BOOT_HYBRID,
        ],
    ] {
        let mut a = base.to_vec();
        a.extend(&extra);
        let o = mkiso(&src, &out, &a, None);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{a:?}: {err}");
    }
    assert!(!out.exists());
}

const ISOHDPFX: &str = "/usr/lib/ISOLINUX/isohdpfx.bin";

/// mkiso's image of `src` with `base` and `--isohybrid-mbr` (the path, its bytes), checked to
/// be whole cylinders and to begin with the very sector syslinux's `isohybrid` (with `extra`
/// options and the same disk signature) writes into the image made without the option; also
/// returns that image's bytes.
fn hybrid_beside_isohybrid(
    src: &Path,
    base: &[&str],
    extra: &[&str],
    t: &Path,
) -> (PathBuf, Vec<u8>, Vec<u8>) {
    let hybrid = t.join("hybrid.iso");
    let mut args = base.to_vec();
    args.extend(["--isohybrid-mbr", ISOHDPFX]);
    mkiso_ok(src, &hybrid, &args, Some("0"));
    let plain = t.join("plain.iso");
    mkiso_ok(src, &plain, base, Some("0"));
    let ours = fs::read(&hybrid).unwrap();
    assert_eq!(ours.len() % (1 << 20), 0, "whole cylinders");
    let id = format!("{:#x}", le32(&ours, 440));
    let mut isohybrid = extra.to_vec();
    isohybrid.extend(["-i", &id, plain.to_str().unwrap()]);
    run("isohybrid", &isohybrid);
    let theirs = fs::read(&plain).unwrap();
    assert_eq!(ours.len(), theirs.len(), "the size isohybrid pads to");
    assert!(
        ours[..512] == theirs[..512],
        "the MBR differs from isohybrid {extra:?}'s:\nours   {:02x?}\ntheirs {:02x?}",
        &ours[432..512],
        &theirs[432..512]
    );
    (hybrid, ours, theirs)
}

/// `--isohybrid-mbr`: the image boots from a hard disk (as written to a USB stick) and still
/// from a CD; its first sector is what syslinux's isohybrid writes into the same image built
/// without it (given the same disk signature), and the image is whole cylinders (1 MiB), the
/// volume included. sfdisk and blkid read the partition and the file system.
#[test]
fn an_isohybrid_image_boots_from_a_disk_and_matches_isohybrid() {
    if !tools(&["qemu-system-x86_64", "isohybrid", "sfdisk", "blkid"])
        || !isolinux_installed()
        || !have_file(ISOHDPFX, "isolinux")
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let m = marker("hybrid");
    let src = t.join("src");
    isolinux_tree(&src, &m);
    let base = [
        "--boot",
        "isolinux/isolinux.bin",
        "--boot-info-table",
        "--boot-catalog",
        "isolinux/boot.cat",
    ];
    let (hybrid, ours, theirs) = hybrid_beside_isohybrid(&src, &base, &[], t);
    // The rest is the same but the volume size, which counts the cylinder padding.
    let differ: Vec<usize> = (512..ours.len())
        .filter(|&i| ours[i] != theirs[i])
        .collect();
    assert!(
        differ
            .iter()
            .all(|&i| (16 * SECTOR + 80..16 * SECTOR + 88).contains(&i)
                || (18 * SECTOR + 80..18 * SECTOR + 88).contains(&i)),
        "bytes other than the volume sizes differ: {:?}",
        &differ[..differ.len().min(20)]
    );
    let sectors = ours.len() / 512;
    let table = run("sfdisk", &["-d", hybrid.to_str().unwrap()]);
    assert!(
        table.contains(&format!(
            "start=           0, size={sectors:>12}, type=17, bootable"
        )),
        "{table}"
    );
    let probe = run("blkid", &["-p", "-o", "export", hybrid.to_str().unwrap()]);
    assert!(probe.contains("TYPE=iso9660"), "{probe}");
    assert!(probe.contains("LABEL=src"), "{probe}");
    let scan = output_ok(Command::new(bin()).args(["scan", "--json"]).arg(&hybrid));
    let scan: serde_json::Value = serde_json::from_slice(&scan.stdout).unwrap();
    assert_eq!(scan[0]["complete"], true, "{scan}");
    assert_eq!(scan[0]["volume_size"], ours.len(), "{scan}");

    let serial = boots_to(&hybrid, Firmware::SeaBiosDisk, &[&m], t);
    assert!(serial.contains("ISOLINUX"), "{serial}");
    boots_to(&hybrid, Firmware::SeaBios, &[&m], t);

    // Refused: an MBR file of the wrong size, one that is not there, a boot image that is not
    // an isolinux.bin (exit 1, naming the file); no boot info table (a usage error, exit 2).
    let short = t.join("short.bin");
    fs::write(&short, [0u8; 100]).unwrap();
    write(&src.join("not-isolinux.bin"), &[0x90; 4096]);
    let out = t.join("refused.iso");
    for (extra, code, named, cause) in [
        (
            vec!["--isohybrid-mbr", short.to_str().unwrap()],
            1,
            short.to_str().unwrap().to_string(),
            "432 to 512",
        ),
        (
            vec!["--isohybrid-mbr", "/nonexistent/isohdpfx.bin"],
            1,
            "/nonexistent/isohdpfx.bin".to_string(),
            "No such file",
        ),
    ] {
        let mut a = base.to_vec();
        a.extend(extra);
        let o = mkiso(&src, &out, &a, None);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{a:?}: {err}");
        assert!(err.contains(&named) && err.contains(cause), "{a:?}: {err}");
        assert!(!out.exists());
    }
    let o = mkiso(
        &src,
        &out,
        &[
            "--boot",
            "not-isolinux.bin",
            "--boot-info-table",
            "--isohybrid-mbr",
            ISOHDPFX,
        ],
        None,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("not-isolinux.bin") && err.contains("isohybrid signature"),
        "{err}"
    );
    assert!(!out.exists());
    let o = mkiso(
        &src,
        &out,
        &[
            "--boot",
            "isolinux/isolinux.bin",
            "--isohybrid-mbr",
            ISOHDPFX,
        ],
        None,
    );
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `--isohybrid-mbr` with `--efi-boot`: the image also boots by UEFI written to a disk. Its
/// first sector is what `isohybrid --uefi` writes (the image's partition of type 0, an EFI
/// system partition over the EFI image), the second partition holds the FAT file system with
/// EFI/BOOT/BOOTX64.EFI, OVMF boots it as a disk and GRUB then reads the ISO tree, and
/// SeaBIOS boots it as a disk through isolinux.
#[test]
fn an_isohybrid_image_with_an_efi_image_boots_by_uefi_from_a_disk() {
    if !have_file(ISOHDPFX, "isolinux") {
        return;
    }
    let Some((code, vars)) = efi_boot_tools(&["isohybrid", "sfdisk", "xorriso", "mdir"]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let both = BothWays::new(t, "disk");
    let (src, fat) = (both.src.clone(), both.fat.clone());
    let base = [
        "--boot",
        "isolinux/isolinux.bin",
        "--boot-info-table",
        "--efi-boot",
        "boot/efiboot.img",
    ];
    let (hybrid, ours, _) = hybrid_beside_isohybrid(&src, &base, &["--uefi"], t);
    let (efi_lba, _) = xorriso_lbas(&hybrid)["/boot/efiboot.img"];
    let efi_sectors = fs::metadata(&fat).unwrap().len() / 512;
    let table = run("sfdisk", &["-d", hybrid.to_str().unwrap()]);
    let sectors = ours.len() / 512;
    for want in [
        format!("start=           0, size={sectors:>12}, type=0, bootable"),
        format!("start={:>12}, size={efi_sectors:>12}, type=ef", efi_lba * 4),
    ] {
        assert!(table.contains(&want), "{want} in\n{table}");
    }
    // What firmware that knows no El Torito finds there (OVMF knows it, so booting it cannot
    // tell): the FAT file system with the loader where UEFI looks for it.
    let esp = format!("{}@@{}", hybrid.display(), efi_lba * 2048);
    let listing = run("mdir", &["-i", &esp, "-b", "::/EFI/BOOT"]);
    assert!(listing.contains("BOOTX64.EFI"), "{listing}");

    both.boot_from_a_disk(&hybrid, (&code, &vars), t);
}

/// A tree that boots both ways: by UEFI (GRUB in boot/efiboot.img, which then shows `efi` and
/// `iso`, read from GRUB_READS in the ISO tree) and by BIOS (isolinux, showing `bios`).
struct BothWays {
    src: PathBuf,
    fat: PathBuf,
    efi: String,
    iso: String,
    bios: String,
}

impl BothWays {
    fn new(t: &Path, what: &str) -> BothWays {
        let efi = marker(&format!("{what}-efi"));
        let iso = marker(&format!("{what}-read-from-the-disk"));
        let bios = marker(&format!("{what}-bios"));
        let fat = efi_fat_image(t, &efi);
        let src = t.join("src");
        isolinux_tree(&src, &bios);
        fs::create_dir(src.join("boot")).unwrap();
        fs::copy(&fat, src.join("boot/efiboot.img")).unwrap();
        fs::write(src.join(GRUB_READS), format!("{iso}\n")).unwrap();
        BothWays {
            src,
            fat,
            efi,
            iso,
            bios,
        }
    }

    /// [`BothWays::new`] with the EFI image only outside the tree (`fat`), to be appended as
    /// a partition.
    fn efi_image_outside(t: &Path, what: &str) -> BothWays {
        let both = BothWays::new(t, what);
        fs::remove_file(both.src.join("boot/efiboot.img")).unwrap();
        both
    }

    /// Boots `iso` as a disk under OVMF (`ovmf`: code and variables template) to the UEFI
    /// markers, and under SeaBIOS to the BIOS one (and not the UEFI one).
    fn boot_from_a_disk(&self, iso: &Path, ovmf: (&Path, &Path), t: &Path) {
        let v = ovmf_vars_copy(ovmf.1, t);
        let uefi = Firmware::OvmfDisk {
            code: ovmf.0,
            vars: &v,
        };
        boots_to(iso, uefi, &[&self.efi, &self.iso], t);
        let serial = boots_to(iso, Firmware::SeaBiosDisk, &[&self.bios], t);
        assert!(!serial.contains(&self.efi), "{serial}");
    }
}

/// The mkiso options `isomgr ls --boot` gives for `iso` (its "mkiso" line), after checking
/// that it names nothing mkiso would not make.
fn boot_options(iso: &Path) -> Vec<String> {
    let o = output_ok(Command::new(bin()).args(["ls", "--boot"]).arg(iso));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(!text.contains("not made by mkiso"), "{text}");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("mkiso "))
        .unwrap_or_else(|| panic!("no mkiso line:\n{text}"));
    line.split_whitespace().map(str::to_string).collect()
}

/// What `isomgr ls --boot` says of an image.
struct LsBoot {
    listing: String,
}

impl LsBoot {
    fn of(iso: &Path) -> LsBoot {
        let o = output_ok(Command::new(bin()).args(["ls", "--boot"]).arg(iso));
        LsBoot {
            listing: String::from_utf8(o.stdout).unwrap(),
        }
    }

    /// The rest of the line that starts with `prefix` ("mkiso ", "not made by mkiso: ").
    fn line(&self, prefix: &str) -> Option<&str> {
        self.listing.lines().find_map(|l| l.strip_prefix(prefix))
    }

    /// The mkiso options.
    fn options(&self) -> Vec<&str> {
        let line = self.line("mkiso ");
        let line = line.unwrap_or_else(|| panic!("no mkiso line:\n{}", self.listing));
        line.split_whitespace().collect()
    }

    /// The commands that copy files the options name out of the image.
    fn copies(&self) -> Vec<&str> {
        self.listing
            .lines()
            .filter_map(|l| l.strip_prefix("copy     "))
            .collect()
    }

    /// Remakes the image as this says, in `dir` (new): runs the copy commands there, then
    /// `mkiso SRC -o DIR/remade.iso EXTRA... OPTIONS...` with `SOURCE_DATE_EPOCH` as `sde`.
    /// Returns the image and what mkiso wrote to standard error.
    fn remake(
        &self,
        src: &Path,
        dir: &Path,
        extra: &[&str],
        sde: Option<&str>,
    ) -> (PathBuf, String) {
        fs::create_dir_all(dir).unwrap();
        for c in self.copies() {
            output_ok(Command::new("sh").args(["-c", c]).current_dir(dir));
        }
        let image = dir.join("remade.iso");
        let mut cmd = Command::new(bin());
        cmd.arg("mkiso")
            .arg(src)
            .arg("-o")
            .arg(&image)
            .args(extra)
            .args(self.options())
            .current_dir(dir);
        match sde {
            Some(v) => cmd.env("SOURCE_DATE_EPOCH", v),
            None => cmd.env_remove("SOURCE_DATE_EPOCH"),
        };
        let o = output_ok(&mut cmd);
        (image, String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

/// `xorriso -report_system_area plain`'s lines about the MBR and GPT, as (key, value).
fn system_area(iso: &Path) -> Vec<(String, String)> {
    let out = run(
        "xorriso",
        &[
            "-indev",
            iso.to_str().unwrap(),
            "-report_system_area",
            "plain",
        ],
    );
    out.lines()
        .filter(|l| l.starts_with("MBR") || l.starts_with("GPT") || l.starts_with("System area"))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| {
            (
                k.trim().to_string(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect()
}

/// [`system_area`] but where partitions lie (starts, sizes, the GPT's bounds, the MBR's
/// entries) and each image's own GUIDs, and xorriso's partition over the padding it puts after
/// an appended partition (3, "Gap1"): what two images of one tree with one layout share.
fn system_area_but_places(iso: &Path) -> Vec<(String, String)> {
    let places = ["GPT lba range", "GPT start and size", "MBR partition"];
    system_area(iso)
        .into_iter()
        .filter(|(k, _)| !k.ends_with("GUID") || k == "GPT type GUID")
        .filter(|(k, v)| !(k.starts_with("GPT") && v.starts_with("3 ")))
        .filter(|(k, _)| !places.contains(&k.as_str()))
        .map(|(k, v)| {
            // xorriso counts the entries it uses
            let v = if k == "GPT entry array" {
                v.replacen("3 ", "2 ", 1)
            } else {
                v
            };
            (k, v)
        })
        .collect()
}

/// `sgdisk -v`'s findings: the lines that name a problem, without the counts.
fn sgdisk_problems(iso: &Path) -> Vec<String> {
    let o = Command::new("sgdisk").arg("-v").arg(iso).output().unwrap();
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    text.lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("Verification may miss") && !l.starts_with("Identified")
        })
        .map(str::to_string)
        .collect()
}

/// `--isohybrid-gpt-basdat`: beside the isohybrid MBR, the GPT xorriso's option of that name
/// writes (Debian's and RHEL's installation images have it). xorriso reads it back as it reads
/// its own image of the same tree: the same entries, names, types and flags, with the same
/// rule for where they lie; sgdisk checks its headers' and entries' CRCs and finds only what it
/// finds in xorriso's (the image's partition overlaps the GPT, by design); and the image still
/// boots from a disk by the MBR, under OVMF and under SeaBIOS, and reads back whole without
/// the 300 KiB pad too.
#[test]
fn an_isohybrid_gpt_is_xorriso_s_and_the_image_still_boots_from_a_disk() {
    if !have_file(ISOHDPFX, "isolinux") {
        return;
    }
    let Some((code, vars)) = efi_boot_tools(&["xorriso", "sgdisk", "isoinfo"]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let both = BothWays::new(t, "gpt");
    let (src, fat) = (both.src.clone(), both.fat.clone());
    let args = [
        "--boot",
        "isolinux/isolinux.bin",
        "--boot-catalog",
        "isolinux/boot.cat",
        "--boot-info-table",
        "--efi-boot",
        "boot/efiboot.img",
        "--isohybrid-mbr",
        ISOHDPFX,
        "--isohybrid-gpt-basdat",
    ];
    let ours = t.join("ours.iso");
    mkiso_ok(&src, &ours, &args, Some("0"));
    // `ls --boot` reads all of it back, and its options make the same image again.
    let options = boot_options(&ours);
    let again = t.join("again.iso");
    let options: Vec<&str> = options.iter().map(String::as_str).collect();
    mkiso_ok(&src, &again, &options, Some("0"));
    assert!(
        fs::read(&again).unwrap() == fs::read(&ours).unwrap(),
        "ls --boot's options {options:?} made another image than {args:?}"
    );
    let theirs = other_tool(
        "xorriso -as mkisofs",
        &src,
        "xorriso",
        &[
            "-isohybrid-mbr",
            ISOHDPFX,
            "-b",
            "isolinux/isolinux.bin",
            "-c",
            "isolinux/boot.cat",
            "-boot-load-size",
            "4",
            "-boot-info-table",
            "-no-emul-boot",
            "-eltorito-alt-boot",
            "-e",
            "boot/efiboot.img",
            "-no-emul-boot",
            "-isohybrid-gpt-basdat",
        ],
    );

    // Each image's entries where xorriso's rule puts them: the image from sector 0 up to
    // the backup GPT's entries (the last 63 sectors), the EFI image where its file is.
    let efi_sectors = fs::metadata(&fat).unwrap().len() / 512;
    let expected = |iso: &Path| {
        let n = fs::metadata(iso).unwrap().len() / 512;
        let (efi, _) = xorriso_lbas(iso)["/boot/efiboot.img"];
        vec![
            ("GPT entry array".into(), "2 248 overlapping".into()),
            ("GPT lba range".into(), format!("64 {} {}", n - 64, n - 1)),
            ("GPT start and size".into(), format!("1 0 {}", n - 64)),
            (
                "GPT start and size".into(),
                format!("2 {} {efi_sectors}", efi * 4),
            ),
            ("MBR partition".into(), format!("1 0x80 0x00 0 {n}")),
            (
                "MBR partition".into(),
                format!("2 0x00 0xef {} {efi_sectors}", efi * 4),
            ),
        ]
    };
    let placed = |area: &[(String, String)], iso: &Path| {
        for want in expected(iso) {
            assert!(
                area.contains(&want),
                "{}: {want:?} not in {area:#?}",
                iso.display()
            );
        }
    };
    let (a_ours, a_theirs) = (system_area(&ours), system_area(&theirs));
    placed(&a_ours, &ours);
    placed(&a_theirs, &theirs);
    // The rest is the same but for the GUIDs, which are each image's own.
    let rest = |area: &[(String, String)]| -> Vec<(String, String)> {
        area.iter()
            .filter(|(k, _)| !k.ends_with("GUID") || k == "GPT type GUID")
            .filter(|(k, _)| {
                k != "GPT lba range" && k != "GPT start and size" && k != "MBR partition"
            })
            .cloned()
            .collect()
    };
    assert_eq!(
        rest(&a_ours),
        rest(&a_theirs),
        "xorriso -report_system_area"
    );
    assert!(
        a_ours
            .iter()
            .any(|(k, v)| k == "System area summary" && v.ends_with("GPT")),
        "{a_ours:?}"
    );
    let guids: Vec<&String> = a_ours
        .iter()
        .filter(|(k, _)| k == "GPT disk GUID" || k == "GPT partition GUID")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(guids.len(), 3, "{a_ours:?}");
    assert!(guids[0] != guids[1] && guids[1] != guids[2], "{guids:?}");

    // sgdisk: the CRCs and both headers check out; what is left is what xorriso's has.
    let problems = sgdisk_problems(&ours);
    assert_eq!(problems, sgdisk_problems(&theirs), "sgdisk -v");
    assert!(
        !problems
            .iter()
            .any(|p| p.contains("CRC") || p.contains("header") || p.contains("backup")),
        "{problems:?}"
    );

    // The same label and time give the same GPT; another label, other GUIDs.
    let again = t.join("again.iso");
    mkiso_ok(&src, &again, &args, Some("0"));
    assert!(
        fs::read(&again).unwrap() == fs::read(&ours).unwrap(),
        "not deterministic"
    );
    let mut relabelled = args.to_vec();
    relabelled.extend(["-V", "OTHER"]);
    mkiso_ok(&src, &again, &relabelled, Some("0"));
    let other: Vec<(String, String)> = system_area(&again);
    let disk = |a: &[(String, String)]| a.iter().find(|(k, _)| k == "GPT disk GUID").cloned();
    assert_ne!(
        disk(&other),
        disk(&a_ours),
        "the disk GUID does not follow the label"
    );

    // Without the 300 KiB pad the backup GPT still has room of its own, also when the files
    // end less than its 63 sectors of 512 bytes before a cylinder does (a filler file grown
    // to end about 8 sectors of 2048 before): they read back.
    let unpadded = t.join("unpadded.iso");
    let mut no_pad = args.to_vec();
    no_pad.push("--no-pad");
    let filler = src.join("filler.bin");
    fs::write(&filler, [0xA5u8; SECTOR]).unwrap();
    mkiso_ok(&src, &unpadded, &no_pad, Some("0"));
    let sectors = |iso: &Path| fs::metadata(iso).unwrap().len() / SECTOR as u64;
    let data_end = |iso: &Path| {
        xorriso_lbas(iso)
            .values()
            .map(|&(lba, size)| lba + size.div_ceil(SECTOR as u64))
            .max()
            .unwrap()
    };
    let cylinder = (1u64 << 20) / SECTOR as u64;
    let short_of_a_cylinder = |iso: &Path| cylinder - data_end(iso) % cylinder;
    // (a few tries: where a larger file starts may move by an alignment)
    let mut filler_sectors = 1;
    for _ in 0..4 {
        let short = short_of_a_cylinder(&unpadded);
        if (4..=12).contains(&short) {
            break;
        }
        filler_sectors += (short + cylinder - 8) % cylinder;
        fs::write(&filler, vec![0xA5u8; SECTOR * filler_sectors as usize]).unwrap();
        mkiso_ok(&src, &unpadded, &no_pad, Some("0"));
    }
    let short = short_of_a_cylinder(&unpadded);
    assert!(
        (4..=12).contains(&short),
        "the filler ends {short} sectors short"
    );
    assert_eq!(sectors(&unpadded) % cylinder, 0);
    placed(&system_area(&unpadded), &unpadded);
    assert_eq!(sgdisk_problems(&unpadded), problems, "sgdisk -v, --no-pad");
    let read_back = describe_image(&unpadded);
    for (path, want) in describe_fs(&src) {
        if path == "/isolinux/isolinux.bin" {
            continue; // it has the boot info table
        }
        assert_eq!(read_back.get(&path), Some(&want), "--no-pad: {path}");
    }

    both.boot_from_a_disk(&ours, (&code, &vars), t);

    // Usage errors: without --efi-boot, without --isohybrid-mbr.
    for drop in ["--efi-boot", "--isohybrid-mbr"] {
        let i = args.iter().position(|a| *a == drop).unwrap();
        let mut a = args.to_vec();
        a.drain(i..i + 2);
        let o = mkiso(&src, &t.join("refused.iso"), &a, None);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{a:?}: {err}");
        assert!(err.contains(drop), "{err}");
    }
}

#[test]
fn an_efi_boot_image_boots_in_qemu_with_ovmf() {
    let Some((code, vars)) = efi_boot_tools(&[]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let efi_marker = marker("efi");
    let fat = efi_fat_image(t, &efi_marker);
    // in the ISO 9660 tree only: GRUB shows it once it has read the image's tree
    let iso_marker = marker("read-from-the-iso");

    efi_only_image_boots(
        t,
        &fat,
        "efi.iso",
        (&code, &vars),
        &[&efi_marker, &iso_marker],
    );

    // Both: SeaBIOS takes the BIOS entry (isolinux), OVMF the EFI one (GRUB).
    let bios_marker = marker("bios");
    let both = t.join("both");
    isolinux_tree(&both, &bios_marker);
    fs::create_dir(both.join("boot")).unwrap();
    fs::copy(&fat, both.join("boot/efiboot.img")).unwrap();
    fs::write(both.join(GRUB_READS), format!("{iso_marker}\n")).unwrap();
    let iso = t.join("both.iso");
    mkiso_ok(
        &both,
        &iso,
        &[
            "--boot",
            "isolinux/isolinux.bin",
            "--boot-catalog",
            "isolinux/boot.cat",
            "--boot-info-table",
            "--efi-boot",
            "boot/efiboot.img",
        ],
        None,
    );
    let serial = boots_to(&iso, Firmware::SeaBios, &[&bios_marker], t);
    assert!(!serial.contains(&efi_marker), "{serial}");
    let v = ovmf_vars_copy(&vars, t);
    let serial = boots_to(
        &iso,
        Firmware::Ovmf {
            code: &code,
            vars: &v,
        },
        &[&efi_marker, &iso_marker],
        t,
    );
    assert!(!serial.contains(&bios_marker), "{serial}");
}

/// An EFI image of 160 MiB whose loader lies past its first 140 MiB boots with OVMF: the entry
/// records no sector count (0, as xorriso), so the firmware takes the FAT image whole. With the
/// count cut at 65535, OVMF stops short of the loader and falls back to its shell.
#[test]
fn an_efi_image_over_32_mib_boots_in_qemu_with_ovmf() {
    let Some((code, vars)) = efi_boot_tools(&[]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let efi_marker = marker("big-efi");
    let iso_marker = marker("read-past-a-big-efi-image");
    let fat = efi_fat_image_of(t, &efi_marker, 160, 140);
    let iso = efi_only_image_boots(
        t,
        &fat,
        "big-efi.iso",
        (&code, &vars),
        &[&efi_marker, &iso_marker],
    );

    // The same image with the count cut at 65535 (what mkiso recorded before).
    let mut data = fs::read(&iso).unwrap();
    let catalog = le32(&data, 17 * SECTOR + 0x47) as usize * SECTOR;
    assert_eq!(&data[catalog + 38..catalog + 40], &[0, 0]);
    data[catalog + 38..catalog + 40].copy_from_slice(&65535u16.to_le_bytes());
    fs::write(&iso, &data).unwrap();
    drop(data);
    let v = ovmf_vars_copy(&vars, t);
    let mut q = Qemu::boot(
        &iso,
        Firmware::Ovmf {
            code: &code,
            vars: &v,
        },
        t,
    );
    assert_eq!(
        q.wait_for(&["Shell> ", &efi_marker]),
        Some(0),
        "OVMF found the loader past 65535 sectors: {}",
        q.report()
    );
}

// ---- reading the El Torito records back ----

/// One boot image as `xorriso -report_el_torito plain` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct XorrisoImage {
    platform: String,
    bootable: String,
    emulation: String,
    load_segment: String,
    load_size: u32,
    lba: u64,
    path: String,
}

#[derive(Debug)]
struct XorrisoReport {
    catalog_lba: u64,
    catalog_path: String,
    images: Vec<XorrisoImage>,
}

fn xorriso_el_torito(iso: &Path) -> XorrisoReport {
    let out = run(
        "xorriso",
        &[
            "-indev",
            iso.to_str().unwrap(),
            "-report_el_torito",
            "plain",
        ],
    );
    let value = |key: &str| -> Vec<String> {
        out.lines()
            .filter_map(|l| l.strip_prefix(key))
            .filter_map(|l| l.trim_start().strip_prefix(':'))
            .map(|l| l.trim().to_string())
            .collect()
    };
    let catalog = value("El Torito catalog");
    assert_eq!(catalog.len(), 1, "{out}");
    let catalog_lba = catalog[0]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let catalog_path = value("El Torito cat path").pop().unwrap_or_default();
    let paths: BTreeMap<String, String> = value("El Torito img path")
        .iter()
        .map(|l| {
            let (n, p) = l.split_once(char::is_whitespace).unwrap();
            (n.to_string(), p.trim().to_string())
        })
        .collect();
    let images = value("El Torito boot img")
        .iter()
        .map(|l| {
            // N  Pltf  B   Emul  Ld_seg  Hdpt  Ldsiz  LBA
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 8, "{l}\n{out}");
            XorrisoImage {
                platform: f[1].to_string(),
                bootable: f[2].to_string(),
                emulation: f[3].to_string(),
                load_segment: f[4].to_string(),
                load_size: f[6].parse().unwrap(),
                lba: f[7].parse().unwrap(),
                path: paths.get(f[0]).cloned().unwrap_or_default(),
            }
        })
        .collect();
    XorrisoReport {
        catalog_lba,
        catalog_path,
        images,
    }
}

/// The start sector of every entry, as `isoinfo -l -R` lists it (`[ LBA flags]  name`).
fn isoinfo_lbas(iso: &Path) -> BTreeMap<String, u64> {
    let out = run("isoinfo", &["-l", "-R", "-i", iso.to_str().unwrap()]);
    let mut dir = String::new();
    let mut lbas = BTreeMap::new();
    for l in out.lines() {
        if let Some(d) = l.strip_prefix("Directory listing of ") {
            dir = d.trim().to_string();
            continue;
        }
        let (Some(open), Some(close)) = (l.find('['), l.find(']')) else {
            continue;
        };
        let name = l[close + 1..].trim();
        if name == "." || name == ".." {
            continue;
        }
        let lba = l[open + 1..close].split_whitespace().next().unwrap();
        lbas.insert(format!("{dir}{name}"), lba.parse().unwrap());
    }
    lbas
}

/// `isoinfo -d`: the boot catalog's sector ("El Torito VD version 1 found, boot catalog is in
/// sector N") and the validation entry's platform ("Arch N").
fn isoinfo_el_torito(iso: &Path) -> (u64, u8) {
    let out = run("isoinfo", &["-d", "-i", iso.to_str().unwrap()]);
    let sector = out
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("El Torito VD version 1 found, boot catalog is in sector ")
        })
        .unwrap_or_else(|| panic!("isoinfo found no El Torito descriptor:\n{out}"));
    let arch = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Arch "))
        .unwrap_or_else(|| panic!("isoinfo shows no validation entry:\n{out}"));
    (
        sector.trim().parse().unwrap(),
        arch.split_whitespace().next().unwrap().parse().unwrap(),
    )
}

/// One 32-byte record of a boot catalog after the validation entry (El Torito 1.0, 2.2-2.5),
/// read by hand.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Record {
    Header {
        indicator: u8,
        platform: u8,
        entries: u16,
    },
    Entry {
        indicator: u8,
        media: u8,
        load_segment: u16,
        system_type: u8,
        sectors: u16,
        lba: u32,
    },
}

impl Record {
    /// The same with the boot image's sector left out, to compare images made by two tools.
    fn without_lba(&self) -> Record {
        match self {
            Record::Entry {
                indicator,
                media,
                load_segment,
                system_type,
                sectors,
                ..
            } => Record::Entry {
                indicator: *indicator,
                media: *media,
                load_segment: *load_segment,
                system_type: *system_type,
                sectors: *sectors,
                lba: 0,
            },
            h => h.clone(),
        }
    }
}

/// The validation entry's platform and the records after it; checks the validation entry
/// (header 1, key 55 AA, words summing to 0) and that nothing follows the last record.
fn parse_catalog(cat: &[u8]) -> (u8, Vec<Record>) {
    assert_eq!(cat.len(), SECTOR);
    let v = &cat[..32];
    assert_eq!(v[0], 1, "validation entry header: {v:02x?}");
    assert_eq!(&v[30..32], &[0x55, 0xaa], "validation entry key: {v:02x?}");
    let sum = v.chunks(2).fold(0u16, |s, w| {
        s.wrapping_add(u16::from_le_bytes([w[0], w[1]]))
    });
    assert_eq!(sum, 0, "validation entry checksum: {v:02x?}");
    let entry = |r: &[u8]| Record::Entry {
        indicator: r[0],
        media: r[1],
        load_segment: u16::from_le_bytes([r[2], r[3]]),
        system_type: r[4],
        sectors: u16::from_le_bytes([r[6], r[7]]),
        lba: u32::from_le_bytes([r[8], r[9], r[10], r[11]]),
    };
    let mut records = vec![entry(&cat[32..64])];
    let mut at = 64;
    while at + 32 <= SECTOR {
        let r = &cat[at..at + 32];
        if r[0] != 0x90 && r[0] != 0x91 {
            break;
        }
        let entries = u16::from_le_bytes([r[2], r[3]]);
        records.push(Record::Header {
            indicator: r[0],
            platform: r[1],
            entries,
        });
        at += 32;
        for _ in 0..entries {
            assert!(
                at + 32 <= SECTOR,
                "{entries} entries do not fit: {records:?}"
            );
            records.push(entry(&cat[at..at + 32]));
            at += 32;
        }
        if r[0] == 0x91 {
            break;
        }
    }
    assert!(
        cat[at..].iter().all(|&b| b == 0),
        "bytes after the last record: {:02x?}",
        &cat[at..(at + 64).min(SECTOR)]
    );
    (v[1], records)
}

fn sector_of(image: &[u8], lba: u64) -> &[u8] {
    &image[lba as usize * SECTOR..][..SECTOR]
}

/// What syslinux's and genisoimage's boot info table holds as checksum: the sum of the file's
/// little-endian 32-bit words from byte 64 on, the last one padded with zeros.
fn boot_info_checksum(file: &[u8]) -> u32 {
    file[64..].chunks(4).fold(0u32, |sum, c| {
        let mut w = [0u8; 4];
        w[..c.len()].copy_from_slice(c);
        sum.wrapping_add(u32::from_le_bytes(w))
    })
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// One boot entry an image should have.
struct Want<'a> {
    /// As xorriso names it: "BIOS" or "UEFI".
    platform: &'a str,
    /// In the tree, without the leading slash.
    path: &'a str,
    load_size: u32,
    info_table: bool,
}

/// What `check_image` found, for comparisons with other tools' images.
struct Found {
    validation_platform: u8,
    records: Vec<Record>,
    /// The image's copy of each boot file, in entry order.
    copies: Vec<Vec<u8>>,
    xorriso: Vec<XorrisoImage>,
}

/// Checks the El Torito records of `iso` (made from `src`) with xorriso, isoinfo, isomgr and
/// by hand, and that the image holds `src`, whole, and the catalog at `catalog`.
fn check_image(iso: &Path, src: &Path, catalog: &str, want: &[Want]) -> Found {
    let name = iso.display();
    let image = fs::read(iso).unwrap();
    let x = xorriso_el_torito(iso);
    let xl = xorriso_lbas(iso);
    let il = isoinfo_lbas(iso);
    let (vd_catalog, arch) = isoinfo_el_torito(iso);

    // The catalog: where xorriso, isoinfo's descriptor and its listing say, the same sector.
    assert_eq!(x.catalog_path, format!("/{catalog}"), "{name}");
    assert_eq!(
        il.get(&format!("/{catalog}")),
        Some(&x.catalog_lba),
        "{name}"
    );
    assert_eq!(vd_catalog, x.catalog_lba, "{name}: isoinfo -d");

    // Descriptors: primary (16), boot record (17), Joliet (18), terminator (19).
    let vd = |n: u64| sector_of(&image, n);
    assert_eq!(&vd(16)[..7], b"\x01CD001\x01", "{name}: sector 16");
    let br = vd(17);
    assert_eq!(
        &br[..7],
        b"\x00CD001\x01",
        "{name}: sector 17 is no boot record"
    );
    let mut id = b"EL TORITO SPECIFICATION".to_vec();
    id.resize(32, 0);
    assert_eq!(&br[7..39], &id[..], "{name}: boot system identifier");
    assert_eq!(
        u64::from(le32(br, 0x47)),
        x.catalog_lba,
        "{name}: boot record"
    );
    assert_eq!(
        &vd(18)[..7],
        b"\x02CD001\x01",
        "{name}: sector 18 is not Joliet"
    );
    assert_eq!(&vd(19)[..7], b"\xffCD001\x01", "{name}: sector 19");

    // The entries, as xorriso reports them and as the catalog holds them.
    let got: Vec<(&str, &str, &str, &str, u32, &str)> = x
        .images
        .iter()
        .map(|i| {
            (
                i.platform.as_str(),
                i.bootable.as_str(),
                i.emulation.as_str(),
                i.load_segment.as_str(),
                i.load_size,
                i.path.as_str(),
            )
        })
        .collect();
    let paths: Vec<String> = want.iter().map(|w| format!("/{}", w.path)).collect();
    let expected: Vec<(&str, &str, &str, &str, u32, &str)> = want
        .iter()
        .zip(&paths)
        .map(|(w, p)| (w.platform, "y", "none", "0x0000", w.load_size, p.as_str()))
        .collect();
    assert_eq!(got, expected, "{name}: xorriso -report_el_torito");
    let (platform, records) = parse_catalog(sector_of(&image, x.catalog_lba));
    let platform_id = |p: &str| if p == "BIOS" { 0u8 } else { 0xef };
    assert_eq!(
        platform,
        platform_id(want[0].platform),
        "{name}: validation entry"
    );
    assert_eq!(arch, platform, "{name}: isoinfo's Arch");
    let mut expected_records = Vec::new();
    for (i, (w, xi)) in want.iter().zip(&x.images).enumerate() {
        if i == 1 {
            expected_records.push(Record::Header {
                indicator: 0x91,
                platform: platform_id(w.platform),
                entries: 1,
            });
        }
        expected_records.push(Record::Entry {
            indicator: 0x88,
            media: 0,
            load_segment: 0,
            system_type: 0,
            sectors: w.load_size as u16,
            lba: xi.lba as u32,
        });
    }
    assert_eq!(records, expected_records, "{name}: the catalog's records");

    // Each boot image: at the sector of its file, as xorriso and isoinfo list it.
    let mut copies = Vec::new();
    for (w, xi) in want.iter().zip(&x.images) {
        let p = format!("/{}", w.path);
        let source = fs::read(src.join(w.path)).unwrap();
        assert_eq!(
            xl.get(&p),
            Some(&(xi.lba, source.len() as u64)),
            "{name}: {p} (xorriso report_lba)"
        );
        assert_eq!(il.get(&p), Some(&xi.lba), "{name}: {p} (isoinfo -l)");
        let at = xi.lba as usize * SECTOR;
        let copy = image[at..at + source.len()].to_vec();
        if w.info_table {
            assert_eq!(copy[..8], source[..8], "{name}: {p} before the table");
            assert_eq!(le32(&copy, 8), 16, "{name}: {p}: table's PVD");
            assert_eq!(
                u64::from(le32(&copy, 12)),
                xi.lba,
                "{name}: {p}: table's LBA"
            );
            assert_eq!(
                le32(&copy, 16) as usize,
                source.len(),
                "{name}: {p}: length"
            );
            assert_eq!(
                le32(&copy, 20),
                boot_info_checksum(&source),
                "{name}: {p}: table's checksum"
            );
            assert!(
                copy[24..64].iter().all(|&b| b == 0),
                "{name}: {p}: reserved"
            );
            assert!(copy[64..] == source[64..], "{name}: {p} after the table");
        } else {
            assert!(copy == source, "{name}: {p} differs from the source");
        }
        copies.push(copy);
    }

    // isomgr itself.
    let scan = output_ok(Command::new(bin()).args(["scan", "--json"]).arg(iso));
    let scan: serde_json::Value = serde_json::from_slice(&scan.stdout).unwrap();
    assert_eq!(scan[0]["bootable"], true, "{name}: {scan}");
    assert!(
        scan[0]["extensions"]
            .as_array()
            .unwrap()
            .contains(&"eltorito".into()),
        "{name}: {scan}"
    );
    let (dir, _) = catalog.rsplit_once('/').unwrap_or(("", catalog));
    let ls = output_ok(
        Command::new(bin())
            .args(["ls", "--json"])
            .arg(iso)
            .arg(format!("/{dir}")),
    );
    let ls: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    let cat_row = ls
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["path"] == format!("/{catalog}").as_str())
        .unwrap_or_else(|| panic!("{name}: isomgr ls /{dir} has no {catalog}: {ls}"));
    assert_eq!(cat_row["type"], "file", "{name}: {cat_row}");
    assert_eq!(cat_row["size"], 2048, "{name}: {cat_row}");
    let ls = output_ok(
        Command::new(bin())
            .arg("ls")
            .arg(iso)
            .arg(format!("/{dir}")),
    );
    let ls = String::from_utf8_lossy(&ls.stdout);
    let cat_name = catalog.rsplit('/').next().unwrap();
    assert!(ls.lines().any(|l| l.trim() == cat_name), "{name}: {ls}");

    // The whole tree, byte for byte, plus the catalog: with bsdtar and isomgr's reader. A boot
    // file with a boot info table reads as the image's copy (as in genisoimage's images: the
    // tree's file and the boot image are the same sectors).
    let mut want_tree = describe_fs(src);
    for (w, copy) in want.iter().zip(&copies) {
        if w.info_table {
            want_tree.get_mut(&format!("/{}", w.path)).unwrap().sha = Some(sha256_hex(copy));
        }
    }
    let key = format!("/{catalog}");
    let catalog_sha = sha256_hex(sector_of(&image, x.catalog_lba));
    let mut with_reader = describe_image(iso);
    let c = with_reader
        .remove(&key)
        .unwrap_or_else(|| panic!("{name}: no {key}"));
    assert_eq!((c.kind, c.size), ("file", 2048), "{name}: {key}");
    assert_eq!(c.sha.as_ref(), Some(&catalog_sha), "{name}: {key}");
    assert_eq!(with_reader, want_tree, "{name}: isomgr's reader");
    let x_dir = iso.with_extension("bsdtar");
    fs::create_dir(&x_dir).unwrap();
    run(
        "bsdtar",
        &["-xpf", iso.to_str().unwrap(), "-C", x_dir.to_str().unwrap()],
    );
    let mut extracted = describe_fs(&x_dir);
    let c = extracted
        .remove(&key)
        .unwrap_or_else(|| panic!("{name}: bsdtar: no {key}"));
    assert_eq!((c.kind, c.size), ("file", 2048), "{name}: bsdtar: {key}");
    assert_eq!(c.sha.as_ref(), Some(&catalog_sha), "{name}: bsdtar: {key}");
    assert_eq!(extracted, want_tree, "{name}: bsdtar's extraction");

    Found {
        validation_platform: platform,
        records,
        copies,
        xorriso: x.images,
    }
}

/// The catalog and xorriso's view of `iso`, made by another tool, to compare with ours.
fn reference(iso: &Path) -> Found {
    let image = fs::read(iso).unwrap();
    let x = xorriso_el_torito(iso);
    let (platform, records) = parse_catalog(sector_of(&image, x.catalog_lba));
    let lbas = xorriso_lbas(iso);
    let copies = x
        .images
        .iter()
        .map(|i| {
            let (lba, size) = lbas[&i.path];
            assert_eq!(lba, i.lba, "{}: {}", iso.display(), i.path);
            image[lba as usize * SECTOR..][..size as usize].to_vec()
        })
        .collect();
    Found {
        validation_platform: platform,
        records,
        copies,
        xorriso: x.images,
    }
}

/// Ours and another tool's image of the same tree have the same boot records but for the
/// sectors the boot images start at.
fn same_boot_records(ours: &Found, theirs: &Found, what: &str) {
    assert_eq!(
        ours.validation_platform, theirs.validation_platform,
        "{what}: validation entry's platform"
    );
    let strip = |r: &[Record]| r.iter().map(Record::without_lba).collect::<Vec<_>>();
    assert_eq!(
        strip(&ours.records),
        strip(&theirs.records),
        "{what}: records"
    );
    let fields = |f: &Found| {
        f.xorriso
            .iter()
            .map(|i| XorrisoImage {
                lba: 0,
                ..i.clone()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        fields(ours),
        fields(theirs),
        "{what}: xorriso -report_el_torito"
    );
}

/// The tree test 3 builds its images from: isolinux, a FAT image for EFI (2880 KiB: 5760
/// sectors of 512 bytes), ordinary files.
fn boot_tree(src: &Path) {
    ordinary_files(src);
    let dir = src.join("isolinux");
    fs::create_dir_all(&dir).unwrap();
    fs::copy(ISOLINUX_BIN, dir.join("isolinux.bin")).unwrap();
    fs::copy(LDLINUX_C32, dir.join("ldlinux.c32")).unwrap();
    fs::write(dir.join("isolinux.cfg"), "SERIAL 0 115200\nSAY hello\n").unwrap();
    fs::create_dir_all(src.join("boot")).unwrap();
    let efi = src.join("boot/efi.img");
    run("mkfs.vfat", &["-C", efi.to_str().unwrap(), "2880"]);
    set_mtime(&efi, 1_600_000_000);
    // a boot file whose length is no multiple of 4
    let odd: Vec<u8> = (0..4097u32).map(|i| (i * 31 % 255) as u8 + 1).collect();
    fs::write(src.join("boot/odd.bin"), odd).unwrap();
}

/// Builds an image of a copy of `src` (genisoimage's -boot-info-table writes into the source
/// tree's boot file) with `tool` ("genisoimage" or "xorriso -as mkisofs") and `args`.
fn other_tool(tool: &str, src: &Path, name: &str, args: &[&str]) -> PathBuf {
    let dir = src.with_file_name(format!("{name}-src"));
    copy_tree(src, &dir);
    let iso = src.with_file_name(format!("{name}.iso"));
    let mut all: Vec<&str> = tool.split(' ').skip(1).collect();
    all.extend(["-quiet", "-J", "-r"]);
    all.extend(args);
    all.extend(["-o", iso.to_str().unwrap(), dir.to_str().unwrap()]);
    run(tool.split(' ').next().unwrap(), &all);
    iso
}

/// `cp -a src dst`: genisoimage's -boot-info-table writes into the source tree's boot file.
fn copy_tree(src: &Path, dst: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(src)
        .arg(dst)
        .status()
        .unwrap();
    assert!(st.success(), "cp -a");
}

#[test]
fn el_torito_as_other_tools_read_it() {
    if !tools(&["xorriso", "isoinfo", "genisoimage", "bsdtar", "mkfs.vfat"])
        || !isolinux_installed()
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let src = t.join("src");
    boot_tree(&src);
    let stock = fs::read(ISOLINUX_BIN).unwrap();
    let source_bytes = |p: &str| fs::read(src.join(p)).unwrap();
    let isolinux_before = source_bytes("isolinux/isolinux.bin");
    let efi_before = source_bytes("boot/efi.img");
    // The checksum as computed here is syslinux's: its build stores one for the whole file
    // in the stock isolinux.bin's table.
    assert_eq!(
        boot_info_checksum(&stock),
        le32(&stock, 20),
        "boot_info_checksum disagrees with the one in {ISOLINUX_BIN}"
    );
    let efi_sectors = (efi_before.len() / 512) as u32;
    assert_eq!(efi_sectors, 5760);

    let bios = |info_table, load_size| Want {
        platform: "BIOS",
        path: "isolinux/isolinux.bin",
        load_size,
        info_table,
    };
    let efi = Want {
        platform: "UEFI",
        path: "boot/efi.img",
        load_size: efi_sectors,
        info_table: false,
    };
    let build = |name: &str, args: &[&str]| -> PathBuf {
        let iso = t.join(name);
        mkiso_ok(&src, &iso, args, None);
        iso
    };

    // BIOS, the way isolinux wants it, against genisoimage's image of a copy of the tree.
    let iso = build(
        "bios.iso",
        &[
            "--boot",
            "isolinux/isolinux.bin",
            "--boot-catalog",
            "isolinux/boot.cat",
            "--boot-info-table",
        ],
    );
    let ours = check_image(&iso, &src, "isolinux/boot.cat", &[bios(true, 4)]);
    let giso = other_tool(
        "genisoimage",
        &src,
        "genisoimage",
        &[
            "-b",
            "isolinux/isolinux.bin",
            "-c",
            "isolinux/boot.cat",
            "-no-emul-boot",
            "-boot-load-size",
            "4",
            "-boot-info-table",
        ],
    );
    let theirs = reference(&giso);
    same_boot_records(&ours, &theirs, "BIOS with a boot info table (genisoimage)");
    // The boot file's copies differ in the table's LBA field only.
    let (a, b) = (&ours.copies[0], &theirs.copies[0]);
    assert!(a[..12] == b[..12], "{:02x?} / {:02x?}", &a[..64], &b[..64]);
    assert!(a[16..] == b[16..], "{:02x?} / {:02x?}", &a[..64], &b[..64]);
    assert_eq!(u64::from(le32(b, 12)), theirs.xorriso[0].lba);

    // BIOS with another load size and no table (the file goes in as it is), the catalog in
    // its default place.
    let iso = build(
        "bios-8.iso",
        &["--boot", "isolinux/isolinux.bin", "--boot-load-size", "8"],
    );
    let ours = check_image(&iso, &src, "boot.cat", &[bios(false, 8)]);
    let giso = other_tool(
        "genisoimage",
        &src,
        "genisoimage-8",
        &[
            "-b",
            "isolinux/isolinux.bin",
            "-c",
            "boot.cat",
            "-no-emul-boot",
            "-boot-load-size",
            "8",
        ],
    );
    same_boot_records(&ours, &reference(&giso), "BIOS, load size 8 (genisoimage)");

    // A boot info table over a file whose last word is padded with zeros for the checksum.
    let odd = Want {
        platform: "BIOS",
        path: "boot/odd.bin",
        load_size: 4,
        info_table: true,
    };
    let iso = build("odd.iso", &["--boot", "boot/odd.bin", "--boot-info-table"]);
    let ours = check_image(&iso, &src, "boot.cat", &[odd]);
    let giso = other_tool(
        "genisoimage",
        &src,
        "genisoimage-odd",
        &[
            "-b",
            "boot/odd.bin",
            "-c",
            "boot.cat",
            "-no-emul-boot",
            "-boot-load-size",
            "4",
            "-boot-info-table",
        ],
    );
    let theirs = reference(&giso);
    same_boot_records(&ours, &theirs, "odd length (genisoimage)");
    let (a, b) = (&ours.copies[0], &theirs.copies[0]);
    assert!(a[..12] == b[..12], "{:02x?} / {:02x?}", &a[..64], &b[..64]);
    assert!(a[16..] == b[16..], "{:02x?} / {:02x?}", &a[..64], &b[..64]);

    // EFI only, against xorriso's.
    let iso = build("efi.iso", &["--efi-boot", "boot/efi.img"]);
    let ours = check_image(&iso, &src, "boot.cat", std::slice::from_ref(&efi));
    let xiso = other_tool(
        "xorriso -as mkisofs",
        &src,
        "xorriso-efi",
        &["-c", "boot.cat", "-e", "boot/efi.img", "-no-emul-boot"],
    );
    same_boot_records(&ours, &reference(&xiso), "EFI only (xorriso)");

    // An EFI image of more than 65535 sectors (40 MiB, sparse): its count is 0, as xorriso
    // records it (firmware then takes the FAT image's own size).
    let big = t.join("big");
    fs::create_dir_all(big.join("boot")).unwrap();
    fs::File::create(big.join("boot/efi.img"))
        .unwrap()
        .set_len(40 << 20)
        .unwrap();
    let iso = t.join("big.iso");
    mkiso_ok(&big, &iso, &["--efi-boot", "boot/efi.img"], None);
    let x = xorriso_el_torito(&iso);
    let got: Vec<_> = x
        .images
        .iter()
        .map(|i| (i.platform.as_str(), i.load_size))
        .collect();
    assert_eq!(got, [("UEFI", 0)]);
    fs::remove_file(&iso).unwrap();
    let xiso = other_tool(
        "xorriso -as mkisofs",
        &big,
        "xorriso-big-efi",
        &["-e", "boot/efi.img", "-no-emul-boot"],
    );
    let theirs = xorriso_el_torito(&xiso);
    assert_eq!(theirs.images[0].load_size, 0, "{theirs:?}");
    fs::remove_file(&xiso).unwrap();

    // Both.
    let both_args = [
        "--boot",
        "isolinux/isolinux.bin",
        "--boot-catalog",
        "isolinux/boot.cat",
        "--boot-info-table",
        "--efi-boot",
        "boot/efi.img",
    ];
    let iso = build("both.iso", &both_args);
    let ours = check_image(&iso, &src, "isolinux/boot.cat", &[bios(true, 4), efi]);
    let xiso = other_tool(
        "xorriso -as mkisofs",
        &src,
        "xorriso-both",
        &[
            "-b",
            "isolinux/isolinux.bin",
            "-c",
            "isolinux/boot.cat",
            "-no-emul-boot",
            "-boot-load-size",
            "4",
            "-boot-info-table",
            "-eltorito-alt-boot",
            "-e",
            "boot/efi.img",
            "-no-emul-boot",
        ],
    );
    let theirs = reference(&xiso);
    same_boot_records(&ours, &theirs, "BIOS and EFI (xorriso)");
    let (a, b) = (&ours.copies[0], &theirs.copies[0]);
    assert!(
        a[..12] == b[..12] && a[16..] == b[16..],
        "xorriso's boot info table differs"
    );

    // Nothing in the source tree was written to.
    assert!(source_bytes("isolinux/isolinux.bin") == isolinux_before);
    assert!(isolinux_before == stock);
    assert!(source_bytes("boot/efi.img") == efi_before);

    // Without boot options: no El Torito (what scan says above comes from the options).
    let plain = build("plain.iso", &[]);
    let scan = output_ok(Command::new(bin()).args(["scan", "--json"]).arg(&plain));
    let scan: serde_json::Value = serde_json::from_slice(&scan.stdout).unwrap();
    assert_eq!(scan[0]["bootable"], false, "{scan}");
    assert!(!scan.to_string().contains("eltorito"), "{scan}");

    // Reproducible: the same bytes twice, also from a copy of the tree (other inodes, times
    // of change and order in the directories).
    let a = t.join("sde-a.iso");
    let b = t.join("sde-b.iso");
    mkiso_ok(&src, &a, &both_args, Some("0"));
    // (the same name: the default label is the source directory's)
    let copy = t.join("copy").join("src");
    fs::create_dir(copy.parent().unwrap()).unwrap();
    copy_tree(&src, &copy);
    mkiso_ok(&copy, &b, &both_args, Some("0"));
    let (a, b) = (fs::read(&a).unwrap(), fs::read(&b).unwrap());
    let first = a.iter().zip(&b).position(|(x, y)| x != y);
    assert!(
        a.len() == b.len() && first.is_none(),
        "two builds with SOURCE_DATE_EPOCH=0 differ: {} and {} bytes, first at {first:?}",
        a.len(),
        b.len()
    );
    // descriptor times are SOURCE_DATE_EPOCH, 0 included: 1970-01-01 00:00:00 UTC
    assert_eq!(&a[16 * SECTOR + 813..16 * SECTOR + 827], b"19700101000000");
}

// ---- errors ----

/// `isomgr mkiso SRC -o DIR/x.iso ARGS` in a new, empty DIR, also with the image written under
/// a temporary name (ISOMGR_NO_TMPFILE): exit status `code` (2 for a usage error, 1 for
/// anything else), standard error naming every one of `names` and one of `causes` (any case),
/// and DIR left empty. What is wrong, if anything.
fn refused(
    src: &Path,
    out_root: &Path,
    args: &[&str],
    names: &[&str],
    causes: &[&str],
    code: i32,
) -> Vec<String> {
    let mut wrong = Vec::new();
    for named_tmp in [false, true] {
        let dir = out_root.join(marker("out"));
        fs::create_dir(&dir).unwrap();
        let mut c = Command::new(bin());
        c.arg("mkiso")
            .arg(src)
            .arg("-o")
            .arg(dir.join("x.iso"))
            .args(args)
            .stdin(Stdio::null());
        if named_tmp {
            c.env("ISOMGR_NO_TMPFILE", "1");
        }
        let o = c.output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        let case = format!("{args:?}{}", if named_tmp { " (named tmp)" } else { "" });
        if o.status.code() != Some(code) {
            wrong.push(format!(
                "{case}: exit status {:?}, not {code}: {err}",
                o.status.code()
            ));
        }
        for n in names {
            if !err.contains(n) {
                wrong.push(format!("{case}: {n:?} not named: {err}"));
            }
        }
        let lower = err.to_lowercase();
        if !causes.iter().any(|c| lower.contains(&c.to_lowercase())) {
            wrong.push(format!("{case}: no cause (one of {causes:?}) in: {err}"));
        }
        let left: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        if !left.is_empty() {
            wrong.push(format!("{case}: left {left:?}"));
        }
    }
    wrong
}

#[test]
fn boot_option_errors_name_the_path_and_the_cause() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let src = t.join("src");
    // Boot files need not be real boot loaders for mkiso: bytes will do here.
    let boot: Vec<u8> = (0..4096u32).map(|i| (i % 253) as u8).collect();
    write(&src.join("isolinux/isolinux.bin"), &boot);
    write(&src.join("isolinux/isolinux.cfg"), b"SAY hi\n");
    write(&src.join("README.txt"), b"readme\n");
    write(&src.join("tiny.bin"), &[0x90; 63]);
    write(&src.join("sixty-four.bin"), &[0x90; 64]);
    write(&src.join("boot/efiboot.img"), &[0u8; 8192]);
    std::os::unix::fs::symlink("isolinux.bin", src.join("isolinux/link.bin")).unwrap();
    write(&t.join("outside.bin"), &boot);
    let out = t.join("out");
    fs::create_dir(&out).unwrap();

    // The causes, in any of a few wordings.
    let missing: &[&str] = &[
        "not in the source tree",
        "no such file",
        "not found",
        "does not exist",
        "missing",
    ];
    let not_file: &[&str] = &[
        "not a regular file",
        "a directory",
        "a symlink",
        "symbolic link",
    ];
    let outside: &[&str] = &["may not use `..`", "outside", "not in the source tree"];
    let needs_boot: &[&str] = &["required", "requires", "without", "needs", "only with"];
    let short: &[&str] = &["64 bytes", "at least 64", "shorter", "too short"];
    let taken: &[&str] = &["already", "exists", "taken", "in use"];
    // The catalog's directory, not the catalog (which is never in the tree), is what is
    // missing: the message has to say so.
    let no_dir: &[&str] = &["parent", "director"];
    let range: &[&str] = &["1..=65535", "at least 1", "out of range"];
    const BIOS: [&str; 2] = ["--boot", "isolinux/isolinux.bin"];
    let with_bios =
        |more: &[&'static str]| -> Vec<&'static str> { BIOS.iter().chain(more).copied().collect() };
    let cases: Vec<(Vec<&str>, &[&str], &[&str])> = vec![
        // the boot images
        (
            vec!["--boot", "isolinux/missing.bin"],
            &["isolinux/missing.bin"],
            missing,
        ),
        (vec!["--boot", "isolinux"], &["isolinux"], not_file),
        (
            vec!["--boot", "isolinux/link.bin"],
            &["isolinux/link.bin"],
            not_file,
        ),
        (vec!["--boot", "../outside.bin"], &["outside.bin"], outside),
        (
            vec!["--efi-boot", "boot/missing.img"],
            &["boot/missing.img"],
            missing,
        ),
        (vec!["--efi-boot", "boot"], &["boot"], not_file),
        (
            with_bios(&["--efi-boot", "boot/nothing.img"]),
            &["boot/nothing.img"],
            missing,
        ),
        // the boot info table
        (
            vec!["--boot-info-table"],
            &["--boot-info-table", "--boot"],
            needs_boot,
        ),
        (
            vec!["--efi-boot", "boot/efiboot.img", "--boot-info-table"],
            &["--boot-info-table", "--boot"],
            needs_boot,
        ),
        (
            vec!["--boot", "tiny.bin", "--boot-info-table"],
            &["tiny.bin", "63"],
            short,
        ),
        // the catalog
        (
            with_bios(&["--boot-catalog", "isolinux/isolinux.cfg"]),
            &["isolinux/isolinux.cfg"],
            taken,
        ),
        (
            with_bios(&["--boot-catalog", "isolinux/isolinux.bin"]),
            &["isolinux/isolinux.bin"],
            taken,
        ),
        (
            with_bios(&["--boot-catalog", "isolinux"]),
            &["isolinux"],
            taken,
        ),
        (
            with_bios(&["--boot-catalog", "nodir/boot.cat"]),
            &["nodir"],
            no_dir,
        ),
        (
            with_bios(&["--boot-catalog", "README.txt/boot.cat"]),
            &["README.txt"],
            no_dir,
        ),
        (
            vec!["--boot-catalog", "boot.cat"],
            &["--boot-catalog"],
            needs_boot,
        ),
        // the load size
        (
            with_bios(&["--boot-load-size", "0"]),
            &["--boot-load-size", "0"],
            range,
        ),
        (
            with_bios(&["--boot-load-size", "65536"]),
            &["--boot-load-size", "65536"],
            range,
        ),
    ];
    let mut wrong = Vec::new();
    for (args, names, causes) in &cases {
        // An option that needs another, or a value out of range, is a usage error (exit 2),
        // found before the tree is read; the rest are found in the tree (exit 1).
        let code = if *causes == needs_boot || *causes == range {
            2
        } else {
            1
        };
        wrong.extend(refused(&src, &out, args, names, causes, code));
    }
    // The default catalog place taken: a boot.cat of the tree's own.
    write(&src.join("boot.cat"), b"mine");
    wrong.extend(refused(&src, &out, &BIOS, &["boot.cat"], taken, 1));
    fs::remove_file(src.join("boot.cat")).unwrap();
    assert!(
        wrong.is_empty(),
        "{} of {} refusals went wrong:\n{}",
        wrong.len(),
        2 * (cases.len() + 1),
        wrong.join("\n")
    );

    // Next to each refusal, what is allowed: 64 bytes with a table, load sizes 1 and 65535,
    // the catalog in a directory that is there.
    for args in [
        vec!["--boot", "sixty-four.bin", "--boot-info-table"],
        with_bios(&["--boot-load-size", "1"]),
        with_bios(&["--boot-load-size", "65535"]),
        with_bios(&["--boot-catalog", "isolinux/boot.cat"]),
    ] {
        let iso = t.join("ok.iso");
        mkiso_ok(&src, &iso, &args, None);
        if args[1] == "sixty-four.bin" {
            // the table over the whole file: nothing after it, checksum 0
            let img = isomgr::iso9660::Image::open(fs::File::open(&iso).unwrap()).unwrap();
            let e = img.lookup("/sixty-four.bin").unwrap();
            let mut copy = [0u8; 64];
            assert_eq!(img.read_at(&e, 0, &mut copy).unwrap(), 64);
            assert_eq!(copy[..8], [0x90; 8]);
            assert_eq!((le32(&copy, 8), le32(&copy, 16)), (16, 64));
            assert_ne!(le32(&copy, 12), 0, "the LBA");
            assert!(copy[20..].iter().all(|&b| b == 0), "{copy:02x?}");
        }
        fs::remove_file(&iso).unwrap();
    }
    assert_eq!(fs::read(src.join("tiny.bin")).unwrap(), [0x90; 63]);
    assert_eq!(fs::read(src.join("sixty-four.bin")).unwrap(), [0x90; 64]);
}

/// Boot images given in a way they will not boot get a warning naming them and the fix (the
/// image is made all the same, as genisoimage and xorriso make it): GRUB's El Torito image
/// without --boot-info-table (it hangs once loaded), an EFI boot image that is no FAT file
/// system (a bare BOOTX64.EFI, zeros). A zeroed isolinux table, GRUB with its table, a FAT
/// image and a disk image with a partition get none. (A stale isolinux table is in
/// `a_bios_boot_image_boots_in_qemu`, booted.)
#[test]
fn boot_images_that_will_not_boot_as_given_get_a_warning() {
    if !tools(&["grub-mkimage", "mkfs.vfat", "sfdisk"]) || !isolinux_installed() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let src = t.join("src");
    grub_bios_tree(&src, "unused");
    isolinux_tree(&src, "unused");
    let mut pe = b"MZ".to_vec();
    pe.resize(4096, 0x90);
    write(&src.join("efi/bootx64.efi"), &pe);
    write(&src.join("efi/zeros.img"), &[0u8; 8192]);
    run(
        "mkfs.vfat",
        &["-C", src.join("efi/fat.img").to_str().unwrap(), "1440"],
    );
    // a disk image: an MBR with an EFI system partition from sector 2048 (what sfdisk -d
    // reads back)
    let disk = src.join("efi/disk.img");
    let mut d = vec![0u8; 4 << 20];
    d[446 + 4] = 0xEF;
    d[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
    d[446 + 12..446 + 16].copy_from_slice(&6144u32.to_le_bytes());
    d[510..512].copy_from_slice(&[0x55, 0xAA]);
    write(&disk, &d);
    let table = run("sfdisk", &["-d", disk.to_str().unwrap()]);
    assert!(
        table.contains("start=        2048, size=        6144, type=ef"),
        "{table}"
    );
    let grub = "boot/grub/eltorito.img";
    let isolinux = "isolinux/isolinux.bin";
    let needs_table = ["GRUB's El Torito image", "--boot-info-table", "hangs"];
    let not_fat = ["not a FAT", "EFI/BOOT/BOOTX64.EFI", "mkfs.vfat"];
    // (arguments, the image warned about and what the warning says, if any)
    type Warned<'a> = Option<(&'a str, &'a [&'a str])>;
    let cases: &[(&[&str], Warned)] = &[
        (&["--boot", grub], Some((grub, &needs_table))),
        (&["--boot", grub, "--boot-info-table"], None),
        (&["--boot", isolinux], None),
        (
            &["--efi-boot", "efi/bootx64.efi"],
            Some((
                "efi/bootx64.efi",
                &["a PE executable", not_fat[1], not_fat[2]],
            )),
        ),
        (
            &["--efi-boot", "efi/zeros.img"],
            Some(("efi/zeros.img", &not_fat)),
        ),
        (&["--efi-boot", "efi/fat.img"], None),
        (&["--efi-boot", "efi/disk.img"], None),
    ];
    for (i, (args, warned)) in cases.iter().enumerate() {
        let iso = t.join(format!("{i}.iso"));
        let o = mkiso(&src, &iso, args, None);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success() && iso.exists(), "{args:?}: {err}");
        match warned {
            None => assert!(err.is_empty(), "{args:?}: {err}"),
            Some((path, words)) => {
                let line = format!("warning: boot image {}", src.join(path).display());
                assert!(err.contains(&line), "{args:?}: {err}");
                for w in *words {
                    assert!(err.contains(w), "{args:?}: {w:?} not in {err}");
                }
            }
        }
    }
}

/// `ls --boot` names the files genisoimage put at the boot sectors, also where an empty file
/// shares one's sector (genisoimage gives an empty file the next file's sector), and
/// its options rebuild the boot records genisoimage wrote (a load size of the whole file, as
/// genisoimage records it without -boot-load-size).
#[test]
fn ls_boot_reads_genisoimage_s_boot_records_back() {
    if !tools(&["genisoimage", "xorriso", "isoinfo"]) || !isolinux_installed() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let src = t.join("src");
    isolinux_tree(&src, "unused");
    write(&src.join("isolinux/a-empty"), b"");
    let theirs = other_tool(
        "genisoimage",
        &src,
        "genisoimage",
        &[
            "-b",
            "isolinux/isolinux.bin",
            "-c",
            "isolinux/boot.cat",
            "-no-emul-boot",
            "-boot-info-table",
        ],
    );
    let lbas = isoinfo_lbas(&theirs);
    let empty = lbas.get("/isolinux/a-empty");
    assert!(
        [
            lbas.get("/isolinux/boot.cat"),
            lbas.get("/isolinux/isolinux.bin")
        ]
        .contains(&empty),
        "the empty file shares no boot file's sector: {lbas:?}"
    );
    let sectors = fs::metadata(src.join("isolinux/isolinux.bin"))
        .unwrap()
        .len()
        .div_ceil(512);
    let options = boot_options(&theirs);
    assert_eq!(
        options,
        [
            "--boot-catalog",
            "isolinux/boot.cat",
            "--boot",
            "isolinux/isolinux.bin",
            "--boot-load-size",
            &sectors.to_string(),
            "--boot-info-table"
        ],
        "ls --boot"
    );
    let ours = t.join("ours.iso");
    let options: Vec<&str> = options.iter().map(String::as_str).collect();
    mkiso_ok(&src, &ours, &options, None);
    same_boot_records(
        &reference(&ours),
        &reference(&theirs),
        "ls --boot's options",
    );
}

/// Debian's iPXE image (package ipxe): isolinux, iPXE and an EFI image, made by iPXE's own
/// script, isohybrid.
const IPXE_ISO: &str = "/usr/lib/ipxe/ipxe.iso";

/// Remastering a served image, as the README shows it: `isomgr watch --driver fuse` serves
/// Debian's iPXE image, `isomgr ls --boot` reads how it boots, and mkiso builds a new image
/// with those options straight from the served directory, with a new isolinux.cfg grafted in
/// and the image's old boot catalog replaced, nothing copied out first. The new image boots under SeaBIOS from a CD and from a disk: isolinux says what the
/// grafted configuration says and starts the served iPXE. The served image is not changed.
#[test]
fn a_served_image_is_remastered_from_its_directory_and_boots() {
    if !tools(&["qemu-system-x86_64"])
        || !have_file(IPXE_ISO, "ipxe")
        || !have_file(ISOHDPFX, "isolinux")
        || !common::watcher::can_run("remastering a served image")
    {
        return;
    }
    let env = common::watcher::Env::new("remaster");
    let _w = common::watcher::Watcher::start(&env);
    let before = fs::read(IPXE_ISO).unwrap();
    let staged = env.scratch.join("ipxe.iso");
    fs::write(&staged, &before).unwrap();
    fs::rename(&staged, env.drop.join("ipxe.iso")).unwrap();
    env.wait_names(&["ISOIMAGE"]);
    let served = env.root.join("ISOIMAGE");

    let m = marker("remastered");
    let cfg = env.outside("cfg").join("isolinux.cfg");
    fs::write(
        &cfg,
        format!("SAY {m}\nTIMEOUT 0\nDEFAULT ipxe\nLABEL ipxe\n KERNEL ipxe.krn\n"),
    )
    .unwrap();
    let iso = env.outside("out").join("remastered.iso");
    // What makes it boot, as `ls --boot` reads it and gives it to mkiso.
    let options = boot_options(&env.drop.join("ipxe.iso"));
    assert_eq!(
        options,
        [
            "--boot",
            "isolinux.bin",
            "--boot-info-table",
            "--efi-boot",
            "efi.img",
            "--isohybrid-mbr",
            ISOHDPFX
        ],
        "ls --boot"
    );
    let doc = output_ok(
        Command::new(bin())
            .args(["ls", "--boot", "--json"])
            .arg(env.drop.join("ipxe.iso")),
    );
    let doc: serde_json::Value = serde_json::from_slice(&doc.stdout).unwrap();
    assert_eq!(doc["mkiso"], serde_json::json!(options), "{doc}");
    assert_eq!(doc["catalog"]["path"], "/boot.cat", "{doc}");
    assert_eq!(
        (&doc["mbr"], &doc["gpt"], &doc["not_made"]),
        (&"isohybrid".into(), &false.into(), &serde_json::json!([])),
        "{doc}"
    );
    let images = doc["images"].as_array().unwrap();
    let fields = |i: &serde_json::Value| {
        (
            i["platform"].as_str().unwrap().to_string(),
            i["path"].as_str().unwrap().to_string(),
            i["emulation"].as_str().unwrap().to_string(),
            i["boot_info_table"].as_bool().unwrap(),
        )
    };
    assert_eq!(
        images.iter().map(fields).collect::<Vec<_>>(),
        [
            ("bios".into(), "/isolinux.bin".into(), "none".into(), true),
            ("uefi".into(), "/efi.img".into(), "none".into(), false)
        ],
        "{doc}"
    );
    let graft = format!("isolinux.cfg={}", cfg.display());
    let mut args = vec!["-V", "iPXE-remastered", "--graft", &graft];
    args.extend(options.iter().map(String::as_str));
    let o = mkiso(&served, &iso, &args, None);
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let x = xorriso_el_torito(&iso);
    assert_eq!(x.catalog_path, "/boot.cat");
    let listing = run("isoinfo", &["-l", "-R", "-i", iso.to_str().unwrap()]);
    assert_eq!(listing.matches(" boot.cat").count(), 1, "{listing}");
    let shown = output_ok(Command::new(bin()).arg("cat").arg(&iso).arg("isolinux.cfg"));
    assert_eq!(shown.stdout, fs::read(&cfg).unwrap());

    let ipxe = "iPXE initialising devices";
    boots_to(
        &iso,
        Firmware::SeaBiosScreenOnSerial,
        &[&m, ipxe],
        env.base.as_path(),
    );
    boots_to(
        &iso,
        Firmware::SeaBiosDiskScreenOnSerial,
        &[&m, ipxe],
        env.base.as_path(),
    );
    assert!(
        fs::read(env.drop.join("ipxe.iso")).unwrap() == before,
        "the served image changed"
    );
}

// ---- emulated floppies and hard disks ----

const SYSLINUX_MBR: &str = "/usr/lib/syslinux/mbr/mbr.bin";

/// A syslinux configuration whose boot shows `marker` on the serial port: the DEFAULT label,
/// which ldlinux prints ("Loading MARKER... failed") once its serial console is on (see
/// `isolinux_tree`).
fn syslinux_cfg(dir: &Path, marker: &str) -> PathBuf {
    let cfg = dir.join(format!("{}.cfg", marker));
    fs::write(
        &cfg,
        format!("SERIAL 0 115200\nPROMPT 0\nTIMEOUT 0\nDEFAULT {marker}\n"),
    )
    .unwrap();
    cfg
}

/// A 1.44 MB FAT12 floppy image at `path` with SYSLINUX installed, booting to `marker`: its
/// boot sector reads ldlinux.sys and the configuration through the BIOS from the floppy drive
/// the BIOS emulates.
fn syslinux_floppy(path: &Path, marker: &str) {
    let p = path.to_str().unwrap();
    run("mkfs.fat", &["-C", "-F", "12", "-n", "FLOPPY", p, "1440"]);
    let cfg = syslinux_cfg(path.parent().unwrap(), marker);
    run(
        "mcopy",
        &["-i", p, cfg.to_str().unwrap(), "::/syslinux.cfg"],
    );
    run("syslinux", &["--install", p]);
}

/// A hard disk image at `path` of `cylinders` × `heads` × `per_track` 512-byte sectors:
/// syslinux's MBR and one active FAT16 partition from the second track (0/1/1, as DOS made
/// them) to the end, SYSLINUX installed in it, booting to `marker`.
fn syslinux_hard_disk(path: &Path, marker: &str, (cylinders, heads, per_track): (u32, u32, u32)) {
    let total = cylinders * heads * per_track;
    let chs = |s: u32| {
        let (c, h, r) = (
            s / (heads * per_track),
            s / per_track % heads,
            s % per_track + 1,
        );
        [h as u8, (r as u8 & 0x3F) | ((c >> 2) as u8 & 0xC0), c as u8]
    };
    let mut mbr = fs::read(SYSLINUX_MBR).unwrap();
    mbr.resize(512, 0);
    mbr[440..446].fill(0);
    let start = per_track;
    let p = &mut mbr[446..462];
    p[0] = 0x80;
    p[1..4].copy_from_slice(&chs(start));
    p[4] = 0x06;
    p[5..8].copy_from_slice(&chs(total - 1));
    p[8..12].copy_from_slice(&start.to_le_bytes());
    p[12..16].copy_from_slice(&(total - start).to_le_bytes());
    mbr[462..510].fill(0);
    mbr[510..].copy_from_slice(&[0x55, 0xAA]);
    let f = fs::File::create(path).unwrap();
    f.set_len(u64::from(total) * 512).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &mbr, 0).unwrap();
    drop(f);
    let img = path.to_str().unwrap();
    let blocks = ((total - start) / 2).to_string();
    let offset = u64::from(start) * 512;
    run(
        "mkfs.fat",
        &[
            "-F",
            "16",
            "-s",
            "1",
            "--offset",
            &start.to_string(),
            "-n",
            "HARDDISK",
            img,
            &blocks,
        ],
    );
    let cfg = syslinux_cfg(path.parent().unwrap(), marker);
    let at = format!("{img}@@{offset}");
    run(
        "mcopy",
        &["-i", &at, cfg.to_str().unwrap(), "::/syslinux.cfg"],
    );
    run(
        "syslinux",
        &["--offset", &offset.to_string(), "--install", img],
    );
}

/// What booting SYSLINUX from emulated disks takes.
fn emulation_tools() -> bool {
    tools(&[
        "qemu-system-x86_64",
        "mkfs.fat",
        "mcopy",
        "syslinux",
        "genisoimage",
        "xorriso",
        "isoinfo",
    ]) && have_file(SYSLINUX_MBR, "syslinux-common")
}

#[test]
fn emulated_floppy_and_hard_disk_images_boot_as_genisoimage_makes_them() {
    if !emulation_tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // (mode, image, genisoimage's options, xorriso's emulation, media type, system type)
    let cases = [
        ("floppy", "boot/floppy.img", &[][..], "fd1.4", 2u8, 0u8),
        (
            "hard-disk",
            "boot/disk.img",
            &["-hard-disk-boot"][..],
            "hd",
            4,
            6,
        ),
    ];
    for (mode, image, theirs_args, emulation, media, system) in cases {
        let m = marker(mode);
        let src = t.join(format!("{mode}-src"));
        ordinary_files(&src);
        fs::create_dir_all(src.join("boot")).unwrap();
        let boot_file = src.join(image);
        if mode == "floppy" {
            syslinux_floppy(&boot_file, &m);
        } else {
            syslinux_hard_disk(&boot_file, &m, (16, 16, 63));
        }
        let before = fs::read(&boot_file).unwrap();
        let iso = t.join(format!("{mode}.iso"));
        let args = [
            "--boot",
            image,
            "--boot-emulation",
            mode,
            "--boot-catalog",
            "boot/boot.cat",
        ];
        let out = mkiso(&src, &iso, &args, None);
        assert!(out.status.success(), "{mode}: {out:?}");
        assert_eq!(
            boot_options(&iso),
            [
                "--boot-catalog",
                "boot/boot.cat",
                "--boot",
                image,
                "--boot-emulation",
                mode
            ],
            "{mode}: ls --boot"
        );
        assert!(
            out.stderr.is_empty(),
            "{mode}: a well-made image gets no warning: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            fs::read(&boot_file).unwrap() == before,
            "{mode}: the source changed"
        );

        // As xorriso, isoinfo and a hand read of the catalog see it.
        let ours = reference(&iso);
        let x = &ours.xorriso;
        assert_eq!(x.len(), 1, "{mode}: {x:?}");
        assert_eq!(
            (
                x[0].platform.as_str(),
                x[0].emulation.as_str(),
                x[0].load_size
            ),
            ("BIOS", emulation, 1),
            "{mode}: xorriso -report_el_torito"
        );
        assert_eq!(x[0].path, format!("/{image}"), "{mode}");
        assert!(
            ours.copies[0] == before,
            "{mode}: the image's copy is not the file"
        );
        let Record::Entry {
            media: m_got,
            system_type,
            sectors,
            load_segment,
            ..
        } = ours.records[0]
        else {
            panic!("{mode}: {:?}", ours.records);
        };
        assert_eq!(
            (m_got, system_type, sectors, load_segment),
            (media, system, 1, 0),
            "{mode}"
        );
        let info = run("isoinfo", &["-d", "-i", iso.to_str().unwrap()]);
        assert!(
            info.contains(&format!("Boot media {media} ("))
                && info.contains(&format!("Sys type {system}")),
            "{mode}: isoinfo -d:\n{info}"
        );

        // The same records as genisoimage's image of the same tree.
        let theirs_src = t.join(format!("{mode}-theirs-src"));
        copy_tree(&src, &theirs_src);
        let theirs = t.join(format!("{mode}-genisoimage.iso"));
        let mut g = vec!["-quiet", "-J", "-r", "-b", image, "-c", "boot/boot.cat"];
        g.extend(theirs_args);
        g.extend(["-o", theirs.to_str().unwrap(), theirs_src.to_str().unwrap()]);
        run("genisoimage", &g);
        same_boot_records(&ours, &reference(&theirs), mode);

        // The BIOS serves the image as a disk: SYSLINUX reads its files from it and starts.
        boots_to(&iso, Firmware::SeaBios, &[&m], t);
    }
}

#[test]
fn emulated_disk_errors_name_the_image_and_the_cause() {
    if !tools(&["mkfs.fat"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let src = t.join("src");
    write(&src.join("README.txt"), b"readme\n");
    // a FAT floppy: 0x55AA at 510, but a boot sector, not an MBR
    let floppy = src.join("floppy.img");
    run(
        "mkfs.fat",
        &["-C", "-F", "12", floppy.to_str().unwrap(), "1440"],
    );
    write(&src.join("short.img"), &vec![0u8; 1_474_559]);
    let mbr = |parts: &[(u8, u8)]| {
        let mut v = vec![0u8; 1 << 20];
        for (i, &(flag, ty)) in parts.iter().enumerate() {
            let p = &mut v[446 + 16 * i..462 + 16 * i];
            p[0] = flag;
            p[4] = ty;
            // CHS end: cylinder 1, head 15, sector 63
            p[5..8].copy_from_slice(&[0x0F, 0x3F, 0x01]);
        }
        v[510] = 0x55;
        v[511] = 0xAA;
        v
    };
    write(&src.join("none.img"), &mbr(&[]));
    write(&src.join("two.img"), &mbr(&[(0x80, 0x06), (0, 0x0B)]));
    let mut third = mbr(&[(0x80, 0x06)]);
    third.copy_within(446..462, 478);
    third[446..462].fill(0);
    write(&src.join("third.img"), &third);
    let mut no_sig = mbr(&[(0x80, 0x06)]);
    no_sig[511] = 0;
    write(&src.join("nosig.img"), &no_sig);
    let mut no_sector = mbr(&[(0x80, 0x06)]);
    no_sector[446 + 6] = 0;
    write(&src.join("nosector.img"), &no_sector);
    // a disk of 2 cylinders × 16 heads × 63 sectors by its partition's end; 1 MiB is not that
    let odd = mbr(&[(0x80, 0x06)]);
    write(&src.join("odd.img"), &odd);
    let out = t.join("out");
    fs::create_dir(&out).unwrap();

    let floppy_sizes: &[&str] = &["1474560"];
    let mut wrong = Vec::new();
    // (arguments, what the message names, one of the causes, exit status)
    type Case<'a> = (Vec<&'a str>, &'a [&'a str], &'a [&'a str], i32);
    let cases: Vec<Case> = vec![
        (
            vec!["--boot", "short.img", "--boot-emulation", "floppy"],
            &["short.img", "1474559"],
            floppy_sizes,
            1,
        ),
        (
            vec!["--boot", "floppy.img", "--boot-emulation", "hard-disk"],
            &["floppy.img", "--boot-emulation floppy"],
            &["no partition"],
            1,
        ),
        (
            vec!["--boot", "nosig.img", "--boot-emulation", "hard-disk"],
            &["nosig.img"],
            &["no MBR"],
            1,
        ),
        (
            vec!["--boot", "none.img", "--boot-emulation", "hard-disk"],
            &["none.img", "no partition"],
            &["exactly one"],
            1,
        ),
        (
            vec!["--boot", "two.img", "--boot-emulation", "hard-disk"],
            &["two.img", "2 partitions"],
            &["exactly one"],
            1,
        ),
        (
            vec!["--boot", "third.img", "--boot-emulation", "hard-disk"],
            &["third.img", "entry 3"],
            &["entry 1"],
            1,
        ),
        (
            vec!["--boot", "nosector.img", "--boot-emulation", "hard-disk"],
            &["nosector.img"],
            &["sector 0"],
            1,
        ),
        (
            vec!["--boot-emulation", "floppy"],
            &["--boot"],
            &["required"],
            2,
        ),
        (
            vec!["--boot", "floppy.img", "--boot-emulation", "tape"],
            &["tape"],
            &["floppy, hard-disk"],
            2,
        ),
    ];
    for (args, names, causes, code) in &cases {
        wrong.extend(refused(&src, &out, args, names, causes, *code));
    }
    for other in [
        &["--boot-info-table"][..],
        &["--boot-load-size", "4"],
        &["--grub2-boot-info"],
        &["--isohybrid-mbr", "/dev/null"],
    ] {
        let mut args = vec!["--boot", "floppy.img", "--boot-emulation", "floppy"];
        args.extend(other);
        wrong.extend(refused(
            &src,
            &out,
            &args,
            &[other[0]],
            &["cannot be used"],
            2,
        ));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // A disk that is not whole cylinders of its partition's geometry is made, with a warning.
    let iso = t.join("odd.iso");
    let o = mkiso(
        &src,
        &iso,
        &["--boot", "odd.img", "--boot-emulation", "hard-disk"],
        None,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("odd.img") && err.contains("1048576 bytes") && err.contains("2 cylinders"),
        "{err}"
    );
}

/// The EFI system partition's type GUID.
const EFI_SYSTEM_GUID: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";

/// An image's size, its volume's and where its UEFI boot image lies, all in 512-byte sectors
/// (the volume from isoinfo, the boot image from xorriso's El Torito report).
fn volume_and_efi_image(iso: &Path) -> (u64, u64, u64) {
    let size = fs::metadata(iso).unwrap().len() / 512;
    let d = run("isoinfo", &["-d", "-i", iso.to_str().unwrap()]);
    let volume: u64 = d
        .lines()
        .find_map(|l| l.strip_prefix("Volume size is: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no volume size in:\n{d}"));
    let efi = xorriso_el_torito(iso)
        .images
        .iter()
        .find(|i| i.platform == "UEFI")
        .map(|i| i.lba)
        .unwrap_or_else(|| panic!("{}: no UEFI boot image", iso.display()));
    (size, volume * 4, efi * 4)
}

/// `--append-partition` with `--efi-boot-partition`: the UEFI boot image as a partition after
/// the volume, in the MBR beside GRUB's hybrid MBR (as Debian's memtest86+ images have it), or
/// in a GPT behind a protective MBR with an active entry (as Ubuntu's have it, without their
/// partition offset). xorriso reads each as it reads its own image of the same tree made with
/// the same options (where its partitions lie by the same rule; xorriso puts its 300 KiB of
/// padding after the partition, mkiso inside the volume as genisoimage does); the partition
/// holds the file, the volume every file of the tree; sgdisk finds the GPT sound; the same
/// label and time give the same bytes. Each image boots by UEFI from a disk (the partition
/// table) and by BIOS from a disk (GRUB's MBR), the MBR one by UEFI from a CD too (the El
/// Torito entry into the partition).
#[test]
fn an_appended_efi_partition_is_laid_out_as_xorriso_does_and_boots() {
    if !have_file(BOOT_HYBRID, "grub-pc-bin") || !tools(&["grub-mkimage"]) {
        return;
    }
    let Some((code, vars)) = efi_boot_tools(&["xorriso", "sgdisk", "isoinfo"]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (bios_m, efi_m) = (marker("appended-bios"), marker("appended-efi"));
    let src = t.join("src");
    grub_bios_tree(&src, &bios_m);
    ordinary_files(&src);
    let read_m = format!("{efi_m}-read-from-the-volume");
    fs::write(src.join(GRUB_READS), format!("{read_m}\n")).unwrap();
    let fat = efi_fat_image(t, &efi_m);
    let fat_s = fat.to_str().unwrap();
    let fat_sectors = fs::metadata(&fat).unwrap().len() / 512;
    let grub = [
        "--boot",
        "boot/grub/eltorito.img",
        "--boot-info-table",
        "--grub2-boot-info",
        "--grub2-mbr",
        BOOT_HYBRID,
    ];
    let with = |more: &[&'static str]| -> Vec<String> {
        grub.iter()
            .chain(more)
            .map(|s| s.replace("FAT", fat_s))
            .collect()
    };
    let mbr_args = with(&[
        "--append-partition",
        "2",
        "0xef",
        "FAT",
        "--efi-boot-partition",
        "2",
    ]);
    let gpt_args = with(&[
        "--append-partition",
        "2",
        EFI_SYSTEM_GUID,
        "FAT",
        "--efi-boot-partition",
        "2",
        "--appended-part-as-gpt",
        "--mbr-force-bootable",
    ]);
    let xorriso_grub = [
        "--grub2-mbr",
        BOOT_HYBRID,
        "-b",
        "boot/grub/eltorito.img",
        "-no-emul-boot",
        "-boot-load-size",
        "4",
        "-boot-info-table",
        "--grub2-boot-info",
        "-eltorito-alt-boot",
        "-e",
        "--interval:appended_partition_2:all::",
        "-no-emul-boot",
        "-append_partition",
        "2",
    ];
    let mut x_mbr = xorriso_grub.to_vec();
    x_mbr.extend(["0xef", fat_s, "--protective-msdos-label"]);
    let mut x_gpt = xorriso_grub.to_vec();
    // (xorriso's way of writing the EFI system partition's type)
    x_gpt.extend([
        "28732ac11ff8d211ba4b00a0c93ec93b",
        fat_s,
        "-appended_part_as_gpt",
        "--mbr-force-bootable",
    ]);

    for (name, args, xorriso_args) in [("mbr", &mbr_args, &x_mbr), ("gpt", &gpt_args, &x_gpt)] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let ours = t.join(format!("ours-{name}.iso"));
        mkiso_ok(&src, &ours, &args, Some("0"));
        let theirs = other_tool("xorriso -as mkisofs", &src, name, xorriso_args);

        // Where each image's partitions lie, by one rule: the volume's partition (1) up to
        // the EFI partition, which holds the file. (xorriso's volume descriptors count the
        // partition in with --protective-msdos-label, not with -appended_part_as_gpt; mkiso's
        // count what the volume holds: the partition follows it.)
        let expected = |iso: &Path| {
            let (n, _, efi) = volume_and_efi_image(iso);
            let mut want = vec![(
                "El Torito".to_string(),
                format!("{fat_sectors} {}", efi / 4),
            )];
            if name == "mbr" {
                want.extend([
                    ("MBR partition".into(), format!("1 0x80 0xcd 1 {}", efi - 1)),
                    (
                        "MBR partition".into(),
                        format!("2 0x00 0xef {efi} {fat_sectors}"),
                    ),
                ]);
            } else {
                want.extend([
                    ("MBR partition".into(), format!("1 0x00 0xee 1 {}", n - 1)),
                    ("MBR partition".into(), "2 0x80 0x00 0 1".to_string()),
                    ("GPT lba range".into(), format!("64 {} {}", n - 64, n - 1)),
                    ("GPT start and size".into(), format!("1 64 {}", efi - 64)),
                    (
                        "GPT start and size".into(),
                        format!("2 {efi} {fat_sectors}"),
                    ),
                ]);
            }
            want
        };
        let area = |iso: &Path| {
            let mut a = system_area(iso);
            let el_torito = xorriso_el_torito(iso);
            let uefi = el_torito
                .images
                .iter()
                .find(|i| i.platform == "UEFI")
                .unwrap();
            a.push((
                "El Torito".into(),
                format!("{} {}", uefi.load_size, uefi.lba),
            ));
            a
        };
        let (a_ours, a_theirs) = (area(&ours), area(&theirs));
        for (iso, a) in [(&ours, &a_ours), (&theirs, &a_theirs)] {
            for want in expected(iso) {
                assert!(
                    a.contains(&want),
                    "{}: {want:?} not in {a:#?}",
                    iso.display()
                );
            }
        }
        // The rest is the same but for GUIDs, each image's own, and xorriso's padding after
        // the partition, which it gives a partition of its own (3, "Gap1").
        assert_eq!(
            system_area_but_places(&ours),
            system_area_but_places(&theirs),
            "{name}: xorriso -report_system_area"
        );

        // The partition holds the file; the volume, the tree (but the boot image's copy,
        // which has its tables, and the catalog).
        let image = fs::read(&ours).unwrap();
        let (_, volume, efi) = volume_and_efi_image(&ours);
        assert_eq!(efi, volume, "{name}: the partition follows the volume");
        let at = efi as usize * 512;
        assert!(
            image[at..at + fat_sectors as usize * 512] == fs::read(&fat).unwrap()[..],
            "{name}: the partition is not the file"
        );
        assert!(image.len() as u64 >= (efi + fat_sectors) * 512);
        let read_back = describe_image(&ours);
        for (path, want) in describe_fs(&src) {
            if path == "/boot/grub/eltorito.img" {
                continue;
            }
            assert_eq!(read_back.get(&path), Some(&want), "{name}: {path}");
        }
        // `ls --boot` gives the options and how to copy the partition out of the image; with
        // them mkiso makes the same image again.
        let ls = LsBoot::of(&ours);
        assert_eq!(ls.copies().len(), 1, "{}", ls.listing);
        assert_eq!(ls.line("not made by mkiso: "), None, "{}", ls.listing);
        let (remade, _) = ls.remake(&src, &t.join(format!("remade-{name}")), &[], Some("0"));
        assert!(
            fs::read(&remade).unwrap() == image,
            "{name}: ls --boot's options {:?} made another image than {args:?}",
            ls.options()
        );
        if name == "gpt" {
            let problems = sgdisk_problems(&ours);
            assert!(
                problems
                    .first()
                    .is_some_and(|p| p.starts_with("No problems found")),
                "sgdisk -v: {problems:?}"
            );
            let again = t.join("again.iso");
            mkiso_ok(&src, &again, &args, Some("0"));
            assert!(fs::read(&again).unwrap() == image, "not deterministic");
        }

        let efi_markers = [efi_m.as_str(), read_m.as_str()];
        let v = ovmf_vars_copy(&vars, t);
        let disk = Firmware::OvmfDisk {
            code: &code,
            vars: &v,
        };
        boots_to(&ours, disk, &efi_markers, t);
        boots_to(&ours, Firmware::SeaBiosDisk, &[&bios_m], t);
        if name == "mbr" {
            let v = ovmf_vars_copy(&vars, t);
            let cd = Firmware::Ovmf {
                code: &code,
                vars: &v,
            };
            boots_to(&ours, cd, &efi_markers, t);
        }
    }
}

/// An isohybrid image with its EFI boot image in an appended partition, with xorriso's GPT
/// beside the MBR: xorriso reads the same MBR and GPT as in its own image of the same tree
/// made with the same options (the partition from the cylinder after the volume, the volume's
/// partition of type 0), but for where the backup GPT lies (xorriso's padding follows the
/// partition); it boots by UEFI from a disk and a CD and by BIOS from a disk.
#[test]
fn an_isohybrid_image_with_an_appended_efi_partition_is_xorriso_s_and_boots() {
    if !have_file(ISOHDPFX, "isolinux") {
        return;
    }
    let Some((code, vars)) = efi_boot_tools(&["xorriso", "sgdisk"]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let both = BothWays::efi_image_outside(t, "isohybrid-appended");
    let fat = both.fat.to_str().unwrap();
    let args = [
        "--boot",
        "isolinux/isolinux.bin",
        "--boot-info-table",
        "--isohybrid-mbr",
        ISOHDPFX,
        "--append-partition",
        "2",
        "0xef",
        fat,
        "--efi-boot-partition",
        "2",
        "--isohybrid-gpt-basdat",
    ];
    let ours = t.join("ours.iso");
    mkiso_ok(&both.src, &ours, &args, Some("0"));
    let theirs = other_tool(
        "xorriso -as mkisofs",
        &both.src,
        "xorriso",
        &[
            "-isohybrid-mbr",
            ISOHDPFX,
            "-b",
            "isolinux/isolinux.bin",
            "-no-emul-boot",
            "-boot-load-size",
            "4",
            "-boot-info-table",
            "-eltorito-alt-boot",
            "-e",
            "--interval:appended_partition_2:all::",
            "-no-emul-boot",
            "-isohybrid-gpt-basdat",
            "-append_partition",
            "2",
            "0xef",
            fat,
        ],
    );
    let without_guids_and_end = |iso: &Path| -> Vec<(String, String)> {
        system_area(iso)
            .into_iter()
            .filter(|(k, _)| !k.ends_with("GUID") || k == "GPT type GUID")
            .filter(|(k, _)| k != "GPT lba range")
            .collect()
    };
    let a_ours = without_guids_and_end(&ours);
    assert_eq!(
        a_ours,
        without_guids_and_end(&theirs),
        "xorriso -report_system_area"
    );
    let n = fs::metadata(&ours).unwrap().len() / 512;
    let lba_range = format!("64 {} {}", n - 64, n - 1);
    assert!(system_area(&ours).contains(&("GPT lba range".into(), lba_range)));
    assert!(
        a_ours.contains(&("MBR partition".into(), "1 0x80 0x00 0 2048".into())),
        "{a_ours:#?}"
    );
    assert_eq!(
        sgdisk_problems(&ours),
        sgdisk_problems(&theirs),
        "sgdisk -v"
    );

    both.boot_from_a_disk(&ours, (&code, &vars), t);
    let v = ovmf_vars_copy(&vars, t);
    let cd = Firmware::Ovmf {
        code: &code,
        vars: &v,
    };
    boots_to(&ours, cd, &[&both.efi, &both.iso], t);
}

/// `--append-partition`'s errors: a usage error (exit 2) for what the options cannot mean
/// together, naming the option and the cause; a failure (exit 1) naming the file for one that
/// cannot be appended; nothing left behind either way. An EFI partition that is not a FAT
/// image gets a warning. The image written to a pipe is the one written to a file.
#[test]
fn append_partition_errors_name_the_option_or_the_file_and_the_cause() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let src = t.join("src");
    write(&src.join("isolinux/isolinux.bin"), &[0x90; 4096]);
    write(&src.join("README.txt"), b"readme\n");
    let fat = t.join("efi.img");
    run("mkfs.vfat", &["-C", fat.to_str().unwrap(), "1440"]);
    let f = fat.to_str().unwrap();
    let other = t.join("other.img");
    write(&other, &[0x5A; 3000]);
    let o = other.to_str().unwrap();
    let empty = t.join("empty.img");
    write(&empty, b"");
    let missing = t.join("missing.img");
    let out = t.join("out");
    fs::create_dir(&out).unwrap();
    let gpt = EFI_SYSTEM_GUID;
    let e = empty.to_str().unwrap();
    let m = missing.to_str().unwrap();
    let d = t.to_str().unwrap();
    let mut usage: Vec<(Vec<&str>, Vec<&str>, &[&str])> = vec![
        (
            vec!["--append-partition", "1", "0xef", f],
            vec!["--append-partition"],
            &["1 is the ISO 9660 volume's"],
        ),
        (
            vec!["--append-partition", "5", "0x83", f],
            vec!["--append-partition"],
            &["an MBR has 4 entries"],
        ),
        (
            vec!["--append-partition", "9", gpt, f, "--appended-part-as-gpt"],
            vec!["--append-partition"],
            &["2 to 8"],
        ),
        (
            vec!["--append-partition", "2", gpt, f],
            vec!["--append-partition", gpt],
            &["is a GPT type"],
        ),
        (
            vec!["--append-partition", "2", "efi", f],
            vec!["--append-partition", "efi"],
            &["not a partition type"],
        ),
        (
            vec![
                "--append-partition",
                "2",
                "0xef",
                f,
                "--append-partition",
                "2",
                "0x83",
                o,
            ],
            vec!["--append-partition"],
            &["appended twice"],
        ),
        (
            vec![
                "--append-partition",
                "2",
                "0xef",
                f,
                "--efi-boot-partition",
                "3",
            ],
            vec!["--efi-boot-partition 3"],
            &["no partition 3 is appended"],
        ),
        (
            vec!["--append-partition", "2", "0xef"],
            vec!["--append-partition"],
            &["3 values", "more values", "takes"],
        ),
        (
            vec!["--appended-part-as-gpt"],
            vec!["--append-partition"],
            &["required"],
        ),
        (
            vec!["--efi-boot-partition", "2", "--efi-boot", "README.txt"],
            vec!["--efi-boot-partition", "--efi-boot"],
            &["cannot be used with"],
        ),
        (
            vec![
                "--boot",
                "isolinux/isolinux.bin",
                "--boot-info-table",
                "--isohybrid-mbr",
                ISOHDPFX,
                "--append-partition",
                "2",
                "0xef",
                f,
                "--append-partition",
                "3",
                "0x83",
                o,
                "--efi-boot-partition",
                "2",
                "--isohybrid-gpt-basdat",
            ],
            vec!["--append-partition", o],
            &["only the --efi-boot-partition may be appended"],
        ),
        (
            vec![
                "--boot",
                "isolinux/isolinux.bin",
                "--boot-info-table",
                "--isohybrid-mbr",
                ISOHDPFX,
                "--append-partition",
                "2",
                gpt,
                f,
                "--efi-boot-partition",
                "2",
                "--appended-part-as-gpt",
                "--isohybrid-gpt-basdat",
            ],
            vec!["--appended-part-as-gpt", "--isohybrid-gpt-basdat"],
            &["cannot be used with"],
        ),
    ];
    usage.extend([
        (
            vec![
                "--append-partition",
                "2",
                "0xef",
                f,
                "--partition-offset",
                "16",
            ],
            vec!["--partition-offset", "--appended-part-as-gpt"],
            &["required"][..],
        ),
        (
            vec![
                "--append-partition",
                "2",
                gpt,
                f,
                "--appended-part-as-gpt",
                "--partition-offset",
                "8",
            ],
            vec!["--partition-offset"],
            &["16.."][..],
        ),
    ]);
    let failures: Vec<(Vec<&str>, Vec<&str>, &[&str])> = vec![
        (
            vec!["--append-partition", "2", "0xef", m],
            vec!["appended partition", m],
            &["no such file"],
        ),
        (
            vec!["--append-partition", "2", "0xef", d],
            vec!["appended partition", d],
            &["not a regular file"],
        ),
        (
            vec!["--append-partition", "2", "0xef", e],
            vec!["appended partition", e],
            &["empty"],
        ),
    ];
    let mut wrong = Vec::new();
    for (args, names, causes) in &usage {
        wrong.extend(refused(&src, &out, args, names, causes, 2));
    }
    for (args, names, causes) in &failures {
        wrong.extend(refused(&src, &out, args, names, causes, 1));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // Not a FAT image as the EFI boot partition: made, with a warning naming it.
    let iso = t.join("warned.iso");
    let args = [
        "--append-partition",
        "2",
        "0xef",
        o,
        "--efi-boot-partition",
        "2",
    ];
    let result = mkiso(&src, &iso, &args, Some("0"));
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "{err}");
    assert!(err.contains("warning") && err.contains(o), "{err}");

    // The same image on standard output (written in order, the partition and the backup GPT
    // last).
    let args = [
        "--append-partition",
        "2",
        gpt,
        f,
        "--append-partition",
        "3",
        "0x83",
        o,
        "--efi-boot-partition",
        "2",
        "--appended-part-as-gpt",
    ];
    let file = t.join("file.iso");
    mkiso_ok(&src, &file, &args, Some("0"));
    let piped = Command::new(bin())
        .arg("mkiso")
        .arg(&src)
        .args(["-o", "-"])
        .args(args)
        .env("SOURCE_DATE_EPOCH", "0")
        .output()
        .unwrap();
    assert!(piped.status.success(), "{piped:?}");
    let image = fs::read(&file).unwrap();
    assert!(piped.stdout == image, "the piped image differs");
    assert_eq!(
        &image[image.len() - 512..][..8],
        b"EFI PART",
        "the backup GPT header ends it"
    );

    // ls --boot of the image with its GPT entry 2 starting past what 64 bits of bytes count:
    // shown as it is, no failure (it overflowed once).
    let mut bad = image.clone();
    let entry2 = 1024 + 128;
    bad[entry2 + 32..entry2 + 40].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
    let bad_iso = t.join("bad-gpt.iso");
    fs::write(&bad_iso, &bad).unwrap();
    let o = Command::new(bin())
        .args(["ls", "--boot"])
        .arg(&bad_iso)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{o:?}");
    assert!(
        text.contains(&format!("from sector {}", u64::MAX - 3)),
        "{text}"
    );
}

/// Debian's memtest86+ image, unpacked by scripts/setup.sh: its UEFI boot image is an appended
/// partition.
const MEMTEST_ISO: &str = "/var/cache/isomgr-tests/memtest86+/usr/lib/memtest86+/memtest86+x64.iso";

/// `ls --boot` of Debian's memtest86+ image, whose UEFI boot image is partition 2, after the
/// volume: the options name the partition (and say that its GRUB hybrid MBR beside an emulated
/// floppy is not made), the line for the partition copies it out (a FAT image holding
/// EFI/BOOT/BOOTX64.EFI); mkiso with those options, from the image's tree, makes an image
/// whose El Torito entries and partition lie as the original's do, relative to its volume,
/// with the same partition bytes.
#[test]
fn ls_boot_reads_memtest86_plus_s_appended_efi_partition_and_mkiso_remakes_it() {
    if !have_file(MEMTEST_ISO, "memtest86+ (unpacked by scripts/setup.sh)")
        || !tools(&["xorriso", "bsdtar", "mdir"])
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ls = LsBoot::of(Path::new(MEMTEST_ISO));
    let mkiso_line = ls.options().join(" ");
    assert!(
        mkiso_line.contains("--efi-boot-partition 2")
            && mkiso_line.contains("--append-partition 2 0xef partition2.img")
            && mkiso_line.contains("--boot boot/floppy.img --boot-emulation floppy"),
        "{}",
        ls.listing
    );
    let not_made = ls.line("not made by mkiso: ").unwrap_or_default();
    assert!(
        not_made.contains("GRUB hybrid MBR") && !not_made.contains("UEFI"),
        "{}",
        ls.listing
    );
    assert_eq!(ls.copies().len(), 1, "{}", ls.listing);

    // Remade from its tree with those options; the partition copied out is a FAT image holding
    // the UEFI loader.
    let src = t.join("tree");
    fs::create_dir(&src).unwrap();
    run("bsdtar", &["-xf", MEMTEST_ISO, "-C", src.to_str().unwrap()]);
    let (ours, _) = ls.remake(&src, t, &[], None);
    let part = t.join("partition2.img");
    let dir = run("mdir", &["-i", part.to_str().unwrap(), "::/EFI/BOOT"]);
    assert!(dir.to_uppercase().contains("BOOTX64"), "{dir}");
    // Where each image's UEFI image and partitions lie, relative to its volume.
    let relative = |iso: &Path| {
        let (_, volume, efi) = volume_and_efi_image(iso);
        let area = system_area(iso);
        let partitions: Vec<String> = area
            .iter()
            .filter(|(k, _)| k == "MBR partition")
            .map(|(_, v)| v.split(' ').skip(2).collect::<Vec<_>>().join(" "))
            .filter(|v| v.starts_with("0xef"))
            .collect();
        let el_torito: Vec<(String, String, u32)> = xorriso_el_torito(iso)
            .images
            .iter()
            .map(|i| (i.platform.clone(), i.emulation.clone(), i.load_size))
            .collect();
        (efi - volume, partitions.len(), el_torito, efi)
    };
    let (theirs, mine) = (relative(Path::new(MEMTEST_ISO)), relative(&ours));
    assert_eq!(
        (theirs.0, theirs.1, &theirs.2),
        (mine.0, mine.1, &mine.2),
        "the remade image's boot records"
    );
    let image = fs::read(&ours).unwrap();
    let at = mine.3 as usize * 512;
    let part = fs::read(&part).unwrap();
    assert!(
        image[at..at + part.len()] == part[..],
        "the partition's bytes"
    );
}

/// An image laid out as Ubuntu's are (made by xorriso with the options Ubuntu's build gives
/// it: GRUB's hybrid MBR, `-partition_offset 16`, the EFI system partition appended in a GPT,
/// `--mbr-force-bootable`), served by the watcher, is remastered from its directory: `ls
/// --boot` gives the options and the command that copies its EFI partition out, and says the
/// partition offset is not made; mkiso with them and a new grub.cfg and file grafted in makes
/// an image that boots from a disk by BIOS into the new grub.cfg and by UEFI into the copied
/// EFI partition, which reads the new file from the new volume. The served file is unchanged.
#[test]
fn an_ubuntu_like_served_image_is_remastered_with_its_efi_partition_and_boots() {
    if !have_file(BOOT_HYBRID, "grub-pc-bin")
        || !tools(&["grub-mkimage", "xorriso"])
        || !common::watcher::can_run("remastering a served image")
    {
        return;
    }
    let Some((code, vars)) = efi_boot_tools(&[]) else {
        return;
    };
    let env = common::watcher::Env::new("remaster-ubuntu");
    let t = env.outside("work");
    let (old_m, new_m, efi_m) = (
        marker("ubuntu-old"),
        marker("ubuntu-new"),
        marker("ubuntu-efi"),
    );
    let src = t.join("src");
    grub_bios_tree(&src, &old_m);
    ordinary_files(&src);
    fs::write(src.join(GRUB_READS), "the old volume\n").unwrap();
    let fat = efi_fat_image(&t, &efi_m);
    let image = other_tool(
        "xorriso -as mkisofs",
        &src,
        "ubuntu-like",
        &[
            "-V",
            "Ubuntu-like 24.04 amd64",
            "--grub2-mbr",
            BOOT_HYBRID,
            "-partition_offset",
            "16",
            "--mbr-force-bootable",
            "-append_partition",
            "2",
            "28732ac11ff8d211ba4b00a0c93ec93b",
            fat.to_str().unwrap(),
            "-appended_part_as_gpt",
            "-iso_mbr_part_type",
            "a2a0d0ebe5b9334487c068b6b72699c7",
            "-c",
            "/boot.catalog",
            "-b",
            "/boot/grub/eltorito.img",
            "-no-emul-boot",
            "-boot-load-size",
            "4",
            "-boot-info-table",
            "--grub2-boot-info",
            "-eltorito-alt-boot",
            "-e",
            "--interval:appended_partition_2:::",
            "-no-emul-boot",
        ],
    );
    let _w = common::watcher::Watcher::start(&env);
    let before = fs::read(&image).unwrap();
    let staged = env.scratch.join("ubuntu-like.iso");
    fs::write(&staged, &before).unwrap();
    let dropped = env.drop.join("ubuntu-like.iso");
    fs::rename(&staged, &dropped).unwrap();
    env.wait_names(&["Ubuntu-like_24.04_amd64"]);
    let served = env.root.join("Ubuntu-like_24.04_amd64");

    let ls = LsBoot::of(&dropped);
    assert_eq!(
        ls.options(),
        [
            "--boot-catalog",
            "boot.catalog",
            "--boot",
            "boot/grub/eltorito.img",
            "--boot-info-table",
            "--grub2-boot-info",
            "--efi-boot-partition",
            "2",
            "--grub2-mbr",
            BOOT_HYBRID,
            "--append-partition",
            "2",
            EFI_SYSTEM_GUID,
            "partition2.img",
            "--appended-part-as-gpt",
            "--mbr-force-bootable",
            "--partition-offset",
            "16",
        ],
        "{}",
        ls.listing
    );
    assert!(!ls.listing.contains("not made"), "{}", ls.listing);
    // The same as one JSON document, for scripts.
    let doc = output_ok(
        Command::new(bin())
            .args(["ls", "--boot", "--json"])
            .arg(&dropped),
    );
    let doc: serde_json::Value = serde_json::from_slice(&doc.stdout).unwrap();
    assert_eq!(doc["mkiso"], serde_json::json!(ls.options()), "{doc}");
    assert_eq!(doc["copy"], serde_json::json!(ls.copies()), "{doc}");
    assert_eq!(doc["not_made"], serde_json::json!([]), "{doc}");
    let parts = doc["partitions"].as_array().unwrap();
    let fields = |p: &serde_json::Value| {
        (
            p["number"].as_u64().unwrap(),
            p["type"].as_str().unwrap().to_string(),
            p["name"].as_str().unwrap_or_default().to_string(),
            p["volume"].as_bool().unwrap(),
            p["appended_as"].as_str().map(str::to_string),
        )
    };
    let basic = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7".to_string();
    assert_eq!(
        parts.iter().map(fields).collect::<Vec<_>>(),
        [
            (1, basic.clone(), "ISO9660".into(), true, None),
            (
                2,
                EFI_SYSTEM_GUID.into(),
                "Appended2".into(),
                false,
                Some("partition2.img".into())
            ),
            (3, basic, "Gap1".into(), false, None),
        ],
        "{doc}"
    );
    let dir = env.outside("remaster");
    let cfg = env.outside("new").join("grub.cfg");
    fs::write(
        &cfg,
        format!("serial --unit=0 --speed=115200\nterminal_output serial\necho {new_m}\nhalt\n"),
    )
    .unwrap();
    let read_m = format!("{new_m}-read");
    let reads = env.outside("new").join("reads.txt");
    fs::write(&reads, format!("{read_m}\n")).unwrap();
    let grafts = [
        format!("boot/grub/grub.cfg={}", cfg.display()),
        format!("{GRUB_READS}={}", reads.display()),
    ];
    let extra = [
        "-V",
        "Ubuntu-like-autoinstall",
        "--graft",
        &grafts[0],
        "--graft",
        &grafts[1],
    ];
    let (iso, stderr) = ls.remake(&served, &dir, &extra, None);
    assert!(stderr.is_empty(), "{stderr}");
    assert!(
        fs::read(dir.join("partition2.img")).unwrap() == fs::read(&fat).unwrap(),
        "the partition copied out is not the EFI image"
    );
    // Its partition table is the original's, but for GUIDs, sizes and xorriso's partition
    // over its padding after the EFI partition (3, "Gap1").
    assert_eq!(
        system_area_but_places(&iso),
        system_area_but_places(&dropped),
        "xorriso -report_system_area"
    );
    // Partition 1 is a volume by itself: the same tree as the whole image's, to bsdtar and
    // isoinfo.
    let part1 = dir.join("partition1.img");
    output_ok(
        Command::new("dd")
            .arg(format!("if={}", iso.display()))
            .arg(format!("of={}", part1.display()))
            .args(["bs=512", "skip=64", "status=none"]),
    );
    let label = run("isoinfo", &["-d", "-i", part1.to_str().unwrap()]);
    assert!(
        label.contains("Volume id: Ubuntu-like-autoinstall"),
        "{label}"
    );
    let unpacked = |image: &Path, to: &str| {
        let d = dir.join(to);
        fs::create_dir(&d).unwrap();
        run(
            "bsdtar",
            &["-xf", image.to_str().unwrap(), "-C", d.to_str().unwrap()],
        );
        describe_fs(&d)
    };
    let whole = unpacked(&iso, "whole");
    assert!(whole.contains_key("/boot/grub-reads-this.txt"), "{whole:?}");
    assert_eq!(unpacked(&part1, "part1"), whole, "partition 1 read alone");
    let serial = boots_to(&iso, Firmware::SeaBiosDisk, &[&new_m], &dir);
    assert!(!serial.contains(&old_m), "{serial}");
    let v = ovmf_vars_copy(&vars, &dir);
    let disk = Firmware::OvmfDisk {
        code: &code,
        vars: &v,
    };
    boots_to(&iso, disk, &[&efi_m, &read_m], &dir);
    assert!(
        fs::read(&dropped).unwrap() == before,
        "the served image changed"
    );
}

/// Boot code `ls --boot` does not find installed where Debian keeps it (another variant of
/// isohybrid's MBR, GRUB's from another build) is named `mbr.bin`, with the command that copies
/// it out of the image; with it the options remake the image byte for byte.
#[test]
fn ls_boot_copies_mbr_code_out_of_the_image_when_it_is_not_installed() {
    const ISOHDPPX: &str = "/usr/lib/ISOLINUX/isohdppx.bin";
    if !have_file(ISOHDPPX, "isolinux")
        || !have_file(BOOT_HYBRID, "grub-pc-bin")
        || !tools(&["grub-mkimage"])
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let isolinux = t.join("isolinux-src");
    isolinux_tree(&isolinux, "unused");
    let grub = t.join("grub-src");
    grub_bios_tree(&grub, "unused");
    // GRUB's MBR from "another build": its code differs in one byte
    let mut other_grub = fs::read(BOOT_HYBRID).unwrap();
    other_grub[0x100] ^= 0xFF;
    let other_grub_file = t.join("other-boot_hybrid.img");
    fs::write(&other_grub_file, &other_grub).unwrap();
    let cases: [(&Path, Vec<&str>, &str); 2] = [
        (
            &isolinux,
            vec![
                "--boot",
                "isolinux/isolinux.bin",
                "--boot-info-table",
                "--isohybrid-mbr",
                ISOHDPPX,
            ],
            "bs=432",
        ),
        (
            &grub,
            vec![
                "--boot",
                "boot/grub/eltorito.img",
                "--boot-info-table",
                "--grub2-boot-info",
                "--grub2-mbr",
                other_grub_file.to_str().unwrap(),
            ],
            "bs=446",
        ),
    ];
    for (i, (src, args, bs)) in cases.iter().enumerate() {
        let iso = t.join(format!("{i}.iso"));
        mkiso_ok(src, &iso, args, Some("0"));
        let ls = LsBoot::of(&iso);
        let copies = ls.copies();
        assert_eq!(copies.len(), 1, "{}", ls.listing);
        assert!(
            copies[0].contains("of=mbr.bin") && copies[0].contains(bs),
            "{}",
            ls.listing
        );
        assert!(ls.options().contains(&"mbr.bin"), "{}", ls.listing);
        let (again, _) = ls.remake(src, &t.join(format!("remade-{i}")), &[], Some("0"));
        assert!(
            fs::read(&again).unwrap() == fs::read(&iso).unwrap(),
            "{:?} made another image than {args:?}",
            ls.options()
        );
    }
}

/// Arch Linux's layout (archiso's xorriso options): isolinux's isohybrid MBR code before a
/// protective MBR with an active entry, the EFI system partition appended in a GPT, and a
/// partition offset. xorriso reads the same system area as in its own image of the tree made
/// with those options (but where partitions lie); partition 1 is a volume by itself; `ls
/// --boot`'s options remake the image byte for byte; it boots from a disk by UEFI (the GPT's
/// EFI system partition) and by BIOS (isolinux through the MBR code).
#[test]
fn an_arch_like_isohybrid_image_with_its_efi_partition_in_a_gpt_is_xorriso_s_and_boots() {
    if !have_file(ISOHDPFX, "isolinux") {
        return;
    }
    let Some((code, vars)) = efi_boot_tools(&["xorriso", "isoinfo"]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let both = BothWays::efi_image_outside(t, "arch-like");
    let fat = both.fat.to_str().unwrap();
    let args = [
        "-V",
        "ARCH_202612",
        "--boot",
        "isolinux/isolinux.bin",
        "--boot-catalog",
        "isolinux/boot.cat",
        "--boot-info-table",
        "--isohybrid-mbr",
        ISOHDPFX,
        "--mbr-force-bootable",
        "--append-partition",
        "2",
        EFI_SYSTEM_GUID,
        fat,
        "--appended-part-as-gpt",
        "--efi-boot-partition",
        "2",
        "--partition-offset",
        "16",
    ];
    let ours = t.join("ours.iso");
    mkiso_ok(&both.src, &ours, &args, Some("0"));
    let theirs = other_tool(
        "xorriso -as mkisofs",
        &both.src,
        "archiso",
        &[
            "-V",
            "ARCH_202612",
            "-partition_offset",
            "16",
            "-append_partition",
            "2",
            EFI_SYSTEM_GUID,
            fat,
            "-appended_part_as_gpt",
            "-isohybrid-mbr",
            ISOHDPFX,
            "--mbr-force-bootable",
            "-eltorito-boot",
            "isolinux/isolinux.bin",
            "-eltorito-catalog",
            "isolinux/boot.cat",
            "-no-emul-boot",
            "-boot-load-size",
            "4",
            "-boot-info-table",
            "-eltorito-alt-boot",
            "-e",
            "--interval:appended_partition_2:all::",
            "-no-emul-boot",
        ],
    );
    assert_eq!(
        system_area_but_places(&ours),
        system_area_but_places(&theirs),
        "xorriso -report_system_area"
    );
    let area = system_area(&ours);
    let (n, volume, efi) = volume_and_efi_image(&ours);
    for want in [
        ("MBR partition", format!("1 0x00 0xee 1 {}", n - 1)),
        ("MBR partition", "2 0x80 0x00 0 1".to_string()),
        ("GPT start and size", format!("1 64 {}", volume - 64)),
        ("GPT start and size", format!("2 {efi} 8192")),
    ] {
        assert!(
            area.contains(&(want.0.to_string(), want.1.clone())),
            "{want:?} not in {area:#?}"
        );
    }
    assert_eq!(
        volume % 2048,
        0,
        "the volume is whole cylinders, as isohybrid pads it"
    );
    let image = fs::read(&ours).unwrap();
    assert_eq!(
        &image[..432],
        &fs::read(ISOHDPFX).unwrap()[..432],
        "isolinux's MBR code"
    );

    // Partition 1 alone is the volume, to isoinfo.
    let part1 = t.join("partition1.img");
    fs::write(&part1, &image[64 * 512..]).unwrap();
    let d = run("isoinfo", &["-d", "-i", part1.to_str().unwrap()]);
    assert!(d.contains("Volume id: ARCH_202612"), "{d}");
    let listing = run("isoinfo", &["-f", "-R", "-i", part1.to_str().unwrap()]);
    assert!(listing.contains("/isolinux/isolinux.bin"), "{listing}");

    let ls = LsBoot::of(&ours);
    assert_eq!(ls.line("not made by mkiso: "), None, "{}", ls.listing);
    let (remade, _) = ls.remake(
        &both.src,
        &t.join("remade"),
        &["-V", "ARCH_202612"],
        Some("0"),
    );
    assert!(
        fs::read(&remade).unwrap() == image,
        "ls --boot's options {:?} made another image",
        ls.options()
    );

    both.boot_from_a_disk(&ours, (&code, &vars), t);
}
