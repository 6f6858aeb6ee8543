//! An egress's output directory, reached without following symbolic links below the egress
//! root, and the files it creates there.
//!
//! The directory is walked one component at a time from the root with `openat(O_NOFOLLOW)`
//! (creating what is missing with `mkdirat`), and files are created relative to the
//! directory's descriptor with `O_CREAT | O_EXCL | O_NOFOLLOW`. Checking a path first and
//! opening it afterwards (canonicalize-and-check) would leave a window in which a component
//! can be swapped for a link; working from descriptors leaves none: once a directory is open,
//! renaming or replacing its path no longer changes where the egress writes. `O_EXCL` also
//! refuses a link (or any file) already sitting at a file's name, so a planted link cannot
//! redirect a recording either.
//!
//! The root itself is the operator's setting and is opened as given: if it is a link, the
//! operator made it one.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{mkdirat, openat, unlinkat, AtFlags, Mode, OFlags, CWD};
use rustix::io::Errno;

use crate::EgressError;

/// An open output directory (shared by the recorders of one egress).
#[derive(Debug, Clone)]
pub(crate) struct OutDir {
    fd: Arc<OwnedFd>,
    /// Where it is, for messages and for the files' reported paths.
    path: PathBuf,
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC
}

impl OutDir {
    /// Opens `root/subdir`, creating missing directories; a component of `subdir` that is a
    /// symbolic link (or not a plain name) fails the egress before anything is written.
    pub fn open(root: &Path, subdir: &Path) -> Result<OutDir, EgressError> {
        let path = root.join(subdir);
        let unwritable = |reason: String| EgressError::Unwritable {
            path: path.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(root).map_err(|e| unwritable(e.to_string()))?;
        let mut fd = openat(CWD, root, dir_flags(), Mode::empty())
            .map_err(|e| unwritable(io::Error::from(e).to_string()))?;
        for component in subdir.components() {
            let name = match component {
                Component::Normal(name) => name,
                Component::CurDir => continue,
                other => {
                    return Err(unwritable(format!(
                        "{other:?} is not allowed in an output directory below the egress root"
                    )))
                }
            };
            match mkdirat(&fd, name, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(unwritable(io::Error::from(e).to_string())),
            }
            fd = openat(&fd, name, dir_flags() | OFlags::NOFOLLOW, Mode::empty()).map_err(|e| {
                match e {
                    // Linux says ELOOP for a link under O_NOFOLLOW; some systems ENOTDIR.
                    Errno::LOOP | Errno::NOTDIR => unwritable(format!(
                        "{:?} is a symbolic link or not a directory; egress does not follow \
                         links below its directory",
                        name.to_string_lossy()
                    )),
                    other => unwritable(io::Error::from(other).to_string()),
                }
            })?;
        }
        Ok(OutDir {
            fd: Arc::new(fd),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the new file `name` (a plain name from naming.rs) in this directory. An
    /// existing entry of that name, link or not, is an error rather than followed or
    /// overwritten.
    pub fn create(&self, name: &OsStr) -> io::Result<File> {
        if Path::new(name).components().count() != 1 || name.to_string_lossy().contains('/') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name:?} is not a plain file name"),
            ));
        }
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = openat(&*self.fd, name, flags, Mode::from_raw_mode(0o644))?;
        Ok(File::from(fd))
    }

    /// Checks that a file can be created here, so a bad directory fails the egress at once
    /// rather than at its first frame.
    pub fn probe(&self, unique: &str) -> Result<(), EgressError> {
        let name = format!(".switchboard-probe-{unique}");
        let unwritable = |e: io::Error| EgressError::Unwritable {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        };
        drop(self.create(OsStr::new(&name)).map_err(unwritable)?);
        let _ = unlinkat(&*self.fd, name.as_str(), AtFlags::empty());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn directories_are_created_and_files_land_inside() {
        let root = tempfile::tempdir().expect("temp dir");
        let dir = OutDir::open(root.path(), Path::new("a/b")).expect("open");
        dir.probe("t").expect("writable");
        let mut file = dir.create(OsStr::new("x.webm")).expect("create");
        file.write_all(b"data").expect("write");
        assert_eq!(
            std::fs::read(root.path().join("a/b/x.webm")).expect("read"),
            b"data"
        );
        // Never over an existing file.
        assert!(dir.create(OsStr::new("x.webm")).is_err());
        assert!(dir.create(OsStr::new("../y")).is_err());
        assert_eq!(
            std::fs::read_dir(root.path().join("a/b")).unwrap().count(),
            1,
            "the probe is gone"
        );
    }

    #[test]
    fn links_below_the_root_are_not_followed() {
        let root = tempfile::tempdir().expect("temp dir");
        let outside = tempfile::tempdir().expect("outside");
        std::os::unix::fs::symlink(outside.path(), root.path().join("escape")).expect("link");
        let err = OutDir::open(root.path(), Path::new("escape/deeper")).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        // A link planted at a file's name is not written through.
        let dir = OutDir::open(root.path(), Path::new("")).expect("root");
        let target = outside.path().join("victim");
        std::os::unix::fs::symlink(&target, root.path().join("rec.webm")).expect("link");
        assert!(dir.create(OsStr::new("rec.webm")).is_err());
        assert!(!target.exists());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }
}
