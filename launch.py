"""pzstream entry point: ``python launch.py --role learner|collector|monitor|all|keys [key=value ...]``.

Examples:
  python launch.py --role all --max-seconds 60             # hub + 2 collectors on the default game
  python launch.py --role learner --learner tcp://0.0.0.0:5555 security.curve_dir=keys
  python launch.py --role learner --resume runs/debug              # continue a stopped or crashed run
  python launch.py --role collector --learner tcp://hub-host:5555 --game zork1 security.curve_dir=keys
  python launch.py --role monitor --learner tcp://hub-host:5555 --roles collector --level WARNING
  python launch.py --role monitor --learner tcp://hub-host:5555 --dashboard
  python launch.py --role prior --prior tcp://0.0.0.0:5600 --learner tcp://hub-host:5555
  python launch.py --role search --search tcp://0.0.0.0:5700 --learner tcp://hub-host:5555
  python launch.py --role collector --learner tcp://hub-host:5555 collector.search=server collector.search_server=tcp://search-host:5700
  python launch.py --role eval --episodes 5 [--game default,zork1]
  python launch.py --role keys --out keys
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio

REPO_ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO_ROOT))

from pzstream.stream.checkpoint import CheckpointError  # noqa: E402
from pzstream.config import Config, ConfigError, load_config  # noqa: E402
from pzstream.roles.lifecycle import die_with_parent, serve_until_stopped, stop_on_signal_or_deadline  # noqa: E402
from pzstream.stream.transport import CurveKeys, FatalReject, SecurityError, generate_keys  # noqa: E402
from pzstream.stream.weights import WeightsError  # noqa: E402

ROLES = ("learner", "collector", "monitor", "all", "prior", "search", "eval", "keys")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="pzstream: PriorZero actor-learner over ZeroMQ",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--role", choices=ROLES, required=True)
    p.add_argument("--config", default=None, help="YAML file or name in config/ (default: config/debug.yaml)")
    p.add_argument("--learner", default=None, help="hub address, tcp://host:port (bind for learner, connect otherwise)")
    p.add_argument("--game", default=None, help="'default', a suite name like zork1, or a story file path")
    p.add_argument("--collectors", type=int, default=None, help="collectors started by --role all")
    p.add_argument("--max-seconds", type=float, default=None, help="stop after about this many seconds")
    p.add_argument("--max-steps", type=int, default=None, help="collector: stop after this many env steps")
    p.add_argument("--roles", default="", help="monitor: comma-separated roles to show (default all)")
    p.add_argument("--level", default="INFO", help="monitor: lowest level shown")
    p.add_argument("--dashboard", action="store_true",
                   help="monitor: a live terminal dashboard of the hub's reports (rates, versions and lag, losses, "
                        "returns per game, PPO, rejections, caps, collectors' health, memory) instead of log lines")
    p.add_argument("--out", default="keys", help="keys: directory for the key files")
    p.add_argument("--prior", default=None, help="prior server address (bind for --role prior, connect for collectors)")
    p.add_argument("--search", default=None, help="search server address (bind for --role search; for --role all, "
                                                   "start one there and have the collectors use it)")
    p.add_argument("--episodes", type=int, default=5, help="eval: episodes per game and mode")
    p.add_argument("--weights", default=None, help="eval: weights directory (default runs/<run.name>/weights)")
    p.add_argument("--helper-output", choices=("file", "terminal"), default="file",
                   help="learner/all: where the hub's helper processes (trainer, PPO worker with Ray, vLLM, "
                        "DeepSpeed) write: runs/<run.name>/helpers.log (default) or this terminal")
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="learner/all: continue the run in RUN_DIR (runs/<name>) from its newest checkpoint: "
                        "counters, versions, replay, models and optimisers go on where they stopped")
    p.add_argument("overrides", nargs="*", help="config overrides such as hub.credit_window=64")
    return p.parse_intermixed_args(argv)


def build_config(args: argparse.Namespace) -> Config:
    overrides = list(args.overrides)
    if args.learner:
        overrides += [f"hub.address={args.learner}", f"collector.learner={args.learner}"]
    if args.game:
        overrides.append(f"collector.game={args.game}")
    if args.collectors is not None:
        overrides.append(f"collector.count={args.collectors}")
    if args.max_seconds is not None:
        overrides.append(f"run.max_seconds={args.max_seconds}")
    if args.max_steps is not None:
        overrides.append(f"collector.max_steps={args.max_steps}")
    if args.prior:
        overrides.append(f"llm.prior_server={args.prior}")
    if args.search:
        overrides.append(f"search_server.address={args.search}")
    if args.resume:  # the run directory is RUN_DIR: run.out_dir/run.name name it
        run_dir = Path(args.resume).resolve()
        overrides += [f"run.out_dir={run_dir.parent}", f"run.name={run_dir.name}"]
    return load_config(args.config, overrides)


def address_problem(address: str, hub: bool) -> str | None:
    """Why ``address`` is no address a socket can bind or connect to (None: it is one). A hub's
    address also names the three ports after it (``endpoints_for``)."""
    from pzstream.stream.transport import endpoints_for

    if hub:
        try:
            endpoints_for(address)
        except ValueError as e:
            return str(e)
        return None
    if address.startswith("tcp://"):
        host, _, port = address[len("tcp://"):].rpartition(":")
        return None if host and port.isdigit() and 0 < int(port) < 65536 else f"address {address!r} must look like tcp://host:port"
    return None if address.startswith(("ipc://", "inproc://")) else f"address {address!r}: use tcp://host:port or ipc://path"


def check_addresses(cfg: Config) -> None:
    """Every address the config names is one (ConfigError naming the flag and the key otherwise),
    before any role starts: a mistyped --learner is the user's error, not a traceback."""
    named = [("--learner / hub.address", cfg.hub.address, True), ("--learner / collector.learner", cfg.collector.learner, True),
             ("--prior / llm.prior_server", cfg.llm.prior_server, False),
             ("--search / search_server.address", cfg.search_server.address, False),
             ("collector.search_server", cfg.collector.search_server, False)]
    for where, address, hub in named:
        if address is not None and (why := address_problem(address, hub)) is not None:
            raise ConfigError(f"{where}: {why}")


