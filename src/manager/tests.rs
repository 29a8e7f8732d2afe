//! Manager tests: a table of scenarios, and properties over random event sequences with
//! restarts at random points.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn medium(id: &str, label: Option<&str>, origin: &str) -> Medium {
    Medium {
        id: MediumId(id.into()),
        source: SourceKind::Dir,
        origin: origin.into(),
        label: label.map(str::to_owned),
        fallback: std::path::Path::new(origin)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        fs: None,
        handle: None,
    }
}

fn id(s: &str) -> MediumId {
    MediumId(s.into())
}

/// Runs events through the manager with an executor that always succeeds; returns every
/// action taken.
fn run(m: &mut Manager, events: Vec<Event>) -> Vec<Action> {
    run_with(m, events, |_| {})
}

/// [`run`], calling `before` on the manager before each event it applies.
fn run_with(
    m: &mut Manager,
    events: Vec<Event>,
    mut before: impl FnMut(&mut Manager),
) -> Vec<Action> {
    let mut all = Vec::new();
    for ev in events {
        let mut queue = vec![ev];
        while let Some(ev) = queue.pop() {
            before(m);
            for a in m.apply(100, ev) {
                if let Action::Publish { name, medium } = &a {
                    queue.push(Event::Published {
                        id: medium.id.clone(),
                        name: name.clone(),
                        loop_device: None,
                    });
                }
                all.push(a);
            }
        }
    }
    all
}

/// [`run`] on `m`, and on `plain` with its suffix hints dropped before every event (so every
/// search starts at -2, as without them); both must give the same names.
fn run_both(m: &mut Manager, plain: &mut Manager, events: Vec<Event>) {
    run(m, events.clone());
    run_with(plain, events, |p| p.hints.clear());
    assert_eq!(names(m), names(plain), "the hints changed a name");
}

fn names(m: &Manager) -> BTreeMap<String, String> {
    m.records()
        .into_iter()
        .map(|r| (r.id.0.to_string(), r.name))
        .collect()
}

