"""The pack as the Comfy registry publishes it: pyproject metadata the registry
accepts, the archive `comfy node pack` builds (only what ComfyUI runs, and all
of it), one list of test requirements, the shipped prompt sets, and the
commands (.ci/run, tools/host_tests.sh, the GitHub workflow) agreeing with each other.

The archive is built with comfy-cli's own rules (comfy_cli/file_utils.py,
zip_files, comfy-cli 1.23.0): the git-tracked files, minus the gitwildmatch
patterns of .comfyignore, plus pyproject's [tool.comfy] includes. (comfy-cli is
not a test requirement: it pulls uv, ruff and ffmpeg.)"""

import ast
import hashlib
import os
import re
import struct
import subprocess
import warnings
import zipfile
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
REPOSITORY = "https://github.com/comfyui-reflect/ComfyUI-Reflect"
RAW = "https://raw.githubusercontent.com/comfyui-reflect/ComfyUI-Reflect/main/"
STANDALONE = ("python3 -m venv .venv && .venv/bin/pip install -q torch==2.13.0 -r requirements-test.txt "
              "&& .venv/bin/python -m pytest && node --test tests/js/")

# comfy-cli 1.23.0, comfy_cli/registry/config_parser.py: what the registry keeps of the classifiers
# (one value outside these and the whole OS or accelerator list is dropped).
OS_PREFIXES = ("Microsoft", "POSIX", "MacOS", "OS Independent")
ACCELERATORS = {"GPU :: NVIDIA CUDA", "GPU :: AMD ROCm", "GPU :: Intel Arc", "NPU :: Huawei Ascend", "GPU :: Apple Metal"}
VERSION_SPEC = re.compile(r"^(?:(==|>=|<=|!=|~=|>|<|<>|=)\s*)?(\d+\.\d+\.\d+(?:-[a-zA-Z0-9]+)?)?$")

# What ComfyUI runs: top-level files and folders of the archive (runtime Python packages the
# shipped code imports are added by the import walk below).
RUNTIME_FILES = {"__init__.py", "requirements.txt", "pyproject.toml", "LICENSE", "README.md"}
RUNTIME_DIRS = {"nodes", "samplers", "js", "workflows", "percentiles"}
NEVER = ("tests/", "bench/", "lab/", "tools/", "docs/", "datasets/", ".github/", ".ci/", "requirements-test.txt",
         ".gitignore", ".venv/", ".hypothesis/")

# sha256 of the public files datasets/ ships unchanged (datasets/README.md names the sources)
DATASETS = {
    "PartiPrompts.tsv": "fab29e41bb512a169b56acab4cf2a41dcb675e285df2efcde6640c7dd3c440eb",
    "drawbench.csv": "e120fd4d8aa8f6c44b0b3ee92d9dfb7463c67f5b2d427d23a2bf388f80a0c0c1",
    "coco_captions_5k.csv": "5642a0f7d87567ac4269875fe216ff61b59c3674431c34d1e47d211e1656756a",
    "imagereward_med_config.json": "d8b5029cc3c0124313d17009d043f0701bbe497f3721fa4ceb818720fe665326",
}


@pytest.fixture(scope="module")
def pyproject():
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def requirement_lines(path):
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


