//! The kernel executor against the recording fake: the order of every step, and for each
//! step that fails, the exact rollback that follows (nothing made is left behind).

use std::sync::Arc;

use super::*;
use crate::event::Handle;
use crate::manager::MediumRecord;
use crate::sys::fake::{Call, FakeSys};
use crate::sys::CallKind;

const ROOT: &str = "/srv/isos";

fn image_medium(id: &str, origin: &str, fs: Option<&str>) -> Medium {
    let file = tempfile::tempfile().expect("tempfile");
    Medium {
        id: MediumId(id.into()),
        source: SourceKind::Dir,
        origin: origin.into(),
        label: Some("L".into()),
        fallback: "f".into(),
        fs: fs.map(str::to_owned),
        handle: Some(Handle(Arc::new(file))),
    }
}

fn drive_medium() -> Medium {
    Medium {
        id: MediumId("drive:/dev/sr0:1".into()),
        source: SourceKind::Drive,
        origin: "/dev/sr0".into(),
        label: Some("DISC".into()),
        fallback: "sr0".into(),
        fs: Some("udf".into()),
        handle: None,
    }
}

fn exec() -> (KernelExecutor<FakeSys>, FakeSys) {
    let sys = FakeSys::new();
    (KernelExecutor::new(sys.clone(), ROOT.into()), sys)
}

fn publish(e: &mut KernelExecutor<FakeSys>, name: &str, m: &Medium) -> Option<Event> {
    e.run(&Action::Publish {
        name: name.into(),
        medium: m.clone(),
    })
}

fn unpublish(e: &mut KernelExecutor<FakeSys>, name: &str, m: &Medium) {
    assert_eq!(
        e.run(&Action::Unpublish {
            name: name.into(),
            id: m.id.clone(),
        }),
        None
    );
}

fn make_dir(p: &str) -> Call {
    Call::MakeDir {
        path: p.into(),
        mode: 0o000,
    }
}
fn attach(image: &str) -> Call {
    Call::AttachLoop {
        image: image.into(),
        read_only: true,
    }
}
fn mount(src: &str, target: &str, fs: &str) -> Call {
    Call::Mount {
        source: src.into(),
        target: target.into(),
        fstype: fs.into(),
        flags: MountFlags::SERVED,
    }
}
fn detach(dev: &str) -> Call {
    Call::DetachLoop { device: dev.into() }
}
fn rmdir(p: &str) -> Call {
    Call::RemoveDir { path: p.into() }
}
fn lazy_unmount(p: &str) -> Call {
    Call::Unmount {
        target: p.into(),
        lazy: true,
    }
}

