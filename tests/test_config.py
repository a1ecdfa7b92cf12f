"""Settings from [tool.snapd] and SNAPD_* variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from snapd import config


def write(tmp_path: Path, table: str) -> str:
    (tmp_path / "pyproject.toml").write_text(f"[tool.snapd]\n{table}\n")
    return str(tmp_path)


def test_defaults_without_a_pyproject(tmp_path: Path) -> None:
    assert config.load(str(tmp_path), {}) == config.Settings()


def test_pyproject_values(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        'after_fork = ["app.testing:reconnect"]\nenv-ignore = ["CI_JOB_*"]\npoll = true\n'
        "max_chains = 5\nidle_timeout = 600\n",
    )
    settings = config.load(root, {})
    assert settings.after_fork == ("app.testing:reconnect",)
    assert settings.env_ignore == ("CI_JOB_*",)
    assert settings.poll is True
    assert settings.max_chains == 5
    assert settings.idle_timeout == 600.0


def test_environment_overrides_pyproject(tmp_path: Path) -> None:
    root = write(tmp_path, "poll = true\nmax_chains = 5\n")
    env = {"SNAPD_POLL": "0", "SNAPD_MAX_CHAINS": "2", "SNAPD_ENV_IGNORE": "A, B_*"}
    settings = config.load(root, env)
    assert (settings.poll, settings.max_chains, settings.env_ignore) == (False, 2, ("A", "B_*"))


@pytest.mark.parametrize(
    "table", ['poll = "yes"', "max_chains = [1]", 'after_fork = "app:hook"', "env_ignore = [1]"]
)
def test_wrong_kinds_are_errors_that_name_the_setting(tmp_path: Path, table: str) -> None:
    with pytest.raises(config.ConfigError, match=table.split(" ")[0]):
        config.load(write(tmp_path, table), {})


def test_unknown_settings_are_kept_apart(tmp_path: Path) -> None:
    settings = config.load(write(tmp_path, "pol = true"), {})
    assert settings.extra == {"pol": True}
    assert settings.poll is False


def test_broken_toml_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.snapd\n")
    with pytest.raises(config.ConfigError, match=r"pyproject\.toml"):
        config.load(str(tmp_path), {})
