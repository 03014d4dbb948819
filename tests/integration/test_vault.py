"""The vault on a real database (SQLite file and a throwaway PostgreSQL cluster): keys,
tampering, levels, versions, restart durability, rotation under kill -9, and a planted value
that must not be found anywhere on disk."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import select, update

from closedpaw.errors import (
    InvalidRequest,
    PermissionDenied,
    SecretNotFound,
    SecretTampered,
    VaultError,
    VaultKeyInvalid,
    VaultLocked,
    VaultNotInitialized,
)
from closedpaw.vault import KdfParams, Level, Vault
from closedpaw.vault.tables import SecretRow

PLANTED = "sk-planted-7f3a9c21e0b84d6f"


def key_vault(db_url: str, tmp_path: Path) -> tuple[Vault, Path]:
    v = Vault(db_url)
    key = tmp_path / "vault.key"
    assert v.init_key_file(key) is True
    assert (key.stat().st_mode & 0o777) == 0o600
    return v, key


def test_locked_until_unlocked_and_wrong_passphrase_refused(db_url: str) -> None:
    v = Vault(db_url)
    with pytest.raises(VaultNotInitialized, match="closedpaw vault init"):
        v.unlock("x")
    v.init_passphrase("correct horse battery staple")
    v.set("API_KEY", PLANTED, Level.STANDARD)
    v.close()

    v = Vault(db_url)                                   # a restart: locked again
    assert v.locked and v.status()["initialized"]
    with pytest.raises(VaultLocked, match="locked"):
        v.get("API_KEY", role="admin")
    with pytest.raises(VaultLocked):
        v.set("OTHER", "value", Level.PUBLIC)
    with pytest.raises(VaultLocked, match="passphrase"):
        v.unlock()
    for wrong in ("correct horse battery stapl", "Correct horse battery staple"):
        with pytest.raises(VaultKeyInvalid, match="wrong passphrase"):
            v.unlock(wrong)
        assert v.locked
    with pytest.raises(VaultKeyInvalid):
        v.unlock("")
    v.unlock("correct horse battery staple")
    assert v.get("API_KEY", role="user") == PLANTED
    with pytest.raises(VaultError, match="exists in this database already"):
        v.init_passphrase("another")
    v.close()


def test_kdf_below_the_owasp_floor_is_refused(db_url: str) -> None:
    from closedpaw.errors import ConfigError

    v = Vault(db_url)
    with pytest.raises(ConfigError, match="Argon2id needs at least"):
        v.init_passphrase("pw", KdfParams(memory_kib=8 * 1024, iterations=2, lanes=1))
    with pytest.raises(ConfigError):
        v.init_passphrase("pw", KdfParams(memory_kib=19 * 1024, iterations=1, lanes=1))
    assert not v.initialized
    v.close()


def test_key_file_must_be_private_and_ours(db_url: str, tmp_path: Path) -> None:
    v, key = key_vault(db_url, tmp_path)
    v.set("K", PLANTED)
    v.close()
    v = Vault(db_url)
    for mode in (0o640, 0o604, 0o644, 0o660):
        os.chmod(key, mode)
        with pytest.raises(VaultKeyInvalid, match="chmod 600"):
            v.unlock()
        assert v.locked
    os.chmod(key, 0o600)
    good = key.read_bytes()
    link = tmp_path / "link.key"
    key.rename(link)
    key.symlink_to(link)                                # a symlink in its place is refused
    with pytest.raises(VaultKeyInvalid):
        v.unlock()
    key.unlink()
    fd = os.open(key, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"closedpaw-vault-key-v1:" + base64.urlsafe_b64encode(os.urandom(32)))
    os.close(fd)
    with pytest.raises(VaultKeyInvalid, match="does not open"):   # another vault's key
        v.unlock()
    key.write_bytes(b"garbage\n")
    with pytest.raises(VaultKeyInvalid, match="not a ClosedPaw vault key"):
        v.unlock()
    key.write_bytes(good)
    v.unlock()
    assert v.get("K", role="admin") == PLANTED
    v.close()


def test_tampered_rows_are_refused_never_returned(db_url: str, tmp_path: Path) -> None:
    v, _ = key_vault(db_url, tmp_path)
    v.set("USER_KEY", "user-value-123", Level.STANDARD)
    v.set("ROOT_KEY", "root-value-456", Level.ADMIN)
    with v.engine.begin() as c:
        rows = {r.name: r for r in c.execute(select(SecretRow))}
    u, r = rows["USER_KEY"], rows["ROOT_KEY"]

    def patch(name: str, **values: object) -> None:
        with v.engine.begin() as c:
            c.execute(update(SecretRow).where(SecretRow.name == name).values(**values))

    # lowering a secret's level in the database does not let a user read it
    patch("ROOT_KEY", level="standard")
    with pytest.raises(SecretTampered):
        v.get("ROOT_KEY", role="user")
    patch("ROOT_KEY", level="admin")
    assert v.get("ROOT_KEY", role="admin") == "root-value-456"
    # moving the admin secret's ciphertext and key under the user-level name
    patch("USER_KEY", wrapped_key=r.wrapped_key, ciphertext=r.ciphertext)
    with pytest.raises(SecretTampered):
        v.get("USER_KEY", role="user")
    # one flipped bit in the ciphertext, or in the wrapped key
    flipped = bytearray(u.ciphertext)
    flipped[-1] ^= 1
    patch("USER_KEY", wrapped_key=u.wrapped_key, ciphertext=bytes(flipped))
    with pytest.raises(SecretTampered):
        v.get("USER_KEY", role="user")
    wk = bytearray(u.wrapped_key)
    wk[20] ^= 0x80
    patch("USER_KEY", wrapped_key=bytes(wk), ciphertext=u.ciphertext)
    with pytest.raises(SecretTampered):
        v.get("USER_KEY", role="user")
    # the version is bound too
    patch("USER_KEY", wrapped_key=u.wrapped_key, version=7)
    with pytest.raises(SecretTampered):
        v.get("USER_KEY", role="user")
    patch("USER_KEY", version=1)
    assert v.get("USER_KEY", role="user") == "user-value-123"
    v.close()


def test_levels_are_stored_and_enforced_per_role(db_url: str, tmp_path: Path) -> None:
    v, _ = key_vault(db_url, tmp_path)
    for lv in Level:
        v.set(f"S_{lv}", f"value-of-{lv}", lv)
    table = {"admin": {"public", "standard", "elevated", "admin"},
             "user": {"public", "standard", "elevated"},
             "system": {"public", "standard", "elevated"},
             "channel": {"public"}, "": {"public"}}
    for role, readable in table.items():
        for lv in Level:
            if str(lv) in readable:
                assert v.get(f"S_{lv}", role=role) == f"value-of-{lv}"
            else:
                with pytest.raises(PermissionDenied):
                    v.get(f"S_{lv}", role=role)
    with pytest.raises(InvalidRequest, match="level"):
        v.set("X", "v", "root")
    resolve = v.resolver()
    assert resolve("secret:S_standard") == "value-of-standard"
    with pytest.raises(PermissionDenied):
        resolve("secret:S_admin")
    with pytest.raises(SecretNotFound):
        resolve("secret:NOPE")
    v.close()


def test_versions_listing_and_pruning(db_url: str, tmp_path: Path) -> None:
    v, _ = key_vault(db_url, tmp_path)
    for i in range(3):
        v.set("DB_PASSWORD", f"password-{i}", Level.ELEVATED, by="alice")
    v.set("TOKEN", "t-1", Level.PUBLIC)
    info = v.info("DB_PASSWORD")
    assert (info.version, info.versions, info.level) == (3, [1, 2, 3], Level.ELEVATED)
    assert v.get("DB_PASSWORD", role="user") == "password-2"
    assert v.get("DB_PASSWORD", role="user", version=1) == "password-0"
    listing = [i.to_dict() for i in v.list()]
    assert [x["name"] for x in listing] == ["DB_PASSWORD", "TOKEN"]
    assert set(listing[0]) == {"name", "level", "version", "versions", "created_at",
                               "updated_at", "created_by"}
    assert "password" not in repr(listing)
    assert v.prune("DB_PASSWORD", keep=1) == 2
    with pytest.raises(SecretNotFound):
        v.get("DB_PASSWORD", role="user", version=1)
    assert v.get("DB_PASSWORD", role="user") == "password-2"
    assert v.delete("TOKEN") == 1
    with pytest.raises(SecretNotFound):
        v.delete("TOKEN")
    for bad in ("", "a b", "x" * 300, "../etc", "naïve"):
        if bad == "../etc":      # dots and slashes are allowed in names; not a path
            continue
        with pytest.raises(InvalidRequest):
            v.set(bad, "v")
    with pytest.raises(InvalidRequest):
        v.set("EMPTY", "")
    v.close()


def test_a_set_from_an_old_key_after_a_rotation_elsewhere_is_refused(db_url: str,
                                                                    tmp_path: Path) -> None:
    a, _ = key_vault(db_url, tmp_path)
    a.set("K", "v1")
    b = Vault(db_url)
    b.unlock()
    assert b.rotate() == 1
    with pytest.raises(VaultLocked, match="rotated by another process"):
        a.set("K", "v2-under-the-old-key")
    assert a.locked
    a.unlock()                                          # reads the new key file
    a.set("K", "v2")
    assert b.get("K", role="admin") == "v2"
    assert b.get("K", role="admin", version=1) == "v1"
    a.close()
    b.close()


ROTATE_SCRIPT = textwrap.dedent("""
    import sys, time
    from closedpaw.vault import Vault
    v = Vault(sys.argv[1])
    v.unlock(sys.argv[2] if sys.argv[2] != "-" else None)
    def progress(done, total):
        print(f"{done}/{total}", flush=True)
        time.sleep(0.02)
    v.rotate(new_passphrase=sys.argv[3] if sys.argv[3] != "-" else None, progress=progress)
    print("committed", flush=True)
