//! Files that must survive a crash whole: written through a temporary file,
//! fsync and rename, so a reader finds the old version or the new one, never
//! half of one; and damaged files moved aside, never overwritten, so an
//! operator can look at what went wrong. Used by the snapshot store and the
//! bridge's keys and cache.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically (temporary file in the same
/// directory, fsync, rename, then fsync of the directory so the rename
/// itself survives a power cut).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension(format!("tmp{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Best effort: some filesystems refuse to open a directory.
            if let Ok(dir) = std::fs::File::open(dir) {
                let _ = dir.sync_all();
            }
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

/// Renames a damaged file to `NAME.corrupt-<unix seconds>` beside it;
/// returns the new name, or why it could not be moved.
pub fn set_aside(path: &Path, unix_now: u64) -> Result<std::path::PathBuf, std::io::Error> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".corrupt-{unix_now}"));
    let aside = path.with_file_name(name);
    std::fs::rename(path, &aside)?;
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_whole_and_damage_is_moved_aside() {
        let dir = std::env::temp_dir().join(format!("swarmgate-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("state.bin");
        write_atomically(&path, b"one").expect("first");
        write_atomically(&path, b"two").expect("second");
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
        let aside = set_aside(&path, 42).expect("moved");
        assert_eq!(aside, dir.join("state.bin.corrupt-42"));
        assert!(!path.exists());
        assert_eq!(std::fs::read(&aside).expect("kept"), b"two");
        let leftovers = std::fs::read_dir(&dir).expect("dir").count();
        assert_eq!(leftovers, 1, "no temporary files left behind");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
