//! The WebAssembly boundary, shaped like wazero's allocation example: the host asks the guest
//! for a buffer (`beacon_alloc`), writes a JSON command into it, calls `beacon_call` with
//! (pointer, length), and gets back the reply's (pointer << 32 | length), which it reads and
//! then frees (`beacon_free`). The host serializes calls; the registry lives in the instance.
//!
//! The exported functions exist only in the wasm32 build (pointers are 32-bit there); natively
//! the same path is tested through [`call`].

use std::sync::{Mutex, PoisonError};

use crate::Registry;

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

/// Runs one JSON command against the instance's registry; returns the JSON reply.
pub fn call(input: &[u8]) -> Vec<u8> {
    let mut registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    let reply = registry
        .get_or_insert_with(Registry::default)
        .handle_json(input);
    serde_json::to_vec(&reply).unwrap_or_else(|e| {
        format!(
            "{{\"status\":500,\"error\":{:?},\"changed\":[],\"events\":[],\"data\":null}}",
            e.to_string()
        )
        .into_bytes()
    })
}

// `no_mangle` counts as unsafe code: these three names are the module's whole ABI, chosen so
// nothing else in the binary exports them.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod exports {
    use super::call;

    /// A buffer of `len` bytes for the host to write into.
    #[no_mangle]
    pub extern "C" fn beacon_alloc(len: u32) -> u32 {
        let mut buffer = vec![0u8; len as usize].into_boxed_slice();
        let pointer = buffer.as_mut_ptr() as usize as u32;
        std::mem::forget(buffer);
        pointer
    }

    /// Frees a buffer from `beacon_alloc` or a reply from `beacon_call`.
    #[no_mangle]
    pub extern "C" fn beacon_free(pointer: u32, len: u32) {
        if pointer == 0 {
            return;
        }
        // SAFETY: the host only frees what `beacon_alloc` or `beacon_call` handed out, once, with
        // the length it was given: a boxed slice of exactly that length, leaked by `forget`.
        unsafe {
            drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                pointer as usize as *mut u8,
                len as usize,
            )));
        }
    }

    /// Runs the command in (pointer, length); returns the reply as (pointer << 32 | length).
    #[no_mangle]
    pub extern "C" fn beacon_call(pointer: u32, len: u32) -> u64 {
        // SAFETY: the host wrote `len` bytes at `pointer`, a buffer from `beacon_alloc`, and does not
        // touch it during this call.
        let input =
            unsafe { std::slice::from_raw_parts(pointer as usize as *const u8, len as usize) };
        let reply = call(input).into_boxed_slice();
        let length = reply.len() as u64;
        let address = Box::into_raw(reply) as *mut u8 as usize as u64;
        (address << 32) | length
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_go_through_the_instance_registry() {
        let reply: serde_json::Value =
            serde_json::from_slice(&call(br#"{"op":"configure","pool":"abi-test","claim":1}"#))
                .unwrap();
        assert_eq!(reply["status"], 200);
        let reply: serde_json::Value = serde_json::from_slice(&call(b"{")).unwrap();
        assert_eq!(reply["status"], 400);
    }
}
