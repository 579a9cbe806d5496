"""``bash scripts/demo.sh --cloud``: the plugin's main job on a real cloud on 127.0.0.1.

Starts Keystone 30, Barbican 23 (its shipped default policies) and Glance 33 whose plugin
configuration is README.md's Glance block (:func:`tests.servers.cloud.start_cloud`, the same
cloud the real-auth tests use), then acts as project A's member with a clouds.yaml, as a user
would: openstacksdk imports a sample image (glance-direct), ``img-crypt`` shows its consumer in
Barbican, downloads and decrypts it, and after the image is deleted shows its key gone. The
servers stop on exit, also on failure or Ctrl-C. Run from the repository root:
``python -m scripts.cloud_demo``.
"""

from __future__ import annotations

import argparse
import hashlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.servers import barbican, glance, keystone
from tests.servers._process import clean_env
from tests.servers.cloud import Cloud, start_cloud

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "demo-out" / "cloud"
OUTPUTS = ("clouds.yaml", "disk.raw", "downloaded.raw", "stored.icr", "decrypted.raw")
CLOUD_NAME = "img-crypt-demo"
IMG_CRYPT = str(Path(sys.executable).parent / "img-crypt")
BARBICAN = ("--key-manager", "barbican", "--os-cloud", CLOUD_NAME)
IMPORT_TIMEOUT = 300.0
DELETE_TIMEOUT = 30.0
Say = Callable[[str], None]


class DemoError(Exception):
    """A step did not do what the demo shows."""


@dataclass(frozen=True)
class Outcome:
    """What the demo did: the image, its key, and what it saw."""

    image_id: str
    key_id: str
    properties: dict[str, str]
    consumers_shown: str
    key_gone_shown: str


def clouds_yaml(cloud: Cloud) -> str:
    """A clouds.yaml with one entry: project A's member, password authentication."""
    m = cloud.a
    return (f"clouds:\n  {CLOUD_NAME}:\n    auth:\n      auth_url: {m.auth_url}\n"
            f"      username: {m.name}\n      password: {m.password}\n"
            f"      project_name: {m.project}\n      user_domain_name: Default\n"
            f"      project_domain_name: Default\n    identity_api_version: 3\n"
            f"    region_name: RegionOne\n    interface: public\n")


def sha256(path: Path) -> str:
    """The file's SHA-256 (hex)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class Demo:
    """The user's side: openstacksdk and ``img-crypt`` with the demo's clouds.yaml."""

    def __init__(self, cloud: Cloud, out: Path, say: Say) -> None:
        self.out, self.say = out, say
        self.config = out / "clouds.yaml"
        self.config.write_text(clouds_yaml(cloud))
        self.env = clean_env({"OS_CLIENT_CONFIG_FILE": str(self.config)})

    def connect(self) -> Any:
        """An openstacksdk connection from the clouds.yaml entry."""
        import openstack.config
        import openstack.connection

        config = openstack.config.OpenStackConfig(config_files=[str(self.config)])
        return openstack.connection.Connection(config=config.get_one(CLOUD_NAME))

    def cli(self, *args: str, succeed: bool = True, show: bool = True) -> str:
        """Run ``img-crypt ARGS``; show the command and its output; check the exit status."""
        shown = " ".join(a.replace(str(self.out) + "/", "") for a in args)
        proc = subprocess.run([IMG_CRYPT, *args], env=self.env, capture_output=True, text=True,
                              check=False, cwd=self.out)
        output = (proc.stdout + proc.stderr).strip()
        if show:
            self.say(f"   $ img-crypt {shown}")
            for line in output.splitlines():
                self.say(f"     {line}")
        if (proc.returncode == 0) != succeed:
            raise DemoError(f"img-crypt {shown}: exit {proc.returncode}: {output[-500:]}")
        return output


def wait_imported(conn: Any, image_id: str) -> Any:
    """The image once Glance's import task released it; DemoError unless it is active."""
    deadline = time.monotonic() + IMPORT_TIMEOUT
    while True:
        image = conn.image.get_image(image_id)
        props = image.properties or {}
        if not props.get("os_glance_import_task"):
            if image.status != "active":
                raise DemoError(f"import failed: status {image.status}, "
                                f"{props.get('os_glance_failed_import')!r}")
            return image
        if time.monotonic() > deadline:
            raise DemoError(f"import still running after {IMPORT_TIMEOUT:.0f} s")
        time.sleep(0.5)


