//! The TOML configuration: any text is a configuration or a clear error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarmgate::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::from_toml(text, "fuzz") {
        // What validated once validates again after a round trip.
        let printed = toml::to_string(&config).expect("a Config prints");
        Config::from_toml(&printed, "fuzz round trip").expect("round trip validates");
    }
});
