"""A service that reloads its configuration whenever a znode changes.

Start a local ensemble in one terminal, then run the service in another:

    zkpy ensemble
    python examples/config_watch.py                       # reloads until Ctrl-C
    zkpy set /examples/config '{"workers": 8}'            # in a third terminal: it reloads

or let the example change the configuration itself and stop after the last reload:

    python examples/config_watch.py --demo

(`--server` defaults to $ZKPY_SERVER, else the three members `zkpy ensemble` starts.)

The service iterates `recipes.data_watch(zk, path)`: the current value at once, then one value
per change (a deleted znode shows up as None, and the service keeps its last good config). Each
read re-arms the watch in the same request, so no change is missed, and a burst of changes may
be seen as one reload of the latest value.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import trio

try:
    import zkpy
    from recipes import data_watch
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import zkpy
    from recipes import data_watch

DEFAULT_SERVER = os.environ.get("ZKPY_SERVER", "127.0.0.1:2181,127.0.0.1:2182,127.0.0.1:2183")
DEMO_CONFIGS = [{"workers": 2, "mode": "warm-up"}, {"workers": 8}, {"workers": 8, "final": True}]


class Service:
    def __init__(self) -> None:
        self.config: dict[str, Any] = {}
        self.reloads = 0

    def reload(self, raw: bytes, version: int) -> None:
        try:
            config = json.loads(raw or b"{}")
        except ValueError as err:
            print(f"config version {version} is not JSON ({err}); keeping the old one", flush=True)
            return
        self.config = config
        self.reloads += 1
        print(f"reloaded config version {version}: {config}", flush=True)


async def run_service(zk: zkpy.Client, path: str, service: Service, until_final: bool) -> None:
    async for value in data_watch(zk, path):
        if value is None:
            print(f"{path} does not exist; keeping {service.config}", flush=True)
            continue
        data, stat = value
        service.reload(data, stat.version)
        if until_final and service.config.get("final"):
            return


async def demo_writer(zk: zkpy.Client, path: str, service: Service) -> None:
    for config in DEMO_CONFIGS:
        await zk.set(path, json.dumps(config).encode())
        print(f"  (demo: wrote {config})", flush=True)
        with trio.move_on_after(5):  # pace the demo: let the service see each one
            while service.config != config:
                await trio.sleep(0.01)


async def main_async(args: argparse.Namespace) -> None:
    async with zkpy.connect(args.server) as zk:
        try:
            await zk.create(args.path, b'{"workers": 1}', makepath=True)
        except zkpy.errors.NodeExistsError:
            if args.demo:  # start the demo from a known config
                await zk.set(args.path, b'{"workers": 1}')
        service = Service()
        async with trio.open_nursery() as nursery:
            if args.demo:
                nursery.start_soon(demo_writer, zk, args.path, service)
            await run_service(zk, args.path, service, until_final=args.demo)
            nursery.cancel_scope.cancel()
        print(f"{service.reloads} reloads; final config {service.config}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", default=DEFAULT_SERVER)
    parser.add_argument("--path", default="/examples/config")
    parser.add_argument("--demo", action="store_true", help="change the config, then stop")
    args = parser.parse_args()
    try:
        trio.run(main_async, args)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
