use super::format::{scan_record, Scan};
use super::*;
use proptest::prelude::*;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Barrier;
use std::time::{Duration, Instant};

fn open(dir: &Path) -> (Wal, Recovered) {
    open_with(dir, WalOptions::default())
}

fn open_with(dir: &Path, options: WalOptions) -> (Wal, Recovered) {
    match Wal::open(dir, options) {
        Ok(opened) => opened,
        Err(error) => panic!("open {}: {error}", dir.display()),
    }
}

fn small_segments() -> WalOptions {
    WalOptions {
        segment_size_bytes: 4096,
        ..WalOptions::default()
    }
}

fn only_segment(dir: &Path) -> PathBuf {
    let segments = list_segments(dir).unwrap();
    assert_eq!(segments.len(), 1, "{segments:?}");
    segments[0].1.clone()
}

/// Where the records of a segment end: its length without the runway's zeros.
fn records_end(path: &Path) -> u64 {
    let bytes = fs::read(path).unwrap();
    let mut offset = SEGMENT_HEADER_BYTES;
    while offset < bytes.len() {
        match scan_record(&bytes[offset..]) {
            Scan::Record(record) => offset += record.record_bytes,
            _ => break,
        }
    }
    offset as u64
}

fn copy_dir(from: &Path, to: &Path) {
    for (_, path) in list_segments(from).unwrap() {
        fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

#[test]
fn round_trip_meta_positions_and_truncation() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, recovered) = open(dir.path());
        assert_eq!(recovered, Recovered::default());
        wal.write(
            WriteBatch::new()
                .meta(b"m1".to_vec())
                .put(1, b"one".to_vec()),
        )
        .unwrap();
        wal.write(
            WriteBatch::new()
                .put(2, b"two".to_vec())
                .put(3, b"three".to_vec()),
        )
        .unwrap();
        wal.write(
            WriteBatch::new()
                .put(2, b"TWO".to_vec())
                .meta(b"m2".to_vec()),
        )
        .unwrap();
        wal.write(WriteBatch::new().truncate_below(2)).unwrap();
        // Below the truncation point: dropped, now and on replay.
        wal.write(WriteBatch::new().put(1, b"late".to_vec()))
            .unwrap();
        assert_eq!(
            wal.stats()
                .puts_below_truncation_dropped
                .load(Ordering::Relaxed),
            1
        );
    }
    let (_wal, recovered) = open(dir.path());
    assert_eq!(recovered.meta.as_deref(), Some(&b"m2"[..]));
    assert_eq!(
        recovered.positions,
        BTreeMap::from([(2, b"TWO".to_vec()), (3, b"three".to_vec())])
    );
    assert_eq!(recovered.truncated_below, 2);
    assert_eq!(recovered.torn_tail, None);
}

#[test]
fn the_handle_is_cloneable_and_shareable_across_threads() {
    fn assert_shareable<T: Clone + Send + Sync + 'static>() {}
    assert_shareable::<Wal>();
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_wal, _) = open(dir.path());
    assert!(matches!(
        Wal::open(dir.path(), WalOptions::default()),
        Err(WalError::Locked { .. })
    ));
}

#[test]
fn a_crash_at_every_byte_of_the_last_batch_recovers_the_previous_state() {
    let dir = tempfile::tempdir().unwrap();
    let before_len;
    let expected_before;
    {
        let (wal, _) = open(dir.path());
        wal.write(WriteBatch::new().meta(b"meta".to_vec()).put(7, vec![7; 40]))
            .unwrap();
        before_len = records_end(&only_segment(dir.path()));
        expected_before = Recovered {
            meta: Some(b"meta".to_vec()),
            positions: BTreeMap::from([(7, vec![7; 40])]),
            truncated_below: 0,
            torn_tail: None,
        };
        // The last batch: two records, so cuts between them test batch atomicity.
        wal.write(
            WriteBatch::new()
                .put(8, vec![8; 30])
                .meta(b"newer".to_vec()),
        )
        .unwrap();
    }
    let segment = only_segment(dir.path());
    let full_len = records_end(&segment);
    assert!(full_len > before_len);
    assert!(
        fs::metadata(&segment).unwrap().len() > full_len,
        "small commits keep zeros ahead of their records"
    );

    // An append cut short leaves a shorter file; a write into the runway cut
    // short leaves zeros where its last bytes should be.
    for zeros_after_cut in [false, true] {
        for cut in before_len..full_len {
            let crash = tempfile::tempdir().unwrap();
            copy_dir(dir.path(), crash.path());
            let crashed_segment = crash.path().join(segment.file_name().unwrap());
            let file = OpenOptions::new()
                .write(true)
                .open(&crashed_segment)
                .unwrap();
            if zeros_after_cut {
                file.write_all_at(&vec![0; (full_len - cut) as usize], cut)
                    .unwrap();
            } else {
                file.set_len(cut).unwrap();
            }
            drop(file);
            let (wal, recovered) = open(crash.path());
            let torn = recovered.torn_tail.clone();
            assert_eq!(
                Recovered {
                    torn_tail: None,
                    ..recovered
                },
                expected_before,
                "cut at {cut}, zeros after it: {zeros_after_cut}"
            );
            if cut == before_len {
                assert_eq!(torn, None);
            } else {
                let torn = torn.unwrap_or_else(|| {
                    panic!("cut at {cut}, zeros after it: {zeros_after_cut}: no torn tail reported")
                });
                assert_eq!(torn.offset, before_len);
                if !zeros_after_cut {
                    assert_eq!(torn.dropped_bytes, cut - before_len);
                }
            }
            // The store keeps working after the cut, and what it writes next survives.
            wal.write(WriteBatch::new().put(9, b"after".to_vec()))
                .unwrap();
            drop(wal);
            let (_, reopened) = open(crash.path());
            assert_eq!(reopened.torn_tail, None, "cut at {cut}");
            assert_eq!(
                reopened.positions.get(&9).map(Vec::as_slice),
                Some(&b"after"[..])
            );
        }
    }
}

