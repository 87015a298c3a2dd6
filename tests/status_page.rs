//! The status page as an operator sees it: a real headless Chromium (Debian's
//! `chromium`) loads `/` from a running pipeline, runs its script, and the test reads
//! the rendered text.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn the_page_shows_the_stage_the_sinks_and_a_pause_as_a_browser_renders_them() {
    let ReplayWithStatus {
        redis: _redis,
        dir: _dir,
        port,
        pipeline,
        mut tool,
    } = replay_with_status("  rate: 400\n  follow: true\n", "");
    let status = || -> serde_json::Value {
        http_get(port, "/status")
            .and_then(|b| serde_json::from_str(&b).ok())
            .unwrap_or_default()
    };
    wait_until("events to flow", Duration::from_secs(30), || {
        status()["events"].as_u64().unwrap_or(0) > 100
    });
    let url = format!("http://127.0.0.1:{port}/");
    let text = rendered_text(&url);
    assert!(
        text.starts_with("pika-migrate stage reading · pid "),
        "{text}"
    );
    assert!(text.contains("Databases db stage applied up to"), "{text}");
    assert!(
        text.contains("Sinks sink events events/s acknowledged redis redis://127.0.0.1:"),
        "{text}"
    );
    assert!(text.contains("errors recovered from: 0 (none)"), "{text}");
    assert!(text.contains("refreshes every 2 s"), "{text}");
    assert!(!text.contains("Paused"), "{text}");

    let (code, _, stderr) = run_cli(&["pause", "-c", pipeline.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let events = status()["sinks"][0]["events"].as_u64().unwrap();
    let text = rendered_text(&url);
    assert!(
        text.contains("Paused: nothing is applied; the link to the master stays up."),
        "{text}"
    );
    // The sink's row shows what the status endpoint says, as a person reads numbers.
    let shown = format!("{}", events)
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(",");
    assert!(text.contains(&format!("/0 {shown} ")), "{shown} in {text}");
    let (code, _, _) = run_cli(&["resume", "-c", pipeline.to_str().unwrap()]);
    assert_eq!(code, 0);
    signal_term(&tool);
    assert_eq!(wait_exit(&mut tool, Duration::from_secs(30)), 0);
}

fn signal_term(child: &std::process::Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}
