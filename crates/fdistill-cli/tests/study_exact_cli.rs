//! `fdistill study exact` end to end, tiny: files exist, one finite CSV row per
//! (divergence, seed), one PNG per divergence.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh scratch directory (removed on drop) and the run's `--out` inside it.
fn out_dir(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(name);
    (tmp, dir)
}

fn run_study(target: &str, divergences: &str, seeds: usize) -> (tempfile::TempDir, PathBuf) {
    let (tmp, dir) = out_dir(target);
    let status = Command::new(env!("CARGO_BIN_EXE_fdistill"))
        .args(["study", "exact", "--target", target, "--steps", "20"])
        .args(["--seeds", &seeds.to_string(), "--divergences", divergences])
        .arg("--out")
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success());
    (tmp, dir)
}

fn check_outputs(dir: &Path, divergences: &[&str], seeds: usize, n_modes: usize) {
    let csv = std::fs::read_to_string(dir.join("summary.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header.len(), 8 + n_modes);
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), divergences.len() * seeds);
    assert_eq!(
        &header[..8],
        [
            "target",
            "divergence",
            "seed",
            "modes_covered",
            "n_modes",
            "kl_pq",
            "kl_qp",
            "nonfinite_steps"
        ]
    );
    // Each mode's expected mass π_k P(‖z‖ ≤ 3 std), in closed form: 1 − e^{−9/2} in 2-D,
    // erf(3/√2) in 1-D.
    let target = fdistill::core::targets::gmm_target(rows[0][0]).unwrap();
    let within = match target.dim() {
        1 => 0.997_300_203_936_739_8,
        2 => 1.0 - (-4.5f64).exp(),
        d => panic!("dimension {d}"),
    };
    for row in &rows {
        assert_eq!(row.len(), header.len());
        for v in &row[3..] {
            let x: f64 = v.parse().unwrap();
            assert!(x.is_finite(), "{row:?}");
        }
        let num = |i: usize| row[i].parse::<f64>().unwrap();
        assert_eq!(row[4].parse::<usize>().unwrap(), n_modes);
        let covered: usize = row[3].parse().unwrap();
        let masses: Vec<f64> = (8..8 + n_modes).map(num).collect();
        assert!(masses.iter().all(|m| (0.0..=1.0).contains(m)), "{row:?}");
        assert!(masses.iter().sum::<f64>() <= 1.0 + 1e-4, "{row:?}");
        // Covered = holding ≥ half the expected mass; masses within 0.01 of the threshold
        // (Monte Carlo noise of the study's own estimate) may count either way.
        let (mut sure, mut either) = (0, 0);
        for (m, w) in masses.iter().zip(target.weights()) {
            let half = 0.5 * w * within;
            if *m > half + 0.01 {
                sure += 1;
            } else if *m >= half - 0.01 {
                either += 1;
            }
        }
        assert!(
            (sure..=sure + either).contains(&covered),
            "{covered} covered, masses {masses:?}: {row:?}"
        );
        // Monte Carlo KLs of distinct mixtures: non-negative up to estimator noise.
        assert!(num(5) > -0.05 && num(6) > -0.05, "{row:?}");
        assert_eq!(row[7], "0", "no non-finite step on these targets: {row:?}");
    }
    for d in divergences {
        assert_eq!(rows.iter().filter(|r| r[1] == *d).count(), seeds, "{d}");
        let png = dir.join(format!("{}.png", d.replace(':', "_")));
        assert!(
            std::fs::metadata(&png).unwrap().len() > 1000,
            "{}",
            png.display()
        );
    }
    let md = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(md.contains("| divergence |"));
}

#[test]
fn ring8_study_writes_table_and_figures() {
    let divs = ["reverse-kl", "alpha:0.5", "triangular"];
    let (_tmp, dir) = run_study("ring8-unbalanced", &divs.join(","), 2);
    check_outputs(&dir, &divs, 2, 8);
}

#[test]
fn bimodal_study_writes_table_and_figures() {
    let divs = ["forward-kl"];
    let (_tmp, dir) = run_study("bimodal-1d", &divs.join(","), 1);
    check_outputs(&dir, &divs, 1, 2);
}

#[test]
fn unknown_target_is_a_usage_error_listing_targets() {
    let (_tmp, dir) = out_dir("nope");
    let out = Command::new(env!("CARGO_BIN_EXE_fdistill"))
        .args(["study", "exact", "--target", "nope", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ring8-unbalanced") && err.contains("bimodal-1d"),
        "{err}"
    );
}
