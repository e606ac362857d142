"""The ``dqnbench`` command: argparse subcommands, ``main(argv) -> int``.

User errors (:class:`~dqnbench.errors.DqnbenchError`) become one line on
stderr and exit code 2; a grid with failed runs exits 1 after finishing all
the others; Ctrl-C exits 130 and SIGTERM (a cluster preempting the job) 143,
both with every finished run saved, the lock released and one line of text.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import warnings
from collections.abc import Sequence
from typing import Any

from dqnbench.errors import DqnbenchError
from dqnbench.plugin.host import PluginWarning
from dqnbench.version import __version__

EXIT_OK, EXIT_FAILED_RUNS, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: a KeyboardInterrupt, so it unwinds exactly as Ctrl-C does.

    Every ``finally`` runs: executors stop their workers, the lock is released,
    the progress files are removed; results already written stay (each run is
    written atomically).
    """


def _on_sigterm(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean-up short
    raise Terminated()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dqnbench", description="Benchmark DQN variants across seeds on gymnasium environments."
    )
    parser.add_argument("--version", action="version", version=f"dqnbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a grid of DQN variants × seeds")
    run.add_argument("--grid", required=True, metavar="FILE", help="grid file (TOML)")
    run.add_argument("--out", default="results", metavar="DIR", help="results root (default: results/)")
    run.add_argument("--workers", type=_positive_int, metavar="N", help="parallel runs (default: CPU count)")
    run.add_argument(
        "--executor",
        default="process",
        metavar="NAME",
        help="how runs are dispatched: serial, process (default), or a plugin's",
    )
    run.add_argument("--address", metavar="HOST:PORT", help="cluster address, for executors that take one (ray)")
    run.add_argument("--dry-run", action="store_true", help="print the plan (cells × seeds = runs) and exit")
    run.add_argument("--estimate", action="store_true",
                     help="with --dry-run: time a few hundred steps of each task shape and print the wall time and "
                     "peak memory the grid would take here")  # fmt: skip
    run.add_argument("--tensorboard", metavar="DIR", help="write a TensorBoard event file per run under DIR/<name>/")
    run.add_argument("--quiet", action="store_true", help="plain progress lines instead of a live bar")
    run.add_argument("--no-lockstep", action="store_true", help="train every seed independently (no batching)")
    run.add_argument(
        "--no-fuse", action="store_true", help="one lock-step group per cell: never fuse cells that differ in "
        "member-wise params (agent.lr, exploration scalars, …) into one program"
    )  # fmt: skip
    run.add_argument("--no-plots", action="store_true", help="skip writing plots at the end")
    run.add_argument(
        "--strict",
        action="store_true",
        help="refuse cells that can never learn (learning_starts >= total_steps, batch_size > capacity, …) "
        "instead of warning",
    )
    run.set_defaults(handler=cmd_run)

    report = sub.add_parser("report", help="per-cell statistics of a results directory")
    report.add_argument("dir", metavar="DIR", help="an experiment directory, e.g. results/default-grid")
    report.add_argument("--format", choices=("table", "markdown", "csv"), default="table")
    report.add_argument("--all-runs", action="store_true", help="include runs of earlier versions of the grid")
    report.add_argument("--sort", choices=("grid", "score"), default="grid",
                        help="row order: the grid's (default) or best IQM first")  # fmt: skip
    report.add_argument("--failures", action="store_true", help="list the runs that failed, with their errors")
    report.set_defaults(handler=cmd_report)

    plot = sub.add_parser("plot", help="comparison plots of a results directory")
    plot.add_argument("dir", metavar="DIR", help="an experiment directory")
    plot.add_argument("--out", metavar="DIR", help="where to write the plots (default: DIR/plots)")
    plot.add_argument("--all-runs", action="store_true", help="include runs of earlier versions of the grid")
    plot.add_argument("--sort", choices=("grid", "score"), default="grid",
                      help="order of cells in legends and panels: the grid's (default) or best IQM first")  # fmt: skip
    plot.set_defaults(handler=cmd_plot)

    compare = sub.add_parser("compare", help="exit 1 when the candidate regressed against the baseline")
    compare.add_argument("baseline", metavar="BASELINE_DIR")
    compare.add_argument("candidate", metavar="CANDIDATE_DIR")
    compare.add_argument(
        "--tolerance", type=float, default=0.05, help="allowed relative drop of IQM final return (default 0.05)"
    )
    compare.add_argument(
        "--min-speed-effect",
        "--speed-tolerance",
        dest="speed_tolerance",
        type=float,
        default=0.15,
        help="slowdown per env step a cell must confidently exceed to regress (default 0.15); speed is judged "
        "only with 2+ independent samples a side (a lock-step cell is one)",
    )
    compare.add_argument("--confidence", type=float, default=0.95, help="confidence of the intervals (default 0.95)")
    compare.add_argument("--format", choices=("table", "markdown", "csv"), default="table")
    compare.add_argument(
        "--ignore",
        nargs="*",
        default=[],
        metavar="KEY",
        help="config keys not used to match cells (e.g. experiment.total_steps)",
    )
    compare.set_defaults(handler=cmd_compare)

    bench = sub.add_parser(
        "bench-compare", help="exit 1 when a benchmark got slower, relative to its session's calibration"
    )
    from dqnbench.devtools.benchcompare import add_arguments

    add_arguments(bench)
    bench.set_defaults(handler=cmd_bench_compare)

    plugins = sub.add_parser("plugins", help="list every discovered component")
    plugins.add_argument(
        "--verbose", action="store_true", help="per distribution: its plugins, their hooks and their components"
    )
    plugins.add_argument(
        "--check",
        action="store_true",
        help="build every network, replay, exploration, env, learner and optimizer on a small environment and "
        "check its contract; exit 1 on a problem",
    )
    plugins.add_argument(
        "--env", default="CartPole-v1", metavar="ID", help="environment of --check (default: CartPole-v1)"
    )
    plugins.set_defaults(handler=cmd_plugins)

    from dqnbench.devtools.scaffold import KINDS as TEMPLATE_KINDS

    new_plugin = sub.add_parser("new-plugin", help="write a ready-to-install plugin package with a working component")
    new_plugin.add_argument("name", metavar="NAME", help="distribution name, e.g. dqnbench-my-network")
    new_plugin.add_argument(
        "--kind",
        choices=list(TEMPLATE_KINDS),
        default="network",
        help="component kind (default: network)",
    )
    new_plugin.add_argument("--dir", metavar="DIR", help="where to write the package (default: ./NAME); must be empty")
    new_plugin.set_defaults(handler=cmd_new_plugin)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    """What ``dqnbench run``'s flags ask of ``run_plan`` (and of a search's ``run_search``, which takes the same)."""
    return {
        "out": args.out,
        "executor": args.executor,
        "workers": args.workers,
        "executor_options": {"address": args.address} if args.address else None,
        "quiet": args.quiet,
        "lockstep": not args.no_lockstep,
        "fuse": not args.no_fuse,
        "tensorboard": args.tensorboard,
    }


