"""The admin_port setting: in the ensemble file (per member, or for all), checked like every
setting, and laid out BASE+N-1 by `zkpy ensemble --admin-port BASE`."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from zkpy.cli import main
from zkpy.server.config import ConfigError, ServerConfig, config_from_text
from zkpy.server.launcher import ensure_ensemble_file

MEMBERS = """
[members.1]
client_port = 2181
peer_port = 2888
admin_port = 8081
[members.2]
client_port = 2182
peer_port = 2889
"""


def test_admin_port_per_member_over_the_top_level_one(tmp_path: Path) -> None:
    text = "secret = 's'\nadmin_port = 9000\n" + MEMBERS
    path = tmp_path / "e.toml"
    assert config_from_text(text, path, 1).admin_port == 8081
    assert config_from_text(text, path, 2).admin_port == 9000
    assert config_from_text("secret = 's'\n" + MEMBERS, path, 2).admin_port == 0


@pytest.mark.parametrize("bad", ["70000", "-1", "'8080'"])
def test_a_bad_admin_port_is_refused_with_its_name(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match="admin_port"):
        config_from_text(f"secret = 's'\nadmin_port = {bad}\n" + MEMBERS, tmp_path / "e", 2)
    with pytest.raises(ValueError, match="admin_port"):
        ServerConfig(admin_port=65536)


def test_ensemble_admin_ports_are_base_plus_n_minus_one(tmp_path: Path) -> None:
    path, _addresses = ensure_ensemble_file(tmp_path / "e", 2, 1, 2181, 2888, 2000, admin_port=8080)
    assert [config_from_text(path.read_text(), path, n).admin_port for n in (1, 2, 3)] == [
        8080,
        8081,
        8082,
    ]


def test_ensemble_refuses_admin_ports_past_the_last_port(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["ensemble", "--data-dir", str(tmp_path / "d"), "--admin-port", "65534"]
    )
    assert result.exit_code == 2, result.output
    assert "--admin-port 65534 leaves no room for 3 ports" in result.output
    assert not (tmp_path / "d").exists()


def test_a_reused_ensemble_file_must_agree_on_admin_ports(tmp_path: Path) -> None:
    ensure_ensemble_file(tmp_path / "e", 3, 0, 2181, 2888, 2000)
    with pytest.raises(ConfigError, match="admin_port none, not 8080"):
        ensure_ensemble_file(tmp_path / "e", 3, 0, 2181, 2888, 2000, admin_port=8080)
