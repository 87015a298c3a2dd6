//! Filter plugins loaded from their built `.so` into real pipelines: the two example
//! plugins on the fixtures, and every way a plugin can be wrong (another ABI version,
//! not a plugin, bad config, an error, a panic), each a clear error naming it.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use common::*;

/// Builds the plugin crates (`cargo test` does not produce cdylibs) into a target dir of
/// their own, once per test process; the path of `lib<name>.so`.
fn plugin(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let target = exe.ancestors().nth(3).unwrap().join("plugin-tests");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "--manifest-path"])
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .args([
                "-p",
                "pm-key-rewrite",
                "-p",
                "pm-tenant-drop",
                "-p",
                "pm-test-abi-v999",
            ])
            .arg("--target-dir")
            .arg(&target)
            .status()
            .unwrap();
        assert!(status.success(), "building the plugins failed");
        target.join("debug")
    });
    let path = dir.join(format!("lib{}.so", name.replace('-', "_")));
    assert!(path.exists(), "{} not built", path.display());
    path
}

fn pipeline(dir: &std::path::Path, source: &str, filters: &str, sink: &str) -> PathBuf {
    let yaml = format!("source:\n{source}\nfilters:\n{filters}sinks:\n{sink}");
    write_pipeline(dir, &yaml)
}

#[test]
fn key_rewrite_moves_the_snapshot_under_a_new_prefix_in_redis() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let filters = format!(
        "  - type: plugin\n    path: {}\n    config: {{from: 's1:', to: 'tenant42:'}}\n",
        plugin("pm-key-rewrite").display()
    );
    let sink = format!("  - type: redis\n    url: {}\n", redis.url());
    let file = pipeline(dir.path(), &dump_source(), &filters, &sink);
    let (code, _, stderr) = run_cli(&["run", "-c", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let expected: State = dump_state()
        .into_iter()
        .map(|((k, t), v)| {
            let k = match k.strip_prefix(b"s1:") {
                Some(rest) => [b"tenant42:".as_slice(), rest].concat(),
                None => k,
            };
            ((k, t), v)
        })
        .collect();
    assert_same_as_of(&expected, &redis.state(), fixture_moment());
}

#[test]
fn key_rewrite_moves_streams_through_the_plugin_abi_into_redis() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let filters = format!(
        "  - type: plugin\n    path: {}\n    config: {{from: 's1:stream:', to: 'moved:'}}\n",
        plugin("pm-key-rewrite").display()
    );
    let source = fixture_dump_source("3.5.5");
    let sink = format!("  - type: redis\n    url: {}\n", redis.url());
    let file = pipeline(dir.path(), &source, &filters, &sink);
    let (code, _, stderr) = run_cli(&["run", "-c", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let shown = load_expected_file(&fixture_of("3.5.5", "expected.jsonl"));
    let moment = fixture_moment_of("3.5.5");
    let expected: State = redis_view(&live_at(&shown, moment))
        .into_iter()
        .map(|((k, t), v)| match k.strip_prefix(b"s1:stream:") {
            Some(rest) => (([b"moved:", rest].concat(), t), v),
            None => ((k, t), v),
        })
        .collect();
    // The 8 `s1:stream:*` streams, every id and field, under their new names.
    let moved = (expected.keys()).filter(|(k, _)| k.starts_with(b"moved:"));
    assert_eq!(moved.count(), 8);
    assert_same_as_of(&expected, &redis.state(), moment);
}

#[test]
fn tenant_drop_removes_a_tenant_from_the_binlog() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let filters = format!(
        "  - type: plugin\n    path: {}\n    config:\n      tenants: ['s1:p2']\n",
        plugin("pm-tenant-drop").display()
    );
    let sink = format!(
        "  - type: file\n    path: {}\n    format: jsonl\n",
        out.display()
    );
    let file = pipeline(dir.path(), &binlog_source(None), &filters, &sink);
    let (code, _, stderr) = run_cli(&["run", "-c", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("events filtered out"), "{stderr}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.lines().count() > 100);
    assert!(
        !text.contains("\"key\":\"s1:p2:"),
        "a dropped tenant's key got through"
    );
    assert!(text.contains("\"key\":\"s1:"), "other keys are kept");
}

/// A pipeline with one plugin filter; (exit code, stderr) of `command`.
fn with_plugin(command: &str, path: &std::path::Path, config: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let filters = format!("  - type: plugin\n    path: {}\n{config}", path.display());
    let file = pipeline(
        dir.path(),
        &dump_source(),
        &filters,
        "  - type: file\n    path: '-'\n    format: jsonl\n",
    );
    let (code, _, stderr) = run_cli(&[command, "-c", file.to_str().unwrap()]);
    (code, stderr)
}

#[test]
fn a_plugin_of_another_abi_version_or_not_a_plugin_is_refused() {
    let (code, stderr) = with_plugin("validate", &plugin("pm-test-abi-v999"), "");
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains("plugin ABI version 999, this pika-migrate speaks version 2"),
        "{stderr}"
    );

    let libc = [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib64/libc.so.6",
        "/lib/aarch64-linux-gnu/libc.so.6",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect("a libc to load");
    let (code, stderr) = with_plugin("validate", &libc, "");
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains("missing symbol pika_migrate_plugin_abi_version"),
        "{stderr}"
    );

    let (code, stderr) = with_plugin("validate", std::path::Path::new("/nonexistent/libx.so"), "");
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains("cannot load /nonexistent/libx.so"),
        "{stderr}"
    );
}

#[test]
fn bad_config_errors_and_panics_are_clear_errors_naming_the_plugin() {
    let path = plugin("pm-key-rewrite");
    let (code, stderr) = with_plugin("validate", &path, "    config: {from: 'a:'}\n");
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains("`to` (the new prefix) is required"),
        "{stderr}"
    );

    let (code, stderr) = with_plugin(
        "run",
        &path,
        "    config: {from: 's1:', to: 'x:', fail_on: 's1:hash:big'}\n",
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("libpm_key_rewrite.so): refusing key s1:hash:big"),
        "{stderr}"
    );

    let (code, stderr) = with_plugin(
        "run",
        &path,
        "    config: {from: 's1:', to: 'x:', panic_on: 's1:list:big'}\n",
    );
    assert_eq!(code, 1, "a panic is an error, not a crash: {stderr}");
    assert!(
        stderr.contains("panicked: asked to panic on s1:list:big"),
        "{stderr}"
    );
    assert!(stderr.contains("filters[0] (plugin "), "{stderr}");
}

