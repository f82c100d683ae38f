//! The LSM indexes kept beside an embedded store (the log's dedupe index, engage's held-call
//! index) are derived: each can be made again from its store. So one that cannot be recovered
//! (a journal entry cut short when the disk filled, which the engine's recovery rejects or
//! even panics on) is removed and made again, rather than stopping the writer or the server.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// Opens the index at `dir` with `open`; when its files are damaged, removes them and opens
/// an empty index in their place, which its owner then fills from its store (an index with
/// no marker is re-indexed from the start). Errors that are not damage (an I/O error such as
/// a disk that is still full, a lock held elsewhere) are returned as they are.
pub fn open_or_remake<T>(
    dir: &Path,
    what: &str,
    mut open: impl FnMut() -> Result<T, fjall::Error>,
) -> Result<T, fjall::Error> {
    let damage = match catch_unwind(AssertUnwindSafe(&mut open)) {
        Ok(Ok(index)) => return Ok(index),
        Ok(Err(err)) if is_damage(&err) => err.to_string(),
        Ok(Err(err)) => return Err(err),
        Err(panic) => panic_text(panic.as_ref()),
    };
    tracing::warn!(
        index = what,
        dir = %dir.display(),
        damage,
        "the index cannot be recovered (a write cut short, as by a full disk): it is made again from its store"
    );
    std::fs::remove_dir_all(dir).map_err(fjall::Error::Io)?;
    open()
}

/// Whether `err` says the index's files are damaged (rather than unreachable for now).
fn is_damage(err: &fjall::Error) -> bool {
    matches!(
        err,
        fjall::Error::JournalRecovery(_)
            | fjall::Error::InvalidTrailer
            | fjall::Error::InvalidTag(_)
            | fjall::Error::Decompress(_)
            | fjall::Error::Unrecoverable
    )
}

fn panic_text(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "a panic".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_index_is_removed_and_opened_empty() {
        let dir = tempfile::tempdir().unwrap();
        let index = dir.path().join("index");
        std::fs::create_dir(&index).unwrap();
        std::fs::write(index.join("journal"), b"torn").unwrap();
        let mut tries = 0;
        let opened = open_or_remake(&index, "test index", || {
            tries += 1;
            if index.join("journal").exists() {
                panic!("assertion `left == right` failed");
            }
            Ok(tries)
        });
        assert_eq!(opened.unwrap(), 2);
        assert!(!index.exists(), "the damaged files stay");

        std::fs::create_dir(&index).unwrap();
        std::fs::write(index.join("journal"), b"torn").unwrap();
        let opened = open_or_remake(&index, "test index", || {
            if index.join("journal").exists() {
                Err(fjall::Error::Unrecoverable)
            } else {
                Ok(())
            }
        });
        assert!(opened.is_ok());
        assert!(!index.exists());
    }

    #[test]
    fn an_index_that_is_only_unreachable_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let opened: Result<(), _> = open_or_remake(dir.path(), "test index", || {
            Err(fjall::Error::Io(std::io::Error::from_raw_os_error(28)))
        });
        assert!(matches!(opened, Err(fjall::Error::Io(_))));
        assert!(dir.path().exists());
    }
}
