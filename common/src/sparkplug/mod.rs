//! Sparkplug B v1.0 (`spBv1.0`): topics, payloads and the primary host's `STATE`, built and parsed here only.
//!
//! ```text
//! spBv1.0/{group}/NBIRTH|NDEATH|NDATA|NCMD/{edge node}
//! spBv1.0/{group}/DBIRTH|DDEATH|DDATA|DCMD/{edge node}/{device}
//! spBv1.0/STATE/{host id}        retained; JSON {"online":bool,"timestamp":ms} (Sparkplug 3.0), or the
//!                                plain text ONLINE / OFFLINE of earlier hosts (both are read)
//! ```
//!
//! A ShiftLens agent in Sparkplug mode is one edge node (its gateway id) with one device per asset; the
//! metrics it declares are named in [`metric`]. Payloads are protobuf ([`proto`]); decoding is bounded by
//! [`MAX_PAYLOAD`] and never panics.

pub mod proto;

use proto::{DataType, Metric, Payload, Value};
use std::fmt;

/// The topic namespace of Sparkplug B.
pub const NAMESPACE: &str = "spBv1.0";

/// Largest payload decoded (larger ones are refused before decoding).
pub const MAX_PAYLOAD: usize = 1 << 20;

/// The names of the metrics a ShiftLens agent declares.
pub mod metric {
    /// Node: the birth/death sequence number (UInt64) in NBIRTH and NDEATH.
    pub const BD_SEQ: &str = "bdSeq";
    /// Node: a host writes `true` in an NCMD to ask for a new birth.
    pub const REBIRTH: &str = "Node Control/Rebirth";
    /// Node: events the outbox had to drop (UInt64, the count of one gap).
    pub const DROPPED: &str = "Outbox/Dropped Events";
    /// Device: the machine state (`running`, `idle`, `down`, `planned`, `unknown`).
    pub const STATE: &str = "state";
    /// Device: the reason given with the state ("" when none).
    pub const REASON: &str = "reason";
    /// Device: whether the PLC or server feeding the asset is connected.
    pub const CONNECTED: &str = "connected";
    /// Device: prefix of one Boolean metric per alarm, `alarm/{alarm id}`.
    pub const ALARM_PREFIX: &str = "alarm/";
}

/// The message types of Sparkplug B.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    NBirth,
    NDeath,
    NData,
    NCmd,
    DBirth,
    DDeath,
    DData,
    DCmd,
}

impl MessageType {
    pub const ALL: [MessageType; 8] =
        [Self::NBirth, Self::NDeath, Self::NData, Self::NCmd, Self::DBirth, Self::DDeath, Self::DData, Self::DCmd];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NBirth => "NBIRTH",
            Self::NDeath => "NDEATH",
            Self::NData => "NDATA",
            Self::NCmd => "NCMD",
            Self::DBirth => "DBIRTH",
            Self::DDeath => "DDEATH",
            Self::DData => "DDATA",
            Self::DCmd => "DCMD",
        }
    }

    /// Whether the topic names a device after the edge node.
    pub fn is_device(self) -> bool {
        matches!(self, Self::DBirth | Self::DDeath | Self::DData | Self::DCmd)
    }

    /// Whether an edge node publishes it (a host publishes the commands).
    pub fn from_edge(self) -> bool {
        !matches!(self, Self::NCmd | Self::DCmd)
    }
}

/// A parsed Sparkplug topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SpTopic {
    Message { group: String, kind: MessageType, node: String, device: Option<String> },
    State { host: String },
}

/// Why a topic or id is not Sparkplug.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what:?} is not a Sparkplug B topic or id: {why}")]
pub struct SpError {
    pub what: String,
    pub why: &'static str,
}

/// Checks a group, edge node, device or host id: 1-255 bytes of UTF-8 without `/`, `+`, `#` or control
/// characters (the specification forbids the first three; the rest keeps logs and topics printable).
///
/// # Errors
/// When the id breaks one of those rules.
pub fn check_id(id: &str) -> Result<(), SpError> {
    let err = |why| SpError { what: id.chars().take(80).collect(), why };
    if id.is_empty() {
        return Err(err("an id must not be empty"));
    }
    if id.len() > 255 {
        return Err(err("an id must be at most 255 bytes"));
    }
    if id.chars().any(|c| matches!(c, '/' | '+' | '#') || c.is_control()) {
        return Err(err("an id must not contain '/', '+', '#' or control characters"));
    }
    Ok(())
}

impl SpTopic {
    /// A node message topic.
    pub fn node(group: &str, kind: MessageType, node: &str) -> Self {
        Self::Message { group: group.into(), kind, node: node.into(), device: None }
    }

    /// A device message topic.
    pub fn device(group: &str, kind: MessageType, node: &str, device: &str) -> Self {
        Self::Message { group: group.into(), kind, node: node.into(), device: Some(device.into()) }
    }

