//! Output of `weerwal logs query` and `report`: an aligned table for
//! reading, RFC 4180 CSV and JSON for export.

use std::borrow::Cow;
use std::io::{self, Write};

/// The output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

/// A field as it goes into a CSV export: one that a spreadsheet would run
/// as a formula (`=`, `+`, `-`, `@`, tab or CR first: the User-Agent is
/// chosen by whoever sent the request) is prefixed with `'`, so opening the
/// export in Excel or LibreOffice never executes it. Quoting is the `csv`
/// crate's.
pub fn csv_field(s: &str) -> Cow<'_, str> {
    // A lone `-` or `+` (our "none") is text to every spreadsheet.
    let formula = s.starts_with(['=', '@', '\t', '\r']) || (s.len() > 1 && s.starts_with(['+', '-']));
    if formula {
        Cow::Owned(format!("'{s}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// One CSV record (RFC 4180: quoted where needed, ended with CRLF).
pub fn csv_row<S: AsRef<str>>(out: &mut dyn Write, fields: &[S]) -> io::Result<()> {
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).buffer_capacity(1024).from_writer(out);
    let fields: Vec<Cow<'_, str>> = fields.iter().map(|f| csv_field(f.as_ref())).collect();
    w.write_record(fields.iter().map(|f| f.as_bytes()))?;
    w.flush()
}

/// A cell as the terminal should show it: control characters (which could
/// move the cursor or recolour the screen; the log holds text that clients
/// chose) are replaced by `?`.
pub fn clean_cell(s: &str) -> Cow<'_, str> {
    if s.chars().any(char::is_control) {
        Cow::Owned(s.chars().map(|c| if c.is_control() { '?' } else { c }).collect())
    } else {
        Cow::Borrowed(s)
    }
}

/// An aligned table that streams: the first rows set the column widths
/// (up to [`Table::WIDEST`] characters), later rows are cut to fit with `…`.
pub struct Table {
    headers: Vec<String>,
    /// Columns aligned right (numbers).
    right: Vec<bool>,
    pending: Vec<Vec<String>>,
    widths: Option<Vec<usize>>,
}

impl Table {
    /// Rows held back to measure the columns.
    const MEASURE: usize = 1000;
    /// The widest a column gets.
    const WIDEST: usize = 48;

    pub fn new(headers: &[(&str, bool)]) -> Table {
        Table {
            headers: headers.iter().map(|(h, _)| h.to_string()).collect(),
            right: headers.iter().map(|(_, r)| *r).collect(),
            pending: Vec::new(),
            widths: None,
        }
    }

    pub fn row(&mut self, out: &mut dyn Write, cells: Vec<String>) -> io::Result<()> {
        let cells: Vec<String> = cells.into_iter().map(|c| clean_cell(&c).into_owned()).collect();
        match &self.widths {
            Some(_) => self.print(out, &cells),
            None => {
                self.pending.push(cells);
                if self.pending.len() >= Self::MEASURE {
                    self.flush_pending(out)?;
                }
                Ok(())
            }
        }
    }

    /// Prints what is held back; call once at the end.
    pub fn finish(&mut self, out: &mut dyn Write) -> io::Result<()> {
        if self.widths.is_none() {
            self.flush_pending(out)?;
        }
        Ok(())
    }

    fn flush_pending(&mut self, out: &mut dyn Write) -> io::Result<()> {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.pending {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count().min(Self::WIDEST));
            }
        }
        self.widths = Some(widths);
        self.print(out, &self.headers)?;
        let rule: Vec<String> = self.widths.iter().flatten().map(|w| "-".repeat(*w)).collect();
        self.print(out, &rule)?;
        for row in std::mem::take(&mut self.pending) {
            self.print(out, &row)?;
        }
        Ok(())
    }

    fn print(&self, out: &mut dyn Write, cells: &[String]) -> io::Result<()> {
        let widths = self.widths.as_deref().unwrap_or(&[]);
        let mut line = String::new();
        for (i, (cell, &w)) in cells.iter().zip(widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let len = cell.chars().count();
            let cell: Cow<str> = if len > w {
                Cow::Owned(cell.chars().take(w.saturating_sub(1)).chain(['…']).collect())
            } else {
                Cow::Borrowed(cell)
            };
            let pad = w.saturating_sub(len.min(w));
            let last = i + 1 == cells.len();
            if self.right[i] {
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(&cell);
            } else {
                line.push_str(&cell);
                if !last {
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
        }
        line.push('\n');
        out.write_all(line.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A strict RFC 4180 reader, to check what we write parses back.
    fn parse_csv(text: &str) -> Vec<Vec<String>> {
        let mut rows = Vec::new();
        let mut row = Vec::new();
        let mut field = String::new();
        let mut chars = text.chars().peekable();
        let mut quoted = false;
        while let Some(c) = chars.next() {
            if quoted {
                match c {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    '"' => {
                        quoted = false;
                        assert!(matches!(chars.peek(), Some(',') | Some('\r') | None), "text after closing quote");
                    }
                    c => field.push(c),
                }
                continue;
            }
            match c {
                '"' => {
                    assert!(field.is_empty(), "quote inside an unquoted field");
                    quoted = true;
                }
                ',' => row.push(std::mem::take(&mut field)),
                '\r' => {
                    assert_eq!(chars.next(), Some('\n'), "CR without LF");
                    row.push(std::mem::take(&mut field));
                    rows.push(std::mem::take(&mut row));
                }
                '\n' => panic!("bare LF outside quotes"),
                c => field.push(c),
            }
        }
        assert!(!quoted && row.is_empty() && field.is_empty(), "unterminated last row");
        rows
    }

    #[test]
    fn csv_round_trips_awkward_fields() {
        let fields = ["plain", "a,b", "say \"hi\"", "two\nlines", "", "=1+1", "Mozilla/5.0 (X11; Linux)", "-"];
        let mut out = Vec::new();
        csv_row(&mut out, &fields).unwrap();
        csv_row(&mut out, &["x", "y", "z", "", "", "", "", "-cmd"]).unwrap();
        let rows = parse_csv(&String::from_utf8(out).unwrap());
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1][7], "'-cmd");
        let mut expected: Vec<String> = fields.iter().map(|s| s.to_string()).collect();
        expected[5] = "'=1+1".into();
        assert_eq!(rows[0], expected);
    }

    #[test]
    fn table_aligns_and_cleans() {
        let mut t = Table::new(&[("USER", false), ("N", true), ("HOST", false)]);
        let mut out = Vec::new();
        t.row(&mut out, vec!["jan".into(), "7".into(), "a.example".into()]).unwrap();
        t.row(&mut out, vec!["marieke\x1b[31m".into(), "1234".into(), "b".into()]).unwrap();
        t.finish(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "USER             N  HOST\n\
             ------------  ----  ---------\n\
             jan              7  a.example\n\
             marieke?[31m  1234  b\n"
        );
    }
}
