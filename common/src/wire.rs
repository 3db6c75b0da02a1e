//! CBOR codec for batches and acks: strict and bounded.
//!
//! A batch is the CBOR array `[version, site, gateway, epoch, [event, ...]]`; an event is the array
//! `[seq, ts_ms, asset, body]` and its body a one-key map naming its kind (`{"state": {...}}`). Decoding checks the input size before reading anything, the schema version
//! before the body, the nesting depth while reading, string lengths, event counts, seq order, timestamps
//! (within [`TS_RANGE_MS`]) and ids after,
//! and that no bytes trail the batch. Version 3, the dictionary form of the same events, is read by
//! [`crate::wire_dict`] (statefully, through [`crate::wire_dict::Dictionaries`]). Every failure is a [`DecodeError`] that says what was wrong; no input
//! makes it panic, and allocation is bounded by `max_batch_bytes`.

use crate::event::{Batch, Event, EventBody, BATCH_VERSION, BATCH_VERSIONS, SCHEMA_VERSION, TS_RANGE_MS};
use crate::ids::{GatewayId, SiteId};
use crate::wire_dict::DICT_BATCH_VERSION;
use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Bounds applied when decoding. The defaults suit a gateway publishing a few thousand events a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_batch_bytes: usize,
    pub max_events: usize,
    pub max_string_len: usize,
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_batch_bytes: 1 << 20, max_events: 10_000, max_string_len: 1024, max_depth: 16 }
    }
}

/// Why bytes are not a valid batch or ack.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("unsupported schema version {0} (this build reads batch versions 1-{DICT_BATCH_VERSION} and ack version {SCHEMA_VERSION})")]
    UnsupportedVersion(u64),
    #[error("batch holds {count} events, more than the limit of {limit}")]
    TooManyEvents { count: usize, limit: usize },
    #[error("event seq {seq}: field `{field}` is {len} bytes long, more than the limit of {limit}")]
    StringTooLong { seq: u64, field: &'static str, len: usize, limit: usize },
    #[error("event seq {seq} follows seq {prev}: seqs in a batch must ascend")]
    SeqOrder { seq: u64, prev: u64 },
    #[error("event seq {seq}: timestamp {ts_ms} ms is outside 2000-01-01..2200-01-01 UTC ({min}..{max} ms)", min = TS_RANGE_MS.start, max = TS_RANGE_MS.end)]
    TimestampOutOfRange { seq: u64, ts_ms: i64 },
    #[error("{0} trailing bytes after the batch")]
    TrailingBytes(usize),
    #[error("nesting deeper than {0} levels")]
    TooDeep(usize),
    #[error("malformed CBOR{}: {msg}", offset.map(|o| format!(" at byte {o}")).unwrap_or_default())]
    Malformed { offset: Option<usize>, msg: String },
    /// Version 3: the batch refers to dictionary entries this reader does not hold (it restarted, another
    /// reader got the batch that defined them, or it evicted them). Not the agent's fault: ask it for the
    /// dictionary ([`Ack::dictionary_unknown`]) instead of dead-lettering.
    #[error("dictionary {dictionary} of epoch {epoch} is unknown here (or incomplete)")]
    DictionaryUnknown { epoch: u64, dictionary: u64 },
    #[error("dictionary entry {index} does not exist (the batch sees {len})")]
    BadIndex { index: u64, len: usize },
    #[error("bad delta coding: {0}")]
    BadDelta(&'static str),
    #[error("batch adds {count} dictionary entries, more than the limit of {limit}")]
    TooManyEntries { count: usize, limit: usize },
    #[error("dictionary would hold {entries} entries, more than the limit of {limit}")]
    DictionaryFull { entries: u64, limit: usize },
}

impl DecodeError {
    /// A short stable name for counting dead letters by kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too_large",
            Self::UnsupportedVersion(_) => "unsupported_version",
            Self::TooManyEvents { .. } => "too_many_events",
            Self::StringTooLong { .. } => "string_too_long",
            Self::SeqOrder { .. } => "seq_order",
            Self::TimestampOutOfRange { .. } => "bad_timestamp",
            Self::TrailingBytes(_) => "trailing_bytes",
            Self::TooDeep(_) => "too_deep",
            Self::Malformed { .. } => "malformed",
            Self::DictionaryUnknown { .. } => "dictionary_unknown",
            Self::BadIndex { .. } => "bad_index",
            Self::BadDelta(_) => "bad_delta",
            Self::TooManyEntries { .. } => "too_many_entries",
            Self::DictionaryFull { .. } => "dictionary_full",
        }
    }
}