def cmd_run(args: argparse.Namespace) -> int:
    from dqnbench.run.preflight import prepare
    from dqnbench.run.runner import note_few_seeds, plan_failed, run_plan, write_grid_plots

    plan, registry = prepare(args.grid, strict=args.strict)
    executor = registry.get("executor", args.executor)  # unknown executors and options fail before any run
    executor.check_params({"address": args.address} if args.address else {})
    if plan.search is not None:  # a [search]: tuning trials, then the test phase (dqnbench.search)
        from dqnbench.search.command import cmd_search

        return cmd_search(args, plan, registry)
    if args.dry_run:
        print(plan.describe())
        if not args.no_lockstep:
            print(dry_run_groups(plan, registry, args.executor, args.workers, fuse=not args.no_fuse))
        from dqnbench.run.estimate import dry_run_estimate

        print(
            dry_run_estimate(
                plan, registry, args.executor, args.workers, args.estimate, not args.no_lockstep, not args.no_fuse
            )
        )
        return EXIT_OK
    results = run_plan(plan, registry, **run_options(args))
    note_few_seeds(plan, sys.stdout)
    if not args.no_plots:
        write_grid_plots(results, plan, registry, sys.stdout)
    failed = plan_failed(results, plan)
    if failed:
        runs = "run" if len(plan.runs) == 1 else "runs"
        print(
            f"dqnbench: {len(failed)} of {len(plan.runs)} {runs} did not succeed: {', '.join(failed[:10])}"
            f"{' …' if len(failed) > 10 else ''} (their errors: dqnbench report {results.path} --failures; "
            f"rerun the same command to retry them)",
            file=sys.stderr,
        )
        return EXIT_FAILED_RUNS
    return EXIT_OK


