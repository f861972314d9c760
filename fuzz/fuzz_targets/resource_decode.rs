#![no_main]

#[allow(dead_code)]
#[path = "../props.rs"]
mod props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| props::resource_decode(data));
