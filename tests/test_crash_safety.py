"""Crash safety of the local key store and of CLI outputs (issue 6): SIGKILL at every step.

Deterministic kills: ``HARNESS`` runs ``img-crypt`` in a subprocess with Python's pure-Python
``_pyio`` behind ``open``/``io.open``/``os.fdopen`` (so every file write is an ``os.write``)
and hooks on every mutating call: ``os.open`` with a write or create flag, ``os.write``,
``os.fsync``, ``os.fdatasync``, ``os.fchmod``, ``os.chmod``, ``os.mkdir``, ``os.replace``,
``os.rename``, ``os.link``, ``os.symlink``, ``os.unlink``, ``os.remove``, ``os.ftruncate``. The
N-th such call SIGKILLs the process before it runs; for each ``os.write`` a second run writes
the first half of its bytes and then dies. N goes 1, 2, ... until the command completes
normally, which must happen exactly one step after the dry run's last point.

8 commands, 8 tests (kill points, then half-done writes, as the dry run counts them on this
code; each test pins its kinds of calls): ``keys create`` into a store holding two keys (6, 1)
and into a store not yet created, three directories deep (12, 1); ``encrypt`` with a new key
and ``--image-id`` (20, 5); ``encrypt --force`` over an existing output (6, 3); ``decrypt
--threads 2`` (5, 1); ``rewrap --add-kek`` to a new file (6, 2); ``rewrap --force`` of a file
onto itself, the in-place rewrap (5, 2); ``keys delete --force`` of a key with consumers
(4, 0). 64 kill points and 15 half writes: 87 runs with the 8 that complete, plus 8 dry runs.

After every kill: each key record under its final name parses and holds 32 bytes; ``list_keys``
and ``img-crypt keys list --json`` list exactly those; every key that existed before still
has its bytes and consumers (but for the key being deleted, all there or its record gone);
each output under its final name is complete (decrypts to the expected plaintext, with the
expected key slots, image binding and consumer) or absent, and an output rewritten in place
is the original byte for byte or the complete new one; leftover temp files have only our
hidden names (``.<uuid>.key.json.<hex>.tmp``, ``.<output>.<random>.part``), mode 0600 for key
material, and no other file appears.

Plus real timing (1 test): a 64 MiB image, ``encrypt``, ``decrypt`` and the in-place
``rewrap``, SIGKILLed 6 times each at seeded random times within a normal run's duration, with
the same checks; at least one kill must have left a temp file (landed mid-write).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import shutil
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from img_crypt import envelope
from img_crypt.keys.base import Consumer
from img_crypt.keys.local import LocalKeyStore
from tests.support.cli import cli

REPO = Path(__file__).resolve().parent.parent
IMAGE = "5c1b7a52-0f8e-4d0a-9a57-3c1f2d4e6b80"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
KEY_TEMP = re.compile(rf"\.{UUID}\.(key|consumers)\.json\.[0-9a-f]{{8}}\.tmp")
SIGKILLED = -9

HARNESS = r"""
import _pyio, builtins, io, os, signal, sys, threading
import img_crypt.cli, img_crypt.cli.commands, img_crypt.cli.files, img_crypt.envelope
import img_crypt.keys.local

