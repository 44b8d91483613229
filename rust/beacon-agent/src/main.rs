//! `caddy-beacon`: the companion binary. Everything lives in the `beacon_agent` library.

fn main() {
    std::process::exit(beacon_agent::run_cli(std::env::args_os()));
}