def bind_problem(e: BaseException) -> str | None:
    """The message for a socket that could not bind its address (in use, or not this host's), else None."""
    import errno

    import zmq

    if not isinstance(e, zmq.ZMQError):
        return None
    if e.errno == errno.EADDRINUSE:
        return (f"cannot bind: {e}: another process (another hub?) holds that port; a hub at port P also binds "
                f"P+1..P+3. Choose another address (--learner, --prior, --search)")
    if e.errno == errno.EADDRNOTAVAIL:
        return f"cannot bind: {e}: not an address of this host; bind one of its own IPs, or 0.0.0.0"
    return None


def check_resume(cfg: Config, args: argparse.Namespace) -> None:
    """--resume names a run directory with a complete hub checkpoint (ConfigError otherwise)."""
    if not args.resume:
        return
    if args.role not in ("learner", "all"):
        raise ConfigError(f"--resume is for --role learner or all, not --role {args.role}")
    from pzstream.stream.checkpoint import complete_steps
    from pzstream.stream.checkpoint import checkpoint_root

    if not cfg.checkpoint.enabled:
        raise ConfigError("--resume needs checkpoint.enabled=true")
    hub_dir = checkpoint_root(Path(args.resume)) / "hub"
    if not complete_steps(hub_dir):
        raise ConfigError(f"--resume {args.resume}: no complete checkpoint in {hub_dir}")


def curve_keys(cfg: Config) -> CurveKeys | None:
    return CurveKeys(Path(cfg.security.curve_dir)) if cfg.security.curve_dir else None