def dry_run_groups(plan: Any, registry: Any, executor: str, workers: int | None, fuse: bool = True) -> str:
    """How the plan's lock-step cells would be grouped, for an executor whose factory says its ``slots`` for
    ``--workers`` without starting (the local ones); another one's capacity is known once it starts (Ray asks
    its cluster)."""
    from dqnbench.run.groups import describe_groups, lockstep_groups
    from dqnbench.run.runner import fusion_pools, lockstep_cells

    cells = lockstep_cells(plan, registry, sys.stdout)
    pools = fusion_pools(plan, registry, cells) if fuse else None
    if not cells:
        return "no cell trains in lock-step"
    slots_for = getattr(registry.get("executor", executor).factory, "slots", None)
    if not callable(slots_for):
        return f"lock-step groups: decided when the {executor} executor starts (one per free worker; docs/lockstep.md)"
    slots = slots_for(workers)
    header = f"lock-step groups on {slots} worker{'s' if slots > 1 else ''}:"
    return "\n".join([header, *describe_groups(plan, lockstep_groups(plan, cells, slots, pools))])


def cmd_plugins(args: argparse.Namespace) -> int:
    from dqnbench.devtools.diagnostics import plugins_command

    return plugins_command(verbose=args.verbose, check=args.check, env_id=args.env)


def cmd_new_plugin(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dqnbench.devtools.scaffold import next_steps, write_plugin

    dest = write_plugin(args.name, args.kind, Path(args.dir or args.name))
    print(next_steps(dest, args.name, args.kind))
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from dqnbench.analysis.api import report
    from dqnbench.run.live import load_live_results

    results = load_live_results(args.dir, all_runs=args.all_runs)  # runs still training too, marked partial
    if results.partial and args.format == "csv":  # the table stays CSV: the note goes to stderr
        print(f"({results.partial})", file=sys.stderr)
    print(report(results, args.format, sort=args.sort, failures=args.failures), end="")
    return EXIT_OK


def cmd_plot(args: argparse.Namespace) -> int:
    from dqnbench.analysis.plots import write_plots
    from dqnbench.plugin.registry import load_registry
    from dqnbench.run.live import load_live_results

    results = load_live_results(args.dir, all_runs=args.all_runs)
    if results.partial:
        print(f"({results.partial})")
    for path in write_plots(results, out_dir=args.out, registry=load_registry(), sort=args.sort):
        print(path)
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from dqnbench.analysis.compare import compare_results
    from dqnbench.run.results import load_results

    comparison = compare_results(
        load_results(args.baseline),
        load_results(args.candidate),
        args.tolerance,
        args.speed_tolerance,
        args.confidence,
        ignore=tuple(args.ignore),
    )
    print(comparison.render(args.format), end="")
    return EXIT_FAILED_RUNS if comparison.regressed else EXIT_OK


def cmd_bench_compare(args: argparse.Namespace) -> int:
    from dqnbench.devtools.benchcompare import cmd_bench_compare as run

    return run(args)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    from dqnbench.run.results import DamagedRunWarning

    if issubclass(category, (PluginWarning, DamagedRunWarning)):
        print(f"dqnbench: warning: {message}", file=sys.stderr)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


_default_showwarning = warnings.showwarning


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dqnbench`` script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.showwarning = _show_warning
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    try:
        return args.handler(args)
    except DqnbenchError as exc:
        print(f"dqnbench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(
            f"dqnbench: {what}: finished runs are saved; rerun the same command to complete the rest",
            file=sys.stderr,
        )
        return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
    finally:
        warnings.showwarning = _default_showwarning
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())