def git_tracked(repo):
    r = subprocess.run(["git", "-C", str(repo), "ls-files"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip(), \
        f"the registry archive is built from the git-tracked files; `git ls-files` failed in {repo}: {r.stderr}"
    return r.stdout.splitlines()


def registry_archive(repo, dest):
    """comfy-cli's zip_files, in repo: tracked files not matched by .comfyignore, then [tool.comfy] includes."""
    import pathspec

    ignore = repo / ".comfyignore"
    patterns = [l.strip() for l in ignore.read_text(encoding="utf-8").splitlines()
                if l.strip() and not l.lstrip().startswith("#")] if ignore.is_file() else []
    with warnings.catch_warnings():  # pathspec >= 1.0 deprecates the name comfy-cli uses
        warnings.simplefilter("ignore", DeprecationWarning)
        spec = pathspec.PathSpec.from_lines("gitwildmatch", patterns) if patterns else None
    includes = tomllib.loads((repo / "pyproject.toml").read_text(encoding="utf-8")).get("tool", {}) \
        .get("comfy", {}).get("includes", [])
    prefixes = [os.path.normpath(i.lstrip("/")).replace("\\", "/") for i in includes]

    def ignored(rel):
        if spec is None or any(rel == p or rel.startswith(p + "/") for p in prefixes if p):
            return False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return spec.match_file(rel)

    done = set()
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as z:
        for rel in git_tracked(repo):
            if not ignored(rel) and (repo / rel).exists():
                z.write(repo / rel, rel)
                done.add(rel)
        for inc in prefixes:
            base = repo / inc
            files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
            for f in files:
                rel = f.relative_to(repo).as_posix()
                if rel not in done and not ignored(rel):
                    z.write(f, rel)
                    done.add(rel)
    return dest


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    path = registry_archive(REPO, tmp_path_factory.mktemp("pack") / "node.zip")
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
    return path, names


# --------------------------------------------------------------------------- metadata

def test_registry_metadata(pyproject):
    project, comfy = pyproject["project"], pyproject["tool"]["comfy"]
    name = project["name"]
    # the registry's node id rules (docs.comfy.org/registry/specifications)
    assert name == "comfyui-reflect" and len(name) < 100
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9._-]*", name) and not re.search(r"[._-]{2}", name)
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    assert project["description"].strip()
    assert project["urls"]["Repository"] == REPOSITORY
    for key in ("Documentation", "Bug Tracker", "Issues"):
        assert project["urls"][key].startswith(REPOSITORY), key
    assert comfy["PublisherId"] == "comfyui-reflect"
    assert comfy["DisplayName"] == "ComfyUI-Reflect"
    spec = VERSION_SPEC.fullmatch(comfy["requires-comfyui"])
    assert spec and spec.group(1) == ">=" and spec.group(2) == "0.3.64"
    assert isinstance(comfy["includes"], list)


def test_license_is_the_mit_file(pyproject):
    assert pyproject["project"]["license"] == {"file": "LICENSE"}
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License") and "ComfyUI-Reflect contributors" in text
    assert "THE SOFTWARE IS PROVIDED \"AS IS\"" in text


def test_icon_is_a_square_png_in_the_repository(pyproject):
    icon = pyproject["tool"]["comfy"]["Icon"]
    assert icon.startswith(RAW), icon
    path = REPO / icon[len(RAW):]
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    w, h = struct.unpack(">II", data[16:24])
    assert w == h and 128 <= w <= 1024, (w, h)
    assert len(data) < 100_000
    assert path.relative_to(REPO).as_posix() in git_tracked(REPO), "the icon URL points at an untracked file"
    banner = pyproject["tool"]["comfy"].get("Banner")
    if banner:
        assert (REPO / banner[len(RAW):]).is_file()


def test_classifiers_survive_the_registry(pyproject):
    classifiers = pyproject["project"]["classifiers"]
    oses = [c[len("Operating System :: "):] for c in classifiers if c.startswith("Operating System :: ")]
    accelerators = [c[len("Environment :: "):] for c in classifiers if c.startswith("Environment ::")]
    assert oses and all(o.startswith(OS_PREFIXES) for o in oses), oses
    assert accelerators and all(a in ACCELERATORS for a in accelerators), accelerators
    assert len(set(classifiers)) == len(classifiers)


def test_one_list_of_requirements(pyproject):
    # what the Manager / comfy-cli install (requirements.txt) is what the registry lists
    assert pyproject["project"]["dependencies"] == requirement_lines(REPO / "requirements.txt")
    # test requirements: requirements-test.txt only, no second list in pyproject to drift from it
    assert "test" not in pyproject["project"].get("optional-dependencies", {})
    tests = requirement_lines(REPO / "requirements-test.txt")
    names = {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower() for r in tests}
    assert not names & {"torch", "torchvision", "torchaudio"}, "torch is the user's (standalone: pinned in the venv)"
    assert {"pytest", "hypothesis", "requests", "diffusers", "tokenizers", "pillow", "safetensors", "einops",
            "numpy", "scipy", "pathspec", "playwright"} <= names
    for r in requirement_lines(REPO / "requirements.txt"):
        assert r in tests, f"{r}: the standalone tests import the runtime requirements too"


# --------------------------------------------------------------------------- the archive

def shipped_relative_imports(names, z):
    """(module file, target) for each relative import in the archive's Python files, unresolved targets only."""
    missing = []
    for n in sorted(x for x in names if x.endswith(".py")):
        tree = ast.parse(z.read(n).decode("utf-8"), filename=n)
        pkg = n.split("/")[:-1]
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or node.level == 0:
                continue
            base = pkg[:len(pkg) - (node.level - 1)] if node.level > 1 else pkg
            mod = base + (node.module.split(".") if node.module else [])
            stem = "/".join(mod)
            candidates = [[f"{stem}.py", f"{stem}/__init__.py".lstrip("/")]]
            if node.module is None:
                candidates = [[f"{stem}/{a.name}.py".lstrip("/"), f"{stem}/{a.name}/__init__.py".lstrip("/"),
                               f"{stem}/__init__.py".lstrip("/")] for a in node.names]
            for c in candidates:
                if not any(x in names for x in c):
                    missing.append((n, c[0]))
    return missing


def test_archive_ships_only_what_comfyui_runs(archive):
    path, names = archive
    size = path.stat().st_size
    python_packages = {n.split("/")[0] for n in names if n.count("/") == 1 and n.endswith("/__init__.py")}
    allowed_dirs = RUNTIME_DIRS | python_packages
    icon = "icon.png"
    for n in sorted(names):
        assert not any(n == p or n.startswith(p) for p in NEVER), f"{n} is in the registry archive"
        assert "__pycache__" not in n and not n.endswith(".pyc")
        top = n.split("/")[0]
        assert (n in RUNTIME_FILES | {icon}) or ("/" in n and top in allowed_dirs), \
            f"{n}: not something ComfyUI runs (add it to .comfyignore, or to RUNTIME_* here if the nodes need it)"
    assert size < 1_000_000, f"registry archive is {size} bytes"


def test_archive_holds_all_of_the_pack(archive):
    path, names = archive
    tracked = git_tracked(REPO)
    for top in RUNTIME_DIRS:
        mine = [t for t in tracked if t.startswith(top + "/")]
        assert mine, f"{top}/ has no tracked files"
        assert set(mine) <= names, f"{top}/ files missing from the archive: {sorted(set(mine) - names)}"
    assert RUNTIME_FILES | {"icon.png"} <= names
    with zipfile.ZipFile(path) as z:
        missing = shipped_relative_imports(names, z)
        init = z.read("__init__.py").decode("utf-8")
    assert not missing, f"shipped modules import what the archive lacks: {missing}"
    web = re.search(r"WEB_DIRECTORY\s*=\s*[\"']\./(\w+)[\"']", init).group(1)
    assert any(n.startswith(web + "/") and n.endswith(".js") for n in names)
    assert any(n.startswith("percentiles/") and n.endswith(".json") for n in names)


# --------------------------------------------------------------------------- data shipped in the repository

def test_prompt_sets_ship_unchanged_with_sources():
    folder = REPO / "datasets"
    readme = (folder / "README.md").read_text(encoding="utf-8")
    tracked = set(git_tracked(REPO))
    for name, digest in DATASETS.items():
        assert f"datasets/{name}" in tracked, name
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, f"{name} differs from its source"
        row = next(l for l in readme.splitlines() if l.startswith(f"| {name} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 4 and cells[2] and cells[3] in {"MIT", "Apache-2.0"}, row
    assert {p.name for p in folder.iterdir()} == set(DATASETS) | {"README.md"}


def test_no_test_or_tool_reads_outside_the_repository():
    offenders = []
    for folder in ("tests", "tools", "bench", "lab"):
        for f in (REPO / folder).rglob("*.py"):
            if f == Path(__file__).resolve():
                continue  # the patterns below
            text = f.read_text(encoding="utf-8")
            if "shared/datasets" in text or re.search(r"REPO\.parent\s*/", text):
                offenders.append(f.relative_to(REPO).as_posix())
    assert not offenders, offenders


# --------------------------------------------------------------------------- commands

def test_ci_runs_the_standalone_command():
    lines = [l for l in (REPO / ".ci" / "run").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert lines[-1] == STANDALONE


def test_host_script_refuses_what_is_not_comfyui(tmp_path):
    script = REPO / "tools" / "host_tests.sh"
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"}
    r = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode != 0 and "COMFYUI_PATH" in r.stderr
    (tmp_path / "main.py").write_text("")
    r = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60,
                       env={**env, "COMFYUI_PATH": str(tmp_path)})
    assert r.returncode != 0 and "is not a ComfyUI checkout (no nodes.py)" in r.stderr
    assert "pip" not in r.stdout  # refused before installing anything


def test_host_script_never_touches_torch():
    text = (REPO / "tools" / "host_tests.sh").read_text()
    install = [l for l in text.splitlines() if "pip install" in l and not l.lstrip().startswith("#")]
    assert len(install) == 1 and '-c "$CONSTRAINTS"' in install[0] and "requirements-test.txt" in install[0]
    assert "torch" not in install[0] and "--upgrade" not in text and "uninstall" not in text


def test_workflow_runs_the_host_script_on_the_supported_comfyui(pyproject):
    wf = (REPO / ".github" / "workflows" / "host-tests.yml").read_text()
    oldest = pyproject["tool"]["comfy"]["requires-comfyui"].lstrip(">=")
    assert re.search(rf"comfyui:\s*\[[^\]]*\bv{re.escape(oldest)}\b", wf), "matrix lacks the oldest supported ComfyUI"
    assert "latest" in wf and "https://github.com/Comfy-Org/ComfyUI" in wf
    assert "bash tools/host_tests.sh" in wf and "download.pytorch.org/whl/cpu" in wf
