"""`lodo-tune` dispatches with argparse subcommands: `--help` lists every one, each has its own
`--help`, and the run without a subcommand (`lodo-tune --task ...`) is `lodo-tune run --task ...`."""
import pytest

import cli
from cli import main
from tuner.driver.schedule import load_schedule, template

COMMANDS = ("run", "demo", "export", "report", "init-schedule", "meta-train")


def test_help_lists_every_subcommand_and_the_run_options(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    listing = out[out.index("commands (without one: run):"):out.index("exit codes:")]
    assert [line.split()[0] for line in listing.splitlines()[2:] if line.startswith("    ") and
            not line.startswith("     ")] == list(COMMANDS)
    assert "--task TASK" in out and "--optimizers" in out  # the default command's options


@pytest.mark.parametrize("command", COMMANDS)
def test_each_subcommand_has_its_own_help(command, capsys):
    assert main([command, "--help"]) == 0
    assert capsys.readouterr().out.startswith(f"usage: lodo-tune {command} ")


def test_no_subcommand_is_the_run(capsys):
    assert main(["--task", "noisy_bowll"]) == 2
    bare = capsys.readouterr().err
    assert main(["run", "--task", "noisy_bowll"]) == 2
    assert capsys.readouterr().err == bare
    assert bare.startswith("lodo-tune: error: --task: unknown task 'noisy_bowll'") and bare.count("\n") == 1


def test_demo_defaults_to_the_noisy_bowl_and_its_three_optimizers():
    args = cli._parser().parse_args(["demo", "--workers", "2"])
    assert (args.task, args.optimizers, args.workers, args.entry) == ("noisy_bowl", "Adam,Momentum,LODO", 2, cli._demo)
    assert cli._parser().parse_args(["demo", "--task", "rosenbrock"]).task == "rosenbrock"


@pytest.mark.parametrize("argv, first", [
    (["--quiet", "export", "runs/x"], "--quiet: not allowed before the command 'export'"),
    (["frobnicate"], "argument COMMAND: invalid choice: 'frobnicate'"),
    (["export"], "the following arguments are required: run_dir"),
])
def test_misplaced_or_unknown_commands_exit_2_with_one_line(argv, first, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lodo-tune: error: {first}") and err.count("\n") == 1


def test_init_schedule_through_the_dispatch_writes_a_schedule_that_loads(tmp_path, capsys):
    path = tmp_path / "mine.yaml"
    assert main(["init-schedule", str(path)]) == 0
    assert path.read_text() == template() and load_schedule(str(path)).population >= 2
    assert main(["init-schedule", str(path)]) == 2  # never overwritten
    assert "exists" in capsys.readouterr().err
