//! The mount manager: a pure state machine. An event goes in, the actions to carry out come
//! out. It owns naming (sanitised labels, collisions, names kept across restarts), which
//! medium is served under which name, and what is persisted. No I/O, no clock (the caller
//! passes the time), no spawning: the executor runs the actions and reports back as events.

pub mod state;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use crate::event::{Event, Medium, MediumId, SourceKind};
use crate::names;

pub use state::{save_json, MediumRecord, RecordRef, StateDoc, StateFile};

/// What the executor must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Serve `medium` under `name` (FUSE: add to the map; kernel: mkdir, attach, mount).
    Publish { name: String, medium: Medium },
    /// Stop serving `name` and remove everything made for it.
    Unpublish { name: String, id: MediumId },
    /// The persisted state changed: write it (atomically) and the index file.
    SaveState,
    /// Open the tray of the drive at `device` (door unlocked, CDROMEJECT); `name` is what the
    /// medium was served under, if it was, so the executor can name processes still reading
    /// from it.
    Eject {
        device: PathBuf,
        name: Option<String>,
    },
}

/// Where a known medium stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Publish was asked for; no outcome yet.
    Publishing,
    /// Served under its name since this time (Unix seconds), through this loop device (kernel
    /// driver).
    Published {
        since: i64,
        loop_device: Option<PathBuf>,
    },
    /// Publishing failed; not served until the medium changes.
    Failed { error: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Known {
    medium: Medium,
    /// The name while publishing or published; `None` after a failure.
    name: Option<String>,
    phase: Phase,
}

/// The state machine. See the module documentation.
#[derive(Clone, Debug, Default)]
pub struct Manager {
    /// Boxed: a node of the tree holds up to eleven entries and is often half full, and a
    /// `Known` is some 200 bytes (with 10,000 media, 1.5 MiB of empty slots unboxed).
    media: BTreeMap<MediumId, Box<Known>>,
    /// Name -> holder, for every name in use.
    names: HashMap<String, MediumId>,
    /// Names held by media of the previous run (with the label each had), until that medium
    /// returns or its source has finished its first scan.
    reserved: HashMap<MediumId, (String, SourceKind, Option<String>)>,
    /// The names in `reserved`, for constant-time checks.
    reserved_names: HashSet<String>,
    /// Media whose name would be one still held for a medium of the previous run that has
    /// not come back yet: named once it does (and keeps its name, or turns out to have
    /// another label) or its source's first scan ends without it. So a medium gets `NAME`, not
    /// `NAME-2`, when the previous holder of `NAME` comes back as another volume.
    pending: Vec<Medium>,
    /// Root entries isomgr did not make.
    foreign: HashSet<String>,
    /// Where the search for a free `base-N` starts; told of every name that comes free.
    hints: names::Suffixes,
}

impl Manager {
    /// A manager that remembers the names of the previous run's media.
    pub fn new(previous: &[MediumRecord]) -> Self {
        let mut m = Manager::default();
        for r in previous {
            if !m.reserved_names.insert(r.name.clone()) {
                continue;
            }
            m.reserved
                .insert(r.id.clone(), (r.name.clone(), r.source, r.label.clone()));
        }
        m
    }

    /// Applies one event; returns the actions to run, in order. `now` is Unix seconds.
    pub fn apply(&mut self, now: i64, ev: Event) -> Vec<Action> {
        match ev {
            Event::Appeared(medium) => self.appeared(medium),
            Event::Moved { id, origin } => self.moved(&id, origin),
            Event::Vanished(id) => self.vanished(&id),
            Event::ScanDone { source, present } => self.scan_done(source, &present),
            Event::Published {
                id,
                name,
                loop_device,
            } => self.published(now, &id, &name, loop_device),
            Event::Failed { id, name, error } => self.failed(&id, &name, error),
            Event::ForeignEntries(entries) => {
                self.foreign = entries.into_iter().collect();
                // Any name may have come free.
                self.hints.clear();
                Vec::new()
            }
            Event::EjectRequested { id, device } => {
                // Unpublish first, so nothing isomgr serves holds the disc when the tray opens.
                let name = self.name_of(&id).map(str::to_owned);
                let mut actions = self.vanished(&id);
                actions.push(Action::Eject { device, name });
                actions
            }
        }
    }

    fn appeared(&mut self, medium: Medium) -> Vec<Action> {
        let mut actions = Vec::new();
        // (a newer look at a waiting medium replaces the older one)
        self.pending.retain(|p| p.id != medium.id);
        if let Some(k) = self.media.get_mut(&medium.id) {
            let same = k.medium.label == medium.label && k.medium.fallback == medium.fallback;
            match (&k.phase, same) {
                // Already served as it is: at most the path changed.
                (Phase::Publishing | Phase::Published { .. }, true) => {
                    if k.medium.origin != medium.origin {
                        k.medium.origin = medium.origin;
                        return vec![Action::SaveState];
                    }
                    return Vec::new();
                }
                // Changed in place, or failed before: start over.
                _ => actions.extend(self.vanished(&medium.id)),
            }
        }
        let reserved = self.reserved.remove(&medium.id).map(|(name, _, label)| {
            self.reserved_names.remove(&name);
            self.hints.freed(&name);
            (name, label)
        });
        let released = reserved.is_some();
        let name = match reserved {
            Some((name, label)) if label == medium.label && !self.is_taken(&name) => name,
            other => {
                if let Some((old, label)) = other.filter(|(_, l)| *l != medium.label) {
                    // Another volume under the same identity (an image rewritten in place
                    // while isomgr was stopped, say): what the previous run made for the
                    // old one goes, and the new one is named after its own label.
                    tracing::debug!(name = %old, was = ?label, now = ?medium.label, "the previous run's medium has another label now");
                    actions.push(Action::Unpublish {
                        name: old,
                        id: medium.id.clone(),
                    });
                }
                let base = names::base_name(medium.label.as_deref(), &medium.fallback);
                if self.reserved_names.contains(&base) {
                    // held for a medium of the previous run that has not come back yet
                    self.pending.push(medium);
                    if released {
                        actions.extend(self.retry_pending());
                    }
                    return actions;
                }
                let mut hints = std::mem::take(&mut self.hints);
                let name = hints.first_free(&base, |c| self.is_taken(c));
                self.hints = hints;
                name
            }
        };
        self.names.insert(name.clone(), medium.id.clone());
        // The open descriptor goes to the executor only: the manager keeps plain data, so the
        // driver ends up holding the one descriptor per medium.
        let kept = Medium {
            handle: None,
            ..medium.clone()
        };
        self.media.insert(
            medium.id.clone(),
            Box::new(Known {
                medium: kept,
                name: Some(name.clone()),
                phase: Phase::Publishing,
            }),
        );
        actions.push(Action::Publish { name, medium });
        if released {
            actions.extend(self.retry_pending());
        }
        actions
    }

    /// The waiting media, looked at again now that a reservation went.
    fn retry_pending(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        for m in std::mem::take(&mut self.pending) {
            actions.extend(self.appeared(m));
        }
        actions
    }

    fn is_taken(&self, name: &str) -> bool {
        self.names.contains_key(name)
            || self.foreign.contains(name)
            || self.reserved_names.contains(name)
    }

    fn moved(&mut self, id: &MediumId, origin: PathBuf) -> Vec<Action> {
        if let Some(p) = self.pending.iter_mut().find(|p| &p.id == id) {
            p.origin = origin.clone();
        }
        match self.media.get_mut(id) {
            Some(k) if k.medium.origin != origin => {
                k.medium.origin = origin;
                vec![Action::SaveState]
            }
            _ => Vec::new(),
        }
    }

    fn vanished(&mut self, id: &MediumId) -> Vec<Action> {
        self.pending.retain(|p| &p.id != id);
        let Some(k) = self.media.remove(id) else {
            return Vec::new();
        };
        match k.name {
            Some(name) => {
                self.names.remove(&name);
                self.hints.freed(&name);
                vec![
                    Action::Unpublish {
                        name,
                        id: id.clone(),
                    },
                    Action::SaveState,
                ]
            }
            None => vec![Action::SaveState],
        }
    }

    fn scan_done(&mut self, source: SourceKind, present: &[MediumId]) -> Vec<Action> {
        let present: HashSet<&MediumId> = present.iter().collect();
        let gone: Vec<MediumId> = self
            .media
            .iter()
            .filter(|(id, k)| k.medium.source == source && !present.contains(id))
            .map(|(id, _)| id.clone())
            .collect();
        self.pending
            .retain(|p| p.source != source || present.contains(&p.id));
        let mut actions = Vec::new();
        for id in gone {
            actions.extend(self.vanished(&id));
        }
        // The previous run's media of this source that did not come back: their names are
        // free again, and whatever was made for them goes.
        let stale: Vec<MediumId> = self
            .reserved
            .iter()
            .filter(|(_, (_, s, _))| *s == source)
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            if let Some((name, ..)) = self.reserved.remove(&id) {
                self.reserved_names.remove(&name);
                self.hints.freed(&name);
                actions.push(Action::Unpublish { name, id });
            }
        }
        actions.extend(self.retry_pending());
        if !actions.is_empty() && !actions.contains(&Action::SaveState) {
            actions.push(Action::SaveState);
        }
        actions
    }

    fn published(
        &mut self,
        now: i64,
        id: &MediumId,
        name: &str,
        loop_device: Option<PathBuf>,
    ) -> Vec<Action> {
        match self.media.get_mut(id) {
            Some(k) if k.name.as_deref() == Some(name) => {
                k.phase = Phase::Published {
                    since: now,
                    loop_device,
                };
                vec![Action::SaveState]
            }
            // A stale outcome (the medium went meanwhile): undo what was made.
            _ => vec![Action::Unpublish {
                name: name.to_owned(),
                id: id.clone(),
            }],
        }
    }

    fn failed(&mut self, id: &MediumId, name: &str, error: String) -> Vec<Action> {
        match self.media.get_mut(id) {
            Some(k) if k.name.as_deref() == Some(name) => {
                k.name = None;
                k.phase = Phase::Failed { error };
                self.names.remove(name);
                self.hints.freed(name);
                vec![Action::SaveState]
            }
            _ => Vec::new(),
        }
    }

    /// The name a medium is served (or being published) under.
    pub fn name_of(&self, id: &MediumId) -> Option<&str> {
        self.media.get(id).and_then(|k| k.name.as_deref())
    }

    /// A known medium (without its descriptor, which went to the executor).
    pub fn medium(&self, id: &MediumId) -> Option<&Medium> {
        self.media.get(id).map(|k| &k.medium)
    }

    /// Where a medium stands.
    pub fn phase_of(&self, id: &MediumId) -> Option<&Phase> {
        self.media.get(id).map(|k| &k.phase)
    }

    /// The medium a source knows by `origin`, if any.
    pub fn id_at(&self, origin: &std::path::Path) -> Option<&MediumId> {
        self.media
            .iter()
            .find(|(_, k)| k.medium.origin == origin)
            .map(|(id, _)| id)
    }

    /// What is served, for the state file, `status` and the index file: published media only,
    /// by name.
    pub fn records(&self) -> Vec<MediumRecord> {
        self.record_refs().iter().map(RecordRef::to_owned).collect()
    }

    /// [`Self::records`], borrowed (what the daemon writes).
    pub fn record_refs(&self) -> Vec<RecordRef<'_>> {
        let mut out: Vec<RecordRef<'_>> = self
            .media
            .values()
            .filter_map(|k| match (&k.name, &k.phase) {
                (Some(name), Phase::Published { since, loop_device }) => Some(RecordRef {
                    id: &k.medium.id,
                    name,
                    label: k.medium.label.as_deref(),
                    source: k.medium.source,
                    origin: &k.medium.origin,
                    since: *since,
                    loop_device: loop_device.as_deref(),
                }),
                _ => None,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(b.name));
        out
    }
}

#[cfg(test)]
mod tests;
