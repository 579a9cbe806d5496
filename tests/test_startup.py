"""The local command-line paths import no OpenStack library nor pydantic (README: "starts fast").

A fresh interpreter runs a local encrypt (with a new key), inspect, decrypt and ``keys list``,
then a LUKS1 encrypt, inspect and decrypt, through ``img_crypt.cli.main`` and then reports
``sorted(sys.modules)``. ``tqdm`` is imported only when stderr is a terminal; the terminal run
is the control showing that the check sees an import when there is one.

Then each command alone, in a fresh interpreter: ``--version`` and every ``--help`` import no
command module, key store or cryptography; the img-crypt format's encrypt, decrypt, inspect and
``--range`` import no LUKS code and no thread pool on one thread; ``keys`` commands import no
payload module; a named key store imports neither platformdirs nor random.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
# pydantic: no longer a dependency; its models doubled start-up
FORBIDDEN = ("castellan", "barbicanclient", "keystoneauth1", "openstack", "taskflow", "glance",
             "requests", "pydantic")

SCRIPT = r"""
import json, sys
from img_crypt.cli import main
from img_crypt.keys.local import LocalKeyStore

work, store, report = sys.argv[1:4]
kek = LocalKeyStore(store).create_key("luks")
codes = [
    main(["encrypt", f"{work}/plain", f"{work}/plain.icr", "--key-store", store]),
    main(["inspect", f"{work}/plain.icr"]),
    main(["decrypt", f"{work}/plain.icr", f"{work}/plain.out", "--key-store", store]),
    main(["keys", "list", "--key-store", store]),
    main(["encrypt", "--format", "luks", f"{work}/plain", f"{work}/plain.luks", "--kek", kek,
          "--key-store", store]),
    main(["inspect", f"{work}/plain.luks"]),
    main(["decrypt", f"{work}/plain.luks", f"{work}/plain.luks.out", "--kek", kek, "--size",
          "100000", "--key-store", store]),
]
with open(report, "w") as f:
    json.dump({"codes": codes, "stderr_is_a_tty": sys.stderr.isatty(),
               "modules": sorted(sys.modules)}, f)
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(REPO)
    return env