def route_helper_output(log_path: Path) -> None:
    """Send whatever this process's children write to fds 1 and 2 to ``log_path``, and keep this
    process's own output (the hub's reports, the summary JSON, errors) on the terminal.

    The hub's helpers (trainer, PPO worker, and the Ray, vLLM and DeepSpeed processes under it)
    inherit fds 1 and 2; their banners, progress bars and compiler output would otherwise land
    between the hub's reports. Their log records also reach the live stream (--role monitor).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    terminal_out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8", errors="replace")
    terminal_err = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout, sys.stderr = terminal_out, terminal_err


async def main_learner(cfg: Config, resume: bool = False) -> dict[str, object]:
    from pzstream.hub.learner import LearnerHub
    from pzstream.stream.logstream import setup_logging

    setup_logging("learner", "hub", cfg.run.log_level, cfg.hub.address, curve_keys(cfg), stream=sys.stderr)
    hub = LearnerHub(cfg, curve_keys(cfg), resume=resume)
    return await serve_until_stopped(hub.serve, cfg.run.max_seconds)


async def main_collector(cfg: Config) -> dict[str, object]:
    from pzstream.roles.collector import default_collector_id, run_collector
    from pzstream.stream.logstream import setup_logging

    setup_logging("collector", cfg.collector.id or default_collector_id(), cfg.run.log_level,
                  cfg.collector.learner, curve_keys(cfg))
    return await serve_until_stopped(lambda stop: run_collector(cfg, stop, curve_keys(cfg)), cfg.run.max_seconds)


async def main_monitor(cfg: Config, roles: str, level: str, dashboard: bool = False) -> None:
    from pzstream.stream.logstream import LEVELS, run_monitor

    level = level.upper()
    if level not in LEVELS:
        raise ConfigError(f"--level {level!r}: use one of {', '.join(LEVELS)}")
    role_filter = tuple(r.strip() for r in roles.split(",") if r.strip())
    if dashboard:
        from pzstream.roles.dashboard import run_dashboard

        print(f"dashboard of {cfg.collector.learner} (roles: {', '.join(role_filter) or 'all'}); Ctrl-C to stop",
              file=sys.stderr)
        await serve_until_stopped(lambda stop: run_dashboard(cfg.collector.learner, stop, role_filter, curve_keys(cfg)),
                                  cfg.run.max_seconds)
        return
    print(f"following {cfg.collector.learner} (roles: {', '.join(role_filter) or 'all'}, level >= {level}); Ctrl-C to stop",
          file=sys.stderr)
    await serve_until_stopped(lambda stop: run_monitor(cfg.collector.learner, stop, role_filter, level, curve_keys(cfg)),
                              cfg.run.max_seconds)


async def serve_server(cfg: Config, role: str, address: str | None, flag: str, key: str, learner_given: bool,
                       run) -> dict[str, object]:
    """A server role (``--role prior`` or ``search``) on ``address``, following the hub's weights when
    ``--learner`` was given: ``run(cfg, address, stop, curve, hub)`` until a signal or the deadline."""
    from pzstream.stream.logstream import setup_logging

    if not address:
        raise ConfigError(f"--role {role} needs an address: {flag} tcp://HOST:PORT (or {key}=...)")
    hub = cfg.collector.learner if learner_given else None
    setup_logging(role, "server", cfg.run.log_level, hub, curve_keys(cfg))
    stats = await serve_until_stopped(lambda stop: run(cfg, address, stop, curve_keys(cfg), hub), cfg.run.max_seconds)
    return dict(stats)


async def main_prior(cfg: Config, learner_given: bool) -> dict[str, object]:
    from pzstream.roles.prior_server import run_prior_server

    return await serve_server(cfg, "prior", cfg.llm.prior_server, "--prior", "llm.prior_server", learner_given,
                              run_prior_server)


async def main_search(cfg: Config, learner_given: bool) -> dict[str, object]:
    from pzstream.roles.search_server import run_search_server

    return await serve_server(cfg, "search", cfg.search_server.address, "--search", "search_server.address",
                              learner_given, run_search_server)


def connect_address(bind: str) -> str:
    """Where a process on this host reaches a server bound at ``bind`` (a wildcard host means loopback)."""
    return bind.replace("://0.0.0.0:", "://127.0.0.1:").replace("://*:", "://127.0.0.1:")


def main_eval(cfg: Config, args: argparse.Namespace) -> dict[str, object]:
    from pzstream.roles.evaluate import evaluate, print_table
    from pzstream.stream.logstream import setup_logging

    setup_logging("eval", "eval", cfg.run.log_level, None)
    if args.weights:
        weights: Path | None = Path(args.weights)  # named by the user: it must exist (evaluate raises otherwise)
    else:
        weights = REPO_ROOT / cfg.run.out_dir / cfg.run.name / "weights"
        if not weights.is_dir():  # no run of this name yet: the untrained models, said so in the log
            weights = None
    games = [g for g in cfg.collector.game.split(",") if g]
    result = evaluate(cfg, games, args.episodes, weights)
    print_table(result)
    return result


def collector_game(games: str, i: int) -> str:
    """Collector ``i``'s game in ``--role all``: ``--game zork1,detective`` deals the games round-robin."""
    names = [g for g in games.split(",") if g]
    return names[i % len(names)] if names else games


