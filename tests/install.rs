//! Deployment end to end on the built binary: `isomgr install` into a temporary prefix (dry run,
//! first run, second run, an operator's config), the installed unit checked by
//! `systemd-analyze verify`, shell completions, manual pages, and the systemd readiness
//! protocol of `isomgr watch` (`$NOTIFY_SOCKET`, path and abstract) against a real FUSE root.
//!
//! The install tests need no root. The notification tests need root and /dev/fuse; without
//! them they say so and skip, or fail under CI=true.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long any one wait may take.
const DEADLINE: Duration = Duration::from_secs(20);

fn contrib(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib")
        .join(name)
}

fn install(prefix: &Path, extra: &[&str]) -> (Vec<String>, Output) {
    let mut args = vec!["install", "--prefix", prefix.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = common::isomgr(&args);
    assert!(
        out.status.success(),
        "isomgr {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = String::from_utf8(out.stdout.clone())
        .expect("UTF-8 output")
        .lines()
        .map(str::to_owned)
        .collect();
    (lines, out)
}

/// What a file or directory is, to tell whether it was touched: kind, mode, size, inode,
/// modification time. A file rewritten (even atomically, even with the same bytes) differs.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    dir: bool,
    mode: u32,
    len: u64,
    ino: u64,
    mtime: (i64, i64),
}

/// Every path below `root` (relative) and what it is.
fn tree(root: &Path) -> BTreeMap<PathBuf, Seen> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Seen>) {
        for ent in fs::read_dir(dir).expect("listing the prefix") {
            let p = ent.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            out.insert(
                p.strip_prefix(root).unwrap().to_owned(),
                Seen {
                    dir: m.is_dir(),
                    mode: m.mode(),
                    len: m.len(),
                    ino: m.ino(),
                    mtime: (m.mtime(), m.mtime_nsec()),
                },
            );
            if m.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Everything `install` places, relative to the prefix, with its mode.
const PLACED: &[(&str, u32)] = &[
    ("usr/local/bin/isomgr", 0o755),
    ("etc/systemd/system/isomgr.service", 0o644),
    ("etc/tmpfiles.d/isomgr.conf", 0o644),
    ("etc/isomgr/config.toml", 0o644),
    ("usr/local/share/man/man1/isomgr.1", 0o644),
    ("usr/local/share/man/man1/isomgr-watch.1", 0o644),
    ("usr/local/share/man/man1/isomgr-install.1", 0o644),
    ("usr/local/share/bash-completion/completions/isomgr", 0o644),
    ("usr/local/share/zsh/site-functions/_isomgr", 0o644),
    (
        "usr/local/share/fish/vendor_completions.d/isomgr.fish",
        0o644,
    ),
    ("srv/isos", 0o755),
    ("srv/iso-drop", 0o755),
];

#[test]
fn dry_run_prints_the_steps_and_changes_nothing() {
    let prefix = tempfile::tempdir().unwrap();
    let before = tree(prefix.path());
    let (lines, _) = install(prefix.path(), &["--dry-run"]);
    assert_eq!(
        tree(prefix.path()),
        before,
        "the dry run changed the prefix"
    );
    for (rel, _) in PLACED {
        let p = prefix.path().join(rel);
        let verb = if p.starts_with(prefix.path().join("srv")) {
            "create"
        } else {
            "write"
        };
        let want = format!("{verb} {}", p.display());
        assert!(lines.contains(&want), "no {want:?} in {lines:#?}");
    }
    assert!(lines.last().unwrap().starts_with("dry run: "), "{lines:#?}");

    // Over a complete install, a dry run finds nothing to do.
    install(prefix.path(), &[]);
    let installed = tree(prefix.path());
    let (lines, _) = install(prefix.path(), &["--dry-run"]);
    assert_eq!(tree(prefix.path()), installed);
    assert_eq!(
        lines.last().unwrap(),
        "nothing to change: everything is in place"
    );
}

#[test]
fn install_places_everything_and_a_second_run_rewrites_nothing() {
    let prefix = tempfile::tempdir().unwrap();
    let p = prefix.path();
    let (lines, _) = install(p, &[]);
    for (rel, mode) in PLACED {
        let m = fs::metadata(p.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}\n{lines:#?}"));
        assert_eq!(m.mode() & 0o7777, *mode, "{rel}");
    }
    assert_eq!(
        fs::read(p.join("usr/local/bin/isomgr")).unwrap(),
        fs::read(common::bin()).unwrap(),
        "the binary is a copy of the one that ran"
    );
    assert_eq!(
        fs::read(p.join("etc/systemd/system/isomgr.service")).unwrap(),
        fs::read(contrib("isomgr.service")).unwrap()
    );
    assert_eq!(
        fs::read(p.join("etc/tmpfiles.d/isomgr.conf")).unwrap(),
        fs::read(contrib("isomgr.tmpfiles")).unwrap()
    );
    assert_eq!(
        fs::read(p.join("etc/isomgr/config.toml")).unwrap(),
        fs::read(contrib("config.example.toml")).unwrap()
    );
    let man = fs::read_to_string(p.join("usr/local/share/man/man1/isomgr.1")).unwrap();
    assert!(man.contains("\n.TH isomgr 1 "), "{man}");
    assert!(
        lines.last().unwrap().ends_with("changes made"),
        "{lines:#?}"
    );

    // The installed binary works (it is what the unit runs).
    let v = Command::new(p.join("usr/local/bin/isomgr"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(v.status.success());

    let first = tree(p);
    assert!(
        !first
            .keys()
            .any(|k| k.to_string_lossy().contains(".isomgr-install-")),
        "a temporary file was left: {first:#?}"
    );
    let (lines, _) = install(p, &[]);
    assert_eq!(tree(p), first, "the second run touched something");
    let (last, steps) = lines.split_last().unwrap();
    assert_eq!(last, "nothing to change: everything is in place");
    assert!(
        steps.iter().all(|l| l.starts_with("unchanged ")),
        "{lines:#?}"
    );
    assert!(steps.len() >= PLACED.len(), "{lines:#?}");
}

#[test]
fn a_config_changed_by_the_operator_is_kept_and_the_rest_repaired() {
    let prefix = tempfile::tempdir().unwrap();
    let p = prefix.path();
    install(p, &[]);
    let config = p.join("etc/isomgr/config.toml");
    let mine = "# mine\nroot = \"/srv/mine\"\n";
    fs::write(&config, mine).unwrap();
    let unit = p.join("etc/systemd/system/isomgr.service");
    fs::write(&unit, "[Service]\nExecStart=/bin/false\n").unwrap();
    fs::remove_dir(p.join("srv/iso-drop")).unwrap();

    let (lines, _) = install(p, &[]);
    assert!(
        lines.contains(&format!(
            "keep {} (changed by the operator)",
            config.display()
        )),
        "{lines:#?}"
    );
    assert_eq!(fs::read_to_string(&config).unwrap(), mine);
    assert!(
        lines.contains(&format!("write {}", unit.display())),
        "{lines:#?}"
    );
    assert_eq!(
        fs::read(&unit).unwrap(),
        fs::read(contrib("isomgr.service")).unwrap()
    );
    assert!(
        lines.contains(&format!("create {}", p.join("srv/iso-drop").display())),
        "{lines:#?}"
    );
    assert_eq!(lines.last().unwrap(), "2 changes made", "{lines:#?}");

    // Kept again, and nothing else to do.
    let (lines, _) = install(p, &[]);
    assert_eq!(
        lines.last().unwrap(),
        "nothing to change: everything is in place"
    );
    assert_eq!(fs::read_to_string(&config).unwrap(), mine);
}

#[test]
fn installed_unit_passes_systemd_analyze_verify() {
    if !common::have_tool("systemd-analyze") {
        return;
    }
    let prefix = tempfile::tempdir().unwrap();
    let p = prefix.path();
    install(p, &[]);
    // The unit names /usr/local/bin/isomgr, where the binary lands on the target system;
    // here it is below the prefix, so a copy of the unit points there for the check.
    let unit = fs::read_to_string(p.join("etc/systemd/system/isomgr.service")).unwrap();
    let binary = p.join("usr/local/bin/isomgr");
    let unit = unit.replace("/usr/local/bin/isomgr", binary.to_str().unwrap());
    let check = tempfile::tempdir().unwrap();
    let copy = check.path().join("isomgr.service");
    fs::write(&copy, unit).unwrap();
    // Documentation=man:... pages are looked up with man(1): in the prefix, where install put
    // them; without man-db, that part is left out.
    let mut cmd = Command::new("systemd-analyze");
    cmd.arg("verify");
    if common::have_tool("man") {
        cmd.env("MANPATH", p.join("usr/local/share/man"));
    } else {
        cmd.arg("--man=no");
    }
    let out = cmd.arg(&copy).output().expect("running systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("isomgr.service"),
        "systemd-analyze verify ({}):\n{stderr}",
        out.status
    );
}

#[test]
fn the_unit_makes_no_mount_namespace_that_would_hide_the_mounts() {
    // systemd's exec_needs_mount_namespace(): each of these gives the service its own mount
    // namespace with slave propagation, so the mounts isomgr makes never reach the host.
    const NAMESPACED: &[&str] = &[
        "ProtectSystem",
        "ProtectHome",
        "ReadWritePaths",
        "ReadOnlyPaths",
        "InaccessiblePaths",
        "ExecPaths",
        "NoExecPaths",
        "BindPaths",
        "BindReadOnlyPaths",
        "TemporaryFileSystem",
        "PrivateTmp",
        "PrivateDevices",
        "PrivateMounts",
        "PrivateNetwork",
        "PrivateIPC",
        "MountFlags",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ProtectProc",
        "ProcSubset",
        "RootDirectory",
        "RootImage",
        "MountImages",
        "LogNamespace",
        // Not a namespace, but it closes the device policy (/dev/loop*, /dev/fuse).
        "ProtectClock",
        "DevicePolicy",
        "DeviceAllow",
    ];
    let unit = fs::read_to_string(contrib("isomgr.service")).unwrap();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('#') {
            continue;
        }
        if let Some((key, _)) = line.split_once('=') {
            assert!(!NAMESPACED.contains(&key.trim()), "the unit sets {line}");
        }
    }
    assert!(unit.contains("\nType=notify\n"));
    assert!(unit.contains("\nExecStart=/usr/local/bin/isomgr watch\n"));
}

#[test]
fn completions_for_each_shell_mention_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = common::isomgr(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("watch") && text.contains("install"),
            "{shell}: {text}"
        );
    }
    let out = common::isomgr(&["completions", "tcsh"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn man_prints_the_pages_generated_from_the_command_line() {
    let out = common::isomgr(&["man"]);
    assert!(out.status.success());
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.contains("\n.TH isomgr 1 "), "{page}");
    let out = common::isomgr(&["man", "watch"]);
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.contains("\n.TH isomgr-watch 1 "), "{page}");
    assert!(page.contains("\\-\\-driver"), "{page}");
    let out = common::isomgr(&["man", "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
}

// --- systemd readiness (`Type=notify`) ---

/// Whether this host can run the watcher; under CI=true a missing piece is a failure.
fn can_watch(test: &str) -> bool {
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let fuse = Path::new("/dev/fuse").exists();
    if root && fuse {
        return true;
    }
    let why = format!("{test}: needs root ({root}) and /dev/fuse ({fuse})");
    assert!(!common::in_ci(), "{why}");
    eprintln!("SKIPPED {why}");
    false
}

/// Makes `n` small images `disc-K.iso` labelled `DISC_K` in `dir`, each with `/hello.txt`.
fn images(dir: &Path, n: usize) {
    let src = tempfile::tempdir().unwrap();
    for k in 0..n {
        fs::write(src.path().join("hello.txt"), format!("hello from {k}\n")).unwrap();
        let out = common::isomgr(&[
            "mkiso",
            src.path().to_str().unwrap(),
            "-o",
            dir.join(format!("disc-{k}.iso")).to_str().unwrap(),
            &format!("--volume-label=DISC_{k}"),
        ]);
        assert!(out.status.success(), "mkiso: {out:?}");
    }
}

/// A watcher with `$NOTIFY_SOCKET` set; stopped (SIGTERM, then SIGKILL) on drop, and its root
/// lazily unmounted if it is still mounted.
struct Watcher {
    child: Child,
    root: PathBuf,
    log: PathBuf,
}

impl Watcher {
    fn start(base: &Path, notify_socket: &str) -> Watcher {
        let root = base.join("root");
        let log = base.join("watch.log");
        fs::create_dir_all(&root).unwrap();
        let child = Command::new(common::bin())
            .arg("watch")
            .arg("--dir")
            .arg(base.join("drop"))
            .arg("--root")
            .arg(&root)
            .arg("--state")
            .arg(base.join("state.json"))
            .args(["--driver", "fuse"])
            .env("NOTIFY_SOCKET", notify_socket)
            .env("ISOMGR_LOG", "isomgr=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting isomgr watch");
        Watcher { child, root, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Receives datagrams until one contains `want`; all of them, in order.
    fn until(&mut self, sock: &UnixDatagram, want: &str) -> Vec<String> {
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let start = Instant::now();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match sock.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let done = msg.lines().any(|l| l == want);
                    got.push(msg);
                    if done {
                        return got;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("receiving: {e}"),
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                if want != "STOPPING=1" {
                    panic!(
                        "isomgr watch exited ({status}) before {want}; got {got:?}\n{}",
                        self.log()
                    );
                }
            }
            assert!(
                start.elapsed() < DEADLINE,
                "no {want} within {DEADLINE:?}; got {got:?}\n{}",
                self.log()
            );
        }
    }

    fn sigterm(&self) {
        // SAFETY: signalling our own child.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) },
            0
        );
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(start.elapsed() < DEADLINE, "the watcher did not stop");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let mounted = fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .any(|l| l.split(' ').nth(4) == self.root.to_str());
        if mounted {
            let _ = Command::new("umount").arg("-l").arg(&self.root).status();
        }
    }
}

/// Starts a watcher over `n` images present before it starts, notifying `socket_name`
/// (received on `sock`); checks that at READY=1 every image is already readable and listed in
/// the state file, then that SIGTERM gives STOPPING=1.
fn ready_after_the_first_scan(sock: &UnixDatagram, socket_name: &str) {
    const N: usize = 12;
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().canonicalize().unwrap();
    fs::create_dir(base.join("drop")).unwrap();
    images(&base.join("drop"), N);

    let mut w = Watcher::start(&base, socket_name);
    let got = w.until(sock, "READY=1");
    // Right now, with nothing waited for: every image is served.
    for k in 0..N {
        let hello = w.root.join(format!("DISC_{k}")).join("hello.txt");
        assert_eq!(
            fs::read_to_string(&hello).unwrap_or_else(|e| panic!(
                "READY=1 came before {} was readable ({e}); got {got:?}\n{}",
                hello.display(),
                w.log()
            )),
            format!("hello from {k}\n")
        );
    }
    let state: serde_json::Value =
        serde_json::from_slice(&fs::read(base.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["media"].as_array().unwrap().len(), N, "{state}");
    let ready_at = got.len() - 1;
    assert_eq!(
        got.iter()
            .filter(|m| m.lines().any(|l| l == "READY=1"))
            .count(),
        1,
        "{got:?}"
    );
    let last_status = got[..=ready_at]
        .iter()
        .flat_map(|m| m.lines())
        .filter_map(|l| l.strip_prefix("STATUS="))
        .next_back();
    assert_eq!(last_status, Some(&*format!("serving {N} media")), "{got:?}");

    w.sigterm();
    let got = w.until(sock, "STOPPING=1");
    assert!(w.wait_exit().success(), "{}", w.log());
    assert!(
        !got.iter().any(|m| m.contains("READY=1")),
        "READY=1 twice: {got:?}"
    );
}

#[test]
fn ready_is_sent_once_the_images_present_at_start_are_readable() {
    if !can_watch("notify path") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    ready_after_the_first_scan(&sock, path.to_str().unwrap());
}

#[test]
fn an_abstract_notify_socket_gets_ready_and_stopping() {
    if !can_watch("notify abstract") {
        return;
    }
    let name = format!("isomgr-install-test-{}", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let sock = UnixDatagram::bind_addr(&addr).unwrap();
    ready_after_the_first_scan(&sock, &format!("@{name}"));
}
