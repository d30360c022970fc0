"""Simulated vendors on loopback for `gateway demo` and the end-to-end tests.

One real HTTP server (uvicorn) per vendor, each on its own port, serving `POST {path}/chat/completions`,
`POST {path}/embeddings`, `GET {path}/models` in that vendor's dialect (`gateway.demo.dialects`), plus
`POST /_control`, `GET /_stats` and `POST /_reset` for steering failures and counting requests.

The vendors are read from the demo config (`config/demo.yaml`): which providers exist, the path of their
`api_base`, their key, and the models they serve (each deployment's `upstream_model`, context window and
output limit), so the simulation cannot drift from the deployments the gateway routes to.

    async with VendorCluster() as cluster:          # or: cluster, stop = run_in_thread()
        os.environ.update(env_for(cluster))         # DEMO_<PROVIDER>_URL, interpolated by config/demo.yaml
        cluster.control("deepseek", "error_500", count=1)
        cluster.stats("deepseek")["requests"]
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Iterator, Mapping, Sequence
from urllib.parse import urlsplit

import uvicorn

from gateway.config.load import load_config
from gateway.config.schema import Config
from gateway.demo.anthropic_vendor import ANTHROPIC_CACHE
from gateway.demo.dialects import MOONSHOT, dialect_for
from gateway.demo.prompt_cache import CachePolicy, PrefixCache
from gateway.demo.vendor_app import DroppedConnection, ModelSpec, VendorServer, VendorSpec

DEFAULT_DEMO_CONFIG = Path(__file__).resolve().parents[2] / "config" / "demo.yaml"
_START_TIMEOUT_S = 10.0


def specs_from_config(path: str | os.PathLike[str] = DEFAULT_DEMO_CONFIG,
                      env: Mapping[str, str] | None = None) -> list[VendorSpec]:
    """One VendorSpec per `api_style: openai` provider of the config, serving its deployments' upstream models.

    An `api_style: anthropic` provider on the same host and port as an openai-style one is that vendor's
    Anthropic-format endpoint (DeepSeek's `/anthropic`): its path and its deployments' models join the vendor's.
    A provider's `cache:` settings (mode, ttl_s, min_tokens), when the config has them, set the vendor's prompt
    cache, so the simulation caches as the gateway is told the vendor does.
    `env` defaults to empty, so `${DEMO_X_URL:-default}` resolves to the default and yields the path.
    """
    config = load_config(path, env={} if env is None else env)
    openai_style = {n: p for n, p in config.providers.items() if p.api_style == "openai"}
    twins: dict[str, str] = {}  # openai-style provider -> the anthropic-style provider at its host:port
    for name, candidate in config.providers.items():
        if candidate.api_style == "anthropic":
            host = urlsplit(candidate.api_base).netloc
            twin = next((n for n, o in openai_style.items() if urlsplit(o.api_base).netloc == host), None)
            if twin is not None:
                twins[twin] = name
    specs = []
    for name, provider in openai_style.items():
        dialect = dialect_for(name)
        twin_name = twins.get(name)
        models = _models(config, {name} | ({twin_name} if twin_name is not None else set()))
        api_key = provider.api_key.get_secret_value() if provider.api_key else ""
        path_part = urlsplit(provider.api_base).path.rstrip("/")
        chat_cache = _policy(getattr(provider, "cache", None), dialect.cache)
        spec = VendorSpec(name, path_part, api_key, models, dialect,
                          cache="dialect" if chat_cache is _UNSET else chat_cache)
        if twin_name is not None:
            twin_cfg = config.providers[twin_name]
            explicit = _policy(getattr(twin_cfg, "cache", None), ANTHROPIC_CACHE)
            spec = replace(spec, anthropic_path=urlsplit(twin_cfg.api_base).path.rstrip("/"),
                           anthropic_cache=ANTHROPIC_CACHE if explicit is _UNSET else explicit,
                           aliases=(twin_name,))
        specs.append(spec)
    return specs


def _models(config: Config, providers: set[str]) -> tuple[ModelSpec, ...]:
    models: dict[str, ModelSpec] = {}
    for d in config.deployments:
        if d.provider not in providers:
            continue
        upstream = d.upstream_model or d.model
        seen = models.get(upstream)
        # Two deployments may name one upstream model (e.g. two prices for deepseek-chat): serve the widest.
        models[upstream] = ModelSpec(
            name=upstream,
            context_window=max(d.context_window, seen.context_window if seen else 0),
            max_output_tokens=_max_opt(d.max_output_tokens, seen.max_output_tokens if seen else None),
            mode=d.mode,
        )
    return tuple(models.values())


class _Unset:
    pass


_UNSET: Any = _Unset()


def _policy(setting: Any, default: CachePolicy | None) -> Any:
    """The cache policy a provider's `cache:` setting gives (None: no cache), or _UNSET when it sets none.

    The block size stays the vendor's own (the config knows TTL and minimum, not the vendor's granularity).
    """
    if setting is None:
        return _UNSET
    mode = getattr(setting, "mode", None)
    if mode == "none":
        return None
    base = default or CachePolicy(block_tokens=64, min_tokens=0)
    changes = {k: v for k in ("ttl_s", "min_tokens") if (v := getattr(setting, k, None)) is not None}
    return replace(base, **changes)


def default_ports(path: str | os.PathLike[str] = DEFAULT_DEMO_CONFIG) -> dict[str, int]:
    """The ports of the config's default URLs (e.g. 18101 for volcengine), for a demo whose URLs stay stable.

    One per simulated vendor: an anthropic-style provider is served on its OpenAI-format twin's port.
    """
    config = load_config(path, env={})
    return {name: port for name, p in config.providers.items()
            if p.api_style == "openai" and (port := urlsplit(p.api_base).port)}


def _max_opt(a: int | None, b: int | None) -> int | None:
    return None if a is None and b is None else max(a or 0, b or 0)


def moonshot_spec(api_key: str = "demo-moonshot-key", path: str = "/v1") -> VendorSpec:
    """A Moonshot vendor (usage in `choices[0].usage` of the last stream chunk); not in config/demo.yaml."""
    models = tuple(
        ModelSpec(f"moonshot-v1-{k}k", k * 1024, None) for k in (8, 32, 128)
    )
    return VendorSpec("moonshot", path, api_key, models, MOONSHOT)


class _HideDeliberateDrops(logging.Filter):
    """`drop_mid_stream` closes connections by raising; that is the point, not an error worth a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not _is_drop(exc)


