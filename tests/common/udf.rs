//! UDF images made at run time with pycdlib, and image surgery, shared by tests/udf.rs and
//! tests/kernel.rs.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Stdio};

use super::output_ok;
use super::watcher::noise;

/// What README.TXT, the one file of the bridge's ISO9660 tree, holds.
pub const README: &[u8] = b"This disc holds a UDF file system.\n";

/// A 200-plus-character name with non-ASCII characters, all in Latin-1 so UDF stores it with
/// 8-bit characters (up to 254); 222 bytes in UTF-8, under Linux's 255.
pub fn long_latin1_name() -> String {
    format!("Ünïcödé {} ñame.txt", "x".repeat(200))
}

/// The bridge's source tree: directories three deep, a 300 KB random file, sizes around the
/// 2048-byte block, an empty file, an empty directory, a name with spaces, a 217-character
/// Latin-1 name, a name UDF stores with 16-bit characters, and symlinks (to a directory, with
/// `..`, absolute).
pub fn bridge_tree(src: &Path) {
    fs::create_dir_all(src.join("a/b/c")).unwrap();
    fs::create_dir(src.join("emptydir")).unwrap();
    fs::write(src.join("a/b/c/random.bin"), noise(300_000, 1)).unwrap();
    fs::write(src.join("a/b/two.txt"), b"two levels down\n").unwrap();
    fs::write(src.join("a/one.bin"), noise(2048, 2)).unwrap();
    fs::write(src.join("a/b/block+1.bin"), noise(2049, 3)).unwrap();
    fs::write(src.join("empty"), b"").unwrap();
    fs::write(src.join("with spaces in name.txt"), b"spaced out\n").unwrap();
    let long = long_latin1_name();
    assert!(long.chars().count() > 200 && long.len() <= 255);
    fs::write(src.join(&long), b"a long name\n").unwrap();
    fs::write(src.join("日本語のファイル名.txt"), "16-bit name\n").unwrap();
    symlink("a/b", src.join("bootlink")).unwrap();
    symlink("../../../with spaces in name.txt", src.join("a/b/c/up")).unwrap();
    symlink("/a/b/c/random.bin", src.join("abslink")).unwrap();
}

/// Builds `out` from `src` with pycdlib as a Windows-style bridge: README.TXT in the ISO9660
/// and UDF trees, everything else (directories, files, symlinks) in the UDF tree only, and
/// `label` as the UDF volume label. Returns the names in the ISO9660 root as pycdlib reads them
/// back.
pub fn pycdlib_bridge(src: &Path, out: &Path, label: &str) -> Vec<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/pycdlib_bridge.py");
    let made = output_ok(
        Command::new("/usr/bin/python3")
            .arg(&script)
            .arg(src)
            .arg(out)
            .arg(label)
            .arg(std::str::from_utf8(README).unwrap())
            .env("LC_ALL", "C.UTF-8"),
    );
    serde_json::from_slice(&made.stdout).expect("the script prints the ISO9660 root as JSON")
}

/// Whether /usr/bin/python3 can import pycdlib (apt's python3-pycdlib; a pyenv python3 first
/// on PATH may not have it). Missing under CI is a failure; elsewhere the test skips.
pub fn have_pycdlib() -> bool {
    let found = Command::new("/usr/bin/python3")
        .args(["-c", "import pycdlib"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            !super::in_ci(),
            "pycdlib for /usr/bin/python3 is required under CI=true"
        );
        eprintln!("SKIP: /usr/bin/python3 has no pycdlib (apt install python3-pycdlib)");
    }
    found
}

/// Cuts the image at `path` after its last 2048-byte block that holds anything (a disc image
/// written incrementally: its VAT), then adds `padding` blocks of zeros (a copy that read past
/// the last written block). The cut length, in bytes.
pub fn cut_after_last_block(path: &Path, padding: u64) -> u64 {
    let data = fs::read(path).unwrap();
    let end = data
        .chunks(2048)
        .rposition(|b| b.iter().any(|&x| x != 0))
        .unwrap() as u64
        + 1;
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_len((end + padding) * 2048)
        .unwrap();
    end * 2048
}
