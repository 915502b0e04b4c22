"""Writing outputs without leaving anything half-written behind, and without touching inputs.

Every file and folder this package writes goes through here: a temporary sibling first (named
``.<name>.tmp-<pid>-<random>``), then one ``os.replace``. Temporaries get the permissions the
user's umask gives new files (``mkstemp``/``mkdtemp`` alone would give 0600/0700), and those
left behind by a killed run are removed by the next run that writes to the same place.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sam2prune.errors import InputError, OutputError

_TEMP_MARKERS = (".tmp-", ".old-")


def _umask() -> int:
    # os.umask can only be read by setting it; set it straight back
    current = os.umask(0o022)
    os.umask(current)
    return current


def _temp_prefix(path: Path, kind: str = "tmp") -> str:
    return f".{path.name}.{kind}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove the temporaries of ``path`` (``.<name>.tmp-<pid>-*``, ``.<name>.old-<pid>-*``)
    that a run of this tool left behind when it was killed: those whose process is gone.

    Returns:
        The paths removed.
    """
    removed: list[Path] = []
    folder = path.parent
    if not folder.is_dir():
        return removed
    for marker in _TEMP_MARKERS:
        for candidate in folder.glob(f".{glob_escape(path.name)}{marker}*"):
            pid_text = candidate.name[len(path.name) + 1 + len(marker) :].split("-", 1)[0]
            if not pid_text.isdigit() or _pid_alive(int(pid_text)):
                continue
            if candidate.is_dir() and not candidate.is_symlink():
                shutil.rmtree(candidate, ignore_errors=True)
            else:
                candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def is_temporary(path: Path) -> bool:
    """A temporary this tool writes (``.<name>.tmp-<pid>-*``, ``.<name>.old-<pid>-*``), its own
    run's or a killed one's."""
    return path.name.startswith(".") and any(marker in path.name for marker in _TEMP_MARKERS)


def glob_escape(name: str) -> str:
    """``name`` with glob metacharacters escaped."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def atomic_write(path: Path, write: Callable[[Path], None], *, clean_stale: bool = True) -> None:
    """Create or replace the file ``path`` through ``write(temporary_path)``: readers see the
    old file or the whole new one, never a part. The temporary keeps ``path``'s suffix (some
    writers choose the format by it). ``clean_stale=False`` skips looking for temporaries of
    killed runs (for many files written into a fresh staging folder).

    Raises:
        OutputError: the file system refused (naming ``path``).
    """
    path = Path(path)
    if clean_stale:
        remove_stale_temporaries(path)
    try:
        handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=path.suffix)
    except OSError as error:
        raise _refused(path, error) from error
    os.close(handle)
    temp = Path(temp_name)
    try:
        write(temp)
        os.chmod(temp, 0o666 & ~_umask())
        os.replace(temp, path)
    except BaseException as error:
        temp.unlink(missing_ok=True)
        if isinstance(error, OSError) and not isinstance(error, OutputError):
            # a full disk, a quota, a read-only mount: most writers say so without the file's name
            raise _refused(path, error) from error
        raise


def _refused(path: Path, error: OSError) -> OutputError:
    return OutputError(f"cannot write {path}: {error.strerror or error}")


def atomic_write_text(path: Path, text: str) -> None:
    """``atomic_write`` of a text, on the disk before it replaces ``path`` (records and settings
    that mark work done: a machine that crashes could otherwise leave an empty file there)."""

    def write(temp: Path) -> None:
        with open(temp, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())

    atomic_write(path, write)


def atomic_write_json(path: Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2))


def read_json(path: Path, *, what: str) -> Any:
    """Read a JSON file.

    Raises:
        InputError: the file is missing, unreadable or not valid JSON (naming ``what`` and the file).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} {path} does not exist")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{what} {path} cannot be read: {error}") from error
    except json.JSONDecodeError as error:
        raise InputError(f"{what} {path} is not valid JSON: {error}") from error


