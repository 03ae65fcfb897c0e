use std::sync::Arc;

use verge_message::Message;

use super::*;

fn open(dir: &tempfile::TempDir) -> (Arc<Store>, Vec<RecoveredQueue>) {
    Store::open(&dir.path().join("messages.redb"), StoreOptions::default()).expect("opens")
}

fn message(store: &Store, body: &str, refs: u32) -> (u64, NewMessage, u32) {
    let m = Message::new(body.as_bytes().to_vec()).with_property("n", body);
    let id = store.next_message_id();
    store.reserve(codec::encoded_len(&m) as u64).expect("room");
    let size = m.size() as u32;
    (
        id,
        NewMessage {
            id,
            refs,
            message: Arc::new(m),
        },
        size,
    )
}

fn meta(message: u64, size: u32, expires_ms: u64) -> EntryMeta {
    EntryMeta {
        message,
        size,
        enqueued_ms: 1,
        expires_ms,
        input: Some("in".into()),
    }
}

fn key(queue: QueueId, lane: u8, seq: u64) -> EntryKey {
    EntryKey { queue, lane, seq }
}

/// Put `n` one-queue messages in lane `lane` of queue `q` from position `from`.
async fn fill(store: &Store, q: QueueId, lane: u8, from: u64, n: u64) -> Vec<u64> {
    let mut batch = Batch::default();
    let mut ids = Vec::new();
    for seq in from..from + n {
        let (id, m, size) = message(store, &seq.to_string(), 1);
        batch.messages.push(m);
        batch.inserts.push((key(q, lane, seq), meta(id, size, 0)));
        ids.push(id);
    }
    store.submit(batch).await.expect("commits");
    ids
}

fn bodies(entries: &[StoredEntry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| {
            let m = e.message.as_ref().expect("live");
            String::from_utf8_lossy(m.body()).into_owned()
        })
        .collect()
}

#[tokio::test]
async fn entries_survive_a_reopen_with_their_queues_lanes_and_positions() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (store, recovered) = open(&dir);
        assert!(recovered.is_empty());
        let q = store.queue_id("modules/sink");
        assert_eq!(store.queue_id("modules/sink"), q);
        fill(&store, q, 10, 0, 5).await;
        fill(&store, q, 2, 5, 3).await;
        let read = store.read_lane(key(q, 10, 2), 2, 0).expect("reads");
        assert_eq!(bodies(&read), ["2", "3"]);
        assert_eq!(read[0].meta.input.as_deref(), Some("in"));
    }
    let (store, recovered) = open(&dir);
    assert_eq!(recovered.len(), 1);
    let q = &recovered[0];
    assert_eq!((q.name.as_str(), q.next_seq), ("modules/sink", 8));
    let lanes: Vec<(u8, usize, u64)> = q
        .lanes
        .iter()
        .map(|l| (l.lane, l.count, l.first_seq))
        .collect();
    assert_eq!(lanes, [(2, 3, 5), (10, 5, 0)]);
    assert_eq!(store.queue_id("modules/sink"), q.id);
    assert_ne!(store.queue_id("$upstream"), q.id);
    assert!(store.next_message_id() > 8, "message ids are not reused");
}

#[tokio::test]
async fn removing_releases_a_shared_message_only_with_its_last_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(&dir);
    let (a, b) = (store.queue_id("a"), store.queue_id("b"));
    let (id, m, size) = message(&store, "shared", 2);
    let stored = codec::encoded_len(&m.message) as u64;
    store
        .submit(Batch {
            messages: vec![m],
            inserts: vec![
                (key(a, 10, 0), meta(id, size, 0)),
                (key(b, 10, 0), meta(id, size, 0)),
            ],
            ..Batch::default()
        })
        .await
        .expect("commits");
    let remove = |k| Batch {
        removes: vec![(k, id)],
        ..Batch::default()
    };
    store.submit(remove(key(a, 10, 0))).await.expect("commits");
    assert_eq!(store.stats().message_bytes, stored);
    let read = store.read_lane(key(b, 10, 0), 10, 0).expect("reads");
    assert_eq!(bodies(&read), ["shared"], "b's entry still has its message");
    store.submit(remove(key(b, 10, 0))).await.expect("commits");
    let stats = store.stats();
    assert_eq!((stats.message_bytes, stats.entries), (0, 0));
}

