//! `cargo run --release -p custom-method`

fn main() {
    print!("{}", custom_method::run(0));
}
