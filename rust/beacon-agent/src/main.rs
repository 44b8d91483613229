//! The `caddy-beacon` companion binary. Registration with Caddy arrives with the companion
//! issue; until then the binary only reports its version so packaging can be exercised.

use std::process::ExitCode;

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("--version") | Some("-V") => {
            println!("caddy-beacon {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("caddy-beacon: the companion commands (run, status, deregister) are not built yet");
            ExitCode::from(64)
        }
    }
}
