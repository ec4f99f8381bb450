//! `fdistill plot --csv FILE --x COL --y COL [--series COL] [--log-y] --out FILE.png`: a line
//! chart of one CSV column against another, one line per value of a grouping column (e.g.
//! Fréchet distance against training iterations, one line per divergence).

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;
use fdistill_plot::{Series, line_chart_png};

use super::CliError;

/// Arguments of `fdistill plot`.
#[derive(Debug, Args)]
pub struct PlotArgs {
    /// CSV file with a header row (plain comma-separated fields, no quoting).
    #[arg(long)]
    pub csv: PathBuf,
    /// Column of the x values (numbers).
    #[arg(long)]
    pub x: String,
    /// Column of the y values (numbers; empty fields are skipped).
    #[arg(long)]
    pub y: String,
    /// Column whose values name the lines (one line per distinct value, in order of first
    /// appearance); without it, one line.
    #[arg(long)]
    pub series: Option<String>,
    /// Logarithmic y axis.
    #[arg(long)]
    pub log_y: bool,
    /// Chart title (default: "Y against X").
    #[arg(long)]
    pub title: Option<String>,
    /// Output PNG.
    #[arg(long)]
    pub out: PathBuf,
}

/// The lines of a chart: `(name, points sorted by x)`, in order of first appearance.
pub type Lines = Vec<(String, Vec<(f64, f64)>)>;

/// Reads the `(x, y)` points of `text` (a CSV with a header), grouped by `series`.
pub fn read_lines(text: &str, x: &str, y: &str, series: Option<&str>) -> Result<Lines, String> {
    let mut rows = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = rows
        .next()
        .ok_or("the CSV file is empty: it needs a header row and data rows")?
        .split(',')
        .map(str::trim)
        .collect();
    let col = |name: &str| {
        header.iter().position(|h| *h == name).ok_or_else(|| {
            format!(
                "no column `{name}` in the CSV header; the columns are: {}",
                header.join(", ")
            )
        })
    };
    let (xi, yi) = (col(x)?, col(y)?);
    let si = series.map(col).transpose()?;
    let mut order: Vec<String> = Vec::new();
    let mut lines: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for (i, row) in rows.enumerate() {
        if row.contains('"') {
            return Err(format!(
                "row {}: quoted fields are not supported; write plain comma-separated values",
                i + 2
            ));
        }
        let fields: Vec<&str> = row.split(',').map(str::trim).collect();
        if fields.len() != header.len() {
            return Err(format!(
                "row {} has {} fields, the header has {}",
                i + 2,
                fields.len(),
                header.len()
            ));
        }
        if fields[yi].is_empty() {
            continue;
        }
        let num = |j: usize, what: &str| {
            fields[j].parse::<f64>().map_err(|_| {
                format!(
                    "row {}: {what} column `{}` holds `{}`, not a number",
                    i + 2,
                    header[j],
                    fields[j]
                )
            })
        };
        let point = (num(xi, "x")?, num(yi, "y")?);
        let name = si.map_or_else(|| y.to_string(), |s| fields[s].to_string());
        if !lines.contains_key(&name) {
            order.push(name.clone());
        }
        lines.entry(name).or_default().push(point);
    }
    if order.is_empty() {
        return Err(format!("no data rows with a value in column `{y}`"));
    }
    Ok(order
        .into_iter()
        .map(|name| {
            let mut points = lines.remove(&name).unwrap_or_default();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            (name, points)
        })
        .collect())
}

/// Runs `fdistill plot`.
pub fn run(args: PlotArgs) -> Result<(), CliError> {
    if args.out.extension().and_then(|e| e.to_str()) != Some("png") {
        return Err(CliError::Usage(format!(
            "--out `{}`: use a .png file name",
            args.out.display()
        )));
    }
    let text = std::fs::read_to_string(&args.csv)
        .map_err(|e| CliError::Usage(format!("cannot read `{}`: {e}", args.csv.display())))?;
    let lines = read_lines(&text, &args.x, &args.y, args.series.as_deref())
        .map_err(|e| CliError::Usage(format!("{}: {e}", args.csv.display())))?;
    let series: Vec<Series<'_>> = lines
        .iter()
        .map(|(name, points)| Series { name, points })
        .collect();
    let title = args
        .title
        .unwrap_or_else(|| format!("{} against {}", args.y, args.x));
    line_chart_png(&args.out, &title, &args.x, &args.y, &series, args.log_y)?;
    eprintln!(
        "wrote {} ({} line{})",
        args.out.display(),
        series.len(),
        if series.len() == 1 { "" } else { "s" }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "student,iterations,fd\n\
                       reverse-kl,1500,2.0\n\
                       jensen-shannon,1500,2.5\n\
                       reverse-kl,750,3.0\n\
                       jensen-shannon,3000,\n";

    #[test]
    fn groups_by_series_in_order_of_appearance_and_sorts_by_x() {
        let lines = read_lines(CSV, "iterations", "fd", Some("student")).unwrap();
        assert_eq!(
            lines,
            vec![
                ("reverse-kl".to_string(), vec![(750.0, 3.0), (1500.0, 2.0)]),
                ("jensen-shannon".to_string(), vec![(1500.0, 2.5)]),
            ]
        );
        let one = read_lines(CSV, "iterations", "fd", None).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].1.len(), 3);
    }

    #[test]
    fn bad_input_names_the_problem() {
        let e = read_lines(CSV, "iterations", "fid", None).unwrap_err();
        assert!(e.contains("no column `fid`") && e.contains("student, iterations, fd"));
        let e = read_lines("a,b\n1,x\n", "a", "b", None).unwrap_err();
        assert!(
            e.contains("row 2") && e.contains("`x`, not a number"),
            "{e}"
        );
        let e = read_lines("a,b\n1\n", "a", "b", None).unwrap_err();
        assert!(e.contains("1 fields, the header has 2"), "{e}");
        let e = read_lines("a,b\n\"1\",2\n", "a", "b", None).unwrap_err();
        assert!(e.contains("quoted"), "{e}");
        assert!(
            read_lines("", "a", "b", None)
                .unwrap_err()
                .contains("empty")
        );
        assert!(
            read_lines("a,b\n1,\n", "a", "b", None)
                .unwrap_err()
                .contains("no data rows")
        );
    }
}
