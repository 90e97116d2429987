//! Process limits.

/// Raises the soft open-file limit to the hard limit and returns the new soft limit. Every
/// session holds two sockets, so the default of 256 on macOS would cap a proxy at about a
/// hundred sessions.
pub fn raise_open_files() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}
