//! The config parser: any text gives a Config that passed validate, or one error line that
//! names the file (design rule 6); never a panic.
#![no_main]

use std::path::Path;

use edgeauth::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, "fuzz.toml", Path::new("/etc/edgeauth")) {
        Ok(config) => {
            // What load accepted, validate accepts again (no rule depends on parse order).
            assert!(config.validate("fuzz.toml").is_ok());
        }
        Err(e) => {
            let line = e.to_string();
            assert!(line.starts_with("config fuzz.toml: "), "{line}");
            assert!(
                !line.chars().any(char::is_control),
                "a config error is one line of text: {line:?}"
            );
        }
    }
});
