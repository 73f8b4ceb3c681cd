"""hotload.toml: environments, defaults, where each setting comes from, and one-line errors with file and line."""

import json
import os
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hotload.cli.config import ConfigError, ProjectConfig

EXAMPLES = int(os.environ.get("HOTLOAD_FUZZ_EXAMPLES", "200"))

GOOD = """\
[defaults]
poll_timeout = 300

[env.beta]
targets = ["deploy@beta:/srv/app/staging"]

[env.prod]
targets = ["deploy@app1:/srv/app/staging", "deploy@app2:/srv/app/staging", "deploy@app3:/srv/app/staging"]
canary = 1
parallel = 2

[env.prod.health]
url = "http://127.0.0.1:8080/app/ping"
body = "pong"
"""


def write(folder, text):
    path = folder / "hotload.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_settings_resolve_with_their_origin(tmp_path):
    config = ProjectConfig.load(write(tmp_path, GOOD))
    prod = config.environment("prod")
    assert prod.targets == ["deploy@app1:/srv/app/staging", "deploy@app2:/srv/app/staging", "deploy@app3:/srv/app/staging"]
    assert (prod.value("parallel"), prod.origin("parallel")) == (2, "hotload.toml:10")
    assert (prod.value("poll_timeout"), prod.origin("poll_timeout")) == (300, "hotload.toml:2 (defaults)")
    assert prod.health == {"url": "http://127.0.0.1:8080/app/ping", "status": 200, "body": "pong", "timeout": 10}
    assert prod.origin("health.status") == "default" and prod.origin("health.body") == "hotload.toml:14"
    beta = config.environment("beta")
    assert (beta.value("canary"), beta.origin("canary")) == (1, "default")
    assert beta.health is None
    assert [env["name"] for env in config.to_json()["environments"]] == ["beta", "prod"]


def test_found_from_a_subfolder_as_git_does(tmp_path):
    write(tmp_path, GOOD)
    deep = tmp_path / "src" / "pkg"
    deep.mkdir(parents=True)
    assert ProjectConfig.find(deep).path == tmp_path / "hotload.toml"
    assert ProjectConfig.find(tmp_path.parent.parent) is None or ProjectConfig.find(tmp_path.parent.parent).path != tmp_path


@pytest.mark.parametrize("text, expected", [
    ("[env.prod]\ntargets = [\"a:/s\"]\ncanry = 1\n", r"hotload.toml:3: env.prod.canry: unknown key"),
    ("[env.prod]\ntargets = [\"a:/s\"]\ncanary = \"two\"\n", r"hotload.toml:3: env.prod.canary: must be a whole number"),
    ("[env.prod]\ntargets = [\"a:/s\"]\ncanary = 2\n", r"hotload.toml:3: env.prod.canary: is 2, more than the 1 target"),
    ("[env.prod]\ntargets = []\n", r"hotload.toml:2: env.prod.targets: must be a non-empty list"),
    ("[env.prod]\ntargets = [\"a:/s\", \"a:/s\"]\n", r"hotload.toml:2: env.prod.targets: names a target twice"),
    ("[env.prod]\ntargets = [\"ftp://x/y\"]\n", r"hotload.toml:2: env.prod.targets: target 'ftp://x/y'"),
    ("[env.prod]\ncanary = 1\n", r"hotload.toml:1: env.prod: has no targets"),
    ("[env.prod]\ntargets = [\"a:/s\"]\n[env.prod.health]\nstatus = 200\n", r"hotload.toml:3: env.prod.health: has no url"),
    ("[env.prod]\ntargets = [\"a:/s\"]\n[env.prod.health]\nurl = \"gopher://x\"\n", r"hotload.toml:4: env.prod.health.url: must be an http"),
    ("[defaults]\nparallel = 0\n[env.prod]\ntargets = [\"a:/s\"]\n", r"hotload.toml:2: defaults.parallel: must be a whole number from 1 to 64"),
    ("[envs.prod]\n", r"hotload.toml:1: envs: unknown key"),
    ("[env.prod\n", r"hotload.toml:1: not valid TOML"),
    ("", r"hotload.toml: env: no environment"),
])
def test_a_bad_file_is_one_line_with_file_line_and_key(tmp_path, text, expected):
    with pytest.raises(ConfigError, match=expected) as caught:
        ProjectConfig.load(write(tmp_path, text))
    assert "\n" not in str(caught.value)
    assert caught.value.exit_code == 2


