//! Files that survive a power cut: written beside their target, synced, renamed over it, and
//! the directory synced — without the last step the rename itself may be lost (the new name
//! lives in the directory, which has its own pages to write).

use std::path::Path;

/// Syncs the directory holding `path`, so that a rename into it is on disk. On Windows,
/// where a directory cannot be opened for syncing, NTFS journals the rename itself.
pub fn sync_parent_dir(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn syncs_the_directory_of_a_file_and_names_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x");
        std::fs::write(&file, b"x").unwrap();
        super::sync_parent_dir(&file).unwrap();
        #[cfg(unix)]
        assert!(super::sync_parent_dir(&dir.path().join("gone/x")).is_err());
    }
}
