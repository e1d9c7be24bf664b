"""`edgeimg build-engine`, `edgeimg engines [verify]` and `edgeimg bench`.

Exit status: 0 done, 1 the engine failed (verification, build, none found), 2 usage errors and
backends that cannot run here (one line saying what is missing).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from edgeimg.backends.base import BackendUnavailable
from edgeimg.commands.options import calib_option, triton_option
from edgeimg.commands.precision import describe_race, precision_option, race_summary
from edgeimg.commands.weights import use_weights, weights_option
from edgeimg.console import err, out, print_json
from edgeimg.engine import store
from edgeimg.engine.build import AUTO
from edgeimg.engine.errors import EngineError
from edgeimg.plugins import get_registry

STALE = "stale (keyed before the current engine key): rebuilt on next use"


def _fail(message: str, status: int) -> None:
    err.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
    raise SystemExit(status)


@contextmanager
def engine_errors() -> Iterator[None]:
    """Known failures become one line on stderr and a meaningful exit status, not a traceback."""
    try:
        yield
    except BackendUnavailable as error:
        _fail(str(error), 2)
    except EngineError as error:
        _fail(str(error), 1)


def _csv(value: str | None) -> list[str] | None:
    return [item.strip() for item in value.split(",") if item.strip()] if value else None


engines_dir_option = click.option(
    "--engines-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where engines live (default: $EDGEIMG_ENGINES or ./engines).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


@click.command("build-engine")
@click.argument("name")
@click.option(
    "--backend",
    default="auto",
    show_default=True,
    help="onnxruntime, openvino, torch, tensorrt, triton or a plugin's; auto: race the backends "
    "available here (triton only when named).",
)
@precision_option()
@calib_option()
@click.option("--max-batch", type=click.IntRange(min=1), default=8, show_default=True)
@engines_dir_option
@click.option("--force", is_flag=True, help="Rebuild even when a cached engine matches.")
@click.option("--no-verify", is_flag=True, help="Skip verification against torch FP32.")
@triton_option
@weights_option()
@json_option
def build_engine_command(
    name: str,
    backend: str,
    precision: str,
    calib: tuple[Path, ...],
    max_batch: int,
    engines_dir: Path | None,
    force: bool,
    no_verify: bool,
    weights: Path | None,
    as_json: bool,
) -> None:
    """Export NAME to ONNX, calibrate (INT8), compile, verify against torch and store."""
    from edgeimg.engine.build import build_engine

    use_weights(name, weights)
    if precision == AUTO and no_verify:
        raise click.UsageError(
            "--no-verify needs an explicit --precision (auto races verified engines)"
        )
    registry = get_registry()
    with engine_errors(), err.status("building engine") as status:
        result = build_engine(
            registry.model(name),
            registry.backends,
            backend,
            precision,
            list(calib),
            max_batch,
            engines_dir,
            force,
            not no_verify,
            progress=lambda step: status.update(step),
        )
    if as_json:
        print_json(result.as_dict())
        return
    state = "cached" if result.cached else "built"
    out.print(f"{state} {result.model} {result.precision} {result.backend} engine {result.key}")
    out.print(f"  {escape(str(result.path))}")
    out.print(f"  {describe_verification(result.manifest.get('verification', {}))}")
    if result.manifest.get("race"):
        out.print(f"  {escape(describe_race(result.manifest['race']))}")


def describe_verification(verification: dict[str, Any]) -> str:
    """One line: the metric of torch FP32 and the engine, or why there is none."""
    if not verification.get("verified"):
        return f"not verified ({verification.get('reason', 'unknown')})"
    return (
        f"{verification['metric']}: torch fp32 {verification['torch_fp32']:.4f}, "
        f"engine {verification['engine']:.4f} (drift {verification['drift']:.4f}, "
        f"max abs diff {verification['max_abs_diff']:.3g})"
    )


def _listing(root: Path) -> list[dict[str, Any]]:
    rows = []
    for directory in store.engine_dirs(root):
        manifest = store.read_manifest(directory) or {}
        rows.append(
            {
                "model": directory.parent.name,
                "key": directory.name,
                "path": str(directory),
                "stale": not store.is_current(manifest),
                "model_version": manifest.get("model_version"),
                "backend": manifest.get("backend"),
                "backend_version": manifest.get("backend_version"),
                "precision": manifest.get("precision"),
                "device": manifest.get("device"),
                "built_at": manifest.get("built_at"),
                "verification": manifest.get("verification"),
                "race": race_summary(manifest.get("race")),
            }
        )
    return rows


@click.group(invoke_without_command=True)
@engines_dir_option
@json_option
@click.pass_context
def engines(ctx: click.Context, engines_dir: Path | None, as_json: bool) -> None:
    """List built engines: model, backend, precision, device and accuracy."""
    ctx.obj = store.engines_root(engines_dir)
    if ctx.invoked_subcommand is not None:
        return
    rows = _listing(ctx.obj)
    if as_json:
        print_json({"engines_dir": str(ctx.obj), "engines": rows})
        return
    table = Table(title=f"engines in {escape(str(ctx.obj))}")
    for column in ("model", "key", "backend", "precision", "device", "built", "verification"):
        table.add_column(column, no_wrap=column in ("model", "key"))
    for row in rows:
        device = row["device"] or {}
        gpu = (device.get("gpu") or {}).get("name")
        table.add_row(
            row["model"],
            row["key"],
            f"{row['backend']} {row['backend_version']}",
            str(row["precision"]),
            escape(gpu or device.get("cpu") or "?"),
            str(row["built_at"]),
            escape(STALE if row["stale"] else describe_verification(row["verification"] or {})),
        )
    out.print(table)
    for row in rows:
        if row["race"]:
            out.print(f"{row['model']} {row['key']}: {escape(describe_race(row['race']))}")


def _checked(directory: Path) -> dict[str, Any]:
    """One engine's problems; a stale one (keyed before the current key) is not broken."""
    manifest = store.read_manifest(directory)
    return {
        "model": directory.parent.name,
        "key": directory.name,
        "path": str(directory),
        "stale": manifest is not None and not store.is_current(manifest),
        "problems": store.check(directory, manifest),
    }


