//! The OpenAPI 3.1 document at `/api/v1/openapi.json`, generated from the code: paths from the endpoint
//! read side's catalogue [`CATALOGUE`]; each report's row schema from the columns its report function
//! produces (run once on empty data, for every option); the feed record's schema from two serialized
//! examples (one with every optional field set, one with none), so a field added in code appears here.

use crate::feed;
use crate::people::Personnel;
use crate::query::{self, Dataset, Filter, Kind, Options, Output, CATALOGUE};
use crate::report::coverage::GroupBy;
use crate::report::mttr::Dim;
use crate::report::pareto::ParetoBy;
use crate::timeline::{Downtime, FirstOut};
use serde_json::{json, Map, Value};
use shiftlens_common::{AssetId, GatewayId, SiteId};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

/// The document, built once.
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

/// Name of a report's schema: `coverage` → `CoverageReport`.
pub fn schema_name(report: &str) -> String {
    let mut s: String = report
        .split(['-', '_'])
        .map(|w| {
            let mut c = w.chars();
            c.next().map_or(String::new(), |f| f.to_uppercase().collect::<String>() + c.as_str())
        })
        .collect();
    s.push_str("Report");
    s
}

fn scalar() -> Value {
    json!({ "type": ["string", "number", "boolean", "null"] })
}

/// The columns of a report under every option: (all columns in first-seen order, columns always present).
fn columns(kind: Kind) -> (Vec<String>, BTreeSet<String>) {
    let ds = Dataset::new(Personnel::default().rebuilt(), Vec::new(), Some(Vec::new()));
    let f = Filter { site: None, line: None, asset: None, crew: None, from_ms: 0, to_ms: 86_400_000 };
    let base = Options { change: "p:s:1".parse().ok(), ..Options::default() };
    let variants = vec![
        Options { group: GroupBy::Shift, ..base.clone() },
        Options { group: GroupBy::Crew, ..base.clone() },
        Options { dim: Dim::Skill, ..base.clone() },
        Options { by: ParetoBy::Skill, ..base.clone() },
        Options { per_person: true, ..base.clone() },
        base,
    ];
    let mut all: Vec<String> = Vec::new();
    let mut always: Option<BTreeSet<String>> = None;
    for o in variants {
        let out = query::run(&ds, kind, &f, &o, f.to_ms);
        for c in &out.report.columns {
            if !all.contains(c) {
                all.push(c.clone());
            }
        }
        let set: BTreeSet<String> = out.report.columns.into_iter().collect();
        always = Some(match always {
            Some(a) => a.intersection(&set).cloned().collect(),
            None => set,
        });
    }
    (all, always.unwrap_or_default())
}

/// A JSON schema for a report response of `kind` (`None` for gateways, whose columns are fixed).
fn report_schema(kind: Option<Kind>) -> Value {
    let (cols, required) = match kind {
        Some(k) => columns(k),
        None => {
            let rep = query::gateways_report(&[], 0);
            (rep.columns.clone(), rep.columns.into_iter().collect())
        }
    };
    let props: Map<String, Value> = cols.iter().map(|c| (c.clone(), scalar())).collect();
    let mut top = json!({
        "type": "object",
        "required": ["report", "from", "to", "total_rows", "notes", "rows"],
        "additionalProperties": false,
        "properties": {
            "report": { "type": "string" },
            "from": { "type": "string", "format": "date-time" },
            "to": { "type": "string", "format": "date-time" },
            "total_rows": { "type": "integer", "minimum": 0 },
            "notes": { "type": "array", "items": { "type": "string" } },
            "rows": { "type": "array", "items": {
                "type": "object", "additionalProperties": false, "properties": props, "required": required,
            }},
        }
    });
    // Reports with headline figures (overview, repeats): their keys, from a run over nothing.
    if let Some(summary) = kind.and_then(|k| empty_output(k).summary) {
        let keys: Vec<&String> = summary.keys().collect();
        let p: Map<String, Value> =
            summary.keys().map(|k| (k.clone(), json!({ "type": ["number", "null"] }))).collect();
        top["properties"]["summary"] =
            json!({ "type": "object", "additionalProperties": false, "required": keys, "properties": p });
        if let Some(req) = top["required"].as_array_mut() {
            req.push("summary".into());
        }
    }
    top
}

/// A schema inferred from a full example and a minimal one: types from `full`, nullable where `min` is null.
pub fn schema_by_example(full: &Value, min: &Value) -> Value {
    match full {
        Value::Object(m) => {
            let props: Map<String, Value> = m
                .iter()
                .map(|(k, v)| {
                    let mv = min.get(k).unwrap_or(&Value::Null);
                    let mut s = schema_by_example(v, mv);
                    if mv.is_null() {
                        s = json!({ "anyOf": [s, { "type": "null" }] });
                    }
                    (k.clone(), s)
                })
                .collect();
            let keys: Vec<&String> = m.keys().collect();
            json!({ "type": "object", "additionalProperties": false, "required": keys, "properties": props })
        }
        Value::String(_) => json!({ "type": "string" }),
        Value::Bool(_) => json!({ "type": "boolean" }),
        Value::Number(n) if n.is_f64() => json!({ "type": "number" }),
        Value::Number(_) => json!({ "type": "integer" }),
        Value::Array(a) => {
            json!({ "type": "array", "items": a.first().map_or(json!({}), |x| schema_by_example(x, &Value::Null)) })
        }
        Value::Null => json!({}),
    }
}

