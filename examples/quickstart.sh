#!/usr/bin/env bash
# The quickstart: builds pika-migrate and runs examples/quickstart.yaml on the sample
# Pika 3.3.6 dump shipped in examples/data. No server needed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps
cargo run --release --quiet -- run -c examples/quickstart.yaml
echo "wrote quickstart.resp ($(wc -c < quickstart.resp) bytes of Redis commands). Some of the keys:"
cargo run --release --quiet -- inspect snapshot --as-of 2026-11-25T01:07:48Z examples/data/dump | sed -n '20,24p' | cut -c1-110
echo "load it into a Redis with: redis-cli --pipe < quickstart.resp"
