"""``closedpaw image build|list|import|rm|inspect``: the image store from the command line.

Building shows a rich progress bar (debootstrap and apt take a minute or more on a fresh
machine); every other command is quick. Errors exit 2 with a one-line reason.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from closedpaw.cli.util import Parser, die, settings_from

if TYPE_CHECKING:
    from closedpaw.sandbox.images.store import ImageStore
    from closedpaw.settings import Settings

__all__ = ["register"]

HOST_IMAGE = "host"  # closedpaw.sandbox.images.store.HOST_IMAGE (a test keeps them equal)


def register(sub: Any) -> None:
    img = sub.add_parser("image", help="build, import, list, inspect and remove images")
    isub = img.add_subparsers(dest="image_command", metavar="ACTION", parser_class=Parser,
                              required=True)
    ib = isub.add_parser("build", help="build an image with debootstrap (python, node, shell, "
                         "multi); rebuilds it if it exists")
    ib.add_argument("name", metavar="NAME",
                    help="python, node, shell or multi")
    ib.add_argument("--rebuild-base", action="store_true",
                    help="bootstrap the cached Debian base again too")
    il = isub.add_parser("list", help="list images")
    il.add_argument("--json", action="store_true", help="print JSON")
    ii = isub.add_parser("import", help="import an OCI image layout (directory or tar), a "
                         "docker-archive tarball, or docker://REF (needs skopeo and a registry)")
    ii.add_argument("path", metavar="PATH", help="an OCI layout directory or tar, a "
                    "docker-archive tar, or docker://REF")
    ii.add_argument("--name", help="image name (default: derived from PATH)")
    ii.add_argument("--ref", help="which image of a multi-image layout or archive to take")
    irm = isub.add_parser("rm", help="remove an image")
    irm.add_argument("name", metavar="NAME")
    iin = isub.add_parser("inspect", help="show an image's manifest")
    iin.add_argument("name", metavar="NAME")
    iin.add_argument("--verify", action="store_true",
                     help="recompute the digest and compare it with the manifest")
    img.set_defaults(handler=main)


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _host_row(settings: Settings) -> dict[str, Any]:
    """The host image as listed: located, never built here. Listing only reads, so any user
    may list; the skeleton is built by the first sandbox that uses it (as root)."""
    from closedpaw.sandbox.images.host import locate_host_rootfs

    host = locate_host_rootfs(settings.data_dir)
    return {"name": HOST_IMAGE, "digest": f"host-{host.digest}", "created": "", "size": 0,
            "source": {"type": "host-bind", "usr": "/usr"}, "rootfs": str(host.path),
            "prepared": host.path.is_dir()}


def _source(img: dict[str, Any]) -> str:
    src = img.get("source", {})
    kind = src.get("type", "?")
    if kind == "debootstrap":
        return f"debootstrap {src.get('suite')} + {' '.join(src.get('packages', []))}"
    if kind in ("oci-layout", "docker-archive", "registry"):
        return f"{kind} {src.get('path') or src.get('ref', '')}"
    return str(kind)


def cmd_build(store: ImageStore, args: argparse.Namespace) -> int:
    """Build with a rich progress bar on a terminal; one line per step otherwise (logs)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from closedpaw.sandbox.images.debootstrap import BUILD_STEPS, build_image

    console = Console(stderr=True)
    if not console.is_terminal:
        last = [""]

        def log(step: str, detail: str) -> None:
            if step != last[0]:
                last[0] = step
                sys.stderr.write(f"closedpaw: building {args.name}: {step}: {detail}\n")
                sys.stderr.flush()

        img = build_image(store, args.name, rebuild_base=args.rebuild_base, progress=log)
    else:
        with Progress(TextColumn("[bold]{task.fields[step]:<8}"), BarColumn(),
                      TimeElapsedColumn(), TextColumn("{task.description}"),
                      console=console) as bar:
            task = bar.add_task("starting", total=len(BUILD_STEPS), step="")

            def progress(step: str, detail: str) -> None:
                done = BUILD_STEPS.index(step) if step in BUILD_STEPS else 0
                bar.update(task, completed=done, step=step, description=detail[:70])

            img = build_image(store, args.name, rebuild_base=args.rebuild_base,
                              progress=progress)
            bar.update(task, completed=len(BUILD_STEPS), step="done", description="")
    sys.stdout.write(f"built {img.name} {img.digest} ({_human(img.size)})\n")
    return 0


def cmd_import(store: ImageStore, args: argparse.Namespace) -> int:
    from closedpaw.sandbox.images.limits import ImportLimits
    from closedpaw.sandbox.images.oci import import_image
    from closedpaw.settings import Settings

    lim = Settings.from_env().image_import
    limits = ImportLimits(
        max_unpacked_bytes=lim.import_max_unpacked_bytes,
        max_file_bytes=lim.import_max_file_bytes, max_blob_bytes=lim.import_max_blob_bytes,
        max_header_bytes=lim.import_max_header_bytes, max_members=lim.import_max_members,
        max_layers=lim.import_max_layers, max_depth=lim.import_max_depth,
        deadline_s=lim.import_deadline_s)
    img = import_image(store, args.path, name=args.name, ref=args.ref, limits=limits)
    sys.stdout.write(f"imported {img.name} {img.digest} ({_human(img.size)})\n")
    return 0


def _rows(store: ImageStore, settings: Settings) -> list[dict[str, Any]]:
    return [_host_row(settings), *(i.to_dict() for i in store.list())]


def main(args: argparse.Namespace) -> int:
    from closedpaw.errors import ClosedPawError
    from closedpaw.sandbox.images.store import ImageStore

    settings = settings_from(args)
    store = ImageStore(settings.images)
    action = args.image_command
    try:
        if action == "build":
            return cmd_build(store, args)
        if action == "import":
            return cmd_import(store, args)
        if action == "rm":
            store.remove(args.name)
            sys.stdout.write(f"removed {args.name}\n")
            return 0
        if action == "list":
            rows = _rows(store, settings)
            if args.json:
                sys.stdout.write(json.dumps(rows, indent=2) + "\n")
                return 0
            from rich.console import Console
            from rich.table import Table

            t = Table("image", "digest", "size", "created", "source", box=None)
            for r in rows:
                t.add_row(r["name"], r["digest"][:19], _human(r["size"]) if r["size"] else "-",
                          r["created"] or "-", _source(r))
            Console(width=160).print(t)
            return 0
        if action == "inspect":
            if args.name == HOST_IMAGE:
                d = _host_row(settings)
            else:
                img = store.get(args.name)
                d = img.to_dict()
                if args.verify:
                    d["verified"] = store.verify(args.name)
            sys.stdout.write(json.dumps(d, indent=2) + "\n")
            return 0 if d.get("verified", True) else 1
    except ClosedPawError as e:
        die(e)
    except OSError as e:
        die(f"{e.filename or 'image store'}: {e.strerror or e}")
    except KeyboardInterrupt:
        sys.stderr.write("closedpaw: interrupted; nothing was installed\n")
        return 130
    die(f"unknown image action {action!r}")
