//! Exclusive use of a directory by one process: an advisory `flock` on a file
//! inside it, released by the kernel when the process exits, even on kill -9.

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use crate::error::{Error, Result};

/// Held for as long as the lock should last.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Locks `dir/lock_name`, or says who holds it (`what` names the user, e.g. "a coordinator").
pub fn lock_dir(dir: &Path, lock_name: &str, what: &str) -> Result<DirLock> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    let path = dir.join(lock_name);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    // SAFETY: flock on a file descriptor we own; no memory is shared.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    if !locked {
        return Err(Error::Conflict(format!(
            "{} is in use by another Flotilla process ({what} holds {}); stop it or use another directory",
            dir.display(),
            path.display()
        )));
    }
    Ok(DirLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_dir(dir.path(), ".lock", "a test").unwrap();
        // flock locks belong to open file descriptions: a second open conflicts even in one process.
        let error = lock_dir(dir.path(), ".lock", "a test")
            .unwrap_err()
            .to_string();
        assert!(error.contains("in use"), "{error}");
        drop(first);
        lock_dir(dir.path(), ".lock", "a test").unwrap();
    }
}
