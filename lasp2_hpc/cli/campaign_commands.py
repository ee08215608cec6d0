"""``lasp2 init | run | status | validate | rerun | daemon | site | export``: a campaign from a
shell."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import time
from pathlib import Path

from lasp2_hpc.campaign.catalogue import EXAMPLE_NAMES
from lasp2_hpc.cli.errors import (  # the exit codes of every command, in one table
    EXIT_BAD_INPUT,
    EXIT_BLOCKED,
    EXIT_BUSY,
    EXIT_INFRASTRUCTURE,
    EXIT_INTERRUPTED,
    EXIT_LEDGER,
    EXIT_NOT_WRITTEN,
    check_output_file,
)
from lasp2_hpc.cli.status_view import format_status, progress_line
from lasp2_hpc.ledger.state import CampaignState
from lasp2_hpc.ledger.store import LEDGER_FILE, LedgerError, LedgerWriteError, read_ledger_file


def register(commands: argparse._SubParsersAction) -> None:
    _register_campaign(commands)
    _register_daemon(commands)
    _register_rerun(commands)
    _register_outputs(commands)


def _register_campaign(commands: argparse._SubParsersAction) -> None:
    init = commands.add_parser("init", help="write a ready-to-run campaign directory")
    init.add_argument("directory", type=Path)
    init.add_argument("--example", required=True, choices=sorted(EXAMPLE_NAMES))
    init.set_defaults(handler=run_init)

    run = commands.add_parser("run", help="run a campaign in the foreground until it finishes")
    run.add_argument("directory", type=Path)
    run.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    run.set_defaults(handler=run_run)

    status = commands.add_parser("status", help="a campaign's state, from its ledger only")
    status.add_argument("directory", type=Path)
    status.set_defaults(handler=run_status)

    validate = commands.add_parser("validate", help="check campaign.yaml, site config, ledger")
    validate.add_argument("directory", type=Path)
    validate.set_defaults(handler=run_validate)


def _register_daemon(commands: argparse._SubParsersAction) -> None:
    daemon = commands.add_parser("daemon", help="the head process, detached from the terminal")
    daemon_commands = daemon.add_subparsers(dest="daemon_command", required=True)
    for name, text in (
        ("start", "start the head in the background (survives logout)"),
        ("stop", "stop it cleanly (SIGTERM): Parsl shut down, ledger consistent"),
        ("status", "is the head alive, where, last heartbeat"),
        ("logs", "the last lines of the head's logs"),
    ):
        command = daemon_commands.add_parser(name, help=text)
        command.add_argument("directory", type=Path)
        command.set_defaults(handler=run_daemon)
    daemon_commands.choices["start"].add_argument(
        "--if-dead", action="store_true", help="do nothing when one is alive (for cron/scrontab)"
    )
    daemon_commands.choices["logs"].add_argument("-n", "--lines", type=int, default=40)


def _register_rerun(commands: argparse._SubParsersAction) -> None:
    from lasp2_hpc.ledger.task_specs import TASK_KINDS

    rerun = commands.add_parser(
        "rerun",
        help="run failed tasks again: as one scheduler job array (--array) or through the head",
    )
    rerun.add_argument("directory", type=Path)
    rerun.add_argument(
        "--kind",
        action="append",
        choices=(*TASK_KINDS, "dft"),
        help="only tasks of this kind (repeatable; dft = label); default: every failed task",
    )
    rerun.add_argument(
        "--ids",
        nargs="+",
        metavar="ID",
        help="these tasks (ids or unique prefixes, from `lasp2 status`)",
    )
    rerun.add_argument(
        "--array",
        action="store_true",
        help="submit them as ONE job array (sbatch --array / qsub -J) and ingest "
        "the results; without it they are handed back to the head",
    )
    rerun.add_argument(
        "--max-concurrent",
        type=int,
        metavar="K",
        help="at most K elements of the array run at once (%%K / -J ...%%K)",
    )
    rerun.add_argument(
        "--no-wait", action="store_true", help="submit and return; collect later with --collect"
    )
    rerun.add_argument(
        "--collect",
        action="store_true",
        help="submit nothing: wait for earlier arrays and ingest their results",
    )
    rerun.add_argument(
        "--poll",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="seconds between squeue/qstat calls while waiting (default 10)",
    )
    rerun.set_defaults(handler=run_rerun)


def _register_outputs(commands: argparse._SubParsersAction) -> None:
    report = commands.add_parser(
        "report", help="figures (PNG) and a one-page Markdown report of a campaign"
    )
    report.add_argument("directories", type=Path, nargs="+", metavar="DIR")
    report.add_argument("-o", "--output", type=Path, help="where to write (default DIR/report)")
    report.add_argument(
        "--complete-database",
        type=Path,
        nargs="+",
        metavar="CAMPAIGN",
        help="another campaign (e.g. trained on a complete database): its newest committee's "
        "control properties are drawn as the dashed reference (with --repeats: one or more)",
    )
    report.add_argument(
        "--repeats",
        action="store_true",
        help="the DIRs repeat one experiment (other seeds): mean ± spread over them per "
        "iteration, and each against the goals (default output: DIR1/../repeats-report)",
    )
    report.add_argument(
        "--no-model-errors",
        action="store_true",
        help="skip the RMSE of every committee on the database (the slow part on big campaigns)",
    )
    report.set_defaults(handler=run_report)

    site = commands.add_parser("site", help="site configs")
    site_commands = site.add_subparsers(dest="site_command", required=True)
    check = site_commands.add_parser(
        "check", help="validate a site config; print its Parsl setup and submit scripts"
    )
    check.add_argument("file", type=Path, help="a site config file, or a name in site_configs/")
    check.add_argument(
        "--campaign",
        type=Path,
        help="check the engines this campaign directory's campaign.yaml uses, with its settings "
        "(exit 1 if one is missing); without it every engine is checked with its defaults",
    )
    check.set_defaults(handler=run_site_check)

    export = commands.add_parser(
        "export", help="write a campaign's database as n2p2 input.data (for nnp-train)"
    )
    export.add_argument("directory", type=Path)
    export.add_argument("-o", "--output", type=Path, required=True, help="input.data to write")
    export.set_defaults(handler=run_export)


def run_init(arguments: argparse.Namespace) -> int:
    from lasp2_hpc.campaign.examples import write_example
    from lasp2_hpc.site.trust import check_safe_path

    # a campaign that could never run (its path reaches Parsl's command lines) is not written
    check_safe_path(Path(arguments.directory).absolute(), "the campaign directory")
    os.umask(0o077)  # every file of the campaign private to the user (docs/security.md)
    try:
        directory = write_example(arguments.directory, arguments.example)
    except FileExistsError as error:
        print(f"lasp2: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"wrote campaign {directory} ({arguments.example}); start it with: lasp2 run {directory}")
    return 0


def run_run(arguments: argparse.Namespace) -> int:
    from lasp2_hpc.campaign.head import CampaignBusy, Interrupted
    from lasp2_hpc.campaign.ingestion import InfrastructureUnhealthy
    from lasp2_hpc.campaign.loop import CampaignBlocked, Runner
    from lasp2_hpc.campaign.opening import open_campaign

    campaign = open_campaign(arguments.directory)
    os.umask(0o077)  # files of the run, its workers and their jobs: private to the user
    log_file = campaign.layout.log_file
    log_file.parent.mkdir(parents=True, exist_ok=True)
    # a log line that cannot be written (a full disk) is dropped, not printed with a traceback:
    # the head stops on the write that matters, with a message of its own (exit code 5)
    logging.raiseExceptions = False
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("lasp2_hpc").addHandler(handler)
    logging.getLogger("lasp2_hpc").setLevel(logging.INFO)
    started = time.time()

    def progress(state: CampaignState, message: str) -> None:
        if not arguments.quiet:
            print(progress_line(state, message, started), flush=True)

    try:
        reason = Runner(campaign, progress).run()
    except CampaignBusy as error:
        print(f"lasp2: {error}", file=sys.stderr)
        return EXIT_BUSY
    except LedgerError as error:
        print(f"lasp2: error: {error}", file=sys.stderr)
        return EXIT_LEDGER
    except CampaignBlocked as error:
        print(
            f"lasp2: the campaign waits for a fix: {error}\nfix the site config (or "
            f"campaign.yaml), then `lasp2 run {arguments.directory}` or `lasp2 rerun "
            f"{arguments.directory} --array` runs it again",
            file=sys.stderr,
        )
        return EXIT_BLOCKED
    except InfrastructureUnhealthy as error:
        print(f"lasp2: stopped: {error}", file=sys.stderr)
        return EXIT_INFRASTRUCTURE
    except LedgerWriteError as error:
        print(f"lasp2: stopped: {error.strerror}", file=sys.stderr)
        return EXIT_NOT_WRITTEN
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"lasp2: stopped: {disk_full_message(error, arguments.directory)}", file=sys.stderr)
        return EXIT_NOT_WRITTEN
    except (KeyboardInterrupt, Interrupted):
        print(
            f"lasp2: stopped; resume with `lasp2 run {arguments.directory}`",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    print(f"campaign finished: {reason}")
    return 0


def disk_full_message(error: OSError, campaign: Path) -> str:
    """What could not be written, where, and the space left there."""
    where = Path(error.filename) if error.filename else Path(campaign)
    free = ""
    for folder in (where, *where.parents):
        try:
            stats = os.statvfs(folder)
        except OSError:
            continue
        left, size = (count * stats.f_frsize / 2**20 for count in (stats.f_bavail, stats.f_blocks))
        free = f"; {left:.1f} MiB free of {size:.1f} MiB there"
        break
    what = "the disk quota is exceeded" if error.errno == errno.EDQUOT else "the disk is full"
    return (
        f"{what}: {where} could not be written ({error.strerror}){free}. Nothing recorded "
        f"before is lost; free space, then `lasp2 run {campaign}` resumes the campaign"
    )


def run_status(arguments: argparse.Namespace) -> int:
    from lasp2_hpc.ledger.store import Ledger

    directory = Path(arguments.directory)
    if not Ledger(directory).exists():
        if not (directory / "campaign.yaml").exists():
            print(
                f"lasp2: error: {directory} is not a campaign (no campaign.yaml)", file=sys.stderr
            )
            return 2
        print(f"campaign {directory} has not started yet: `lasp2 run {directory}` starts it")
        return 0
    # Reads the snapshot and the journal's tail without a lock: every write is atomic.
    try:
        state = read_ledger_file(directory / LEDGER_FILE, with_done_tasks=False)
    except LedgerError as error:
        print(f"lasp2: error: {error}", file=sys.stderr)
        return EXIT_LEDGER
    from lasp2_hpc.campaign.daemon import head_state

    print(head_state(arguments.directory, state.head).describe())
    print(format_status(state))
    return 0


def run_rerun(arguments: argparse.Namespace) -> int:
    from lasp2_hpc.campaign.head import CampaignBusy
    from lasp2_hpc.campaign.opening import open_campaign
    from lasp2_hpc.campaign.rerun import Rerun
    from lasp2_hpc.site.scheduler import SchedulerError

    if arguments.max_concurrent is not None and arguments.max_concurrent < 1:
        print("lasp2: error: --max-concurrent must be >= 1", file=sys.stderr)
        return 2
    campaign = open_campaign(arguments.directory)
    os.umask(0o077)
    try:
        report = Rerun(campaign, lambda message: print(message, flush=True)).run(
            kinds=[{"dft": "label"}.get(k, k) for k in arguments.kind or []],
            ids=arguments.ids,
            array=arguments.array,
            max_concurrent=arguments.max_concurrent,
            wait=not arguments.no_wait,
            collect_only=arguments.collect,
            poll_seconds=arguments.poll,
        )
    except CampaignBusy as error:
        print(f"lasp2: {error}; stop it first (`lasp2 daemon stop DIR`)", file=sys.stderr)
        return EXIT_BUSY
    except LedgerError as error:
        print(f"lasp2: error: {error}", file=sys.stderr)
        return EXIT_LEDGER
    except SchedulerError as error:
        print(f"lasp2: error: {error}", file=sys.stderr)
        return 2
    print(report.summary())
    return 1 if report.failed else 0


def require_started(directory: Path, what: str) -> None:
    """A campaign that has run: `report` and `export` have nothing to show of one that has not."""
    from lasp2_hpc.ledger.store import Ledger

    if not (Path(directory) / "campaign.yaml").is_file():
        raise ValueError(f"{directory} is not a campaign (no campaign.yaml)")
    if not Ledger(directory).exists():
        raise ValueError(
            f"campaign {directory} has not started yet: no {what} to write; "
            f"`lasp2 run {directory}` starts it"
        )


def run_report(arguments: argparse.Namespace) -> int:
    from lasp2_hpc.report.document import write_report

    directories, complete = arguments.directories, arguments.complete_database or []
    for directory in directories:
        require_started(directory, "report")
    if arguments.repeats:
        return _report_repeats(directories, arguments.output, complete)
    if len(directories) > 1 or len(complete) > 1:
        raise ValueError("several campaigns are reported together with --repeats")
    try:
        path = write_report(
            directories[0],
            arguments.output,
            complete[0] if complete else None,
            model_errors=not arguments.no_model_errors,
        )
    except LedgerError as error:
        print(f"lasp2: error: {error}", file=sys.stderr)
        return EXIT_LEDGER
    print(f"wrote {path} and its figures")
    return 0


def _report_repeats(directories: list[Path], output: Path | None, complete: list[Path]) -> int:
    from lasp2_hpc.report.repeats import write_repeats_report

    output = output or directories[0].parent / "repeats-report"
    try:
        path = write_repeats_report(directories, output, complete)
    except LedgerError as error:
        print(f"lasp2: error: {error}", file=sys.stderr)
        return EXIT_LEDGER
    print(f"wrote {path} and its figure")
    return 0


def run_export(arguments: argparse.Namespace) -> int:
    """The structures the ledger lists, in its order (a database line it does not list is left)."""
    from lasp2_hpc.campaign.layout import CampaignLayout
    from lasp2_hpc.database.store import StructureDatabase

    layout = CampaignLayout(Path(arguments.directory))
    require_started(layout.root, "database")
    check_output_file(arguments.output)
    try:
        state = read_ledger_file(layout.root / LEDGER_FILE)
    except LedgerError as error:
        print(f"lasp2: error: {error}", file=sys.stderr)
        return EXIT_LEDGER
    # each frame checked against the label hash the ledger recorded (exit 8 if one differs)
    entries = [[entry.hash, entry.label_hash or ""] for entry in state.database]
    count = StructureDatabase(layout.database).export_input_data(arguments.output, entries)
    print(f"wrote {count} structures to {arguments.output}")
    return 0


def run_daemon(arguments: argparse.Namespace) -> int:
    from lasp2_hpc.campaign import daemon

    directory = arguments.directory
    if not (Path(directory) / "campaign.yaml").exists():
        print(f"lasp2: error: {directory} is not a campaign (no campaign.yaml)", file=sys.stderr)
        return 2
    if arguments.daemon_command == "start":
        from lasp2_hpc.campaign.opening import open_campaign

        open_campaign(directory)  # a bad campaign is refused here, not in the daemon's log
        os.umask(0o077)  # logs/daemon.log private, as everything the head writes
    try:
        if arguments.daemon_command == "start":
            print(daemon.start_daemon(directory, if_dead=arguments.if_dead))
        elif arguments.daemon_command == "stop":
            print(daemon.stop_daemon(directory))
        elif arguments.daemon_command == "status":
            state = daemon.head_state(directory)
            print(state.describe())
            return 0 if state.alive else 1
        else:
            print(daemon.log_tail(directory, arguments.lines))
    except daemon.DaemonError as error:
        print(f"lasp2: {error}", file=sys.stderr)
        return EXIT_BUSY if "alive" in str(error) else 1
    return 0


def run_site_check(arguments: argparse.Namespace) -> int:
    from lasp2_hpc.campaign.opening import campaign_root
    from lasp2_hpc.campaign.settings import engine_choices, load_campaign_settings
    from lasp2_hpc.site.check import (
        ALL_ENGINES,
        check_engines,
        describe_engines,
        describe_site,
        load_trusted_site,
    )
    from lasp2_hpc.site.config import builtin_site_configs

    path = Path(arguments.file)
    if not path.exists() and (builtin_site_configs() / f"{path}.yaml").exists():
        path = builtin_site_configs() / f"{path}.yaml"
    # its worker_init runs below (the engines are looked up after it): only a file of the user's
    site = load_trusted_site(path)
    print(describe_site(site, path))
    engines = ALL_ENGINES
    if arguments.campaign is not None:
        settings = load_campaign_settings(campaign_root(arguments.campaign))
        engines = [
            (role, choice.engine, choice.parameters) for role, _, choice in engine_choices(settings)
        ]
    reports = check_engines(site, engines)
    print()
    print(describe_engines(reports))
    if arguments.campaign is not None and not all(report.usable for report in reports):
        return 1
    return 0


def run_validate(arguments: argparse.Namespace) -> int:
    from lasp2_hpc.campaign.opening import open_campaign

    campaign = open_campaign(arguments.directory)
    ledger_path = campaign.layout.root / LEDGER_FILE
    ledger_note = "no ledger yet"
    if ledger_path.exists():
        try:
            state = read_ledger_file(ledger_path)
        except LedgerError as error:
            print(f"lasp2: error: {error}", file=sys.stderr)
            return EXIT_LEDGER
        from lasp2_hpc.database.store import StructureDatabase

        # every label as the ledger recorded it (exit 8 names a frame edited since)
        StructureDatabase(campaign.layout.database).verify(
            [(entry.hash, entry.label_hash) for entry in state.database]
        )
        ledger_note = (
            f"ledger at iteration {state.iteration}, its {len(state.database)} database "
            "entries match their labels"
        )
    print(
        f"{campaign.layout.root}: campaign.yaml valid, site {campaign.site.name} "
        f"({campaign.site_path}), {ledger_note}"
    )
    return 0