#[test]
fn scenarios() {
    // (description, events, expected id -> name afterwards)
    type Case = (&'static str, Vec<Event>, Vec<(&'static str, &'static str)>);
    let cases: Vec<Case> = vec![
        (
            "a label becomes the name",
            vec![Event::Appeared(medium(
                "1",
                Some("Rocky 9.2 DVD"),
                "/d/r.iso",
            ))],
            vec![("1", "Rocky_9.2_DVD")],
        ),
        (
            "equal labels: first keeps NAME, then NAME-2, NAME-3",
            vec![
                Event::Appeared(medium("1", Some("X"), "/d/a.iso")),
                Event::Appeared(medium("2", Some("X"), "/d/b.iso")),
                Event::Appeared(medium("3", Some("X"), "/d/c.iso")),
            ],
            vec![("1", "X"), ("2", "X-2"), ("3", "X-3")],
        ),
        (
            "deleting the first keeps NAME-2's name; a newcomer takes the free NAME",
            vec![
                Event::Appeared(medium("1", Some("X"), "/d/a.iso")),
                Event::Appeared(medium("2", Some("X"), "/d/b.iso")),
                Event::Vanished(id("1")),
                Event::Appeared(medium("3", Some("X"), "/d/c.iso")),
            ],
            vec![("2", "X-2"), ("3", "X")],
        ),
        (
            "no label: the file stem",
            vec![Event::Appeared(medium("1", None, "/d/my disc.iso"))],
            vec![("1", "my_disc")],
        ),
        (
            "a rename keeps the name",
            vec![
                Event::Appeared(medium("1", Some("L"), "/d/a.iso")),
                Event::Moved {
                    id: id("1"),
                    origin: "/d/sub/b.iso".into(),
                },
            ],
            vec![("1", "L")],
        ),
        (
            "foreign root entries count as taken",
            vec![
                Event::ForeignEntries(vec!["L".into()]),
                Event::Appeared(medium("1", Some("L"), "/d/a.iso")),
            ],
            vec![("1", "L-2")],
        ),
        (
            "a scan that no longer finds a medium removes it",
            vec![
                Event::Appeared(medium("1", Some("A"), "/d/a.iso")),
                Event::Appeared(medium("2", Some("B"), "/d/b.iso")),
                Event::ScanDone {
                    source: SourceKind::Dir,
                    present: vec![id("2")],
                },
            ],
            vec![("2", "B")],
        ),
        (
            "a medium changed in place is published again under its new label",
            vec![
                Event::Appeared(medium("1", Some("OLD"), "/d/a.iso")),
                Event::Appeared(medium("1", Some("NEW"), "/d/a.iso")),
            ],
            vec![("1", "NEW")],
        ),
    ];
    for (what, events, want) in cases {
        let mut m = Manager::default();
        run(&mut m, events);
        let want: BTreeMap<String, String> = want
            .into_iter()
            .map(|(i, n)| (i.to_owned(), n.to_owned()))
            .collect();
        assert_eq!(names(&m), want, "{what}");
    }
}

#[test]
fn failed_publish_frees_the_name_until_the_medium_is_seen_again() {
    let mut m = Manager::default();
    let acts = m.apply(1, Event::Appeared(medium("1", Some("BAD"), "/d/bad.iso")));
    assert!(matches!(&acts[0], Action::Publish { name, .. } if name == "BAD"));
    m.apply(
        2,
        Event::Failed {
            id: id("1"),
            name: "BAD".into(),
            error: "directory loop".into(),
        },
    );
    assert_eq!(m.name_of(&id("1")), None);
    assert!(matches!(m.phase_of(&id("1")), Some(Phase::Failed { .. })));
    // Another medium may now take the name.
    let acts = run(
        &mut m,
        vec![Event::Appeared(medium("2", Some("BAD"), "/d/x.iso"))],
    );
    assert!(acts
        .iter()
        .any(|a| matches!(a, Action::Publish { name, .. } if name == "BAD")));
    // Vanishing a failed medium unpublishes nothing.
    let acts = m.apply(3, Event::Vanished(id("1")));
    assert_eq!(acts, vec![Action::SaveState]);
}

#[test]
fn a_late_outcome_for_a_vanished_medium_is_undone() {
    let mut m = Manager::default();
    m.apply(1, Event::Appeared(medium("1", Some("A"), "/d/a.iso")));
    m.apply(2, Event::Vanished(id("1")));
    let acts = m.apply(
        3,
        Event::Published {
            id: id("1"),
            name: "A".into(),
            loop_device: None,
        },
    );
    assert_eq!(
        acts,
        vec![Action::Unpublish {
            name: "A".into(),
            id: id("1")
        }]
    );
}

#[test]
fn restart_gives_names_back_and_cleans_what_did_not_return() {
    let mut m = Manager::default();
    run(
        &mut m,
        vec![
            Event::Appeared(medium("1", Some("X"), "/d/a.iso")),
            Event::Appeared(medium("2", Some("X"), "/d/b.iso")),
            Event::Appeared(medium("3", Some("Y"), "/d/c.iso")),
        ],
    );
    let saved = m.records();
    let mut m2 = Manager::new(&saved);
    // The second comes back first: it must still be X-2, not X.
    let acts = run(
        &mut m2,
        vec![
            Event::Appeared(medium("2", Some("X"), "/d/b.iso")),
            Event::Appeared(medium("1", Some("X"), "/d/a.iso")),
            Event::ScanDone {
                source: SourceKind::Dir,
                present: vec![id("1"), id("2")],
            },
        ],
    );
    assert_eq!(m2.name_of(&id("1")), Some("X"));
    assert_eq!(m2.name_of(&id("2")), Some("X-2"));
    assert!(acts.contains(&Action::Unpublish {
        name: "Y".into(),
        id: id("3")
    }));
}

/// A medium that comes back after a restart with another label (its image rewritten in place
/// while isomgr was stopped: same file, same identity) is named after its new label, and what
/// the previous run made under the old name goes; the old name is free again.
#[test]
fn a_medium_relabelled_while_stopped_is_named_anew() {
    let mut m = Manager::default();
    run(
        &mut m,
        vec![
            Event::Appeared(medium("1", Some("OLD"), "/d/a.iso")),
            Event::Appeared(medium("2", Some("KEPT"), "/d/b.iso")),
        ],
    );
    let mut m2 = Manager::new(&m.records());
    let acts = run(
        &mut m2,
        vec![
            Event::Appeared(medium("1", Some("NEW"), "/d/a.iso")),
            Event::Appeared(medium("2", Some("KEPT"), "/d/b.iso")),
            Event::Appeared(medium("3", Some("OLD"), "/d/c.iso")),
        ],
    );
    let unpublish_old = Action::Unpublish {
        name: "OLD".into(),
        id: id("1"),
    };
    let at = |a: &Action| acts.iter().position(|x| x == a);
    let publish_new = acts.iter().position(
        |a| matches!(a, Action::Publish { name, medium } if name == "NEW" && medium.id == id("1")),
    );
    assert!(
        at(&unpublish_old).is_some() && at(&unpublish_old) < publish_new,
        "{acts:?}"
    );
    assert_eq!(m2.name_of(&id("1")), Some("NEW"));
    assert_eq!(m2.name_of(&id("2")), Some("KEPT"));
    assert_eq!(m2.name_of(&id("3")), Some("OLD"), "the old name is free");
}

/// Two images whose identities swapped while isomgr was stopped (deleted and copied again,
/// the file system reusing the inode numbers) each get the name of their own label, in
/// whichever order they are seen: the first waits until the previous holder of its name has
/// come back as another volume, instead of taking `NAME-2`.
#[test]
fn media_whose_identities_swapped_while_stopped_keep_their_labels_names() {
    let mut m = Manager::default();
    run(
        &mut m,
        vec![
            Event::Appeared(medium("x", Some("A"), "/d/a.iso")),
            Event::Appeared(medium("y", Some("B"), "/d/b.iso")),
        ],
    );
    let saved = m.records();
    for order in [["y", "x"], ["x", "y"]] {
        let mut m2 = Manager::new(&saved);
        let swapped = |i: &str| match i {
            "x" => medium("x", Some("B"), "/d/b.iso"),
            _ => medium("y", Some("A"), "/d/a.iso"),
        };
        let first = run(&mut m2, vec![Event::Appeared(swapped(order[0]))]);
        assert!(
            !first.iter().any(|a| matches!(a, Action::Publish { .. })),
            "{order:?}: the first waits for the holder of its name: {first:?}"
        );
        run(&mut m2, vec![Event::Appeared(swapped(order[1]))]);
        assert_eq!(m2.name_of(&id("x")), Some("B"), "{order:?}");
        assert_eq!(m2.name_of(&id("y")), Some("A"), "{order:?}");
    }
}

/// A medium whose name is held for a medium of the previous run waits for it: it gets
/// `NAME-2` if that one comes back as it was, and `NAME` if the first scan ends without it.
/// A waiting medium that goes meanwhile is forgotten.
#[test]
fn a_medium_waits_for_the_previous_holder_of_its_name() {
    let mut m = Manager::default();
    run(
        &mut m,
        vec![Event::Appeared(medium("x", Some("A"), "/d/a.iso"))],
    );
    let saved = m.records();
    let done = |present: &[&str]| Event::ScanDone {
        source: SourceKind::Dir,
        present: present.iter().map(|p| id(p)).collect(),
    };

    let mut back = Manager::new(&saved);
    run(
        &mut back,
        vec![Event::Appeared(medium("z", Some("A"), "/d/z.iso"))],
    );
    assert_eq!(back.name_of(&id("z")), None, "waiting");
    run(
        &mut back,
        vec![Event::Appeared(medium("x", Some("A"), "/d/a.iso"))],
    );
    assert_eq!(back.name_of(&id("x")), Some("A"));
    assert_eq!(back.name_of(&id("z")), Some("A-2"));

    let mut gone = Manager::new(&saved);
    run(
        &mut gone,
        vec![Event::Appeared(medium("z", Some("A"), "/d/z.iso"))],
    );
    let acts = run(&mut gone, vec![done(&["z"])]);
    assert_eq!(gone.name_of(&id("z")), Some("A"), "{acts:?}");
    assert!(acts.contains(&Action::Unpublish {
        name: "A".into(),
        id: id("x")
    }));

    let mut left = Manager::new(&saved);
    run(
        &mut left,
        vec![Event::Appeared(medium("z", Some("A"), "/d/z.iso"))],
    );
    run(&mut left, vec![Event::Vanished(id("z")), done(&[])]);
    assert_eq!(left.name_of(&id("z")), None);
    assert!(left.records().is_empty());
}

#[derive(Clone, Debug)]
enum Op {
    Add(usize),
    Remove(usize),
    Rename(usize, u8),
    Relabel(usize, usize),
    Fail(usize),
    Restart,
    /// A restart during which medium `.0` was rewritten with label `.1` (same identity).
    RestartRelabelled(usize, usize),
}

const LABELS: [Option<&str>; 6] = [Some("A"), Some("A"), Some("B"), Some(""), Some("a/b"), None];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..8).prop_map(Op::Add),
        2 => (0usize..8).prop_map(Op::Remove),
        1 => (0usize..8, any::<u8>()).prop_map(|(i, n)| Op::Rename(i, n)),
        1 => (0usize..8, 0usize..LABELS.len()).prop_map(|(i, l)| Op::Relabel(i, l)),
        1 => (0usize..8).prop_map(Op::Fail),
        1 => Just(Op::Restart),
        1 => (0usize..8, 0usize..LABELS.len()).prop_map(|(i, l)| Op::RestartRelabelled(i, l)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Names are unique; every present, non-failed medium has exactly one name; absent media
    /// have none; a name never changes while its medium is present and unchanged; a restart
    /// at any point gives every present medium its previous name back.
    #[test]
    fn names_stay_unique_stable_and_survive_restarts(ops in proptest::collection::vec(op(), 1..60)) {
        let mut m = Manager::default();
        let mut plain = Manager::default();
        // Ground truth: id -> (label index, origin), for present media.
        let mut present: BTreeMap<usize, (usize, String)> = BTreeMap::new();
        let mut failed: std::collections::BTreeSet<usize> = Default::default();
        let mut expect: BTreeMap<usize, String> = BTreeMap::new();
        let mk = |i: usize, l: usize, origin: &str| {
            let mut md = medium(&format!("m{i}"), LABELS[l], origin);
            md.fallback = format!("stem{}", i % 3);
            md
        };
        for op in ops {
            match op {
                Op::Add(i) => {
                    let (l, origin) = present.get(&i).cloned().unwrap_or((i % LABELS.len(), format!("/d/{i}.iso")));
                    present.insert(i, (l, origin.clone()));
                    run_both(&mut m, &mut plain, vec![Event::Appeared(mk(i, l, &origin))]);
                    // Seen again (a rescan, a rewrite): a failed medium is tried once more.
                    failed.remove(&i);
                }
                Op::Remove(i) => {
                    present.remove(&i);
                    failed.remove(&i);
                    expect.remove(&i);
                    run_both(&mut m, &mut plain, vec![Event::Vanished(id(&format!("m{i}")))]);
                }
                Op::Rename(i, n) => {
                    if let Some(p) = present.get_mut(&i) {
                        p.1 = format!("/d/sub{n}/{i}.iso");
                        run_both(&mut m, &mut plain, vec![Event::Moved { id: id(&format!("m{i}")), origin: p.1.clone().into() }]);
                    }
                }
                Op::Relabel(i, l) => {
                    if let Some(p) = present.get_mut(&i) {
                        if p.0 != l && LABELS[p.0] != LABELS[l] {
                            p.0 = l;
                            expect.remove(&i);
                        }
                        failed.remove(&i);
                        let (l, origin) = p.clone();
                        run_both(&mut m, &mut plain, vec![Event::Appeared(mk(i, l, &origin))]);
                    }
                }
                Op::Fail(i) => {
                    let mid = id(&format!("m{i}"));
                    if let Some(name) = m.name_of(&mid).map(str::to_owned) {
                        run_both(&mut m, &mut plain, vec![Event::Failed { id: mid, name, error: "bad".into() }]);
                        failed.insert(i);
                        expect.remove(&i);
                    }
                }
                Op::Restart | Op::RestartRelabelled(..) => {
                    if let Op::RestartRelabelled(i, l) = op {
                        if let Some(p) = present.get_mut(&i) {
                            if LABELS[p.0] != LABELS[l] {
                                expect.remove(&i);
                            }
                            p.0 = l;
                        }
                    }
                    let saved = m.records();
                    m = Manager::new(&saved);
                    plain = Manager::new(&plain.records());
                    let mut evs: Vec<Event> = present
                        .iter()
                        .filter(|(i, _)| !failed.contains(i))
                        .map(|(i, (l, o))| Event::Appeared(mk(*i, *l, o)))
                        .collect();
                    evs.reverse();
                    evs.push(Event::ScanDone {
                        source: SourceKind::Dir,
                        present: present.keys().filter(|i| !failed.contains(i)).map(|i| id(&format!("m{i}"))).collect(),
                    });
                    run_both(&mut m, &mut plain, evs);
                    // Failed media are not in the state file; they come back as new.
                    for i in failed.clone() {
                        let (l, o) = present[&i].clone();
                        run_both(&mut m, &mut plain, vec![Event::Appeared(mk(i, l, &o))]);
                        failed.remove(&i);
                    }
                }
            }
            // Invariants.
            let records = m.records();
            let mut seen = std::collections::HashSet::new();
            for r in &records {
                prop_assert!(seen.insert(r.name.clone()), "duplicate name {}", r.name);
                prop_assert!(!r.name.is_empty() && r.name != "." && r.name != ".." && !r.name.contains('/'));
            }
            for i in 0..8usize {
                let mid = id(&format!("m{i}"));
                let name = m.name_of(&mid);
                if present.contains_key(&i) && !failed.contains(&i) {
                    let name = name.map(str::to_owned);
                    prop_assert!(name.is_some(), "present medium m{i} has no name");
                    let name = name.unwrap();
                    if let Some(prev) = expect.get(&i) {
                        prop_assert_eq!(prev, &name, "name of m{} changed while present", i);
                    }
                    expect.insert(i, name);
                } else {
                    prop_assert!(name.is_none(), "absent or failed medium m{i} has a name");
                }
            }
        }
    }
}