def all_search_address(cfg: Config) -> str | None:
    """Where ``--role all``'s search server binds, or None when its collectors search locally (printed either way)."""
    from pzstream.roles.search_server import wants_search_server
    from pzstream.stream.transport import free_base_port

    wanted, why = wants_search_server(cfg, os.cpu_count() or 1)
    address = (cfg.search_server.address or f"tcp://127.0.0.1:{free_base_port()}") if wanted else None
    print(f"search: {'one search server at ' + address if address else 'local in each collector'} ({why})",
          file=sys.stderr)
    return address


async def main_all(cfg: Config, args: argparse.Namespace) -> dict[str, object]:
    """Hub in this process, ``collector.count`` collector processes beside it."""
    from pzstream.hub.learner import LearnerHub
    from pzstream.stream.logstream import setup_logging

    setup_logging("learner", "hub", cfg.run.log_level, cfg.hub.address, curve_keys(cfg), stream=sys.stderr)
    run_dir = REPO_ROOT / cfg.run.out_dir / cfg.run.name
    run_dir.mkdir(parents=True, exist_ok=True)
    hub = LearnerHub(cfg, curve_keys(cfg), run_dir, resume=bool(args.resume))
    stop = anyio.Event()
    procs: list[subprocess.Popen[bytes]] = []
    servers: list[subprocess.Popen[bytes]] = []  # prior and search servers: stopped after the collectors they serve
    base = [sys.executable, str(REPO_ROOT / "launch.py"), "--role", "collector", "--learner", cfg.hub.address]
    if args.config:
        base += ["--config", args.config]
    search_address = all_search_address(cfg)
    async with anyio.create_task_group() as tg:
        tg.start_soon(stop_on_signal_or_deadline, stop, cfg.run.max_seconds)

        async def start_collectors() -> None:
            await hub.ready.wait()
            for i in range(cfg.collector.count):
                cmd = base + list(args.overrides) + [f"collector.id=c{i}", f"collector.seed={cfg.collector.seed + i}",
                                                     f"collector.game={collector_game(cfg.collector.game, i)}",
                                                     "run.max_seconds=null"]
                if cfg.llm.prior_server:
                    cmd.append(f"llm.prior_server={cfg.llm.prior_server}")
                if cfg.collector.policies:
                    cmd.append(f"collector.policy={cfg.collector.policies[i % len(cfg.collector.policies)]}")
                if cfg.collector.max_steps:
                    cmd.append(f"collector.max_steps={cfg.collector.max_steps}")
                if search_address and cfg.collector.search_server is None:
                    cmd += ["collector.search=server", f"collector.search_server={connect_address(search_address)}"]
                log_file = open(run_dir / f"collector-{i}.log", "wb")
                procs.append(subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                                              preexec_fn=die_with_parent))
            if cfg.llm.prior_server and cfg.llm.enabled:
                prior_cmd = [sys.executable, str(REPO_ROOT / "launch.py"), "--role", "prior", "--prior", cfg.llm.prior_server,
                             "--learner", cfg.hub.address] + (["--config", args.config] if args.config else []) + list(args.overrides)
                servers.append(subprocess.Popen(prior_cmd, stdout=open(run_dir / "prior.log", "wb"),
                                                stderr=subprocess.STDOUT, cwd=REPO_ROOT, preexec_fn=die_with_parent))
            if search_address:
                search_cmd = [sys.executable, str(REPO_ROOT / "launch.py"), "--role", "search", "--search",
                              search_address, "--learner", cfg.hub.address] + \
                    (["--config", args.config] if args.config else []) + list(args.overrides)
                servers.append(subprocess.Popen(search_cmd, stdout=open(run_dir / "search.log", "wb"),
                                                stderr=subprocess.STDOUT, cwd=REPO_ROOT, preexec_fn=die_with_parent))
            also = f" and {len(servers)} server(s)" if servers else ""
            print(f"started {len(procs)} collectors{also}; their logs: {run_dir}/collector-*.log, "
                  f"live stream: python launch.py --role monitor --learner {cfg.hub.address}", file=sys.stderr)

        async def stop_collectors_first() -> None:
            await stop.wait()  # the deadline or a signal: let collectors flush before the hub stops
            for group in (procs, servers):  # servers last: collectors play their last moves with them
                for p in group:
                    if p.poll() is None:
                        p.send_signal(signal.SIGTERM)
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline and any(p.poll() is None for p in group):
                    await anyio.sleep(0.1)
                for p in group:
                    if p.poll() is None:
                        p.kill()
            hub_stop.set()

        hub_stop = anyio.Event()
        tg.start_soon(start_collectors)
        tg.start_soon(stop_collectors_first)
        summary = await hub.serve(hub_stop)
        tg.cancel_scope.cancel()
    summary["collector_exit_codes"] = [p.returncode for p in procs]
    if servers:
        summary["server_exit_codes"] = [p.returncode for p in servers]
    return summary


