#!/usr/bin/env bash
# Installs the benchmark's peers, idempotently: mosquitto (Debian) and the Python
# packages the peers and the profiler need (PyPI). Safe to run again; does nothing
# that is already done. The zchat side needs only `pip install -e .` (see README).
set -euo pipefail

if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  if command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mosquitto >/dev/null
    # The package enables a system service on port 1883; the bench starts its own
    # mosquitto on a free port, so stop the service if an init system started it.
    if command -v service >/dev/null 2>&1; then service mosquitto stop >/dev/null 2>&1 || true; fi
  else
    echo "bench/setup.sh: no apt-get; install mosquitto by hand" >&2
  fi
fi

PY="${PYTHON:-python3}"
"$PY" - <<'PY' || "$PY" -m pip install -q "paho-mqtt>=2.1,<3" "py-spy>=0.3.14"
import importlib.util, shutil, sys
ok = importlib.util.find_spec("paho") is not None and shutil.which("py-spy") is not None
sys.exit(0 if ok else 1)
PY

mosq="$(command -v mosquitto || echo /usr/sbin/mosquitto)"
echo "mosquitto: $({ "$mosq" -h 2>/dev/null || true; } | head -1)"
"$PY" -c "import paho.mqtt, zmq; print('paho-mqtt', paho.mqtt.__version__, '| pyzmq', zmq.__version__, '| libzmq', zmq.zmq_version())"
