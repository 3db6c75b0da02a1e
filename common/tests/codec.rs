//! Property tests of the batch codec: valid batches round-trip; arbitrary and mutated bytes never panic
//! and never allocate more than a small multiple of the byte limit; timestamps outside the sane range are
//! refused wherever they are in a batch.
#![allow(unsafe_code)] // the counting allocator below
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use shiftlens_common::wire::{decode_ack, decode_batch, encode_ack, encode_batch};
use shiftlens_common::wire_dict::{DictEncoder, DictLimits, Dictionaries};
use shiftlens_common::{
    Ack, Alarm, AssetId, Batch, DecodeError, Event, EventBody, GapReason, GatewayId, Limits, MachineState, SiteId,
    TS_RANGE_MS,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Counts the bytes live on this thread's heap while tracking is on, and the peak.
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = LIVE.try_with(|live| {
            live.set(live.get() + l.size() as isize);
            let _ = PEAK.try_with(|p| p.set(p.get().max(live.get())));
        });
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        let _ = LIVE.try_with(|live| live.set(live.get() - l.size() as isize));
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns its result and the peak extra heap it used on this thread.
fn peak_alloc<T>(f: impl FnOnce() -> T) -> (T, isize) {
    let base = LIVE.with(|l| l.get());
    PEAK.with(|p| p.set(base));
    let out = f();
    (out, PEAK.with(|p| p.get()) - base)
}

fn id_str() -> impl Strategy<Value = String> {
    "[a-z0-9_-]{1,64}"
}

fn body() -> impl Strategy<Value = EventBody> {
    let state = (0..5usize, proptest::option::of(".{0,40}"))
        .prop_map(|(i, reason)| EventBody::State { state: MachineState::ALL[i], reason });
    let flag = || proptest::option::of(any::<bool>());
    let alarm = (
        (".{1,30}", any::<bool>(), any::<u16>(), ".{0,100}", proptest::option::of("[a-z]{1,10}")),
        (proptest::option::of("[a-z]{1,10}"), flag(), flag(), flag()),
    )
        .prop_map(|((id, active, severity, text, class), (priority, acked, shelved, suppressed))| {
            EventBody::Alarm(Alarm { id, active, severity, text, class, priority, acked, shelved, suppressed })
        });
    let source = (".{1,30}", any::<bool>(), proptest::option::of(".{0,80}"))
        .prop_map(|(source, connected, error)| EventBody::Source { source, connected, error });
    let gap = (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(first, last, full)| EventBody::Gap {
        first,
        last,
        reason: if full { GapReason::OutboxFull } else { GapReason::StorageFailed },
    });
    prop_oneof![state, alarm, source, gap]
}

/// A timestamp the codec accepts, edges included.
fn good_ts() -> impl Strategy<Value = i64> {
    prop_oneof![Just(TS_RANGE_MS.start), Just(TS_RANGE_MS.end - 1), TS_RANGE_MS]
}

/// A timestamp the codec refuses: the i64 extremes, just outside either edge, or anywhere outside.
fn bad_ts() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(i64::MIN),
        Just(i64::MAX),
        Just(TS_RANGE_MS.start - 1),
        Just(TS_RANGE_MS.end),
        Just(0),
        i64::MIN..TS_RANGE_MS.start,
        TS_RANGE_MS.end..=i64::MAX,
    ]
}

fn batch() -> impl Strategy<Value = Batch> {
    let events = proptest::collection::vec((0u64..1000, good_ts(), "[A-Za-z0-9_.-]{1,64}", body()), 0..60);
    (id_str(), id_str(), any::<u64>(), any::<u64>(), events).prop_map(|(site, gw, epoch, start, evs)| {
        let mut seq = start / 2;
        let events = evs
            .into_iter()
            .map(|(step, ts_ms, asset, body)| {
                seq += step + 1;
                Event { seq, ts_ms, asset: AssetId::parse(asset).expect("strategy makes valid ids"), body }
            })
            .collect();
        Batch::new(SiteId::parse(site).expect("valid"), GatewayId::parse(gw).expect("valid"), epoch, events)
    })
}

