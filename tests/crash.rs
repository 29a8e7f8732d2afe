//! Crash consistency: the watcher is killed with SIGKILL at random points while images are
//! added, removed and renamed, and at each named step of the kernel driver and of the state
//! write (`ISOMGR_CRASH_AT`, see src/crashpoint.rs); after each restart nothing is leaked and
//! every image still present has the name it had.
//!
//! Checked through independent views: `losetup -J -l` (no loop backed by a test file that no
//! mount uses), /proc/self/mountinfo (one live mount per served name, none stacked or dead),
//! the root's listing (no empty directory, the foreign ones untouched), the state file (names
//! kept). ISOs can only be served by the FUSE driver here (this kernel may lack iso9660), so
//! the kernel driver's steps run with squashfs images in a child process that drives the
//! kernel executor and the manager as the daemon does.
//!
//! Short by default; `ISOMGR_FULL=1` runs 200 random kills and every step 5 times. Each test
//! prints one figure line. Needs root, /dev/fuse, loop devices, genisoimage, mksquashfs.

mod common;
#[path = "common/labelled.rs"]
mod labelled;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::watcher::{is_fuse_mount, mounts_under, wait_within, watch_command, Env};
use serde_json::Value;

fn full() -> bool {
    std::env::var("ISOMGR_FULL").is_ok_and(|v| v == "1")
}

/// xorshift64*, seeded from ISOMGR_SEED or the clock (printed, so a failure can be replayed).
struct Rng(u64);