def test_an_unknown_environment_names_the_known_ones(tmp_path):
    config = ProjectConfig.load(write(tmp_path, GOOD))
    with pytest.raises(ConfigError, match=r"no environment 'staging' \(environments: beta, prod\)"):
        config.environment("staging")


def test_unreadable_and_non_utf8_files(tmp_path):
    path = tmp_path / "hotload.toml"
    path.write_bytes(b"[env.prod]\ntargets = [\"\xff\"]\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        ProjectConfig.load(path)
    with pytest.raises(ConfigError, match="cannot read"):
        ProjectConfig.load(tmp_path / "missing" / "hotload.toml")


@pytest.mark.fuzz
@settings(max_examples=EXAMPLES, deadline=None)
@given(st.text(max_size=300))
def test_fuzz_any_text_is_a_config_or_one_config_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "hotload.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))  # a lone surrogate makes it invalid UTF-8
    try:
        ProjectConfig.load(path)
    except ConfigError as error:
        assert "\n" not in str(error)


@pytest.mark.fuzz
@settings(max_examples=EXAMPLES, deadline=None)
@given(
    key=st.sampled_from(["targets", "canary", "parallel", "poll_timeout", "health", "other"]),
    value=st.one_of(st.integers(-5, 2000), st.floats(allow_nan=True), st.booleans(), st.text(max_size=20),
                    st.lists(st.text(max_size=10), max_size=3)),
)
def test_fuzz_any_value_of_any_key_is_used_or_refused_naming_the_key(tmp_path_factory, key, value):
    literal = json.dumps(value) if not (isinstance(value, float) and value != value) else "nan"
    path = tmp_path_factory.mktemp("fuzz") / "hotload.toml"
    path.write_text(f"[env.prod]\ntargets = [\"a:/s\"]\n{key} = {literal}\n" if key != "targets"
                    else f"[env.prod]\ntargets = {literal}\n")
    try:
        ProjectConfig.load(path)
    except ConfigError as error:
        assert f"env.prod.{key}" in str(error) or "not valid TOML" in str(error) or "env.prod" in str(error)


def test_the_config_command_shows_settings_and_origins(tmp_path):
    from conftest import run_hotload

    write(tmp_path, GOOD)
    (tmp_path / "deep").mkdir()
    shown = run_hotload("config", cwd=tmp_path / "deep")
    assert shown.returncode == 0, shown.stderr
    assert "env prod" in shown.stdout and "hotload.toml:10" in shown.stdout and "(defaults)" in shown.stdout
    as_json = json.loads(run_hotload("config", "--env", "beta", "--json", cwd=tmp_path).stdout)
    assert [env["name"] for env in as_json["environments"]] == ["beta"]
    assert as_json["environments"][0]["settings"]["canary"] == {"value": 1, "from": "default"}
    missing = run_hotload("config", "--env", "nope", cwd=tmp_path)
    assert missing.returncode == 2 and "no environment 'nope'" in missing.stderr and "Traceback" not in missing.stderr
    write(tmp_path, "[env.prod]\ntargets = [\"a:/s\"]\nparalel = 2\n")
    bad = run_hotload("config", cwd=tmp_path)
    assert bad.returncode == 2 and "hotload.toml:3: env.prod.paralel: unknown key" in bad.stderr
    nowhere = tmp_path / "nowhere"
    nowhere.mkdir()
    (tmp_path / "hotload.toml").unlink()
    none = run_hotload("config", cwd=nowhere)
    assert none.returncode == 2 and "no hotload.toml" in none.stderr