fn feed_examples() -> Option<(Value, Value)> {
    let (site, gateway, asset) = (SiteId::parse("s").ok()?, GatewayId::parse("g").ok()?, AssetId::parse("a").ok()?);
    let full = Downtime {
        site: site.clone(),
        gateway: gateway.clone(),
        asset: asset.clone(),
        start_ms: 1_000,
        end_ms: Some(61_500),
        reason: Some("jam".into()),
        first_out: Some(FirstOut { id: "A1".into(), text: "t".into(), class: Some("c".into()), ts_ms: 900 }),
        data_gap: false,
    };
    let min = Downtime { end_ms: None, reason: None, first_out: None, ..full.clone() };
    let full = serde_json::to_value(feed::Record::new(&full, Some("l".into()))).ok()?;
    let min = serde_json::to_value(feed::Record::new(&min, None)).ok()?;
    Some((full, min))
}

/// The values of an option, from the `clap::ValueEnum` its parsing uses.
fn values<T: clap::ValueEnum>() -> Vec<String> {
    T::value_variants().iter().filter_map(|v| v.to_possible_value()).map(|p| p.get_name().to_string()).collect()
}

fn params(names: &[&str]) -> Vec<Value> {
    let describe = |n: &str| -> (&str, Value) {
        match n {
            "site" | "line" | "asset" | "crew" => ("Only rows of this value", json!({ "type": "string" })),
            "from" => (
                "Window start: date (site time zone), local date-time, RFC 3339 or ms, between 2000-01-01 and 2200-01-01; default 90 days before `to`. The window may be at most `[http] max_window` long (default 1096 days)",
                json!({ "type": "string" }),
            ),
            "to" => ("Window end (exclusive), between 2000-01-01 and 2200-01-01; default now", json!({ "type": "string" })),
            "format" => {
                ("Response format (or send Accept: text/csv)", json!({ "type": "string", "enum": ["json", "csv"] }))
            }
            "group" => ("Coverage rows per crew or per shift", json!({ "type": "string", "enum": values::<GroupBy>() })),
            "dim" => ("MTTR grouping", json!({ "type": "string", "enum": values::<Dim>() })),
            "by" => ("Pareto by asset or missing skill", json!({ "type": "string", "enum": values::<ParetoBy>() })),
            "per_person" => ("One row per person × skill", json!({ "type": "string", "enum": ["true", "false"] })),
            "change" => ("person:skill:level adds, person:skill removes", json!({ "type": "string" })),
            "limit" => (
                "Most rows to return, at most `[http] max_rows` (default 10000); the join returns 1000 unless given, the feed refuses a window holding more than max_rows events unless given",
                json!({ "type": "integer", "minimum": 0 }),
            ),
            "offset" => (
                "Rows to skip",
                json!({ "type": "integer", "minimum": 0, "maximum": query::MAX_OFFSET }),
            ),
            "horizon" => (
                "Recertification look-ahead from `to`, and how far each lapse is projected: a whole number and a unit (ms, s, m, h, d), more than zero and at most 730d; default `[people] recert_horizon` (90d)",
                json!({ "type": "string", "examples": ["30d", "90d", "12h"] }),
            ),
            _ => ("", json!({ "type": "string" })),
        }
    };
    names
        .iter()
        .map(|n| {
            let (d, s) = describe(n);
            json!({ "name": n, "in": "query", "required": *n == "change", "description": d, "schema": s })
        })
        .collect()
}

const FILTERS: [&str; 7] = ["site", "line", "asset", "crew", "from", "to", "format"];

fn get_op(summary: &str, params: Vec<Value>, schema: &str) -> Value {
    json!({ "get": {
        "summary": summary,
        "parameters": params,
        "responses": {
            "200": { "description": "OK", "content": {
                "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } },
                "text/csv": { "schema": { "type": "string" } },
            }},
            "400": { "$ref": "#/components/responses/BadRequest" },
            "401": { "$ref": "#/components/responses/Unauthorized" },
            "421": { "$ref": "#/components/responses/Misdirected" },
            "503": { "$ref": "#/components/responses/Unavailable" },
        }
    }})
}

