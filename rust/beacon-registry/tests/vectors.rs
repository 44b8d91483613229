//! The shared vectors (`vectors/registry/*.json`, see vectors/README.md): every command, sent as
//! JSON, gets exactly the reply written next to it. `go test` in caddy/ runs the same files
//! through the real .wasm with the Go host's typed commands.

use std::fs;
use std::path::{Path, PathBuf};

use beacon_registry::Registry;
use serde_json::Value;

fn vector_files() -> Vec<PathBuf> {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("vectors")
        .join("registry");
    let mut files: Vec<PathBuf> = fs::read_dir(&directory)
        .unwrap_or_else(|e| panic!("{}: {e}", directory.display()))
        .map(|entry| entry.expect("a readable directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "the vectors are missing from {}",
        directory.display()
    );
    files
}

/// What a step sends: a raw step's string as is, any other command as its JSON.
fn input(step: &Value) -> Vec<u8> {
    match (&step["raw"], &step["command"]) {
        (Value::Bool(true), Value::String(text)) => text.clone().into_bytes(),
        (_, command) => command.to_string().into_bytes(),
    }
}

#[test]
fn every_command_gets_the_reply_its_vector_holds() {
    let bless = std::env::var_os("BEACON_VECTORS_BLESS").is_some();
    for file in vector_files() {
        let text = fs::read_to_string(&file).expect("a readable vector file");
        let mut vector: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let mut registry = Registry::default();
        let steps = vector["steps"].as_array_mut().expect("steps");
        for (index, step) in steps.iter_mut().enumerate() {
            let reply = serde_json::to_value(registry.handle_json(&input(step)))
                .expect("a reply serializes");
            if bless {
                step["reply"] = reply;
            } else {
                assert_eq!(
                    reply,
                    step["reply"],
                    "{} step {index}: {}",
                    file.display(),
                    step["command"]
                );
            }
        }
        if bless {
            fs::write(&file, pretty(&vector)).expect("the vector file is writable");
        }
    }
}

/// One step per line, as the files are written by hand.
fn pretty(vector: &Value) -> String {
    let steps: Vec<String> = vector["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|step| format!("    {step}"))
        .collect();
    format!(
        "{{\n  \"about\": {},\n  \"steps\": [\n{}\n  ]\n}}\n",
        vector["about"],
        steps.join(",\n")
    )
}
