//! Renders a [`Report`] as an aligned text table, JSON or CSV.
//!
//! Every CSV the program writes (reports, gateways, the downtime feed and `export downtime`) passes its
//! text cells through [`csv_text`], so a cell a spreadsheet would run as a formula is written as text.

use crate::report::Report;
use serde_json::Value;
use std::borrow::Cow;

/// A text cell made safe to open in a spreadsheet (OWASP, "CSV Injection"): a cell that starts with `=`,
/// `+`, `-`, `@`, a tab or a carriage return gets a leading `'`, so Excel, LibreOffice and Google Sheets
/// show it as text instead of running it as a formula. The CSV writer quotes the result as usual.
///
/// Only text is changed: numbers the program computed (durations, counts, hours, a negative figure
/// included) are written by their writers as numbers, untouched; a text cell that merely looks like a
/// negative number (an id `-5`) is text from outside and gets the quote too.
pub fn csv_text(s: &str) -> Cow<'_, str> {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        Cow::Owned(format!("'{s}"))
    } else {
        Cow::Borrowed(s)
    }
}

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

/// A CSV cell: text through [`csv_text`], numbers and booleans as they are.
fn csv_cell(v: &Value) -> String {
    match v {
        Value::String(s) => csv_text(s).into_owned(),
        other => cell(other),
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
            w.write_record(r.columns.iter().map(|c| csv_text(c).into_owned()))?;
            for row in &r.rows {
                w.write_record(row.iter().map(csv_cell))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_cells_that_spreadsheets_would_run_get_a_quote() {
        for (cell, want) in [
            ("=HYPERLINK(\"http://evil.example\")", "'=HYPERLINK(\"http://evil.example\")"),
            ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1:A9)", "'@SUM(A1:A9)"),
            ("\t=1", "'\t=1"),
            ("\r=1", "'\r=1"),
            ("-5", "'-5"),
            ("asset-003", "asset-003"),
            ("a=b", "a=b"),
            ("", ""),
        ] {
            assert_eq!(csv_text(cell), want, "{cell:?}");
        }
    }

    #[test]
    fn report_csv_neutralises_text_and_keeps_numbers() {
        let mut r = Report::new("t", ["name", "hours"]);
        r.rows.push(vec![Value::from("=1+1"), Value::from(-2.5)]);
        r.rows.push(vec![Value::from("@x"), Value::from(3)]);
        let csv = render(&r, Format::Csv).unwrap();
        assert_eq!(csv, "name,hours\n'=1+1,-2.5\n'@x,3\n");
    }
}
