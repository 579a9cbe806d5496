"""Fuzzing ``envelope.decrypt`` with mutated valid files (hypothesis), and the atheris target.

Hypothesis (derandomized, no example database, so CI runs the same examples every time):

- ``test_mutated_file`` (300 examples): 1 to 4 mutations of a valid file (2 full chunks and a
  300-byte final chunk, bound, two slots: the fuzz target's ``three-chunks-bound-ab`` seed):
  bit flips, byte sets, insertions (1 to 32 bytes), deletions (1 to 64 bytes), truncations,
  and chunk-level swaps, duplications and drops; positions are uniform over the file or within
  20 bytes of a field or chunk boundary. Each is decrypted (read size drawn from 1000, 4096,
  16400, 65536; image id expected or not; into a recording sink or a regular file, which goes
  through the write-behind thread).
- ``test_random_payload_after_a_valid_header`` (300 examples): the file's header (and
  optionally its salt and commitment, or those and its first chunk) followed by 0 to 49,200
  seeded random bytes.

Only FormatError, AuthenticationError and BindingError may escape (KeyNotFoundError only when
the mutated header parses and names no key the reader holds); a mutated input that differs from
the original must fail; and the output must be ``PLAIN[:16384 * k]`` where the k chunks lie
entirely before the first byte at which the input differs from the original (nothing for a
format or binding failure).

The atheris target ``tests/fuzz/fuzz_decrypt.py`` is exercised without atheris: its
``TestOneInput`` runs over its 5 seeds and 400 deterministic mutations of them (bit flips, byte
sets, inserts, erases, truncations, duplicated ranges, cross-overs between seeds), the
outcomes must include success, FormatError and AuthenticationError, its oracle must catch an
injected bug, and the module must import with atheris absent.
"""

from __future__ import annotations

import importlib.util
import io
import random
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from img_crypt import envelope
from img_crypt.errors import AuthenticationError, BindingError, FormatError, KeyNotFoundError
from img_crypt.format import parse
from tests.fuzz import fuzz_decrypt as target
from tests.support.data import first_difference, seeded_bytes
from tests.support.sinks import RecordingSink

CHUNK, CT_CHUNK, PREFIX = 16384, 16400, 56
FILE = target.seeds()["three-chunks-bound-ab"]
PLAIN = target.PATTERN[:2 * CHUNK + 300]
HLEN = int.from_bytes(FILE[10:12], "big")
PAYLOAD = HLEN + PREFIX
REJECT = (FormatError, AuthenticationError, BindingError)
BOUNDARIES = (0, 8, 10, 12, 13, 29, 30, HLEN - 32, HLEN, HLEN + 24, PAYLOAD,
              PAYLOAD + CT_CHUNK, PAYLOAD + 2 * CT_CHUNK, len(FILE))
