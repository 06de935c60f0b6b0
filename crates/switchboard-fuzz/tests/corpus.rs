//! Replays the checked-in corpus (seeds and kept failures, `corpus/<target>/`) through
//! each target with the engine's checks, allocation limits included: a crash that was
//! fixed stays fixed. Inputs for the `yjs_apply` target live in `corpus/yjs_wire/` and
//! are replayed through `yjs_wire` only (see docs/fuzzing.md on the open yrs finding).

use switchboard_fuzz::alloc::Limits;
use switchboard_fuzz::engine::{self, hex, read_dir_inputs, seed_dir};
use switchboard_fuzz::targets::TARGETS;

#[test]
fn corpus_passes_every_harness() {
    engine::quiet_panics();
    let limits = Limits::from_env();
    let mut failures = Vec::new();
    let mut ran = 0;
    for target in TARGETS.iter().filter(|t| t.name == t.corpus) {
        let inputs = read_dir_inputs(&seed_dir(target));
        if inputs.is_empty() {
            failures.push(format!("no corpus for {}", target.name));
        }
        for (path, data) in inputs {
            ran += 1;
            if let Err(what) = engine::execute(target, &data, &limits) {
                failures.push(format!("{}: {what}\n  hex: {}", path.display(), hex(&data)));
            }
        }
    }
    // The engine's panic hook keeps panic messages quiet: say what failed first.
    for f in &failures {
        eprintln!("FAILED {f}");
    }
    assert!(
        failures.is_empty(),
        "{} of {ran} inputs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn generated_seeds_are_checked_in() {
    // Contents may differ from run to run (yrs encodes hash maps in hash order), so only
    // presence is checked: `switchboard-fuzz seeds` writes them.
    for target in TARGETS.iter().filter(|t| t.name == t.corpus) {
        for (name, _) in (target.seeds)() {
            let path = seed_dir(target).join(name);
            assert!(
                path.is_file(),
                "{} is missing: run `switchboard-fuzz seeds`",
                path.display()
            );
        }
    }
}
