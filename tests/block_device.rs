//! The reader on a block device: a real loop device attached read-only to a fixture image
//! gives the same listing, contents and label as the image file.

mod common;

use std::process::Command;

/// Detaches the loop device when the test ends, however it ends.
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[test]
fn loop_device_reads_like_the_image_file() {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout == b"0\n");
    if !is_root || !std::path::Path::new("/dev/loop-control").exists() {
        assert!(
            !common::in_ci(),
            "needs root and /dev/loop-control under CI=true"
        );
        eprintln!("SKIP: needs root and loop devices");
        return;
    }
    let _lock = common::loop_lock();
    let image = common::fixtures().join("rr-joliet.iso");
    let out = common::output_ok(
        Command::new("losetup")
            .args(["--find", "--show", "--read-only"])
            .arg(&image),
    );
    let dev = Loop(String::from_utf8(out.stdout).unwrap().trim().to_owned());

    let from_file = common::isomgr(&["ls", "-R", "--json", image.to_str().unwrap()]);
    let from_dev = common::isomgr(&["ls", "-R", "--json", &dev.0]);
    assert!(
        from_dev.status.success(),
        "{}",
        String::from_utf8_lossy(&from_dev.stderr)
    );
    assert_eq!(from_file.stdout, from_dev.stdout);

    let cat = common::isomgr(&["cat", &dev.0, "/future.txt"]);
    let want = common::isomgr(&["cat", image.to_str().unwrap(), "/future.txt"]);
    assert!(cat.status.success());
    assert_eq!(cat.stdout, want.stdout);

    let scan = common::isomgr(&["scan", "--json", &dev.0]);
    assert!(
        scan.status.success(),
        "{}",
        String::from_utf8_lossy(&scan.stderr)
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&scan.stdout).unwrap();
    assert_eq!(rows[0]["label"], "RR and Joliet long label");
    // The device's capacity is the image size rounded to 512 bytes: complete.
    assert_eq!(rows[0]["complete"], true);
    assert!(
        rows[0]["size"].as_u64().unwrap() >= std::fs::metadata(&image).unwrap().len() / 512 * 512
    );
}
