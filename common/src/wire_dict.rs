//! Batch version 3, the dictionary form: the same events as version 2 in a few bytes each.
//!
//! ```text
//! [3, site, gateway, epoch, dictionary, base, [[asset, body], ...], seq0, ts0, [code, (skip,) dt, ...]]
//! ```
//!
//! - `dictionary` names an append-only table of event contents (an entry is `[asset, body]`, exactly as an
//!   event of version 2 carries them), chosen by the agent: random at start, the next id after every
//!   "dictionary unknown" answer and when the table is full ([`MAX_DICT_ENTRIES`]); it outlives reconnects.
//! - `[[asset, body], ...]` are the entries this batch adds, numbered from `base`; an entry travels in the
//!   first batch that uses it (so the first batch of a dictionary carries every entry it uses, and a later one
//!   only what is new since).
//! - each event is a run of integers in the last array: `code` = entry index × 2 + 1 if the seq skips ahead
//!   (then `skip`, how many seqs it skips, follows), and `dt` = its timestamp minus the previous event's (the
//!   first event's minus `ts0`), in ms, signed. The first seq is `seq0 + skip`, each next one the previous + 1
//!   + skip. A change usually costs 3–5 bytes: its entry index and a small time step.
//!
//! The reader ([`Dictionaries`]) keeps each (site, gateway, dictionary)'s entries as bounded soft state
//! ([`DictLimits`]: entries per dictionary, estimated bytes in all, number of dictionaries; the least
//! recently used goes first). A batch whose `base` is past what the reader knows, or that redefines a known
//! entry differently, gives [`DecodeError::DictionaryUnknown`]: not a dead letter, the collector leaves the
//! batch unacknowledged and answers with [`crate::Ack::dictionary_unknown`] (as Sparkplug's rebirth
//! request); the agent then starts a new dictionary and sends every unacknowledged event again. Entries are
//! taken into the reader's table only by [`Dictionaries::commit`], after the caller checked the batch's
//! site and gateway against its topic. Decoding is as strict as for version 2 (size first, depth, string
//! lengths, counts, index range, seq order and timestamp range after expansion).

use crate::event::{Batch, Event, EventBody, BATCH_VERSION};
use crate::ids::{AssetId, GatewayId, SiteId};
use crate::wire::{self, DecodeError, Limits};
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};

/// The batch version of the dictionary form.
pub const DICT_BATCH_VERSION: u16 = 3;

/// Most entries in one dictionary: the agent starts a new dictionary when its table holds this many, the
/// collector refuses a batch that would grow one past it.
pub const MAX_DICT_ENTRIES: usize = 65_536;

/// One dictionary entry: what an event says apart from its seq and time.
pub type Entry = (AssetId, EventBody);

/// The agent's side: assigns entry indices and writes batches in the dictionary form.
///
/// It keeps only a 64-bit hash of each entry's encoding and its index (about 13 bytes an entry), never the
/// entries themselves: an entry is sent with the first batch that uses it, and a dictionary is never sent
/// again as a whole; a reader that lost it asks, and the agent starts a new one. Two different entries
/// with the same hash would be confused; at 65,536 entries the chance is about 1 in 10^10.
#[derive(Debug)]
pub struct DictEncoder {
    dictionary: u64,
    index: HashMap<u64, u32>,
    scratch: Vec<u8>,
}

impl DictEncoder {
    /// An empty dictionary named `dictionary` (pick it at random: it must not repeat for this gateway).
    pub fn new(dictionary: u64) -> Self {
        Self { dictionary, index: HashMap::new(), scratch: Vec::new() }
    }

    /// The id of the current dictionary.
    pub fn dictionary(&self) -> u64 {
        self.dictionary
    }

    /// Entries in the current dictionary.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Starts a new, empty dictionary (the next id): when the collector asked for the dictionary, or when
    /// the table is full.
    pub fn restart(&mut self) {
        self.dictionary = self.dictionary.wrapping_add(1);
        self.index = HashMap::new();
    }