def _is_drop(exc: BaseException | None) -> bool:
    if isinstance(exc, DroppedConnection):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_drop(e) for e in exc.exceptions)
    return False


_DROP_FILTER = _HideDeliberateDrops()


class _VendorUvicorn(uvicorn.Server):
    """A uvicorn server that leaves signals to whoever owns the process (the demo command, pytest)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class VendorCluster:
    """All simulated vendors, started and stopped together on the running event loop."""

    def __init__(self, specs: Sequence[VendorSpec] | None = None,
                 config_path: str | os.PathLike[str] = DEFAULT_DEMO_CONFIG) -> None:
        specs = list(specs) if specs is not None else specs_from_config(config_path)
        self.vendors: dict[str, VendorServer] = {s.provider: VendorServer(s) for s in specs}
        self.urls: dict[str, str] = {}  # provider -> api_base URL, path included
        self.anthropic_urls: dict[str, str] = {}  # provider -> its Anthropic-format base URL (DeepSeek's /anthropic)
        self.ports: dict[str, int] = {}
        self._servers: list[_VendorUvicorn] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, host: str = "127.0.0.1", ports: Mapping[str, int] | None = None) -> None:
        """Bind every vendor (port 0 or absent = a free port) and serve; returns once all accept connections."""
        logging.getLogger("uvicorn.error").addFilter(_DROP_FILTER)  # idempotent: a Filter is added once
        ports = ports or {}
        try:
            for provider, vendor in self.vendors.items():
                sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((host, ports.get(provider, 0)))
                except OSError:
                    sock.close()
                    raise
                port = sock.getsockname()[1]
                vendor.bind_loop()
                # log_config/log_level None and access_log left at its default: uvicorn would otherwise
                # reconfigure the process-wide `uvicorn.*` loggers, which the gateway's own server shares.
                config = uvicorn.Config(vendor.app, log_config=None, log_level=None, lifespan="off", ws="none",
                                        timeout_graceful_shutdown=1)
                server = _VendorUvicorn(config)
                self._servers.append(server)
                self._tasks.append(asyncio.create_task(server.serve(sockets=[sock]), name=f"vendor-{provider}"))
                url_host = f"[{host}]" if ":" in host else host
                self.ports[provider] = port
                self.urls[provider] = f"http://{url_host}:{port}{vendor.spec.path}"
                if vendor.spec.anthropic_base is not None:
                    self.anthropic_urls[provider] = f"http://{url_host}:{port}{vendor.spec.anthropic_base.rstrip('/')}"
            await self._wait_started()
        except BaseException:
            await self.stop()
            raise

    async def _wait_started(self) -> None:
        deadline = asyncio.get_running_loop().time() + _START_TIMEOUT_S
        while not all(s.started for s in self._servers):
            for task in self._tasks:
                if task.done():
                    task.result()  # surfaces the start-up error
                    raise RuntimeError(f"{task.get_name()} stopped during start-up")
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("simulated vendors did not start in time")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        for vendor in self.vendors.values():
            vendor.close()  # ends `timeout` hangs so shutdown does not wait on them
        for server in self._servers:
            server.should_exit = True
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._servers.clear()
        self._tasks.clear()

    async def __aenter__(self) -> VendorCluster:
        await self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    def _vendor(self, provider: str) -> VendorServer:
        """The vendor of a provider name; an anthropic-style twin (deepseek-anthropic) names its vendor too."""
        vendor = self.vendors.get(provider) or next(
            (v for v in self.vendors.values() if provider in v.spec.aliases), None)
        if vendor is None:
            raise KeyError(f"no simulated vendor {provider!r}; have {', '.join(self.vendors)}")
        return vendor

    def control(self, provider: str, mode: str, delay_s: float = 0.0, count: int | None = None) -> None:
        """Same as `POST /_control`, in-process (safe from any thread, and from the serving loop itself)."""
        self._vendor(provider).control.set(mode, delay_s, count)

    def stats(self, provider: str) -> dict[str, Any]:
        """Same as `GET /_stats`: {requests, streams, by_model, by_endpoint, last_body, last_headers}."""
        return self._vendor(provider).stats.snapshot()

    def reset(self, provider: str | None = None) -> None:
        """Same as `POST /_reset` (every vendor when `provider` is None): mode ok, counters and cache cleared."""
        for name in [provider] if provider else list(self.vendors):
            self._vendor(name).reset()

    def spec(self, provider: str) -> VendorSpec:
        return self._vendor(provider).spec

    def _caches(self, provider: str) -> list[PrefixCache]:
        vendor = self._vendor(provider)
        anthropic = vendor.anthropic.cache if vendor.anthropic is not None else None
        return [c for c in (vendor.cache, anthropic) if c is not None]

    def clear_cache(self, provider: str | None = None) -> None:
        """Forget the remembered prompt prefixes (every vendor when `provider` is None); same as POST /_cache."""
        for name in [provider] if provider else list(self.vendors):
            for cache in self._caches(name):
                cache.clear()

    def advance_cache_clock(self, provider: str, seconds: float) -> None:
        """Age this vendor's prompt caches (both formats) by `seconds`: entries unused longer than a TTL expire."""
        caches = self._caches(provider)
        if not caches:
            raise ValueError(f"{provider} has no prompt cache")
        for cache in caches:
            cache.advance(seconds)


