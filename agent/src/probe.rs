//! `shiftlens-agent probe`: reads every configured point once and prints a table (device, asset, point, raw
//! value, value, meaning, quality: ok or why not) - what an OT engineer runs while commissioning. Devices are probed at
//! once; one unreachable device never hides the others' values.

use crate::detect::{Meaning, Sample};
use crate::source::modbus::task::{connect, points_of, read, ReadError};
use crate::source::modbus::{plan, ModbusDevice, Register};
use crate::source::opcua::{self, OpcUaEndpoint};
use crate::Config;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::Slave;

/// One row of the probe table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub device: String,
    pub asset: String,
    pub point: String,
    pub raw: String,
    pub value: String,
    pub meaning: String,
    pub status: String,
}

/// What `probe` found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub rows: Vec<Row>,
    /// Devices (and endpoints) that could not be reached at all, with the reason.
    pub unreachable: Vec<(String, String)>,
}

impl Report {
    /// The table as text, one line per point, columns aligned.
    pub fn table(&self) -> String {
        let head = ["DEVICE", "ASSET", "POINT", "RAW", "VALUE", "MEANING", "QUALITY"];
        let cells: Vec<[&str; 7]> = self
            .rows
            .iter()
            .map(|r| [&*r.device, &*r.asset, &*r.point, &*r.raw, &*r.value, &*r.meaning, &*r.status])
            .collect();
        let mut width = head.map(str::len);
        for c in &cells {
            for (w, s) in width.iter_mut().zip(c) {
                *w = (*w).max(s.chars().count());
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&head).chain(&cells) {
            let mut l = String::new();
            for (i, s) in line.iter().enumerate() {
                if i + 1 == line.len() {
                    l.push_str(s);
                } else {
                    l.push_str(&format!("{s:<w$}  ", w = width[i]));
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Reads every point of every source once.
pub async fn run(config: &Config) -> Report {
    let mut set = JoinSet::new();
    for (i, d) in config.modbus.iter().enumerate() {
        let d = d.clone();
        set.spawn(async move { (i, probe_modbus(&d).await) });
    }
    let n = config.modbus.len();
    for (i, ep) in config.opcua.iter().enumerate() {
        let ep = ep.clone();
        set.spawn(async move { (n + i, probe_opcua(&ep).await) });
    }
    let mut parts = BTreeMap::new();
    while let Some(r) = set.join_next().await {
        if let Ok((i, part)) = r {
            parts.insert(i, part);
        }
    }
    let mut report = Report::default();
    for (_, (rows, unreachable)) in parts {
        report.rows.extend(rows);
        report.unreachable.extend(unreachable);
    }
    report
}

type Part = (Vec<Row>, Option<(String, String)>);

fn row(device: &str, asset: &str, point: &str, meaning: &Meaning) -> Row {
    Row {
        device: device.into(),
        asset: asset.into(),
        point: point.into(),
        raw: "-".into(),
        value: "-".into(),
        meaning: meaning.describe(),
        status: String::new(),
    }
}

async fn probe_modbus(dev: &ModbusDevice) -> Part {
    let id = dev.id.clone();
    let mut rows: Vec<Row> = dev.points.iter().map(|p| row(&id, p.asset.as_str(), &p.name, &p.meaning)).collect();
    let limit = dev.timeout;
    let unit = dev.unit;
    let line = dev.line.clone();
    let mut ctx = match connect(&line, unit, limit).await {
        Ok(c) => c,
        Err(e) => {
            rows.iter_mut().for_each(|r| r.status = format!("unreachable: {e}"));
            return (rows, Some((id, e)));
        }
    };
    ctx.set_slave(Slave(unit));
    let registers: Vec<Register> = dev.points.iter().map(|p| p.register).collect();
    let spans: Vec<_> = registers.iter().map(Register::span).collect();
    let mut answered = false;
    let mut last_error = String::new();
    for req in plan(&spans, dev.coalesce_gap) {
        match read(&mut ctx, &req, limit).await {
            Ok(data) => {
                answered = true;
                for (i, value, raw) in points_of(&registers, &req, &data) {
                    rows[i].raw = raw;
                    match value {
                        Some(v) => {
                            rows[i].value = v.to_string();
                            rows[i].status = "ok".into();
                        }
                        None => rows[i].status = "short answer".into(),
                    }
                }
            }
            Err(e) => {
                if matches!(e, ReadError::Exception(_)) {
                    answered = true;
                }
                last_error = e.to_string();
                for &i in &req.points {
                    rows[i].status = e.to_string();
                }
                if let ReadError::Broken(_) = e {
                    // Re-open before the next request: a late answer would be taken for the next one's.
                    match connect(&line, unit, limit).await {
                        Ok(c) => {
                            ctx = c;
                            ctx.set_slave(Slave(unit));
                        }
                        Err(e) => last_error = e,
                    }
                }
            }
        }
    }
    let unreachable = (!answered).then_some((id, last_error));
    (rows, unreachable)
}

async fn probe_opcua(ep: &OpcUaEndpoint) -> Part {
    let id = ep.id().to_string();
    let mut rows: Vec<Row> = ep.points.iter().map(|p| row(&id, p.asset.as_str(), &p.name, &p.meaning)).collect();
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let task = opcua::spawn(ep, tx);
    let wait = ep.request_timeout.max(Duration::from_secs(1)) * 3;
    let mut error = None;
    let deadline = tokio::time::Instant::now() + wait;
    // Each [[opcua.alarms]] answers once its ConditionRefresh ends: its active conditions and unmapped sources.
    let mut refreshes = ep.alarms.len();
    let mut conditions = Vec::new();
    while rows.iter().any(|r| r.status.is_empty()) || refreshes > 0 {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Sample::Refreshed { active, unmapped, .. })) => {
                refreshes = refreshes.saturating_sub(1);
                for (asset, a) in active {
                    let mut state = vec!["active"];
                    state.extend(a.acked.map(|ack| if ack { "acked" } else { "unacked" }));
                    state.extend(a.shelved.filter(|s| *s).map(|_| "shelved"));
                    state.extend(a.suppressed.filter(|s| *s).map(|_| "suppressed"));
                    conditions.push(Row {
                        device: id.clone(),
                        asset: asset.to_string(),
                        point: a.id.clone(),
                        raw: format!("severity {}", a.severity),
                        value: state.join(" "),
                        meaning: format!(
                            "A&C alarm, priority {}{}",
                            a.priority.as_deref().unwrap_or("-"),
                            a.class.as_deref().map(|c| format!(", class {c}")).unwrap_or_default()
                        ),
                        status: "ok".into(),
                    });
                }
                for (from, count) in unmapped {
                    conditions.push(Row {
                        device: id.clone(),
                        asset: "-".into(),
                        point: from,
                        raw: "-".into(),
                        value: format!("{count} events"),
                        meaning: "A&C alarm source".into(),
                        status: "mapped to no asset: add it to [[opcua.alarms.assets]]".into(),
                    });
                }
            }
            Ok(Some(Sample::Alarm { .. } | Sample::Unmapped { .. })) => {}
            Ok(Some(Sample::Value { point, value, .. })) => {
                if let Some(r) = rows.iter_mut().find(|r| r.point == point) {
                    r.raw = value.to_string();
                    r.value = value.to_string();
                    r.status = "ok".into();
                }
            }
            Ok(Some(Sample::Link { connected: false, error: e, .. })) => {
                error = Some(e.unwrap_or_else(|| "connection lost".into()));
                if rows.iter().all(|r| r.status.is_empty()) && conditions.is_empty() {
                    break;
                }
            }
            Ok(Some(Sample::Link { .. })) => {}
            Ok(None) | Err(_) => break,
        }
    }
    task.abort();
    let any_ok = rows.iter().any(|r| r.status == "ok") || refreshes < ep.alarms.len();
    let why = error.unwrap_or_else(|| format!("no value within {}s", wait.as_secs()));
    for r in rows.iter_mut().filter(|r| r.status.is_empty()) {
        r.status = why.clone();
    }
    rows.extend(conditions);
    (rows, (!any_ok).then_some((id, why)))
}
