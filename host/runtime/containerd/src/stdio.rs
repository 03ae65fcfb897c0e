//! A container's stdout and stderr, through FIFOs Verge creates and reads, into the module's
//! [`ModuleLog`].
//!
//! Why FIFOs: the runc v2 shim of containerd 1.6 opens a plain stdio path with
//! `fifo.OpenFifo(…, O_WRONLY)` (a FIFO) or, for a regular file, appends to it; a FIFO gives
//! lines live with no file to rotate or tail. Order of events:
//!
//! 1. [`Stdio::create`] makes `<dir>/<container id>/{stdout,stderr}` (mode 0600) and opens each
//!    read end non-blocking, **and a write end of its own** (so a reader does not see EOF before
//!    the shim has opened the FIFO). Readers start pushing lines into the log at once.
//! 2. `Tasks.Create` hands the paths to the shim, which opens them for writing.
//! 3. When the task has exited, [`Stdio::finish`] drops Verge's write ends; the shim closes its
//!    own at `Tasks.Delete`, after flushing what the container wrote (it waits for its copy
//!    loops), so the readers reach EOF with everything read, and the directory is removed.
//!
//! Lines are split on `\n`, decoded lossily as UTF-8; a line longer than [`MAX_LINE`] is cut
//! into pieces.

use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncReadExt as _;
use tokio::net::unix::pipe;
use tokio::task::JoinHandle;
use verge_runtime::{ModuleLog, Stream};

/// Longest line kept whole; longer ones are cut.
pub const MAX_LINE: usize = 16 * 1024;

/// How long [`Stdio::finish`] waits for the readers to reach EOF.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// A container's stdio FIFOs and their readers.
#[derive(Debug)]
pub struct Stdio {
    dir: PathBuf,
    stdout: PathBuf,
    stderr: PathBuf,
    keep_open: Vec<pipe::Sender>,
    readers: Vec<JoinHandle<()>>,
}

impl Stdio {
    /// The FIFOs of directory `dir`, nothing opened yet.
    fn at(dir: PathBuf) -> Self {
        Self {
            stdout: dir.join("stdout"),
            stderr: dir.join("stderr"),
            dir,
            keep_open: Vec::new(),
            readers: Vec::new(),
        }
    }

    /// Creates `<dir>/<id>/{stdout,stderr}` and starts reading them into `log`.
    pub fn create(dir: &Path, id: &str, log: &ModuleLog) -> std::io::Result<Self> {
        let mut stdio = Self::at(dir.join(id));
        std::fs::create_dir_all(&stdio.dir)?;
        match stdio.start_reading(log, true) {
            Ok(()) => Ok(stdio),
            Err(e) => {
                stdio.abort();
                Err(e)
            }
        }
    }

    /// Reads the FIFOs of a container started by an earlier run of this daemon (adoption), if
    /// they are still there: the shim keeps its write ends open, so opening the read ends again
    /// resumes the flow (what the container wrote meanwhile waited in the pipes, and the
    /// container blocked if it filled them).
    pub fn reopen(dir: &Path, id: &str, log: &ModuleLog) -> std::io::Result<Self> {
        let mut stdio = Self::at(dir.join(id));
        match stdio.start_reading(log, false) {
            Ok(()) => Ok(stdio),
            Err(e) => {
                // Stop what started, but leave the FIFOs: the shim still has them.
                stdio.keep_open.clear();
                for reader in stdio.readers.drain(..) {
                    reader.abort();
                }
                Err(e)
            }
        }
    }

    /// Opens each FIFO's read end and a write end of Verge's own (made first when `make`),
    /// and starts a reader pushing its lines into `log`.
    fn start_reading(&mut self, log: &ModuleLog, make: bool) -> std::io::Result<()> {
        for (path, stream) in [
            (self.stdout.clone(), Stream::Stdout),
            (self.stderr.clone(), Stream::Stderr),
        ] {
            if make {
                mkfifo(&path)?;
            }
            let receiver = pipe::OpenOptions::new().open_receiver(&path)?;
            self.keep_open
                .push(pipe::OpenOptions::new().open_sender(&path)?);
            self.readers
                .push(tokio::spawn(read_lines(receiver, stream, log.clone())));
        }
        Ok(())
    }

