//! The data folder and its files are for the owner only.
//!
//! The process's umask (set in `main`) makes everything created from then on private; this
//! tightens what exists already, as an older version left it (folders 0755, files 0644).

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// What the process creates may be read and written by its owner only.
pub const UMASK: u32 = 0o077;

/// The files a server keeps beside the call log (each with its `-wal`, `-shm`, index folder
/// and the like, which share its name as a prefix).
const SIBLINGS: &[&str] = &[
    "engage.db",
    "audience.db",
    "flows.db",
    "templates.db",
    "confirmations.db",
    "sync.db",
    "console.db",
];

/// Makes `dir` 0700 and removes the group and other bits from everything in it, recursively.
pub fn make_private(dir: &Path) -> io::Result<()> {
    if fs::metadata(dir)?.permissions().mode() & 0o777 != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        tighten_tree(&entry.path())?;
    }
    Ok(())
}

/// For a log at a path of the operator's choosing (`--database-url`), whose folder may be
/// shared: makes private only the log's own files and its siblings, not the folder.
pub fn make_files_private(log: &Path) -> io::Result<()> {
    let Some(name) = log.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Ok(());
    };
    let dir = match log.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => dir,
        None => Path::new("."),
    };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
    };
    for entry in entries {
        let entry = entry?;
        let entry_name = entry.file_name().to_string_lossy().into_owned();
        let ours = entry_name.starts_with(&name)
            || SIBLINGS
                .iter()
                .any(|sibling| entry_name.starts_with(sibling));
        if ours {
            tighten_tree(&entry.path())?;
        }
    }
    Ok(())
}

/// Removes the group and other bits of a file, or of a folder and everything in it. Symbolic
/// links are left alone (their target is not ours to change).
fn tighten_tree(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        // Gone meanwhile (a journal a server removed): nothing to tighten.
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
    };
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mode = meta.permissions().mode();
    if mode & UMASK != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(mode & !UMASK & 0o7777))?;
    }
    if meta.is_dir() {
        for entry in fs::read_dir(path)? {
            tighten_tree(&entry?.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn an_older_open_folder_is_made_private() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        fs::create_dir_all(data.join("signalbox.db-dedupe")).unwrap();
        for file in ["signalbox.db", "signalbox.db-dedupe/v1"] {
            fs::write(data.join(file), b"x").unwrap();
            fs::set_permissions(data.join(file), fs::Permissions::from_mode(0o644)).unwrap();
        }
        for dir in [&data, &data.join("signalbox.db-dedupe")] {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
        }
        make_private(&data).unwrap();
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("signalbox.db-dedupe")), 0o700);
        assert_eq!(mode(&data.join("signalbox.db")), 0o600);
        assert_eq!(mode(&data.join("signalbox.db-dedupe/v1")), 0o600);
    }

    #[test]
    fn beside_a_chosen_log_only_signalbox_files_are_touched() {
        let root = tempfile::tempdir().unwrap();
        for file in [
            "log.db",
            "log.db-wal",
            "engage.db",
            "sync.db",
            "console.db",
            "notes.txt",
        ] {
            fs::write(root.path().join(file), b"x").unwrap();
            fs::set_permissions(root.path().join(file), fs::Permissions::from_mode(0o644)).unwrap();
        }
        make_files_private(&root.path().join("log.db")).unwrap();
        for file in ["log.db", "log.db-wal", "engage.db", "sync.db", "console.db"] {
            assert_eq!(mode(&root.path().join(file)), 0o600, "{file}");
        }
        assert_eq!(mode(&root.path().join("notes.txt")), 0o644);
    }
}