impl Serialize for Batch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(5)?;
        t.serialize_element(&self.version)?;
        t.serialize_element(&self.site)?;
        t.serialize_element(&self.gateway)?;
        t.serialize_element(&self.epoch)?;
        t.serialize_element(&self.events)?;
        t.end()
    }
}

impl<'de> Deserialize<'de> for Batch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct BatchVisitor;
        impl<'de> Visitor<'de> for BatchVisitor {
            type Value = Batch;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a batch array [version, site, gateway, epoch, events]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Batch, A::Error> {
                let version: u16 = next(&mut seq, 0, "version")?;
                if !(1..=BATCH_VERSION).contains(&version) {
                    return Err(de::Error::custom(format!("unsupported schema version {version}")));
                }
                let site: SiteId = next(&mut seq, 1, "site")?;
                let gateway: GatewayId = next(&mut seq, 2, "gateway")?;
                let epoch: u64 = next(&mut seq, 3, "epoch")?;
                let Events(events) = next(&mut seq, 4, "events")?;
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(6, &self));
                }
                Ok(Batch { version, site, gateway, epoch, events })
            }
        }
        d.deserialize_tuple(5, BatchVisitor)
    }
}

/// The events array, read without trusting its declared length for preallocation: a header that claims
/// four billion events costs nothing until the events are really there.
struct Events(Vec<Event>);

impl<'de> Deserialize<'de> for Events {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EventsVisitor;
        impl<'de> Visitor<'de> for EventsVisitor {
            type Value = Events;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of events")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Events, A::Error> {
                let mut events = Vec::new();
                while let Some(e) = seq.next_element()? {
                    events.push(e);
                }
                Ok(Events(events))
            }
        }
        d.deserialize_seq(EventsVisitor)
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(4)?;
        t.serialize_element(&self.seq)?;
        t.serialize_element(&self.ts_ms)?;
        t.serialize_element(&self.asset)?;
        t.serialize_element(&self.body)?;
        t.end()
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EventVisitor;
        impl<'de> Visitor<'de> for EventVisitor {
            type Value = Event;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an event array [seq, ts_ms, asset, body]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Event, A::Error> {
                let missing = |what| de::Error::custom(format!("event ends before {what}"));
                let event = Event {
                    seq: seq.next_element()?.ok_or_else(|| missing("seq"))?,
                    ts_ms: seq.next_element()?.ok_or_else(|| missing("ts_ms"))?,
                    asset: seq.next_element()?.ok_or_else(|| missing("asset"))?,
                    body: seq.next_element()?.ok_or_else(|| missing("body"))?,
                };
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(5, &self));
                }
                Ok(event)
            }
        }
        d.deserialize_tuple(4, EventVisitor)
    }
}

pub(crate) fn next<'de, A: SeqAccess<'de>, T: Deserialize<'de>>(
    seq: &mut A,
    i: usize,
    what: &str,
) -> Result<T, A::Error> {
    seq.next_element()?.ok_or_else(|| de::Error::custom(format!("batch ends before element {i} ({what})")))
}

/// Encodes a batch.
pub fn encode_batch(batch: &Batch) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + batch.events.len() * 64);
    // Writing into a Vec cannot fail and every type here serializes.
    ciborium::into_writer(batch, &mut out).expect("CBOR encoding into a Vec is infallible");
    out
}

