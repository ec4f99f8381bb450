//! Every seed and every past finding (`regressions/<target>/`) through its target, plus a
//! few hundred deterministic mutations each: no panics. (The allocation and time caps are the
//! harness's; run `cargo run -p fdistill-fuzz -- --seconds N` to fuzz for real.)

use fdistill_fuzz::{TARGETS, corpus, mutate};
use rand::SeedableRng;

#[test]
fn seeds_regressions_and_a_few_mutations_do_not_panic() {
    fdistill_fuzz::link();
    for t in TARGETS {
        let seeds: Vec<Vec<u8>> = corpus("seeds", t.name)
            .into_iter()
            .map(|(_, b)| b)
            .collect();
        assert!(!seeds.is_empty(), "no seeds for {}", t.name);
        for (path, bytes) in corpus("seeds", t.name)
            .into_iter()
            .chain(corpus("regressions", t.name))
        {
            let ok = std::panic::catch_unwind(|| (t.run)(&bytes)).is_ok();
            assert!(ok, "{} panics on {}", t.name, path.display());
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for i in 0..200 {
            let input = mutate(&seeds[i % seeds.len()], &seeds, t.text, &mut rng);
            let ok = std::panic::catch_unwind(|| (t.run)(&input)).is_ok();
            assert!(ok, "{} panics on mutation {i}: {input:?}", t.name);
        }
    }
}
