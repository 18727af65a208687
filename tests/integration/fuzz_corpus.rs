//! Replays every input the fuzzers kept (`fuzz/corpus/<target>/`) through the properties they
//! check (`tally::server::fuzzing`), with the ordinary test build: what once reached new code
//! must still pass, on every run, without the sanitizer build `scripts/fuzz` needs.

#[test]
fn every_kept_fuzz_input_still_passes_its_target() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut replayed = 0;
    for target in ["webhook_verify", "webhook_event", "tax_id", "metered_request"] {
        let check = tally::server::fuzzing::target(target).expect("a known target");
        let dir = root.join(target);
        let files: Vec<_> =
            std::fs::read_dir(&dir).map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect()).unwrap_or_default();
        assert!(!files.is_empty(), "no corpus for {target} in {}", dir.display());
        for f in files {
            let data = std::fs::read(&f).unwrap();
            if std::panic::catch_unwind(|| check(&data)).is_err() {
                panic!("{target} fails on {}", f.display());
            }
            replayed += 1;
        }
    }
    assert!(replayed > 0);
}
