//! The Kafka sink (rdkafka): one message per event, keyed by the Redis key so each key
//! stays in one partition, in order; the value is the JSON envelope (docs/events.md) or
//! the Redis commands in RESP; headers carry the position. The producer is idempotent,
//! and a batch counts as acknowledged only once Kafka confirmed every message of it,
//! in order, so a live source's checkpoint never runs ahead of Kafka. While a broker is
//! down, librdkafka retries and its queue fills, which holds `write` back.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pika_migrate_core::event::{Event, Position};
use pika_migrate_core::sink::{Sink, SinkError, SinkReport};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::encode::commands::{event_resp, ConflictStats, TypeConflict};
use crate::encode::envelope::envelope;

fn default_topic() -> String {
    "pika.{db}".into()
}

fn default_acks() -> String {
    "all".into()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KafkaFormat {
    #[default]
    Json,
    Resp,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// `host:port[,host:port…]`.
    pub brokers: String,
    /// Topic template: `{db}` and `{type}` are replaced per event.
    #[serde(default = "default_topic")]
    pub topic: String,
    #[serde(default)]
    pub format: KafkaFormat,
    #[serde(default = "default_acks")]
    pub acks: String,
    /// For `resp`: what to do with a key that exists as several types.
    #[serde(default)]
    pub type_conflict: TypeConflict,
    /// Passed to librdkafka as is (SASL, TLS, timeouts, …).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// Messages handed to librdkafka and not yet confirmed, at most.
const IN_FLIGHT: usize = 100_000;

#[derive(Default)]
struct Delivery {
    /// Messages confirmed, all of the first ones (confirmations are awaited in order).
    delivered: u64,
    failed: Option<String>,
}

pub struct KafkaSink {
    config: KafkaSinkConfig,
    producer: FutureProducer,
    pending: Option<mpsc::Sender<(DeliveryFuture, Position)>>,
    tracker: Option<JoinHandle<()>>,
    delivery: Arc<Mutex<Delivery>>,
    conflicts: ConflictStats,
    commands: Vec<Vec<Bytes>>,
    sent: u64,
    /// Per batch written and not yet confirmed: how many messages were sent once it was.
    batch_ends: std::collections::VecDeque<u64>,
    /// Batches whose every message Kafka confirmed.
    batches_acked: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum KafkaSinkError {
    #[error("kafka {brokers}: {source}")]
    Client {
        brokers: String,
        #[source]
        source: KafkaError,
    },
    #[error("kafka: {0}")]
    Delivery(String),
}

impl KafkaSink {
    pub fn connect(config: KafkaSinkConfig) -> Result<KafkaSink, KafkaSinkError> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.brokers)
            .set("enable.idempotence", "true")
            .set("acks", &config.acks)
            .set("linger.ms", "5")
            .set("compression.type", "lz4");
        for (k, v) in &config.options {
            client.set(k, v);
        }
        let producer: FutureProducer =
            client.create().map_err(|source| KafkaSinkError::Client {
                brokers: config.brokers.clone(),
                source,
            })?;
        let delivery = Arc::new(Mutex::new(Delivery::default()));
        let (tx, rx) = mpsc::channel(IN_FLIGHT);
        let tracker = tokio::spawn(track(rx, delivery.clone()));
        Ok(KafkaSink {
            config,
            producer,
            pending: Some(tx),
            tracker: Some(tracker),
            delivery,
            conflicts: ConflictStats::default(),
            commands: Vec::new(),
            sent: 0,
            batch_ends: std::collections::VecDeque::new(),
            batches_acked: 0,
        })
    }

    fn topic(&self, event: &Event) -> String {
        self.config
            .topic
            .replace("{db}", &event.db.to_string())
            .replace("{type}", event.data_type.map_or("none", |t| t.as_str()))
    }

    fn value(&mut self, event: Event) -> Vec<u8> {
        match self.config.format {
            KafkaFormat::Json => envelope(&event).to_string().into_bytes(),
            KafkaFormat::Resp => {
                let mut out = Vec::new();
                event_resp(
                    event,
                    self.config.type_conflict,
                    &mut self.conflicts,
                    &mut self.commands,
                    &mut out,
                );
                out
            }
        }
    }

    fn failure(&self) -> Option<String> {
        self.delivery.lock().ok().and_then(|d| d.failed.clone())
    }

    fn error(
        &self,
        position: Option<Position>,
        e: impl Into<pika_migrate_core::sink::BoxError>,
    ) -> SinkError {
        SinkError::new(self.name(), position, e)
    }
}

/// Waits for each message's confirmation in the order they were sent, counting them:
/// the sink acknowledges the batches whose messages are all counted.
async fn track(mut rx: mpsc::Receiver<(DeliveryFuture, Position)>, delivery: Arc<Mutex<Delivery>>) {
    while let Some((future, position)) = rx.recv().await {
        let outcome = match future.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(e.to_string()),
            Err(_) => Err("the producer dropped the message".to_owned()),
        };
        let Ok(mut d) = delivery.lock() else { return };
        match outcome {
            Ok(()) => d.delivered += 1,
            Err(e) => {
                d.failed
                    .get_or_insert(format!("delivery of the event at {position} failed: {e}"));
                return;
            }
        }
    }
}