fn failed_error(ev: Option<Event>) -> String {
    match ev {
        Some(Event::Failed { error, .. }) => error,
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[test]
fn publishes_an_image_as_unreadable_dir_then_read_only_loop_then_mount() {
    let (mut e, sys) = exec();
    let m = image_medium("file:1:2", "/drop/a.iso", Some("iso9660"));
    let ev = publish(&mut e, "A", &m);
    assert_eq!(
        ev,
        Some(Event::Published {
            id: m.id.clone(),
            name: "A".into(),
            loop_device: Some("/dev/loop0".into()),
        })
    );
    assert_eq!(
        sys.calls(),
        [
            make_dir("/srv/isos/A"),
            attach("/drop/a.iso"),
            mount("/dev/loop0", "/srv/isos/A", "iso9660"),
        ]
    );
    assert_eq!(
        MountFlags::SERVED,
        MountFlags {
            read_only: true,
            nosuid: true,
            nodev: true,
            noexec: true
        }
    );
}

#[test]
fn unpublishes_with_lazy_unmount_then_detach_then_rmdir() {
    let (mut e, sys) = exec();
    let m = image_medium("file:1:2", "/drop/a.iso", Some("iso9660"));
    publish(&mut e, "A", &m);
    sys.clear_calls();
    unpublish(&mut e, "A", &m);
    assert_eq!(
        sys.calls(),
        [
            lazy_unmount("/srv/isos/A"),
            detach("/dev/loop0"),
            rmdir("/srv/isos/A"),
        ]
    );
    // Gone from the executor: a second unpublish does nothing.
    sys.clear_calls();
    unpublish(&mut e, "A", &m);
    assert_eq!(sys.calls(), []);
}

/// Every step of a publish failing in turn: the calls show the exact rollback.
#[test]
fn each_failing_publish_step_undoes_the_steps_before_it() {
    type Case = (CallKind, i32, Vec<Call>, &'static str);
    let cases: Vec<Case> = vec![
        (
            CallKind::MakeDir,
            libc::EEXIST,
            vec![make_dir("/srv/isos/A")],
            "creating the mount point /srv/isos/A: File exists",
        ),
        (
            CallKind::AttachLoop,
            libc::EPERM,
            vec![
                make_dir("/srv/isos/A"),
                attach("/drop/a.iso"),
                rmdir("/srv/isos/A"),
            ],
            "attaching a loop device to /drop/a.iso: Operation not permitted",
        ),
        (
            CallKind::Mount,
            libc::ENODEV,
            vec![
                make_dir("/srv/isos/A"),
                attach("/drop/a.iso"),
                mount("/dev/loop0", "/srv/isos/A", "iso9660"),
                detach("/dev/loop0"),
                rmdir("/srv/isos/A"),
            ],
            "mounting /drop/a.iso (/dev/loop0) at /srv/isos/A as iso9660 (this kernel has no iso9660 filesystem; --driver fuse serves it): No such device",
        ),
    ];
    for (kind, errno, calls, error) in cases {
        let (mut e, sys) = exec();
        let m = image_medium("file:1:2", "/drop/a.iso", Some("iso9660"));
        sys.fail_next(kind, errno);
        let got = failed_error(publish(&mut e, "A", &m));
        assert!(got.starts_with(error), "{kind:?}: {got}");
        assert_eq!(sys.calls(), calls, "{kind:?}");
        // Nothing is held: unpublishing the name touches nothing.
        sys.clear_calls();
        unpublish(&mut e, "A", &m);
        assert_eq!(sys.calls(), [], "{kind:?}");
    }
}

#[test]
fn a_failing_rollback_step_does_not_stop_the_rest_of_the_rollback() {
    let (mut e, sys) = exec();
    let m = image_medium("file:1:2", "/drop/a.iso", Some("iso9660"));
    sys.fail_next(CallKind::Mount, libc::EINVAL);
    sys.fail_next(CallKind::DetachLoop, libc::EIO);
    let err = failed_error(publish(&mut e, "A", &m));
    assert!(err.contains("Invalid argument"), "{err}");
    assert_eq!(
        sys.calls(),
        [
            make_dir("/srv/isos/A"),
            attach("/drop/a.iso"),
            mount("/dev/loop0", "/srv/isos/A", "iso9660"),
            detach("/dev/loop0"),
            rmdir("/srv/isos/A"),
        ]
    );
}

#[test]
fn each_failing_removal_step() {
    // (failing kind, errno, calls of the removal)
    type Case = (CallKind, i32, Vec<Call>);
    let cases: Vec<Case> = vec![
        // A busy or failing unmount leaves everything: nothing else may go while mounted.
        (
            CallKind::Unmount,
            libc::EPERM,
            vec![lazy_unmount("/srv/isos/A")],
        ),
        // Not mounted any more (unmounted by hand): the rest still goes.
        (
            CallKind::Unmount,
            libc::EINVAL,
            vec![
                lazy_unmount("/srv/isos/A"),
                detach("/dev/loop0"),
                rmdir("/srv/isos/A"),
            ],
        ),
        // A failed detach is left to autoclear; the directory still goes.
        (
            CallKind::DetachLoop,
            libc::EIO,
            vec![
                lazy_unmount("/srv/isos/A"),
                detach("/dev/loop0"),
                rmdir("/srv/isos/A"),
            ],
        ),
        (
            CallKind::RemoveDir,
            libc::ENOTEMPTY,
            vec![
                lazy_unmount("/srv/isos/A"),
                detach("/dev/loop0"),
                rmdir("/srv/isos/A"),
            ],
        ),
    ];
    for (kind, errno, calls) in cases {
        let (mut e, sys) = exec();
        let m = image_medium("file:1:2", "/drop/a.iso", Some("iso9660"));
        publish(&mut e, "A", &m);
        sys.clear_calls();
        sys.fail_next(kind, errno);
        unpublish(&mut e, "A", &m);
        assert_eq!(sys.calls(), calls, "{kind:?} {errno}");
    }
}

#[test]
fn a_drive_is_mounted_directly_without_a_loop() {
    let (mut e, sys) = exec();
    let m = drive_medium();
    let ev = publish(&mut e, "DISC", &m);
    assert_eq!(
        ev,
        Some(Event::Published {
            id: m.id.clone(),
            name: "DISC".into(),
            loop_device: None,
        })
    );
    unpublish(&mut e, "DISC", &m);
    assert_eq!(
        sys.calls(),
        [
            make_dir("/srv/isos/DISC"),
            mount("/dev/sr0", "/srv/isos/DISC", "udf"),
            lazy_unmount("/srv/isos/DISC"),
            rmdir("/srv/isos/DISC"),
        ]
    );
}

#[test]
fn an_unknown_filesystem_tries_iso9660_then_udf() {
    let (mut e, sys) = exec();
    let m = image_medium("file:1:2", "/drop/a.iso", None);
    sys.fail_next(CallKind::Mount, libc::EINVAL);
    assert!(matches!(
        publish(&mut e, "A", &m),
        Some(Event::Published { .. })
    ));
    assert_eq!(
        sys.calls(),
        [
            make_dir("/srv/isos/A"),
            attach("/drop/a.iso"),
            mount("/dev/loop0", "/srv/isos/A", "iso9660"),
            mount("/dev/loop0", "/srv/isos/A", "udf"),
        ]
    );
}

#[test]
fn refuses_a_name_that_is_not_one_component() {
    for bad in ["", ".", "..", "a/b", "/abs"] {
        let (mut e, sys) = exec();
        let m = image_medium("file:1:2", "/drop/a.iso", None);
        let err = failed_error(publish(&mut e, bad, &m));
        assert!(err.contains("cannot be a directory name"), "{bad:?}: {err}");
        assert_eq!(sys.calls(), [], "{bad:?}");
    }
}

#[test]
fn shutdown_leaves_mounts_unless_told_to_clean_up() {
    let (mut e, sys) = exec();
    let m = image_medium("file:1:2", "/drop/a.iso", Some("iso9660"));
    publish(&mut e, "A", &m);
    sys.clear_calls();
    e.shutdown(false);
    assert_eq!(sys.calls(), []);

    let (mut e, sys) = exec();
    publish(&mut e, "A", &m);
    sys.clear_calls();
    e.shutdown(true);
    assert_eq!(
        sys.calls(),
        [
            lazy_unmount("/srv/isos/A"),
            detach("/dev/loop0"),
            rmdir("/srv/isos/A"),
        ]
    );
}

fn record(name: &str, id: &str, origin: &str, dev: Option<&str>) -> MediumRecord {
    MediumRecord {
        name: name.into(),
        label: None,
        source: SourceKind::Dir,
        origin: origin.into(),
        mounted_at: String::new(),
        loop_device: dev.map(str::to_owned),
        id: MediumId(id.into()),
        mounted_at_unix: 0,
    }
}

fn mount_entry(id: u32, point: &str, fstype: &str, source: &str) -> MountEntry {
    MountEntry {
        id,
        parent: 1,
        dev: 0,
        mount_point: point.into(),
        fstype: fstype.into(),
        source: source.into(),
    }
}

fn loop_entry(n: u32, backing: &str) -> LoopEntry {
    LoopEntry {
        path: format!("/dev/loop{n}").into(),
        number: n,
        backing_file: backing.into(),
        deleted: false,
    }
}

/// The previous run's state: A still mounted (adoptable), B unmounted since (its empty
/// mount point and loop go), C mounted by someone else over the name (left alone), D's loop
/// now backs another file (left alone).
fn previous() -> StateFile {
    StateFile {
        root: ROOT.into(),
        driver: "kernel".into(),
        pid: 1,
        media: vec![
            record("A", "file:1:10", "/drop/a.iso", Some("/dev/loop3")),
            record("B", "file:1:11", "/drop/b.iso", Some("/dev/loop4")),
            record("C", "file:1:12", "/drop/c.iso", Some("/dev/loop5")),
            record("D", "file:1:13", "/drop/d.iso", Some("/dev/loop6")),
        ],
    }
}

fn world(sys: &FakeSys) {
    sys.set_mounts(vec![
        mount_entry(1, "/", "ext4", "/dev/vda1"),
        mount_entry(50, "/srv/isos/A", "iso9660", "/dev/loop3"),
        mount_entry(51, "/srv/isos/C", "ext4", "/dev/sdb1"),
        mount_entry(52, "/srv/isos/D", "iso9660", "/dev/loop6"),
    ]);
    sys.set_loops(vec![
        loop_entry(3, "/drop/a.iso"),
        loop_entry(4, "/drop/b.iso"),
        loop_entry(6, "/home/someone/other.img"),
    ]);
    sys.set_dir(Path::new(ROOT), &["A", "C", "D", "www-notes"]);
}

#[test]
fn reconcile_adopts_only_what_the_state_lists_and_the_mount_table_confirms() {
    let (mut e, sys) = exec();
    world(&sys);
    let foreign = e.reconcile(Some(&previous()));
    assert_eq!(foreign, ["C", "D", "www-notes"]);
    assert_eq!(
        sys.calls(),
        [
            Call::Mounts,
            Call::Loops,
            detach("/dev/loop4"),
            rmdir("/srv/isos/B"),
            Call::ListDir { path: ROOT.into() },
        ]
    );

    // The same medium comes back under its name: adopted as it is, no call.
    sys.clear_calls();
    let a = image_medium("file:1:10", "/drop/a.iso", Some("iso9660"));
    assert_eq!(
        publish(&mut e, "A", &a),
        Some(Event::Published {
            id: a.id.clone(),
            name: "A".into(),
            loop_device: Some("/dev/loop3".into()),
        })
    );
    assert_eq!(sys.calls(), []);
    // And removed like any other.
    unpublish(&mut e, "A", &a);
    assert_eq!(
        sys.calls(),
        [
            lazy_unmount("/srv/isos/A"),
            detach("/dev/loop3"),
            rmdir("/srv/isos/A"),
        ]
    );
}

#[test]
fn a_previous_mount_whose_medium_did_not_return_is_torn_down() {
    let (mut e, sys) = exec();
    world(&sys);
    e.reconcile(Some(&previous()));
    sys.clear_calls();
    // The manager's stale-name clean-up after the first scan.
    unpublish(&mut e, "A", &image_medium("file:1:10", "/drop/a.iso", None));
    assert_eq!(
        sys.calls(),
        [
            lazy_unmount("/srv/isos/A"),
            detach("/dev/loop3"),
            rmdir("/srv/isos/A"),
        ]
    );
}

#[test]
fn another_medium_under_a_previous_name_replaces_the_old_mount() {
    let (mut e, sys) = exec();
    world(&sys);
    e.reconcile(Some(&previous()));
    sys.clear_calls();
    let other = image_medium("file:1:99", "/drop/a.iso", Some("iso9660"));
    assert!(matches!(
        publish(&mut e, "A", &other),
        Some(Event::Published { .. })
    ));
    assert_eq!(
        sys.calls(),
        [
            lazy_unmount("/srv/isos/A"),
            detach("/dev/loop3"),
            rmdir("/srv/isos/A"),
            make_dir("/srv/isos/A"),
            attach("/drop/a.iso"),
            mount("/dev/loop0", "/srv/isos/A", "iso9660"),
        ]
    );
}

#[test]
fn reconcile_adopts_nothing_from_another_driver_and_clears_a_stale_fuse_root() {
    let (mut e, sys) = exec();
    world(&sys);
    let mut mounts = sys.mounts().expect("fake");
    mounts.push(mount_entry(60, ROOT, "fuse.isomgr", "isomgr"));
    sys.set_mounts(mounts);
    sys.clear_calls();
    let mut prev = previous();
    prev.driver = "fuse".into();
    let foreign = e.reconcile(Some(&prev));
    assert_eq!(foreign, ["A", "C", "D", "www-notes"]);
    assert_eq!(
        sys.calls(),
        [
            Call::Mounts,
            Call::Loops,
            lazy_unmount(ROOT),
            Call::ListDir { path: ROOT.into() },
        ]
    );
}

#[test]
fn reconcile_without_a_mount_table_adopts_nothing_and_removes_nothing() {
    let (mut e, sys) = exec();
    world(&sys);
    sys.fail_next(CallKind::Mounts, libc::EACCES);
    let foreign = e.reconcile(Some(&previous()));
    // B's dir is tried (rmdir only removes an empty directory); nothing is detached.
    assert_eq!(foreign, ["A", "C", "D", "www-notes"]);
    assert!(!sys
        .calls()
        .iter()
        .any(|c| matches!(c, Call::DetachLoop { .. } | Call::Unmount { .. })));
}

#[test]
fn kernel_is_usable_only_with_iso9660_and_a_working_loop_device() {
    let sys = FakeSys::new();
    sys.set_filesystems(&["ext4", "squashfs"]);
    let why = kernel_usable(&sys).expect_err("no iso9660");
    assert!(why.contains("no iso9660"), "{why}");
    assert_eq!(sys.calls(), [Call::Filesystems], "no loop probe needed");

    sys.set_filesystems(&["ext4", "iso9660"]);
    sys.fail_next(CallKind::ProbeLoop, libc::ENOENT);
    let why = kernel_usable(&sys).expect_err("no loop");
    assert!(why.contains("no loop device can be attached"), "{why}");

    let why = kernel_usable(&sys).expect("usable");
    assert!(why.contains("no udf"), "{why}");
    sys.set_filesystems(&["iso9660", "udf"]);
    let why = kernel_usable(&sys).expect("usable");
    assert!(!why.contains("udf"), "{why}");
}

#[test]
fn own_loops_hold_the_backing_file_while_served_so_the_drives_source_skips_them() {
    let sys = FakeSys::new();
    let own = OwnLoops::default();
    let mut e = KernelExecutor::new(sys.clone(), ROOT.into()).with_own_loops(own.clone());
    let m = image_medium("file:1:2", "/srv/iso-drop/a.iso", Some("iso9660"));
    assert!(matches!(
        publish(&mut e, "A", &m),
        Some(Event::Published { .. })
    ));
    assert!(own
        .lock()
        .unwrap()
        .contains(Path::new("/srv/iso-drop/a.iso")));
    unpublish(&mut e, "A", &m);
    assert!(own.lock().unwrap().is_empty());

    // A failed mount takes the mark away again.
    sys.fail_next(CallKind::Mount, libc::ENODEV);
    let _ = publish(&mut e, "B", &m);
    assert!(own.lock().unwrap().is_empty());
}

/// An image file on disk, as the dirs source reports it (identity from its device and inode).
fn file_medium(dir: &std::path::Path, name: &str) -> Medium {
    use std::os::unix::fs::MetadataExt;
    let path = dir.join(name);
    std::fs::write(&path, name).expect("writing the image");
    let file = File::open(&path).expect("opening the image");
    let meta = file.metadata().expect("stat");
    Medium {
        id: MediumId(format!("file:{}:{}", meta.dev(), meta.ino()).into()),
        source: SourceKind::Dir,
        origin: path,
        label: None,
        fallback: name.into(),
        fs: Some("iso9660".into()),
        handle: Some(Handle(Arc::new(file))),
    }
}

#[test]
fn a_medium_that_finds_no_loop_device_waits_and_is_retried_with_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let (mut e, sys) = exec();
    let m = file_medium(dir.path(), "a.iso");
    let img = m.origin.to_str().unwrap().to_owned();
    sys.fail_next(CallKind::AttachLoop, libc::ENOSPC);
    let start = Instant::now();
    // No outcome yet: it waits, and nothing is left made.
    assert_eq!(publish(&mut e, "A", &m), None);
    assert_eq!(
        sys.calls(),
        [make_dir("/srv/isos/A"), attach(&img), rmdir("/srv/isos/A")]
    );
    assert_eq!(e.waiting(), 1);
    let at = e.next_retry().expect("a retry is planned");
    assert!(at >= start + LOOP_RETRY_FIRST && at <= Instant::now() + LOOP_RETRY_FIRST);
    // Not before its time.
    sys.clear_calls();
    assert_eq!(e.retry_due(start), []);
    assert_eq!(sys.calls(), []);
    // Still none free: it waits on, twice as long.
    sys.fail_next(CallKind::AttachLoop, libc::ENOSPC);
    assert_eq!(e.retry_due(at), []);
    assert_eq!(e.waiting(), 1);
    assert_eq!(e.next_retry(), Some(at + LOOP_RETRY_FIRST));
    sys.fail_next(CallKind::AttachLoop, libc::EBUSY);
    let at = at + LOOP_RETRY_FIRST;
    assert_eq!(e.retry_due(at), []);
    assert_eq!(e.next_retry(), Some(at + LOOP_RETRY_FIRST * 2));
    // One is free: published, reopened by path.
    sys.clear_calls();
    let evs = e.retry_due(at + LOOP_RETRY_MAX);
    assert_eq!(
        evs,
        [Event::Published {
            id: m.id.clone(),
            name: "A".into(),
            loop_device: Some("/dev/loop0".into()),
        }]
    );
    assert_eq!(e.waiting(), 0);
    assert_eq!(e.next_retry(), None);
    assert_eq!(
        sys.calls(),
        [
            make_dir("/srv/isos/A"),
            attach(&img),
            mount("/dev/loop0", "/srv/isos/A", "iso9660")
        ]
    );
}

#[test]
fn a_freed_loop_device_lets_the_first_waiting_medium_in_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut e, sys) = exec();
    let a = file_medium(dir.path(), "a.iso");
    let b = file_medium(dir.path(), "b.iso");
    let c = file_medium(dir.path(), "c.iso");
    assert!(matches!(
        publish(&mut e, "A", &a),
        Some(Event::Published { .. })
    ));
    sys.fail_next(CallKind::AttachLoop, libc::ENOSPC);
    assert_eq!(publish(&mut e, "B", &b), None);
    // Later media queue behind it (one error line each), in order.
    sys.fail_next(CallKind::AttachLoop, libc::ENOSPC);
    assert_eq!(publish(&mut e, "C", &c), None);
    assert_eq!(e.waiting(), 2);
    let before = Instant::now();
    unpublish(&mut e, "A", &a);
    let at = e.next_retry().expect("a retry");
    assert!(at <= Instant::now() && at >= before);
    let evs = e.retry_due(Instant::now());
    let names: Vec<&str> = evs
        .iter()
        .map(|ev| match ev {
            Event::Published { name, .. } => name.as_str(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(names, ["B", "C"]);
}

#[test]
fn a_waiting_medium_that_goes_away_is_forgotten_and_a_replaced_one_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (mut e, sys) = exec();
    let a = file_medium(dir.path(), "a.iso");
    let b = file_medium(dir.path(), "b.iso");
    for (name, m) in [("A", &a), ("B", &b)] {
        sys.fail_next(CallKind::AttachLoop, libc::ENOSPC);
        assert_eq!(publish(&mut e, name, m), None);
    }
    sys.clear_calls();
    unpublish(&mut e, "A", &a);
    assert_eq!(sys.calls(), []);
    assert_eq!(e.waiting(), 1);
    // b.iso replaced by another file meanwhile: never served in its place.
    let tmp = dir.path().join("new");
    std::fs::write(&tmp, "other").unwrap();
    std::fs::rename(&tmp, &b.origin).unwrap();
    let evs = e.retry_due(Instant::now() + LOOP_RETRY_MAX);
    let [Event::Failed { name, error, .. }] = evs.as_slice() else {
        panic!("{evs:?}");
    };
    assert_eq!(name, "B");
    assert!(error.contains("replaced since"), "{error}");
    assert_eq!(sys.calls(), []);
    assert_eq!(e.waiting(), 0);
    assert_eq!(e.next_retry(), None);
}

#[test]
fn a_drive_never_waits_and_other_attach_errors_fail_at_once() {
    let (mut e, sys) = exec();
    let m = image_medium("file:1:2", "/drop/a.iso", Some("iso9660"));
    sys.fail_next(CallKind::AttachLoop, libc::EINVAL);
    assert!(failed_error(publish(&mut e, "A", &m)).contains("Invalid argument"));
    assert_eq!(e.waiting(), 0);
    sys.fail_next(CallKind::Mount, libc::ENOSPC);
    assert!(matches!(
        publish(&mut e, "D", &drive_medium()),
        Some(Event::Failed { .. })
    ));
    assert_eq!(e.waiting(), 0);
}
