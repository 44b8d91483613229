//! The registry's JSON commands, as the Go host (and through it, the admin routes) sends them:
//! any bytes get a reply (200, or an error status with a message), and the registry stays
//! usable. A few pools are declared first so commands reach the pool logic.
#![no_main]

use std::sync::Mutex;

use beacon_registry::Registry;
use libfuzzer_sys::fuzz_target;

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let mut guard = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    let registry = guard.get_or_insert_with(|| {
        let mut registry = Registry::default();
        for step in [
            r#"{"op":"configure","pool":"api","claim":1}"#,
            r#"{"op":"configure","pool":"ramp","claim":2,"slow_start_ms":10000,"allow":["10.0.0.0/8","unix//run/app/"]}"#,
            r#"{"op":"commit","claim":1}"#,
            r#"{"op":"commit","claim":2}"#,
            r#"{"op":"host","listeners":["127.0.0.1:2019","0.0.0.0:443"],"local_addresses":["10.0.0.9"]}"#,
        ] {
            assert_eq!(registry.handle_json(step.as_bytes()).status, 200);
        }
        registry
    });
    let reply = registry.handle_json(data);
    assert!(
        reply.status == 200 || reply.error.as_deref().is_some_and(|e| !e.is_empty()),
        "{reply:?}"
    );
    serde_json::to_vec(&reply).expect("every reply serializes");
    // Still answering, and the pools stay bounded.
    let pools = registry.handle_json(br#"{"op":"pools","now_ms":1}"#);
    assert_eq!(pools.status, 200);
});