#[async_trait]
impl Sink for KafkaSink {
    fn name(&self) -> String {
        format!("kafka {} {}", self.config.brokers, self.config.topic)
    }

    async fn write(&mut self, batch: Vec<Event>) -> Result<(), SinkError> {
        if let Some(e) = self.failure() {
            return Err(self.error(None, KafkaSinkError::Delivery(e)));
        }
        for event in batch {
            let topic = self.topic(&event);
            let (at, key) = (event.position, event.key.clone());
            let is_command = matches!(event.op, pika_migrate_core::event::Op::Command { .. });
            let value = self.value(event);
            let position = at.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "pika-position",
                    value: Some(position.as_bytes()),
                })
                .insert(Header {
                    key: "pika-op",
                    value: Some(if is_command {
                        "command".as_bytes()
                    } else {
                        "snapshot".as_bytes()
                    }),
                });
            let mut record = FutureRecord::to(&topic)
                .key(key.as_ref())
                .payload(&value)
                .headers(headers);
            let future = loop {
                match self.producer.send_result(record) {
                    Ok(f) => break f,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        // The broker is slow or away: wait for room, never drop.
                        record = r;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err((e, _)) => {
                        return Err(self.error(Some(at), KafkaSinkError::Delivery(e.to_string())))
                    }
                }
            };
            let Some(pending) = &self.pending else {
                return Err(self.error(None, KafkaSinkError::Delivery("finished".into())));
            };
            if pending.send((future, at)).await.is_err() {
                let e = self
                    .failure()
                    .unwrap_or_else(|| "delivery tracking stopped".into());
                return Err(self.error(Some(at), KafkaSinkError::Delivery(e)));
            }
            self.sent += 1;
        }
        self.batch_ends.push_back(self.sent);
        Ok(())
    }

    fn acknowledged(&mut self, _written: u64) -> u64 {
        let delivered = self.delivery.lock().map_or(0, |d| d.delivered);
        while self.batch_ends.front().is_some_and(|end| *end <= delivered) {
            self.batch_ends.pop_front();
            self.batches_acked += 1;
        }
        self.batches_acked
    }

    async fn finish(&mut self) -> Result<SinkReport, SinkError> {
        drop(self.pending.take());
        if let Some(tracker) = self.tracker.take() {
            let _ = tracker.await;
        }
        if let Some(e) = self.failure() {
            return Err(self.error(None, KafkaSinkError::Delivery(e)));
        }
        let delivered = self.delivery.lock().map(|d| d.delivered).unwrap_or(0);
        Ok(SinkReport {
            lines: vec![format!(
                "{}: {delivered} messages confirmed by Kafka",
                self.name()
            )],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(options: &[(&str, &str)]) -> KafkaSinkConfig {
        KafkaSinkConfig {
            brokers: "127.0.0.1:1".into(),
            topic: default_topic(),
            format: KafkaFormat::Json,
            acks: default_acks(),
            type_conflict: TypeConflict::default(),
            options: options
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[tokio::test]
    async fn tls_and_sasl_settings_reach_librdkafka() {
        // librdkafka checks these at creation: without TLS support built in, "ssl"
        // would be refused here.
        assert!(KafkaSink::connect(config(&[
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanisms", "SCRAM-SHA-256"),
            ("sasl.username", "u"),
            ("sasl.password", "p"),
        ]))
        .is_ok());
        let Err(e) = KafkaSink::connect(config(&[("security.protocol", "carrier-pigeon")])) else {
            panic!("a bad setting must be refused");
        };
        assert!(e.to_string().contains("security.protocol"), "{e}");
    }
}
