//! Private files: written atomically (a temporary file in the same directory, synced, then
//! renamed over the target, then the directory synced), readable only by the owner (0600), in
//! directories only the owner can enter (0700).

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use ring::rand::{SecureRandom, SystemRandom};

/// Mode of private files.
pub(crate) const FILE_MODE: u32 = 0o600;
/// Mode of private directories.
pub(crate) const DIR_MODE: u32 = 0o700;

/// Creates `dir` (and missing parents) with mode 0700, and sets 0700 on it if it exists.
pub(crate) fn private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
}

/// Writes `bytes` to `path` atomically with mode 0600, replacing any file there.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut nonce = [0u8; 8];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| io::Error::other("no randomness for a temporary file name"))?;
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        hex(&nonce)
    ));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    sync_dir(dir)
}

/// Removes `path`; no error if it is not there. The directory is synced after.
pub(crate) fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(path.parent().unwrap_or(Path::new("."))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Reads `path`, `None` if it is not there.
pub(crate) fn read_optional(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Makes a rename or removal in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let mut nonce = [0u8; 8];
        let _ = SystemRandom::new().fill(&mut nonce);
        std::env::temp_dir().join(format!("verge-fsutil-{tag}-{}", hex(&nonce)))
    }

    #[test]
    fn writes_replace_atomically_with_private_modes() {
        let dir = temp_dir("write");
        private_dir(&dir.join("sub")).expect("dir");
        assert_eq!(
            fs::metadata(dir.join("sub")).expect("meta").mode() & 0o777,
            0o700
        );
        let path = dir.join("sub/file");
        write_private(&path, b"one").expect("write");
        write_private(&path, b"two").expect("rewrite");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        assert_eq!(fs::metadata(&path).expect("meta").mode() & 0o777, 0o600);
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.join("sub"))
            .expect("list")
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("file")]);
        remove(&path).expect("remove");
        remove(&path).expect("remove twice");
        assert_eq!(read_optional(&path).expect("read"), None);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn existing_dir_is_made_private() {
        let dir = temp_dir("chmod");
        fs::create_dir_all(&dir).expect("dir");
        fs::set_permissions(&dir, Permissions::from_mode(0o755)).expect("chmod");
        private_dir(&dir).expect("private");
        assert_eq!(fs::metadata(&dir).expect("meta").mode() & 0o777, 0o700);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn hex_is_lower_case() {
        assert_eq!(hex(&[0x00, 0xab, 0x10]), "00ab10");
    }
}