    /// Forgets the entries added since the table held `len` (the batch that added them was not sent).
    pub fn rollback(&mut self, len: usize) {
        if len < self.index.len() {
            self.index.retain(|_, i| (*i as usize) < len);
        }
    }

    /// Writes `batch` in the dictionary form, adding its new contents to the table. A batch whose new
    /// contents would overflow the table starts a new dictionary first.
    pub fn encode(&mut self, batch: &Batch) -> Vec<u8> {
        let mark = self.index.len();
        let mut entries = Vec::new();
        let mut added = 0usize;
        let mut codes = Vec::with_capacity(batch.events.len() * 4);
        let mut next_seq = batch.events.first().map_or(0, |e| e.seq);
        let ts0 = batch.events.first().map_or(0, |e| e.ts_ms);
        let mut prev_ts = ts0;
        for e in &batch.events {
            self.scratch.clear();
            // Writing into a Vec cannot fail and every type here serializes.
            ciborium::into_writer(&(&e.asset, &e.body), &mut self.scratch).expect("CBOR into a Vec");
            let mut h = std::collections::hash_map::DefaultHasher::new();
            self.scratch.hash(&mut h);
            let key = h.finish();
            let index = match self.index.get(&key) {
                Some(&i) => i,
                None => {
                    if self.index.len() >= MAX_DICT_ENTRIES {
                        // Full: start again with a new dictionary (rare; the batch is written anew).
                        self.rollback(mark);
                        self.restart();
                        return self.encode(batch);
                    }
                    let i = self.index.len() as u32;
                    self.index.insert(key, i);
                    entries.extend_from_slice(&self.scratch);
                    added += 1;
                    i
                }
            };
            let skip = e.seq.wrapping_sub(next_seq);
            if skip == 0 {
                push_uint(&mut codes, u64::from(index) * 2);
            } else {
                push_uint(&mut codes, u64::from(index) * 2 + 1);
                push_uint(&mut codes, skip);
            }
            push_int(&mut codes, e.ts_ms.wrapping_sub(prev_ts));
            prev_ts = e.ts_ms;
            next_seq = e.seq.wrapping_add(1);
        }
        let n_codes = count_items(batch);
        let mut out = Vec::with_capacity(64 + entries.len() + codes.len());
        head(&mut out, 4, 10);
        push_uint(&mut out, u64::from(DICT_BATCH_VERSION));
        push_text(&mut out, batch.site.as_str());
        push_text(&mut out, batch.gateway.as_str());
        push_uint(&mut out, batch.epoch);
        push_uint(&mut out, self.dictionary);
        push_uint(&mut out, mark as u64);
        head(&mut out, 4, added as u64);
        out.extend_from_slice(&entries);
        push_uint(&mut out, batch.events.first().map_or(0, |e| e.seq));
        push_int(&mut out, ts0);
        head(&mut out, 4, n_codes);
        out.extend_from_slice(&codes);
        out
    }
}

/// How many integers the events take (a seq skip adds one).
fn count_items(batch: &Batch) -> u64 {
    let mut next = batch.events.first().map_or(0, |e| e.seq);
    let mut n = 0u64;
    for e in &batch.events {
        n += if e.seq == next { 2 } else { 3 };
        next = e.seq.wrapping_add(1);
    }
    n
}

