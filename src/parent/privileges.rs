//! Dropping root: a server started as root (say, to listen on port 23)
//! binds its port and then serves its clients as an ordinary user.

use std::ffi::CString;
use std::io;

use nix::unistd::{Uid, User, getegid, geteuid, getgid, getuid, initgroups, setgid, setuid};

/// Becomes user `name`, with its group and supplementary groups, for good.
/// Root only (or already that user). Checked: afterwards this process
/// neither is nor can become root again.
pub(crate) fn become_user(name: &str) -> io::Result<()> {
    let user = User::from_name(name)
        .map_err(|e| io::Error::other(format!("cannot look up user '{name}': {e}")))?
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("no user named '{name}'"))
        })?;
    if !geteuid().is_root() {
        if geteuid() == user.uid {
            return Ok(());
        }
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("only root can switch to user '{name}'"),
        ));
    }
    let c_name = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a user name has no NUL"))?;
    // Groups first: once the uid is given up, they can no longer be set.
    initgroups(&c_name, user.gid)?;
    setgid(user.gid)?;
    setuid(user.uid)?;
    let dropped = getuid() == user.uid
        && geteuid() == user.uid
        && getgid() == user.gid
        && getegid() == user.gid
        && setuid(Uid::from_raw(0)).is_err();
    if !dropped {
        return Err(io::Error::other(format!(
            "could not give up root for user '{name}'"
        )));
    }
    log::info!(
        "running as user {name} (uid {}, gid {})",
        user.uid,
        user.gid
    );
    Ok(())
}

/// Says so in the log when the server runs as root without `--user`.
pub(crate) fn warn_if_root() {
    if geteuid().is_root() {
        log::warn!("running as root: every client is served by a root process (see --user)");
    }
}
