//! Dial addresses, pool names, allow lists and Caddy's own listeners as companions, Caddyfiles and the host
//! give them: judged without a panic, and an address the admission policy admits is one the
//! address check accepted too.
#![no_main]

use beacon_registry::address::{check_dial_address, check_pool_name};
use beacon_registry::admission::{Admission, OwnSockets};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = check_pool_name(text);
    let parts: Vec<String> = text.split(' ').map(str::to_owned).collect();
    let _ = Admission::new(&parts);
    let _ = OwnSockets::parse(&parts, &[]);
    if check_dial_address(text).is_ok() {
        let open = Admission::new(&[]).expect("no rules");
        let own = OwnSockets::parse(
            &["127.0.0.1:2019".to_owned(), "0.0.0.0:443".to_owned()],
            &["10.0.0.9".parse().expect("an address")],
        )
        .expect("listeners");
        let _ = open.admit(text, &["10.0.0.1".parse().expect("an address")], &own);
    }
});
