//! `cargo fuzz run decode_batch`: the batch and ack decoders must never panic, and whatever decodes must
//! re-encode to a batch that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shiftlens_common::wire::{decode_ack, decode_batch, encode_batch};
use shiftlens_common::Limits;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(batch) = decode_batch(data, &limits) {
        let again = decode_batch(&encode_batch(&batch), &limits);
        assert_eq!(again.as_ref(), Ok(&batch));
    }
    let _ = decode_ack(data);
});
