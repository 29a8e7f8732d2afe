//! The persisted state (`/run/isomgr/state.json`) and the status / index document: which
//! medium holds which name, and what isomgr made for it. One JSON shape serves all three
//! (`isomgr status --json` prints it, `--index-file` receives it).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::event::{MediumId, SourceKind};
use crate::iso9660::ondisk::civil_from_days;

/// One served medium.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediumRecord {
    pub name: String,
    pub label: Option<String>,
    pub source: SourceKind,
    pub origin: PathBuf,
    pub mounted_at: String,
    /// The loop device the kernel driver attached, or null.
    #[serde(rename = "loop")]
    pub loop_device: Option<String>,
    /// Identity, so a restart gives the same medium the same name.
    pub id: MediumId,
    pub mounted_at_unix: i64,
}

/// The whole document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFile {
    pub root: PathBuf,
    pub driver: String,
    pub pid: u32,
    pub media: Vec<MediumRecord>,
}

impl StateFile {
    /// Reads a state file; a missing file is `Ok(None)`.
    pub fn load(path: &Path) -> anyhow::Result<Option<StateFile>> {
        use anyhow::Context;
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .with_context(|| format!("{}: not a valid isomgr state file", path.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes the document atomically (see [`save_json`]).
    pub fn save(&self, path: &Path) -> io::Result<()> {
        save_json(self, path)
    }
}

/// The document as the daemon writes it, borrowed from the manager: with thousands of media a
/// copy of every record would be megabytes allocated and freed on each save (and the freed
/// small pieces fragment the heap).
#[derive(Serialize)]
pub struct StateDoc<'a> {
    pub root: &'a Path,
    pub driver: &'a str,
    pub pid: u32,
    pub media: Vec<RecordRef<'a>>,
}

/// One served medium, borrowed; serialized exactly as [`MediumRecord`].
#[derive(Clone, Copy, Debug)]
pub struct RecordRef<'a> {
    pub name: &'a str,
    pub label: Option<&'a str>,
    pub source: SourceKind,
    pub origin: &'a Path,
    pub since: i64,
    pub loop_device: Option<&'a Path>,
    pub id: &'a MediumId,
}

impl RecordRef<'_> {
    pub fn to_owned(&self) -> MediumRecord {
        MediumRecord {
            name: self.name.to_owned(),
            label: self.label.map(str::to_owned),
            source: self.source,
            origin: self.origin.to_path_buf(),
            mounted_at: rfc3339(self.since),
            loop_device: self.loop_device.map(|p| p.display().to_string()),
            id: self.id.clone(),
            mounted_at_unix: self.since,
        }
    }
}

impl Serialize for RecordRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("MediumRecord", 8)?;
        st.serialize_field("name", self.name)?;
        st.serialize_field("label", &self.label)?;
        st.serialize_field("source", &self.source)?;
        st.serialize_field("origin", self.origin)?;
        st.serialize_field("mounted_at", &rfc3339(self.since))?;
        st.serialize_field("loop", &self.loop_device.map(|p| p.display().to_string()))?;
        st.serialize_field("id", self.id)?;
        st.serialize_field("mounted_at_unix", &self.since)?;
        st.end()
    }
}

/// Writes a document atomically: a temporary file in the same directory, fsync, rename.
/// Readers see the old document or the new one, never a mix.
pub fn save_json(doc: &impl Serialize, path: &Path) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state"),
        std::process::id()
    ));
    // Streamed: with thousands of media the document is megabytes; no copy of it is kept.
    let mut w = io::BufWriter::new(std::fs::File::create(&tmp)?);
    serde_json::to_writer_pretty(&mut w, doc).map_err(io::Error::other)?;
    w.write_all(b"\n")?;
    let f = w.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    crate::crashpoint::reached("before-state-rename");
    std::fs::rename(&tmp, path)?;
    crate::crashpoint::reached("after-state-rename");
    Ok(())
}

/// RFC 3339 in UTC ("2026-11-22T03:38:00Z") for Unix seconds.
pub fn rfc3339(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn save_then_load_round_trips_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let doc = StateFile {
            root: "/srv/isos".into(),
            driver: "fuse".into(),
            pid: 42,
            media: vec![MediumRecord {
                name: "A".into(),
                label: Some("A".into()),
                source: SourceKind::Dir,
                origin: "/srv/iso-drop/a.iso".into(),
                mounted_at: rfc3339(5),
                loop_device: None,
                id: MediumId("file:1:2".into()),
                mounted_at_unix: 5,
            }],
        };
        doc.save(&path).unwrap();
        assert_eq!(StateFile::load(&path).unwrap(), Some(doc));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(StateFile::load(&dir.path().join("none")).unwrap(), None);
    }
}
