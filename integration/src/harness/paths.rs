//! Where the build output is: the binaries the tests run, and scratch space for their files.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::harness::HarnessError;

/// Cargo's target directory: `CARGO_TARGET_DIR` if set (relative to the workspace root), else
/// `target/` in the workspace.
pub fn target_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new("."));
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    }
}

/// A binary of the workspace as the last cargo build left it, for example `rds-auth-standin`.
///
/// It is looked for next to the running test binary first (`target/<profile>/deps/..`), so a
/// test runs the binaries of its own build, then in `target/debug`.
pub fn built_binary(name: &str) -> Result<PathBuf, HarnessError> {
    let mut looked_in = Vec::new();
    let beside_tests = std::env::current_exe().ok().and_then(|exe| {
        exe.parent().filter(|dir| dir.ends_with("deps")).and_then(Path::parent).map(Path::to_owned)
    });
    for dir in beside_tests.into_iter().chain([target_dir().join("debug")]) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
        looked_in.push(dir);
    }
    Err(HarnessError::BinaryMissing { name: name.to_owned(), looked_in })
}

/// A new, empty directory under `<target>/tmp/rds-auth-test/`, named after `what`, this process
/// and a counter. Directories of processes that no longer run are removed on the way.
pub fn scratch_dir(what: &str) -> Result<PathBuf, HarnessError> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let root = target_dir().join("tmp").join("rds-auth-test");
    if n == 0 {
        remove_dead_scratch_dirs(&root);
    }
    let dir = root.join(format!("{what}-{}-{n}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(HarnessError::io(format!("cannot empty {}", dir.display())))?;
    }
    std::fs::create_dir_all(&dir).map_err(HarnessError::io(format!("cannot create {}", dir.display())))?;
    Ok(dir)
}

/// Removes `<what>-<pid>-<n>` directories whose process is gone. What is kept in a `static`
/// (the shared stand-in's certificates) is never dropped, so its directory outlives the run.
fn remove_dead_scratch_dirs(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid =
            name.to_str().and_then(|name| name.rsplit('-').nth(1)).and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid
            && pid != std::process::id()
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