fn build() -> Value {
    let mut paths = BTreeMap::new();
    let mut schemas = BTreeMap::new();
    for e in &CATALOGUE {
        let name = schema_name(&empty_output(e.kind).report.name);
        let names: Vec<&str> = FILTERS.iter().chain(e.options).copied().collect();
        paths.insert(e.path.to_string(), get_op(e.summary, params(&names), &name));
        schemas.insert(name, report_schema(Some(e.kind)));
    }
    paths.insert(
        "/api/v1/gateways".into(),
        get_op("Gateway and agent health: online, buffer depth, last seen", params(&["format"]), "GatewaysReport"),
    );
    schemas.insert("GatewaysReport".into(), report_schema(None));
    if let Some((full, min)) = feed_examples() {
        schemas.insert("DowntimeRecord".into(), schema_by_example(&full, &min));
    }
    schemas.insert(
        "DowntimeFeed".into(),
        json!({ "type": "array", "items": { "$ref": "#/components/schemas/DowntimeRecord" } }),
    );
    let feed_params: Vec<&str> = FILTERS.iter().chain(&["limit", "offset"]).copied().collect();
    let mut feed_op = get_op(
        "The downtime feed (shiftlens.downtime/1): events overlapping the window, oldest first",
        params(&feed_params),
        "DowntimeFeed",
    );
    feed_op["get"]["description"] = json!("Consumers upsert by (site, asset, start). Times are RFC 3339 UTC. The header X-Total-Count gives the number of events in the window; a window with more than `[http] max_rows` events needs `limit` (and `offset`) to page.");
    paths.insert("/api/v1/downtime".into(), feed_op);
    schemas.insert("Error".into(), json!({ "type": "object", "required": ["error"], "properties": {
        "error": { "type": "string" },
        "errors": { "type": "array", "items": { "type": "object", "required": ["file", "line", "column", "message"], "properties": {
            "file": { "type": "string" }, "line": { "type": "integer" }, "column": { "type": "string" }, "message": { "type": "string" }
        }}}
    }}));
    schemas.insert(
        "ImportResult".into(),
        json!({ "type": "object", "required": ["imported", "summary"], "additionalProperties": false,
        "properties": { "imported": { "type": "boolean" }, "summary": { "type": "string" } } }),
    );
    let kinds: Vec<&str> = crate::people::import::Kind::ALL.iter().map(|k| k.name()).collect();
    paths.insert("/api/v1/import/{kind}".into(), json!({ "post": {
        "summary": "Import one personnel CSV (formats in config/people.md): all rows or none. Admin role.",
        "parameters": [{ "name": "kind", "in": "path", "required": true, "schema": { "type": "string", "enum": kinds } }],
        "requestBody": { "required": true, "content": { "text/csv": { "schema": { "type": "string" } } } },
        "responses": {
            "200": { "description": "Stored", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ImportResult" } } } },
            "400": { "$ref": "#/components/responses/BadRequest" },
            "401": { "$ref": "#/components/responses/Unauthorized" },
            "403": { "description": "Not an admin, or a cross-site request (no bearer token, and no Origin or Referer of this site)", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
            "421": { "$ref": "#/components/responses/Misdirected" },
            "503": { "$ref": "#/components/responses/Unavailable" },
            "422": { "description": "Invalid rows; nothing stored", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
        }
    }}));
    let err = |d: &str| json!({ "description": d, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } });
    json!({
        "openapi": "3.1.0",
        "info": { "title": "ShiftLens collector API", "version": env!("CARGO_PKG_VERSION"),
                  "description": "Downtime, the competency join and its reports. Authenticate with Authorization: Bearer <token> when tokens are configured." },
        "servers": [{ "url": "/" }],
        "security": [{ "bearer": [] }],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {
                "BadRequest": err("Invalid parameter, or a window, limit or offset beyond its bound ([http] max_window, max_rows)"),
                "Unauthorized": err("No valid token"),
                "Misdirected": err("The Host header is not one of this dashboard's names ([http] public_names)"),
                "Unavailable": err("The store is unavailable, or the request took longer than [http] request_timeout"),
            },
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
        },
    })
}

fn empty_filter() -> Filter {
    Filter { site: None, line: None, asset: None, crew: None, from_ms: 0, to_ms: 86_400_000 }
}

fn empty_output(kind: Kind) -> Output {
    let ds = Dataset::new(Personnel::default().rebuilt(), Vec::new(), Some(Vec::new()));
    let f = empty_filter();
    let o = Options { change: "p:s:1".parse().ok(), ..Options::default() };
    query::run(&ds, kind, &f, &o, f.to_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_report_endpoint_has_a_path_and_a_schema_with_columns() {
        let doc = document();
        for e in &CATALOGUE {
            let op = &doc["paths"][e.path]["get"];
            let r = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].as_str().unwrap();
            let name = r.rsplit('/').next().unwrap();
            let rows = &doc["components"]["schemas"][name]["properties"]["rows"]["items"]["properties"];
            assert!(rows.as_object().is_some_and(|m| !m.is_empty()), "{} has no columns", e.path);
        }
        assert_eq!(schema_name("alarm_load"), "AlarmLoadReport");
    }

    #[test]
    fn feed_schema_marks_optional_fields_nullable() {
        let s = &document()["components"]["schemas"]["DowntimeRecord"]["properties"];
        assert_eq!(s["end"]["anyOf"][1]["type"], "null");
        assert_eq!(s["asset"]["type"], "string");
        assert_eq!(s["data_gap"]["type"], "boolean");
    }
}
