//! `fdistill study mog40` end to end, tiny (a few generator updates, a 20-step teacher):
//! every method and teacher runs through the driver, the table has one finite row per run,
//! and the figures exist.

use std::process::Command;

#[test]
fn tiny_mog40_study_writes_table_and_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mog40");
    let status = Command::new(env!("CARGO_BIN_EXE_fdistill"))
        .args([
            "study",
            "mog40",
            "--steps",
            "4",
            "--reference-steps",
            "4",
            "--eval-every",
            "2",
            "--seeds",
            "1",
        ])
        .args([
            "--teacher-steps",
            "20",
            "--eval-samples",
            "100",
            "--curve-samples",
            "50",
        ])
        .args(["--batch-size", "32", "--hidden", "16"])
        .arg("--out")
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success());

    let csv = std::fs::read_to_string(dir.join("summary.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header[4], "mean_log_density");
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(
        rows.len(),
        2 * fdistill::studies::mog40::METHODS.len(),
        "{csv}"
    );
    for row in &rows {
        assert_eq!(row[3], "ok", "{row:?}");
        for v in &row[4..] {
            let x: f64 = v.parse().unwrap();
            assert!(x.is_finite(), "{row:?}");
        }
    }
    // Equal budgets in generator updates: VarDiU runs 4 driver iterations, Diff-Instruct
    // (K = 1) 8, DMD2 (K = 5) 24.
    let iters = |teacher: &str, method: &str| -> usize {
        rows.iter()
            .find(|r| r[0] == teacher && r[1] == method)
            .unwrap()[8]
            .parse()
            .unwrap()
    };
    assert_eq!(iters("analytic", "vardiu"), 4);
    assert_eq!(iters("learned", "diff-instruct"), 8);
    assert_eq!(iters("learned", "dmd2"), 24);

    for teacher in ["analytic", "learned"] {
        for method in [
            "vardiu",
            "diff-instruct",
            "dmd2",
            "f-distill-reverse-kl",
            "f-distill-jensen-shannon",
            "f-distill-forward-kl",
        ] {
            let png = dir.join(format!("samples_{teacher}_{method}.png"));
            assert!(
                std::fs::metadata(&png).unwrap().len() > 1000,
                "{}",
                png.display()
            );
            // The driver's run directory with its metrics and checkpoint.
            let run = dir.join("runs").join(teacher).join(method).join("seed0");
            assert!(run.join("metrics.jsonl").is_file(), "{}", run.display());
            assert!(run.join("checkpoint/driver.json").is_file());
        }
        for metric in ["mmd", "log_density", "modes"] {
            let png = dir.join(format!("curve_{teacher}_{metric}.png"));
            assert!(
                std::fs::metadata(&png).unwrap().len() > 1000,
                "{}",
                png.display()
            );
        }
    }
    let md = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(
        md.contains(
            "| teacher | method | σ law; generator weighting | updates | mean log-density |"
        ),
        "{md}"
    );
    assert!(md.contains("exact samples (floor)"));

    // Values: modes in [0, 40]; every generator (4 updates: untrained) is worse than the
    // exact samples (floor) on all three metrics and worse in MMD² than the 20-step teacher
    // sampled with Heun (runs: floor 0.025, teacher 0.03, generators ≥ 0.08).
    let num = |row: &[&str], i: usize| row[i].trim().parse::<f64>().unwrap();
    assert_eq!(
        &header[4..7],
        ["mean_log_density", "mmd2_bandwidth_mean", "modes_covered"]
    );
    for row in &rows {
        assert!((0.0..=40.0).contains(&num(row, 6)), "{row:?}");
        assert!(num(row, 5) >= 0.0, "{row:?}");
        assert_eq!(row[9], "4", "updates: {row:?}");
    }
    let md_row = |name: &str| -> Vec<String> {
        let line = md
            .lines()
            .find(|l| l.starts_with(&format!("| *{name}")))
            .unwrap_or_else(|| panic!("no `{name}` row in {md}"));
        line.split('|').map(|c| c.trim().to_string()).collect()
    };
    // Cells: "", name, —, —, —, mean log-density, MMD², modes, ...
    let floor = md_row("exact samples (floor)");
    let teacher = md_row("learned teacher");
    let cell = |r: &[String], i: usize| r[i].parse::<f64>().unwrap();
    let (floor_ld, floor_mmd, floor_modes) = (cell(&floor, 5), cell(&floor, 6), cell(&floor, 7));
    assert!((0.0..=40.0).contains(&floor_modes), "{floor:?}");
    assert!(floor_mmd >= 0.0 && cell(&teacher, 6) >= 0.0);
    for row in &rows {
        assert!(
            num(row, 4) < floor_ld,
            "log-density above the exact samples': {row:?}"
        );
        assert!(num(row, 5) > floor_mmd, "MMD² below the floor: {row:?}");
        assert!(
            num(row, 6) <= floor_modes,
            "more modes than exact samples: {row:?}"
        );
        assert!(
            num(row, 5) > cell(&teacher, 6),
            "an untrained generator beat the teacher: {row:?} vs {teacher:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--first-seed` extends a study in a new directory: `--first-seed 1 --seeds 1` runs seed 1
/// alone, and its row equals seed 1's row of a study of seeds 0 and 1 (a run's seed alone
/// decides its result).
#[test]
fn first_seed_runs_only_the_later_seeds_with_the_same_results() {
    let tmp = tempfile::tempdir().unwrap();
    let study = |out: &str, extra: &[&str]| -> Vec<Vec<String>> {
        let dir = tmp.path().join(out);
        let status = Command::new(env!("CARGO_BIN_EXE_fdistill"))
            .args(["study", "mog40", "--steps", "3", "--eval-every", "3"])
            .args(["--teacher-steps", "5", "--eval-samples", "64"])
            .args([
                "--curve-samples",
                "32",
                "--batch-size",
                "16",
                "--hidden",
                "8",
            ])
            .args(["--methods", "vardiu", "--teachers", "analytic"])
            .args(extra)
            .arg("--out")
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success());
        let csv = std::fs::read_to_string(dir.join("summary.csv")).unwrap();
        csv.lines()
            .skip(1)
            .map(|l| l.split(',').map(str::to_string).collect())
            .collect()
    };
    let both = study("both", &["--seeds", "2"]);
    let later = study("later", &["--first-seed", "1", "--seeds", "1"]);
    assert_eq!(both.len(), 2);
    assert_eq!(later.len(), 1, "{later:?}");
    assert_eq!(later[0][2], "1", "the seed column: {later:?}");
    assert!(tmp.path().join("later/runs/analytic/vardiu/seed1").is_dir());
    assert!(!tmp.path().join("later/runs/analytic/vardiu/seed0").exists());
    // teacher, method, seed, status and the three metrics (not the wall time).
    assert_eq!(
        later[0][..7],
        both[1][..7],
        "seed 1 alone vs seed 1 of 0..2"
    );
    assert_ne!(both[0][4..7], both[1][4..7], "seeds 0 and 1 must differ");
}
