"""The command line: bad values are refused before anything starts, each component gets its
settings, and the help pages say what a person needs."""

import pytest

from reference import cli, config


def settings(argv):
    parser = cli.build_parser(argv)
    args = parser.parse_args(argv)
    return cli.SETTINGS[args.command](args)


@pytest.mark.parametrize("argv, words", [
    (["up", "--workers", "0"], "--workers must be at least 1"),
    (["server", "--workers", "-3"], "--workers must be at least 1"),
    (["up", "--min-workers", "5", "--max-workers", "2"], "--min-workers <= --workers <= --max-workers"),
    (["up", "--strategy", "WEIGHTED", "--weights", "1,2"], "2 weights for 4 workers"),
    (["up", "--strategy", "FIFOO"], "unknown strategy 'FIFOO'"),
    (["balancer", "--weights", "1,x"], "whole numbers"),
])
def test_bad_values_are_refused_with_exit_2_and_a_sentence(argv, words, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2
    assert words in capsys.readouterr().err


def test_up_hands_each_component_its_settings():
    up = settings(["up", "--strategy", "fifo", "--workers", "3", "--max-workers", "6", "--port", "9000",
                   "--max-timeout-ms", "2000"])
    assert up.balancer.strategy == "FIFO"
    assert (up.server.workers, up.server.min_workers, up.server.max_workers) == (3, 3, 6)
    assert up.gateway.port == 9000
    # A default above the operator's ceiling comes down to it.
    assert up.gateway.limits.max_timeout_ms == 2000 and up.gateway.limits.timeout_ms == 2000
    with pytest.raises(Exception):
        up.server.workers = 5           # frozen: built once, read everywhere


def test_the_api_key_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("FAAS_API_KEY", "s3cret")
    assert settings(["gateway"]).api_key == "s3cret"


def test_up_passes_no_secret_on_a_command_line(monkeypatch):
    from reference.server import supervisor

    monkeypatch.setenv("FAAS_API_KEY", "s3cret")
    # Values other than the defaults, so that a flag `up` forgets to pass on is seen.
    up = settings(["up", "--lb-sock", "/tmp/x/lb.sock", "--server-sock", "/tmp/x/s.sock", "--strategy", "WEIGHTED",
                   "--workers", "2", "--weights", "1,3", "--max-workers", "5", "--max-queue", "9",
                   "--scale-cooldown", "2.5", "--host", "127.0.0.2", "--port", "9999", "--functions", "/tmp/x/f",
                   "--http", "waitress", "--threads", "3", "--max-timeout-ms", "7000", "--max-memory-mb", "512",
                   "--max-connections", "77", "--keep-answers-mb", "64", "--public-name", "faas.example"])
    commands = supervisor.component_commands(up.balancer, up.server, up.gateway, up.log_level)
    assert all("s3cret" not in " ".join(c) for c in commands.values())
    # Each child parses back to the same settings.
    assert settings(commands["server"][commands["server"].index("server"):]) == up.server
    assert settings(commands["balancer"][commands["balancer"].index("balancer"):]) == up.balancer
    gateway = settings(commands["gateway"][commands["gateway"].index("gateway"):])
    assert gateway == up.gateway


def test_log_level_after_the_subcommand_and_help_pages(capsys):
    assert cli.build_parser(["up"]).parse_args(["up", "--log-level", "DEBUG"]).log_level == "DEBUG"
    with pytest.raises(SystemExit):
        cli.main(["gateway", "--help"])
    page = capsys.readouterr().out
    assert "the HTTP gateway" in page and "default 8080" in page and "default 127.0.0.1" in page
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out.startswith("minifaas ")


def test_settings_defaults_match_the_design():
    s = config.ServerSettings(server_sock="s", lb_sock="l")
    assert (s.workers, s.min_workers, s.max_workers, s.executor) == (4, 4, 4, "local")
    assert config.DEFAULT_LB_SOCK == "/tmp/faas_lb.sock" and config.DEFAULT_SERVER_SOCK == "/tmp/faas_server.sock"


def test_nats_commands_without_nats_py_say_what_to_install(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nats" else real(name, *a))
    for argv in (["worker-host"], ["server", "--executor", "nats"], ["up", "--executor", "nats"]):
        with pytest.raises(SystemExit) as stop:
            cli.main(argv)
        assert stop.value.code == 2
        assert "pip install 'minifaas[nats]'" in capsys.readouterr().err


def test_simulate_runs_a_scenario_through_the_model_with_no_stack(tmp_path, capsys):
    from support import ROOT

    code = cli.main(["simulate", str(ROOT / "scenarios" / "azure2019.toml"), "--workers", "50",
                     "--strategies", "FIFO", "--out", str(tmp_path)])
    assert code == 0
    assert (tmp_path / "azure2019" / "result.json").stat().st_size > 0
