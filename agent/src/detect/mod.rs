//! Pure detection: raw point values ([`Sample`]) become events ([`crate::Observation`]).
//! No tokio and no I/O here; the source tasks feed samples in and take observations out.

use shiftlens_common::AssetId;

/// A value read from a PLC point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Float(f64),
}

/// What a source task reports to the detector.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    /// A point's current value.
    Value { source: String, point: String, asset: AssetId, ts_ms: i64, value: Value },
    /// The connection to a source came up or went down; `assets` are the assets it feeds.
    Link { source: String, assets: Vec<AssetId>, ts_ms: i64, connected: bool, error: Option<String> },
}
