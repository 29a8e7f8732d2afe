//! `isomgr watch` configured through a file: validation errors (exit 2, the key and the line
//! named), `--check-config` (a summary, nothing touched), the shipped example, flags over the
//! file; and with a running watcher (the built binary, real inotify, a real FUSE root): each
//! `[[dir]]` with its own patterns, hooks run with the medium in their environment and never
//! holding the watcher up, a directory in poll mode following additions and removals with no
//! inotify at all.
//!
//! The running-watcher tests need root, /dev/fuse and `isomgr mkiso`; without root or FUSE
//! each says so and skips, or fails under CI=true. Nothing sleeps to wait: every wait polls
//! for its condition with a deadline.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(10);

fn can_run(test: &str) -> bool {
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let fuse = Path::new("/dev/fuse").exists();
    if !(root && fuse) {
        let why = format!("{test}: needs root ({root}) and /dev/fuse ({fuse})");
        assert!(!common::in_ci(), "{why}");
        eprintln!("SKIPPED {why}");
        return false;
    }
    true
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(seen) if start.elapsed() > DEADLINE => {
                panic!("timed out after {DEADLINE:?} waiting for {what}; last seen: {seen}")
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

fn mountinfo_has(path: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("reading mountinfo");
    let want = path.to_string_lossy();
    info.lines().any(|l| l.split(' ').nth(4) == Some(&*want))
}

fn tmp() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::Builder::new()
        .prefix("isomgr-config-")
        .tempdir()
        .expect("temp dir");
    let base = t.path().canonicalize().unwrap();
    (t, base)
}

/// `isomgr watch --config FILE --check-config EXTRA...`.
fn check(config: &Path, extra: &[&str]) -> Output {
    Command::new(common::bin())
        .args(["watch", "--config"])
        .arg(config)
        .arg("--check-config")
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("running isomgr watch --check-config")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn invalid_configuration_names_the_key_and_the_line_and_exits_2() {
    let (_t, base) = tmp();
    let cases: &[(&str, &str)] = &[
        (
            "# isomgr\n\n[watch]\nroot = \"/srv/isos\"\n\n\nrooot = \"/x\"\n",
            "line 7: unknown key `rooot` in [watch]",
        ),
        (
            "[watch]\ndrives = true\ncleanup_on_exit = \"yes\"\n",
            "line 3: `cleanup_on_exit`: invalid type: string \"yes\", expected a boolean",
        ),
        (
            "[[dir]]\npath = \"/a\"\n\n[[dir]]\npath = \"/b\"\ninclude = \"(iso\"\n",
            "line 6: `include`: invalid regex \"(iso\": unclosed group",
        ),
        (
            "[watch]\nstate = \"state.json\"\n",
            "line 2: `state`: must be an absolute path, not \"state.json\"",
        ),
        (
            "[[dir]]\npath = \"/a\"\npoll = \"sometimes\"\n",
            "line 3: `poll`: unknown variant `sometimes`",
        ),
    ];
    for (i, (body, want)) in cases.iter().enumerate() {
        let file = base.join(format!("bad{i}.toml"));
        fs::write(&file, body).unwrap();
        let out = check(&file, &[]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{body}\n{err}");
        assert!(
            err.contains(&format!("{}: {want}", file.display())),
            "want {want:?}, got {err}"
        );
        assert!(out.stdout.is_empty());
    }
    // A file that cannot be read: exit 1, the path named.
    let missing = base.join("missing.toml");
    let out = check(&missing, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(&*missing.to_string_lossy()));
    // A bad flag value is a usage error too.
    let ok = base.join("ok.toml");
    fs::write(&ok, "").unwrap();
    let out = check(&ok, &["--exclude", "[z-a]"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--exclude \"[z-a]\": invalid regex"));
}

/// The root inside a watched directory would have the watcher take the images inside the
/// media it serves (and serve them from its own mounts); a watched directory inside the root
/// would be hidden by the FUSE mount. Both are refused before anything is made.
#[test]
fn a_root_and_a_watched_directory_inside_each_other_are_refused_before_anything_is_made() {
    let (_t, base) = tmp();
    let (srv, state) = (base.join("srv"), base.join("state.json"));
    fs::create_dir(&srv).unwrap();
    std::os::unix::fs::symlink(&srv, base.join("www")).unwrap();
    let empty = base.join("empty.toml");
    fs::write(&empty, "").unwrap();
    for (dir, root, says) in [
        (
            srv.clone(),
            srv.join("isos"),
            "lies inside the watched directory",
        ),
        (
            srv.join("isos/drop"),
            srv.join("isos"),
            "lies inside the root",
        ),
        // The same through a symlink.
        (
            base.join("www/isos/drop"),
            srv.join("isos"),
            "lies inside the root",
        ),
    ] {
        let mut child = Command::new(common::bin())
            .args(["watch", "--no-drives", "--driver", "fuse", "--config"])
            .arg(&empty)
            .arg("--dir")
            .arg(&dir)
            .arg("--root")
            .arg(&root)
            .arg("--state")
            .arg(&state)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running isomgr watch");
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() && start.elapsed() < DEADLINE {
            std::thread::sleep(POLL);
        }
        let running = child.try_wait().unwrap().is_none();
        if running {
            // SAFETY: a plain kill(2) of the child this test started (SIGTERM: it unmounts).
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        }
        let out = child.wait_with_output().unwrap();
        let err = text(&out.stderr);
        assert!(!running, "--dir {dir:?} --root {root:?}: it ran\n{err}");
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(says), "{err}");
        assert!(
            err.contains(&*dir.to_string_lossy()) && err.contains(&*root.to_string_lossy()),
            "{err}"
        );
        assert!(!srv.join("isos").exists() && !state.exists(), "{err}");
        assert!(!mountinfo_has(&root));
    }
}

#[test]
fn check_config_summarises_the_merge_and_touches_nothing() {
    let (_t, base) = tmp();
    let file = base.join("c.toml");
    let (root, state, drop_a, drop_b) = (
        base.join("root"),
        base.join("state.json"),
        base.join("a"),
        base.join("b"),
    );
    fs::write(
        &file,
        format!(
            "[watch]\nroot = \"{}\"\nstate = \"{}\"\ndriver = \"kernel\"\nexec = \"true\"\n\
             poll_interval = 2\n\n[[dir]]\npath = \"{}\"\ninclude = 'img$'\n\n\
             [[dir]]\npath = \"{}\"\npoll = \"always\"\n",
            root.display(),
            state.display(),
            drop_a.display(),
            drop_b.display()
        ),
    )
    .unwrap();
    let out = check(&file, &["--driver", "fuse", "--hook-timeout", "5"]);
    let summary = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for want in [
        format!("config: {}\n", file.display()),
        format!("root: {}\n", root.display()),
        format!("state: {}\n", state.display()),
        "driver: fuse\n".into(),
        "poll_interval: 2 s\n".into(),
        "drives: off;".into(),
        format!("dir {}: include img$, exclude none, follow_symlinks true, poll auto", drop_a.display()),
        format!(
            "dir {}: include (?i)\\.iso$, exclude none, follow_symlinks true, poll always (poll = always: polling every 2 s, no inotify)",
            drop_b.display()
        ),
        "exec (timeout 5 s): true\n".into(),
        "configuration OK\n".into(),
    ] {
        assert!(summary.contains(&want), "want {want:?} in:\n{summary}");
    }
    // Nothing made, nothing mounted, no state written.
    for p in [&root, &state, &drop_a, &drop_b] {
        assert!(!p.exists(), "{} was made", p.display());
        assert!(!mountinfo_has(p));
    }
    assert_eq!(
        fs::read_dir(&base).unwrap().count(),
        1,
        "only the config file"
    );
}

/// The known keys of a table, from the message an unknown key gets.
fn known_keys(table: &str) -> Vec<String> {
    let (_t, base) = tmp();
    let file = base.join("probe.toml");
    let body = if table == "[[dir]]" {
        "[[dir]]\npath = \"/a\"\nzzz = 1\n"
    } else {
        "[watch]\nzzz = 1\n"
    };
    fs::write(&file, body).unwrap();
    let err = text(&check(&file, &[]).stderr);
    let list = err
        .split("(known keys: ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap_or_else(|| panic!("no key list in {err}"));
    list.split(", ").map(str::to_owned).collect()
}

#[test]
fn the_example_configuration_parses_and_documents_every_key() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/config.example.toml");
    let out = check(&example, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // With every key uncommented, it still parses, and every key is there.
    let body = fs::read_to_string(&example).unwrap();
    let uncommented: String = body
        .lines()
        .map(|l| {
            let rest = l.strip_prefix("# ").unwrap_or(l);
            let is_key = rest
                .split_once(" = ")
                .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
            if is_key || rest.starts_with("[[") {
                rest.to_owned()
            } else {
                l.to_owned()
            }
        })
        .map(|l| l + "\n")
        .collect();
    let (_t, base) = tmp();
    let file = base.join("uncommented.toml");
    fs::write(&file, &uncommented).unwrap();
    let out = check(&file, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{uncommented}",
        text(&out.stderr)
    );
    let summary = text(&out.stdout);
    assert!(summary.contains("dir /mnt/nfs/isos:"), "{summary}");
    assert!(summary.contains("drives: on (udev required)"), "{summary}");
    let (watch_part, dir_part) = uncommented.split_once("\n[[dir]]\n").unwrap();
    for (table, part) in [("[watch]", watch_part), ("[[dir]]", dir_part)] {
        for key in known_keys(table) {
            assert!(
                part.lines().any(|l| l.starts_with(&format!("{key} = "))),
                "{key} of {table} is not documented in the example"
            );
        }
    }
}

/// A running `isomgr watch --config FILE EXTRA...`; stopped (SIGTERM, then SIGKILL) on drop.
struct Watcher {
    child: Child,
    root: PathBuf,
    log: PathBuf,
}

impl Watcher {
    fn start(config: &Path, root: &Path, state: &Path, log: &Path, extra: &[&str]) -> Watcher {
        let logf = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(common::bin())
            .args(["watch", "--config"])
            .arg(config)
            .args(extra)
            .env("ISOMGR_LOG", "isomgr=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("starting isomgr watch");
        let mut w = Watcher {
            child,
            root: root.to_path_buf(),
            log: log.to_path_buf(),
        };
        let pid = w.child.id();
        wait_for("the watcher to mount its root and write its state", || {
            if let Ok(Some(status)) = w.child.try_wait() {
                panic!(
                    "isomgr watch exited early ({status}):\n{}",
                    fs::read_to_string(log).unwrap_or_default()
                );
            }
            let doc: Value = fs::read(state)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or("no state file yet")?;
            if mountinfo_has(root) && doc["pid"] == pid {
                Ok(())
            } else {
                Err(format!("state pid {}", doc["pid"]))
            }
        });
        w
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn names(&self) -> BTreeSet<String> {
        fs::read_dir(&self.root)
            .expect("listing the root")
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    }

    fn wait_names(&self, want: &[&str]) {
        let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
        wait_for(&format!("root listing {want:?}"), || {
            let got = self.names();
            (got == want).then_some(()).ok_or(format!("{got:?}"))
        })
    }

    fn wait_log(&self, what: &str) {
        wait_for(&format!("{what:?} in the log"), || {
            self.log()
                .contains(what)
                .then_some(())
                .ok_or("not yet".to_owned())
        })
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let start = Instant::now();
            while self.child.try_wait().ok().flatten().is_none() && start.elapsed() < DEADLINE {
                std::thread::sleep(POLL);
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if mountinfo_has(&self.root) {
            let _ = Command::new("umount").arg("-l").arg(&self.root).status();
        }
        if std::thread::panicking() {
            eprintln!("--- watcher log ---\n{}", self.log());
        }
    }
}

/// An image with `/hello.txt` ("hello from LABEL"), built with `isomgr mkiso` at `out`.
fn image(out: &Path, label: &str) -> PathBuf {
    image_padded(out, label, 0)
}

/// [`image`] with a file of `pad` bytes beside hello.txt.
fn image_padded(out: &Path, label: &str, pad: usize) -> PathBuf {
    let src = tempfile::tempdir().unwrap();
    fs::write(
        src.path().join("hello.txt"),
        format!("hello from {label}\n"),
    )
    .unwrap();
    if pad > 0 {
        fs::write(src.path().join("pad.bin"), vec![0x5a; pad]).unwrap();
    }
    let o = common::isomgr(&[
        "mkiso",
        src.path().to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        &format!("--volume-label={label}"),
    ]);
    assert!(o.status.success(), "mkiso: {}", text(&o.stderr));
    out.to_path_buf()
}

/// One test's place: a base dir with root/, state.json, watch.log, scratch/ and the config.
struct Place {
    _t: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
    state: PathBuf,
    log: PathBuf,
    scratch: PathBuf,
}

impl Place {
    fn new() -> Place {
        let (t, base) = tmp();
        let scratch = base.join("scratch");
        fs::create_dir(&scratch).unwrap();
        Place {
            root: base.join("root"),
            state: base.join("state.json"),
            log: base.join("watch.log"),
            scratch,
            base,
            _t: t,
        }
    }

    fn dir(&self, name: &str) -> PathBuf {
        let p = self.base.join(name);
        fs::create_dir_all(&p).unwrap();
        p
    }

    fn config(&self, body: &str) -> PathBuf {
        let p = self.base.join("config.toml");
        fs::write(&p, body).unwrap();
        p
    }

    /// Builds an image in scratch/ and moves it to `to` (it appears there complete).
    fn drop_image(&self, to: &Path, label: &str) {
        let staged = image(&self.scratch.join(format!("{label}.staged")), label);
        fs::rename(staged, to).unwrap();
    }

    fn start(&self, config: &Path, extra: &[&str]) -> Watcher {
        Watcher::start(config, &self.root, &self.state, &self.log, extra)
    }
}

#[test]
fn each_dir_keeps_its_own_patterns_and_flags_win_over_the_file() {
    if !can_run("per-dir patterns") {
        return;
    }
    let p = Place::new();
    let (a, b) = (p.dir("a"), p.dir("b"));
    let file_root = p.base.join("file-root");
    let config = p.config(&format!(
        "[watch]\nroot = \"{}\"\nstate = \"{}\"\ndriver = \"kernel\"\nexclude = '^never'\n\n\
         [[dir]]\npath = \"{}\"\ninclude = '\\.img$'\n\n\
         [[dir]]\npath = \"{}\"\nexclude = '^skip'\n",
        file_root.display(),
        p.state.display(),
        a.display(),
        b.display()
    ));
    // The flags win: this root, the FUSE driver (the kernel here has no iso9660).
    let w = p.start(
        &config,
        &["--root", p.root.to_str().unwrap(), "--driver", "fuse"],
    );
    assert!(!file_root.exists(), "the file's root was used");
    p.drop_image(&a.join("one.img"), "A_IMG");
    p.drop_image(&a.join("two.iso"), "A_ISO"); // a/ takes .img only
    p.drop_image(&a.join("never.img"), "A_NEVER"); // [watch] exclude applies to a/
    p.drop_image(&b.join("three.iso"), "B_ISO");
    p.drop_image(&b.join("skip-four.iso"), "B_SKIP"); // b/ excludes ^skip
    p.drop_image(&b.join("five.img"), "B_IMG"); // b/ takes the default .iso
    p.drop_image(&b.join("never.iso"), "B_NEVER"); // b/ has its own exclude instead
    w.wait_names(&["A_IMG", "B_ISO", "B_NEVER"]);
    // Whatever is refused stays refused after a full rescan.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(w.child.id() as libc::pid_t, libc::SIGHUP) };
    w.wait_log("SIGHUP: rescanning");
    p.drop_image(&b.join("six.iso"), "B_SIX");
    w.wait_names(&["A_IMG", "B_ISO", "B_NEVER", "B_SIX"]);
    let hello = fs::read_to_string(p.root.join("A_IMG/hello.txt")).unwrap();
    assert_eq!(hello, "hello from A_IMG\n");
}

/// `KEY=VALUE` lines written by a hook.
fn env_file(path: &Path) -> Result<std::collections::BTreeMap<String, String>, String> {
    let body = fs::read_to_string(path).map_err(|e| e.to_string())?;
    if !body.ends_with("END\n") {
        return Err(format!("incomplete: {body:?}"));
    }
    Ok(body
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

#[test]
fn hooks_run_on_mount_and_removal_with_the_medium_in_their_environment() {
    if !can_run("hooks environment") {
        return;
    }
    let p = Place::new();
    let drop = p.dir("drop");
    let out = p.dir("hook-out");
    // The hook records its environment and whether its stdin is /dev/null.
    let hook = format!(
        "f={}/$ISOMGR_EVENT-$ISOMGR_NAME.env; env | grep -E '^ISOMGR_(EVENT|NAME|LABEL|PATH|SOURCE|ORIGIN)=' | sort > $f.tmp; \
         [ \"$(readlink /proc/self/fd/0)\" = /dev/null ] && echo STDIN=null >> $f.tmp; \
         echo END >> $f.tmp; mv $f.tmp $f",
        out.display()
    );
    let config = p.config(&format!(
        "[watch]\ndriver = \"fuse\"\nroot = \"{}\"\nstate = \"{}\"\nexec = {hook:?}\n\
         [[dir]]\npath = \"{}\"\n",
        p.root.display(),
        p.state.display(),
        drop.display()
    ));
    let w = p.start(&config, &[]);
    p.drop_image(&drop.join("disc.iso"), "Hook Disc");
    w.wait_names(&["Hook_Disc"]);
    let mounted = wait_for("the mounted hook", || {
        env_file(&out.join("mounted-Hook_Disc.env"))
    });
    let want = |event: &str, origin: &Path| {
        [
            ("ISOMGR_EVENT", event.to_owned()),
            ("ISOMGR_NAME", "Hook_Disc".into()),
            ("ISOMGR_LABEL", "Hook Disc".into()),
            (
                "ISOMGR_PATH",
                p.root.join("Hook_Disc").display().to_string(),
            ),
            ("ISOMGR_SOURCE", "dir".into()),
            ("ISOMGR_ORIGIN", origin.display().to_string()),
            ("STDIN", "null".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect::<std::collections::BTreeMap<_, _>>()
    };
    assert_eq!(mounted, want("mounted", &drop.join("disc.iso")));
    // Renamed, then deleted: the removal hook names the path it had last.
    fs::rename(drop.join("disc.iso"), drop.join("renamed.iso")).unwrap();
    wait_for("the new origin in the state", || {
        let doc: Value = serde_json::from_slice(&fs::read(&p.state).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        let o = doc["media"][0]["origin"].as_str().unwrap_or("").to_owned();
        o.ends_with("/renamed.iso").then_some(()).ok_or(o)
    });
    fs::remove_file(drop.join("renamed.iso")).unwrap();
    w.wait_names(&[]);
    let removed = wait_for("the removed hook", || {
        env_file(&out.join("removed-Hook_Disc.env"))
    });
    assert_eq!(removed, want("removed", &drop.join("renamed.iso")));
}

#[test]
fn failing_and_slow_hooks_never_hold_the_watcher_up() {
    if !can_run("hooks that fail or hang") {
        return;
    }
    let p = Place::new();
    let drop = p.dir("drop");
    let pids = p.base.join("slow.pids");
    let config = p.config(&format!(
        "[watch]\ndriver = \"fuse\"\nhook_timeout = 100\n[[dir]]\npath = \"{}\"\n",
        drop.display()
    ));
    let slow = format!("echo $$ >> {}; sleep 100; true", pids.display());
    // The flags replace the file's (none here) and shorten the timeout.
    let w = p.start(
        &config,
        &[
            "--root",
            p.root.to_str().unwrap(),
            "--state",
            p.state.to_str().unwrap(),
            "--exec",
            &slow,
            "--exec",
            "exit 7",
            "--hook-timeout",
            "2",
        ],
    );
    // More media than hooks may run at once: every one is still served promptly.
    let mut want = Vec::new();
    for i in 0..6 {
        let label = format!("PROMPT_{i}");
        let staged = image(&p.scratch.join(format!("{i}.iso")), &label);
        let started = Instant::now();
        fs::rename(staged, drop.join(format!("{i}.iso"))).unwrap();
        want.push(label);
        let names: Vec<&str> = want.iter().map(String::as_str).collect();
        w.wait_names(&names);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{} took {:?} to be served",
            want[i],
            started.elapsed()
        );
    }
    w.wait_log("hook failed");
    assert!(w.log().contains("exit status: 7"), "{}", w.log());
    w.wait_log("hook timed out; killed");
    // The slow hooks that ran were killed with their children, and reaped.
    wait_for("the slow hooks to be gone", || {
        let body = fs::read_to_string(&pids).map_err(|e| e.to_string())?;
        let alive: Vec<&str> = body
            .lines()
            .filter(|pid| Path::new(&format!("/proc/{pid}")).exists())
            .collect();
        alive.is_empty().then_some(()).ok_or(format!("{alive:?}"))
    });
}

#[test]
fn a_polled_directory_follows_additions_renames_and_removals_without_inotify() {
    if !can_run("poll mode") {
        return;
    }
    let p = Place::new();
    let polled = p.dir("polled");
    let config = p.config(&format!(
        "[watch]\ndriver = \"fuse\"\nroot = \"{}\"\nstate = \"{}\"\npoll_interval = 0.2\n\
         [[dir]]\npath = \"{}\"\npoll = \"always\"\n",
        p.root.display(),
        p.state.display(),
        polled.display()
    ));
    let w = p.start(&config, &[]);
    w.wait_log(&format!(
        "{}: poll = always: polling every 0.2 s, no inotify",
        polled.display()
    ));
    // No inotify watch on it: the only way to see changes there is the poll.
    p.drop_image(&polled.join("one.iso"), "POLLED_ONE");
    w.wait_names(&["POLLED_ONE"]);
    // A rename keeps the medium (same device and inode), with its new origin.
    fs::rename(polled.join("one.iso"), polled.join("uno.iso")).unwrap();
    wait_for("the new origin in the state", || {
        let doc: Value = serde_json::from_slice(&fs::read(&p.state).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        let o = doc["media"][0]["origin"].as_str().unwrap_or("").to_owned();
        o.ends_with("/uno.iso").then_some(()).ok_or(o)
    });
    assert_eq!(
        w.log().matches(" mounted name=POLLED_ONE ").count(),
        1,
        "served again after the rename:\n{}",
        w.log()
    );
    // An image written in two halves, closed in between: the first half is not served, however
    // many polls go by.
    let full = fs::read(image_padded(
        &p.scratch.join("two.iso"),
        "POLLED_TWO",
        256 * 1024,
    ))
    .unwrap();
    let half = full.len() / 2;
    fs::write(polled.join("two.iso"), &full[..half]).unwrap();
    w.wait_log("waiting for the rest of the image");
    std::thread::sleep(Duration::from_millis(600)); // three poll intervals: a negative check
    assert!(!w.names().contains("POLLED_TWO"), "a partial image served");
    {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(polled.join("two.iso"))
            .unwrap();
        f.write_all(&full[half..]).unwrap();
    }
    w.wait_names(&["POLLED_ONE", "POLLED_TWO"]);
    assert_eq!(
        fs::read_to_string(p.root.join("POLLED_TWO/hello.txt")).unwrap(),
        "hello from POLLED_TWO\n"
    );
    fs::remove_file(polled.join("uno.iso")).unwrap();
    w.wait_names(&["POLLED_TWO"]);
    fs::remove_file(polled.join("two.iso")).unwrap();
    w.wait_names(&[]);
}

/// Whether a process is gone (or dead and waiting to be reaped by someone else).
fn gone(pid: &str) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(") ")
            .next()
            .is_some_and(|rest| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

#[test]
fn hooks_still_running_are_killed_when_the_watcher_stops() {
    if !can_run("hooks at stop") {
        return;
    }
    let p = Place::new();
    let drop = p.dir("drop");
    let pids = p.base.join("hook.pids");
    let config = p.config(&format!(
        "[watch]\ndriver = \"fuse\"\nroot = \"{}\"\nstate = \"{}\"\nhook_timeout = 100\n\
         exec = \"sleep 100 & echo $$ $! >> {}; wait\"\n[[dir]]\npath = \"{}\"\n",
        p.root.display(),
        p.state.display(),
        pids.display(),
        drop.display()
    ));
    let mut w = p.start(&config, &[]);
    p.drop_image(&drop.join("a.iso"), "AT_STOP");
    w.wait_names(&["AT_STOP"]);
    let both: Vec<String> = wait_for("the hook to start", || {
        let body = fs::read_to_string(&pids).map_err(|e| e.to_string())?;
        let v: Vec<String> = body.split_whitespace().map(str::to_owned).collect();
        (v.len() == 2).then_some(v).ok_or(body)
    });
    assert!(both.iter().all(|pid| !gone(pid)), "hook not running");
    let started = Instant::now();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(w.child.id() as libc::pid_t, libc::SIGTERM) };
    let status = wait_for("the watcher to exit", || {
        w.child
            .try_wait()
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "running".to_owned())
    });
    assert!(status.success(), "{status}");
    assert!(started.elapsed() < Duration::from_secs(5));
    wait_for("the hook and its child to be gone", || {
        let alive: Vec<&String> = both.iter().filter(|p| !gone(p)).collect();
        alive.is_empty().then_some(()).ok_or(format!("{alive:?}"))
    });
}
