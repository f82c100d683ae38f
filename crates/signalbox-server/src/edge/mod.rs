//! The HTTP edge, bounded by construction: connections ([`connections`]: how many, how long
//! they may stay silent or idle, HTTP/2 streams, the shutdown deadline) and request bodies
//! ([`bodies`]: a global budget of bytes being read, a deadline per body), and the free disk
//! space below which writes are refused ([`disk`]).

pub mod bodies;
pub mod connections;
pub mod disk;

/// Descriptors kept free for the store, its indexes and everything else the process opens.
fn reserved_descriptors(limit: u64) -> u64 {
    (limit / 10).max(256)
}

/// Raises the soft limit of open files to the hard limit and returns the soft limit now in
/// force (`None` when it cannot be read, or is unlimited).
pub fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let current = getrlimit(Resource::Nofile);
    if current.current != current.maximum {
        let raised = Rlimit {
            current: current.maximum,
            maximum: current.maximum,
        };
        if let Err(err) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %err, "cannot raise the limit of open files");
        }
    }
    getrlimit(Resource::Nofile).current
}

/// The open-files soft limit in force (`None`: unknown or unlimited).
pub fn open_files_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// How many connections may be served and how many refused at once under a descriptor limit:
/// together they stay below `limit` minus a reserve, whatever `max_connections` asks.
pub fn connection_caps(max_connections: usize, limit: Option<u64>) -> (usize, usize) {
    let usable = match limit {
        Some(limit) => limit.saturating_sub(reserved_descriptors(limit)),
        None => u64::MAX,
    };
    let usable = usize::try_from(usable).unwrap_or(usize::MAX).max(2);
    let refusing = (usable / 10).clamp(1, 1024);
    let serving = max_connections.min(usable - refusing).max(1);
    (serving, refusing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_stay_below_the_descriptor_limit() {
        assert_eq!(connection_caps(10_000, Some(1_048_576)), (10_000, 1024));
        let (serving, refusing) = connection_caps(10_000, Some(1024));
        assert!(serving + refusing <= 1024 - 256, "{serving} + {refusing}");
        assert!(serving > 500);
        let (serving, refusing) = connection_caps(10_000, Some(20_000));
        assert_eq!(serving, 10_000);
        assert!(serving + refusing <= 18_000);
        assert_eq!(connection_caps(50, None), (50, 1024));
    }
}
