//! A progress bar on standard error while a pipeline runs, only when it is a terminal.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use pika_migrate_core::metrics::Metrics;
use pika_migrate_core::status::Stage;
use tokio::task::JoinHandle;

pub struct Progress {
    bars: Vec<(ProgressBar, JoinHandle<()>)>,
}

impl Progress {
    /// One bar per source (named in front of its bar in a fleet).
    pub fn start(members: &[(Option<String>, Metrics)]) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress { bars: Vec::new() };
        }
        let all = MultiProgress::new();
        let bars = members
            .iter()
            .map(|(name, metrics)| {
                let bar = all.add(ProgressBar::new(0));
                if let Some(name) = name {
                    bar.set_prefix(format!("{name} "));
                }
                Self::tick(bar, metrics.clone())
            })
            .collect();
        Progress { bars }
    }

    fn tick(bar: ProgressBar, metrics: Metrics) -> (ProgressBar, JoinHandle<()>) {
        let style = ProgressStyle::with_template(
            "{prefix}{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} keys {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        let ticking = bar.clone();
        let task = tokio::spawn(async move {
            // The dump's bytes a few seconds ago, for the transfer rate.
            let mut dump_samples = std::collections::VecDeque::new();
            loop {
                let m = metrics.snapshot();
                let r = metrics.report();
                ticking.set_length(m.expected_keys.max(m.keys));
                ticking.set_position(m.keys);
                let now = std::time::Instant::now();
                dump_samples.push_back((now, r.dump_bytes));
                while dump_samples.len() > 25 {
                    dump_samples.pop_front();
                }
                let live = match r.stage {
                    Stage::FullSyncTransfer => {
                        let rate = dump_samples.front().map_or(0.0, |(t, b)| {
                            let secs = now.duration_since(*t).as_secs_f64();
                            if secs > 0.0 {
                                r.dump_bytes.saturating_sub(*b) as f64 / secs
                            } else {
                                0.0
                            }
                        });
                        format!(
                            "receiving the dump: {:.1} MiB at {:.1} MiB/s, ",
                            r.dump_bytes as f64 / 1048576.0,
                            rate / 1048576.0
                        )
                    }
                    Stage::Streaming => format!(
                        "streaming at {}, lag {} items / {} ms, ",
                        r.position.as_deref().unwrap_or("-"),
                        r.lag_items,
                        r.lag_ms
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
        (bar, task)
    }

    pub fn finish(self) {
        for (bar, task) in self.bars {
            task.abort();
            bar.finish_and_clear();
        }
    }
}
