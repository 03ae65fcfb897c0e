//! A module's log: what it wrote to stdout and stderr and what it logged, kept in a bounded
//! in-memory ring that outlives restarts of the module, and followed live by `verge logs -f`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use tokio::sync::broadcast;

/// Lines a follower may fall behind before it skips some.
const FOLLOW_BACKLOG: usize = 256;

/// Where a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// The module's stdout.
    Stdout,
    /// The module's stderr.
    Stderr,
    /// The runtime itself, about the module (starts, exits, errors).
    Runtime,
}

/// One line of a module's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// When it was written.
    pub at: SystemTime,
    /// Where it came from.
    pub stream: Stream,
    /// The text, without the line break.
    pub text: String,
}

#[derive(Debug)]
struct Ring {
    lines: VecDeque<LogLine>,
    bytes: usize,
}

#[derive(Debug)]
struct Inner {
    ring: Mutex<Ring>,
    max_bytes: usize,
    follow: broadcast::Sender<LogLine>,
}

/// A module's log. Cloning shares it.
#[derive(Clone, Debug)]
pub struct ModuleLog {
    inner: Arc<Inner>,
}

impl ModuleLog {
    /// A log keeping at most `max_bytes` of text (oldest lines go first).
    pub fn new(max_bytes: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                ring: Mutex::new(Ring {
                    lines: VecDeque::new(),
                    bytes: 0,
                }),
                max_bytes,
                follow: broadcast::channel(FOLLOW_BACKLOG).0,
            }),
        }
    }

    fn ring(&self) -> MutexGuard<'_, Ring> {
        self.inner
            .ring
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Append a line.
    pub fn push(&self, stream: Stream, text: impl Into<String>) {
        let line = LogLine {
            at: SystemTime::now(),
            stream,
            text: text.into(),
        };
        {
            let mut ring = self.ring();
            ring.bytes += line.text.len();
            ring.lines.push_back(line.clone());
            while ring.bytes > self.inner.max_bytes {
                match ring.lines.pop_front() {
                    Some(old) => ring.bytes -= old.text.len(),
                    None => break,
                }
            }
        }
        // Nobody following is fine.
        let _ = self.inner.follow.send(line);
    }

    /// The last `n` lines (all with `None`), oldest first.
    pub fn tail(&self, n: Option<usize>) -> Vec<LogLine> {
        let ring = self.ring();
        let skip = n.map_or(0, |n| ring.lines.len().saturating_sub(n));
        ring.lines.iter().skip(skip).cloned().collect()
    }

    /// Lines written from now on.
    pub fn follow(&self) -> broadcast::Receiver<LogLine> {
        self.inner.follow.subscribe()
    }

    /// The tail and a follower, taken together so that no line falls between them.
    pub fn tail_and_follow(
        &self,
        n: Option<usize>,
    ) -> (Vec<LogLine>, broadcast::Receiver<LogLine>) {
        let ring = self.ring();
        let follower = self.inner.follow.subscribe();
        let skip = n.map_or(0, |n| ring.lines.len().saturating_sub(n));
        (ring.lines.iter().skip(skip).cloned().collect(), follower)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_lines_go_when_the_log_is_full() {
        let log = ModuleLog::new(10);
        for text in ["aaaa", "bbbb", "cccc"] {
            log.push(Stream::Stdout, text);
        }
        let texts: Vec<_> = log.tail(None).into_iter().map(|l| l.text).collect();
        assert_eq!(texts, ["bbbb", "cccc"]);
        let last: Vec<_> = log.tail(Some(1)).into_iter().map(|l| l.text).collect();
        assert_eq!(last, ["cccc"]);
    }

    #[tokio::test]
    async fn followers_see_new_lines() {
        let log = ModuleLog::new(1024);
        log.push(Stream::Stdout, "before");
        let (tail, mut follow) = log.tail_and_follow(Some(5));
        log.push(Stream::Stderr, "after");
        assert_eq!(tail.len(), 1);
        let line = follow.recv().await.unwrap();
        assert_eq!((line.stream, line.text.as_str()), (Stream::Stderr, "after"));
    }
}