fn head(out: &mut Vec<u8>, major: u8, v: u64) {
    let m = major << 5;
    if v < 24 {
        out.push(m | v as u8);
    } else if v <= 0xff {
        out.extend_from_slice(&[m | 24, v as u8]);
    } else if v <= 0xffff {
        out.push(m | 25);
        out.extend_from_slice(&(v as u16).to_be_bytes());
    } else if v <= 0xffff_ffff {
        out.push(m | 26);
        out.extend_from_slice(&(v as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

fn push_uint(out: &mut Vec<u8>, v: u64) {
    head(out, 0, v);
}

fn push_int(out: &mut Vec<u8>, v: i64) {
    if v >= 0 {
        head(out, 0, v as u64);
    } else {
        head(out, 1, (-1 - v) as u64);
    }
}

fn push_text(out: &mut Vec<u8>, s: &str) {
    head(out, 3, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Bounds of the reader's soft state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DictLimits {
    /// Entries in one dictionary.
    pub max_entries: usize,
    /// Dictionaries kept (all gateways together).
    pub max_dictionaries: usize,
    /// Estimated heap bytes of all entries kept.
    pub max_bytes: usize,
}

impl Default for DictLimits {
    fn default() -> Self {
        Self { max_entries: MAX_DICT_ENTRIES, max_dictionaries: 1024, max_bytes: 64 << 20 }
    }
}

type Key = (SiteId, GatewayId, u64);

/// Dictionaries one gateway may hold in the reader at once (see [`Dictionaries::commit`]).
const PER_GATEWAY: usize = 2;

#[derive(Debug)]
struct Dict {
    entries: Vec<Entry>,
    bytes: usize,
    used: u64,
}

/// The collector's side: the dictionaries it knows, bounded ([`DictLimits`]), least recently used evicted.
#[derive(Debug, Default)]
pub struct Dictionaries {
    limits: DictLimits,
    dicts: HashMap<Key, Dict>,
    bytes: usize,
    clock: u64,
    /// Reading one batch on its own: entries before its `base` are unknown only if used.
    alone: bool,
}

/// Entries a decoded batch adds, for [`Dictionaries::commit`].
#[derive(Debug, Default)]
pub struct DictUpdate {
    add: Option<(Key, usize, Vec<Entry>)>,
}

impl Dictionaries {
    pub fn new(limits: DictLimits) -> Self {
        Self { limits, ..Self::default() }
    }

    /// Dictionaries kept.
    pub fn len(&self) -> usize {
        self.dicts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dicts.is_empty()
    }

    /// Decodes a batch of any version (1, 2 or 3) within `limits`; for version 3 the entries it adds come
    /// back as a [`DictUpdate`] to [`commit`](Self::commit) once the batch is accepted. A decoded
    /// version 3 batch has version 2 (the events' schema).
    ///
    /// # Errors
    /// Every error of [`wire::decode_batch`], and for version 3 [`DecodeError::DictionaryUnknown`] (ask the
    /// agent for the dictionary), `BadIndex`, `BadDelta`, `TooManyEntries` and `DictionaryFull`.
    pub fn decode(&mut self, bytes: &[u8], limits: &Limits) -> Result<(Batch, DictUpdate), DecodeError> {
        if wire::batch_version(bytes, limits)? != DICT_BATCH_VERSION {
            return Ok((wire::decode_batch(bytes, limits)?, DictUpdate::default()));
        }
        let raw: Raw = wire::decode_all(bytes, limits)?;
        if raw.entries.len() > limits.max_events {
            return Err(DecodeError::TooManyEntries { count: raw.entries.len(), limit: limits.max_events });
        }
        for (_, body) in &raw.entries {
            if let Some((field, s)) = wire::long_string(body, limits) {
                let limit = limits.max_string_len;
                return Err(DecodeError::StringTooLong { seq: raw.seq0, field, len: s.len(), limit });
            }
        }
        let unknown = DecodeError::DictionaryUnknown { epoch: raw.epoch, dictionary: raw.dictionary };
        let key: Key = (raw.site.clone(), raw.gateway.clone(), raw.dictionary);
        let base = usize::try_from(raw.base).map_err(|_| unknown.clone())?;
        let end = base.checked_add(raw.entries.len()).filter(|&e| e <= self.limits.max_entries).ok_or(
            DecodeError::DictionaryFull {
                entries: raw.base.saturating_add(raw.entries.len() as u64),
                limit: self.limits.max_entries,
            },
        )?;
        self.clock += 1;
        let known: &[Entry] = match self.dicts.get_mut(&key) {
            Some(d) => {
                d.used = self.clock;
                &d.entries
            }
            None => &[],
        };
        if base > known.len() && !self.alone {
            return Err(unknown);
        }
        // A batch delivered twice redefines what is known: it must say the same. If not, the agent is told
        // the dictionary is unknown and starts another; the table stays (the header's site and gateway are
        // not checked against the topic yet, so a batch must not be able to spoil another gateway's table).
        let overlap = known.len().min(end).saturating_sub(base);
        if overlap > 0 && known[base..base + overlap] != raw.entries[..overlap] {
            return Err(unknown);
        }
        let known: &[Entry] = self.dicts.get(&key).map_or(&[], |d| &d.entries);
        let events = expand(&raw, known, base, limits).map_err(|e| match e {
            DecodeError::BadIndex { index, .. } if index < base as u64 => unknown.clone(),
            e => e,
        })?;
        let batch = Batch {
            version: DECODED_VERSION,
            site: raw.site.clone(),
            gateway: raw.gateway.clone(),
            epoch: raw.epoch,
            events,
        };
        wire::validate(&batch, limits)?;
        let add = (end > known.len() && base <= known.len()).then(|| {
            let skip = known.len() - base;
            (key, known.len(), raw.entries.into_iter().skip(skip).collect())
        });
        Ok((batch, DictUpdate { add }))
    }

    /// Takes a decoded batch's new entries into the table, evicting the least recently used dictionaries
    /// while over the limits.
    pub fn commit(&mut self, update: DictUpdate) {
        let Some((key, at, entries)) = update.add else { return };
        self.clock += 1;
        let used = self.clock;
        let d = self.dicts.entry(key.clone()).or_insert_with(|| Dict { entries: Vec::new(), bytes: 0, used });
        d.used = used;
        if d.entries.len() != at {
            return; // another batch got there first; the next one will tell
        }
        let added: usize = entries.iter().map(entry_bytes).sum();
        d.entries.extend(entries);
        d.bytes += added;
        self.bytes += added;
        // A gateway keeps at most PER_GATEWAY dictionaries (its current one and the one before), so a gateway
        // that keeps starting new dictionaries drops its own older ones, not other gateways'.
        loop {
            let own = self.dicts.iter().filter(|(k, _)| k.0 == key.0 && k.1 == key.1);
            if own.clone().count() <= PER_GATEWAY {
                break;
            }
            let Some(oldest) = own.filter(|(k, _)| **k != key).min_by_key(|(_, d)| d.used).map(|(k, _)| k.clone())
            else {
                break;
            };
            self.remove(&oldest);
        }
        while self.dicts.len() > self.limits.max_dictionaries || self.bytes > self.limits.max_bytes {
            let victim =
                self.dicts.iter().filter(|(k, _)| **k != key).min_by_key(|(_, d)| d.used).map(|(k, _)| k.clone());
            // Only this dictionary left and still over: drop it too (its agent will be asked for it).
            let victim = victim.unwrap_or_else(|| key.clone());
            self.remove(&victim);
            if victim == key {
                break;
            }
        }
    }

    fn remove(&mut self, key: &Key) {
        if let Some(d) = self.dicts.remove(key) {
            self.bytes -= d.bytes;
        }
    }
}

/// A rough heap size of an entry, for the byte bound.
fn entry_bytes((asset, body): &Entry) -> usize {
    let strings: usize = wire::strings(body).into_iter().flatten().map(|(_, s)| s.len()).sum();
    std::mem::size_of::<Entry>() + asset.as_str().len() + strings + 32
}

/// Expands the events: each code's entry, seq and time.
fn expand(raw: &Raw, known: &[Entry], base: usize, limits: &Limits) -> Result<Vec<Event>, DecodeError> {
    let mut events = Vec::new();
    let mut ints = raw.codes.iter().copied();
    let mut next_seq = raw.seq0;
    let mut ts = raw.ts0;
    let len = known.len().max(base + raw.entries.len());
    while let Some(code) = ints.next() {
        if events.len() >= limits.max_events {
            return Err(DecodeError::TooManyEvents { count: events.len() + 1, limit: limits.max_events });
        }
        let code = u64::try_from(code).map_err(|_| DecodeError::BadDelta("negative entry code"))?;
        let index = code / 2;
        let skip = if code % 2 == 1 {
            u64::try_from(ints.next().ok_or(DecodeError::BadDelta("events end inside an event"))?)
                .map_err(|_| DecodeError::BadDelta("negative seq skip"))?
        } else {
            0
        };
        let dt = ints.next().ok_or(DecodeError::BadDelta("events end inside an event"))?;
        let seq = next_seq.checked_add(skip).ok_or(DecodeError::BadDelta("seq overflows"))?;
        next_seq = seq.checked_add(1).ok_or(DecodeError::BadDelta("seq overflows"))?;
        ts = ts.checked_add(dt).ok_or(DecodeError::BadDelta("timestamp overflows"))?;
        let i = usize::try_from(index).map_err(|_| DecodeError::BadIndex { index, len })?;
        let (asset, body) = match i.checked_sub(base).and_then(|j| raw.entries.get(j)) {
            Some(e) => e,
            None => known.get(i).ok_or(DecodeError::BadIndex { index, len })?,
        };
        events.push(Event { seq, ts_ms: ts, asset: asset.clone(), body: body.clone() });
    }
    Ok(events)
}

/// A version 3 batch as read, before expansion.
struct Raw {
    site: SiteId,
    gateway: GatewayId,
    epoch: u64,
    dictionary: u64,
    base: u64,
    entries: Vec<Entry>,
    seq0: u64,
    ts0: i64,
    codes: Vec<i64>,
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RawVisitor;
        impl<'de> Visitor<'de> for RawVisitor {
            type Value = Raw;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a version 3 batch [3, site, gateway, epoch, dictionary, base, entries, seq0, ts0, events]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
                let version: u16 = wire::next(&mut seq, 0, "version")?;
                if version != DICT_BATCH_VERSION {
                    return Err(de::Error::custom(format!("unsupported schema version {version}")));
                }
                let raw = Raw {
                    site: wire::next(&mut seq, 1, "site")?,
                    gateway: wire::next(&mut seq, 2, "gateway")?,
                    epoch: wire::next(&mut seq, 3, "epoch")?,
                    dictionary: wire::next(&mut seq, 4, "dictionary")?,
                    base: wire::next(&mut seq, 5, "base")?,
                    entries: wire::next::<_, Many<Entry>>(&mut seq, 6, "entries")?.0,
                    seq0: wire::next(&mut seq, 7, "seq0")?,
                    ts0: wire::next(&mut seq, 8, "ts0")?,
                    codes: wire::next::<_, Many<i64>>(&mut seq, 9, "events")?.0,
                };
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(11, &self));
                }
                Ok(raw)
            }
        }
        d.deserialize_tuple(10, RawVisitor)
    }
}

/// An array read without trusting its declared length for preallocation.
struct Many<T>(Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Many<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ManyVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ManyVisitor<T> {
            type Value = Many<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Many<T>, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = seq.next_element()? {
                    v.push(x);
                }
                Ok(Many(v))
            }
        }
        d.deserialize_seq(ManyVisitor(std::marker::PhantomData))
    }
}

/// Decodes a version 3 batch on its own, without keeping state, for [`wire::decode_batch`]: it succeeds when
/// every entry its events use travels in it.
pub(crate) fn decode_alone(bytes: &[u8], limits: &Limits) -> Result<Batch, DecodeError> {
    let mut d = Dictionaries { alone: true, ..Dictionaries::new(DictLimits::default()) };
    d.decode(bytes, limits).map(|(b, _)| b)
}

/// The version a decoded version 3 batch carries.
pub(crate) const DECODED_VERSION: u16 = BATCH_VERSION;