    /// The stdout FIFO, for `Tasks.Create`.
    pub fn stdout(&self) -> String {
        self.stdout.to_string_lossy().into_owned()
    }

    /// The stderr FIFO, for `Tasks.Create`.
    pub fn stderr(&self) -> String {
        self.stderr.to_string_lossy().into_owned()
    }

    /// Drops Verge's write ends: from now on the readers end when the shim closes its own.
    pub fn release(&mut self) {
        self.keep_open.clear();
    }

    /// After `Tasks.Delete`: waits (a bounded time) for the readers to read everything, then
    /// removes the FIFOs.
    pub async fn finish(mut self) {
        self.release();
        for reader in std::mem::take(&mut self.readers) {
            let abort = reader.abort_handle();
            if tokio::time::timeout(DRAIN_TIMEOUT, reader).await.is_err() {
                tracing::warn!(dir = %self.dir.display(), "a stdio reader did not end; stopped");
                abort.abort();
            }
        }
        self.remove();
    }

    /// Stops reading and removes the FIFOs at once (a start that failed).
    pub fn abort(mut self) {
        self.keep_open.clear();
        for reader in self.readers.drain(..) {
            reader.abort();
        }
        self.remove();
    }

    fn remove(&self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.dir.display(), "cannot remove the stdio FIFOs: {e}");
        }
    }
}

fn mkfifo(path: &Path) -> std::io::Result<()> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call.
    let rc = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Reads `receiver` to EOF, pushing each line into `log` as `stream`.
async fn read_lines(mut receiver: pipe::Receiver, stream: Stream, log: ModuleLog) {
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 8192];
    loop {
        match receiver.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => {
                pending.extend_from_slice(chunk.get(..n).unwrap_or_default());
                push_lines(&mut pending, stream, &log);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!("reading a container's {stream:?}: {e}");
                break;
            }
        }
    }
    if !pending.is_empty() {
        log.push(stream, String::from_utf8_lossy(&pending).into_owned());
    }
}

/// Pushes the complete lines of `pending` (and pieces of an over-long one), keeping the rest.
fn push_lines(pending: &mut Vec<u8>, stream: Stream, log: &ModuleLog) {
    loop {
        if let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let text = line.get(..end).unwrap_or_default();
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            log.push(stream, String::from_utf8_lossy(text).into_owned());
        } else if pending.len() > MAX_LINE {
            let piece: Vec<u8> = pending.drain(..MAX_LINE).collect();
            log.push(stream, String::from_utf8_lossy(&piece).into_owned());
        } else {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_and_long_ones_cut() {
        let log = ModuleLog::new(1 << 20);
        let mut pending = b"one\r\ntwo\nthr".to_vec();
        push_lines(&mut pending, Stream::Stdout, &log);
        assert_eq!(pending, b"thr");
        pending = vec![b'x'; MAX_LINE + 5];
        push_lines(&mut pending, Stream::Stderr, &log);
        assert_eq!(pending.len(), 5);
        let lines = log.tail(None);
        let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts.get(..2), Some(&["one", "two"][..]));
        assert_eq!(lines.get(2).map(|l| l.text.len()), Some(MAX_LINE));
    }

    #[tokio::test]
    async fn a_fifo_is_read_until_its_last_writer_closes() {
        let dir = std::env::temp_dir().join(format!("verge-stdio-{}", std::process::id()));
        let log = ModuleLog::new(1 << 20);
        let stdio = Stdio::create(&dir, "c1", &log).expect("fifos");
        let writer = std::fs::OpenOptions::new()
            .write(true)
            .open(stdio.stdout())
            .expect("open for writing");
        std::io::Write::write_all(&mut &writer, b"hello\npartial").expect("write");
        drop(writer);
        stdio.finish().await;
        let texts: Vec<String> = log.tail(None).into_iter().map(|l| l.text).collect();
        assert_eq!(texts, ["hello", "partial"]);
        assert!(!dir.join("c1").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
