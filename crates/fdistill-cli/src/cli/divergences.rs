//! `fdistill divergences [show NAME --log-ratio=...] [--json]`.

use std::fmt::Write as _;

use clap::{Args, Subcommand};
use fdistill::Divergence;
use fdistill::divergence::registry::{self, DivergenceInfo};
use serde_json::{Value, json};

use super::CliError;

/// Arguments of `fdistill divergences`.
#[derive(Debug, Args)]
pub struct DivergencesArgs {
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub action: Option<DivergencesAction>,
}

/// `fdistill divergences show`.
#[derive(Debug, Subcommand)]
pub enum DivergencesAction {
    /// Evaluate f, f', f'', h and log h of one divergence at given log-ratios ℓ = log r.
    Show {
        /// Registry name, `alpha:0.5` for a family member.
        name: String,
        /// Comma-separated log-ratios ℓ (r = exp ℓ).
        #[arg(
            long = "log-ratio",
            value_delimiter = ',',
            allow_hyphen_values = true,
            default_value = "-2,0,2"
        )]
        log_ratio: Vec<f64>,
    },
}

/// Runs `fdistill divergences`.
pub fn run(args: DivergencesArgs) -> Result<(), CliError> {
    let text = match args.action {
        None => {
            let list = registry::list()?;
            if args.json {
                list_json(&list)
            } else {
                list_table(&list)
            }
        }
        Some(DivergencesAction::Show { name, log_ratio }) => {
            let d = registry::resolve(&name)?;
            if args.json {
                show_json(d.as_ref(), &log_ratio)
            } else {
                show_table(d.as_ref(), &log_ratio)
            }
        }
    };
    print!("{text}");
    Ok(())
}

/// The listing as an aligned text table: name, h(r), mode, summary.
pub fn list_table(list: &[DivergenceInfo]) -> String {
    let rows: Vec<[String; 4]> = list
        .iter()
        .map(|i| {
            let name = if i.params.is_empty() {
                i.name.to_string()
            } else {
                format!("{}:<{}>", i.name, i.params.join(","))
            };
            let h = if i.params.is_empty() {
                i.h.clone()
            } else {
                "r^alpha".to_string()
            };
            let mode = if i.params.is_empty() {
                i.mode.clone()
            } else {
                "depends on alpha".into()
            };
            [name, h, mode, i.summary.clone()]
        })
        .collect();
    table(&["NAME", "H(R)", "MODE", "SUMMARY"], &rows)
}

fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i + 1 == N {
                    c.to_string()
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(&mut out, header.to_vec());
    for row in rows {
        line(&mut out, row.iter().map(String::as_str).collect());
    }
    out
}

/// The listing as a JSON array of `{name, summary, h, mode, params, crate}`.
pub fn list_json(list: &[DivergenceInfo]) -> String {
    let mut s = serde_json::to_string_pretty(list).expect("listing serialises");
    s.push('\n');
    s
}

/// A finite `f64` as a JSON number, anything else as `null`.
fn num(x: f64) -> Value {
    if x.is_finite() { json!(x) } else { Value::Null }
}

/// `{"name", "label", "points": [{log_ratio, r, f, f_prime, f_second, h, log_h}]}`.
pub fn show_json(d: &dyn Divergence, log_ratios: &[f64]) -> String {
    let points: Vec<Value> = log_ratios
        .iter()
        .map(|&l| {
            let r = l.exp();
            json!({
                "log_ratio": num(l),
                "r": num(r),
                "f": num(d.f(r)),
                "f_prime": num(d.f_prime(r)),
                "f_second": num(d.f_second(r)),
                "h": num(d.h(r)),
                "log_h": num(d.log_h(l)),
            })
        })
        .collect();
    let mut s = serde_json::to_string_pretty(&json!({
        "name": d.name(),
        "label": d.label(),
        "params": d.params(),
        "points": points,
    }))
    .expect("points serialise");
    s.push('\n');
    s
}

fn fmt_num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.6e}")
    } else {
        "overflow".to_string()
    }
}

/// Text table of the same values as [`show_json`].
pub fn show_table(d: &dyn Divergence, log_ratios: &[f64]) -> String {
    let rows: Vec<[String; 7]> = log_ratios
        .iter()
        .map(|&l| {
            let r = l.exp();
            [
                format!("{l}"),
                fmt_num(r),
                fmt_num(d.f(r)),
                fmt_num(d.f_prime(r)),
                fmt_num(d.f_second(r)),
                fmt_num(d.h(r)),
                fmt_num(d.log_h(l)),
            ]
        })
        .collect();
    let mut out = format!(
        "{}: {}\nh(r) = {}\n\n",
        d.label(),
        d.summary(),
        d.h_formula()
    );
    out.push_str(&table(
        &["LOG_RATIO", "R", "F", "F_PRIME", "F_SECOND", "H", "LOG_H"],
        &rows,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_table_snapshot() {
        fdistill::link_registrations();
        let list = registry::list().unwrap();
        insta::assert_snapshot!(list_table(&list));
    }

    #[test]
    fn show_json_uses_null_for_overflow() {
        fdistill::link_registrations();
        let d = registry::resolve("pearson-chi2").unwrap();
        let v: Value = serde_json::from_str(&show_json(d.as_ref(), &[800.0])).unwrap();
        let p = &v["points"][0];
        assert!(p["r"].is_null() && p["h"].is_null(), "{p}");
        assert_eq!(p["log_h"].as_f64().unwrap(), 2f64.ln() + 1600.0);
    }
}
