//! The pure half of an OPC UA endpoint: session events and data changes in, [`Sample`]s out (no I/O).
//!
//! Invariant: values carry the server's source timestamp (an absurd one falls back to the server's, then ours).
//! A value with a bad status is not reported: the source is reported lost (`Sample::Link`, naming the point and
//! status) until every point is good again, then every point's last good value is reported again.

use super::OpcUaEndpoint;
use crate::detect::{Sample, Value};
use opcua::types::{DataValue, DateTime, StatusCode, Variant};
use shiftlens_common::clock::now_ms;
use shiftlens_common::{AssetId, TS_RANGE_MS};
use std::collections::BTreeMap;
use tracing::warn;

/// Converts an OPC UA value to a detector value; `None` for types a point cannot hold.
fn to_value(v: &Variant) -> Option<Value> {
    Some(match v {
        Variant::Boolean(b) => Value::Bool(*b),
        Variant::SByte(x) => Value::Int((*x).into()),
        Variant::Byte(x) => Value::Int((*x).into()),
        Variant::Int16(x) => Value::Int((*x).into()),
        Variant::UInt16(x) => Value::Int((*x).into()),
        Variant::Int32(x) => Value::Int((*x).into()),
        Variant::UInt32(x) => Value::Int((*x).into()),
        Variant::Int64(x) => Value::Int(*x),
        Variant::UInt64(x) => Value::Int(i64::try_from(*x).ok()?),
        Variant::Float(x) => Value::Float((*x).into()),
        Variant::Double(x) => Value::Float(*x),
        _ => return None,
    })
}

/// The link state of one endpoint, as a pure state machine: session events and data changes in,
/// samples out. The source is "connected" while the session is up and no point has a bad status.
#[derive(Debug)]
pub struct Tracker {
    source: String,
    assets: Vec<AssetId>,
    points: Vec<(String, AssetId)>,
    session_up: bool,
    bad: BTreeMap<usize, String>,
    reported: Option<bool>,
    last: Vec<Option<(i64, Value)>>,
}

impl Tracker {
    pub fn new(ep: &OpcUaEndpoint) -> Self {
        let points: Vec<(String, AssetId)> = ep.points.iter().map(|p| (p.name.clone(), p.asset.clone())).collect();
        Self {
            source: ep.id().to_string(),
            assets: ep.assets(),
            last: vec![None; points.len()],
            points,
            session_up: false,
            bad: BTreeMap::new(),
            reported: None,
        }
    }

    /// The session came up or went down.
    pub fn session(&mut self, up: bool, error: Option<String>) -> Vec<Sample> {
        self.session_up = up;
        self.bad.clear();
        self.last.iter_mut().for_each(|l| *l = None);
        self.link(error, now_ms())
    }

    /// A data change notification for point `i`.
    pub fn data(&mut self, i: usize, dv: &DataValue) -> Vec<Sample> {
        let Some((name, asset)) = self.points.get(i).cloned() else { return Vec::new() };
        // A missing or absurd source time (a PLC whose clock was never set sends 1601 or 1970) falls back to the
        // server's, then to ours: the collector refuses times outside TS_RANGE_MS, so it would never be acked.
        let sane = |t: &DateTime| Some(t.as_chrono().timestamp_millis()).filter(|ms| TS_RANGE_MS.contains(ms));
        let ts_ms = dv
            .source_timestamp
            .as_ref()
            .and_then(sane)
            .or_else(|| dv.server_timestamp.as_ref().and_then(sane))
            .unwrap_or_else(now_ms);
        let status = dv.status.unwrap_or(StatusCode::Good);
        if status.is_bad() {
            self.last[i] = None;
            self.bad.insert(i, format!("point {name}: {status}"));
            return self.link(self.bad.values().next().cloned(), ts_ms);
        }
        let Some(value) = dv.value.as_ref().and_then(to_value) else {
            warn!(source = %self.source, point = %name, value = ?dv.value, "OPC UA value of an unsupported type ignored");
            return Vec::new();
        };
        self.last[i] = Some((ts_ms, value));
        self.bad.remove(&i);
        let before = self.reported;
        let mut out = self.link(None, ts_ms);
        match (before, self.reported) {
            // Back from bad quality: the detector forgot the source's values, so report every one again.
            (Some(false), Some(true)) => {
                for ((n, a), l) in self.points.iter().zip(&self.last) {
                    if let Some((ts, v)) = l {
                        out.push(self.sample(n, a, *ts, *v));
                    }
                }
            }
            (_, Some(true)) => out.push(self.sample(&name, &asset, ts_ms, value)),
            _ => {}
        }
        out
    }

