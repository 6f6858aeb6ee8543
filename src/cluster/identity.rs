//! This node's id: the configured one, or one generated at first start and kept in the
//! data directory, so a restart of the same node (same data directory) is the same node.
//! Its records (rooms, connections, egress) carry the id, and after a crash it recovers
//! exactly those: an id that changed would leave them open until the old id is declared
//! dead.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::parse_node_id;

/// The file in the data directory that keeps a generated id.
pub const NODE_ID_FILE: &str = "node-id";

/// The configured id, else the one kept in `<data_dir>/node-id`, else a new `ND_<ULID>`
/// written there first.
pub fn resolve(configured: Option<&str>, data_dir: &Path) -> anyhow::Result<String> {
    if let Some(id) = configured {
        // Already checked with the same rule when the settings were resolved.
        return Ok(id.to_owned());
    }
    let file = data_dir.join(NODE_ID_FILE);
    match read(&file)? {
        Some(id) => Ok(id),
        None => create(data_dir, &file),
    }
}

/// The kept id, `None` when there is no file yet.
fn read(file: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(file) {
        Ok(text) => parse_node_id(text.trim()).map(Some).map_err(|reason| {
            anyhow::anyhow!(
                "the node id kept in {} is not valid ({reason}); fix or remove the file, or \
                 set --node-id",
                file.display()
            )
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read the node id in {}", file.display())),
    }
}

/// Generates an id and keeps it. Written to a file of its own, then linked into place: the
/// link fails if the file appeared meanwhile (another process on the same directory), and
/// then that id is the one.
fn create(data_dir: &Path, file: &Path) -> anyhow::Result<String> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let id = format!("ND_{}", ulid::Ulid::new());
    let staged: PathBuf = data_dir.join(format!("{NODE_ID_FILE}.{}", ulid::Ulid::new()));
    let written =
        std::fs::write(&staged, format!("{id}\n")).and_then(|()| std::fs::hard_link(&staged, file));
    let _ = std::fs::remove_file(&staged);
    match written {
        Ok(()) => Ok(id),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => read(file)?
            .with_context(|| format!("{} vanished while it was being read", file.display())),
        Err(e) => Err(e).with_context(|| format!("cannot keep the node id in {}", file.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_id_wins_and_nothing_is_written() {
        let dir = tempfile::tempdir().expect("temp dir");
        let id = resolve(Some("node-a"), dir.path()).expect("configured");
        assert_eq!(id, "node-a");
        assert!(!dir.path().join(NODE_ID_FILE).exists());
    }

    #[test]
    fn a_generated_id_is_kept_across_restarts() {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().join("data");
        let first = resolve(None, &data_dir).expect("generated");
        assert!(first.starts_with("ND_"), "{first}");
        assert_eq!(first.len(), 3 + 26, "ND_ and a ULID: {first}");
        assert_eq!(parse_node_id(&first), Ok(first.clone()));
        let kept = std::fs::read_to_string(data_dir.join(NODE_ID_FILE)).expect("kept");
        assert_eq!(kept.trim(), first);
        assert_eq!(resolve(None, &data_dir).expect("again"), first);
        // No staging files left behind.
        let files = std::fs::read_dir(&data_dir).expect("list").count();
        assert_eq!(files, 1);
    }

    #[test]
    fn another_data_directory_is_another_node() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        assert_ne!(
            resolve(None, a.path()).unwrap(),
            resolve(None, b.path()).unwrap()
        );
    }

    #[test]
    fn a_kept_id_written_by_hand_is_trimmed_and_checked() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join(NODE_ID_FILE);
        std::fs::write(&file, "  edge-1.eu \n").unwrap();
        assert_eq!(resolve(None, dir.path()).unwrap(), "edge-1.eu");
        std::fs::write(&file, "not ok/../x").unwrap();
        let err = resolve(None, dir.path()).unwrap_err().to_string();
        assert!(err.contains(&file.display().to_string()), "{err}");
        assert!(err.contains("may only contain"), "{err}");
        std::fs::write(&file, "\n").unwrap();
        let err = resolve(None, dir.path()).unwrap_err().to_string();
        assert!(err.contains("must not be empty"), "{err}");
    }
}