    /// Parses a topic name (not a filter). `STATE/{host}` (hosts before Sparkplug 3.0) is read as well.
    ///
    /// # Errors
    /// When the namespace, the number of levels, the message type or an id is wrong.
    pub fn parse(topic: &str) -> Result<Self, SpError> {
        let err = |why| SpError { what: topic.chars().take(200).collect(), why };
        let parts: Vec<&str> = topic.split('/').collect();
        let id = |s: &str| check_id(s).map(|()| s.to_string());
        match parts.as_slice() {
            [NAMESPACE, "STATE", host] | ["STATE", host] => Ok(Self::State { host: id(host)? }),
            [NAMESPACE, group, kind, node, rest @ ..] => {
                let kind = MessageType::ALL
                    .into_iter()
                    .find(|k| k.as_str() == *kind)
                    .ok_or_else(|| err("unknown message type"))?;
                let device = match (kind.is_device(), rest) {
                    (false, []) => None,
                    (true, [device]) => Some(id(device)?),
                    (false, _) => return Err(err("a node message has no device level")),
                    (true, _) => return Err(err("a device message needs exactly one device level")),
                };
                Ok(Self::Message { group: id(group)?, kind, node: id(node)?, device })
            }
            _ => Err(err("expected spBv1.0/{group}/{type}/{node}[/{device}] or spBv1.0/STATE/{host}")),
        }
    }
}

impl fmt::Display for SpTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Message { group, kind, node, device: None } => {
                write!(f, "{NAMESPACE}/{group}/{}/{node}", kind.as_str())
            }
            Self::Message { group, kind, node, device: Some(d) } => {
                write!(f, "{NAMESPACE}/{group}/{}/{node}/{d}", kind.as_str())
            }
            Self::State { host } => write!(f, "{NAMESPACE}/STATE/{host}"),
        }
    }
}

/// The filter for everything of one group.
pub fn group_filter(group: &str) -> String {
    format!("{NAMESPACE}/{group}/#")
}

/// The `STATE` payload a primary host publishes (Sparkplug 3.0 JSON).
pub fn state_json(online: bool, timestamp_ms: i64) -> Vec<u8> {
    format!("{{\"online\":{online},\"timestamp\":{timestamp_ms}}}").into_bytes()
}

/// Reads a host's `STATE` payload: Sparkplug 3.0's JSON `{"online":bool,...}`, or `ONLINE` / `OFFLINE`.
/// `None` when it is neither (an empty retained message clears the state: treated as offline).
pub fn parse_state(payload: &[u8]) -> Option<bool> {
    let text = std::str::from_utf8(payload).ok()?.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("OFFLINE") {
        return Some(false);
    }
    if text.eq_ignore_ascii_case("ONLINE") {
        return Some(true);
    }
    #[derive(serde::Deserialize)]
    struct State {
        online: bool,
    }
    serde_json::from_str::<State>(text).ok().map(|s| s.online)
}

/// Why a payload cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("payload of {0} bytes exceeds the limit of {MAX_PAYLOAD}")]
    TooLarge(usize),
    #[error("payload is not a Sparkplug B protobuf message: {0}")]
    Protobuf(String),
}

/// Encodes a payload.
pub fn encode(payload: &Payload) -> Vec<u8> {
    prost::Message::encode_to_vec(payload)
}

/// Decodes a payload of at most [`MAX_PAYLOAD`] bytes.
///
/// # Errors
/// Too large, or not a valid protobuf `Payload`.
pub fn decode(bytes: &[u8]) -> Result<Payload, PayloadError> {
    if bytes.len() > MAX_PAYLOAD {
        return Err(PayloadError::TooLarge(bytes.len()));
    }
    <Payload as prost::Message>::decode(bytes).map_err(|e| PayloadError::Protobuf(e.to_string()))
}

impl Metric {
    fn with(name: Option<&str>, alias: Option<u64>, ts_ms: i64, datatype: DataType, value: Option<Value>) -> Self {
        Self {
            name: name.map(str::to_string),
            alias,
            timestamp: u64::try_from(ts_ms).ok(),
            datatype: Some(datatype as u32),
            is_historical: None,
            is_transient: None,
            is_null: value.is_none().then_some(true),
            value,
        }
    }

    /// A String metric; `None` is a null value.
    pub fn string(name: Option<&str>, alias: Option<u64>, ts_ms: i64, v: Option<&str>) -> Self {
        Self::with(name, alias, ts_ms, DataType::String, v.map(|s| Value::StringValue(s.to_string())))
    }

    /// A Boolean metric; `None` is a null value.
    pub fn boolean(name: Option<&str>, alias: Option<u64>, ts_ms: i64, v: Option<bool>) -> Self {
        Self::with(name, alias, ts_ms, DataType::Boolean, v.map(Value::BooleanValue))
    }

    /// A UInt64 metric.
    pub fn uint64(name: Option<&str>, alias: Option<u64>, ts_ms: i64, v: u64) -> Self {
        Self::with(name, alias, ts_ms, DataType::UInt64, Some(Value::LongValue(v)))
    }

