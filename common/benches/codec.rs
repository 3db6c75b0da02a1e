//! Encode and decode of a 500-event batch, plain (version 2) and in the dictionary form (version 3, decoded
//! by a reader that already holds the dictionary, as in steady state). Throughput is reported in events per
//! second.
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shiftlens_common::wire::{decode_batch, encode_batch};
use shiftlens_common::wire_dict::{DictEncoder, DictLimits, Dictionaries};
use shiftlens_common::{Alarm, AssetId, Batch, Event, EventBody, GatewayId, Limits, MachineState, SiteId};
use std::hint::black_box;

fn batch(n: u64) -> Batch {
    let events = (0..n)
        .map(|i| Event {
            seq: 1000 + i,
            ts_ms: 1_764_000_000_000 + i as i64 * 10,
            asset: AssetId::parse(format!("press-{}", i % 8)).expect("valid id"),
            body: if i % 3 == 0 {
                EventBody::Alarm(Alarm {
                    id: format!("A{}", i % 50),
                    active: i % 2 == 0,
                    severity: 500,
                    text: "Drive fault on main axis".into(),
                    class: Some("drive".into()),
                    ..Default::default()
                })
            } else {
                EventBody::State { state: MachineState::ALL[(i % 4) as usize], reason: Some("E042".into()) }
            },
        })
        .collect();
    Batch::new(SiteId::parse("plant-a").expect("id"), GatewayId::parse("gw-1").expect("id"), 42, events)
}

fn codec(c: &mut Criterion) {
    let b = batch(500);
    let bytes = encode_batch(&b);
    let limits = Limits::default();
    let mut g = c.benchmark_group("batch_500");
    g.throughput(Throughput::Elements(500));
    g.bench_function("encode", |bench| bench.iter(|| encode_batch(black_box(&b))));
    g.bench_function("decode", |bench| bench.iter(|| decode_batch(black_box(&bytes), &limits).expect("valid")));
    let mut enc = DictEncoder::new(1);
    let mut dicts = Dictionaries::new(DictLimits::default());
    let (_, update) = dicts.decode(&enc.encode(&b), &limits).expect("valid");
    dicts.commit(update);
    g.bench_function("encode v3", |bench| bench.iter(|| enc.encode(black_box(&b))));
    let v3 = enc.encode(&b);
    g.bench_function("decode v3", |bench| bench.iter(|| dicts.decode(black_box(&v3), &limits).expect("valid")));
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
