//! `cargo run --release -p distill-2d [TEACHER_STEPS DISTILL_STEPS]`: teacher → f-distill →
//! one-step samples → metrics. Without arguments, the budgets of `Settings::default()`.

fn main() {
    let mut settings = distill_2d::Settings::default();
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("budgets are whole numbers of steps"))
        .collect();
    if let [teacher, distill] = args[..] {
        settings.teacher_steps = teacher;
        settings.distill_steps = distill;
    }
    print!("{}", distill_2d::run(settings));
}
