//! Replies kept for retries (`Engine::keep_reply`): logged, restored by replay and by a
//! snapshot, forgotten after 24 hours, and bounded to the newest 65,536.

use pickline_engine::replies::{
    REPLIES_KEPT_BYTES_MAX, REPLIES_KEPT_MAX, REPLY_KEPT_LEN_MAX, REPLY_KEPT_MS,
};
use pickline_engine::{Engine, EngineConfig, EngineError, Event, MemoryLog, Record, Timestamp};
use std::sync::Arc;

const T0: Timestamp = Timestamp::from_ms(1_795_000_000_000);

fn engine() -> (Engine, Arc<MemoryLog>) {
    let log = Arc::new(MemoryLog::new());
    (
        Engine::with_log(EngineConfig::default(), log.clone()).unwrap(),
        log,
    )
}

/// What `e` keeps for `(principal, key)` at `now`: fingerprint and response.
fn kept(e: &Engine, principal: &str, key: &str, now: Timestamp) -> Option<(u64, Vec<u8>)> {
    e.kept_reply(principal, key, now)
        .map(|r| (r.fingerprint, r.response.to_vec()))
}

#[test]
fn a_kept_reply_survives_replay_and_a_snapshot() {
    let (e, log) = engine();
    e.keep_reply("oms", "k1", 7, b"first".to_vec(), T0).unwrap();
    e.keep_reply("pos", "k1", 8, b"other caller".to_vec(), T0)
        .unwrap();
    let later = Timestamp(T0.as_ms() + 1_000);
    // The same key again (after the first answer was forgotten, say): the newer one wins.
    e.keep_reply("oms", "k1", 9, b"second".to_vec(), later)
        .unwrap();
    assert_eq!(kept(&e, "oms", "k1", later), Some((9, b"second".to_vec())));
    assert_eq!(
        kept(&e, "pos", "k1", later),
        Some((8, b"other caller".to_vec()))
    );
    assert_eq!(kept(&e, "oms", "k2", later), None);

    let replayed = Engine::new(EngineConfig::default()).unwrap();
    for r in log.records() {
        replayed.replay(&r.record).unwrap();
    }
    let loaded = Engine::from_snapshot(
        EngineConfig::default(),
        Arc::new(MemoryLog::new()),
        &e.snapshot().unwrap().1,
    )
    .unwrap();
    for other in [&replayed, &loaded] {
        for (principal, key) in [("oms", "k1"), ("pos", "k1"), ("oms", "k2")] {
            assert_eq!(
                kept(other, principal, key, later),
                kept(&e, principal, key, later)
            );
        }
        assert_eq!(other.snapshot().unwrap().1, e.snapshot().unwrap().1);
    }
}

#[test]
fn a_kept_reply_is_forgotten_after_a_day_and_the_oldest_beyond_the_bound() {
    let (e, _) = engine();
    e.keep_reply("oms", "old", 1, b"x".to_vec(), T0).unwrap();
    let day = Timestamp(T0.as_ms() + REPLY_KEPT_MS);
    assert!(kept(&e, "oms", "old", Timestamp(day.as_ms() - 1)).is_some());
    assert_eq!(kept(&e, "oms", "old", day), None);
    // Keeping a newer answer drops the expired one for good (not just hides it).
    e.keep_reply("oms", "new", 2, b"y".to_vec(), day).unwrap();
    let snapshot = e.snapshot().unwrap().1;
    let loaded = Engine::from_snapshot(
        EngineConfig::default(),
        Arc::new(MemoryLog::new()),
        &snapshot,
    )
    .unwrap();
    assert_eq!(kept(&loaded, "oms", "old", T0), None);

    // Large answers: the byte bound lets the oldest go first.
    let (e, _) = engine();
    let big = vec![7u8; REPLY_KEPT_LEN_MAX];
    let n = REPLIES_KEPT_BYTES_MAX / REPLY_KEPT_LEN_MAX + 1;
    for i in 0..n {
        e.keep_reply("oms", &format!("big{i}"), 0, big.clone(), T0)
            .unwrap();
    }
    assert_eq!(kept(&e, "oms", "big0", T0), None, "over the byte bound");
    assert!(kept(&e, "oms", &format!("big{}", n - 1), T0).is_some());

    let (e, _) = engine();
    for i in 0..=REPLIES_KEPT_MAX {
        e.keep_reply("oms", &format!("k{i}"), i as u64, Vec::new(), T0)
            .unwrap();
    }
    assert_eq!(kept(&e, "oms", "k0", T0), None, "the oldest went");
    assert!(kept(&e, "oms", "k1", T0).is_some());
    assert!(kept(&e, "oms", &format!("k{REPLIES_KEPT_MAX}"), T0).is_some());
}

#[test]
fn misuse_keeps_nothing() {
    let (e, log) = engine();
    let too_long = vec![0; REPLY_KEPT_LEN_MAX + 1];
    assert!(matches!(
        e.keep_reply("oms", "k", 1, too_long, T0),
        Err(EngineError::InvalidRequest { .. })
    ));
    assert!(matches!(
        e.keep_reply("oms", "", 1, Vec::new(), T0),
        Err(EngineError::InvalidRequest { .. })
    ));
    assert!(log.records().is_empty());
    assert_eq!(kept(&e, "oms", "k", T0), None);
}

#[test]
fn a_reply_kept_record_survives_its_encoding() {
    let record = Record {
        at: T0,
        events: vec![Event::ReplyKept {
            principal: "oms".into(),
            key: "release-1".into(),
            fingerprint: 0xdead_beef_0bad_cafe,
            response: vec![8, 1, 16, 2],
        }],
    };
    let mut buf = Vec::new();
    record.encode(&mut buf);
    assert_eq!(Record::decode(&buf).unwrap(), record);
    for len in 0..buf.len() {
        assert!(Record::decode(&buf[..len]).is_err(), "cut at {len}");
    }
}
