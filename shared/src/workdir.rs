//! Experiment working directories, content-addressed so that workers which
//! lack one (or have a different copy) fetch it once and cache it by hash.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::hex;
use crate::error::{Error, Result};

/// Bundles larger than this are refused at submission: a workdir holds the
/// scenario's code and small inputs, not data sets.
pub const MAX_BUNDLE_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct BundleFile {
    /// Relative, '/'-separated.
    pub path: String,
    pub content: Vec<u8>,
    pub executable: bool,
}

/// Reads a directory into a bundle: regular files below it, sorted by path.
/// Hidden entries (`.git`, `.venv`, ...) and the directories in `exclude` (such
/// as an experiments root inside the workdir) are left out; so are symlinks.
pub fn read_bundle(root: &Path, exclude: &[PathBuf]) -> Result<(String, Vec<BundleFile>)> {
    let mut files = Vec::new();
    let mut total: u64 = 0;
    let canonical_excludes: Vec<PathBuf> = exclude
        .iter()
        .filter_map(|p| p.canonicalize().ok())
        .collect();
    collect(root, root, &canonical_excludes, &mut files, &mut total)?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((bundle_hash(&files), files))
}

fn collect(
    root: &Path,
    dir: &Path,
    exclude: &[PathBuf],
    out: &mut Vec<BundleFile>,
    total: &mut u64,
) -> Result<()> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::io(format!("cannot read workdir {}", dir.display()), e))?;
    for entry in entries {
        let entry =
            entry.map_err(|e| Error::io(format!("cannot read workdir {}", dir.display()), e))?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let file_type = entry
            .file_type()
            .map_err(|e| Error::io(format!("cannot stat {}", path.display()), e))?;
        if file_type.is_dir() {
            if path.canonicalize().is_ok_and(|c| exclude.contains(&c)) {
                continue;
            }
            collect(root, &path, exclude, out, total)?;
        } else if file_type.is_file() {
            let content = std::fs::read(&path)
                .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
            *total += content.len() as u64;
            if *total > MAX_BUNDLE_BYTES {
                return Err(Error::InvalidInput(format!(
                    "workdir {} holds more than {} MiB of files; keep the scenario's code in it and load large data from a path every worker can read",
                    root.display(),
                    MAX_BUNDLE_BYTES / (1024 * 1024)
                )));
            }
            let executable = is_executable(&entry);
            let relative = path.strip_prefix(root).expect("walked below root");
            let relative: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.push(BundleFile {
                path: relative.join("/"),
                content,
                executable,
            });
        }
    }
    Ok(())
}

fn is_executable(entry: &std::fs::DirEntry) -> bool {
    use std::os::unix::fs::PermissionsExt;
    entry
        .metadata()
        .map(|m| m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// SHA-256 of some bytes, hex-encoded: the name of content-addressed files.
pub fn content_hash(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Hash of sorted files: path, executable bit, length and content of each.
pub fn bundle_hash(files: &[BundleFile]) -> String {
    let mut hasher = Sha256::new();
    for file in files {
        hasher.update(file.path.as_bytes());
        hasher.update([0, u8::from(file.executable)]);
        hasher.update((file.content.len() as u64).to_le_bytes());
        hasher.update(&file.content);
    }
    hex(&hasher.finalize())
}

/// Writes a bundle into `destination`, which must not exist yet: it is
/// assembled in a sibling temp directory and renamed into place, so a crash
/// never leaves a half-written cache entry.
pub fn unpack_bundle(files: &[BundleFile], destination: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let parent = destination
        .parent()
        .ok_or_else(|| Error::Internal("cache path has no parent".into()))?;
    std::fs::create_dir_all(parent)
        .map_err(|e| Error::io(format!("cannot create {}", parent.display()), e))?;
    let staging = parent.join(format!(
        ".staging-{}-{}",
        std::process::id(),
        destination
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
    ));
    let _ = std::fs::remove_dir_all(&staging);
    for file in files {
        let relative = Path::new(&file.path);
        if relative.is_absolute()
            || relative
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(Error::Protocol(format!(
                "workdir bundle holds an unsafe path '{}'",
                file.path
            )));
        }
        let target = staging.join(relative);
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        }
        std::fs::write(&target, &file.content)
            .map_err(|e| Error::io(format!("cannot write {}", target.display()), e))?;
        if file.executable {
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| Error::io(format!("cannot chmod {}", target.display()), e))?;
        }
    }
    std::fs::create_dir_all(&staging)
        .map_err(|e| Error::io(format!("cannot create {}", staging.display()), e))?;
    match std::fs::rename(&staging, destination) {
        Ok(()) => Ok(()),
        // Another run on this worker unpacked the same bundle first.
        Err(_) if destination.is_dir() => {
            let _ = std::fs::remove_dir_all(&staging);
            Ok(())
        }
        Err(e) => Err(Error::io(
            format!("cannot move workdir into {}", destination.display()),
            e,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_round_trips_and_hash_follows_content() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("src");
        std::fs::create_dir_all(source.join("lib")).unwrap();
        std::fs::create_dir_all(source.join(".git")).unwrap();
        std::fs::write(source.join("scenario.py"), "print(1)").unwrap();
        std::fs::write(source.join("lib/x.txt"), "x").unwrap();
        std::fs::write(source.join(".git/HEAD"), "ignored").unwrap();
        std::fs::create_dir_all(source.join("experiments")).unwrap();
        std::fs::write(source.join("experiments/out"), "excluded").unwrap();

        let (hash, files) = read_bundle(&source, &[source.join("experiments")]).unwrap();
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["lib/x.txt", "scenario.py"]);

        let copy = dir.path().join("cache").join(&hash);
        unpack_bundle(&files, &copy).unwrap();
        let (copy_hash, _) = read_bundle(&copy, &[]).unwrap();
        assert_eq!(copy_hash, hash);

        std::fs::write(source.join("scenario.py"), "print(2)").unwrap();
        assert_ne!(
            read_bundle(&source, &[source.join("experiments")])
                .unwrap()
                .0,
            hash
        );
    }

    #[test]
    fn refuses_paths_that_escape() {
        let dir = tempfile::tempdir().unwrap();
        let files = vec![BundleFile {
            path: "../evil".into(),
            content: vec![],
            executable: false,
        }];
        assert!(unpack_bundle(&files, &dir.path().join("x")).is_err());
    }
}