    /// Marks the metric historical (sent late, from a store-and-forward backlog).
    pub fn historical(mut self, yes: bool) -> Self {
        self.is_historical = yes.then_some(true);
        self
    }

    /// The value as a whole number: integers by their declared type (signed types sign-extended, as the
    /// specification encodes them in two's complement), Booleans as 0/1, floats when whole. `None` for a
    /// null, a string or a fraction.
    pub fn as_i64(&self) -> Option<i64> {
        if self.is_null == Some(true) {
            return None;
        }
        let dt = self.datatype.unwrap_or(0);
        match self.value.as_ref()? {
            Value::IntValue(v) => Some(match dt {
                1 => i64::from(*v as u8 as i8),
                2 => i64::from(*v as u16 as i16),
                3 => i64::from(*v as i32),
                _ => i64::from(*v),
            }),
            Value::LongValue(v) if dt == DataType::Int64 as u32 => Some(*v as i64),
            Value::LongValue(v) => i64::try_from(*v).ok(),
            Value::BooleanValue(b) => Some(i64::from(*b)),
            Value::FloatValue(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(*f as i64),
            Value::DoubleValue(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(*f as i64),
            _ => None,
        }
    }

    /// The value as text, for strings; `None` otherwise.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Some(Value::StringValue(s)) if self.is_null != Some(true) => Some(s),
            _ => None,
        }
    }

    /// The value as a flag: Booleans, and numbers (non-zero is true).
    pub fn as_bool(&self) -> Option<bool> {
        match &self.value {
            Some(Value::BooleanValue(b)) if self.is_null != Some(true) => Some(*b),
            _ => self.as_i64().map(|v| v != 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip_and_bad_ones_are_refused() {
        for t in [
            SpTopic::node("plant-a", MessageType::NBirth, "gw-1"),
            SpTopic::device("plant-a", MessageType::DData, "gw-1", "Press.7"),
            SpTopic::State { host: "shiftlens".into() },
        ] {
            assert_eq!(SpTopic::parse(&t.to_string()).unwrap(), t);
        }
        assert_eq!(
            SpTopic::parse("STATE/scada").unwrap(),
            SpTopic::State { host: "scada".into() },
            "the topic of hosts before 3.0"
        );
        for bad in [
            "spBv1.0/g/NBIRTH",
            "spBv1.0/g/NBIRTH/n/d",
            "spBv1.0/g/DDATA/n",
            "spBv1.0/g/XDATA/n",
            "spBv1.0/g/DDATA/n/d/e",
            "spBv1.0//NDATA/n",
            "spAv1.0/g/NDATA/n",
            "shiftlens/v1/a/b/events",
        ] {
            assert!(SpTopic::parse(bad).is_err(), "{bad}");
        }
        assert!(check_id("a+b").is_err() && check_id("").is_err() && check_id("Edge Node 1").is_ok());
    }

    #[test]
    fn state_payloads_of_both_generations_are_read() {
        assert_eq!(parse_state(&state_json(true, 5)), Some(true));
        assert_eq!(parse_state(br#"{"online":false,"timestamp":1}"#), Some(false));
        assert_eq!(parse_state(b"ONLINE"), Some(true));
        assert_eq!(parse_state(b"OFFLINE"), Some(false));
        assert_eq!(parse_state(b""), Some(false));
        assert_eq!(parse_state(b"maybe"), None);
        assert_eq!(parse_state(&[0xff, 0xfe]), None);
    }

    #[test]
    fn payloads_round_trip_and_values_are_read_by_type() {
        let p = Payload {
            timestamp: Some(1_700_000_000_000),
            metrics: vec![
                Metric::string(Some("state"), Some(1), 1_700_000_000_000, Some("down")),
                Metric::boolean(None, Some(3), 1_700_000_000_000, Some(true)).historical(true),
                Metric::uint64(Some("bdSeq"), None, 1, 7),
            ],
            seq: Some(255),
            uuid: None,
            body: None,
        };
        let back = decode(&encode(&p)).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.metrics[0].as_str(), Some("down"));
        assert_eq!(back.metrics[1].as_bool(), Some(true));
        assert_eq!(back.metrics[2].as_i64(), Some(7));
        let mut m = Metric::uint64(None, None, 0, 0);
        (m.datatype, m.value) = (Some(DataType::Int16 as u32), Some(Value::IntValue(0xffff)));
        assert_eq!(m.as_i64(), Some(-1));
        (m.datatype, m.value) = (Some(DataType::Double as u32), Some(Value::DoubleValue(3.0)));
        assert_eq!(m.as_i64(), Some(3));
        m.value = Some(Value::DoubleValue(3.5));
        assert_eq!(m.as_i64(), None);
    }

    #[test]
    fn garbage_and_oversized_payloads_are_errors_not_panics() {
        assert!(decode(&[0xff; 16]).is_err());
        assert!(matches!(decode(&vec![0u8; MAX_PAYLOAD + 1]), Err(PayloadError::TooLarge(_))));
        proptest::proptest!(|(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256))| {
            let _ = decode(&bytes);
        });
    }
}