#[test]
fn zeros_after_the_last_whole_batch_are_kept_and_written_over() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, _) = open(dir.path());
        wal.write(WriteBatch::new().put(1, b"x".to_vec())).unwrap();
        assert_eq!(
            wal.stats().runway_bytes_zeroed.load(Ordering::Relaxed),
            DEFAULT_RUNWAY_BYTES
        );
    }
    let segment = only_segment(dir.path());
    let end = records_end(&segment);
    // Also what a file system may leave when it extended a file the data never
    // reached: more zeros.
    let len = fs::metadata(&segment).unwrap().len();
    assert_eq!(len, end + DEFAULT_RUNWAY_BYTES);
    OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(len + 4096)
        .unwrap();
    {
        let (wal, recovered) = open(dir.path());
        assert_eq!(recovered.positions.len(), 1);
        assert_eq!(recovered.torn_tail, None);
        assert_eq!(fs::metadata(&segment).unwrap().len(), len + 4096);
        wal.write(WriteBatch::new().put(2, b"y".to_vec())).unwrap();
        // Right after the first record, over the zeros; no new ones needed.
        assert_eq!(records_end(&segment), end + RECORD_HEADER_BYTES as u64 + 1);
        assert_eq!(fs::metadata(&segment).unwrap().len(), len + 4096);
        assert_eq!(wal.stats().runway_bytes_zeroed.load(Ordering::Relaxed), 0);
    }
    let (_, recovered) = open(dir.path());
    assert_eq!(
        recovered.positions,
        BTreeMap::from([(1, b"x".to_vec()), (2, b"y".to_vec())])
    );
    assert_eq!(recovered.torn_tail, None);
}

#[test]
fn the_runway_is_topped_up_by_small_commits_and_left_out_of_bulk_ones() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions {
        runway_bytes: 64 * 1024,
        ..WalOptions::default()
    };
    let (wal, _) = open_with(dir.path(), options);
    let segment = only_segment(dir.path());
    let zeroed = || wal.stats().runway_bytes_zeroed.load(Ordering::Relaxed);
    let ahead = || fs::metadata(&segment).unwrap().len() - records_end(&segment);
    for position in 0..400 {
        wal.write(WriteBatch::new().put(position, vec![1; 200]))
            .unwrap();
        // Topped up whenever less than half is left.
        assert!(ahead() >= 32 * 1024, "{} bytes ahead", ahead());
        assert!(ahead() <= 64 * 1024, "{} bytes ahead", ahead());
    }
    let zeroed_by_small_commits = zeroed();
    assert!(
        zeroed_by_small_commits >= 400 * 200,
        "{zeroed_by_small_commits}"
    );
    // A commit of a quarter of the runway or more appends past it as it is.
    for position in 400..410 {
        wal.write(WriteBatch::new().put(position, vec![2; 16 * 1024]))
            .unwrap();
    }
    assert_eq!(ahead(), 0);
    assert_eq!(zeroed(), zeroed_by_small_commits);
    drop(wal);

    let off = WalOptions {
        runway_bytes: 0,
        ..WalOptions::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open_with(dir.path(), off);
    wal.write(WriteBatch::new().put(1, vec![1; 200])).unwrap();
    let segment = only_segment(dir.path());
    assert_eq!(fs::metadata(&segment).unwrap().len(), records_end(&segment));
}

/// Writes 40 records of 200 bytes into 4 KiB segments; returns the segments.
fn forty_records_in_small_segments(dir: &Path) -> Vec<(u64, PathBuf)> {
    {
        let (wal, _) = open_with(dir, small_segments());
        for position in 0..40u64 {
            wal.write(WriteBatch::new().put(position, vec![1; 200]))
                .unwrap();
        }
    }
    let segments = list_segments(dir).unwrap();
    assert!(segments.len() >= 2);
    segments
}

