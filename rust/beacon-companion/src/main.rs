//! `caddy-beacon`: the companion binary. Everything lives in the `beacon_companion` library.

fn main() {
    std::process::exit(beacon_companion::run_cli(std::env::args_os()));
}