def env_for(cluster: VendorCluster) -> dict[str, str]:
    """The variables config/demo.yaml interpolates, pointing at the bound ports: DEMO_<PROVIDER>_URL, and
    DEMO_<PROVIDER>_ANTHROPIC_URL for a vendor that also speaks the Anthropic format."""
    env = {f"DEMO_{provider.upper()}_URL": url for provider, url in cluster.urls.items()}
    env.update({f"DEMO_{provider.upper()}_ANTHROPIC_URL": url for provider, url in cluster.anthropic_urls.items()})
    return env


class VendorClusterThread:
    """Runs a VendorCluster on its own event loop in a daemon thread, for synchronous tests and tools.

        with VendorClusterThread() as cluster:
            httpx.post(cluster.urls["deepseek"] + "/chat/completions", ...)
    """

    def __init__(self, specs: Sequence[VendorSpec] | None = None, host: str = "127.0.0.1",
                 ports: Mapping[str, int] | None = None) -> None:
        self.cluster = VendorCluster(specs)
        self._host = host
        self._ports = ports
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> VendorCluster:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=self._run, args=(loop,), name="demo-vendors", daemon=True)
        self._loop, self._thread = loop, thread
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.cluster.start(self._host, self._ports), loop).result(
                _START_TIMEOUT_S + 5)
        except BaseException:
            self._halt_loop()
            raise
        return self.cluster

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        loop.run_forever()

    def stop(self) -> None:
        if self._loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.cluster.stop(), self._loop).result(10)
        finally:
            self._halt_loop()

    def _halt_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        if not thread.is_alive():
            loop.close()

    def __enter__(self) -> VendorCluster:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def run_in_thread(specs: Sequence[VendorSpec] | None = None, host: str = "127.0.0.1",
                  ports: Mapping[str, int] | None = None) -> tuple[VendorCluster, Callable[[], None]]:
    """Start the vendors in a background thread: (cluster, stop)."""
    runner = VendorClusterThread(specs, host, ports)
    return runner.start(), runner.stop