EXIT_CODES: dict[type[BaseException], int] = {ConfigError: 2, SecurityError: 2, FileNotFoundError: 2, FatalReject: 3, WeightsError: 2,
                                              CheckpointError: 2}


def _leaf(e: BaseException) -> BaseException:
    while isinstance(e, BaseExceptionGroup) and len(e.exceptions) == 1:
        e = e.exceptions[0]
    return e


def check_placement(cfg: Config, role: str) -> None:
    """Every CUDA device the config names exists on this host (ConfigError otherwise); the learner says where each part runs."""
    from pzstream.config import check_devices, devices

    named = devices(cfg)
    if any(d.startswith("cuda") for d in named.values()) or cfg.ppo.device.startswith("cuda"):
        import torch

        check_devices(cfg, torch.cuda.device_count() if torch.cuda.is_available() else 0)
    if role in ("learner", "all"):
        print("placement: " + ", ".join(f"{k} {v}" for k, v in named.items()), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.role == "keys":
        out = generate_keys(args.out)
        print(f"CURVE keys in {out}: hub.key(_secret) for the hub, client.key(_secret) for collectors and "
              f"monitors, authorized/ lists accepted clients. Copy the directory to each host (keep *.key_secret private) "
              f"and pass security.curve_dir={out}", file=sys.stderr)
        return 0
    try:
        cfg = build_config(args)
        check_addresses(cfg)
        check_resume(cfg, args)
        if args.dashboard and args.role != "monitor":
            raise ConfigError(f"--dashboard is for --role monitor, not --role {args.role}")
        if args.role in ("learner", "all", "search", "prior", "collector", "eval"):
            check_placement(cfg, args.role)
            if cfg.llm.enabled:  # a model that cannot load stops here, before any role starts
                from pzstream.llm.packaged import ModelError, check_model
                try:
                    print(f"llm: {check_model(cfg.llm.model)}", file=sys.stderr)
                except ModelError as e:
                    raise ConfigError(str(e)) from e
        if args.role in ("learner", "all") and args.helper_output == "file":
            # the run directory as each role's hub places it (--role all: under the repository)
            run_dir = Path(cfg.run.out_dir) / cfg.run.name
            helpers_log = (run_dir if args.role == "learner" else REPO_ROOT / run_dir) / "helpers.log"
            route_helper_output(helpers_log)
            print(f"helper processes (trainer, PPO worker, Ray, vLLM, DeepSpeed) write to {helpers_log}", file=sys.stderr)
        if args.role == "learner":
            result = anyio.run(main_learner, cfg, bool(args.resume))
        elif args.role == "collector":
            result = anyio.run(main_collector, cfg)
        elif args.role == "prior":
            result = anyio.run(main_prior, cfg, bool(args.learner))
        elif args.role == "search":
            result = anyio.run(main_search, cfg, bool(args.learner))
        elif args.role == "eval":
            result = main_eval(cfg, args)
        elif args.role == "monitor":
            anyio.run(main_monitor, cfg, args.roles, args.level, args.dashboard)
            return 0
        else:
            result = anyio.run(main_all, cfg, args)
    except KeyboardInterrupt:
        return 130
    except BaseException as e:  # task groups wrap errors in exception groups; report the cause plainly
        cause = _leaf(e)
        if (why := bind_problem(cause)) is not None:
            print(f"error: {why}", file=sys.stderr)
            return 2
        code = EXIT_CODES.get(type(cause)) or next((c for t, c in EXIT_CODES.items() if isinstance(cause, t)), None)
        if code is None:
            raise
        print(f"error: {cause}", file=sys.stderr)
        return code
    print(json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
