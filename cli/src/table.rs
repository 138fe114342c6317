//! Plain-text tables and `key: value` blocks for terminal output.
//!
//! Widths count `char`s, which is right for the ASCII and most Latin text
//! Corral shows; wide CJK or emoji in a server name would misalign a column,
//! which is not worth a Unicode-width dependency.

/// Columns separated by two spaces, each as wide as its widest cell.
#[derive(Debug)]
pub(crate) struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|header| (*header).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Add a row; missing cells are blank, extra cells are ignored.
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table with a trailing newline after every line and no trailing spaces.
    pub(crate) fn render(&self) -> String {
        let columns = self.headers.len();
        let cell = |row: &[String], column: usize| row.get(column).map_or("", String::as_str).to_owned();
        let mut widths: Vec<usize> = self.headers.iter().map(|header| header.chars().count()).collect();
        for row in &self.rows {
            for (column, width) in widths.iter_mut().enumerate() {
                *width = (*width).max(cell(row, column).chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::new();
            for (column, width) in widths.iter().enumerate().take(columns) {
                let text = cell(row, column);
                line.push_str(&text);
                if column + 1 < columns {
                    let padding = width - text.chars().count() + 2;
                    line.extend(std::iter::repeat_n(' ', padding));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `key:   value` lines with the values aligned.
pub(crate) fn key_values(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(key, _)| key.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in pairs {
        let padding = width - key.chars().count() + 2;
        let line = format!("{key}:{}{value}", " ".repeat(padding));
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `text` on one line: line breaks become `; `, and anything past `max_chars` becomes `…`.
pub(crate) fn one_line(text: &str, max_chars: usize) -> String {
    let joined = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    if joined.chars().count() <= max_chars {
        return joined;
    }
    let mut shortened: String = joined.chars().take(max_chars.saturating_sub(1)).collect();
    shortened.push('…');
    shortened
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_to_the_widest_cell() {
        let mut table = Table::new(&["NAME", "STATUS", "DETAIL"]);
        table.row(vec!["filesystem".into(), "ready".into(), String::new()]);
        table.row(vec![
            "gh".into(),
            "failed".into(),
            "unreachable: connection refused".into(),
        ]);
        assert_eq!(
            table.render(),
            "NAME        STATUS  DETAIL\n\
             filesystem  ready\n\
             gh          failed  unreachable: connection refused\n"
        );
    }

    #[test]
    fn short_rows_and_non_ascii_cells() {
        let mut table = Table::new(&["A", "B"]);
        table.row(vec!["é€".into()]);
        table.row(vec!["x".into(), "y".into(), "ignored".into()]);
        assert_eq!(table.render(), "A   B\né€\nx   y\n");
    }

    #[test]
    fn an_empty_table_is_its_header() {
        assert_eq!(Table::new(&["NAME", "PID"]).render(), "NAME  PID\n");
    }

    #[test]
    fn key_values_align() {
        let text = key_values(&[
            ("name", "github".into()),
            ("server info", "x 1.0".into()),
            ("error", String::new()),
        ]);
        assert_eq!(text, "name:         github\nserver info:  x 1.0\nerror:\n");
    }

    #[test]
    fn one_line_joins_and_truncates() {
        assert_eq!(one_line("exit 1\n  stderr: boom \n\n", 80), "exit 1; stderr: boom");
        assert_eq!(one_line("abcdefghij", 5), "abcd…");
        assert_eq!(one_line("abcde", 5), "abcde");
    }
}