FUZZ = settings(max_examples=300, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


# --- the oracle -----------------------------------------------------------------------------

def decrypt_and_check(data: bytes, *, read_size: int, expect_image: bool,
                      to_file: bool) -> str:
    """Decrypt ``data``; check the invariants of the module docstring; return the outcome."""
    image = target.IMAGE if expect_image else None
    with tempfile.TemporaryFile(buffering=0) as file:
        sink = RecordingSink()
        try:
            envelope.decrypt(io.BytesIO(data), file if to_file else sink, target.lookup,
                             image_id=image, read_size=read_size)
            outcome: type[Exception] | None = None
        except REJECT as e:
            outcome = type(e)
        except KeyNotFoundError:
            header = parse(data[:int.from_bytes(data[10:12], "big")])
            assert all(target.lookup(s.kind, s.key_id) is None for s in header.slots)
            outcome = KeyNotFoundError
        file.seek(0)
        out = file.read() if to_file else bytes(sink.data)
    if outcome is None:
        assert data == FILE, "a modified file decrypted"
        assert out == PLAIN
        return "ok"
    offset = first_difference(data, FILE) - PAYLOAD
    bound = 0 if outcome is not AuthenticationError or offset < 0 else offset // CT_CHUNK * CHUNK
    assert len(out) % CHUNK == 0, f"{len(out)} bytes released: not whole chunks"
    assert len(out) <= bound, f"{len(out)} bytes released, at most {bound}"
    assert out == PLAIN[:len(out)], "released bytes are not the plaintext"
    return outcome.__name__


# --- hypothesis strategies ------------------------------------------------------------------

@dataclass(frozen=True)
class Op:
    """One mutation: ``pos`` is a byte offset, or a chunk index for the chunk operations."""

    kind: str
    pos: int = 0
    arg: int = 0  # bit, byte value, length, or the second chunk index
    data: bytes = b""


positions = st.one_of(
    st.integers(0, len(FILE) - 1),
    st.tuples(st.sampled_from(BOUNDARIES), st.integers(-20, 20)).map(lambda t: max(0, sum(t))),
)
chunk_index = st.integers(0, 2)
operations = st.one_of(
    st.builds(Op, st.just("flip"), positions, st.integers(0, 7)),
    st.builds(Op, st.just("set"), positions, st.integers(0, 255)),
    st.builds(Op, st.just("insert"), positions, data=st.binary(min_size=1, max_size=32)),
    st.builds(Op, st.just("delete"), positions, st.integers(1, 64)),
    st.builds(Op, st.just("truncate"), positions),
    st.builds(Op, st.just("swap"), chunk_index, chunk_index),
    st.builds(Op, st.just("duplicate"), chunk_index),
    st.builds(Op, st.just("drop"), chunk_index),
)


def _chunk(index: int) -> slice:
    return slice(PAYLOAD + index * CT_CHUNK, PAYLOAD + (index + 1) * CT_CHUNK)


def mutate(data: bytes, ops: list[Op]) -> bytes:
    """Apply ``ops`` in order; chunk operations use the original file's chunk grid."""
    out = bytearray(data)
    for op in ops:
        pos = min(op.pos, max(len(out) - 1, 0))
        if op.kind == "flip" and out:
            out[pos] ^= 1 << op.arg
        elif op.kind == "set" and out:
            out[pos] = op.arg
        elif op.kind == "insert":
            out[pos:pos] = op.data
        elif op.kind == "delete":
            del out[pos:pos + op.arg]
        elif op.kind == "truncate":
            del out[pos:]
        elif op.kind == "swap":
            a, b = _chunk(op.pos), _chunk(op.arg)
            if len(out[a]) == len(out[b]):
                out[a], out[b] = out[b], out[a]
        elif op.kind == "duplicate":
            out[_chunk(op.pos).start:_chunk(op.pos).start] = out[_chunk(op.pos)]
        elif op.kind == "drop":
            del out[_chunk(op.pos)]
    return bytes(out)


OUTCOMES: dict[str, set[str]] = {}  # per test: the outcomes seen (checked by a later test)


@given(ops=st.lists(operations, min_size=1, max_size=4),
       read_size=st.sampled_from(target.READ_SIZES), expect_image=st.booleans(),
       to_file=st.booleans())
@FUZZ
def test_mutated_file(ops: list[Op], read_size: int, expect_image: bool, to_file: bool) -> None:
    outcome = decrypt_and_check(mutate(FILE, ops), read_size=read_size,
                                expect_image=expect_image, to_file=to_file)
    OUTCOMES.setdefault("mutated", set()).add(outcome)


@given(keep=st.sampled_from([HLEN, HLEN + 24, PAYLOAD, PAYLOAD + CT_CHUNK]),
       seed=st.integers(0, 2**32 - 1), size=st.integers(0, 3 * CT_CHUNK),
       read_size=st.sampled_from(target.READ_SIZES), to_file=st.booleans())
@FUZZ
def test_random_payload_after_a_valid_header(keep: int, seed: int, size: int, read_size: int,
                                             to_file: bool) -> None:
    data = FILE[:keep] + seeded_bytes(size, seed)
    outcome = decrypt_and_check(data, read_size=read_size, expect_image=True, to_file=to_file)
    assert outcome == "AuthenticationError"


def test_the_mutations_reach_every_outcome() -> None:
    """Control, run after ``test_mutated_file`` in the same process (or it re-runs it)."""
    if "mutated" not in OUTCOMES:
        test_mutated_file()
    assert OUTCOMES["mutated"] >= {"FormatError", "AuthenticationError", "BindingError"}


def test_mutate_does_what_it_says() -> None:
    c = [FILE[_chunk(i)] for i in range(3)]
    assert mutate(FILE, []) == FILE
    assert mutate(FILE, [Op("swap", 0, 1)]) == FILE[:PAYLOAD] + c[1] + c[0] + c[2]
    assert mutate(FILE, [Op("duplicate", 1)]) == FILE[:PAYLOAD] + c[0] + c[1] + c[1] + c[2]
    assert mutate(FILE, [Op("drop", 2)]) == FILE[:PAYLOAD] + c[0] + c[1]
    assert mutate(FILE, [Op("swap", 1, 2)]) == FILE  # the short final chunk is not swapped
    assert mutate(FILE, [Op("insert", 5, data=b"xy"), Op("delete", 5, 2)]) == FILE
    assert mutate(FILE, [Op("truncate", 100)]) == FILE[:100]
    assert len(c[2]) == 316 and b"".join(c) == FILE[PAYLOAD:]


def test_the_oracle_catches_leaks(monkeypatch: pytest.MonkeyPatch) -> None:
    def leaky(source: object, sink: RecordingSink, *args: object, **kwargs: object) -> None:
        sink.write(PLAIN[:CHUNK])
        raise AuthenticationError()

    monkeypatch.setattr(envelope, "decrypt", leaky)
    with pytest.raises(AssertionError, match="at most 0"):
        decrypt_and_check(mutate(FILE, [Op("flip", PAYLOAD)]), read_size=1000,
                          expect_image=False, to_file=False)


# --- the atheris target, without atheris ----------------------------------------------------

def libfuzzer_like_mutations(count: int) -> list[bytes]:
    """``count`` deterministic mutations of the target's seeds, in the spirit of libFuzzer's."""
    rng = random.Random(20240604)
    corpus = list(target.seeds().values())
    out = []
    for _ in range(count):
        data = bytearray(rng.choice(corpus))
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(len(data) + 1)
            step = rng.randrange(7)
            if step == 0 and data:
                data[min(pos, len(data) - 1)] ^= 1 << rng.randrange(8)
            elif step == 1 and data:
                data[min(pos, len(data) - 1)] = rng.randrange(256)
            elif step == 2:
                data[pos:pos] = rng.randbytes(rng.randint(1, 16))
            elif step == 3:
                del data[pos:pos + rng.randint(1, 64)]
            elif step == 4:
                del data[pos:]
            elif step == 5:
                start = rng.randrange(len(data) + 1)
                data[pos:pos] = data[start:start + rng.randint(1, 20000)]
            else:
                other = rng.choice(corpus)
                cut = rng.randrange(len(other) + 1)
                data = data[:pos] + other[cut:]
        out.append(bytes(data))
    return out


def test_the_target_over_its_seeds_and_400_mutations() -> None:
    outcomes = [target.check_input(seed) for seed in target.seeds().values()]
    assert outcomes == [  # an odd-length input is read expecting the image id
        "BindingError" if len(seed) % 2 and parse(seed[:seed[11] + 256 * seed[10]]).image_id
        is None else "ok" for seed in target.seeds().values()]
    for data in libfuzzer_like_mutations(400):
        target.TestOneInput(data)
        outcomes.append(target.check_input(data))
    assert {"ok", "FormatError", "AuthenticationError"} <= set(outcomes)


def test_the_target_catches_a_foreign_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("not an img-crypt error")

    monkeypatch.setattr(envelope, "decrypt", broken)
    with pytest.raises(ValueError, match="not an img-crypt error"):
        target.TestOneInput(FILE)


def test_the_target_catches_a_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    def leaky(source: object, sink: RecordingSink, *args: object, **kwargs: object) -> None:
        sink.write(b"\x00" * CHUNK)
        raise AuthenticationError()

    monkeypatch.setattr(envelope, "decrypt", leaky)
    with pytest.raises(AssertionError, match="not the plaintext"):
        target.TestOneInput(FILE)


def test_the_target_imports_without_atheris(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "atheris", None)  # "import atheris" now fails
    path = Path(target.__file__)
    spec = importlib.util.spec_from_file_location("fuzz_decrypt_without_atheris", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert callable(module.TestOneInput)


def test_the_seed_corpus_is_written_by_code(tmp_path: Path) -> None:
    argv = target.argv_with_corpus(["fuzz_decrypt.py", "-max_total_time=1"],
                                   make_dir=lambda: str(tmp_path))
    assert argv == ["fuzz_decrypt.py", "-max_total_time=1", str(tmp_path)]
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == target.seeds()
    assert target.argv_with_corpus(["x", "corpus"]) == ["x", "corpus"]
