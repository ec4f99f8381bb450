//! `cargo run --release -p custom-ratio-estimator`

fn main() {
    print!("{}", custom_ratio_estimator::run(0));
}