def is_within(path: Path, other: Path) -> bool:
    """``path`` is ``other`` or lies inside it (both resolved)."""
    return path == other or other in path.parents


def check_model_folder(source: str, *, what: str, hint: str) -> str:
    """``source`` (a model folder or hub id) with ``~`` expanded.

    Raises:
        InputError: it is a file, or it is written as a path (absolute, or starting with ``.``
            or ``~``) that does not exist (no hub lookup for either).
    """
    path = Path(source).expanduser()
    if path.is_file():
        raise InputError(f"{what} {source} is a file; {hint}")
    if source.startswith(("/", ".", "~")):
        if not path.exists():
            raise InputError(f"{what} {source}: folder does not exist; {hint}")
        return str(path)
    return source


def check_writable_folder(folder: Path, *, option: str) -> None:
    """Raises InputError unless files can be created in ``folder`` (tried, not guessed: /sys
    and read-only mounts pass permission checks and still fail)."""
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise InputError(f"{option}: folder {folder} {what}")
    try:
        probe = Path(tempfile.mkdtemp(dir=folder, prefix=".sam2prune-probe-"))
        probe.rmdir()
    except OSError as error:
        raise InputError(f"{option}: cannot write into {folder}: {error.strerror or error}") from error


def check_output_file(
    path: Path, *, option: str, inputs: Iterable[tuple[str, Path]] = (), overwrite: bool | None = None
) -> None:
    """Raises InputError unless ``path`` can be written as a file: its folder exists and is
    writable, it is not a folder, it is not one of ``inputs`` (``(option, path)`` of what the run
    reads) nor inside one of them, and (``overwrite`` False) it does not exist yet."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{option} {path} is a folder; expected a file name")
    if path.exists() and not path.is_file():  # replaced by a file, a device (/dev/null) would be gone
        raise InputError(f"{option} {path} is not a regular file (a device, pipe or socket); name a file")
    resolved = path.resolve()
    for name, other in inputs:
        other = Path(other).resolve()
        if is_within(resolved, other):
            relation = "is" if resolved == other else "lies inside"
            raise InputError(f"{option} {path} {relation} the input {name} {other}: write it elsewhere")
    if overwrite is False and path.exists():
        raise InputError(f"{option} {path} exists; pass --overwrite to replace it")
    check_writable_folder(path.parent, option=f"{option} {path}")


def check_output_files(
    outputs: Sequence[tuple[str, Path | None]],
    *,
    inputs: Iterable[tuple[str, Path]] = (),
    overwrite: bool | None = None,
) -> None:
    """``check_output_file`` for each ``(option, path)`` given (None: not asked for), and no two
    of them the same file."""
    given = [(option, Path(path)) for option, path in outputs if path is not None]
    inputs = list(inputs)
    for index, (option, path) in enumerate(given):
        for other_option, other in given[:index]:
            if path.resolve() == other.resolve():
                raise InputError(f"{other_option} and {option} are the same file {path}; name two files")
    for option, path in given:
        check_output_file(path, option=option, inputs=inputs, overwrite=overwrite)


def missing_parent(out_dir: Path, *, option: str) -> InputError:
    """The error for an output folder whose parent folder does not exist (not created: a typo
    in a path must not make folders)."""
    parent = shlex.quote(str(out_dir.parent))
    return InputError(
        f"{option} {out_dir}: parent folder {out_dir.parent} does not exist (create it first: mkdir -p {parent})"
    )


def check_output_location(out_dir: Path, *, option: str = "--out", inputs: Iterable[tuple[str, Path]] = ()) -> None:
    """Check that ``out_dir`` may be created, or replaced as a whole, without harm.

    Args:
        out_dir: the output folder.
        option: the option's name, for messages.
        inputs: ``(option, path)`` of everything the run reads; ``out_dir`` must neither be,
            contain nor lie inside any of them (replacing it would delete inputs).

    Raises:
        InputError: ``out_dir`` is a file, the current folder or one of its parents, a mount
            point, overlaps an input, or its parent is missing or cannot be written.
    """
    out_dir = Path(out_dir)
    resolved = out_dir.resolve()
    for name, path in inputs:
        path = Path(path).resolve()
        if is_within(resolved, path) or is_within(path, resolved):
            relation = "is" if resolved == path else ("contains" if is_within(path, resolved) else "lies inside")
            raise InputError(
                f"{option} {out_dir} {relation} the input {name} {path}: the output folder is created or replaced "
                "as a whole, so it must be a separate folder"
            )
    if is_within(Path.cwd().resolve(), resolved):
        raise InputError(
            f"{option} {out_dir} is the current folder or contains it; name a folder to create or replace, "
            f"e.g. {option} {out_dir / 'results'}"
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{option} {out_dir} exists and is not a folder")
    if out_dir.is_dir() and os.path.ismount(resolved):
        raise InputError(f"{option} {out_dir} is a mount point, which cannot be replaced; name a folder inside it")
    if not out_dir.parent.is_dir():
        raise missing_parent(out_dir, option=option)
    check_writable_folder(out_dir.parent, option=f"{option} {out_dir}")


@dataclass(frozen=True)
class OutputFolder:
    """What a command writes into a folder of its own, so the only folder it replaces.

    Attributes:
        is_output: holds for each file it writes there (the marker aside).
        what: those files, in words ("label PNGs").
        marker: the file it leaves in each such folder: a folder of the same files without it
            (ground truth, another tool's masks) is not its output.
        command: the command, in words ("sam2prune segment").
    """

    is_output: Callable[[Path], bool]
    what: str
    marker: str
    command: str


def check_output_dir(
    out_dir: Path,
    *,
    overwrite: bool,
    option: str = "--out",
    inputs: Iterable[tuple[str, Path]] = (),
    holds_only: OutputFolder | None = None,
) -> None:
    """``check_output_location``, and a non-empty ``out_dir`` needs ``overwrite``; an existing
    one must be writable (it is moved aside when replaced).

    Args:
        holds_only: ``overwrite`` replaces a folder only when it is an earlier output of the
            command: its marker is there and every other file is one it writes, nothing else
            (the user's files: other files, subfolders, links); None: any folder.

    Raises:
        InputError: as ``check_output_location``, or a non-empty folder without ``overwrite``,
            or one holding other things than ``holds_only`` names, or one without its marker.
    """
    check_output_location(out_dir, option=option, inputs=inputs)
    out_dir = Path(out_dir)
    if out_dir.is_symlink():  # replacing it would replace the link, and leave what it points to as it was
        raise InputError(f"{option} {out_dir} is a link to {os.readlink(out_dir)}: name the folder itself")
    if not out_dir.is_dir():
        return
    check_writable_folder(out_dir, option=f"{option} {out_dir}")
    entries = list(out_dir.iterdir())
    if not entries:
        return
    if holds_only is not None:
        others = sorted(
            f"{entry.name}/" if entry.is_dir() else entry.name
            for entry in entries
            if entry.is_dir()
            or entry.is_symlink()
            or (entry.name != holds_only.marker and not holds_only.is_output(entry))
        )
        if others:
            shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
            raise InputError(
                f"{option} {out_dir} holds {shown}, which this command did not write: it replaces only a folder "
                f"of {holds_only.what} (an earlier output); name another folder, or move those out"
            )
        listed = read_output_marker(out_dir / holds_only.marker)
        if listed is None and not all(map(is_folder_junk, entries)):
            raise InputError(
                f"{option} {out_dir} holds {holds_only.what} that {holds_only.command} did not write (it leaves "
                f"{holds_only.marker} in each folder it writes; ground truth or another tool's masks have none): "
                "name another folder (an output of a sam2prune from before 2026-11-29 has none either: delete it "
                "yourself)"
            )
        added = sorted(
            e.name
            for e in entries
            if e.name != holds_only.marker and not is_folder_junk(e) and e.name not in (listed or ())
        )
        if added:
            shown = ", ".join(added[:5]) + (f" and {len(added) - 5} more" if len(added) > 5 else "")
            raise InputError(
                f"{option} {out_dir} holds {shown}, which {holds_only.command} did not write there (its "
                f"{holds_only.marker} lists what it wrote): name another folder, or move those out"
            )
    if not overwrite:
        raise InputError(f"{option} {out_dir} is not empty; pass --overwrite to replace it")


def write_output_marker(folder: Path, marker: str, *, note: str, files: Iterable[str]) -> None:
    """The marker a command leaves in a folder it wrote (``OutputFolder``): what it is, and the
    files it wrote there (only those are replaced with the folder)."""
    atomic_write_text(folder / marker, json.dumps({"note": note, "files": sorted(files)}, indent=1) + "\n")


def read_output_marker(path: Path) -> set[str] | None:
    """The files a marker lists, or None where there is no readable marker."""
    try:
        listed = json.loads(path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return {name for name in listed if isinstance(name, str)} if isinstance(listed, list) else None


# files a file manager leaves in any folder it shows: no reason to keep an earlier output
_FOLDER_JUNK = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})


def is_folder_junk(path: Path) -> bool:
    """A file a file manager leaves in any folder it shows (``.DS_Store``...)."""
    return path.name in _FOLDER_JUNK


@contextmanager
def staged_directory(out_dir: Path, *, overwrite: bool, holds_only: OutputFolder | None = None) -> Iterator[Path]:
    """Yield a temporary folder next to ``out_dir``; on success it replaces ``out_dir``,
    on any error it is removed and ``out_dir`` is left as it was (``check_output_dir`` first,
    with ``overwrite`` and ``holds_only``)."""
    out_dir = Path(out_dir)
    check_output_dir(out_dir, overwrite=overwrite, holds_only=holds_only)
    remove_stale_temporaries(out_dir)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=_temp_prefix(out_dir)))
    os.chmod(staging, 0o777 & ~_umask())
    try:
        yield staging
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, OutputError) and str(staging) in str(error):
            # named as the user named the folder: the staging folder is gone
            raise OutputError(str(error).replace(str(staging), str(out_dir))) from error
        raise
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=_temp_prefix(out_dir, "old")))
        os.replace(out_dir, old / out_dir.name)
    os.replace(staging, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def make_output_dir(out_dir: Path, *, option: str = "--out") -> None:
    """Create ``out_dir`` (its parent must exist) or accept an existing folder.

    Raises:
        InputError: the parent folder is missing, ``out_dir`` is a file, or it cannot be written.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{option} {out_dir} exists and is not a folder")
    if not out_dir.exists():
        if not out_dir.parent.is_dir():
            raise missing_parent(out_dir, option=option)
        check_writable_folder(out_dir.parent, option=f"{option} {out_dir}")
        out_dir.mkdir()
    check_writable_folder(out_dir, option=f"{option} {out_dir}")


def load_versioned_file(path: Path, *, kind: str, file_format: str, version: int, hint: str) -> dict:
    """Read a sam2prune weights file (``torch.save`` of ``{"format", "version", ...}``) strictly,
    with ``weights_only=True``.

    Args:
        kind: what the file is, for messages (e.g. "aligner").
        file_format, version: the values its ``format`` and ``version`` must have.
        hint: how to make one, appended to "does not exist".

    Raises:
        InputError: the file is missing, unreadable, of another format or of another version.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{kind} {path} does not exist ({hint})")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt or foreign files
        raise InputError(
            f"{kind} {path} could not be read as a sam2prune {kind} file ({type(error).__name__})"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != file_format:
        raise InputError(f"{path} is not a sam2prune {kind} file")
    if payload.get("version") != version:
        raise InputError(f"{kind} {path} has version {payload.get('version')}; this sam2prune reads version {version}")
    return payload
