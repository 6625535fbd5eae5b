#!/usr/bin/env bash
# Installs the benchmark's peers, idempotently: mosquitto and nats-server (Debian)
# and the Python packages the peers and the profiler need (PyPI: paho-mqtt,
# nats-py, py-spy). Safe to run again; does nothing that is already done. The
# zchat side needs only `pip install -e .` (see README).
set -euo pipefail

missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
if [ "${#missing[@]}" -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # The packages enable system services on their default ports; the bench starts
    # its own servers on free ports, so stop those if an init system started them.
    if command -v service >/dev/null 2>&1; then
      for svc in mosquitto nats-server; do service "$svc" stop >/dev/null 2>&1 || true; done
    fi
  else
    echo "bench/setup.sh: no apt-get; install ${missing[*]} by hand" >&2
  fi
fi

PY="${PYTHON:-python3}"
"$PY" - <<'PY' || "$PY" -m pip install -q "paho-mqtt>=2.1,<3" "nats-py>=2.6,<3" "py-spy>=0.3.14"
import importlib.util, shutil, sys
ok = all(importlib.util.find_spec(m) is not None for m in ("paho", "nats"))
sys.exit(0 if ok and shutil.which("py-spy") else 1)
PY

mosq="$(command -v mosquitto || echo /usr/sbin/mosquitto)"
echo "mosquitto: $({ "$mosq" -h 2>/dev/null || true; } | head -1)"
echo "nats-server: $(nats-server --version 2>/dev/null || echo missing)"
"$PY" -c "import importlib.metadata, paho.mqtt, zmq; print('paho-mqtt', paho.mqtt.__version__, '| nats-py', importlib.metadata.version('nats-py'), '| pyzmq', zmq.__version__, '| libzmq', zmq.zmq_version())"