#[test]
fn a_sealed_segment_is_cut_to_its_records_and_zeros_in_one_are_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let segments = forty_records_in_small_segments(dir.path());
    let (last, sealed) = segments.split_last().unwrap();
    for (_, path) in sealed {
        assert_eq!(fs::metadata(path).unwrap().len(), records_end(path));
    }
    // The runway, capped at the segment size.
    let last_len = fs::metadata(&last.1).unwrap().len();
    assert!(last_len > records_end(&last.1));
    assert!(last_len <= small_segments().segment_size_bytes);
    let (_, recovered) = open_with(dir.path(), small_segments());
    assert_eq!(recovered.positions.len(), 40);
    assert_eq!(recovered.torn_tail, None);

    let first = &sealed[0].1;
    let len = fs::metadata(first).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(first)
        .unwrap()
        .set_len(len + 512)
        .unwrap();
    match Wal::open(dir.path(), small_segments()) {
        Err(WalError::Corrupt { path, offset, .. }) => {
            assert_eq!(&path, first);
            assert_eq!(offset, len);
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

/// Writes three batches and returns the offsets of their first records.
fn three_batches(dir: &Path) -> [u64; 3] {
    let (wal, _) = open(dir);
    let segment_len = || records_end(&only_segment(dir));
    let mut offsets = [0; 3];
    for (i, offset) in offsets.iter_mut().enumerate() {
        *offset = if i == 0 {
            SEGMENT_HEADER_BYTES as u64
        } else {
            segment_len()
        };
        wal.write(WriteBatch::new().put(100 + i as u64, vec![i as u8; 64]))
            .unwrap();
    }
    offsets
}

fn flip_bit(path: &Path, offset: u64, bit: u8) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 1 << bit;
    fs::write(path, bytes).unwrap();
}

#[test]
fn a_flipped_bit_in_a_payload_is_an_error_naming_file_offset_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let offsets = three_batches(dir.path());
    let segment = only_segment(dir.path());
    flip_bit(&segment, offsets[1] + RECORD_HEADER_BYTES as u64 + 10, 3);
    match Wal::open(dir.path(), WalOptions::default()) {
        Err(WalError::Corrupt {
            path,
            offset,
            position,
            ..
        }) => {
            assert_eq!(path, segment);
            assert_eq!(offset, offsets[1]);
            assert_eq!(position, Some(101));
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn a_flipped_bit_in_a_record_header_is_an_error_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let offsets = three_batches(dir.path());
    let segment = only_segment(dir.path());
    // Bit 7 of the length's high byte: unchecked, it would look like a record running
    // past the end of the file, and the later batches would be silently lost.
    flip_bit(&segment, offsets[1] + 7, 7);
    let error = Wal::open(dir.path(), WalOptions::default()).unwrap_err();
    assert!(
        matches!(&error, WalError::Corrupt { offset, .. } if *offset == offsets[1]),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains(&segment.display().to_string()),
        "{message}"
    );
    assert!(
        message.contains(&format!("offset {}", offsets[1])),
        "{message}"
    );
}

#[test]
fn every_single_bit_flip_before_the_last_record_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let offsets = three_batches(dir.path());
    let segment = only_segment(dir.path());
    let pristine = fs::read(&segment).unwrap();
    let (_, expected) = open(dir.path());
    // Every byte of the first two records and of the segment header (one bit each:
    // bit number varies with the offset to cover all eight).
    for offset in 0..offsets[2] {
        fs::write(&segment, &pristine).unwrap();
        flip_bit(&segment, offset, (offset % 8) as u8);
        match Wal::open(dir.path(), WalOptions::default()) {
            Err(WalError::Corrupt { .. }) => {}
            Ok((_, recovered)) => {
                panic!("flip at {offset} served {recovered:?}, expected {expected:?}")
            }
            Err(other) => panic!("flip at {offset}: unexpected {other}"),
        }
    }
}

#[test]
fn a_short_segment_before_the_last_is_corruption_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let segments = forty_records_in_small_segments(dir.path());
    let first = &segments[0].1;
    let len = fs::metadata(first).unwrap().len();
    // Sealed segments were fdatasynced before the next was created: a short one
    // lost acknowledged data, and must not be papered over.
    OpenOptions::new()
        .write(true)
        .open(first)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    match Wal::open(dir.path(), small_segments()) {
        Err(WalError::Corrupt { path, .. }) => assert_eq!(&path, first),
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn concurrent_writers_share_fdatasyncs() {
    const WRITERS: usize = 16;
    const BATCHES_PER_WRITER: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(dir.path());
    let barrier = Arc::new(Barrier::new(WRITERS));
    let threads: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let wal = wal.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..BATCHES_PER_WRITER {
                    let position = (writer * BATCHES_PER_WRITER + i) as u64;
                    wal.write(WriteBatch::new().put(position, vec![writer as u8; 256]))
                        .unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let stats = wal.stats();
    let batches = stats.batches_written.load(Ordering::Relaxed);
    let fdatasyncs = stats.fdatasyncs.load(Ordering::Relaxed);
    assert_eq!(batches, (WRITERS * BATCHES_PER_WRITER) as u64);
    eprintln!("{fdatasyncs} fdatasyncs for {batches} batches from {WRITERS} writers");
    // Loose on purpose: on a disk whose fdatasync costs nothing (tmpfs, a CI runner
    // with eatmydata) there is little to share. The bench shows the real ratio.
    assert!(
        fdatasyncs * 4 < batches * 3,
        "{fdatasyncs} fdatasyncs for {batches} batches: group commit is not grouping"
    );
    drop(wal);
    let (_, recovered) = open(dir.path());
    assert_eq!(recovered.positions.len(), WRITERS * BATCHES_PER_WRITER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_writers_are_durable_when_they_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(dir.path());
    let tasks: Vec<_> = (0..32u64)
        .map(|position| {
            let wal = wal.clone();
            tokio::spawn(async move {
                wal.write_async(WriteBatch::new().put(position, vec![1; 16]))
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let path = dir.path().to_path_buf();
    // Dropping joins the writer thread: do it off the async workers.
    tokio::task::spawn_blocking(move || {
        drop(wal);
        let (_, recovered) = open(&path);
        assert_eq!(recovered.positions.len(), 32);
    })
    .await
    .unwrap();
}

#[test]
fn truncation_deletes_whole_segments_and_reopen_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open_with(dir.path(), small_segments());
    for position in 0..200u64 {
        wal.write(WriteBatch::new().put(position, vec![position as u8; 200]))
            .unwrap();
    }
    let before_bytes = disk_usage_bytes(dir.path()).unwrap();
    let segments_before = list_segments(dir.path()).unwrap().len();
    wal.write(WriteBatch::new().truncate_below(190)).unwrap();
    // Reclaiming runs after the group's waiters are completed: one more write waits
    // for it.
    wal.write(WriteBatch::new().meta(b"after".to_vec()))
        .unwrap();
    let after_bytes = disk_usage_bytes(dir.path()).unwrap();
    let segments_after = list_segments(dir.path()).unwrap().len();
    eprintln!(
        "truncate below 190 of 200: {before_bytes} -> {after_bytes} bytes, {segments_before} -> {segments_after} segments"
    );
    assert!(
        segments_after < segments_before / 4,
        "{segments_before} -> {segments_after}"
    );
    assert!(
        after_bytes * 4 < before_bytes,
        "{before_bytes} -> {after_bytes}"
    );
    drop(wal);
    let (_, recovered) = open_with(dir.path(), small_segments());
    assert_eq!(recovered.truncated_below, 190);
    assert_eq!(
        recovered.positions,
        (190..200u64).map(|p| (p, vec![p as u8; 200])).collect()
    );
}

#[test]
fn overwrites_are_compacted_and_disk_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open_with(dir.path(), small_segments());
    let mut peak_bytes = 0;
    // 8 live positions of 200 bytes (~2 KiB live) overwritten 100 times each: ~180 KiB
    // written in all.
    for round in 0..100u64 {
        for position in 0..8u64 {
            wal.write(
                WriteBatch::new()
                    .put(position, vec![(round + position) as u8; 200])
                    .meta(round.to_le_bytes().to_vec()),
            )
            .unwrap();
        }
        peak_bytes = peak_bytes.max(disk_usage_bytes(dir.path()).unwrap());
    }
    let written = wal.stats().bytes_appended.load(Ordering::Relaxed);
    eprintln!(
        "{written} bytes appended, peak on disk {peak_bytes}, compactions {}",
        wal.stats().segments_compacted.load(Ordering::Relaxed)
    );
    // Live ~2 KiB: a few segments of 4 KiB at most.
    assert!(peak_bytes <= 4 * 4096 + 4096, "peak {peak_bytes}");
    assert!(written > 10 * peak_bytes);
    drop(wal);
    let (_, recovered) = open_with(dir.path(), small_segments());
    assert_eq!(recovered.meta, Some(99u64.to_le_bytes().to_vec()));
    assert_eq!(
        recovered.positions,
        (0..8u64).map(|p| (p, vec![(99 + p) as u8; 200])).collect()
    );
}

/// 4 KiB segments and a small compaction step, so compacting one segment takes
/// many group commits.
fn incremental_compaction(step_bytes: usize) -> WalOptions {
    WalOptions {
        segment_size_bytes: 4096,
        compaction_step_bytes: step_bytes,
        ..WalOptions::default()
    }
}

/// What a crash leaves of `from` right now: its segments as they are. The writer may
/// delete a compacted segment concurrently (after completing the waiters); then the
/// image lacks it, which is as valid a crash state as one that has it.
fn crash_image(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for (_, path) in list_segments(from).unwrap() {
        match fs::copy(&path, to.path().join(path.file_name().unwrap())) {
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => panic!("copying {}: {error}", path.display()),
        }
    }
    to
}

fn assert_recovers(recovered: &Recovered, model: &Model, context: &str) {
    assert_eq!(recovered.meta, model.meta, "{context}");
    assert_eq!(recovered.positions, model.positions, "{context}");
    assert_eq!(
        recovered.truncated_below, model.truncated_below,
        "{context}"
    );
}

/// Bytes the live records of `model` take on disk.
fn live_bytes(model: &Model) -> u64 {
    let record = |payload: usize| (RECORD_HEADER_BYTES + payload) as u64;
    model
        .positions
        .values()
        .map(|bytes| record(bytes.len()))
        .sum::<u64>()
        + model.meta.as_ref().map_or(0, |meta| record(meta.len()))
        + if model.truncated_below > 0 {
            record(0)
        } else {
            0
        }
}

/// The replica's pattern: every position written twice (accepted, then learned),
/// the meta now and then, a truncation now and then. Half of each sealed segment is
/// garbage, so every roll starts a compaction.
fn replica_batch(round: u64, pass: u8) -> WriteBatch {
    let mut batch = WriteBatch::new().put(round, vec![(round as u8).wrapping_add(pass); 60]);
    if round.is_multiple_of(10) {
        batch = batch.meta(round.to_le_bytes().to_vec());
    }
    if round % 40 == 39 && pass == 1 {
        batch = batch.truncate_below(round - 30);
    }
    batch
}

#[test]
fn a_crash_in_the_middle_of_an_incremental_compaction_replays_to_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let options = incremental_compaction(256);
    let (mut wal, _) = open_with(dir.path(), options.clone());
    let mut model = Model::default();
    let mut mid_compaction_images = 0;
    let mut torn_images = 0;
    let mut reopened_mid_compaction = false;
    for round in 0..150u64 {
        for pass in 0..2u8 {
            let stats = wal.stats().clone();
            let copied_before = stats.compaction_bytes_copied.load(Ordering::Relaxed);
            let compacted_before = stats.segments_compacted.load(Ordering::Relaxed);
            let segments_before = list_segments(dir.path()).unwrap();
            let last_before = segments_before.last().cloned().unwrap();
            let len_before = records_end(&last_before.1);
            let model_before = model.clone();
            let batch = replica_batch(round, pass);
            model.apply(&batch);
            wal.write(batch).unwrap();
            let copied = stats.compaction_bytes_copied.load(Ordering::Relaxed) > copied_before;
            let compacted = stats.segments_compacted.load(Ordering::Relaxed) > compacted_before;
            if !copied || compacted {
                continue;
            }
            // This commit copied records and the segment they came from is still
            // there: the middle of an incremental compaction.
            mid_compaction_images += 1;
            let image = crash_image(dir.path());
            let (image_wal, recovered) = open_with(image.path(), options.clone());
            assert_recovers(
                &recovered,
                &model,
                &format!("image after round {round}.{pass}"),
            );
            assert_eq!(recovered.torn_tail, None);
            drop(image_wal);
            // And a crash inside this commit's bytes (the copies, then the batch):
            // cut inside its last record, then inside its first one (a copy). Either
            // way, the state before it. Only where the image has every segment there
            // was before the commit: a segment is deleted after the fdatasync of its
            // last copies, so a torn commit together with the deletion is no state
            // a crash can leave.
            let ids = |segments: Vec<(u64, PathBuf)>| -> Vec<u64> {
                segments.into_iter().map(|(id, _)| id).collect()
            };
            let image_segments = list_segments(image.path()).unwrap();
            let last_after = image_segments.last().cloned().unwrap();
            if ids(image_segments) == ids(segments_before) {
                let len_after = records_end(&last_after.1);
                for cut in [len_after - 1, len_before + 1] {
                    // A fresh image each time: opening one cuts its torn tail.
                    let torn_image = crash_image(image.path());
                    let torn_segment = torn_image.path().join(last_after.1.file_name().unwrap());
                    OpenOptions::new()
                        .write(true)
                        .open(&torn_segment)
                        .unwrap()
                        .set_len(cut)
                        .unwrap();
                    // What is left of the commit; if only zeros, nothing is torn.
                    let left = fs::read(&torn_segment).unwrap()[len_before as usize..].to_vec();
                    let (_, recovered) = open_with(torn_image.path(), options.clone());
                    assert_recovers(
                        &recovered,
                        &model_before,
                        &format!("image of round {round}.{pass} cut at {cut}"),
                    );
                    assert_eq!(
                        recovered.torn_tail.is_some(),
                        left.iter().any(|&b| b != 0),
                        "cut at {cut}"
                    );
                }
                torn_images += 1;
            }
            // Once, really stop the store in the middle and go on with the reopened
            // one: the compaction restarts and finishes.
            if !reopened_mid_compaction && round > 60 {
                reopened_mid_compaction = true;
                drop(wal);
                let (reopened, recovered) = open_with(dir.path(), options.clone());
                assert_recovers(&recovered, &model, "reopened in the middle of a compaction");
                wal = reopened;
            }
        }
    }
    let stats = wal.stats().clone();
    drop(wal);
    let (_, recovered) = open_with(dir.path(), options);
    assert_recovers(&recovered, &model, "final reopen");
    eprintln!(
        "{mid_compaction_images} images in the middle of a compaction, {torn_images} torn; \
         after the reopen: {} segments compacted, {} bytes copied",
        stats.segments_compacted.load(Ordering::Relaxed),
        stats.compaction_bytes_copied.load(Ordering::Relaxed)
    );
    assert!(reopened_mid_compaction);
    assert!(mid_compaction_images >= 20, "{mid_compaction_images}");
    assert!(torn_images >= 10, "{torn_images}");
    assert!(stats.segments_compacted.load(Ordering::Relaxed) >= 2);
}

#[test]
fn overwrites_and_truncations_during_a_compaction_are_not_resurrected() {
    let dir = tempfile::tempdir().unwrap();
    // One record per commit: the compaction of the first segment spans dozens of
    // commits, and the records overwritten below are certainly still pending.
    let options = incremental_compaction(1);
    let (wal, _) = open_with(dir.path(), options.clone());
    let stats = wal.stats().clone();
    let mut model = Model::default();
    let mut round = 0u64;
    let write = |wal: &Wal, model: &mut Model, batch: WriteBatch| {
        model.apply(&batch);
        wal.write(batch).unwrap();
    };
    while stats.compaction_bytes_copied.load(Ordering::Relaxed) == 0 {
        for pass in 0..2u8 {
            let batch = WriteBatch::new()
                .put(round, vec![(round as u8).wrapping_add(pass); 60])
                .meta(round.to_le_bytes().to_vec());
            write(&wal, &mut model, batch);
        }
        round += 1;
        assert!(round < 1000, "no compaction started");
    }
    // The first segment (positions 0..~23) is being compacted, one record per
    // commit, in file order: positions 10, 12, 14 are still pending there.
    assert!(round >= 16, "{round}");
    let copied = stats.compaction_bytes_copied.load(Ordering::Relaxed);
    assert!(
        copied <= 3 * (RECORD_HEADER_BYTES as u64 + 60) + 64,
        "{copied}"
    );
    write(
        &wal,
        &mut model,
        WriteBatch::new()
            .put(10, b"new ten".to_vec())
            .put(12, b"new twelve".to_vec()),
    );
    write(
        &wal,
        &mut model,
        WriteBatch::new().put(14, b"new fourteen".to_vec()),
    );
    write(&wal, &mut model, WriteBatch::new().truncate_below(8));
    // Keep writing until that compaction is over.
    while stats.segments_compacted.load(Ordering::Relaxed) == 0 {
        write(
            &wal,
            &mut model,
            WriteBatch::new().put(round, vec![round as u8; 60]),
        );
        round += 1;
        assert!(round < 2000, "the compaction never finished");
    }
    drop(wal);
    let (_, recovered) = open_with(dir.path(), options);
    assert_recovers(&recovered, &model, "after the compaction");
    assert_eq!(recovered.positions.get(&10), Some(&b"new ten".to_vec()));
    assert_eq!(recovered.positions.get(&12), Some(&b"new twelve".to_vec()));
    assert_eq!(
        recovered.positions.get(&14),
        Some(&b"new fourteen".to_vec())
    );
    assert_eq!(recovered.positions.range(..8).count(), 0);
    assert_eq!(recovered.truncated_below, 8);
}

#[test]
fn a_long_run_with_many_rolls_keeps_disk_usage_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions {
        segment_size_bytes: 8192,
        compaction_step_bytes: 1024,
        ..WalOptions::default()
    };
    let (wal, _) = open_with(dir.path(), options.clone());
    let mut model = Model::default();
    let mut peak_bytes = 0;
    let mut worst_excess = i64::MIN;
    for round in 0..1200u64 {
        for pass in 0..2u8 {
            let batch = replica_batch(round, pass);
            model.apply(&batch);
            wal.write(batch).unwrap();
            let on_disk = disk_usage_bytes(dir.path()).unwrap();
            peak_bytes = peak_bytes.max(on_disk);
            let bound = COMPACTION_GARBAGE_RATIO * live_bytes(&model) + 3 * 8192;
            worst_excess = worst_excess.max(on_disk as i64 - bound as i64);
            assert!(
                on_disk <= bound,
                "round {round}: {on_disk} bytes on disk, bound {bound}"
            );
        }
    }
    let stats = wal.stats().clone();
    let appended = stats.bytes_appended.load(Ordering::Relaxed);
    eprintln!(
        "{appended} bytes appended, peak on disk {peak_bytes}, closest to the bound {worst_excess}, \
         {} segments compacted, {} deleted",
        stats.segments_compacted.load(Ordering::Relaxed),
        stats.segments_deleted.load(Ordering::Relaxed)
    );
    assert!(appended > 20 * 8192, "{appended}");
    assert!(stats.segments_compacted.load(Ordering::Relaxed) >= 10);
    drop(wal);
    let (_, recovered) = open_with(dir.path(), options);
    assert_recovers(&recovered, &model, "after the long run");
}

#[test]
fn a_single_group_commit_never_copies_more_than_the_compaction_step() {
    const STEP: usize = 2048;
    const WRITERS: u64 = 8;
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions {
        segment_size_bytes: 16 * 1024,
        compaction_step_bytes: STEP,
        ..WalOptions::default()
    };
    let (wal, _) = open_with(dir.path(), options.clone());
    // 8 concurrent writers of 82-byte records: a group holds at most 8 batches
    // (656 bytes), so the step, not twice the group, is the bound.
    let threads: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let wal = wal.clone();
            std::thread::spawn(move || {
                for index in 0..150u64 {
                    let position = index * WRITERS + writer;
                    for pass in 0..2u8 {
                        let bytes = vec![(position as u8).wrapping_add(pass); 60];
                        wal.write(WriteBatch::new().put(position, bytes)).unwrap();
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let stats = wal.stats().clone();
    drop(wal);
    let max_per_commit = stats
        .max_compaction_bytes_per_commit
        .load(Ordering::Relaxed);
    let copied = stats.compaction_bytes_copied.load(Ordering::Relaxed);
    eprintln!(
        "copied {copied} bytes, at most {max_per_commit} per commit, {} segments compacted",
        stats.segments_compacted.load(Ordering::Relaxed)
    );
    assert!(max_per_commit > 0);
    assert!(max_per_commit <= STEP as u64, "{max_per_commit}");
    // Each compacted segment held ~8 KiB of live records: many commits each.
    assert!(copied >= 8 * STEP as u64, "{copied}");
    assert!(stats.segments_compacted.load(Ordering::Relaxed) >= 2);
    let (_, recovered) = open_with(dir.path(), options);
    let expected: BTreeMap<u64, Vec<u8>> = (0..150 * WRITERS)
        .map(|position| (position, vec![(position as u8).wrapping_add(1); 60]))
        .collect();
    assert_eq!(recovered.positions, expected);
}

#[test]
fn an_oversized_record_is_refused_without_harming_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(dir.path());
    let error = wal
        .write(WriteBatch::new().put(1, vec![0; MAX_RECORD_PAYLOAD_BYTES + 1]))
        .unwrap_err();
    assert!(matches!(error, WalError::RecordTooLarge { .. }), "{error}");
    wal.write(WriteBatch::new().put(2, vec![2])).unwrap();
    drop(wal);
    let (_, recovered) = open(dir.path());
    assert_eq!(recovered.positions, BTreeMap::from([(2, vec![2])]));
}

/// The model the store must agree with.
#[derive(Debug, Default, Clone, PartialEq)]
struct Model {
    meta: Option<Vec<u8>>,
    positions: BTreeMap<u64, Vec<u8>>,
    truncated_below: u64,
}

impl Model {
    fn apply(&mut self, batch: &WriteBatch) {
        for op in &batch.ops {
            match op {
                WalOp::Meta(bytes) => self.meta = Some(bytes.clone()),
                WalOp::Put { position, bytes } => {
                    if *position >= self.truncated_below {
                        self.positions.insert(*position, bytes.clone());
                    }
                }
                WalOp::PutParts { position, parts } => {
                    if *position >= self.truncated_below {
                        self.positions.insert(*position, parts.to_vec());
                    }
                }
                WalOp::TruncateBelow(bound) => {
                    self.truncated_below = self.truncated_below.max(*bound);
                    self.positions = self.positions.split_off(&self.truncated_below);
                }
            }
        }
    }
}

fn op_strategy() -> impl Strategy<Value = WalOp> {
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(WalOp::Meta),
        6 => (0..40u64, proptest::collection::vec(any::<u8>(), 0..300))
            .prop_map(|(position, bytes)| WalOp::Put { position, bytes }),
        // Any split of a payload, including empty pieces, is the same record;
        // values from 4 KiB are written from where they lie (`gather`).
        2 => (
            0..40u64,
            proptest::collection::vec(any::<u8>(), 0..20),
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..300),
                proptest::collection::vec(any::<u8>(), 4090..4200),
            ],
            proptest::collection::vec(any::<u8>(), 0..4),
        )
            .prop_map(|(position, head, value, tail)| WalOp::PutParts {
                position,
                parts: RecordParts {
                    head,
                    value: value.into(),
                    tail,
                },
            }),
        1 => (0..40u64).prop_map(WalOp::TruncateBelow),
    ]
}

#[derive(Debug, Clone)]
enum Step {
    Write(Vec<WalOp>),
    Reopen,
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => proptest::collection::vec(op_strategy(), 0..6).prop_map(Step::Write),
        1 => Just(Step::Reopen),
    ]
}

proptest! {
    // Each case does real fdatasyncs; a few dozen cases cover rolling, deletion and
    // compaction with 1 KiB segments, in steps of 1 to 3 records, with reopens in the
    // middle of compactions.
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn random_batches_agree_with_a_btreemap_model(steps in proptest::collection::vec(step_strategy(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let options = WalOptions {
            segment_size_bytes: 1024,
            compaction_step_bytes: 200,
            ..WalOptions::default()
        };
        let (mut wal, _) = open_with(dir.path(), options.clone());
        let mut model = Model::default();
        let check = |recovered: &Recovered, model: &Model| {
            prop_assert_eq!(&recovered.meta, &model.meta);
            prop_assert_eq!(&recovered.positions, &model.positions);
            prop_assert_eq!(recovered.truncated_below, model.truncated_below);
            prop_assert_eq!(&recovered.torn_tail, &None);
            Ok(())
        };
        for step in steps {
            match step {
                Step::Write(ops) => {
                    let batch = WriteBatch { ops };
                    model.apply(&batch);
                    wal.write(batch).unwrap();
                }
                Step::Reopen => {
                    drop(wal);
                    let (reopened, recovered) = open_with(dir.path(), options.clone());
                    check(&recovered, &model)?;
                    wal = reopened;
                }
            }
        }
        drop(wal);
        let (_, recovered) = open_with(dir.path(), options);
        check(&recovered, &model)?;
    }
}

/// Throughput and latency with real fdatasync. Run with
/// `cargo test --release wal_bench -- --ignored --nocapture`; set `WAL_BENCH_DIR` to
/// measure a particular disk (the default is the system temporary directory).
#[test]
#[ignore]
fn wal_bench() {
    const RECORD_BYTES: usize = 256;
    const DURATION: Duration = Duration::from_secs(3);
    let base = std::env::var_os("WAL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let scratch = tempfile::tempdir_in(&base).unwrap();

    // The floor: append 256 bytes + fdatasync, one thread, no store.
    let raw_path = scratch.path().join("raw");
    let mut raw = File::create(&raw_path).unwrap();
    let mut raw_latencies = Vec::new();
    let started = Instant::now();
    while started.elapsed() < DURATION {
        let t = Instant::now();
        raw.write_all(&[1; RECORD_BYTES]).unwrap();
        raw.sync_data().unwrap();
        raw_latencies.push(t.elapsed());
    }
    report(
        "raw write+fdatasync",
        1,
        &mut raw_latencies,
        started.elapsed(),
    );

    // Alternating, so a change in the disk's speed shows in both.
    let runs = [
        (1usize, true),
        (1, false),
        (64, true),
        (64, false),
        (1, true),
        (1, false),
    ];
    for (run, (writers, runway)) in runs.into_iter().enumerate() {
        let dir = scratch.path().join(format!("wal-{run}"));
        let options = WalOptions {
            runway_bytes: if runway { DEFAULT_RUNWAY_BYTES } else { 0 },
            ..WalOptions::default()
        };
        let (wal, _) = open_with(&dir, options);
        let started = Instant::now();
        let threads: Vec<_> = (0..writers)
            .map(|writer| {
                let wal = wal.clone();
                std::thread::spawn(move || {
                    let mut latencies = Vec::new();
                    let mut position = writer as u64 * 1_000_000_000;
                    while started.elapsed() < DURATION {
                        let t = Instant::now();
                        wal.write(WriteBatch::new().put(position, vec![2; RECORD_BYTES]))
                            .unwrap();
                        latencies.push(t.elapsed());
                        position += 1;
                    }
                    latencies
                })
            })
            .collect();
        let mut latencies: Vec<Duration> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let elapsed = started.elapsed();
        let what = if runway { "wal" } else { "wal, no runway" };
        report(what, writers, &mut latencies, elapsed);
        eprintln!(
            "    fdatasyncs {} for {} batches",
            wal.stats().fdatasyncs.load(Ordering::Relaxed),
            wal.stats().batches_written.load(Ordering::Relaxed)
        );
    }
}

fn report(what: &str, writers: usize, latencies: &mut [Duration], elapsed: Duration) {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    eprintln!(
        "{what:>22} writers {writers:>3}: {:>8.0} appends/s, p50 {:?}, p99 {:?}",
        latencies.len() as f64 / elapsed.as_secs_f64(),
        at(0.50),
        at(0.99)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    /// A crash during the last group commit loses at most that group, never serves
    /// part of a batch, and never serves garbage: whatever prefix of the last
    /// batch's bytes reached the disk, recovery yields the state before it.
    #[test]
    fn a_crash_inside_the_last_batch_recovers_the_state_before_it(
        earlier in proptest::collection::vec(proptest::collection::vec(op_strategy(), 1..6), 0..12),
        last in proptest::collection::vec(op_strategy(), 1..6),
        cut in any::<prop::sample::Index>(),
        zeros_after_cut in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let options = WalOptions { segment_size_bytes: 1024, ..WalOptions::default() };
        let (wal, _) = open_with(dir.path(), options.clone());
        let mut model = Model::default();
        for ops in earlier {
            let batch = WriteBatch { ops };
            model.apply(&batch);
            wal.write(batch).unwrap();
        }
        let segments_before = list_segments(dir.path()).unwrap();
        let (_, last_segment) = segments_before.last().cloned().unwrap();
        let len_before = records_end(&last_segment);
        let stats = wal.stats().clone();
        let compactions_before = stats.segments_compacted.load(Ordering::Relaxed);
        wal.write(WriteBatch { ops: last }).unwrap();
        // Dropping joins the writer, which reclaims space after completing waiters.
        drop(wal);
        let unchanged_layout = list_segments(dir.path()).unwrap() == segments_before
            && stats.segments_compacted.load(Ordering::Relaxed) == compactions_before;
        // A roll or a compaction moves bytes that were already durable: cutting
        // them is not a crash. Those cases are covered by the model test.
        prop_assume!(unchanged_layout);
        let len_after = records_end(&last_segment);
        prop_assume!(len_after > len_before);
        let cut_at = len_before + cut.index((len_after - len_before) as usize) as u64;
        let file = OpenOptions::new().write(true).open(&last_segment).unwrap();
        if zeros_after_cut {
            // A write into the runway cut short: zeros where its last bytes were.
            let lost = &fs::read(&last_segment).unwrap()[cut_at as usize..len_after as usize];
            prop_assume!(lost.iter().any(|&b| b != 0));
            file.write_all_at(&vec![0; lost.len()], cut_at).unwrap();
        } else {
            file.set_len(cut_at).unwrap();
        }
        drop(file);
        let (_, recovered) = open_with(dir.path(), options);
        prop_assert_eq!(recovered.meta, model.meta);
        prop_assert_eq!(recovered.positions, model.positions);
        prop_assert_eq!(recovered.truncated_below, model.truncated_below);
        prop_assert_eq!(recovered.torn_tail.map(|t| t.offset), (cut_at > len_before).then_some(len_before));
    }
}

/// The fuzzers' entry points are the store's own code: `encode_segment` lays out
/// exactly what the writer writes, and `replay_in_memory` recovers exactly what
/// `Wal::open` recovers.
#[test]
fn in_memory_replay_and_encoding_match_the_store_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let batches = vec![
        WriteBatch::new()
            .meta(b"m1".to_vec())
            .put(1, b"one".to_vec()),
        WriteBatch::new()
            .put(2, b"two".to_vec())
            .put(3, b"three".to_vec()),
        // Large values are written from their own buffers (`gather`), more of
        // them than one pwritev call takes, between copied heads and tails.
        (0..1500u64).fold(WriteBatch::new(), |batch, i| {
            batch.put_parts(
                10 + i,
                RecordParts {
                    head: vec![1, 2, i as u8],
                    value: vec![i as u8; 4096 + (i as usize % 3)].into(),
                    tail: if i % 2 == 0 { vec![9] } else { Vec::new() },
                },
            )
        }),
        // Last: the torn tail below cuts into this one.
        WriteBatch::new().truncate_below(2).meta(b"m2".to_vec()),
    ];
    {
        let (wal, _) = open(dir.path());
        for batch in &batches {
            wal.write(batch.clone()).unwrap();
        }
    }
    let segment = only_segment(dir.path());
    let mut bytes = fs::read(&segment).unwrap();
    // The records, then the runway's zeros.
    let records = records_end(&segment) as usize;
    assert!(bytes[records..].iter().all(|&b| b == 0));
    bytes.truncate(records);
    assert!(
        bytes == encode_segment(1, &batches),
        "the store wrote other bytes than the encoding"
    );
    let (_wal, on_disk) = open(dir.path());
    assert_eq!(replay_in_memory(&[(1, &bytes)]).unwrap(), on_disk);

    // A torn tail is reported alike, without cutting anything.
    let torn = &bytes[..bytes.len() - 3];
    let recovered = replay_in_memory(&[(1, torn)]).unwrap();
    let tail = recovered.torn_tail.expect("a torn tail");
    assert_eq!(
        tail.dropped_bytes as usize,
        torn.len() - tail.offset as usize
    );
    assert_eq!(recovered.meta.as_deref(), Some(&b"m1"[..]));
}

/// Pages of `path` below `len` resident in the page cache, by mmap + mincore.
/// Only below `len`: the runway's zeros after the records stay cached
/// on purpose (a write into a page that is not cached would read it first), and
/// reading the file to find where its records end would cache them all.
fn resident_pages(path: &Path, len: u64) -> usize {
    use std::os::fd::AsRawFd;
    let file = File::open(path).unwrap();
    let len = len as usize;
    if len == 0 {
        return 0;
    }
    let page = 4096;
    let mut vec = vec![0u8; len.div_ceil(page)];
    // SAFETY: a private read-only mapping of an open file, unmapped before return;
    // mincore writes one byte per page into `vec`, which is that long.
    unsafe {
        let addr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(addr, libc::MAP_FAILED);
        assert_eq!(libc::mincore(addr, len, vec.as_mut_ptr()), 0);
        libc::munmap(addr, len);
    }
    vec.iter().filter(|b| **b & 1 == 1).count()
}

#[test]
fn durable_pages_leave_the_page_cache_and_the_records_stay_readable() {
    let dir = tempfile::tempdir().unwrap();
    let record = vec![0x5au8; 64 << 10];
    {
        let (wal, _) = open(dir.path());
        for position in 0..32 {
            wal.write(WriteBatch::new().put(position, record.clone()))
                .unwrap();
        }
        let segment = only_segment(dir.path());
        // 2 MiB written: at most the partial last page may stay cached (it is
        // rewritten by the next commit). A filesystem that ignores the hint
        // (tmpfs keeps everything in memory) has nothing to check.
        // The writer drops a commit's pages after it has answered the commit's
        // waiters, so the last commit's pages go a moment after `write` returns.
        let deadline = Instant::now() + Duration::from_secs(5);
        let records_end =
            SEGMENT_HEADER_BYTES as u64 + wal.stats().bytes_appended.load(Ordering::Relaxed);
        let mut resident = resident_pages(&segment, records_end);
        while resident > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
            resident = resident_pages(&segment, records_end);
        }
        if resident > 1 && stat_is_tmpfs(dir.path()) {
            eprintln!(
                "skipped: {} ignores POSIX_FADV_DONTNEED",
                dir.path().display()
            );
            return;
        }
        assert!(resident <= 1, "{resident} pages still cached");
        // Dropping clean pages loses nothing: later writes append after them.
        wal.write(WriteBatch::new().put(32, b"tail".to_vec()))
            .unwrap();
    }
    let (_, recovered) = open(dir.path());
    assert_eq!(recovered.positions.len(), 33);
    assert!(recovered
        .positions
        .values()
        .take(32)
        .all(|bytes| *bytes == record));
    assert_eq!(recovered.positions[&32], b"tail".to_vec());
}

fn stat_is_tmpfs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills the zeroed struct it is given from a NUL-terminated path.
    unsafe {
        let mut stat: libc::statfs = std::mem::zeroed();
        libc::statfs(c_path.as_ptr(), &mut stat) == 0 && stat.f_type == libc::TMPFS_MAGIC
    }
}
