"""``closedpaw vault init|status|rotate`` and ``closedpaw secret set|list|rm|prune``: local
commands on the data directory's database (like ``token``); ``closedpaw vault unlock`` is the
one that talks to the running server (over the loopback API, as an admin). Values come from
stdin or a prompt, never from argv; a passphrase vault reads its passphrase from the first
line of stdin with ``--passphrase-stdin``, else from a prompt. Heavy imports stay inside the
handlers."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from closedpaw.cli.util import (
    EXIT_REFUSED,
    client_from,
    client_options,
    data_dir_option,
    settings_from,
)
from closedpaw.cli.util import die as _die

__all__ = ["LEVELS", "register"]

MIN_PASSPHRASE = 8
#: the vault's levels (a test keeps them equal to closedpaw.vault.Level)
LEVELS = ("public", "standard", "elevated", "admin")
_data_dir = data_dir_option


def _pass_stdin(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--passphrase-stdin", action="store_true",
                   help=f"read {what} from stdin (one per line) instead of a prompt")


def register(sub: Any) -> None:
    v = sub.add_parser("vault", help="create, inspect and rotate the secret vault (local)")
    vsub = v.add_subparsers(dest="vault_command", metavar="COMMAND", required=True)
    vi = vsub.add_parser("init", help="create the vault in the data directory's database",
                         description="Create the vault. Its master key comes from a key file "
                         "(created 0600 when missing; the server unlocks with it at start) or "
                         "from a passphrase (Argon2id; the server stays locked until "
                         "unlocked).")
    _data_dir(vi)
    how = vi.add_mutually_exclusive_group(required=True)
    how.add_argument("--key-file", type=Path, metavar="PATH",
                     help="key file (0600, created when it does not exist)")
    how.add_argument("--passphrase-stdin", action="store_true",
                     help="read the passphrase from stdin (first line)")
    vs = vsub.add_parser("status", help="initialised? locked? how it opens; never a value")
    _data_dir(vs)
    vs.add_argument("--json", action="store_true", help="print JSON")
    vr = vsub.add_parser("rotate", help="re-wrap every data key under a new master key "
                         "(atomic); a key-file vault gets a new key in the same file")
    _data_dir(vr)
    _pass_stdin(vr, "the current and then the new passphrase")
    for p in (vi, vs, vr):
        p.set_defaults(handler=cmd_vault)
    vu = vsub.add_parser("unlock", help="unlock the running server's passphrase vault (over "
                         "the API, as an admin)",
                         description="Send the vault passphrase to the running server, which "
                         "stays locked after a start with a passphrase vault. The passphrase "
                         "is read from stdin (first line) with --passphrase-stdin, else from "
                         "a prompt; never from the command line. A wrong one exits 1; the "
                         "server allows 5 attempts a minute per principal.")
    client_options(vu)
    vu.add_argument("--passphrase-stdin", action="store_true",
                    help="read the passphrase from stdin (first line)")
    vu.set_defaults(handler=cmd_vault_unlock)

    s = sub.add_parser("secret", help="store, list and remove secrets (local)")
    ssub = s.add_subparsers(dest="secret_command", metavar="COMMAND", required=True)
    ss = ssub.add_parser("set", help="store a new version of NAME; the value is read from "
                         "stdin or a prompt, never from the command line")
    ss.add_argument("name", metavar="NAME")
    ss.add_argument("stray", nargs="*", help=argparse.SUPPRESS)   # a value typed in argv
    ss.add_argument("--level", choices=LEVELS, default=None,
                    help="who may read it: public, standard (users), elevated (users, with "
                    "an admin's approval), admin (admins only); default: the current "
                    "version's level, standard for a new secret")
    _data_dir(ss)
    _pass_stdin(ss, "the vault passphrase (first line; the value follows)")
    sl = ssub.add_parser("list", help="names, levels, versions and times (never values)")
    _data_dir(sl)
    sl.add_argument("--json", action="store_true", help="print JSON")
    sr = ssub.add_parser("rm", help="remove every version of NAME")
    sr.add_argument("name", metavar="NAME")
    _data_dir(sr)
    sp = ssub.add_parser("prune", help="drop old versions, keeping the newest --keep")
    sp.add_argument("name", metavar="NAME", nargs="?", help="one secret (default: all)")
    sp.add_argument("--keep", type=int, default=1, metavar="N")
    _data_dir(sp)
    for p in (ss, sl, sr, sp):
        p.set_defaults(handler=cmd_secret)


# -- helpers ---------------------------------------------------------------------------
def _settings(args: argparse.Namespace) -> Any:
    return settings_from(args)


def _kdf(settings: Any) -> Any:
    """The Argon2id parameters for a new passphrase (the ``vault`` settings section)."""
    from closedpaw.vault import KdfParams

    return KdfParams(memory_kib=settings.vault.vault_kdf_memory_kib,
                     iterations=settings.vault.vault_kdf_iterations)


class _Stdin:
    """Lines of stdin, read once (the passphrase lines, then the value)."""

    def __init__(self) -> None:
        self._data: str | None = None
        self._pos = 0

    def _load(self) -> str:
        if self._data is None:
            raw = sys.stdin.buffer.read()
            try:
                self._data = raw.decode("utf-8")
            except UnicodeDecodeError:
                _die("stdin is not UTF-8")
        return self._data

    def line(self, what: str) -> str:
        data = self._load()
        end = data.find("\n", self._pos)
        if end < 0:
            if self._pos >= len(data):
                _die(f"stdin ended before {what}")
            end = len(data)
        out = data[self._pos:end].rstrip("\r")
        self._pos = end + 1
        return out

    def rest(self) -> str:
        data = self._load()[self._pos:]
        self._pos = len(self._load())
        if data.endswith("\r\n"):
            return data[:-2]
        return data[:-1] if data.endswith("\n") else data


def _prompt(what: str, *, confirm: bool = False) -> str:
    import getpass

    if not sys.stdin.isatty():
        _die(f"no terminal to ask for {what}: pass it on stdin (--passphrase-stdin)")
    first = getpass.getpass(f"{what}: ")
    if confirm and getpass.getpass(f"{what} (again): ") != first:
        _die(f"the two {what}s differ")
    return first


def _check_passphrase(p: str) -> str:
    if len(p) < MIN_PASSPHRASE:
        _die(f"the passphrase must have at least {MIN_PASSPHRASE} characters")
    return p


def _open(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """(settings, vault, audit log); the vault is not unlocked yet."""
    from closedpaw.audit import AuditLog
    from closedpaw.vault import Vault

    settings = _settings(args)
    return settings, Vault(settings.database_url), AuditLog(settings.audit_dir)


def _unlock(vault: Any, args: argparse.Namespace, stdin: _Stdin, settings: Any) -> None:
    st = vault.status()
    if not st["initialized"]:
        _die("no vault here: run 'closedpaw vault init (--key-file PATH | --passphrase-stdin)'",
             EXIT_REFUSED)
    if st["kdf"] == "keyfile":
        vault.unlock(key_file=settings.vault.vault_key_file)
    elif getattr(args, "passphrase_stdin", False):
        vault.unlock(stdin.line("the passphrase"))
    else:
        vault.unlock(_prompt("vault passphrase"))


def _by() -> str:
    import getpass

    return f"local:{getpass.getuser()}"


# -- commands --------------------------------------------------------------------------
def cmd_vault_unlock(args: argparse.Namespace) -> int:
    from closedpaw.errors import ApiRefused, ClientError

    passphrase = (_Stdin().line("the passphrase") if args.passphrase_stdin
                  else _prompt("vault passphrase"))
    if not passphrase:
        _die("an empty passphrase")
    with client_from(args) as c:
        try:
            st = c.unlock_vault(passphrase)
        except ApiRefused as e:
            _die(e, EXIT_REFUSED)
        except ClientError as e:
            _die(e)
    if args.json:
        sys.stdout.write(json.dumps(st) + "\n")
    else:
        sys.stdout.write(f"vault unlocked: {st.get('secrets')} secret(s)\n")
    return 0


def cmd_vault(args: argparse.Namespace) -> int:
    from closedpaw.audit import AuditEvent
    from closedpaw.errors import ClosedPawError

    settings, vault, audit = _open(args)
    stdin = _Stdin()
    try:
        if args.vault_command == "status":
            st = vault.status()
            st["database"] = settings.database_url.split("@")[-1]
            if args.json:
                sys.stdout.write(json.dumps(st) + "\n")
            elif not st["initialized"]:
                sys.stdout.write("no vault (closedpaw vault init)\n")
            else:
                how = (f"key file {st['key_file']}" if st["kdf"] == "keyfile"
                       else "passphrase (Argon2id)")
                sys.stdout.write(f"vault: {st['secrets']} secret(s), opened by {how}, "
                                 f"generation {st['generation']}\n")
            return 0
        if args.vault_command == "init":
            if args.key_file is not None:
                created = vault.init_key_file(args.key_file)
                audit.append(AuditEvent.VAULT_INITIALIZED, principal=_by(),
                             details={"kdf": "keyfile", "key_file": str(
                                 args.key_file.absolute()), "created": created})
                sys.stderr.write(f"closedpaw: vault created; its key is "
                                 f"{'in the new file' if created else 'read from'} "
                                 f"{args.key_file.absolute()} (keep a copy somewhere safe)\n")
            else:
                vault.init_passphrase(_check_passphrase(stdin.line("the passphrase")),
                                      _kdf(settings))
                audit.append(AuditEvent.VAULT_INITIALIZED, principal=_by(),
                             details={"kdf": "argon2id"})
                sys.stderr.write("closedpaw: vault created; it opens with the passphrase\n")
            return 0
        # rotate
        st = vault.status()
        if not st["initialized"]:
            _die("no vault here: run 'closedpaw vault init' first", EXIT_REFUSED)
        new: str | None = None
        if st["kdf"] == "argon2id":
            if args.passphrase_stdin:
                vault.unlock(stdin.line("the current passphrase"))
                new = _check_passphrase(stdin.line("the new passphrase"))
            else:
                vault.unlock(_prompt("current vault passphrase"))
                new = _check_passphrase(_prompt("new vault passphrase", confirm=True))
        else:
            vault.unlock(key_file=settings.vault.vault_key_file)
        n = vault.rotate(new_passphrase=new, params=_kdf(settings))
        audit.append(AuditEvent.VAULT_ROTATED, principal=_by(),
                     details={"kdf": st["kdf"], "rewrapped": n,
                              "generation": st["generation"] + 1})
        sys.stderr.write(f"closedpaw: rotated; {n} data key(s) re-wrapped under the new "
                         "master key\n")
        return 0
    except ClosedPawError as e:
        _die(str(e), EXIT_REFUSED)
    finally:
        vault.close()


def cmd_secret(args: argparse.Namespace) -> int:
    from closedpaw.audit import AuditEvent
    from closedpaw.errors import ClosedPawError

    settings, vault, audit = _open(args)
    stdin = _Stdin()
    try:
        sub = args.secret_command
        if sub == "list":
            rows = [i.to_dict() for i in vault.list()]
            if args.json:
                sys.stdout.write(json.dumps(rows, indent=2) + "\n")
            else:
                import datetime as dt

                for r in rows:
                    when = dt.datetime.fromtimestamp(r["updated_at"], dt.UTC)
                    sys.stdout.write(f"{r['name']:<32} {r['level']:<9} v{r['version']:<4} "
                                     f"{len(r['versions'])} kept  "
                                     f"{when:%Y-%m-%d %H:%M}Z\n")
            return 0
        if sub == "rm":
            n = vault.delete(args.name)
            audit.append(AuditEvent.SECRET_DELETED, principal=_by(),
                         details={"name": args.name, "versions": n})
            sys.stderr.write(f"closedpaw: removed {args.name!r} ({n} version(s))\n")
            return 0
        if sub == "prune":
            n = vault.prune(args.name, keep=args.keep)
            sys.stderr.write(f"closedpaw: removed {n} old version(s)\n")
            return 0
        # set
        if args.stray:
            _die("a value is never taken from the command line (it would stay in the shell "
                 "history and in the process list): give it on stdin or at the prompt; "
                 "consider that value exposed and change it")
        _unlock(vault, args, stdin, settings)
        if sys.stdin.isatty() and not args.passphrase_stdin:
            value = _prompt(f"value of {args.name}")
        else:
            value = stdin.rest()
        if not value:
            _die("the value is empty (give it on stdin or at the prompt)")
        info = vault.set(args.name, value, args.level, by=_by())
        audit.append(AuditEvent.SECRET_SET, principal=_by(),
                     details={"name": info.name, "level": str(info.level),
                              "version": info.version})
        sys.stderr.write(f"closedpaw: stored {info.name!r} version {info.version} "
                         f"({info.level})\n")
        return 0
    except ClosedPawError as e:
        _die(str(e), EXIT_REFUSED)
    finally:
        vault.close()

