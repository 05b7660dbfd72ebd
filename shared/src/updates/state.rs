//! What a machine (edge or cloud worker) has installed, kept in `<updates.dir>/state.json` and replaced atomically (written beside,
//! synced, renamed, directory synced), so a crash leaves either the old or the new file, never half of one.
//!
//! Before a swap the new bundle is recorded as `pending`; after it, as `active`. A machine that starts and finds
//! a `pending` bundle crashed between the two: it serves `active` (the model it served before) and drops the
//! pending one, which the next check of the target tries again from the start.

use super::UpdateError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A bundle installed under `<dir>/bundles/<sha256>/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    /// The archive's SHA-256.
    pub sha256: String,
    /// Model name.
    pub name: String,
    /// Model version.
    pub version: String,
    /// Bundle sequence.
    pub sequence: u64,
}

/// The installed bundles.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The bundle serving (unset: the configured `model.manifest` serves).
    pub active: Option<Installed>,
    /// The bundles that served before it, newest first (at most [`KEEP_PREVIOUS`]).
    pub previous: Vec<Installed>,
    /// A bundle being swapped in.
    pub pending: Option<Installed>,
}

/// Bundles kept on disk besides the one serving.
pub const KEEP_PREVIOUS: usize = 2;

impl State {
    fn path(dir: &Path) -> PathBuf {
        dir.join("state.json")
    }

    /// Reads the state in `dir` (empty when there is none yet).
    pub fn load(dir: &Path) -> Result<Self, UpdateError> {
        let path = Self::path(dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| UpdateError::State {
                path,
                problem: format!(
                    "{e}; move it aside to start over from the configured model.manifest"
                ),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(UpdateError::State {
                path,
                problem: e.to_string(),
            }),
        }
    }

    /// Replaces the state in `dir` atomically and durably.
    pub fn save(&self, dir: &Path) -> Result<(), UpdateError> {
        let path = Self::path(dir);
        let err = |e: std::io::Error| UpdateError::State {
            path: path.clone(),
            problem: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        let tmp = dir.join("state.json.tmp");
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| UpdateError::State {
            path: path.clone(),
            problem: e.to_string(),
        })?;
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(err)?;
            f.write_all(&bytes).map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, &path).map_err(err)?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
        Ok(())
    }

    /// The state after `new` became active: the active one moves to the front of `previous`.
    pub fn activated(&self, new: Installed) -> Self {
        let mut previous = self.previous.clone();
        if let Some(old) = &self.active
            && old.sha256 != new.sha256
        {
            previous.retain(|p| p.sha256 != old.sha256);
            previous.insert(0, old.clone());
        }
        previous.retain(|p| p.sha256 != new.sha256);
        previous.truncate(KEEP_PREVIOUS);
        Self {
            active: Some(new),
            previous,
            pending: None,
        }
    }

    /// The hashes of every bundle the state refers to (the ones to keep on disk).
    pub fn kept(&self) -> Vec<&str> {
        self.active
            .iter()
            .chain(self.previous.iter())
            .chain(self.pending.iter())
            .map(|i| i.sha256.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn b(sha: &str, sequence: u64) -> Installed {
        Installed {
            sha256: sha.into(),
            name: "prescreen".into(),
            version: format!("1.{sequence}"),
            sequence,
        }
    }

    #[test]
    fn activation_keeps_the_two_bundles_before_and_survives_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(State::load(dir.path()).unwrap(), State::default());
        let mut s = State::default();
        for (sha, seq) in [("a", 1), ("b", 2), ("c", 3), ("d", 4)] {
            s = s.activated(b(sha, seq));
        }
        assert_eq!(s.active.as_ref().unwrap().sha256, "d");
        let previous: Vec<_> = s.previous.iter().map(|p| p.sha256.as_str()).collect();
        assert_eq!(previous, ["c", "b"]);
        // A rollback to b: c moves behind it, nothing is duplicated.
        s = s.activated(b("b", 2));
        let previous: Vec<_> = s.previous.iter().map(|p| p.sha256.as_str()).collect();
        assert_eq!(previous, ["d", "c"]);
        s.pending = Some(b("e", 5));
        s.save(dir.path()).unwrap();
        assert_eq!(State::load(dir.path()).unwrap(), s);
        assert_eq!(s.kept(), ["b", "d", "c", "e"]);
        // A corrupt file is named, not silently replaced.
        std::fs::write(dir.path().join("state.json"), b"{not json").unwrap();
        let err = State::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("state.json") && err.contains("move it aside"),
            "{err}"
        );
    }
}