impl Rng {
    fn new(test: &str) -> Rng {
        let seed = std::env::var("ISOMGR_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("{test}: ISOMGR_SEED={seed}");
        Rng(seed | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// (mount point, fstype, source) of each mount at or below `dir`.
fn mounts(dir: &Path) -> Vec<(PathBuf, String, String)> {
    mounts_under(dir)
        .iter()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mp = pre.split(' ').nth(4)?.replace("\\040", " ");
            let mut post = post.split(' ');
            Some((PathBuf::from(mp), post.next()?.into(), post.next()?.into()))
        })
        .collect()
}

/// Loops backed by a file below `base` that no mount under `root` uses.
fn leaked_loops(base: &Path, root: &Path) -> Vec<String> {
    let used: BTreeSet<String> = mounts(root).into_iter().map(|m| m.2).collect();
    let base = base.to_string_lossy();
    common::loops()
        .into_iter()
        .filter(|(dev, back)| back.starts_with(&*base) && !used.contains(dev))
        .map(|(dev, back)| format!("{dev} ({back})"))
        .collect()
}

fn state(path: &Path) -> Option<Value> {
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

/// id -> name of the media a state file lists.
fn names_by_id(doc: &Value) -> BTreeMap<String, String> {
    doc["media"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                m["id"].as_str().unwrap_or("").to_owned(),
                m["name"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// id -> label of each medium a state document lists.
fn labels_by_id(doc: &Value) -> BTreeMap<String, Option<String>> {
    doc["media"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let id = m["id"].as_str().unwrap_or("").to_owned();
            (id, m["label"].as_str().map(str::to_owned))
        })
        .collect()
}

/// Drops from `before` (id -> name) the media whose label is not the one `labels` gave them:
/// a file that went while isomgr was down and another image, copied in, that got its inode
/// number is another volume, named after its own label.
fn same_volumes_only(
    before: &mut BTreeMap<String, String>,
    labels: &BTreeMap<String, Option<String>>,
    after: &Value,
) {
    let now = labels_by_id(after);
    before.retain(|id, _| match (labels.get(id), now.get(id)) {
        (Some(was), Some(is)) => was == is,
        _ => true,
    });
}

fn file_id(path: &Path) -> Option<String> {
    let m = fs::metadata(path).ok()?;
    Some(format!("file:{}:{}", m.dev(), m.ino()))
}

/// Kills `child` with SIGKILL and reaps it.
fn kill9(child: &mut Child) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
    let _ = child.wait();
}

/// Figures gathered over a run.
#[derive(Default)]
struct Tally {
    kills: usize,
    restarts: usize,
    leaked_loops: usize,
    stale_mounts: usize,
    empty_dirs: usize,
    removed_nonempty: usize,
    renamed: usize,
}

impl Tally {
    fn line(&self, name: &str) -> String {
        format!(
            "{name}: kills={} restarts={} leaked_loops={} stale_mounts={} empty_dirs={} removed_nonempty={} renamed={}",
            self.kills,
            self.restarts,
            self.leaked_loops,
            self.stale_mounts,
            self.empty_dirs,
            self.removed_nonempty,
            self.renamed
        )
    }

    fn clean(&self) -> bool {
        self.leaked_loops
            + self.stale_mounts
            + self.empty_dirs
            + self.removed_nonempty
            + self.renamed
            == 0
    }
}

// ---------------------------------------------------------------------------------------------
// The FUSE watcher, killed at random points and at the state write.

fn spawn_watch(env: &Env, crash_at: Option<&str>) -> Child {
    let mut cmd = watch_command(env);
    cmd.env("ISOMGR_LOG", "isomgr=info")
        .env_remove("ISOMGR_CRASH_AT");
    if let Some(step) = crash_at {
        cmd.env("ISOMGR_CRASH_AT", step);
    }
    cmd.spawn().expect("starting isomgr watch")
}

/// The images in the drop dir: id -> path.
fn present(env: &Env) -> BTreeMap<String, PathBuf> {
    fs::read_dir(&env.drop)
        .unwrap()
        .filter_map(|e| {
            let p = e.ok()?.path();
            Some((file_id(&p)?, p))
        })
        .collect()
}

/// Waits until the watcher `pid` serves exactly the images present, each once, and its state
/// says so; returns the state.
fn wait_converged(env: &Env, child: &mut Child) -> Value {
    let pid = child.id();
    let what = "the watcher to serve what is present";
    wait_within(what, Duration::from_secs(60), || {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("the watcher exited ({st}):\n{}", env.log_text());
        }
        let doc = state(&env.state).ok_or("no state")?;
        if doc["pid"] != pid {
            return Err(format!("state pid {}", doc["pid"]));
        }
        let want: BTreeSet<String> = present(env).into_keys().collect();
        let by_id = names_by_id(&doc);
        let have: BTreeSet<String> = by_id.keys().cloned().collect();
        if want != have {
            return Err(format!("state {have:?} != present {want:?}"));
        }
        let names: BTreeSet<String> = by_id.values().cloned().collect();
        let listed: BTreeSet<String> = fs::read_dir(&env.root)
            .map_err(|e| e.to_string())?
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        if listed != names {
            return Err(format!("listing {listed:?} != state {names:?}"));
        }
        Ok(doc)
    })
}

/// Checks what a restart left: one live FUSE mount at the root, no empty directory, names kept
/// for every medium the state before the crash listed.
fn check_fuse(env: &Env, before: &BTreeMap<String, String>, after: &Value, t: &mut Tally) {
    let m = mounts(&env.root);
    if m.len() != 1 || !is_fuse_mount(&env.root) {
        eprintln!("stale or stacked mounts: {m:?}");
        t.stale_mounts += m.len().saturating_sub(1).max(1);
    }
    for (_, name) in names_by_id(after) {
        let dir = env.root.join(&name);
        if fs::read_dir(&dir).map_or(true, |mut d| d.next().is_none()) {
            eprintln!("empty or unreadable: {}", dir.display());
            t.empty_dirs += 1;
        }
    }
    let after = names_by_id(after);
    for (id, name) in before {
        if let Some(now) = after.get(id) {
            if now != name {
                eprintln!("{id} was {name}, now {now}");
                t.renamed += 1;
            }
        }
    }
    t.leaked_loops += leaked_loops(&env.base, &env.root).len();
}

/// One random change in the drop dir: add (a copy moved in), remove, or rename.
fn churn_once(env: &Env, imgs: &labelled::Labelled, rng: &mut Rng, serial: &mut u32) {
    let files: Vec<PathBuf> = present(env).into_values().collect();
    match rng.below(if files.len() < 3 { 1 } else { 3 }) {
        0 => {
            *serial += 1;
            // Few labels, so equal labels (NAME, NAME-2, ...) are common.
            let label = format!("L{}", rng.below(4));
            let tmp = env.scratch.join(format!("{serial}.iso"));
            fs::write(&tmp, imgs.image(&label)).unwrap();
            fs::rename(&tmp, env.drop.join(format!("i{serial}.iso"))).unwrap();
        }
        1 => {
            let f = &files[rng.below(files.len() as u64) as usize];
            let _ = fs::remove_file(f);
        }
        _ => {
            *serial += 1;
            let f = &files[rng.below(files.len() as u64) as usize];
            let _ = fs::rename(f, env.drop.join(format!("r{serial}.iso")));
        }
    }
}

fn fuse_setup(test: &str) -> Option<(Env, labelled::Labelled)> {
    if !common::watcher::can_run(test) || !common::have_tool("genisoimage") {
        return None;
    }
    let env = Env::new("isomgr-crash.");
    // Foreign entries in the root (under the FUSE mount): both must survive everything.
    fs::create_dir(env.root.join("foreign-empty")).unwrap();
    fs::create_dir(env.root.join("foreign-full")).unwrap();
    fs::write(env.root.join("foreign-full/keep.txt"), "mine\n").unwrap();
    let imgs = labelled::Labelled::new(&env.scratch);
    Some((env, imgs))
}

/// Stops the watcher normally (it unmounts its root) and counts foreign entries that went.
fn fuse_finish(env: &Env, mut child: Child, t: &mut Tally) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let _ = child.wait();
    if !mounts(&env.root).is_empty() {
        t.stale_mounts += 1;
        let _ = Command::new("umount").arg("-l").arg(&env.root).status();
    }
    if !env.root.join("foreign-full/keep.txt").is_file() {
        t.removed_nonempty += 1;
    }
    if !env.root.join("foreign-empty").is_dir() {
        t.removed_nonempty += 1;
    }
}

#[test]
fn random_kills_while_images_come_and_go_leave_nothing_behind() {
    let Some((env, imgs)) = fuse_setup("random kills") else {
        return;
    };
    let kills = if full() { 200 } else { 15 };
    let mut rng = Rng::new("crash");
    let mut t = Tally::default();
    let mut serial = 0;
    for _ in 0..4 {
        churn_once(&env, &imgs, &mut rng, &mut serial);
    }
    let mut child = spawn_watch(&env, None);
    let start = Instant::now();
    for _ in 0..kills {
        wait_converged(&env, &mut child);
        // Changes, then a kill at a random moment while they are being handled.
        for _ in 0..1 + rng.below(6) {
            churn_once(&env, &imgs, &mut rng, &mut serial);
        }
        std::thread::sleep(Duration::from_millis(rng.below(60)));
        let (mut before, labels) = state(&env.state)
            .map(|d| (names_by_id(&d), labels_by_id(&d)))
            .unwrap_or_default();
        kill9(&mut child);
        t.kills += 1;
        // Sometimes the world changes while nobody watches.
        if rng.below(3) == 0 {
            churn_once(&env, &imgs, &mut rng, &mut serial);
        }
        child = spawn_watch(&env, None);
        t.restarts += 1;
        let after = wait_converged(&env, &mut child);
        same_volumes_only(&mut before, &labels, &after);
        check_fuse(&env, &before, &after, &mut t);
    }
    fuse_finish(&env, child, &mut t);
    println!(
        "{} secs={:.1}",
        t.line("crash"),
        start.elapsed().as_secs_f64()
    );
    assert!(t.clean(), "{}\n{}", t.line("crash"), env.log_text());
}

// ---------------------------------------------------------------------------------------------
// Named steps. The kernel driver's run in a child process (this test binary again, running
// `kernel_child`) that drives the kernel executor and the manager as the daemon does, on
// squashfs images, and writes the state file after each event.

use isomgr::event::{Event, Handle, Medium, MediumId, SourceKind};
use isomgr::exec::kernel::journal::journal_path;
use isomgr::exec::kernel::KernelExecutor;
use isomgr::manager::{Action, Manager, StateFile};
use isomgr::sys::linux::LinuxSys;

const KERNEL_STEPS: [&str; 7] = [
    "after-mkdir",
    "after-attach",
    "after-mount",
    "before-state-rename",
    "after-state-rename",
    "after-unmount",
    "before-rmdir",
];

/// The child: `CRASH_CHILD_BASE` holds `images/` (each a medium, labelled by its stem up to
/// the first '.'), `root/` and `state.json`. It reconciles, scans, then removes and re-adds
/// each medium `CRASH_CHILD_CYCLES` times, then exits leaving its mounts (as a normal stop does).
#[test]
fn kernel_child() {
    let Ok(base) = std::env::var("CRASH_CHILD_BASE") else {
        return;
    };
    let base = PathBuf::from(base);
    let cycles: usize = std::env::var("CRASH_CHILD_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (root, state_path) = (base.join("root"), base.join("state.json"));
    let previous = StateFile::load(&state_path).expect("state");
    let mut k = KernelExecutor::new(LinuxSys, root.clone()).with_journal(journal_path(&state_path));
    let foreign = k.reconcile(previous.as_ref());
    let mut manager = Manager::new(k.previous_records());
    let save = |m: &Manager| {
        StateFile {
            root: root.clone(),
            driver: "kernel".into(),
            pid: std::process::id(),
            media: m.records(),
        }
        .save(&state_path)
        .expect("saving the state");
    };
    let mut process = |m: &mut Manager, ev: Event| {
        let mut queue = std::collections::VecDeque::from([ev]);
        while let Some(ev) = queue.pop_front() {
            for a in m.apply(0, ev) {
                if a != Action::SaveState {
                    queue.extend(common::run_kernel(&mut k, &a));
                }
            }
        }
        save(m);
    };
    process(&mut manager, Event::ForeignEntries(foreign));
    let mut media = Vec::new();
    let mut paths: Vec<PathBuf> = fs::read_dir(base.join("images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    for p in paths {
        let file = fs::File::open(&p).unwrap();
        let meta = file.metadata().unwrap();
        let stem = p.file_name().unwrap().to_string_lossy().into_owned();
        let m = Medium {
            id: MediumId::new(format!("file:{}:{}", meta.dev(), meta.ino())),
            source: SourceKind::Dir,
            origin: p.clone(),
            label: Some(stem.split('.').next().unwrap().to_owned()),
            fallback: stem,
            fs: Some("squashfs".into()),
            handle: Some(Handle(Arc::new(file))),
        };
        media.push(m.clone());
        process(&mut manager, Event::Appeared(m));
    }
    let present = media.iter().map(|m| m.id.clone()).collect();
    process(
        &mut manager,
        Event::ScanDone {
            source: SourceKind::Dir,
            present,
        },
    );
    for _ in 0..cycles {
        for m in &media {
            process(&mut manager, Event::Vanished(m.id.clone()));
            process(&mut manager, Event::Appeared(m.clone()));
        }
    }
}

/// Runs the child; true when it was killed (by its crash point).
fn run_child(base: &Path, crash_at: Option<&str>, cycles: usize) -> bool {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["kernel_child", "--exact", "--nocapture", "--test-threads=1"])
        .env("CRASH_CHILD_BASE", base)
        .env("CRASH_CHILD_CYCLES", cycles.to_string())
        .env("ISOMGR_LOG", "isomgr=info")
        .env_remove("ISOMGR_CRASH_AT")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(s) = crash_at {
        cmd.env("ISOMGR_CRASH_AT", s);
    }
    let st = cmd.status().expect("running the child");
    match st.signal() {
        Some(libc::SIGKILL) => true,
        _ => {
            assert!(st.success(), "the child failed: {st}");
            false
        }
    }
}

/// After a clean run of the child: every image mounted once under its name, nothing else.
fn check_kernel(base: &Path, before: &BTreeMap<String, String>, t: &mut Tally) {
    let root = base.join("root");
    let doc = state(&base.join("state.json")).expect("state after the restart");
    let after = names_by_id(&doc);
    let want: BTreeSet<String> = fs::read_dir(base.join("images"))
        .unwrap()
        .filter_map(|e| file_id(&e.unwrap().path()))
        .collect();
    assert_eq!(
        after.keys().cloned().collect::<BTreeSet<_>>(),
        want,
        "the state lists every image"
    );
    let ms = mounts(&root);
    let mut seen = BTreeSet::new();
    for (mp, fstype, _) in &ms {
        let name = mp
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if fstype != "squashfs" || !seen.insert(name.clone()) || !after.values().any(|n| *n == name)
        {
            eprintln!("stale or stacked: {mp:?} {fstype}");
            t.stale_mounts += 1;
        }
    }
    for name in after.values() {
        if !seen.contains(name) {
            eprintln!("{name} is not mounted");
            t.stale_mounts += 1;
        }
    }
    for e in fs::read_dir(&root).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        if name == "foreign-empty" {
            continue;
        }
        if fs::read_dir(e.path()).map_or(true, |mut d| d.next().is_none()) {
            eprintln!("empty leftover: {name}");
            t.empty_dirs += 1;
        }
    }
    if !root.join("foreign-full/keep.txt").is_file() || !root.join("foreign-empty").is_dir() {
        t.removed_nonempty += 1;
    }
    for (id, name) in before {
        if after.get(id).is_some_and(|n| n != name) {
            eprintln!("{id} was {name}, now {}", after[id]);
            t.renamed += 1;
        }
    }
    let leaked = leaked_loops(base, &root);
    if !leaked.is_empty() {
        eprintln!("leaked loops: {leaked:?}");
    }
    t.leaked_loops += leaked.len();
}

/// Waits for autoclear to free loops whose last user went (it can trail the syscall).
fn settle_loops(base: &Path) {
    let root = base.join("root");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !leaked_loops(base, &root).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_crash_at_each_step_is_cleaned_up_by_the_next_start() {
    // SAFETY: geteuid cannot fail.
    let root_user = unsafe { libc::geteuid() } == 0;
    if !root_user || !Path::new("/dev/loop-control").exists() {
        assert!(!common::in_ci(), "crash steps: needs root and loop devices");
        eprintln!("SKIP crash steps: needs root and loop devices");
        return;
    }
    if !common::have_tool("mksquashfs") || !common::have_tool("losetup") {
        return;
    }
    let _lock = common::loop_lock();
    let tmp = tempfile::Builder::new()
        .prefix("isomgr-crash-k.")
        .tempdir()
        .unwrap();
    let base = tmp.path().canonicalize().unwrap();
    let (root, images) = (base.join("root"), base.join("images"));
    for d in [&root, &images, &base.join("src")] {
        fs::create_dir(d).unwrap();
    }
    fs::create_dir(root.join("foreign-empty")).unwrap();
    fs::create_dir(root.join("foreign-full")).unwrap();
    fs::write(root.join("foreign-full/keep.txt"), "mine\n").unwrap();
    fs::write(base.join("src/file.txt"), "squashed\n").unwrap();
    let sq = base.join("one.sqfs");
    let st = Command::new("mksquashfs")
        .arg(base.join("src"))
        .arg(&sq)
        .args(["-quiet", "-noappend", "-no-progress"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "mksquashfs");
    // Equal labels: SAME, SAME-2; and one of its own.
    for f in ["SAME.a", "SAME.b", "OTHER.c"] {
        fs::copy(&sq, images.join(f)).unwrap();
    }
    let mut rng = Rng::new("crash-steps");
    let rounds = if full() { 5 } else { 1 };
    let mut t = Tally::default();
    let mut by_step = BTreeMap::new();
    let start = Instant::now();
    run_child(&base, None, 0);
    for round in 0..rounds {
        for step in KERNEL_STEPS {
            // Which occurrence of the step: early ones happen during the first scan, later
            // ones during the remove/re-add cycles.
            let nth = 1 + rng.below(6 + 2 * round as u64);
            let killed = run_child(&base, Some(&format!("{step}:{nth}")), 3);
            // The names to keep: what was served when the process died. The state file can
            // lag by up to one write; the journal records every mount point made since.
            let (mut before, mut labels) = state(&base.join("state.json"))
                .map(|d| (names_by_id(&d), labels_by_id(&d)))
                .unwrap_or_default();
            let journal = fs::read(journal_path(&base.join("state.json"))).unwrap_or_default();
            for made in isomgr::exec::kernel::journal::replay(&journal).into_values() {
                before.retain(|_, name| *name != made.name);
                before.insert(made.id.as_str().to_owned(), made.name);
                labels.insert(made.id.as_str().to_owned(), made.label);
            }
            // Served means mounted: a medium killed half-published (directory made, not yet
            // mounted) or half-removed (unmounted, directory not yet gone) was not served, and
            // the next start may give it another name.
            let mounted: BTreeSet<PathBuf> = mounts(&root).into_iter().map(|m| m.0).collect();
            before.retain(|_, name| mounted.contains(&root.join(name.as_str())));
            if killed {
                t.kills += 1;
                *by_step.entry(step).or_insert(0) += 1;
            }
            // Between runs an image sometimes goes and comes back as another file.
            if rng.below(3) == 0 {
                let victim = images.join(["SAME.a", "SAME.b", "OTHER.c"][rng.below(3) as usize]);
                fs::remove_file(&victim).unwrap();
                fs::copy(&sq, &victim).unwrap();
            }
            run_child(&base, None, 0);
            t.restarts += 1;
            settle_loops(&base);
            if let Some(after) = state(&base.join("state.json")) {
                same_volumes_only(&mut before, &labels, &after);
            }
            check_kernel(&base, &before, &mut t);
        }
    }
    // A clean stop: everything goes, the foreign entries stay.
    fs::remove_dir_all(&images).unwrap();
    fs::create_dir(&images).unwrap();
    run_child(&base, None, 0);
    settle_loops(&base);
    assert!(mounts(&root).is_empty(), "{:?}", mounts(&root));
    check_kernel(&base, &BTreeMap::new(), &mut t);
    let steps: Vec<String> = by_step.iter().map(|(s, n)| format!("{s}={n}")).collect();
    println!(
        "{} steps={} secs={:.1}",
        t.line("crash-steps"),
        steps.join(","),
        start.elapsed().as_secs_f64()
    );
    for m in mounts(&root).into_iter().rev() {
        let _ = Command::new("umount").arg("-l").arg(&m.0).status();
    }
    assert!(t.clean(), "{}", t.line("crash-steps"));
    assert_eq!(
        by_step.len(),
        KERNEL_STEPS.len(),
        "every step was reached: {steps:?}"
    );
}