fn limits() -> Limits {
    Limits { max_batch_bytes: 64 << 10, ..Limits::default() }
}

/// Decoding may use the input's size several times over (strings and structs), never more.
const ALLOC_FACTOR: isize = 16;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_valid_batch_round_trips(b in batch()) {
        let bytes = encode_batch(&b);
        prop_assert_eq!(decode_batch(&bytes, &Limits::default()), Ok(b));
    }

    #[test]
    fn arbitrary_bytes_never_panic_or_overallocate(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let l = limits();
        let (_, peak) = peak_alloc(|| decode_batch(&bytes, &l));
        prop_assert!(peak <= 64 * 1024 + ALLOC_FACTOR * bytes.len() as isize, "peak {}", peak);
        let _ = decode_ack(&bytes);
    }

    #[test]
    fn mutated_batches_never_panic_or_overallocate(
        b in batch(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = encode_batch(&b);
        for (at, v) in flips {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        let l = limits();
        let (res, peak) = peak_alloc(|| decode_batch(&bytes, &l));
        prop_assert!(peak <= 64 * 1024 + ALLOC_FACTOR * bytes.len() as isize, "peak {}", peak);
        if let Ok(decoded) = res {
            // Whatever decodes must satisfy the invariants the decoder promises.
            prop_assert!(decoded.events.windows(2).all(|w| w[0].seq < w[1].seq));
            prop_assert!(decoded.events.iter().all(|e| TS_RANGE_MS.contains(&e.ts_ms)));
        }
    }

    #[test]
    fn a_timestamp_outside_the_range_is_refused_with_its_seq(
        b in batch().prop_filter("has events", |b| !b.events.is_empty()),
        at in any::<prop::sample::Index>(),
        ts in bad_ts(),
    ) {
        let mut b = b;
        let i = at.index(b.events.len());
        b.events[i].ts_ms = ts;
        let seq = b.events[i].seq;
        let e = decode_batch(&encode_batch(&b), &Limits::default()).unwrap_err();
        // Another event may break a limit first (a long string before it); never is a bad time accepted.
        if let DecodeError::TimestampOutOfRange { seq: s, ts_ms } = e {
            prop_assert_eq!((s, ts_ms), (seq, ts));
        } else {
            prop_assert!(matches!(e, DecodeError::StringTooLong { seq: s, .. } if s <= seq), "{}", e);
        }
    }

    #[test]
    fn acks_round_trip(epoch in any::<u64>(), seqs in proptest::collection::vec(0u64..500, 0..200)) {
        let ack = Ack::from_seqs(epoch, seqs.clone());
        for s in &seqs {
            prop_assert!(ack.contains(*s));
        }
        prop_assert_eq!(decode_ack(&encode_ack(&ack)), Ok(ack));
    }
}

fn sample() -> Batch {
    Batch::new(
        SiteId::parse("plant-a").unwrap(),
        GatewayId::parse("gw-1").unwrap(),
        7,
        vec![
            Event {
                seq: 1,
                ts_ms: 1_700_000_000_000,
                asset: AssetId::parse("press-1").unwrap(),
                body: EventBody::State { state: MachineState::Down, reason: None },
            },
            Event {
                seq: 2,
                ts_ms: 1_700_000_002_000,
                asset: AssetId::parse("press-1").unwrap(),
                body: EventBody::Alarm(Alarm {
                    id: "A1".into(),
                    active: true,
                    severity: 700,
                    text: "x".repeat(2000),
                    ..Default::default()
                }),
            },
        ],
    )
}

#[test]
fn a_version_1_batch_from_an_old_agent_is_read_and_its_alarms_have_no_attributes() {
    let mut b = sample();
    b.events[1].body = EventBody::Alarm(Alarm { id: "A1".into(), active: true, severity: 700, ..Default::default() });
    b.version = 1;
    let got = decode_batch(&encode_batch(&b), &Limits::default()).unwrap();
    assert_eq!(got.version, 1);
    let EventBody::Alarm(a) = &got.events[1].body else { panic!() };
    assert_eq!((a.priority.as_deref(), a.acked, a.shelved, a.suppressed), (None, None, None, None));
}

#[test]
fn alarm_attributes_travel_in_a_version_2_batch() {
    let mut b = sample();
    let alarm = Alarm {
        id: "ns=2;s=Press1.Overtemp".into(),
        active: true,
        severity: 850,
        text: "Overtemperature".into(),
        class: Some("process".into()),
        priority: Some("high".into()),
        acked: Some(false),
        shelved: Some(true),
        suppressed: Some(false),
    };
    b.events[1].body = EventBody::Alarm(alarm.clone());
    assert_eq!(b.version, shiftlens_common::BATCH_VERSION);
    let got = decode_batch(&encode_batch(&b), &Limits::default()).unwrap();
    assert_eq!(got.events[1].body, EventBody::Alarm(alarm));
    // A build reading only version 1 would say what it met; this one names the versions it reads.
    b.version = *shiftlens_common::BATCH_VERSIONS.end() + 1;
    let e = decode_batch(&encode_batch(&b), &Limits::default()).unwrap_err();
    assert!(e.to_string().contains("reads batch versions 1-3"), "{e}");
}

#[test]
fn an_unknown_schema_version_is_named() {
    let mut b = sample();
    b.version = 9;
    let e = decode_batch(&encode_batch(&b), &Limits::default()).unwrap_err();
    assert_eq!(e, DecodeError::UnsupportedVersion(9));
    assert!(e.to_string().contains("unsupported schema version 9"), "{e}");
}

#[test]
fn trailing_bytes_are_refused() {
    let mut bytes = encode_batch(&sample());
    bytes.extend_from_slice(&[0x01, 0x02]);
    let limits = Limits { max_string_len: 4096, ..Limits::default() };
    assert_eq!(decode_batch(&bytes, &limits).unwrap_err(), DecodeError::TrailingBytes(2));
}

#[test]
fn oversized_payloads_are_refused_before_decoding() {
    let bytes = encode_batch(&sample());
    let limits = Limits { max_batch_bytes: 100, ..Limits::default() };
    assert!(matches!(decode_batch(&bytes, &limits), Err(DecodeError::TooLarge { limit: 100, .. })));
}

#[test]
fn long_strings_are_refused_with_the_field_name() {
    let e = decode_batch(&encode_batch(&sample()), &Limits::default()).unwrap_err();
    assert!(matches!(e, DecodeError::StringTooLong { seq: 2, field: "text", len: 2000, .. }), "{e}");
}

#[test]
fn too_many_events_are_refused() {
    let limits = Limits { max_events: 1, max_string_len: 4096, ..Limits::default() };
    let e = decode_batch(&encode_batch(&sample()), &limits).unwrap_err();
    assert_eq!(e, DecodeError::TooManyEvents { count: 2, limit: 1 });
}

#[test]
fn seqs_out_of_order_are_refused() {
    let mut b = sample();
    b.events.swap(0, 1);
    let limits = Limits { max_string_len: 4096, ..Limits::default() };
    assert_eq!(decode_batch(&encode_batch(&b), &limits).unwrap_err(), DecodeError::SeqOrder { seq: 1, prev: 2 });
}

#[test]
fn wrong_types_and_bad_ids_say_what_was_wrong() {
    // [1, "plant-a", "gw-1", "seven", []]: epoch is a string.
    let mut bytes = Vec::new();
    ciborium::into_writer(&(1u16, "plant-a", "gw-1", "seven", Vec::<u8>::new()), &mut bytes).unwrap();
    let e = decode_batch(&bytes, &Limits::default()).unwrap_err();
    assert!(matches!(e, DecodeError::Malformed { .. }), "{e}");
    assert!(e.to_string().contains("invalid type"), "{e}");
    // A gateway id with a topic level in it.
    let mut bytes = Vec::new();
    ciborium::into_writer(&(1u16, "plant-a", "gw/+", 7u64, Vec::<u8>::new()), &mut bytes).unwrap();
    let e = decode_batch(&bytes, &Limits::default()).unwrap_err();
    assert!(e.to_string().contains("invalid gateway id"), "{e}");
}

#[test]
fn deep_nesting_is_refused() {
    // [1, "s", "g", 1, [[[[...]]]]] nested 100 deep.
    let mut bytes = vec![0x85, 0x01, 0x61, b's', 0x61, b'g', 0x01];
    bytes.extend(std::iter::repeat_n(0x81, 100));
    bytes.push(0x80);
    let e = decode_batch(&bytes, &Limits::default()).unwrap_err();
    assert!(matches!(e, DecodeError::TooDeep(16) | DecodeError::Malformed { .. }), "{e}");
}

#[test]
fn a_huge_declared_length_does_not_allocate_it() {
    // [1, "s", "g", 1, array of 2^32-1 events] with no events behind it.
    let bytes = [0x85, 0x01, 0x61, b's', 0x61, b'g', 0x01, 0x9a, 0xff, 0xff, 0xff, 0xff];
    let (res, peak) = peak_alloc(|| decode_batch(&bytes, &Limits::default()));
    assert!(res.is_err());
    assert!(peak < 1 << 20, "peak {peak}");
}

#[test]
fn timestamps_outside_2000_to_2200_are_refused_with_a_clear_reason() {
    let limits = Limits { max_string_len: 4096, ..Limits::default() };
    for ts in [i64::MIN, -1, 0, 946_684_799_999, 7_258_118_400_000, i64::MAX] {
        let mut b = sample();
        b.events[1].ts_ms = ts;
        let e = decode_batch(&encode_batch(&b), &limits).unwrap_err();
        assert_eq!(e, DecodeError::TimestampOutOfRange { seq: 2, ts_ms: ts });
        assert_eq!(e.kind(), "bad_timestamp");
        let text = e.to_string();
        assert!(text.contains("event seq 2") && text.contains(&ts.to_string()), "{text}");
        assert!(text.contains("2000-01-01..2200-01-01 UTC"), "{text}");
    }
    // The edges themselves: the first millisecond of 2000 and the last before 2200.
    for ts in [946_684_800_000, 7_258_118_399_999] {
        let mut b = sample();
        b.events[1].ts_ms = ts;
        assert_eq!(decode_batch(&encode_batch(&b), &limits), Ok(b));
    }
}

// ---- Version 3, the dictionary form ----

/// Decodes `bytes` with `dicts` and takes its entries in, as the collector does once a batch is accepted.
fn decode_v3(dicts: &mut Dictionaries, bytes: &[u8], limits: &Limits) -> Result<Batch, DecodeError> {
    let (b, update) = dicts.decode(bytes, limits)?;
    dicts.commit(update);
    Ok(b)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_plain_batch_encodes_to_the_dictionary_form_and_decodes_to_the_same_events(
        batches in proptest::collection::vec(batch(), 1..4),
        dict in any::<u64>(),
    ) {
        // One agent session: the batches share the dictionary, later ones refer to earlier entries.
        let mut enc = DictEncoder::new(dict);
        let mut dicts = Dictionaries::new(DictLimits::default());
        let (site, gateway, epoch) = (batches[0].site.clone(), batches[0].gateway.clone(), batches[0].epoch);
        for mut b in batches {
            (b.site, b.gateway, b.epoch) = (site.clone(), gateway.clone(), epoch);
            let bytes = enc.encode(&b);
            prop_assert!(bytes.len() <= encode_batch(&b).len() + 32, "{} > {}", bytes.len(), encode_batch(&b).len());
            prop_assert_eq!(decode_v3(&mut dicts, &bytes, &Limits::default()), Ok(b.clone()));
            // The same batch again (a duplicate delivery) decodes to the same.
            prop_assert_eq!(decode_v3(&mut dicts, &bytes, &Limits::default()), Ok(b));
        }
    }

    #[test]
    fn arbitrary_bytes_after_a_version_3_head_never_panic_or_overallocate(
        tail in proptest::collection::vec(any::<u8>(), 0..4096),
    ) {
        let mut bytes = vec![0x8a, 0x03];
        bytes.extend(tail);
        let l = limits();
        let mut dicts = Dictionaries::new(DictLimits::default());
        let (_, peak) = peak_alloc(|| dicts.decode(&bytes, &l).map(|_| ()));
        prop_assert!(peak <= 64 * 1024 + ALLOC_FACTOR * bytes.len() as isize, "peak {}", peak);
        // And on its own (no reader state), as `decode_batch` reads it.
        let _ = decode_batch(&bytes, &l);
    }

    #[test]
    fn mutated_dictionary_batches_never_panic_or_overallocate(
        first in batch(),
        second in batch(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut enc = DictEncoder::new(7);
        let mut dicts = Dictionaries::new(DictLimits::default());
        let l = limits();
        let _ = decode_v3(&mut dicts, &enc.encode(&first), &l);
        let mut bytes = enc.encode(&second);
        for (at, v) in flips {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        let _ = decode_batch(&bytes, &l);
        let (res, peak) = peak_alloc(|| dicts.decode(&bytes, &l).map(|(b, _)| b));
        prop_assert!(peak <= 64 * 1024 + ALLOC_FACTOR * bytes.len() as isize, "peak {}", peak);
        if let Ok(decoded) = res {
            prop_assert!(decoded.events.windows(2).all(|w| w[0].seq < w[1].seq));
            prop_assert!(decoded.events.iter().all(|e| TS_RANGE_MS.contains(&e.ts_ms)));
        }
    }
}

/// A batch of `n` state changes over 4 assets, seqs from `seq`.
fn states(seq: u64, n: u64) -> Batch {
    let events = (0..n)
        .map(|i| Event {
            seq: seq + i,
            ts_ms: 1_700_000_000_000 + (seq + i) as i64 * 250,
            asset: AssetId::parse(format!("asset-{}", (seq + i) % 4)).unwrap(),
            body: EventBody::State { state: MachineState::ALL[((seq + i) % 2) as usize], reason: None },
        })
        .collect();
    Batch::new(SiteId::parse("plant-a").unwrap(), GatewayId::parse("gw-1").unwrap(), 42, events)
}

#[test]
fn a_reader_that_lost_the_dictionary_says_so_and_a_new_dictionary_recovers() {
    let mut enc = DictEncoder::new(100);
    let mut collector = Dictionaries::new(DictLimits::default());
    let first = enc.encode(&states(1, 20));
    assert_eq!(decode_v3(&mut collector, &first, &Limits::default()).unwrap(), states(1, 20));
    // Later batches add nothing new and cost a few bytes an event.
    let second = enc.encode(&states(21, 100));
    assert!(second.len() < 100 * 4 + 40, "{} bytes", second.len());
    // A restarted collector knows nothing: the batch is not stored, the agent is asked for dictionary 100.
    let mut restarted = Dictionaries::new(DictLimits::default());
    let e = restarted.decode(&second, &Limits::default()).unwrap_err();
    assert_eq!(e, DecodeError::DictionaryUnknown { epoch: 42, dictionary: 100 });
    assert_eq!(e.kind(), "dictionary_unknown");
    let ack = Ack::dictionary_unknown(42, 100);
    assert_eq!(decode_ack(&encode_ack(&ack)), Ok(ack));
    // The agent starts dictionary 101 and resends; the entries travel again.
    enc.restart();
    assert_eq!(enc.dictionary(), 101);
    let again = enc.encode(&states(21, 100));
    assert_eq!(decode_v3(&mut restarted, &again, &Limits::default()).unwrap(), states(21, 100));
}

#[test]
fn a_dictionary_batch_decodes_on_its_own_when_its_events_use_only_its_own_entries() {
    let mut enc = DictEncoder::new(3);
    let _ = enc.encode(&states(1, 8)); // entries 0-7: the 8 contents of `states`
    let b = states(9, 8);
    let e = decode_batch(&enc.encode(&b), &Limits::default()).unwrap_err();
    assert_eq!(e, DecodeError::DictionaryUnknown { epoch: 42, dictionary: 3 });
    // New contents only: entries 8.. travel in the batch and nothing before them is used.
    let mut fresh = states(17, 4);
    for e in &mut fresh.events {
        e.asset = AssetId::parse("new-asset").unwrap();
    }
    assert_eq!(decode_batch(&enc.encode(&fresh), &Limits::default()), Ok(fresh));
}

#[test]
fn a_batch_that_was_not_sent_is_rolled_back_so_its_entries_travel_with_the_next() {
    let mut enc = DictEncoder::new(1);
    let mut dicts = Dictionaries::new(DictLimits::default());
    let mark = enc.len();
    let _lost = enc.encode(&states(1, 4));
    enc.rollback(mark);
    assert_eq!(enc.len(), 0);
    assert_eq!(decode_v3(&mut dicts, &enc.encode(&states(1, 8)), &Limits::default()).unwrap(), states(1, 8));
}

#[test]
fn an_ack_from_an_older_collector_has_no_dictionary_key_and_older_agents_ignore_it() {
    // Version 1 acks as written before: {version, epoch, ranges}.
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct OldAck {
        version: u16,
        epoch: u64,
        ranges: Vec<(u64, u64)>,
    }
    let mut old = Vec::new();
    ciborium::into_writer(&OldAck { version: 1, epoch: 9, ranges: vec![(1, 3)] }, &mut old).unwrap();
    assert_eq!(decode_ack(&old).unwrap().dictionary_unknown, None);
    let new = encode_ack(&Ack::dictionary_unknown(9, 5));
    let read: OldAck = ciborium::from_reader(&new[..]).unwrap();
    assert_eq!(read, OldAck { version: 1, epoch: 9, ranges: vec![] });
}

/// `[3, "plant-a", "gw-1", 42, dict, base, entries, seq0, ts0, codes]` written by hand.
fn v3(base: u64, entries: Vec<(AssetId, EventBody)>, codes: Vec<i64>) -> Vec<u8> {
    let mut bytes = Vec::new();
    let t = (3u16, "plant-a", "gw-1", 42u64, 7u64, base, entries, 10u64, 1_700_000_000_000i64, codes);
    ciborium::into_writer(&t, &mut bytes).unwrap();
    bytes
}

#[test]
fn hostile_dictionary_batches_are_refused_with_their_kind() {
    let entry = || (AssetId::parse("press-1").unwrap(), EventBody::State { state: MachineState::Down, reason: None });
    let l = Limits::default();
    let kind = |bytes: &[u8]| Dictionaries::new(DictLimits::default()).decode(bytes, &l).unwrap_err().kind();
    assert_eq!(kind(&v3(0, vec![entry()], vec![2, 0])), "bad_index", "entry 1 of 1");
    assert_eq!(kind(&v3(0, vec![entry()], vec![0])), "bad_delta", "no time step");
    assert_eq!(kind(&v3(0, vec![entry()], vec![-2, 0])), "bad_delta", "negative code");
    assert_eq!(kind(&v3(0, vec![entry()], vec![1, -1, 0])), "bad_delta", "negative skip");
    assert_eq!(kind(&v3(0, vec![entry()], vec![1, i64::MAX, 0, 1, i64::MAX, 0])), "bad_delta", "seq past u64");
    assert_eq!(kind(&v3(0, vec![entry()], vec![0, i64::MAX])), "bad_delta", "time step overflows");
    assert_eq!(kind(&v3(0, vec![entry()], vec![0, -1_700_000_000_000])), "bad_timestamp", "before 2000");
    assert_eq!(kind(&v3(u64::MAX, vec![entry()], vec![0, 0])), "dictionary_full");
    assert_eq!(kind(&v3(70_000, vec![], vec![0, 0])), "dictionary_full");
    assert_eq!(kind(&v3(5, vec![], vec![0, 0])), "dictionary_unknown");
    let many = vec![entry(); 10_001];
    assert_eq!(kind(&v3(0, many, vec![])), "too_many_entries");
    let long =
        (AssetId::parse("a").unwrap(), EventBody::State { state: MachineState::Down, reason: Some("x".repeat(2000)) });
    assert_eq!(kind(&v3(0, vec![long], vec![0, 0])), "string_too_long");
    // A huge declared dictionary with nothing behind it: refused without allocating it.
    let mut huge = v3(0, vec![], vec![]);
    let at = huge.len() - 1 - 9 - 1 - 1; // the empty entries array, before seq0, ts0 and codes
    assert_eq!(huge[at], 0x80);
    huge.truncate(at);
    huge.extend([0x9a, 0xff, 0xff, 0xff, 0xff]);
    let (res, peak) = peak_alloc(|| Dictionaries::new(DictLimits::default()).decode(&huge, &l).map(|_| ()));
    assert_eq!(res.unwrap_err().kind(), "malformed");
    assert!(peak < 1 << 20, "peak {peak}");
}

#[test]
fn a_redefined_entry_that_differs_is_refused_as_unknown_and_the_table_stays() {
    let e = |s| (AssetId::parse("press-1").unwrap(), EventBody::State { state: s, reason: None });
    let mut dicts = Dictionaries::new(DictLimits::default());
    let l = Limits::default();
    decode_v3(&mut dicts, &v3(0, vec![e(MachineState::Down)], vec![0, 0]), &l).unwrap();
    let err = dicts.decode(&v3(0, vec![e(MachineState::Running)], vec![0, 0]), &l).unwrap_err();
    assert_eq!(err.kind(), "dictionary_unknown");
    assert_eq!(decode_v3(&mut dicts, &v3(1, vec![], vec![0, 0]), &l).unwrap().events[0].body, e(MachineState::Down).1);
}

#[test]
fn a_gateway_starting_dictionary_after_dictionary_drops_its_own_older_ones_not_another_gateways() {
    let limits = DictLimits { max_dictionaries: 3, ..DictLimits::default() };
    let mut dicts = Dictionaries::new(limits);
    let l = Limits::default();
    let other = |seq| {
        let mut b = states(seq, 4);
        b.gateway = GatewayId::parse("gw-2").unwrap();
        b
    };
    let mut quiet = DictEncoder::new(7);
    decode_v3(&mut dicts, &quiet.encode(&other(1)), &l).unwrap();
    // gw-1 starts ten dictionaries one after the other; at most two of them are kept at any time.
    for id in 100..110 {
        decode_v3(&mut dicts, &DictEncoder::new(id).encode(&states(1, 4)), &l).unwrap();
        assert!(dicts.len() <= 3, "{} dictionaries", dicts.len());
    }
    assert!(decode_v3(&mut dicts, &quiet.encode(&other(5)), &l).is_ok(), "gw-2's dictionary was kept");
}

#[test]
fn the_reader_keeps_at_most_its_limit_of_dictionaries_dropping_the_least_recently_used() {
    let limits = DictLimits { max_dictionaries: 2, ..DictLimits::default() };
    let mut dicts = Dictionaries::new(limits);
    let (mut a, mut b, mut c) = (DictEncoder::new(1), DictEncoder::new(2), DictEncoder::new(3));
    let l = Limits::default();
    decode_v3(&mut dicts, &a.encode(&states(1, 4)), &l).unwrap();
    decode_v3(&mut dicts, &b.encode(&states(1, 4)), &l).unwrap();
    decode_v3(&mut dicts, &a.encode(&states(5, 4)), &l).unwrap();
    decode_v3(&mut dicts, &c.encode(&states(1, 4)), &l).unwrap();
    assert_eq!(dicts.len(), 2);
    assert!(decode_v3(&mut dicts, &a.encode(&states(9, 4)), &l).is_ok(), "a was used more recently than b");
    assert_eq!(dicts.decode(&b.encode(&states(9, 4)), &l).unwrap_err().kind(), "dictionary_unknown");
    // A byte bound below one entry keeps nothing.
    let mut tiny = Dictionaries::new(DictLimits { max_bytes: 10, ..DictLimits::default() });
    decode_v3(&mut tiny, &DictEncoder::new(1).encode(&states(1, 4)), &l).unwrap();
    assert!(tiny.is_empty());
}