def wait_key_gone(demo: Demo, key_id: str) -> str:
    """Poll until Barbican says the key is not found, then show that; DemoError if it stays."""
    command = ("keys", "consumers", key_id, *BARBICAN)
    deadline = time.monotonic() + DELETE_TIMEOUT
    while True:
        try:
            output = demo.cli(*command, succeed=False, show=False)
        except DemoError:  # the command succeeded: the key is still there
            if time.monotonic() > deadline:
                raise DemoError(f"key {key_id} still exists {DELETE_TIMEOUT:.0f} s after "
                                f"the delete") from None
            time.sleep(0.5)
            continue
        if "not found" not in output:
            raise DemoError(f"cannot tell whether key {key_id} is gone: {output}")
        return demo.cli(*command, succeed=False)


def run_demo(cloud: Cloud, out: Path, say: Say = print, size_mib: int = 16) -> Outcome:
    """Import, show, download, decrypt and delete one image as project A's member."""
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:  # a fresh run; nothing else in ``out`` is touched
        (out / name).unlink(missing_ok=True)
    demo = Demo(cloud, out, say)
    conn = demo.connect()
    raw = out / "disk.raw"
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_sample_image.py"), str(raw),
                    "--size-mib", str(size_mib)], check=True)
    say(f"-- 1. {cloud.a.name} (member of {cloud.a.project}) imports {raw.name} "
        f"({size_mib} MiB) with openstacksdk, glance-direct, clouds.yaml: {demo.config}")
    image = conn.image.create_image("img-crypt-demo", filename=str(raw), disk_format="raw",
                                    container_format="bare", use_import=True,
                                    allow_duplicates=True, validate_checksum=False)
    image = wait_imported(conn, image.id)
    say(f"   image {image.id}: {image.status}, Glance stores {image.size} bytes "
        f"(the original: {raw.stat().st_size})")
    props = {k: str(v) for k, v in sorted((image.properties or {}).items())
             if k.startswith("os_encrypt")}
    say("-- 2. its properties, set by the plugin")
    for name, value in props.items():
        say(f"   {name} = {value}")
    key_id = props.get("os_encrypt_key_id")
    if not key_id:
        raise DemoError("the imported image has no os_encrypt_key_id: the plugin did not run")
    say("-- 3. its key's consumer in Barbican: the image")
    consumers = demo.cli("keys", "consumers", key_id, *BARBICAN)
    if image.id not in consumers:
        raise DemoError(f"key {key_id} has no consumer for image {image.id}")
    say("-- 4. download and decrypt it (the key comes from Barbican with alice's token)")
    demo.cli("download", image.id, str(out / "downloaded.raw"), *BARBICAN)
    conn.image.download_image(image, output=str(out / "stored.icr"))
    say("   saved what Glance stores as stored.icr; decrypt that too:")
    demo.cli("decrypt", str(out / "stored.icr"), str(out / "decrypted.raw"), "--image-id",
             image.id, *BARBICAN)
    for copy in ("downloaded.raw", "decrypted.raw"):
        if sha256(out / copy) != sha256(raw):
            raise DemoError(f"{copy} differs from {raw.name}")
    say(f"   both equal {raw.name} (sha256 {sha256(raw)[:16]}...)")
    say("-- 5. delete the image; the plugin's delete hook removes the consumer, then the key")
    conn.image.delete_image(image.id)
    gone = wait_key_gone(demo, key_id)
    return Outcome(image.id, key_id, props, consumers, gone)


def main() -> int:
    """Install the servers once, start them, run the demo, stop them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"default: {OUT}")
    parser.add_argument("--size-mib", type=int, default=16)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    began = time.monotonic()
    try:
        print("-- 0. install Keystone 30, Barbican 23, Glance 33 into .servers/ "
              "(first use only), start them on 127.0.0.1", flush=True)
        for server in (keystone, barbican, glance):
            server.ensure_venv()
        print(f"   installed ({time.monotonic() - began:.0f} s); starting", flush=True)
        with start_cloud() as cloud:
            print(f"   Keystone {cloud.keystone.auth_url}, Barbican {cloud.barbican.url}, "
                  f"Glance {cloud.glance.url} (README's Glance block) "
                  f"({time.monotonic() - began:.0f} s)", flush=True)
            run_demo(cloud, args.out.resolve(), lambda line: print(line, flush=True),
                     args.size_mib)
            print("-- 6. stop the servers", flush=True)
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        return 130
    except Exception as e:  # any failure: one line, the servers are stopped already
        print(f"FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"OK in {time.monotonic() - began:.0f} s: imported encrypted, decrypted "
          "byte-identical, deleted with its key.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
