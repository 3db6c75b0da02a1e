//! Renders a [`Report`] as an aligned text table, JSON or CSV.

use crate::report::Report;
use serde_json::Value;

/// Output formats of `report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The report in `format`.
///
/// # Errors
/// Only if CSV or JSON serialization fails (it does not for these values).
pub fn render(r: &Report, format: Format) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(r)? + "\n",
        Format::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            w.write_record(&r.columns)?;
            for row in &r.rows {
                w.write_record(row.iter().map(cell))?;
            }
            String::from_utf8(w.into_inner()?)?
        }
        Format::Table => {
            let cells: Vec<Vec<String>> = r.rows.iter().map(|row| row.iter().map(cell).collect()).collect();
            let mut width: Vec<usize> = r.columns.iter().map(|c| c.chars().count()).collect();
            for row in &cells {
                for (i, c) in row.iter().enumerate() {
                    if let Some(w) = width.get_mut(i) {
                        *w = (*w).max(c.chars().count());
                    }
                }
            }
            let line = |row: &[String]| {
                let s: Vec<String> = row.iter().zip(&width).map(|(c, w)| format!("{c:<w$}")).collect();
                s.join("  ").trim_end().to_string() + "\n"
            };
            let mut out = line(&r.columns);
            out += &(width.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  ") + "\n");
            for row in &cells {
                out += &line(row);
            }
            for n in &r.notes {
                out += &format!("note: {n}\n");
            }
            out
        }
    })
}
