"""A gunicorn ``--preload`` worker recycled after each request (``--max-requests 1``): how long the next request
waits, with onnxruntime's own telemetry on (as before session 32: a forked worker hung at its exit until gunicorn's
``--timeout`` killed it) and with the package's default (the telemetry off, see
``litellm_prefill_router.onnxruntime_import``).

    python benchmarks/gunicorn_recycle.py --bundle bundles/llmrouter [--n 4] [--out benchmarks/results]

The master builds a PrefillRouter over mock deployments (one per bundle target, at the bundle's prices) and warms its
predictor; one sync worker answers each request by ``router.completion`` and is then replaced. Both variants run in
this one invocation, on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

from _serving import serving_args

from litellm_prefill_router.onnxruntime_import import CI_VARIABLES, VARIABLE

APP = textwrap.dedent('''
    import json, os
    from litellm_prefill_router import PrefillRouter, load_bundle

    manifest = load_bundle(os.environ["PREFILL_BENCH_BUNDLE"]).manifest
    router = PrefillRouter(model_list=[
        {"model_name": "auto", "litellm_params": {"model": f"openai/{t.name}", "api_key": "sk-mock",
                                                  "mock_response": "ok"},
         "model_info": {"prefill_target": t.name, "input_cost_per_token": t.input_cost_per_token or 1e-7,
                        "output_cost_per_token": t.output_cost_per_token or 1e-7}} for t in manifest.targets],
        routing_strategy="prefill", routing_strategy_args={"bundle": os.environ["PREFILL_BENCH_BUNDLE"]})
    router.prefill_strategy.predictor.predict_one("warm-up in the master")

    def app(environ, start_response):
        prompt = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)).decode()
        resp = router.completion(model="auto", messages=[{"role": "user", "content": prompt}])
        body = json.dumps({"pid": os.getpid(), "model": resp.model}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
''')
VARIANTS = {"telemetry on (before)": {"ORT_DISABLE_TELEMETRY": "0"}, "default (telemetry off)": {}}
PROMPT = b"Who won the battle of Hastings in 1066, and why did the Norman cavalry matter?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_variant(bundle: str, n: int, extra_env: dict[str, str], workdir: Path) -> dict:
    port = free_port()
    # as on a user's machine: onnxruntime keeps its telemetry off by itself where a CI system's variable is set
    env = {k: v for k, v in os.environ.items() if k not in CI_VARIABLES and k != VARIABLE}
    env.update(PYTHONPATH=str(workdir), PREFILL_BENCH_BUNDLE=str(Path(bundle).resolve()), HOME=str(workdir),
               LITELLM_LOCAL_MODEL_COST_MAP="True", **extra_env)
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "--preload", "--workers", "1", "--max-requests", "1",
                               "--bind", f"127.0.0.1:{port}", "bench_app:app"], env=env, cwd=workdir,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    waits, pids = [], []
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"gunicorn did not start: {server.communicate()[0][-2000:]}") from None
                time.sleep(0.2)
        for i in range(n):
            t0 = time.perf_counter()
            req = urllib.request.Request(f"http://127.0.0.1:{port}/", data=PROMPT)
            with urllib.request.urlopen(req, timeout=120) as resp:
                pids.append(json.loads(resp.read())["pid"])
            waits.append(time.perf_counter() - t0)
            print(f"  request {i + 1}: answered in {waits[-1]:.2f} s by worker {pids[-1]}", flush=True)
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        log = server.communicate(timeout=30)[0]
    return {"waits_s": waits, "worker_pids": pids, "worker_timeouts": log.count("WORKER TIMEOUT")}


def main() -> None:
    ap = serving_args()
    ap.add_argument("--n", type=int, default=4, help="requests per variant (each after a recycle but the first)")
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "bench_app.py").write_text(APP)
        for name, extra in VARIANTS.items():
            print(f"{name}:", flush=True)
            results[name] = run_variant(args.bundle, args.n, extra, Path(tmp))
    print(f"\n{'variant':<26} {'first request s':>16} {'after a recycle, median s':>26} "
          f"{'gunicorn WORKER TIMEOUTs':>25}")
    for name, r in results.items():
        after = sorted(r["waits_s"][1:])
        median = after[len(after) // 2] if after else float("nan")
        print(f"{name:<26} {r['waits_s'][0]:>16.2f} {median:>26.2f} {r['worker_timeouts']:>25}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gunicorn_recycle.json").write_text(json.dumps(
        {"bundle": args.bundle, "n": args.n, "gunicorn_options": "--preload --workers 1 --max-requests 1",
         "results": results}, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.4
    for k, (name, r) in enumerate(results.items()):
        xs = [i + (k - 0.5) * width for i in range(len(r["waits_s"]))]
        ax.bar(xs, r["waits_s"], width=width, label=name)
    ax.set_xticks(range(args.n), [f"request {i + 1}" for i in range(args.n)])
    ax.set_ylabel("seconds until answered")
    ax.set_ylim(0, max(max(r["waits_s"]) for r in results.values()) * 1.35)
    ax.set_title("gunicorn --preload, one worker recycled after each request")
    ax.legend(loc="upper center", ncol=2)
    fig.tight_layout()
    fig.savefig(out / "gunicorn_recycle.png", dpi=120)
    print(f"wrote {out / 'gunicorn_recycle.json'} and {out / 'gunicorn_recycle.png'}")


if __name__ == "__main__":
    main()
