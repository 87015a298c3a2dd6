//! Every fuzz target behind one libFuzzer binary: `PIKA_FUZZ_TARGET` names the one to
//! run (see `pika_migrate_fuzz::TARGETS`).

#![no_main]

use std::sync::OnceLock;

use pika_migrate_fuzz::Target;

fn chosen() -> &'static Target {
    static CHOSEN: OnceLock<&'static Target> = OnceLock::new();
    CHOSEN.get_or_init(|| {
        let names: Vec<&str> = pika_migrate_fuzz::TARGETS.iter().map(|t| t.name).collect();
        let name = std::env::var("PIKA_FUZZ_TARGET")
            .unwrap_or_else(|_| panic!("set PIKA_FUZZ_TARGET to one of {names:?}"));
        pika_migrate_fuzz::target(&name)
            .unwrap_or_else(|| panic!("no fuzz target {name}; one of {names:?}"))
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| (chosen().run)(data));
