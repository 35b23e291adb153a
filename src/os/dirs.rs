//! Private directories: where the server's runtime directories may go, and
//! one way to make a directory mode 0700 that says what an existing one
//! must be.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Where the server's private runtime directories (the hub's socket, the
/// admin socket) may go, in the order they are tried: `$XDG_RUNTIME_DIR`,
/// `/run/mpchat` (the systemd unit's runtime directory), then the
/// temporary directory. Only those that exist.
pub(crate) fn runtime_bases() -> Vec<PathBuf> {
    let mut bases: Vec<PathBuf> = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    bases.push(PathBuf::from("/run/mpchat"));
    bases.push(std::env::temp_dir());
    bases.retain(|b| b.is_dir());
    bases.dedup();
    bases
}

/// What [`private_dir`] does when the directory is already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IfExists {
    /// Fails with `AlreadyExists`: the caller wants a fresh one (a name
    /// it picked in a shared directory such as /tmp).
    Fail,
    /// Takes it only if it is a directory of this user's that nobody else
    /// may enter; anything else (someone else's, in /tmp) is refused.
    MustBePrivate,
    /// Takes it as it is, and creates missing parents (0700 too): a
    /// directory the operator named and may have prepared, like the data
    /// directory, whose mode is theirs to choose.
    Take,
}

/// Creates `dir` mode 0700, or takes an existing one as `if_exists` says.
pub(crate) fn private_dir(dir: &Path, if_exists: IfExists) -> io::Result<()> {
    let created = std::fs::DirBuilder::new()
        .recursive(if_exists == IfExists::Take)
        .mode(0o700)
        .create(dir);
    match (created, if_exists) {
        (Err(e), IfExists::MustBePrivate) if e.kind() == io::ErrorKind::AlreadyExists => {
            is_private(dir)
        }
        (result, _) => result,
    }
}

fn is_private(dir: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(dir)?;
    let uid = nix::unistd::getuid().as_raw();
    if meta.is_dir() && meta.uid() == uid && meta.mode() & 0o077 == 0 {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} is not a private directory of ours", dir.display()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mpchat-dirs-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn mode(dir: &Path) -> u32 {
        std::fs::metadata(dir).unwrap().mode() & 0o777
    }

    #[test]
    fn a_new_directory_is_0700_whatever_is_asked() {
        for (n, how) in [IfExists::Fail, IfExists::MustBePrivate, IfExists::Take]
            .into_iter()
            .enumerate()
        {
            let dir = scratch(&format!("new{n}"));
            private_dir(&dir, how).unwrap();
            assert_eq!(mode(&dir), 0o700, "{how:?}");
            std::fs::remove_dir(&dir).unwrap();
        }
    }

    #[test]
    fn an_existing_directory_is_taken_as_asked() {
        let dir = scratch("open");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = private_dir(&dir, IfExists::Fail).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        let e = private_dir(&dir, IfExists::MustBePrivate).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert!(e.to_string().contains("not a private directory"), "{e}");
        private_dir(&dir, IfExists::Take).unwrap();
        assert_eq!(mode(&dir), 0o755, "the operator's mode is kept");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        private_dir(&dir, IfExists::MustBePrivate).unwrap();
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn take_creates_missing_parents_and_must_be_private_refuses_a_file() {
        let top = scratch("parents");
        let dir = top.join("a").join("b");
        private_dir(&dir, IfExists::Take).unwrap();
        assert_eq!(mode(&top.join("a")), 0o700);
        let file = top.join("file");
        std::fs::write(&file, b"").unwrap();
        let e = private_dir(&file, IfExists::MustBePrivate).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        std::fs::remove_dir_all(&top).unwrap();
    }
}