def _run(tmp_path: Path, *, stderr_tty: bool) -> dict[str, Any]:
    (tmp_path / "plain").write_bytes(os.urandom(100_000))
    argv = [sys.executable, "-c", SCRIPT, str(tmp_path), str(tmp_path / "keys"),
            str(tmp_path / "report.json")]
    if not stderr_tty:
        result = subprocess.run(argv, env=_env(), stdin=subprocess.DEVNULL,
                                capture_output=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        assert result.stderr == b""
    else:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        proc = subprocess.Popen(argv, env=_env(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=slave)
        os.close(slave)

        def drain() -> None:
            with contextlib.suppress(OSError):
                while os.read(master, 65536):
                    pass

        thread = threading.Thread(target=drain, daemon=True)
        thread.start()
        assert proc.wait(timeout=60) == 0
        thread.join(timeout=10)
        os.close(master)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["codes"] == [0] * 7
    assert (tmp_path / "plain.out").read_bytes() == (tmp_path / "plain").read_bytes()
    assert (tmp_path / "plain.luks.out").read_bytes() == (tmp_path / "plain").read_bytes()
    assert isinstance(report, dict)
    return report


def _top_level(modules: list[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


@pytest.fixture(scope="module")
def pipe_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _run(tmp_path_factory.mktemp("startup-pipe"), stderr_tty=False)


def test_the_run_used_the_cli(pipe_run: dict[str, Any]) -> None:
    assert pipe_run["stderr_is_a_tty"] is False
    assert {"img_crypt.cli", "img_crypt.cli.commands", "img_crypt.keys.local",
            "img_crypt.cli.luks", "img_crypt.luks", "cryptography"} <= set(pipe_run["modules"])


@pytest.mark.parametrize("library", FORBIDDEN)
def test_no_openstack_or_http_library_is_imported(pipe_run: dict[str, Any],
                                                  library: str) -> None:
    assert library not in _top_level(pipe_run["modules"])


def test_no_oslo_library_is_imported(pipe_run: dict[str, Any]) -> None:
    assert sorted(m for m in _top_level(pipe_run["modules"]) if m.startswith("oslo")) == []


def test_tqdm_is_not_imported_when_stderr_is_not_a_terminal(pipe_run: dict[str, Any]) -> None:
    assert "tqdm" not in _top_level(pipe_run["modules"])


def test_tqdm_is_imported_when_stderr_is_a_terminal(tmp_path: Path) -> None:
    report = _run(tmp_path, stderr_tty=True)

    assert report["stderr_is_a_tty"] is True
    assert "tqdm" in _top_level(report["modules"])
    assert not _top_level(report["modules"]) & set(FORBIDDEN)


RANGE_SCRIPT = r"""
import io, json, os, sys
from img_crypt import envelope
from img_crypt.cli import main
from img_crypt.keys.local import LocalKeyStore

work, store, report = sys.argv[1:4]
keys = LocalKeyStore(store)
kek = keys.create_key("range")
with open(f"{work}/ct", "wb") as f:  # one thread: the streaming path
    envelope.encrypt(io.BytesIO(os.urandom(100_000)), f,
                     [envelope.Kek(keys.kind, kek, keys.get_key(kek))], threads=1)
codes = [main(["--version"]), main(["inspect", f"{work}/ct"]),
         main(["decrypt", f"{work}/ct", f"{work}/part", "--range", "99000:", "--key-store",
               store, "--threads", "2"])]
with open(report, "w") as f:
    json.dump({"codes": codes, "modules": sorted(sys.modules)}, f)
"""


def test_version_inspect_and_a_range_read_do_not_import_the_thread_pool(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", RANGE_SCRIPT, str(tmp_path), str(tmp_path / "keys"),
            str(tmp_path / "report.json")]
    result = subprocess.run(argv, env=_env(), stdin=subprocess.DEVNULL, capture_output=True,
                            timeout=60, check=False)

    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["codes"] == [0, 0, 0]
    assert (tmp_path / "part").stat().st_size == 1000
    assert "img_crypt._payload_parallel" in report["modules"]  # the control: it ran
    assert "img_crypt._parallel" not in report["modules"]


# --- what each command imports: a fresh interpreter per command group --------------------------

MAIN_SCRIPT = r"""
import json, sys
from img_crypt.cli import main

report, *argvs = sys.argv[1:]
codes = [main(json.loads(argv)) for argv in argvs]
with open(report, "w") as f:
    json.dump({"codes": codes, "modules": sorted(sys.modules)}, f)
"""
HELPS = [[], ["encrypt"], ["decrypt"], ["inspect"], ["rewrap"], ["keys"], ["keys", "create"],
         ["keys", "list"], ["keys", "delete"], ["keys", "consumers"], ["reconcile"], ["upload"],
         ["download"]]
COMMAND_MODULES = ("img_crypt.cli.commands", "img_crypt.cli.key_commands",
                   "img_crypt.cli.reconcile_command", "img_crypt.cli.files")
PAYLOAD = ("cryptography", "img_crypt.envelope", "img_crypt.format", "img_crypt._cobblestone",
           "img_crypt._keyslots", "img_crypt._payload", "img_crypt._payload_parallel")
LUKS = ("img_crypt.luks", "img_crypt.cli.luks")
NOT_FOR_IMG_CRYPT_FILES = (*LUKS, "img_crypt.cli.images", "img_crypt._parallel")


def _imports(tmp_path: Path, *argvs: list[str]) -> set[str]:
    """The modules a fresh interpreter holds after ``main(argv)`` for each of ``argvs``."""
    report = tmp_path / "modules.json"
    env = _env() | {"IMG_CRYPT_KEY_STORE": str(tmp_path / "keys")}
    env.pop("IMG_CRYPT_THREADS", None)
    result = subprocess.run([sys.executable, "-c", MAIN_SCRIPT, str(report),
                             *map(json.dumps, argvs)], env=env, stdin=subprocess.DEVNULL,
                            capture_output=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    data = json.loads(report.read_text())
    assert data["codes"] == [0] * len(argvs), result.stderr
    return set(data["modules"])


def _held(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    """The modules in ``modules`` that are one of ``packages`` or inside one."""
    return sorted(m for m in modules if any(m == p or m.startswith(f"{p}.") for p in packages))


@pytest.fixture
def encrypted(tmp_path: Path) -> Path:
    """A 100 kB img-crypt file under a new key of the store in ``tmp_path`` (made by a child)."""
    (tmp_path / "plain").write_bytes(os.urandom(100_000))
    _imports(tmp_path, ["encrypt", str(tmp_path / "plain"), str(tmp_path / "plain.icr")])
    return tmp_path / "plain.icr"


def test_version_imports_no_command_module_key_store_or_cryptography(tmp_path: Path) -> None:
    modules = _imports(tmp_path, ["--version"])

    assert "img_crypt.cli" in modules  # the control: the check sees img-crypt's modules
    assert _held(modules, (*COMMAND_MODULES, *PAYLOAD, *LUKS, "img_crypt.keys")) == []


def test_the_help_of_every_command_imports_no_command_module_or_cryptography(
        tmp_path: Path) -> None:
    modules = _imports(tmp_path, *([*command, "--help"] for command in HELPS))

    assert _held(modules, (*COMMAND_MODULES, *PAYLOAD, *LUKS, "img_crypt.keys")) == []


def test_img_crypt_files_encrypt_decrypt_inspect_and_range_import_no_luks_code(
        tmp_path: Path, encrypted: Path) -> None:
    modules = _imports(tmp_path, ["encrypt", str(tmp_path / "plain"), str(tmp_path / "b.icr")],
                       ["inspect", str(encrypted)], ["inspect", "--json", str(encrypted)],
                       ["decrypt", str(encrypted), str(tmp_path / "out")],
                       ["decrypt", str(encrypted), os.devnull, "--range", "99000:"])

    assert "img_crypt.envelope" in modules  # the control: the img-crypt format ran
    assert _held(modules, NOT_FOR_IMG_CRYPT_FILES) == []
    assert (tmp_path / "out").read_bytes() == (tmp_path / "plain").read_bytes()


def test_two_threads_import_the_thread_pool(tmp_path: Path, encrypted: Path) -> None:
    modules = _imports(tmp_path, ["decrypt", str(encrypted), os.devnull, "--threads", "2"])

    assert "img_crypt._parallel" in modules
    assert _held(modules, LUKS) == []


def test_keys_commands_import_no_payload_or_luks_module(tmp_path: Path) -> None:
    modules = _imports(tmp_path, ["keys", "create", "--name", "k"], ["keys", "list"],
                       ["keys", "list", "--json"])

    assert "img_crypt.keys.local" in modules  # the control: the store was read
    assert _held(modules, (*PAYLOAD, *LUKS, "img_crypt.cli.commands")) == []


def test_a_named_key_store_imports_neither_platformdirs_nor_random(tmp_path: Path,
                                                                   encrypted: Path) -> None:
    modules = _imports(tmp_path, ["encrypt", str(tmp_path / "plain"), str(tmp_path / "c.icr")],
                       ["decrypt", str(encrypted), str(tmp_path / "out")])

    assert _held(modules, ("platformdirs", "tempfile", "random", "secrets")) == []


def test_decrypt_and_inspect_import_no_enrollment_and_inspect_no_key_store(
        tmp_path: Path, encrypted: Path) -> None:
    inspected = _imports(tmp_path, ["inspect", str(encrypted)])
    decrypted = _imports(tmp_path, ["decrypt", str(encrypted), os.devnull, "--range", "99000:"])

    assert "img_crypt.keys.local" in decrypted  # the control: the check sees the store
    assert _held(inspected, ("img_crypt.enrollment", "img_crypt.keys")) == []
    assert _held(decrypted, ("img_crypt.enrollment",)) == []


RUN_SCRIPT = r"""
import json, sys
from img_crypt.cli import run

report = sys.argv[1]
sys.argv = ["img-crypt", *sys.argv[2:]]
try:
    run()
except SystemExit as e:
    code = e.code
logging = sys.modules.get("logging")
handlers = [type(h).__name__ for h in logging.getLogger().handlers] if logging else None
with open(report, "w") as f:
    json.dump({"code": code, "handlers": handlers}, f)
"""


def _console(tmp_path: Path, *argv: str) -> dict[str, Any]:
    """``run()`` (the console script) with ``argv``: exit code and the root logger's handlers."""
    report = tmp_path / "run.json"
    env = _env() | {"IMG_CRYPT_KEY_STORE": str(tmp_path / "keys")}
    result = subprocess.run([sys.executable, "-c", RUN_SCRIPT, str(report), *argv], env=env,
                            stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(report.read_text())
    return data


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["decrypt", "--help"], ["bogus"]])
def test_the_console_script_imports_no_logging_for_help_version_or_a_usage_error(
        tmp_path: Path, argv: list[str]) -> None:
    assert _console(tmp_path, *argv) == {"code": 2 if argv == ["bogus"] else 0, "handlers": None}


def test_the_console_script_silences_library_logs_for_a_command(tmp_path: Path) -> None:
    assert _console(tmp_path, "keys", "list") == {"code": 0, "handlers": ["NullHandler"]}
