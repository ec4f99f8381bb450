//! `fdistill study fidelity2d` end to end, tiny (a 60-step teacher, 30-step students, 300
//! evaluation samples): the tables hold the teacher's and both candidates' rows with finite
//! metrics, a second invocation reuses every run and writes the same runs.csv, a third with
//! two evaluation draws moves the distances but not the mode columns, and bad
//! candidates or targets are refused before anything is trained.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::SystemTime;

fn fidelity2d(out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fdistill"))
        .args(["study", "fidelity2d", "--seeds", "1"])
        .args(["--divergences", "jensen-shannon", "--steps", "30"])
        .args(["--teacher-steps", "60", "--eval-samples", "300"])
        .args(extra)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

/// Modification times of every file under `dir` named `name`.
fn mtimes(dir: &Path, name: &str) -> Vec<(PathBuf, SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().unwrap() == name {
                out.push((
                    p.clone(),
                    std::fs::metadata(&p).unwrap().modified().unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn tiny_study_writes_tables_and_reuses_its_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("study");
    let candidate = tmp.path().join("no-gan.json");
    std::fs::write(&candidate, r#"{"lambda_gan": 0.0}"#).unwrap();
    let candidates = format!("toy,{}", candidate.display());
    let teacher = tmp.path().join("teacher.json");
    std::fs::write(&teacher, r#"{"net": {"hidden": 32, "depth": 2}}"#).unwrap();
    let args = [
        "--targets",
        "ring8-unbalanced",
        "--candidates",
        candidates.as_str(),
        "--teacher-config",
        teacher.to_str().unwrap(),
    ];

    let first = fidelity2d(&out, &args);
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{stderr}");
    assert!(stderr.contains("[study]"), "{stderr}");

    let csv = std::fs::read_to_string(out.join("runs.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(
        header,
        [
            "target",
            "candidate",
            "divergence",
            "seed",
            "nfe",
            "mmd2",
            "energy",
            "modes_covered",
            "modes_total",
            "mass_error",
            "worst_mode_ratio",
            "off_mode_mass",
            "mean_log_density",
            "mmd2_ratio_to_teacher",
            "log_density_gap_to_teacher"
        ]
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 3, "{csv}");
    let names: Vec<(&str, &str, &str)> = rows.iter().map(|r| (r[1], r[2], r[4])).collect();
    assert_eq!(
        names,
        [
            ("teacher", "", "35"),
            ("toy", "jensen-shannon", "1"),
            ("no-gan", "jensen-shannon", "1")
        ]
    );
    for row in &rows {
        assert_eq!(row.len(), header.len(), "{row:?}");
        assert_eq!(row[0], "ring8-unbalanced");
        assert_eq!(row[3], "0");
        assert_eq!(row[8], "8", "{row:?}");
        for v in &row[5..] {
            let x: f64 = v.parse().unwrap_or_else(|_| panic!("{row:?}"));
            assert!(x.is_finite(), "{row:?}");
        }
    }
    assert_eq!(rows[0][13], "1", "the teacher's ratio to itself");
    for row in &rows {
        // every mode covered exactly when the worst mode holds half its expected mass
        let worst: f64 = row[10].parse().unwrap();
        assert_eq!(row[7] == row[8], worst >= 0.5, "{row:?}");
        let off: f64 = row[11].parse().unwrap();
        assert!((0.0..=1.0).contains(&off), "{row:?}");
    }

    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(md.contains("| toy |") && md.contains("| no-gan |"), "{md}");
    assert!(md.contains("teacher (Heun)"), "{md}");
    // --teacher-config set the teacher's network (and so the students').
    assert!(md.contains("width 32 × depth 2"), "{md}");
    let tc = std::fs::read_to_string(out.join("teachers/ring8-unbalanced-s0/config.json")).unwrap();
    let tc: serde_json::Value = serde_json::from_str(&tc).unwrap();
    assert_eq!(
        (tc["net"]["hidden"].as_u64(), tc["net"]["depth"].as_u64()),
        (Some(32), Some(2))
    );
    assert_eq!(tc["teacher"]["seed"].as_u64(), Some(0));
    let summary = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    assert_eq!(summary.lines().count(), 4, "{summary}");
    let summary_header: Vec<&str> = summary.lines().next().unwrap().split(',').collect();
    for key in ["worst_mode_ratio_mean", "off_mode_mass_std"] {
        assert!(summary_header.contains(&key), "{summary}");
    }
    for line in summary.lines().skip(1) {
        assert_eq!(line.split(',').count(), summary_header.len(), "{line}");
    }
    assert!(md.contains("| worst mode | off-mode |"), "{md}");
    for png in [
        "ring8-unbalanced-teacher.png",
        "ring8-unbalanced-toy-jensen-shannon.png",
        "ring8-unbalanced-no-gan-jensen-shannon.png",
    ] {
        let len = std::fs::metadata(out.join("figures").join(png))
            .unwrap()
            .len();
        assert!(len > 1000, "{png}");
    }
    assert!(
        out.join("runs/no-gan/ring8-unbalanced/jensen-shannon-s0.config.json")
            .is_file()
    );

    // A second invocation only evaluates: no checkpoint is rewritten, same table.
    let weights_before = mtimes(&out, "driver.json");
    assert!(weights_before.len() >= 3, "{weights_before:?}");
    let second = fidelity2d(&out, &args);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{stderr}");
    assert!(stderr.contains("reusing the teacher"), "{stderr}");
    assert_eq!(mtimes(&out, "driver.json"), weights_before);
    assert_eq!(std::fs::read_to_string(out.join("runs.csv")).unwrap(), csv);

    // Two evaluation draws of the same runs: MMD² and energy are means over two sample
    // sets (so they move), the mode columns are the first draw's (so they stay).
    let third = fidelity2d(&out, &[&args[..], &["--eval-draws", "2"]].concat());
    let stderr = String::from_utf8_lossy(&third.stderr);
    assert!(third.status.success(), "{stderr}");
    assert!(stderr.contains("on 2 draw(s) of 300 samples"), "{stderr}");
    assert_eq!(mtimes(&out, "driver.json"), weights_before);
    let two = std::fs::read_to_string(out.join("runs.csv")).unwrap();
    for (one, two) in csv.lines().zip(two.lines()).skip(1) {
        let (one, two): (Vec<&str>, Vec<&str>) =
            (one.split(',').collect(), two.split(',').collect());
        assert_eq!(
            (&one[..5], &one[7..13]),
            (&two[..5], &two[7..13]),
            "{one:?} {two:?}"
        );
        assert_ne!((one[5], one[6]), (two[5], two[6]), "{one:?} {two:?}");
    }
    let zero = fidelity2d(&out, &[&args[..], &["--eval-draws", "0"]].concat());
    assert_eq!(zero.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&zero.stderr).contains("--eval-draws must be ≥ 1"));
}

#[test]
fn unknown_candidates_and_targets_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("study");
    let missing = tmp.path().join("missing.json");
    let bad = fidelity2d(
        &out,
        &["--candidates", &format!("toy,{}", missing.display())],
    );
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("missing.json"), "{stderr}");
    assert!(!out.join("teachers").exists(), "nothing is trained");

    let typo = tmp.path().join("typo.json");
    std::fs::write(&typo, r#"{"lambda_gann": 0.0}"#).unwrap();
    let bad = fidelity2d(&out, &["--candidates", typo.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("typo") && stderr.contains("lambda_gann"),
        "{stderr}"
    );

    let not_object = tmp.path().join("list.json");
    std::fs::write(&not_object, "[1, 2]").unwrap();
    let bad = fidelity2d(&out, &["--teacher-config", not_object.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("--teacher-config") && stderr.contains("must hold an object"),
        "{stderr}"
    );

    let bad = fidelity2d(&out, &["--targets", "ring9"]);
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("unknown target `ring9`"), "{stderr}");
    assert!(!out.join("teachers").exists(), "nothing is trained");
}
