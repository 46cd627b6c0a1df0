#![no_main]
//! cargo fuzz target: cni_multi::fuzzing::re2 (see docs/hardening.md)

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cni_multi::fuzzing::re2(data);
});
