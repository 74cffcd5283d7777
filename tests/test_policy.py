import datetime
from pathlib import Path

import pytest

from drtool.errors import EXIT_USAGE, PolicyError
from drtool.model import ClusterConfig, TableName
from drtool.config.policy import SCHEMA, ClusterPolicy, TablesPolicy, load_policy
from drtool.config.s3 import S3_KEYS
from drtool.repo.repository import KeySources

POLICIES = Path(__file__).resolve().parent.parent / "policies"
KEY = "drtool1" + "A" * 42 + "_"
DATA = "DRTOOL_TEST_PASSPHRASE"


def toml(*, top='name = "t"', primary='hosts = ["db1:28015"]', repository='url = "file:///srv/repo"',
         encryption=f'recipients = ["{KEY}"]', extra=""):
    parts = [top]
    for name, body in (("primary", primary), ("repository", repository), ("encryption", encryption)):
        if body is not None:
            parts.append(f"[{name}]\n{body}")
    return "\n".join(parts) + "\n" + extra + "\n"


def write(tmp_path, text, name="p.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def load(tmp_path, text=None, **kw):
    return load_policy(write(tmp_path, toml(**kw) if text is None else text))


def error_of(tmp_path, text=None, **kw):
    """Load and return the error message with the file prefix removed (checks the prefix)."""
    path = write(tmp_path, toml(**kw) if text is None else text)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert info.value.exit_code == EXIT_USAGE == 2
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    return message[len(path) + 2:]


# --- the shipped policies ---------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted(POLICIES.glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_policy_loads(path):
    policy = load_policy(path)
    assert policy.path == path and policy.name
    assert policy.encryption.recipients or policy.encryption.identity_file or policy.encryption.passphrase_env


def test_shipped_policies_exist():
    assert {"local.toml", "example.toml"} <= {p.name for p in POLICIES.glob("*.toml")}


def test_example_policy_mentions_every_key():
    text = (POLICIES / "example.toml").read_text()
    s3_text = (POLICIES / "s3-example.toml").read_text()  # one repository URL per file
    for section, keys in SCHEMA.items():
        if section:
            assert f"[{section}]" in text
        for key in keys:
            if section == "repository" and key in S3_KEYS:
                assert f"\n{key} = " in s3_text, key
                continue
            assert f"\n{key} = " in text or f"[{key}]" in text or f"[{section}.{key}." in text, key


def test_local_policy_matches_keygen_quickstart(monkeypatch):
    home = Path.home()
    policy = load_policy(POLICIES / "local.toml")
    assert policy.name == "local"
    assert policy.primary.hosts == ("127.0.0.1:28015",)
    assert policy.standby.hosts == ("127.0.0.1:28016",)
    assert policy.repository.scheme == "file"
    assert policy.repository.path == str(home / ".local/share/drtool/local-repo")
    assert policy.encryption.identity_file == home / ".local/share/drtool/local-identity.txt"
    assert policy.encryption.recipients == ()
    assert policy.tables.include == ("*.*",)
    assert policy.primary.config("primary").password == ""


# --- valid values ------------------------------------------------------------------------------
def test_minimal_policy_defaults(tmp_path):
    p = load(tmp_path)
    assert p.name == "t" and p.standby is None
    assert p.primary == ClusterPolicy(hosts=("db1:28015",))
    assert p.tables == TablesPolicy()
    assert p.throttle.bandwidth is None and p.throttle.primary_reads is None
    assert p.schedule.snapshot_every is None and p.schedule.snapshot_from == "primary"
    assert p.retention.keep_last is None and p.failover.app_users == ()


def test_feed_gather(tmp_path):
    assert load(tmp_path).replication.feed_gather == 0.1
    assert load(tmp_path, extra='[replication]\nfeed_gather = "0s"').replication.feed_gather == 0
    assert load(tmp_path, extra='[replication]\nfeed_gather = "0.2s"').replication.feed_gather == 0.2


def test_hosts_are_normalised(tmp_path):
    p = load(tmp_path, primary='hosts = ["db1", "db2:1234", "10.0.0.1", "[::1]", "[2001:db8::1]:29015"]')
    assert p.primary.hosts == ("db1:28015", "db2:1234", "10.0.0.1:28015", "[::1]:28015", "[2001:db8::1]:29015")


def test_config_reads_password_at_call_time(tmp_path, monkeypatch):
    p = load(tmp_path, primary='hosts = ["db1"]\nuser = "ops"\npassword_env = "DRTOOL_T_PW"\ntls_ca = "ca.pem"')
    monkeypatch.setenv("DRTOOL_T_PW", "s3cret")
    config = p.primary.config("primary")
    assert config == ClusterConfig(role="primary", hosts=("db1:28015",), user="ops", password="s3cret",
                                   tls_ca=str(tmp_path / "ca.pem"))
    assert "s3cret" not in repr(p) + repr(config)
    monkeypatch.setenv("DRTOOL_T_PW", "other")
    assert p.primary.config("standby").password == "other"


def test_key_sources_reads_passphrase_at_call_time(tmp_path, monkeypatch):
    p = load(tmp_path, encryption=f'passphrase_env = "{DATA}"\nwriter_key_file = "w.key"\nidentity_file = "~/id.txt"')
    monkeypatch.setenv(DATA, "correct horse")
    assert p.encryption.key_sources() == KeySources(
        recipients=(), identity_file=Path.home() / "id.txt", passphrase="correct horse",
        writer_key_file=tmp_path / "w.key")


def test_file_urls(tmp_path):
    assert load(tmp_path, repository='url = "file:///srv/x"').repository.path == "/srv/x"
    assert load(tmp_path, repository='url = "file://~/r"').repository.path == str(Path.home() / "r")
    rel = load(tmp_path, repository='url = "file://repos/../r"').repository
    assert (rel.scheme, rel.path, rel.host, rel.port) == ("file", str(tmp_path / "r"), None, None)


def test_sftp_urls(tmp_path):
    r = load(tmp_path, repository='url = "sftp://bk@vault:2222/srv/r"\nidentity_file = "id"\nknown_hosts = "~/kh"').repository
    assert (r.scheme, r.user, r.host, r.port, r.path) == ("sftp", "bk", "vault", 2222, "/srv/r")
    assert (r.identity_file, r.known_hosts) == (tmp_path / "id", Path.home() / "kh")
    r = load(tmp_path, repository='url = "sftp://[::1]/~/backups"').repository
    assert (r.user, r.host, r.port, r.path) == (None, "::1", 22, "backups")


def test_paths_relative_to_the_policy_directory(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    p = load_policy(write(tmp_path / "sub", toml(primary='hosts = ["h"]\ntls_ca = "../ca.pem"')))
    assert p.primary.tls_ca == tmp_path / "ca.pem"
    assert load_policy("sub/p.toml").path == Path("sub/p.toml")


def test_tables_selects(tmp_path):
    t = load(tmp_path, extra='[tables]\ninclude = ["app.*", "billing.invoices"]\nexclude = ["app.sessions"]').tables
    assert t == TablesPolicy(include=("app.*", "billing.invoices"), exclude=("app.sessions",))
    assert load(tmp_path, extra='[tables]\ninclude = ["*"]').tables.include == ("*",)
    assert t.selects(TableName("app", "users"))
    assert not t.selects(TableName("app", "sessions"))
    assert t.selects(TableName("billing", "invoices"))
    assert not t.selects(TableName("billing", "payments"))
    assert TablesPolicy().selects(TableName("x", "y"))
    assert not TablesPolicy().selects(TableName("rethinkdb", "users"))
    assert not TablesPolicy(include=("*",)).selects(TableName("rethinkdb", "jobs"))
    names = [TableName("billing", "payments"), TableName("app", "users"),
             TableName("app", "sessions"), TableName("billing", "invoices")]
    assert t.selected(names) == [TableName("app", "users"), TableName("billing", "invoices")]


def test_throttle_schedule_retention_failover(tmp_path):
    p = load(tmp_path, extra="""
[standby]
hosts = ["sb1"]
[throttle]
bandwidth = "10MiB/s:off"
primary_reads = "20000docs/s"
[schedule]
snapshot_every = "1h30m"
snapshot_from = "standby"
[retention]
keep_last = 0
keep_daily = 7
[failover]
app_users = ["app", "worker"]
""")
    assert p.throttle.bandwidth.limits_at(datetime.datetime(2024, 1, 1)) == (10 * 2**20, None)
    assert p.throttle.primary_reads == 20000.0
    assert (p.schedule.snapshot_every, p.schedule.snapshot_from) == (5400.0, "standby")
    assert (p.schedule.full_after_layers, p.schedule.full_after_delta) == (7, 0.3)  # defaults
    assert (p.retention.keep_last, p.retention.keep_daily, p.retention.keep_weekly) == (0, 7, None)
    assert p.failover.app_users == ("app", "worker")


# --- errors --------------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.toml")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert str(info.value) == f"{path}: no such policy file" and info.value.exit_code == 2


def test_directory_is_not_a_policy(tmp_path):
    with pytest.raises(PolicyError, match=r": cannot read policy file: "):
        load_policy(tmp_path)


def test_toml_syntax_errors(tmp_path):
    assert error_of(tmp_path, 'name = "t"\nprimary = \n') == "line 2: invalid TOML: Invalid value (column 11)"
    assert error_of(tmp_path, 'name = "t"\nname = "u"\n') == "line 2: invalid TOML: Cannot overwrite a value (column 11)"
    assert error_of(tmp_path, 'name = "t"\n[primary') == "line 2: invalid TOML: Expected ']' at the end of a table declaration at end of file"
    path = tmp_path / "bin.toml"
    path.write_bytes(b'name = "t"\n# \xff\n')
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert str(info.value) == f"{path}: line 2: invalid TOML: not UTF-8 text"


CASES = {
    # unknown keys
    "top-level typo": (dict(top='name = "t"\nnmae = "x"'), 'nmae: unknown key; did you mean "name"?'),
    "section typo": (dict(extra='[throttle]\nbandwith = "1MiB/s"'), 'throttle.bandwith: unknown key; did you mean "bandwidth"?'),
    "wrong section": (dict(extra='[schedule]\nbandwidth = "1MiB/s"'), 'schedule.bandwidth: unknown key; did you mean "throttle.bandwidth"?'),
    "top-level section key": (dict(top='name = "t"\nhosts = ["x"]'), 'hosts: unknown key; did you mean "primary.hosts"?'),
    "no suggestion": (dict(extra="[failover]\nzzz = 1"), "failover.zzz: unknown key (known keys: app_users, fence, max_lag, drain_timeout, users)"),
    # missing
    "no name": (dict(top=""), "name: required key is missing"),
    "no primary": (dict(primary=None), "primary.hosts: required key is missing"),
    "no hosts": (dict(primary='user = "a"'), "primary.hosts: required key is missing"),
    "repository without url": (dict(repository='identity_file = "k"'), "repository.url: required key is missing"),
    "no keys": (dict(encryption='writer_key_file = "w"'), "encryption: expected at least one of recipients, identity_file or passphrase_env, got none"),
    "empty encryption": (dict(encryption=""), "encryption: expected at least one of recipients, identity_file or passphrase_env, got none"),
    "standby without hosts": (dict(extra="[standby]\nuser = \"a\""), "standby.hosts: required key is missing"),
    # types and values
    "section not a table": (dict(primary=None, top='name = "t"\nprimary = "db1"'), 'primary: expected a table ([primary]), got "db1"'),
    "bad name": (dict(top='name = "my prod"'), "name: expected a name of letters, digits, '.', '_' or '-' (at most 64), got \"my prod\""),
    "hosts not a list": (dict(primary='hosts = "db1"'), 'primary.hosts: expected a list of strings, got "db1"'),
    "hosts empty": (dict(primary="hosts = []"), 'primary.hosts: expected at least one "host:port", got []'),
    "host not a string": (dict(primary="hosts = [1]"), "primary.hosts[0]: expected a non-empty string, got 1"),
    "port not int": (dict(primary='hosts = ["db1", "db2:x"]'), 'primary.hosts[1]: expected "host:port" (port 1-65535, default 28015; IPv6 in brackets), got "db2:x"'),
    "port out of range": (dict(primary='hosts = ["db1:70000"]'), 'primary.hosts[0]: expected "host:port" (port 1-65535, default 28015; IPv6 in brackets), got "db1:70000"'),
    "ipv6 without brackets": (dict(primary='hosts = ["::1"]'), 'primary.hosts[0]: expected "host:port" (port 1-65535, default 28015; IPv6 in brackets), got "::1"'),
    "boolean user": (dict(primary='hosts = ["h"]\nuser = true'), "primary.user: expected a non-empty string, got true"),
    "keep_last negative": (dict(extra="[retention]\nkeep_last = -1"), "retention.keep_last: expected an integer >= 0, got -1"),
    "keep_daily boolean": (dict(extra="[retention]\nkeep_daily = true"), "retention.keep_daily: expected an integer >= 0, got true"),
    "keep_weekly string": (dict(extra='[retention]\nkeep_weekly = "4"'), 'retention.keep_weekly: expected an integer >= 0, got "4"'),
    "app_users not list": (dict(extra='[failover]\napp_users = "app"'), 'failover.app_users: expected a list of strings, got "app"'),
    # repository
    "bad scheme": (dict(repository='url = "ftp://x"'), 'repository.url: expected a file://, sftp:// or s3:// URL, got "ftp://x"'),
    "empty file url": (dict(repository='url = "file://"'), 'repository.url: expected a file:// URL with a path like "file:///srv/drtool", got "file://"'),
    "sftp key with file url": (dict(repository='url = "file:///r"\nidentity_file = "id"'), 'repository.identity_file: expected no identity_file with a file:// repository (only sftp:// uses one), got "id"'),
    "known_hosts with file url": (dict(repository='url = "file:///r"\nknown_hosts = "kh"'), 'repository.known_hosts: expected no known_hosts with a file:// repository (only sftp:// uses one), got "kh"'),
    "sftp bad port": (dict(repository='url = "sftp://h:99999/r"'), 'repository.url: expected an sftp:// URL like "sftp://user@host:22/srv/drtool", got "sftp://h:99999/r"'),
    "sftp port zero": (dict(repository='url = "sftp://h:0/r"'), 'repository.url: expected an sftp:// URL like "sftp://user@host:22/srv/drtool", got "sftp://h:0/r"'),
    "sftp no path": (dict(repository='url = "sftp://h"'), 'repository.url: expected an sftp:// URL like "sftp://user@host:22/srv/drtool", got "sftp://h"'),
    "sftp no host": (dict(repository='url = "sftp:///r"'), 'repository.url: expected an sftp:// URL like "sftp://user@host:22/srv/drtool", got "sftp:///r"'),
    "url not a string": (dict(repository="url = 5"), "repository.url: expected a non-empty string, got 5"),
    # throttle and schedule
    "bad rate": (dict(extra='[throttle]\nbandwidth = "fast"'), 'throttle.bandwidth: expected a rate like "20MiB/s" or a timetable, got "fast"'),
    "rate not a string": (dict(extra="[throttle]\nbandwidth = 20"), 'throttle.bandwidth: expected a rate like "20MiB/s" or a timetable, got 20'),
    "bad timetable": (dict(extra='[throttle]\nbandwidth = "08:00,5MiB/s 25:00,off"'), 'throttle.bandwidth: expected a timetable like "08:00,5MiB/s 20:00,off Sat-00:00,off" (entry "25:00,off": time must be HH:MM from 00:00 to 23:59), got "08:00,5MiB/s 25:00,off"'),
    "bad doc rate": (dict(extra='[throttle]\nprimary_reads = "20000"'), 'throttle.primary_reads: expected a document rate like "20000docs/s", got "20000"'),
    "bad duration": (dict(extra='[schedule]\nsnapshot_every = "6"'), 'schedule.snapshot_every: expected a duration like "6h", "90m" or "1h30m", got "6"'),
    "duration as number": (dict(extra="[schedule]\nsnapshot_every = 6"), 'schedule.snapshot_every: expected a duration like "6h", "90m" or "1h30m", got 6'),
    "zero duration": (dict(extra='[schedule]\nsnapshot_every = "0s"'), 'schedule.snapshot_every: expected a positive duration like "6h", "90m" or "1h30m", got "0s"'),
    "bad snapshot_from": (dict(extra='[schedule]\nsnapshot_from = "replica"'), 'schedule.snapshot_from: expected "primary" or "standby", got "replica"'),
    "zero full_after_layers": (dict(extra="[schedule]\nfull_after_layers = 0"), "schedule.full_after_layers: expected an integer >= 1, got 0"),
    "text full_after_layers": (dict(extra='[schedule]\nfull_after_layers = "7"'), 'schedule.full_after_layers: expected an integer >= 1, got "7"'),
    "delta without %": (dict(extra='[schedule]\nfull_after_delta = "30"'), 'schedule.full_after_delta: expected a percentage like "30%", got "30"'),
    "zero delta": (dict(extra='[schedule]\nfull_after_delta = "0%"'), 'schedule.full_after_delta: expected a percentage like "30%", got "0%"'),
    "delta as number": (dict(extra="[schedule]\nfull_after_delta = 0.3"), 'schedule.full_after_delta: expected a percentage like "30%", got 0.3'),
    "standby without standby": (dict(extra='[schedule]\nsnapshot_from = "standby"'), 'schedule.snapshot_from: expected "primary" when there is no [standby] section, got "standby"'),
    # replication
    "lease_ttl too short": (dict(extra='[replication]\nlease_ttl = "2s"'), 'replication.lease_ttl: expected at least 3s (the lease is renewed every second), got "2s"'),
    "bad state_db": (dict(extra='[replication]\nstate_db = "rethinkdb"'), "replication.state_db: expected a database name of letters, digits and '_' (not rethinkdb), got \"rethinkdb\""),
    "feed_gather too long": (dict(extra='[replication]\nfeed_gather = "6s"'), 'replication.feed_gather: expected at most 5s (it adds to the lag), got "6s"'),
    "feed_gather as number": (dict(extra="[replication]\nfeed_gather = 0.05"), 'replication.feed_gather: expected a duration like "6h", "90m" or "1h30m", got 0.05'),
    # tables
    "pattern without dot": (dict(extra='[tables]\ninclude = ["app"]'), 'tables.include[0]: expected a "db.table" glob like "app.*", got "app"'),
    "exclude without dot": (dict(extra='[tables]\nexclude = ["x.y", "logs"]'), 'tables.exclude[1]: expected a "db.table" glob like "logs.*", got "logs"'),
    "include empty": (dict(extra="[tables]\ninclude = []"), 'tables.include: expected at least one "db.table" glob like "app.*", got []'),
    # encryption
    "recipient garbage": (dict(encryption='recipients = ["garbage"]'), 'encryption.recipients[0]: expected a public key from "drtool keygen" (drtool1 and 43 more characters), got "garbage"'),
    "recipient too short": (dict(encryption=f'recipients = ["{KEY}", "{KEY[:-1]}"]'), 'encryption.recipients[1]: expected a public key from "drtool keygen" (drtool1 and 43 more characters), got "drtool1AAAAA" (cut)'),
    "recipients not list": (dict(encryption=f'recipients = "{KEY}"'), f'encryption.recipients: expected a list of strings, got "{KEY}"'),
    "env name not a string": (dict(encryption="passphrase_env = true"), 'encryption.passphrase_env: expected an environment variable name like "DRTOOL_PASSPHRASE", got true'),
}


@pytest.mark.parametrize("kw, expected", CASES.values(), ids=CASES.keys())
def test_policy_errors(tmp_path, kw, expected):
    assert error_of(tmp_path, **kw) == expected


@pytest.mark.parametrize(
    "kw, secret, expected",
    [
        (dict(primary='hosts = ["h"]\npassword = "hunter2"'), "hunter2",
         "primary.password: secrets never go in a policy file: name an environment variable with password_env instead"),
        (dict(encryption='passphrase = "open sesame"'), "open sesame",
         "encryption.passphrase: secrets never go in a policy file: name an environment variable with passphrase_env instead"),
        (dict(repository='url = "file:///r"\nssh_password = "pw123"'), "pw123",
         "repository.ssh_password: secrets never go in a policy file: keep it in a file or an environment variable"),
        (dict(primary='hosts = ["h"]\npassword_env = "hunter2!"'), "hunter2!",
         'primary.password_env: expected an environment variable name like "DRTOOL_PRIMARY_PASSWORD", '
         "got a value that is not a variable name (not shown: is it the secret itself?)"),
        (dict(repository='url = "sftp://bk:pw123@h/r"'), "pw123",
         "repository.url: secrets never go in a policy file: authenticate with identity_file instead of a password in the URL"),
    ],
)
def test_literal_secrets_are_refused_without_echo(tmp_path, kw, secret, expected):
    message = error_of(tmp_path, **kw)
    assert message == expected and secret not in message


def test_unset_password_env_at_config_time(tmp_path, monkeypatch):
    monkeypatch.delenv("DRTOOL_PRIMARY_PASSWORD", raising=False)
    path = write(tmp_path, toml(primary='hosts = ["h"]\npassword_env = "DRTOOL_PRIMARY_PASSWORD"'))
    policy = load_policy(path)  # loading never reads the environment
    with pytest.raises(PolicyError) as info:
        policy.primary.config("primary")
    assert info.value.exit_code == 2
    assert str(info.value) == f"{path}: primary.password_env: environment variable DRTOOL_PRIMARY_PASSWORD is not set"


def test_unset_or_empty_passphrase_env_at_key_sources_time(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA, raising=False)
    path = write(tmp_path, toml(encryption=f'passphrase_env = "{DATA}"'))
    policy = load_policy(path)
    with pytest.raises(PolicyError) as info:
        policy.encryption.key_sources()
    assert info.value.exit_code == 2
    assert str(info.value) == f"{path}: encryption.passphrase_env: environment variable {DATA} is not set"
    monkeypatch.setenv(DATA, "")
    with pytest.raises(PolicyError, match=rf"^{path}: encryption.passphrase_env: environment variable {DATA} is empty$"):
        policy.encryption.key_sources()


ODD_VALUES = ['1', 'true', '1.5', '[]', '[1, "a"]', '{}', '{a = 1}', '"x"', '""', '1979-05-27', '07:32:00', '"::"', '"~"']


@pytest.mark.parametrize("section, key", [(s, k) for s, keys in SCHEMA.items() for k in keys], ids=str)
def test_only_policy_errors_escape(tmp_path, section, key):
    """Whatever value a key holds, loading succeeds or raises PolicyError, nothing else."""
    for value in ODD_VALUES:
        if section:
            text = toml(**{section: f"{key} = {value}"}) if section in ("primary", "repository", "encryption") \
                else toml(extra=f"[standby]\nhosts = ['h']\n[{section}]\n{key} = {value}" if section != "standby"
                          else f"[standby]\n{key} = {value}")
        else:
            text = toml(top=f'{key} = {value}' if key == "name" else f'name = "t"\n{key} = {value}')
        try:
            load_policy(write(tmp_path, text))
        except PolicyError:
            pass


def test_sections_are_required_by_the_commands_that_use_them(tmp_path):
    policy = load_policy(write(tmp_path, toml(repository=None, encryption=None)), command="snapshot")
    assert policy.repository is None and policy.encryption is None and policy.standby is None
    policy.require()  # nothing asked, nothing missing
    for section, hint in (("repository", 'add [repository] with url = "file:///path"'),
                          ("encryption", "add [encryption] with recipients, identity_file or passphrase_env"),
                          ("standby", "add [standby] with the standby cluster's hosts")):
        with pytest.raises(PolicyError) as info:
            policy.require(section)
        assert str(info.value).startswith(f"{tmp_path / 'p.toml'}: no [{section}] section: "
                                          f"'drtool snapshot' needs it ({hint}")
        assert info.value.exit_code == 2
    with pytest.raises(PolicyError, match=r"no \[encryption\] section: this command needs it"):
        load_policy(write(tmp_path, toml(encryption=None))).require("repository", "encryption")
