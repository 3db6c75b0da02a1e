//! `cargo fuzz run decode_batch`: the batch and ack decoders must never panic, and whatever decodes must
//! re-encode to a batch that decodes to the same value, in the plain form and in the dictionary form.
//! The input is also read as two payloads through one set of dictionaries (version 3 batches that refer
//! to the entries of an earlier one), split at the position its last byte names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shiftlens_common::wire::{decode_ack, decode_batch, encode_batch};
use shiftlens_common::wire_dict::{DictEncoder, DictLimits, Dictionaries};
use shiftlens_common::Limits;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(batch) = decode_batch(data, &limits) {
        let again = decode_batch(&encode_batch(&batch), &limits);
        assert_eq!(again.as_ref(), Ok(&batch));
        // The dictionary form carries version 2's events (a version 1 batch comes back as version 2).
        let dict = DictEncoder::new(1).encode(&batch);
        let plain = shiftlens_common::Batch { version: shiftlens_common::BATCH_VERSION, ..batch };
        assert_eq!(decode_batch(&dict, &limits), Ok(plain));
    }
    let _ = decode_ack(data);
    if let Some((&cut, rest)) = data.split_last() {
        let (first, second) = rest.split_at((cut as usize).min(rest.len()));
        let mut dicts = Dictionaries::new(DictLimits { max_dictionaries: 2, ..DictLimits::default() });
        for payload in [first, second] {
            if let Ok((batch, update)) = dicts.decode(payload, &limits) {
                assert!(batch.events.windows(2).all(|w| w[0].seq < w[1].seq));
                dicts.commit(update);
            }
        }
    }
});