KILL_AT = int(os.environ["CRASH_KILL_AT"])
PARTIAL = os.environ["CRASH_PARTIAL"] == "1"
TRACE = os.open(os.environ["CRASH_TRACE"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
CHANGES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
NAMES = ("open", "write", "fsync", "fdatasync", "fchmod", "chmod", "mkdir", "replace",
         "rename", "link", "symlink", "unlink", "remove", "ftruncate")
real = {name: getattr(os, name) for name in NAMES}
lock = threading.Lock()
count = 0


def point(name, detail, half=None):
    global count
    with lock:
        count += 1
        real["write"](TRACE, f"{count} {name} {detail}\n".encode())
        if count == KILL_AT:
            if half is not None:
                half()
            os.kill(os.getpid(), signal.SIGKILL)


def hooked(name):
    call = real[name]

    def hook(*args, **kwargs):
        if name == "open" and not (args[1] if len(args) > 1 else kwargs["flags"]) & CHANGES:
            return call(*args, **kwargs)
        if name == "write":
            fd, data = args[0], memoryview(args[1]).cast("B")
            if fd in (0, 1, 2, TRACE):
                return call(*args, **kwargs)
            half = (lambda: real["write"](fd, data[:len(data) // 2])) if PARTIAL else None
            point(name, f"{len(data)}", half)
        else:
            point(name, " ".join(os.path.basename(str(a)) for a in args
                                 if isinstance(a, (str, os.PathLike))))
        return call(*args, **kwargs)

    return hook


for name in NAMES:
    setattr(os, name, hooked(name))
io.open = builtins.open = _pyio.open
sys.exit(img_crypt.cli.main(sys.argv[1:]))
"""


@dataclass
class Outcome:
    code: int
    trace: list[str]
    out: str
    err: str


def run_harness(argv: list[str], work: Path, kill_at: int = 0, partial: bool = False) -> Outcome:
    trace = work / "trace.txt"
    env = {**os.environ, "CRASH_KILL_AT": str(kill_at), "CRASH_PARTIAL": "1" if partial else "0",
           "CRASH_TRACE": str(trace)}
    env.pop("IMG_CRYPT_KEY_STORE", None)
    done = subprocess.run([sys.executable, "-c", HARNESS, *argv], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
    lines = trace.read_text().splitlines() if trace.exists() else []
    trace.unlink(missing_ok=True)
    return Outcome(done.returncode, lines, done.stdout, done.stderr)


# --- the world a command runs in, and what must hold after a kill -----------------------------

@dataclass
class World:
    """A directory with a key store and files; copied afresh for every run."""

    root: Path
    keys: dict[str, bytes] = field(default_factory=dict)
    consumers: dict[str, list[Consumer]] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def store(self) -> Path:
        return self.root / "keys"

    def copy(self, root: Path) -> World:
        shutil.copytree(self.root, root, symlinks=True)
        return World(root, self.keys, self.consumers, self.files)


def make_world(root: Path, *, keys: int = 2, store: bool = True) -> World:
    root.mkdir()
    world = World(root)
    if store:
        ks = LocalKeyStore(world.store)
        for i in range(keys):
            key_id = ks.create_key(f"k{i}")
            world.keys[key_id] = ks.get_key(key_id)
            world.consumers[key_id] = []
        first = next(iter(world.keys))
        consumer = Consumer(service="image", resource_type="image", resource_id=IMAGE)
        ks.add_consumer(first, consumer)
        world.consumers[first] = [consumer]
    return world


def decrypt_file(path: Path, store: Path, image: str | None = None) -> tuple[bytes, list[str]]:
    ks = LocalKeyStore(store)
    out = io.BytesIO()
    with open(path, "rb") as src:
        summary = envelope.decrypt(src, out, lambda kind, key_id: ks.get_key(key_id)
                                   if kind == "local" else None,
                                   image_id=uuid.UUID(image) if image else None)
    return out.getvalue(), [s.key_id for s in summary.header.slots]


def check_store(world: World, *, deleting: str | None = None) -> list[str]:
    """The store invariants; return the leftover temp file names."""
    store = world.store
    if not store.exists():
        assert not world.keys
        return []
    ks = LocalKeyStore(store)
    names = sorted(os.listdir(store))
    final = {n.removesuffix(".key.json") for n in names
             if n.endswith(".key.json") and not n.startswith(".")}
    for key_id in final:
        assert len(ks.get_key(key_id)) == 32
        ks.list_consumers(key_id)
    listed = {k.key_id for k in ks.list_keys()}
    assert listed == final
    run = cli("keys", "list", "--json", "--key-store", str(store))
    assert run.code == 0, run.err
    assert {k["key_id"] for k in json.loads(run.out)} == final
    for key_id, key in world.keys.items():
        if key_id == deleting and key_id not in final:
            continue
        assert ks.get_key(key_id) == key
        assert ks.list_consumers(key_id) == world.consumers[key_id]
    temps = [n for n in names if n.endswith(".tmp")]
    for name in temps:
        assert KEY_TEMP.fullmatch(name), name
        assert stat.S_IMODE(os.lstat(store / name).st_mode) == 0o600
    orphans = {f"{deleting}.consumers.json"} if deleting not in final else set()
    expected = {f"{k}.key.json" for k in final} | {".lock", *temps} | orphans
    expected |= {f"{k}.consumers.json" for k in final
                 if (store / f"{k}.consumers.json").exists()}
    assert set(names) <= expected, set(names) - expected
    return temps


def check_outputs(world: World, outputs: dict[str, Callable[[Path], None]]) -> list[str]:
    """Each output is complete or absent; only our temp names besides; return the temps."""
    names = set(os.listdir(world.root))
    temps = []
    for name, complete in outputs.items():
        if name in names:
            complete(world.root / name)
        part = re.compile(rf"\.{re.escape(name)}\.[a-z0-9_]{{8}}\.part")
        temps += [n for n in names if part.fullmatch(n)]
    expected = {"keys", *world.files, *outputs, *temps}
    assert names <= expected, names - expected
    return temps


@dataclass
class Sweep:
    points: int = 0
    partials: int = 0
    runs: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    temps: int = 0


def sweep(world: World, tmp: Path, argv: Callable[[World], list[str]],
          check: Callable[[World, bool], list[str]]) -> Sweep:
    """Kill the command at every point, then at every write half done; check after each."""
    result = Sweep()
    dry_world = world.copy(tmp / "dry")
    dry = run_harness(argv(dry_world), tmp)
    assert dry.code == 0, dry.err
    check(dry_world, True)
    shutil.rmtree(dry_world.root)
    kinds = [line.split()[1] for line in dry.trace]
    result.points = len(kinds)
    for kind in kinds:
        result.kinds[kind] = result.kinds.get(kind, 0) + 1
    plan = [(n, False) for n in range(1, len(kinds) + 2)]
    plan += [(n, True) for n, kind in enumerate(kinds, 1) if kind == "write"]
    result.partials = len(plan) - len(kinds) - 1
    for n, partial in plan:
        copy = world.copy(tmp / f"run-{n}-{int(partial)}")
        outcome = run_harness(argv(copy), tmp, kill_at=n, partial=partial)
        finished = n == len(kinds) + 1
        assert outcome.code == (0 if finished else SIGKILLED), (n, partial, outcome.err)
        assert len(outcome.trace) == min(n, len(kinds)), (n, outcome.trace)
        result.temps += len(check(copy, finished))
        result.runs += 1
        shutil.rmtree(copy.root)
    print(f"{argv(world)[:2]}: {result}")
    return result


# --- the commands -----------------------------------------------------------------------------

def test_keys_create_into_a_store_with_keys(tmp_path: Path) -> None:
    world = make_world(tmp_path / "world")

    def check(w: World, finished: bool) -> list[str]:
        temps = check_store(w)
        if finished:
            assert len(LocalKeyStore(w.store).list_keys()) == 3 and not temps
        return temps

    result = sweep(world, tmp_path, lambda w: ["keys", "create", "--name", "new",
                                               "--key-store", str(w.store)], check)
    assert result.kinds == {"open": 1, "fchmod": 1, "write": 1, "fsync": 2, "replace": 1}
    assert result.temps > 0  # some kills left a temp file, and it was checked


def test_keys_create_into_a_new_store(tmp_path: Path) -> None:
    world = make_world(tmp_path / "world", store=False)

    def check(w: World, finished: bool) -> list[str]:
        temps = check_store(w)
        for directory in (w.root / "a", w.root / "a" / "b", w.store):
            if directory.exists():
                assert stat.S_IMODE(directory.stat().st_mode) & 0o077 == 0
        if finished:
            assert len(LocalKeyStore(w.store).list_keys()) == 1
        return temps

    def argv(w: World) -> list[str]:
        w.root.joinpath("keys").symlink_to(w.root / "a" / "b" / "keys")
        return ["keys", "create", "--key-store", str(w.root / "a" / "b" / "keys")]

    result = sweep(world, tmp_path, argv, check)
    assert result.kinds["mkdir"] == 3 and result.kinds["chmod"] == 3


def test_encrypt_with_a_new_key_and_an_image(tmp_path: Path) -> None:
    world = make_world(tmp_path / "world", keys=1)
    plain = os.urandom(3 * 16384 + 77)
    world.files["plain"] = plain
    (world.root / "plain").write_bytes(plain)

    def complete(path: Path) -> None:
        store = path.parent / "keys"
        data, [key_id] = decrypt_file(path, store, IMAGE)
        assert data == plain
        assert key_id not in world.keys  # the new key, published before the file
        assert Consumer(service="image", resource_type="image", resource_id=IMAGE) in \
            LocalKeyStore(store).list_consumers(key_id)

    def check(w: World, finished: bool) -> list[str]:
        temps = check_store(w) + check_outputs(w, {"out.icr": complete})
        if finished:
            assert (w.root / "out.icr").exists() and not temps
        return temps

    result = sweep(world, tmp_path, lambda w: [
        "encrypt", str(w.root / "plain"), str(w.root / "out.icr"), "--image-id", IMAGE,
        "--key-store", str(w.store)], check)
    assert result.kinds["link"] == 1 and result.kinds["replace"] == 2
    assert result.temps > 0


def encrypted_world(root: Path) -> World:
    """A store with two keys and ``ct``: ``plain`` encrypted under the first key."""
    world = make_world(root)
    plain = os.urandom(3 * 16384 + 77)
    world.files["plain"] = plain
    (world.root / "plain").write_bytes(plain)
    first = next(iter(world.keys))
    run = cli("encrypt", str(world.root / "plain"), str(world.root / "ct"), "--kek", first,
              "--key-store", str(world.store))
    assert run.code == 0, run.err
    world.files["ct"] = (world.root / "ct").read_bytes()
    return world


def test_encrypt_force_over_an_existing_output(tmp_path: Path) -> None:
    world = encrypted_world(tmp_path / "world")
    new_plain = os.urandom(2 * 16384 + 5)
    world.files["new"] = new_plain
    (world.root / "new").write_bytes(new_plain)
    first = next(iter(world.keys))

    def old_or_new(path: Path) -> None:
        if path.read_bytes() != world.files["ct"]:
            assert decrypt_file(path, path.parent / "keys")[0] == new_plain

    def check(w: World, finished: bool) -> list[str]:
        temps = check_store(w) + check_outputs(w, {"ct": old_or_new})
        assert (w.root / "ct").exists()  # never absent, not even for a moment
        if finished:
            assert (w.root / "ct").read_bytes() != world.files["ct"] and not temps
        return temps

    result = sweep(world, tmp_path, lambda w: [
        "encrypt", str(w.root / "new"), str(w.root / "ct"), "--kek", first, "--force",
        "--key-store", str(w.store)], check)
    assert result.kinds == {"open": 1, "fchmod": 1, "write": 3, "replace": 1}


def test_decrypt(tmp_path: Path) -> None:
    world = encrypted_world(tmp_path / "world")

    def complete(path: Path) -> None:
        assert path.read_bytes() == world.files["plain"]

    def check(w: World, finished: bool) -> list[str]:
        temps = check_store(w) + check_outputs(w, {"out": complete})
        if finished:
            assert (w.root / "out").exists() and not temps
        return temps

    # on two threads (the default on a multi-core host) the small payload is one job: one write
    result = sweep(world, tmp_path, lambda w: [
        "decrypt", str(w.root / "ct"), str(w.root / "out"), "--key-store", str(w.store),
        "--threads", "2"], check)
    assert result.kinds == {"open": 1, "fchmod": 1, "write": 1, "link": 1, "unlink": 1}


def test_rewrap_to_a_new_file(tmp_path: Path) -> None:
    world = encrypted_world(tmp_path / "world")
    first, second = world.keys

    def complete(path: Path) -> None:
        data, slots = decrypt_file(path, path.parent / "keys")
        assert data == world.files["plain"] and slots == [first, second]

    def check(w: World, finished: bool) -> list[str]:
        temps = check_store(w) + check_outputs(w, {"out": complete})
        assert (w.root / "ct").read_bytes() == world.files["ct"]
        if finished:
            assert (w.root / "out").exists() and not temps
        return temps

    result = sweep(world, tmp_path, lambda w: [
        "rewrap", str(w.root / "ct"), str(w.root / "out"), "--add-kek", second,
        "--key-store", str(w.store)], check)
    assert result.kinds == {"open": 1, "fchmod": 1, "write": 2, "link": 1, "unlink": 1}


def test_rewrap_in_place(tmp_path: Path) -> None:
    world = encrypted_world(tmp_path / "world")
    first, second = world.keys

    def original_or_new(path: Path) -> None:
        if path.read_bytes() == world.files["ct"]:
            return
        data, slots = decrypt_file(path, path.parent / "keys")
        assert data == world.files["plain"] and slots == [second]

    def check(w: World, finished: bool) -> list[str]:
        temps = check_store(w) + check_outputs(w, {"ct": original_or_new})
        assert (w.root / "ct").exists()
        if finished:
            assert (w.root / "ct").read_bytes() != world.files["ct"] and not temps
        return temps

    result = sweep(world, tmp_path, lambda w: [
        "rewrap", str(w.root / "ct"), str(w.root / "ct"), "--force", "--add-kek", second,
        "--remove-kek", first, "--key-store", str(w.store)], check)
    assert result.kinds == {"open": 1, "fchmod": 1, "write": 2, "replace": 1}


def test_keys_delete_of_a_key_with_consumers(tmp_path: Path) -> None:
    world = make_world(tmp_path / "world")
    first = next(iter(world.keys))

    def check(w: World, finished: bool) -> list[str]:
        temps = check_store(w, deleting=first)
        if finished:
            assert not (w.store / f"{first}.key.json").exists()
            assert not (w.store / f"{first}.consumers.json").exists()
        return temps

    result = sweep(world, tmp_path, lambda w: [
        "keys", "delete", first, "--force", "--key-store", str(w.store)], check)
    assert result.kinds == {"open": 1, "unlink": 2, "fsync": 1}


# --- real timing ------------------------------------------------------------------------------

BIG = 64 << 20
KILLS = 6
SEED = 20240606


def digest(path: Path) -> str:
    h = hashlib.blake2b()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def timed_run(argv: list[str], kill_after: float | None) -> tuple[int, float]:
    env = {k: v for k, v in os.environ.items() if k != "IMG_CRYPT_KEY_STORE"}
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "img_crypt", *argv], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if kill_after is not None:
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.kill()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, SIGKILLED), err
    return proc.returncode, time.monotonic() - started


def test_sigkill_at_random_times_on_a_large_image(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    world = make_world(tmp_path / "world")
    first, second = world.keys
    store = str(world.store)
    plain, ct, original = world.root / "plain", world.root / "ct", world.root / "ct.orig"
    with open(plain, "wb") as f:
        for _ in range(BIG >> 22):
            f.write(os.urandom(1 << 22))
    plain_digest = digest(plain)
    assert timed_run(["encrypt", str(plain), str(original), "--kek", first, "--key-store",
                      store], None)[0] == 0
    ct_digest = digest(original)

    def decrypts(path: Path, slots: list[str]) -> None:
        out = world.root / "check.raw"
        run = cli("decrypt", str(path), str(out), "--key-store", store)
        assert run.code == 0, run.err
        assert digest(out) == plain_digest
        out.unlink()
        header = json.loads(cli("inspect", "--json", str(path)).out)
        assert [s["key_id"] for s in header["key_slots"]] == slots

    def plain_out(path: Path) -> None:
        assert digest(path) == plain_digest

    def in_place(path: Path) -> None:
        if os.stat(path).st_ino == os.stat(original).st_ino:
            assert digest(path) == ct_digest
        else:
            decrypts(path, [second])

    commands: list[tuple[list[str], str, Callable[[Path], None]]] = [
        (["encrypt", str(plain), str(world.root / "out.icr"), "--kek", first],
         "out.icr", lambda p: decrypts(p, [first])),
        (["decrypt", str(original), str(world.root / "out.raw")], "out.raw", plain_out),
        (["rewrap", str(ct), str(ct), "--force", "--add-kek", second, "--remove-kek", first],
         "ct", in_place),
    ]
    world.files |= {"plain": b"", "ct.orig": b""}
    killed_midway = 0
    for argv, name, complete in commands:
        def reset(name: str = name) -> None:
            for leftover in world.root.iterdir():
                if leftover.name not in ("keys", "plain", "ct.orig"):
                    leftover.unlink()
            if name == "ct":
                os.link(original, ct)  # the original inode: a replace leaves it untouched

        reset()
        code, duration = timed_run([*argv, "--key-store", store], None)
        assert code == 0
        for _ in range(KILLS):
            reset()
            code, _ = timed_run([*argv, "--key-store", store], rng.uniform(0.05, duration))
            temps = check_store(world) + check_outputs(world, {name: complete})
            killed_midway += code == SIGKILLED and bool(temps)
    assert digest(original) == ct_digest
    print(f"random kills: {KILLS * len(commands)}, left a temp file: {killed_midway}")
    assert killed_midway >= 1  # at least one kill landed while a file was being written
