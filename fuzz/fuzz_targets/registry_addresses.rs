//! Dial addresses, pool names, allow lists and admin listeners as companions and Caddyfiles
//! give them: judged without a panic, and an address the admission policy admits is one the
//! address check accepted too.
#![no_main]

use beacon_registry::address::{check_dial_address, check_pool_name};
use beacon_registry::admission::{Admission, Listeners};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = check_pool_name(text);
    let parts: Vec<String> = text.split(' ').map(str::to_owned).collect();
    let _ = Admission::new(&parts);
    let _ = Listeners::parse(&parts);
    if check_dial_address(text).is_ok() {
        let open = Admission::new(&[]).expect("no rules");
        let listeners = Listeners::parse(&["127.0.0.1:2019".to_owned()]).expect("a listener");
        let _ = open.admit(text, &["10.0.0.1".parse().expect("an address")], &listeners);
    }
});