/// Decodes and validates a batch within `limits`.
///
/// # Errors
/// Any [`DecodeError`]: too large, unknown version, malformed, too deep, trailing bytes, bad ids, too many
/// events, long strings, seqs out of order or timestamps outside [`TS_RANGE_MS`].
///
/// A version 3 batch decodes here only when every entry its events use travels in it (else
/// [`DecodeError::DictionaryUnknown`]); a collector decodes through [`crate::wire_dict::Dictionaries`],
/// which keeps the entries between batches.
pub fn decode_batch(bytes: &[u8], limits: &Limits) -> Result<Batch, DecodeError> {
    if batch_version(bytes, limits)? == DICT_BATCH_VERSION {
        return crate::wire_dict::decode_alone(bytes, limits);
    }
    let batch: Batch = decode_all(bytes, limits)?;
    validate(&batch, limits)?;
    Ok(batch)
}

fn check_size(bytes: &[u8], limits: &Limits) -> Result<(), DecodeError> {
    if bytes.len() > limits.max_batch_bytes {
        return Err(DecodeError::TooLarge { size: bytes.len(), limit: limits.max_batch_bytes });
    }
    Ok(())
}

/// Checks the size and reads the version of a batch.
pub(crate) fn batch_version(bytes: &[u8], limits: &Limits) -> Result<u16, DecodeError> {
    check_size(bytes, limits)?;
    check_version(bytes)
}

/// Reads the array head and the version so a future schema is reported as such, not as a type error.
fn check_version(bytes: &[u8]) -> Result<u16, DecodeError> {
    use ciborium_ll::{Decoder, Header};
    let mut dec = Decoder::from(bytes);
    let malformed = |msg: &str| DecodeError::Malformed { offset: Some(0), msg: msg.to_string() };
    match dec.pull() {
        Ok(Header::Array(_)) => {}
        _ => return Err(malformed("a batch must be a CBOR array")),
    }
    match dec.pull() {
        Ok(Header::Positive(v)) if u16::try_from(v).is_ok_and(|v| BATCH_VERSIONS.contains(&v)) => Ok(v as u16),
        Ok(Header::Positive(v)) => Err(DecodeError::UnsupportedVersion(v)),
        _ => Err(malformed("the first element of a batch must be the schema version")),
    }
}

pub(crate) fn decode_all<T: for<'de> Deserialize<'de>>(bytes: &[u8], limits: &Limits) -> Result<T, DecodeError> {
    let mut reader = bytes;
    let value = ciborium::de::from_reader_with_recursion_limit(&mut reader, limits.max_depth).map_err(|e| match e {
        ciborium::de::Error::Io(e) => DecodeError::Malformed { offset: None, msg: e.to_string() },
        ciborium::de::Error::Syntax(o) => DecodeError::Malformed { offset: Some(o), msg: "invalid CBOR item".into() },
        ciborium::de::Error::Semantic(o, msg) => DecodeError::Malformed { offset: o, msg },
        ciborium::de::Error::RecursionLimitExceeded => DecodeError::TooDeep(limits.max_depth),
    })?;
    if !reader.is_empty() {
        return Err(DecodeError::TrailingBytes(reader.len()));
    }
    Ok(value)
}

pub(crate) fn validate(batch: &Batch, limits: &Limits) -> Result<(), DecodeError> {
    if batch.events.len() > limits.max_events {
        return Err(DecodeError::TooManyEvents { count: batch.events.len(), limit: limits.max_events });
    }
    let mut prev: Option<u64> = None;
    for e in &batch.events {
        if let Some(p) = prev {
            if e.seq <= p {
                return Err(DecodeError::SeqOrder { seq: e.seq, prev: p });
            }
        }
        prev = Some(e.seq);
        if !TS_RANGE_MS.contains(&e.ts_ms) {
            return Err(DecodeError::TimestampOutOfRange { seq: e.seq, ts_ms: e.ts_ms });
        }
        if let Some((field, s)) = long_string(&e.body, limits) {
            return Err(DecodeError::StringTooLong { seq: e.seq, field, len: s.len(), limit: limits.max_string_len });
        }
    }
    Ok(())
}