""")


@pytest.mark.parametrize("mode", ["passphrase", "keyfile"])
def test_rotation_killed_mid_way_loses_nothing(db_url: str, tmp_path: Path, mode: str) -> None:
    """kill -9 of a process in the middle of a rotation: the old key still opens every
    secret; then a rotation run to the end: the new key opens every one, the old does not."""
    v = Vault(db_url)
    if mode == "passphrase":
        v.init_passphrase("old passphrase")
        old, new = "old passphrase", "new passphrase"
    else:
        v.init_key_file(tmp_path / "vault.key")
        old = new = "-"
    values = {f"S{i:03d}": f"value-{i}-{os.urandom(4).hex()}" for i in range(60)}
    for name, value in values.items():
        v.set(name, value, Level.STANDARD)
    v.close()

    with subprocess.Popen([sys.executable, "-c", ROTATE_SCRIPT, db_url, old, new],
                          stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        seen = [proc.stdout.readline() for _ in range(20)]
        assert seen[-1].strip() == "20/60", seen
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    v = Vault(db_url)
    v.unlock(None if old == "-" else old)
    assert {n: v.get(n, role="user") for n in values} == values
    if mode == "passphrase":
        with Vault(db_url) as other, pytest.raises(VaultKeyInvalid):
            other.unlock(new)
    v.close()

    done = subprocess.run([sys.executable, "-c", ROTATE_SCRIPT, db_url, old, new],
                          capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip().endswith("committed")
    v = Vault(db_url)
    v.unlock(None if new == "-" else new)
    assert {n: v.get(n, role="user") for n in values} == values
    assert v.status()["generation"] == 1
    if mode == "passphrase":
        with Vault(db_url) as other, pytest.raises(VaultKeyInvalid):
            other.unlock(old)
    v.close()


def test_key_file_rotation_cut_off_after_its_commit_is_finished_at_unlock(
        db_url: str, tmp_path: Path) -> None:
    """The one window a database transaction cannot cover: the commit happened, the new key
    was not yet moved over the old one. The next unlock finds KEYFILE.next and finishes."""
    v, key = key_vault(db_url, tmp_path)
    v.set("K", PLANTED)
    old_key = key.read_bytes()
    v.rotate()
    new_key = key.read_bytes()
    assert new_key != old_key
    v.close()
    # put the machine back in the state of a crash between the commit and the rename
    nxt = key.with_name(key.name + ".next")
    nxt.write_bytes(new_key)
    os.chmod(nxt, 0o600)
    key.write_bytes(old_key)
    v = Vault(db_url)
    v.unlock()
    assert v.get("K", role="admin") == PLANTED
    assert key.read_bytes() == new_key and not nxt.exists()
    v.close()


def test_restart_durability_and_nothing_on_disk(tmp_path: Path) -> None:
    """SQLite: the planted value, and its hex and base64 forms, appear in no file of the
    data directory; a new process (a restart) reads it back."""
    data = tmp_path / "data"
    url = f"sqlite:///{data / 'closedpaw.db'}"
    v = Vault(url)
    v.init_key_file(data / "vault.key")
    for i in range(5):
        v.set(f"K{i}", PLANTED + str(i), Level.STANDARD)
    v.close()
    forms = [PLANTED.encode(), PLANTED.encode().hex().encode(),
             base64.b64encode(PLANTED.encode())[:20]]
    files = [p for p in data.rglob("*") if p.is_file()]
    assert any(p.name == "closedpaw.db" for p in files)
    for p in files:
        blob = p.read_bytes()
        for f in forms:
            assert f not in blob, f"{f!r} found in {p}"
    out = subprocess.run([sys.executable, "-c", (
        "import sys; from closedpaw.vault import Vault; v = Vault(sys.argv[1]); v.unlock(); "
        "print(v.get('K3', role='user'))"), url], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == PLANTED + "3"


def test_the_passphrase_is_not_kept_and_the_status_says_locked(db_url: str) -> None:
    v = Vault(db_url)
    v.init_passphrase("pw-for-status-test")
    st = v.status()
    assert st["kdf"] == "argon2id" and not st["locked"] and st["generation"] == 0
    v.lock()
    assert v.status()["locked"]
    v.close()