    fn sample(&self, point: &str, asset: &AssetId, ts_ms: i64, value: Value) -> Sample {
        Sample::Value { source: self.source.clone(), point: point.to_string(), asset: asset.clone(), ts_ms, value }
    }

    fn link(&mut self, error: Option<String>, ts_ms: i64) -> Vec<Sample> {
        let connected = self.session_up && self.bad.is_empty();
        if self.reported == Some(connected) {
            return Vec::new();
        }
        self.reported = Some(connected);
        vec![Sample::Link {
            source: self.source.clone(),
            assets: self.assets.clone(),
            ts_ms,
            connected,
            error: if connected { None } else { error },
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::opcua::tests::{check, POINT};
    use crate::source::opcua::OpcUaEndpoint;

    fn endpoint() -> OpcUaEndpoint {
        let text = format!(
            "[[opcua]]\nid = \"p\"\nendpoint = \"opc.tcp://127.0.0.1:4840/\"\n{POINT}[[opcua.points]]\nnode = \"i=2\"\nname = \"b\"\nasset = \"a2\"\nmeaning = \"info\"\n"
        );
        check(&text).unwrap().remove(0).into_inner().validated()
    }

    fn dv(v: u16, status: StatusCode) -> DataValue {
        DataValue { value: Some(Variant::UInt16(v)), status: Some(status), ..Default::default() }
    }

    fn links(out: &[Sample]) -> Vec<bool> {
        out.iter()
            .filter_map(|s| if let Sample::Link { connected, .. } = s { Some(*connected) } else { None })
            .collect()
    }

    #[test]
    fn a_bad_status_reports_the_source_lost_then_every_value_again() {
        let mut t = Tracker::new(&endpoint());
        assert_eq!(links(&t.session(true, None)), [true]);
        assert_eq!(t.data(0, &dv(1, StatusCode::Good)).len(), 1);
        assert_eq!(t.data(1, &dv(5, StatusCode::Good)).len(), 1);
        let out = t.data(0, &dv(1, StatusCode::BadDeviceFailure));
        let [Sample::Link { connected: false, error: Some(e), assets, .. }] = out.as_slice() else { panic!("{out:?}") };
        assert!(e.contains("BadDeviceFailure") && e.contains("ns=2;s=A.state"), "{e}");
        assert_eq!(assets.len(), 2);
        // Another bad point, or a good value of a good point, while lost: nothing reported.
        assert!(t.data(1, &dv(6, StatusCode::BadDeviceFailure)).is_empty());
        assert!(t.data(1, &dv(7, StatusCode::Good)).is_empty());
        // The last bad point recovers: link up, then both points' current values.
        let out = t.data(0, &dv(2, StatusCode::Good));
        assert_eq!(links(&out), [true]);
        assert_eq!(out.len(), 3, "{out:?}");
        // A lost session resets everything; it is reported once.
        assert_eq!(links(&t.session(false, Some("gone".into()))), [false]);
        assert!(t.session(false, Some("still gone".into())).is_empty());
    }

    #[test]
    fn an_absurd_source_time_falls_back_to_the_server_time_then_ours() {
        let sample_ts = |out: Vec<Sample>| match out.as_slice() {
            [Sample::Value { ts_ms, .. }] => *ts_ms,
            other => panic!("{other:?}"),
        };
        let mut t = Tracker::new(&endpoint());
        t.session(true, None);
        let server = DateTime::ymd_hms(2026, 11, 30, 6, 0, 0);
        // A PLC clock never set: OPC UA's null time (1601) or 1970.
        let never_set = DataValue {
            source_timestamp: Some(DateTime::null()),
            server_timestamp: Some(server),
            ..dv(1, StatusCode::Good)
        };
        assert_eq!(sample_ts(t.data(0, &never_set)), server.as_chrono().timestamp_millis());
        let before = now_ms();
        let both_bad = DataValue {
            source_timestamp: Some(DateTime::ymd(1970, 1, 1)),
            server_timestamp: Some(DateTime::null()),
            ..dv(2, StatusCode::Good)
        };
        let ts = sample_ts(t.data(0, &both_bad));
        assert!(ts >= before && TS_RANGE_MS.contains(&ts), "{ts}");
    }
}