/// The fenced blocks of the README's "Writing a filter plugin" section, in order.
fn readme_blocks() -> Vec<(String, String)> {
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    let start = readme.find("## Writing a filter plugin").unwrap();
    let end = start + readme[start..].find("\n## Benchmark").unwrap();
    let mut blocks = Vec::new();
    let mut lines = readme[start..end].lines();
    while let Some(line) = lines.next() {
        if let Some(lang) = line.strip_prefix("```") {
            if lang.is_empty() {
                continue;
            }
            let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
            blocks.push((lang.to_owned(), body.join("\n") + "\n"));
        }
    }
    blocks
}

#[test]
fn the_readme_plugin_walkthrough_works_word_for_word() {
    let blocks = readme_blocks();
    let [(l1, setup), (l2, lib_rs), (l3, build_and_run)] = &blocks[..] else {
        panic!("expected sh, rust, sh blocks, got {blocks:?}");
    };
    assert_eq!(
        (l1.as_str(), l2.as_str(), l3.as_str()),
        ("sh", "rust", "sh")
    );

    // A clone beside the new crate: every top-level entry of this checkout, linked.
    let home = tempfile::tempdir().unwrap();
    let clone = home.path().join("pika-migrate");
    std::fs::create_dir(&clone).unwrap();
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for entry in std::fs::read_dir(&repo).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "target" && entry.file_name() != ".git" {
            std::os::unix::fs::symlink(entry.path(), clone.join(entry.file_name())).unwrap();
        }
    }
    let sh = |script: &str, dir: &std::path::Path| {
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", script])
            .current_dir(dir)
            .env("CARGO_TARGET_DIR", home.path().join("my_filter/target"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    sh(setup, home.path());
    std::fs::write(home.path().join("my_filter/src/lib.rs"), lib_rs).unwrap();
    // The tool itself is this test's build, not a second release build.
    let script = build_and_run.replace("cargo run --release --", &bin().display().to_string());
    let stderr = sh(&script, &home.path().join("my_filter"));
    assert!(stderr.contains("events filtered out"), "{stderr}");
    let out = std::fs::read_to_string(clone.join("filtered.jsonl")).unwrap();
    assert!(out.lines().count() > 100);
    assert!(
        !out.contains("\"key\":\"s1:hash:"),
        "the plugin dropped s1:hash: keys"
    );
    assert!(out.contains("\"key\":\"s1:list:"));
}
