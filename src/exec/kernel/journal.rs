//! The kernel driver's journal: one line appended before each mount point is made and one
//! after it is removed, so a restart knows everything the previous run made even when it died
//! before its state file caught up (the state is written at most every 100 ms; a mount made in
//! between would otherwise be a stale mount and a leaked loop). Lines are JSON; the journal is
//! rewritten with only the live entries at start and whenever it grows past twice that.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::event::{MediumId, SourceKind};

/// Lines beyond twice the live entries tolerated before a rewrite.
const SLACK: usize = 256;

/// What was made for one name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Made {
    pub name: String,
    pub id: MediumId,
    pub source: SourceKind,
    pub origin: PathBuf,
    /// The medium's label, so the next start knows the volume it was made for (absent in
    /// journals of older versions: read as no label).
    #[serde(default)]
    pub label: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Line {
    Made(Made),
    Gone { name: String },
}

/// The journal file (see the module documentation). Write failures are logged, never fatal:
/// the state file still covers what it lists.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: Option<File>,
    lines: usize,
}

/// `state.json` -> `state.json.journal`, beside it.
pub fn journal_path(state: &Path) -> PathBuf {
    let mut name = state.file_name().unwrap_or_default().to_owned();
    name.push(".journal");
    state.with_file_name(name)
}

/// Replays journal text: the names whose last line says made. A torn or unknown line is
/// skipped.
pub fn replay(text: &[u8]) -> BTreeMap<String, Made> {
    let mut live = BTreeMap::new();
    for line in text.lines().map_while(Result::ok) {
        match serde_json::from_str::<Line>(&line) {
            Ok(Line::Made(m)) => {
                live.insert(m.name.clone(), m);
            }
            Ok(Line::Gone { name }) => {
                live.remove(&name);
            }
            Err(_) => {}
        }
    }
    live
}

impl Journal {
    pub fn new(path: PathBuf) -> Journal {
        Journal {
            path,
            file: None,
            lines: 0,
        }
    }

    /// Whether the journal file exists (then it, not the state file, says what is made).
    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    /// What the journal says is made; empty when there is no journal.
    pub fn read(&self) -> BTreeMap<String, Made> {
        match std::fs::read(&self.path) {
            Ok(text) => replay(&text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                tracing::error!(journal = %self.path.display(), error = %e, "reading the journal");
                BTreeMap::new()
            }
        }
    }

    pub fn made(&mut self, m: &Made) {
        self.append(&Line::Made(m.clone()));
    }

    pub fn gone(&mut self, name: &str) {
        self.append(&Line::Gone {
            name: name.to_owned(),
        });
    }

    /// Whether the journal has grown past twice `live` entries (plus slack).
    pub fn wants_rewrite(&self, live: usize) -> bool {
        self.lines > 2 * live + SLACK
    }

    fn append(&mut self, line: &Line) {
        let mut text = serde_json::to_vec(line).unwrap_or_default();
        text.push(b'\n');
        let res = match &mut self.file {
            Some(f) => f.write_all(&text),
            None => OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .and_then(|mut f| {
                    f.write_all(&text)?;
                    self.file = Some(f);
                    Ok(())
                }),
        };
        match res {
            Ok(()) => self.lines += 1,
            Err(e) => {
                tracing::error!(journal = %self.path.display(), error = %e, "writing the journal")
            }
        }
    }

    /// Replaces the journal atomically with one line per live entry.
    pub fn rewrite<'a>(&mut self, live: impl IntoIterator<Item = &'a Made>) {
        let tmp = self.path.with_extension("journal.tmp");
        let mut text = Vec::new();
        let mut n = 0;
        for m in live {
            text.extend(serde_json::to_vec(&Line::Made(m.clone())).unwrap_or_default());
            text.push(b'\n');
            n += 1;
        }
        let res = (|| {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&tmp, &text)?;
            std::fs::rename(&tmp, &self.path)
        })();
        self.file = None;
        match res {
            Ok(()) => self.lines = n,
            Err(e) => {
                tracing::error!(journal = %self.path.display(), error = %e, "rewriting the journal")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn made(name: &str, id: &str) -> Made {
        Made {
            name: name.into(),
            id: MediumId::new(id),
            source: SourceKind::Dir,
            origin: format!("/d/{name}.iso").into(),
            label: None,
        }
    }

    #[test]
    fn the_last_line_for_a_name_wins_and_a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::new(journal_path(&dir.path().join("state.json")));
        j.made(&made("A", "file:1:1"));
        j.made(&made("B", "file:1:2"));
        j.gone("A");
        j.made(&made("B", "file:1:3"));
        let mut text = std::fs::read(dir.path().join("state.json.journal")).unwrap();
        text.extend_from_slice(b"{\"op\":\"gone\",\"na");
        let live = replay(&text);
        assert_eq!(live.keys().collect::<Vec<_>>(), ["B"]);
        assert_eq!(live["B"].id.as_str(), "file:1:3");
        assert!(!j.wants_rewrite(0));
        j.rewrite(live.values());
        assert_eq!(j.read(), live);
        j.gone("B");
        assert!(j.read().is_empty());
    }
}