#[test]
fn the_loop_device_of_a_kernel_mount_is_recorded() {
    let mut m = Manager::default();
    m.apply(1, Event::Appeared(medium("1", Some("A"), "/d/a.iso")));
    m.apply(
        2,
        Event::Published {
            id: id("1"),
            name: "A".into(),
            loop_device: Some("/dev/loop7".into()),
        },
    );
    let r = m.records();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].loop_device.as_deref(), Some("/dev/loop7"));
}

fn disc(id: &str, label: Option<&str>, device: &str) -> Medium {
    Medium {
        id: MediumId(id.into()),
        source: SourceKind::Drive,
        origin: device.into(),
        label: label.map(str::to_owned),
        fallback: device.trim_start_matches("/dev/").into(),
        fs: Some("iso9660".into()),
        handle: None,
    }
}

fn eject(id: &str, device: &str) -> Event {
    Event::EjectRequested {
        id: MediumId(id.into()),
        device: device.into(),
    }
}

#[test]
fn drive_scenarios() {
    // (description, events, expected id -> name afterwards)
    type Case = (&'static str, Vec<Event>, Vec<(&'static str, &'static str)>);
    let cases: Vec<Case> = vec![
        (
            "re-inserting the same disc (a new disk sequence) gives it back its name",
            vec![
                Event::Appeared(disc("drive:/dev/sr0:5", Some("Debian 12"), "/dev/sr0")),
                Event::Appeared(medium("f", Some("Debian 12"), "/d/debian.iso")),
                eject("drive:/dev/sr0:5", "/dev/sr0"),
                Event::Appeared(disc("drive:/dev/sr0:6", Some("Debian 12"), "/dev/sr0")),
            ],
            vec![("drive:/dev/sr0:6", "Debian_12"), ("f", "Debian_12-2")],
        ),
        (
            "re-inserting after the tray emptied by itself gives the name back too",
            vec![
                Event::Appeared(disc("drive:/dev/sr0:5", Some("D"), "/dev/sr0")),
                Event::Vanished(id("drive:/dev/sr0:5")),
                Event::Appeared(disc("drive:/dev/sr0:6", Some("D"), "/dev/sr0")),
            ],
            vec![("drive:/dev/sr0:6", "D")],
        ),
        (
            "a different disc swapped in fast: the old name goes, the new label is served",
            vec![
                Event::Appeared(disc("drive:/dev/sr0:5", Some("OLD"), "/dev/sr0")),
                Event::Vanished(id("drive:/dev/sr0:5")),
                Event::Appeared(disc("drive:/dev/sr0:6", Some("NEW"), "/dev/sr0")),
            ],
            vec![("drive:/dev/sr0:6", "NEW")],
        ),
        (
            "a disc with no usable label is named after the drive",
            vec![Event::Appeared(disc(
                "drive:/dev/sr1:9",
                Some("  "),
                "/dev/sr1",
            ))],
            vec![("drive:/dev/sr1:9", "sr1")],
        ),
        (
            "drive removal while serving frees the name",
            vec![
                Event::Appeared(disc("drive:/dev/sr0:5", Some("X"), "/dev/sr0")),
                Event::Vanished(id("drive:/dev/sr0:5")),
                Event::Appeared(medium("f", Some("X"), "/d/x.iso")),
            ],
            vec![("f", "X")],
        ),
    ];
    for (what, events, want) in cases {
        let mut m = Manager::default();
        run(&mut m, events);
        let want: BTreeMap<String, String> = want
            .into_iter()
            .map(|(i, n)| (i.to_owned(), n.to_owned()))
            .collect();
        assert_eq!(names(&m), want, "{what}");
    }
}

#[test]
fn eject_button_unpublishes_before_opening_the_tray() {
    let mut m = Manager::default();
    run(
        &mut m,
        vec![Event::Appeared(disc(
            "drive:/dev/sr0:5",
            Some("D"),
            "/dev/sr0",
        ))],
    );
    let acts = m.apply(2, eject("drive:/dev/sr0:5", "/dev/sr0"));
    assert_eq!(
        acts,
        vec![
            Action::Unpublish {
                name: "D".into(),
                id: id("drive:/dev/sr0:5")
            },
            Action::SaveState,
            Action::Eject {
                device: "/dev/sr0".into(),
                name: Some("D".into())
            },
        ]
    );
    assert_eq!(m.name_of(&id("drive:/dev/sr0:5")), None);
    assert!(m.records().is_empty());
}

#[test]
fn eject_of_a_medium_that_failed_or_is_unknown_still_opens_the_tray() {
    let mut m = Manager::default();
    m.apply(
        1,
        Event::Appeared(disc("drive:/dev/sr0:5", Some("D"), "/dev/sr0")),
    );
    m.apply(
        2,
        Event::Failed {
            id: id("drive:/dev/sr0:5"),
            name: "D".into(),
            error: "unreadable".into(),
        },
    );
    let acts = m.apply(3, eject("drive:/dev/sr0:5", "/dev/sr0"));
    assert_eq!(
        acts,
        vec![
            Action::SaveState,
            Action::Eject {
                device: "/dev/sr0".into(),
                name: None
            }
        ]
    );
    let acts = m.apply(4, eject("drive:/dev/sr0:77", "/dev/sr0"));
    assert_eq!(
        acts,
        vec![Action::Eject {
            device: "/dev/sr0".into(),
            name: None
        }]
    );
}

#[test]
fn a_disc_still_in_its_drive_after_a_restart_keeps_its_name() {
    let mut m = Manager::default();
    run(
        &mut m,
        vec![
            Event::Appeared(disc("drive:/dev/sr0:5", Some("D"), "/dev/sr0")),
            Event::Appeared(disc("drive:/dev/sr1:8", Some("D"), "/dev/sr1")),
        ],
    );
    let mut m2 = Manager::new(&m.records());
    run(
        &mut m2,
        vec![
            Event::Appeared(disc("drive:/dev/sr1:8", Some("D"), "/dev/sr1")),
            Event::Appeared(disc("drive:/dev/sr0:5", Some("D"), "/dev/sr0")),
            Event::ScanDone {
                source: SourceKind::Drive,
                present: vec![id("drive:/dev/sr0:5"), id("drive:/dev/sr1:8")],
            },
        ],
    );
    assert_eq!(m2.name_of(&id("drive:/dev/sr0:5")), Some("D"));
    assert_eq!(m2.name_of(&id("drive:/dev/sr1:8")), Some("D-2"));
}

#[test]
fn the_borrowed_state_document_is_the_owned_one_byte_for_byte() {
    let mut m = Manager::new(&[]);
    run(
        &mut m,
        vec![
            Event::Appeared(medium("file:1:2", Some("Rocky 9"), "/drop/r.iso")),
            Event::Appeared(medium("file:1:3", None, "/drop/x y.iso")),
        ],
    );
    let owned = StateFile {
        root: "/srv/isos".into(),
        driver: "fuse".into(),
        pid: 7,
        media: m.records(),
    };
    let borrowed = StateDoc {
        root: std::path::Path::new("/srv/isos"),
        driver: "fuse",
        pid: 7,
        media: m.record_refs(),
    };
    assert_eq!(owned.media.len(), 2);
    assert_eq!(
        serde_json::to_string_pretty(&owned).unwrap(),
        serde_json::to_string_pretty(&borrowed).unwrap()
    );
}

/// Many media with one label: each search for a free suffix starts where the last ended (the
/// hint), and a freed suffix brings it back down, so the lowest free one is still given.
#[test]
fn many_media_with_one_label_resume_the_suffix_search() {
    let mut m = Manager::default();
    let n = 3000;
    let events = (0..n)
        .map(|k| Event::Appeared(medium(&format!("{k}"), Some("X"), &format!("/d/{k}.iso"))))
        .collect();
    run(&mut m, events);
    assert_eq!(m.name_of(&id("0")), Some("X"));
    assert_eq!(m.name_of(&id("2999")), Some("X-3000"));
    assert_eq!(m.hints.get("X"), Some(&3001));
    run(&mut m, vec![Event::Vanished(id("1499"))]);
    assert_eq!(m.hints.get("X"), Some(&1500));
    run(
        &mut m,
        vec![
            Event::Appeared(medium("new", Some("X"), "/d/new.iso")),
            Event::Appeared(medium("newer", Some("X"), "/d/newer.iso")),
        ],
    );
    assert_eq!(m.name_of(&id("new")), Some("X-1500"));
    assert_eq!(m.name_of(&id("newer")), Some("X-3001"));
    // A foreign entry that goes away frees its name too.
    run(&mut m, vec![Event::ForeignEntries(vec!["X-3002".into()])]);
    run(
        &mut m,
        vec![Event::Appeared(medium("a", Some("X"), "/d/a.iso"))],
    );
    assert_eq!(m.name_of(&id("a")), Some("X-3003"));
    run(&mut m, vec![Event::ForeignEntries(Vec::new())]);
    run(
        &mut m,
        vec![Event::Appeared(medium("b", Some("X"), "/d/b.iso"))],
    );
    assert_eq!(m.name_of(&id("b")), Some("X-3002"));
}
