"""What the IPP's receiver does with a distribution fileset, as facts of its source
(``ippScripts/scripts/receive_file.pl`` in ps-ipp/ipp-trunk-20250502), to check that it
would place every file of a fileset this project ships.

For each file of the listing (``dsfilesetls``: name, bytes, md5, type, component):
- component ``dirinfo``: the dirinfo is read (``read_dirinfo_file``): a ``destdir`` and a
  ``components`` block mapping each component to its directory.
- component ``dbinfo``: ``findRunType`` needs ``dbversion MULTI`` on the first line and, as
  the first line after the dbversion block's END, ``<runTable> MULTI``; the run table names
  the component column (class_id, skycell_id; ``exposure`` for camRun, which starts there).
  Every line whose name is that column must name a component of the dirinfo, and every
  ``uri`` or ``path_base`` line that is not NULL needs the component of the last such line.
- a ``.tgz``: its component must be one of the dirinfo's.
- anything else: "Unrecognised file".
"""

from __future__ import annotations

from shared.formats import mdc

#: receive_file.pl: run table -> the column that names a component
COMPONENT_COLUMN = {
    "rawExp": "class_id",
    "chipBackgroundRun": "class_id",
    "chipRun": "class_id",
    "camRun": "exposure",
    "fakeRun": "class_id",
    "warpRun": "skycell_id",
    "warpBackgroundRun": "skycell_id",
    "diffRun": "skycell_id",
    "stackRun": "skycell_id",
    "staticskyRun": "skycell_id",
    "skycalRun": "skycell_id",
}


def dirinfo_components(text: str) -> dict[str, str]:
    doc = mdc.loads(text, "dirinfo")
    destdir = doc.get("destdir")
    components = doc.get("components")
    assert isinstance(destdir, mdc.Block) and destdir.value("destdir"), "destdir not found"
    assert isinstance(components, mdc.Block), "no components block"
    return {name: str(item.value) for name, item in components if isinstance(item, mdc.Scalar)}


def _run_type(lines: list[str]) -> str:
    first = lines[0].split()
    assert first[:2] == ["dbversion", "MULTI"], f"unexpected first line: {lines[0]!r}"
    done = False
    for line in lines:
        if not line.strip():
            continue
        words = line.split()
        if done:
            assert len(words) >= 2 and words[1] == "MULTI", f"unexpected line: {line!r}"
            return words[0]
        if words[0] == "END":
            done = True
    raise AssertionError("failed to determine run type")


def dbinfo_problems(text: str, components: dict[str, str]) -> list[str]:
    """Why receive_file.pl would die on this dbinfo (empty: it would not)."""
    lines = text.splitlines()
    run_type = _run_type(lines)
    if run_type not in COMPONENT_COLUMN:
        return [f"unexpected run type {run_type}"]
    column = COMPONENT_COLUMN[run_type]
    current = components.get(column) if column == "exposure" else None
    problems = []
    for line in lines:
        words = line.split()
        if len(words) < 3:
            continue
        name, value = words[0], words[2]
        if name == column:
            current = components.get(value)
            if current is None:
                problems.append(f"component {value} of {run_type} is not in the dirinfo")
        elif name in ("uri", "path_base") and value != "NULL" and current is None:
            problems.append(f"{name} {value} has no component directory")
    return problems


def unplaced(files: list[tuple[str, str, str | None]], dirinfo: str, dbinfo: str) -> list[str]:
    """The files of a fileset (name, type, component) that receive_file.pl would not place."""
    components = dirinfo_components(dirinfo)
    problems = []
    for name, kind, component in files:
        if component == "dirinfo":
            continue
        if component == "dbinfo":
            problems += [f"{name}: {p}" for p in dbinfo_problems(dbinfo, components)]
        elif name.endswith(".tgz"):
            if component not in components:
                problems.append(f"{name}: component {component} is not in the dirinfo")
        else:
            problems.append(f"{name}: unrecognised file (type {kind})")
    return problems
