//! End-to-end tests of `fdistill plot`.

use std::process::Command;

fn fdistill(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fdistill"))
        .args(args)
        .output()
        .expect("the fdistill binary runs")
}

#[test]
fn plot_draws_one_line_per_series_and_refuses_bad_columns() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("curves.csv");
    std::fs::write(
        &csv,
        "student,iterations,frechet_distance\n\
         reverse-kl,1500,2.0\nreverse-kl,3000,1.5\n\
         jensen-shannon,1500,2.4\njensen-shannon,3000,1.4\n",
    )
    .unwrap();
    let png = dir.path().join("fd.png");
    let (c, p) = (csv.to_str().unwrap(), png.to_str().unwrap());
    let plot = |y: &str, out: &str, extra: &[&str]| {
        let mut args = vec![
            "plot",
            "--csv",
            c,
            "--x",
            "iterations",
            "--y",
            y,
            "--out",
            out,
        ];
        args.extend_from_slice(extra);
        fdistill(&args)
    };
    let out = plot("frechet_distance", p, &["--series", "student", "--log-y"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("2 lines"), "{stderr}");
    let img = image::open(&png).unwrap().to_rgb8();
    // something other than white was drawn
    assert!(img.pixels().filter(|px| px.0 != [255, 255, 255]).count() > 1000);

    let bad = plot("fid", p, &[]);
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("no column `fid`"), "{stderr}");
    let bad = plot("frechet_distance", "fd.svg", &[]);
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("use a .png file name"), "{stderr}");
}
