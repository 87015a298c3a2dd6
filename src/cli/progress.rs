//! A progress bar on standard error while a pipeline runs, only when it is a terminal.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use pika_migrate_core::pipeline::Metrics;
use pika_migrate_core::status::Stage;
use tokio::task::JoinHandle;

pub struct Progress {
    bar: Option<(ProgressBar, JoinHandle<()>)>,
}

impl Progress {
    pub fn start(metrics: Metrics) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress { bar: None };
        }
        let bar = ProgressBar::new(0);
        let style = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} keys {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        let ticking = bar.clone();
        let task = tokio::spawn(async move {
            loop {
                let m = metrics.snapshot();
                let r = metrics.report();
                ticking.set_length(m.expected_keys.max(m.keys));
                ticking.set_position(m.keys);
                let live = match r.stage {
                    Stage::FullSyncTransfer => {
                        format!(
                            "receiving the dump: {:.1} MiB, ",
                            r.dump_bytes as f64 / 1048576.0
                        )
                    }
                    Stage::Streaming => format!(
                        "streaming at {}, lag {} items / {} s, ",
                        r.position.as_deref().unwrap_or("-"),
                        r.lag_items,
                        r.lag_seconds
                    ),
                    _ => String::new(),
                };
                ticking.set_message(format!(
                    "{live}{} commands, {:.1} MiB",
                    m.commands,
                    m.bytes as f64 / 1048576.0
                ));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Progress {
            bar: Some((bar, task)),
        }
    }

    pub fn finish(self) {
        if let Some((bar, task)) = self.bar {
            task.abort();
            bar.finish_and_clear();
        }
    }
}