#[tokio::test]
async fn an_entry_removed_within_its_commit_window_is_never_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(&dir);
    let q = store.queue_id("q");
    store.flush().await.expect("flushes");
    let (id, m, size) = message(&store, "fast", 1);
    // Both batches are queued before the writer can commit the first.
    let first = store.submit(Batch {
        messages: vec![m],
        inserts: vec![(key(q, 10, 0), meta(id, size, 0))],
        ..Batch::default()
    });
    let second = store.submit(Batch {
        removes: vec![(key(q, 10, 0), id)],
        ..Batch::default()
    });
    first.await.expect("durable");
    second.await.expect("durable");
    let stats = store.stats();
    assert_eq!(stats.message_bytes, 0);
    assert_eq!(stats.entries, 0);
    // Either folded away or written then removed; both leave nothing behind.
    assert!(
        store
            .read_lane(key(q, 10, 0), 10, 0)
            .expect("reads")
            .is_empty()
    );
}

#[tokio::test]
async fn expired_entries_come_without_messages_and_the_head_sweep_stops_at_the_first_live_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(&dir);
    let q = store.queue_id("q");
    let mut batch = Batch::default();
    for (seq, expires) in [(0, 100), (1, 100), (2, 0), (3, 100)] {
        let (id, m, size) = message(&store, &seq.to_string(), 1);
        batch.messages.push(m);
        batch
            .inserts
            .push((key(q, 3, seq), meta(id, size, expires)));
    }
    store.submit(batch).await.expect("commits");
    let head = store.expired_head(key(q, 3, 0), 100, 200).expect("reads");
    assert_eq!(head.iter().map(|(k, _)| k.seq).collect::<Vec<_>>(), [0, 1]);
    let read = store.read_lane(key(q, 3, 0), 100, 200).expect("reads");
    let live: Vec<bool> = read.iter().map(|e| e.message.is_some()).collect();
    assert_eq!(live, [false, false, true, false]);
}

#[tokio::test]
async fn a_size_limit_refuses_new_messages_and_frees_room_as_they_go() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = StoreOptions {
        max_bytes: Some(1000),
        ..StoreOptions::default()
    };
    let (store, _) = Store::open(&dir.path().join("s.redb"), options).expect("opens");
    assert!(store.reserve(600).is_ok());
    let full = store.reserve(600).expect_err("over the limit");
    assert!(full.to_string().contains("max_size_mb"), "{full}");
    assert!(store.reserve(400).is_ok(), "what fits still goes");
}

#[test]
fn a_file_that_is_not_a_store_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("messages.redb");
    let junk = vec![0x5a_u8; 64 * 1024];
    std::fs::write(&path, &junk).expect("writes");
    let e = Store::open(&path, StoreOptions::default()).expect_err("refused");
    assert!(
        matches!(e, StoreError::Damaged { .. } | StoreError::Open { .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("messages.redb"), "{e}");
    assert_eq!(
        std::fs::read(&path).expect("reads"),
        junk,
        "the file was changed"
    );
}

#[tokio::test]
async fn a_truncated_store_is_refused_not_opened_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("messages.redb");
    {
        let (store, _) = open(&dir);
        let q = store.queue_id("q");
        fill(&store, q, 10, 0, 2000).await;
    }
    let len = std::fs::metadata(&path).expect("exists").len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("opens");
    file.set_len(len / 2).expect("truncates");
    drop(file);
    match Store::open(&path, StoreOptions::default()) {
        Err(e) => {
            eprintln!("truncated: {e}");
            assert!(matches!(e, StoreError::Damaged { .. }), "{e:?}");
        }
        Ok((_, recovered)) => {
            // Only acceptable if redb could prove every committed entry is still there.
            let n: usize = recovered
                .iter()
                .flat_map(|q| &q.lanes)
                .map(|l| l.count)
                .sum();
            assert_eq!(n, 2000, "opened a truncated store with entries missing");
        }
    }
}

#[tokio::test]
async fn records_are_written_with_the_group_commit_and_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (store, _) = open(&dir);
        let record = |name: &str, value: Option<&str>| {
            (name.to_owned(), value.map(|v| v.as_bytes().to_vec()))
        };
        let batch = Batch {
            records: vec![
                record("twin/a", Some("1")),
                record("twin/b", Some("2")),
                record("other", Some("x")),
            ],
            ..Batch::default()
        };
        store.submit(batch).await.expect("commits");
        // In one window the last write wins; a delete removes.
        let batch = Batch {
            records: vec![
                record("twin/a", Some("3")),
                record("twin/b", None),
                record("twin/c", Some("4")),
            ],
            ..Batch::default()
        };
        store.submit(batch).await.expect("commits");
    }
    let (store, _) = open(&dir);
    let twins = store.records("twin/").expect("reads");
    let as_text: Vec<(&str, &str)> = twins
        .iter()
        .map(|(n, v)| (n.as_str(), std::str::from_utf8(v).expect("utf-8")))
        .collect();
    assert_eq!(as_text, [("twin/a", "3"), ("twin/c", "4")]);
    assert_eq!(store.records("").expect("reads").len(), 3);
}