@engines.command("verify")
@json_option
@click.pass_obj
def verify_command(root: Path, as_json: bool) -> None:
    """Re-check every stored engine's files against the hashes in its manifest."""
    checked = [_checked(d) for d in store.engine_dirs(root)]
    bad = [item for item in checked if item["problems"] and not item["stale"]]
    if as_json:
        print_json({"engines_dir": str(root), "engines": checked, "ok": not bad})
    else:
        for item in checked:
            state = (
                "[yellow]stale[/]"
                if item["stale"]
                else "[red]bad[/]"
                if item["problems"]
                else "[green]ok[/]"
            )
            detail = escape("; ".join(item["problems"]))
            out.print(f"{state} {item['model']}/{item['key']} {detail}".rstrip())
        out.print(f"{len(checked) - len(bad)} of {len(checked)} engines intact or stale")
    if bad:
        raise SystemExit(1)


@click.command()
@click.argument("name")
@click.option("--backends", help="Comma-separated backends (default: all available here).")
@click.option("--precisions", help="Comma-separated precisions (default: all each supports).")
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--seconds", type=click.FloatRange(min=0.1), default=10.0, show_default=True)
@engines_dir_option
@triton_option
@weights_option()
@json_option
def bench(
    name: str,
    backends: str | None,
    precisions: str | None,
    batch: int,
    seconds: float,
    engines_dir: Path | None,
    weights: Path | None,
    as_json: bool,
) -> None:
    """Measure NAME on each backend and precision side by side, against torch FP32 eager."""
    from edgeimg.engine.bench import bench as run_bench

    use_weights(name, weights)
    with engine_errors(), err.status(f"benchmarking {name} at batch {batch}"):
        registry = get_registry()
        report = run_bench(
            registry.model(name),
            registry.backends,
            _csv(backends),
            _csv(precisions),
            batch,
            seconds,
            engines_dir,
        )
    if as_json:
        print_json(report)
        return
    table = Table(title=f"{name}, batch {batch}, {escape(report['device']['cpu'])}")
    for column in ("backend", "precision", "images/s", "p50 ms", "p95 ms", "vs torch fp32"):
        table.add_column(column, justify="right" if column[0] in "ipv" else "left")
    for row in report["results"]:
        table.add_row(
            row["backend"],
            row["precision"],
            f"{row['images_per_s']:.1f}",
            f"{row['p50_ms']:.2f}",
            f"{row['p95_ms']:.2f}",
            f"{row['ratio_to_torch_fp32']:.2f}x",
        )
    out.print(table)
    for row in report["results"]:
        if row.get("chosen"):
            versus = row.get("ratio_to_onnxruntime_fp32")
            share = f", {versus:.2f}x onnxruntime fp32" if versus else ""
            out.print(f"auto is {row['chosen']} (the race winner here){share}")
    for item in report["skipped"]:
        out.print(f"skipped {item['backend']} {item['precision']}: {escape(item['reason'])}")
