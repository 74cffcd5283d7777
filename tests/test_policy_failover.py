"""The [failover] policy section: keys, defaults, password sources and every bad value."""

import pytest

from drtool.errors import PolicyError
from drtool.config.failover import FailoverPolicy, PasswordSource

from tests.test_policy import error_of, load


def test_defaults(tmp_path):
    f = load(tmp_path).failover
    assert (f.app_users, f.fence, f.max_lag, f.drain_timeout, f.passwords) == (
        (), "permissions", 5.0, 30.0, {})
    assert f.password("app") is None


def test_every_key(tmp_path, monkeypatch):
    (tmp_path / "pw").write_text("s3cret-from-file\nignored\n")
    f = load(tmp_path, extra="""
[failover]
app_users = ["app", "admin"]
fence = "write-hook"
max_lag = "2s"
drain_timeout = "1m"
[failover.users.app]
password_env = "APP_PW_TEST"
[failover.users.reports]
password_file = "pw"
""").failover
    assert (f.app_users, f.fence, f.max_lag, f.drain_timeout) == (("app", "admin"), "write-hook", 2.0, 60.0)
    assert f.passwords == {"app": PasswordSource(env="APP_PW_TEST"),
                           "reports": PasswordSource(file=tmp_path / "pw")}
    monkeypatch.setenv("APP_PW_TEST", "from-env")
    assert (f.password("app"), f.password("reports"), f.password("other")) == (
        "from-env", "s3cret-from-file", None)


def test_password_sources_fail_in_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("APP_PW_TEST", raising=False)
    (tmp_path / "empty").write_text("")
    f = load(tmp_path, extra="""
[failover.users.app]
password_env = "APP_PW_TEST"
[failover.users.gone]
password_file = "missing"
[failover.users.blank]
password_file = "empty"
""").failover
    path = tmp_path / "p.toml"
    for user, expected in (
        ("app", f"{path}: failover.users.app.password_env: environment variable APP_PW_TEST is not set"),
        ("gone", f"{path}: failover.users.gone.password_file: cannot read {tmp_path / 'missing'}: No such file or directory"),
        ("blank", f"{path}: failover.users.blank.password_file: {tmp_path / 'empty'} is empty"),
    ):
        with pytest.raises(PolicyError) as info:
            f.password(user)
        assert (str(info.value), info.value.exit_code) == (expected, 2)


CASES = {
    "admin with permissions": ('[failover]\napp_users = ["app", "admin"]',
                               'failover.app_users: "admin" cannot be fenced by permissions (its permissions cannot be changed): set failover.fence = "write-hook" or give the application its own user'),
    "bad fence": ('[failover]\nfence = "firewall"', 'failover.fence: expected "permissions" or "write-hook", got "firewall"'),
    "bad max_lag": ('[failover]\nmax_lag = "5"', 'failover.max_lag: expected a duration like "6h", "90m" or "1h30m", got "5"'),
    "zero drain": ('[failover]\ndrain_timeout = "0s"', 'failover.drain_timeout: expected a positive duration like "6h", "90m" or "1h30m", got "0s"'),
    "users not a table": ('[failover]\nusers = ["app"]', 'failover.users: expected a table ([failover.users.NAME] with password_env or password_file), got ["app"]'),
    "literal password": ('[failover.users]\napp = "hunter2"', "failover.users.app: expected a table with password_env or password_file (never the password itself)"),
    "password key": ('[failover.users.app]\npassword = "hunter2"', "failover.users.app.password: secrets never go in a policy file: name an environment variable with password_env instead"),
    "both sources": ('[failover.users.app]\npassword_env = "A"\npassword_file = "f"', "failover.users.app: expected exactly one of password_env or password_file"),
    "no source": ("[failover.users.app]", "failover.users.app: expected exactly one of password_env or password_file"),
    "env value not a name": ('[failover.users.app]\npassword_env = "hunter2!"', 'failover.users.app.password_env: expected an environment variable name like "APP_DB_PASSWORD", got a value that is not a variable name (not shown: is it the secret itself?)'),
    "typo": ('[failover]\nfenc = "permissions"', 'failover.fenc: unknown key; did you mean "fence"?'),
    "user key typo": ('[failover.users.app]\npasword_env = "A"', 'failover.users.app.pasword_env: unknown key; did you mean "password_env"?'),
}


@pytest.mark.parametrize("extra, expected", CASES.values(), ids=CASES.keys())
def test_bad_values(tmp_path, extra, expected):
    message = error_of(tmp_path, extra=extra)
    assert message == expected and "hunter2" not in message


def test_policy_object_is_frozen():
    with pytest.raises(AttributeError):
        FailoverPolicy().fence = "write-hook"  # type: ignore[misc]