/// The first free-text field of `body` longer than the limit.
pub(crate) fn long_string<'a>(body: &'a EventBody, limits: &Limits) -> Option<(&'static str, &'a str)> {
    strings(body).into_iter().flatten().find(|(_, s)| s.len() > limits.max_string_len)
}

/// The free-text fields of an event body, by name.
pub(crate) fn strings(body: &EventBody) -> [Option<(&'static str, &str)>; 4] {
    match body {
        EventBody::State { reason, .. } => [reason.as_deref().map(|r| ("reason", r)), None, None, None],
        EventBody::Alarm(a) => [
            Some(("id", a.id.as_str())),
            Some(("text", a.text.as_str())),
            a.class.as_deref().map(|c| ("class", c)),
            a.priority.as_deref().map(|p| ("priority", p)),
        ],
        EventBody::Source { source, error, .. } => {
            [Some(("source", source.as_str())), error.as_deref().map(|e| ("error", e)), None, None]
        }
        EventBody::Gap { .. } => [None, None, None, None],
    }
}

/// The collector's confirmation on `shiftlens/v1/{site}/{gateway}/ack`: the seqs of outbox `epoch` that are
/// now committed in the collector's store, as inclusive ranges. Duplicates that were already stored are
/// confirmed again, so an agent that resends after a lost ack still frees its rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub version: u16,
    pub epoch: u64,
    pub ranges: Vec<(u64, u64)>,
    /// "Send the dictionary again": a version 3 batch of this epoch referred to entries of this dictionary
    /// that the collector does not hold, so it was not stored. The agent starts a new dictionary and resends
    /// what is unacknowledged. Absent otherwise; agents before version 3 ignore the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dictionary_unknown: Option<u64>,
}

impl Ack {
    /// Builds an ack from seqs in any order, merging neighbours into ranges.
    pub fn from_seqs(epoch: u64, mut seqs: Vec<u64>) -> Self {
        seqs.sort_unstable();
        seqs.dedup();
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for s in seqs {
            match ranges.last_mut() {
                Some((_, last)) if *last + 1 == s => *last = s,
                _ => ranges.push((s, s)),
            }
        }
        Self { version: SCHEMA_VERSION, epoch, ranges, dictionary_unknown: None }
    }

    /// The answer to a version 3 batch whose dictionary is unknown: no seqs, and the dictionary named.
    pub fn dictionary_unknown(epoch: u64, dictionary: u64) -> Self {
        Self { version: SCHEMA_VERSION, epoch, ranges: Vec::new(), dictionary_unknown: Some(dictionary) }
    }

    /// Whether `seq` is confirmed.
    pub fn contains(&self, seq: u64) -> bool {
        self.ranges.iter().any(|&(a, b)| a <= seq && seq <= b)
    }
}

/// Encodes an ack.
pub fn encode_ack(ack: &Ack) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + ack.ranges.len() * 10);
    ciborium::into_writer(ack, &mut out).expect("CBOR encoding into a Vec is infallible");
    out
}

/// Decodes an ack.
///
/// # Errors
/// Malformed, oversized (over 64 KiB) or unknown-version acks.
pub fn decode_ack(bytes: &[u8]) -> Result<Ack, DecodeError> {
    let limits = Limits { max_batch_bytes: 64 << 10, max_depth: 4, ..Limits::default() };
    check_size(bytes, &limits)?;
    let ack: Ack = decode_all(bytes, &limits)?;
    if ack.version != SCHEMA_VERSION {
        return Err(DecodeError::UnsupportedVersion(ack.version.into()));
    }
    Ok(ack)
}
