//! Property: a random tree -> mkiso -> isomgr's reader -> the same tree (names, kinds, modes,
//! owners, mtimes, contents, symlink targets), including deep trees that need relocation; and
//! the same tree in the second volume a partition offset adds.

#[path = "mkiso_support/mod.rs"]
mod support;

use isomgr::iso9660::write::partition::{Append, PartType, EFI_SYSTEM};
use isomgr::iso9660::write::{boot::Boot, build, Options};
use proptest::prelude::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use support::*;

#[derive(Clone, Debug)]
enum Op {
    Dir {
        parent: usize,
        name: String,
        mode: u32,
    },
    File {
        parent: usize,
        name: String,
        mode: u32,
        len: usize,
        seed: u8,
    },
    Symlink {
        parent: usize,
        name: String,
        target: String,
    },
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_.~ -]{1,24}",
        "[a-zé日ü]{1,110}",
        "[A-Z]{1,8}\\.[a-z]{0,4}",
    ]
    .prop_filter("not . or ..", |s| s != "." && s != "..")
}

fn op() -> impl Strategy<Value = Op> {
    let mode = prop_oneof![Just(0o755u32), Just(0o700), Just(0o555), Just(0o2750)];
    let fmode = prop_oneof![
        Just(0o644u32),
        Just(0o600),
        Just(0o755),
        Just(0o444),
        Just(0o4755)
    ];
    prop_oneof![
        (any::<usize>(), name(), mode).prop_map(|(parent, name, mode)| Op::Dir {
            parent,
            name,
            mode
        }),
        (any::<usize>(), name(), fmode, 0usize..5000, any::<u8>()).prop_map(
            |(parent, name, mode, len, seed)| Op::File {
                parent,
                name,
                mode,
                len,
                seed
            }
        ),
        (any::<usize>(), name(), "[a-z./]{1,300}").prop_map(|(parent, name, target)| Op::Symlink {
            parent,
            name,
            target
        }),
    ]
}

/// Targets as Rock Ridge stores them: empty components and a trailing `/` do not survive.
fn normal_target(t: &str) -> String {
    let abs = t.starts_with('/');
    let parts: Vec<&str> = t.split('/').filter(|c| !c.is_empty()).collect();
    let body = parts.join("/");
    match (abs, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".to_string(),
        (false, false) => body,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]
    #[test]
    fn random_tree_round_trips_through_mkiso_and_the_reader(
        ops in proptest::collection::vec(op(), 1..60),
        chain in 0usize..12,
        offset in prop::sample::select(vec![16u32, 17, 40]),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir(&src).unwrap();
        let mut dirs: Vec<PathBuf> = vec![src.clone()];
        // a chain of nested dirs, so deep relocation gets exercised
        for i in 0..chain {
            let d = dirs.last().unwrap().join(format!("d{i}"));
            fs::create_dir(&d).unwrap();
            dirs.push(d);
        }
        let mut dir_modes = Vec::new();
        for op in &ops {
            match op {
                Op::Dir { parent, name, mode } => {
                    let p = dirs[parent % dirs.len()].join(name);
                    if fs::symlink_metadata(&p).is_ok() { continue; }
                    fs::create_dir(&p).unwrap();
                    dir_modes.push((p.clone(), *mode));
                    dirs.push(p);
                }
                Op::File { parent, name, mode, len, seed } => {
                    let p = dirs[parent % dirs.len()].join(name);
                    if fs::symlink_metadata(&p).is_ok() { continue; }
                    let data: Vec<u8> = (0..*len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(*seed)).collect();
                    fs::write(&p, data).unwrap();
                    fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).unwrap();
                }
                Op::Symlink { parent, name, target } => {
                    let p = dirs[parent % dirs.len()].join(name);
                    if fs::symlink_metadata(&p).is_ok() { continue; }
                    std::os::unix::fs::symlink(normal_target(target), &p).unwrap();
                }
            }
        }
        for (p, m) in dir_modes.iter().rev() {
            fs::set_permissions(p, fs::Permissions::from_mode(*m)).unwrap();
        }
        let iso = tmp.path().join("out.iso");
        let opts = Options {
            label: "PROP".into(),
            joliet: true,
            rock_ridge: true,
            rational: false,
            strict: true,
            source_date_epoch: Some(1_700_000_000),
            boot: Default::default(),
            pad: true,
            exclude: Default::default(),
            grafts: Vec::new(),
        };
        build(&src, &iso, &opts, &mut |_| {}).unwrap();
        let want = describe_fs(&src);
        let got = describe_image(&iso);
        prop_assert_eq!(&got, &want);

        // With a partition offset: the image, and its partition 1 read alone from there.
        let part = tmp.path().join("efi.img");
        fs::write(&part, [0xA5u8; 3000]).unwrap();
        let offset_opts = Options {
            boot: Boot {
                appended: vec![Append { number: 2, ty: PartType::Guid(EFI_SYSTEM), path: part }],
                appended_gpt: true,
                partition_offset: offset,
                ..Boot::default()
            },
            ..opts
        };
        let with_offset = tmp.path().join("offset.iso");
        build(&src, &with_offset, &offset_opts, &mut |_| {}).unwrap();
        prop_assert_eq!(&describe_image(&with_offset), &want);
        let image = fs::read(&with_offset).unwrap();
        let alone = tmp.path().join("partition1.img");
        fs::write(&alone, &image[offset as usize * 2048..]).unwrap();
        prop_assert_eq!(&describe_image(&alone), &want);
    }
}
