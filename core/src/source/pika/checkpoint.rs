//! The replica's progress in `work_dir/checkpoint.json`, written atomically (temp file,
//! fsync, rename, fsync of the directory) so a crash leaves either the old or the new
//! one. It says, for each database of the master, how far the sinks have taken its data,
//! and so where a restart resumes it: the dump still being received, the dump received
//! and being loaded, or the binlog from a position. A file of a single-database version
//! (one stage, no `dbs`) reads as db0's.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::ReplicaError;
use crate::event::BinlogOffset;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "snake_case")]
pub enum Stage {
    /// A full sync was asked for; nothing of it reached the sinks yet.
    Transfer,
    /// The dump (taken at `dump_at`) is complete on disk and being sent to the sinks.
    Load { dump_at: BinlogOffset },
    /// The sinks hold the master's data up to `at`; the binlog follows from there.
    Stream { at: BinlogOffset },
}

impl Stage {
    /// Whether sinks may already hold data of a full sync.
    pub fn has_loaded(&self) -> bool {
        !matches!(self, Stage::Transfer)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Stored")]
pub struct Checkpoint {
    /// The master this work_dir follows; another master's checkpoint is refused.
    pub master: String,
    /// Each database's stage; a database not listed has not started.
    pub dbs: BTreeMap<u32, Stage>,
}

/// What the file may hold: today's form, or a single-database one's.
#[derive(Deserialize)]
#[serde(untagged)]
enum Stored {
    ByDb {
        master: String,
        // Keys as text: an untagged enum buffers the JSON, and numbers are then not
        // read from a map key's string.
        dbs: BTreeMap<String, Stage>,
    },
    Single {
        master: String,
        #[serde(flatten)]
        stage: Stage,
    },
}

impl TryFrom<Stored> for Checkpoint {
    type Error = String;

    fn try_from(s: Stored) -> Result<Checkpoint, String> {
        Ok(match s {
            Stored::ByDb { master, dbs } => Checkpoint {
                master,
                dbs: dbs
                    .into_iter()
                    .map(|(db, stage)| {
                        let db = db
                            .parse()
                            .map_err(|_| format!("database {db:?} is not a number"))?;
                        Ok((db, stage))
                    })
                    .collect::<Result<_, String>>()?,
            },
            Stored::Single { master, stage } => Checkpoint {
                master,
                dbs: BTreeMap::from([(0, stage)]),
            },
        })
    }
}

/// The checkpoint of a run, shared by its databases' replicas: each saves its own stage,
/// one write at a time, so no write carries another database's stage back in time.
#[derive(Debug)]
pub struct CheckpointStore {
    file: CheckpointFile,
    current: tokio::sync::Mutex<Checkpoint>,
}

impl CheckpointStore {
    pub fn new(file: CheckpointFile, current: Checkpoint) -> CheckpointStore {
        CheckpointStore {
            file,
            current: tokio::sync::Mutex::new(current),
        }
    }

    pub async fn stage(&self, db: u32) -> Option<Stage> {
        self.current.lock().await.dbs.get(&db).cloned()
    }

    pub async fn snapshot(&self) -> Checkpoint {
        self.current.lock().await.clone()
    }

    /// Records `stage` for `db` and writes the file (on a blocking thread: a slow disk
    /// must not stall the replication link). A stage the file already holds is not
    /// written again (a full sync asked for again after a full disk needs no room).
    pub async fn save(&self, db: u32, stage: Stage) -> Result<(), ReplicaError> {
        let mut current = self.current.lock().await;
        // Every stage held was read from the file or written to it.
        if current.dbs.get(&db) == Some(&stage) {
            return Ok(());
        }
        let mut next = current.clone();
        next.dbs.insert(db, stage);
        let (file, saved) = (self.file.clone(), next.clone());
        tokio::task::spawn_blocking(move || file.save(&saved))
            .await
            .map_err(|e| ReplicaError::Transient(format!("checkpoint task: {e}")))??;
        *current = next;
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct CheckpointFile {
    path: PathBuf,
}

impl CheckpointFile {
    pub fn new(work_dir: &Path) -> CheckpointFile {
        CheckpointFile {
            path: work_dir.join("checkpoint.json"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn load(&self) -> Result<Option<Checkpoint>, ReplicaError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ReplicaError::io(&self.path, e)),
        };
        serde_json::from_str(&text).map(Some).map_err(|e| {
            ReplicaError::Config(format!(
                "{}: unreadable checkpoint ({e}); move it away only if you know where the sinks stand",
                self.path.display()
            ))
        })
    }

    pub fn save(&self, checkpoint: &Checkpoint) -> Result<(), ReplicaError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let tmp = self.path.with_extension("json.tmp");
        let io = |e| ReplicaError::io(&tmp, e);
        let text = serde_json::to_vec(checkpoint)
            .map_err(|e| ReplicaError::Config(format!("checkpoint: {e}")))?;
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        file.write_all(&text).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(|e| ReplicaError::io(&self.path, e))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| ReplicaError::io(dir, e))
    }

    pub fn remove(&self) -> Result<(), ReplicaError> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(ReplicaError::io(&self.path, e))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads_every_stage() {
        let dir = tempfile::tempdir().unwrap();
        let file = CheckpointFile::new(dir.path());
        assert_eq!(file.load().unwrap(), None);
        for stage in [
            Stage::Transfer,
            Stage::Load {
                dump_at: BinlogOffset::new(1, 507340),
            },
            Stage::Stream {
                at: BinlogOffset::new(2, 84),
            },
        ] {
            let c = Checkpoint {
                master: "127.0.0.1:9221".into(),
                dbs: BTreeMap::from([(0, stage.clone()), (2, stage)]),
            };
            file.save(&c).unwrap();
            assert_eq!(file.load().unwrap(), Some(c));
        }
        let text = std::fs::read_to_string(file.path()).unwrap();
        assert!(text.contains(r#""stage":"stream""#), "{text}");
        file.remove().unwrap();
        assert_eq!(file.load().unwrap(), None);
    }

    #[tokio::test]
    async fn a_stage_already_held_is_not_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let file = CheckpointFile::new(dir.path());
        let store = CheckpointStore::new(
            file.clone(),
            Checkpoint {
                master: "127.0.0.1:9221".into(),
                dbs: BTreeMap::new(),
            },
        );
        store.save(0, Stage::Transfer).await.unwrap();
        assert!(file.path().exists());
        // On a full disk no write could succeed: the same stage asks for none.
        std::fs::remove_file(file.path()).unwrap();
        store.save(0, Stage::Transfer).await.unwrap();
        assert!(!file.path().exists(), "written again");
        let loaded = Stage::Load {
            dump_at: BinlogOffset::new(1, 2),
        };
        store.save(0, loaded.clone()).await.unwrap();
        assert_eq!(file.load().unwrap().unwrap().dbs[&0], loaded);
    }

    #[test]
    fn a_single_database_checkpoint_reads_as_db0s() {
        let dir = tempfile::tempdir().unwrap();
        let file = CheckpointFile::new(dir.path());
        std::fs::write(
            file.path(),
            r#"{"master":"127.0.0.1:9221","stage":"stream","at":{"filenum":2,"offset":84}}"#,
        )
        .unwrap();
        let c = file.load().unwrap().unwrap();
        assert_eq!(c.master, "127.0.0.1:9221");
        assert_eq!(
            c.dbs,
            BTreeMap::from([(
                0,
                Stage::Stream {
                    at: BinlogOffset::new(2, 84)
                }
            )])
        );
    }

    #[test]
    fn a_damaged_checkpoint_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        let file = CheckpointFile::new(dir.path());
        std::fs::write(file.path(), "{not json").unwrap();
        let e = file.load().unwrap_err().to_string();
        assert!(e.contains("checkpoint.json"), "{e}");
    }
}
