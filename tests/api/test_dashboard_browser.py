"""The dashboard (``GET /dashboard``) clicked through in a real headless Chromium.

Playwright drives Debian's ``/usr/bin/chromium`` (no browser download). The first test runs the
real service with a real worker: upload a file, create a job from the form, watch it train to
``succeeded`` with its loss curve drawn, download the adapter, open its per-layer page.
Screenshots go to ``test-artifacts/dashboard/``. The second serves the app with auth on: the
page shows the 401 in its error banner until a key is entered. The others run the API without
a worker, jobs given metrics, checkpoints and adapters through the registry: the create form's
fields and defaults, the API's 400 next to it, two jobs compared, a deleted adapter, and a job's
checkpoints.
"""

from __future__ import annotations

import os
import re
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from registry import jobs as jobs_repo
from registry import progress
from registry.db import session_scope
from tests.api.conftest import running_api
from tests.api.helpers import Api, register_adapter
from tests.service.harness import ROOT, Service, running_service
from tests.steering_core.train_helpers import write_sums

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
HP = "method.post_block.hyperparameters"  # the create form's hyperparameter fields
TRAIN_TIMEOUT_MS = 180_000
ADMIN = "sk-admin-dashboard-test"


def _missing(reason: str) -> None:
    """Skip on a developer's machine; fail in CI, whose setup installs both."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (scripts/setup.sh installs it)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed")
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def open_page(browser: Any) -> Iterator[tuple[Any, list[str]]]:
    """A fresh browser context (own localStorage) and page; yields the page and the uncaught
    script errors it raised."""
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page, errors
    finally:
        context.close()


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


@contextmanager
def service_logs_on_failure(service: Service) -> Iterator[None]:
    try:
        yield
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- service logs ---\n{service.logs()}") from exc


def test_dashboard_trains_downloads_and_shows_layers(tmp_path: Path, browser: Any) -> None:
    from playwright.sync_api import expect

    train = write_sums(tmp_path / "sums.jsonl", n=48)
    shots: list[Path] = []
    with (
        running_service(tmp_path, "embedded") as service,
        service_logs_on_failure(service),
        open_page(browser) as (page, errors),
    ):
        service.start_worker("w1")
        assert page.goto(f"{service.url}/dashboard").status == 200
        expect(page.get_by_test_id("jobs-empty")).to_be_visible()
        expect(page.get_by_test_id("error-banner")).to_be_hidden()

        # upload: the form shows the file's id and status, and the create form selects it
        page.get_by_test_id("upload-file").set_input_files(str(train))
        page.get_by_test_id("upload-button").click()
        expect(page.get_by_test_id("upload-status")).to_have_text("processed")
        file_id = page.get_by_test_id("upload-file-id").inner_text()
        assert file_id.startswith("file-")
        expect(page.get_by_test_id("upload-result")).to_contain_text("48 examples")
        expect(page.get_by_test_id("create-file")).to_have_value(file_id)

        # create a job from the form; the page moves to the job
        page.get_by_test_id("create-model").select_option("tiny-llama")
        page.get_by_test_id("create-method").select_option("post_block")
        page.locator(f'[data-param="{HP}.n_epochs"]').fill("3")
        page.get_by_test_id("create-button").click()
        page.wait_for_url(re.compile(r"#/jobs/ftjob-"))
        job_id = page.url.rsplit("/", 1)[1]
        job = service.job(job_id)
        assert job["training_file"] == file_id and job["model"] == "tiny-llama"
        assert job["method"]["post_block"]["hyperparameters"]["n_epochs"] == 3
        expect(page.get_by_test_id("job-id")).to_have_text(job_id)

        # it trains to the end, the page following it
        expect(page.get_by_test_id("job-status")).to_have_text(
            "succeeded", timeout=TRAIN_TIMEOUT_MS
        )
        expect(page.get_by_test_id("job-progress")).to_contain_text("100 %")
        expect(page.get_by_test_id("event-log")).to_contain_text(
            "The job has successfully completed"
        )
        events = page.get_by_test_id("event").all_inner_texts()
        assert "The job has successfully completed" in events[-1], events[-3:]  # oldest first
        loss = page.locator('[data-testid="loss-chart"] polyline[data-series="train_loss"]')
        expect(loss).to_have_count(1)
        points = (loss.get_attribute("points") or "").split()
        assert len(points) >= 2, points
        expect(page.locator('[data-testid="loss-chart"] [data-testid="x-axis"]')).to_have_count(1)
        expect(page.locator('[data-testid="loss-chart"] [data-testid="y-axis"]')).to_have_count(1)
        accuracy = page.get_by_test_id("accuracy-chart")
        expect(accuracy).to_be_visible()
        if not page.locator('[data-testid="accuracy-chart"] polyline').count():
            expect(accuracy).to_contain_text("no accuracy metric for this job")
        expect(page.get_by_test_id("job-cancel")).to_be_hidden()
        shots.append(screenshot(page, "job.png"))

        # its checkpoints, as the API lists them, each downloadable
        listed = service.http.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints").json()["data"]
        expect(page.get_by_test_id("checkpoint-row")).to_have_count(len(listed))
        if listed:
            with page.expect_download() as download_info:
                page.get_by_test_id("checkpoint-download").first.click()
            assert download_info.value.suggested_filename.endswith(".tar.gz")

        # the adapter downloads as a tar.gz holding the steering weights
        with page.expect_download() as download_info:
            page.get_by_test_id("job-download").click()
        download = download_info.value
        assert download.suggested_filename.endswith(".tar.gz"), download.suggested_filename
        archive = tmp_path / download.suggested_filename
        download.save_as(archive)
        assert archive.stat().st_size > 0
        with tarfile.open(archive) as tar:
            names = tar.getnames()
        assert any(n.endswith("/adapter_model.safetensors") for n in names), names

        # the adapter page: facts, one bar per steered layer
        adapter_id = service.job(job_id)["fine_tuned_model"]
        page.get_by_test_id("job-adapter-link").click()
        page.wait_for_url(re.compile(r"#/adapters/"))
        adapter = service.http.get(f"/v1/adapters/{adapter_id}").json()
        expect(page.get_by_test_id("adapter-reference")).to_have_text(adapter["reference"])
        expect(page.get_by_test_id("adapter-base-model")).to_have_text("tiny-llama")
        expect(page.get_by_test_id("adapter-trained-by")).to_have_text("post_block")
        expect(page.get_by_test_id("adapter-sha256")).to_have_text(adapter["sha256"])
        layers = service.http.get(f"/v1/adapters/{adapter_id}/layers").json()["layers"]
        assert len(layers) == 3  # tiny-llama: 3 layers, all steered by default
        norm_bars = page.locator('[data-testid="layer-norm-chart"] rect.bar')
        expect(norm_bars).to_have_count(len(layers))
        shift = page.locator(
            '[data-testid="layer-shift-chart"] rect.bar, '
            '[data-testid="layer-shift-chart"] rect.bar-missing'
        )
        expect(shift).to_have_count(len(layers))
        expect(page.get_by_test_id("layer-row")).to_have_count(len(layers))
        shots.append(screenshot(page, "adapter.png"))
        with page.expect_download() as download_info:
            page.get_by_test_id("adapter-download").click()
        assert download_info.value.suggested_filename == download.suggested_filename

        # back on the list: the job, its badge and its adapter link
        page.get_by_test_id("nav-jobs").click()
        row = page.locator(f'[data-testid="job-row"][data-job-id="{job_id}"]')
        expect(row.get_by_test_id("status-badge")).to_have_text("succeeded")
        expect(row.get_by_test_id("job-percent")).to_have_text("100 %")
        expect(row.get_by_test_id("adapter-link")).to_have_text(adapter["reference"])
        shots.append(screenshot(page, "jobs.png"))
        assert errors == [], errors

    for path in shots:
        assert path.is_file() and path.stat().st_size > 0, path


def test_dashboard_with_auth_on_needs_a_key(tmp_path: Path, browser: Any) -> None:
    from playwright.sync_api import expect

    with (
        running_api(tmp_path, auth="on", admin_key=ADMIN) as api,
        open_page(browser) as (
            page,
            errors,
        ),
    ):
        # the page and its assets need no key; the data calls do
        assert httpx.get(f"{api.base_url}/dashboard/static/app.js").status_code == 200
        assert api.client.get("/v1/fine_tuning/jobs").status_code == 401
        assert "/dashboard" not in api.client.get("/openapi.json").json()["paths"]

        page.goto(f"{api.base_url}/dashboard")
        banner = page.get_by_test_id("error-banner")
        expect(banner).to_be_visible()
        expect(banner).to_contain_text("401")
        expect(banner).to_contain_text("Missing API key")
        expect(page.get_by_test_id("jobs-empty")).to_have_count(0)

        page.get_by_test_id("api-key").fill(ADMIN)
        page.get_by_test_id("api-key-save").click()
        expect(page.get_by_test_id("jobs-empty")).to_be_visible()
        expect(banner).to_be_hidden()
        expect(
            page.locator('[data-testid="create-model"] option[value="tiny-llama"]')
        ).to_have_count(1)

        page.reload()  # the key is kept in localStorage
        expect(page.get_by_test_id("jobs-empty")).to_be_visible()
        expect(banner).to_be_hidden()
        assert errors == [], errors


def test_dashboard_draws_accuracy_unrecorded_shifts_and_cancels(
    tmp_path: Path, browser: Any
) -> None:
    """No worker: a real queued job is paused, resumed and cancelled from its page; its
    metrics, and an adapter
    whose shifts are partly unrecorded, are served by the browser's route interception."""
    from playwright.sync_api import expect

    metrics = [{"step": s, "name": "train_loss", "value": 2.0 / s} for s in range(1, 7)] + [
        {"step": s, "name": name, "value": value}
        for s, name, value in [
            (3, "valid_loss", 1.1),
            (3, "valid_mean_token_accuracy", 0.4),
            (6, "valid_loss", 0.7),
            (6, "valid_mean_token_accuracy", 0.65),
        ]
    ]
    adapter = {
        "object": "adapter",
        "id": "adapter-canned",
        "name": "canned",
        "version": 1,
        "reference": "canned@1",
        "created_at": 1_700_000_000,
        "base_model": "tiny-llama",
        "method": {"type": "post_block"},
        "job_id": None,
        "sha256": "0" * 64,
        "bytes": 1234,
        "files": {"adapter_model.safetensors": "1" * 64},
        "trainable_parameters": 1536,
        "metrics": None,
        "trained_by": {"method": "distill", "source": "adapter-teacher"},
        "strength_report": {
            "points": [
                {"strength": s, "score": score, "kl": kl}
                for s, score, kl in [(0.0, 0.1, 0.0), (0.5, 0.6, 0.02), (1.0, 0.9, 0.08)]
            ],
            "recommended_strength": 1.0,
            "task": "exact",
            "items": 64,
            "neutral_prompts": 32,
            "seconds": 3.5,
            "budget_seconds": 4.0,
            "complete": False,
            "reference": "strength 0",
        },
    }
    layers = {
        "object": "adapter.layers",
        "adapter": "adapter-canned",
        "site": "block_output",
        "kind": "nonlinear",
        "layers": [
            {
                "layer": i,
                "parameter_norm": 0.1 * (i + 1),
                "shift_norm": None if i % 2 else 0.01,
                "residual_norm": None if i % 2 else 4.0,
                "relative_shift": None if i % 2 else 0.0025,
            }
            for i in range(4)
        ],
    }
    with running_api(tmp_path) as api, open_page(browser) as (page, errors):
        job = api.job_ok()
        page.route(
            re.compile(rf".*/v1/fine_tuning/jobs/{job['id']}/metrics$"),
            lambda route: route.fulfill(json={"object": "list", "data": metrics}),
        )
        page.route(
            re.compile(r".*/v1/adapters/canned(@|%40)1$"),
            lambda route: route.fulfill(json=adapter),
        )
        page.route(
            re.compile(r".*/v1/adapters/canned(@|%40)1/layers$"),
            lambda route: route.fulfill(json=layers),
        )

        page.goto(f"{api.base_url}/dashboard#/jobs/{job['id']}")
        expect(page.get_by_test_id("job-status")).to_have_text("queued")
        for series in ("train_loss", "valid_loss"):
            expect(
                page.locator(f'[data-testid="loss-chart"] polyline[data-series="{series}"]')
            ).to_have_count(1)
        accuracy = page.locator('[data-testid="accuracy-chart"] polyline')
        expect(accuracy).to_have_attribute("data-series", "valid_mean_token_accuracy")
        assert len((accuracy.get_attribute("points") or "").split()) == 2
        expect(page.get_by_test_id("job-download")).to_be_hidden()
        shot = screenshot(page, "job-accuracy.png")
        assert shot.stat().st_size > 0
        expect(page.get_by_test_id("job-resume")).to_be_hidden()
        page.get_by_test_id("job-pause").click()
        expect(page.get_by_test_id("job-status")).to_have_text("paused")
        expect(page.get_by_test_id("job-pause")).to_be_hidden()
        assert api.get_json(f"/v1/fine_tuning/jobs/{job['id']}")["status"] == "paused"
        page.get_by_test_id("job-resume").click()
        expect(page.get_by_test_id("job-status")).to_have_text("queued")
        expect(page.get_by_test_id("job-resume")).to_be_hidden()
        page.get_by_test_id("job-cancel").click()
        expect(page.get_by_test_id("job-status")).to_have_text("cancelled")
        expect(page.get_by_test_id("job-cancel")).to_be_hidden()
        assert api.get_json(f"/v1/fine_tuning/jobs/{job['id']}")["status"] == "cancelled"

        page.goto(f"{api.base_url}/dashboard#/adapters/canned@1")
        expect(page.get_by_test_id("adapter-reference")).to_have_text("canned@1")
        trained_by = page.get_by_test_id("adapter-trained-by")
        expect(trained_by).to_have_text("distill from adapter-teacher")
        expect(trained_by.locator("a")).to_have_attribute("href", "#/adapters/adapter-teacher")
        expect(page.locator('[data-testid="layer-norm-chart"] rect.bar')).to_have_count(4)
        shift = page.get_by_test_id("layer-shift-chart")
        expect(shift.locator("rect.bar")).to_have_count(2)
        expect(shift.locator("rect.bar-missing")).to_have_count(2)
        expect(shift).to_contain_text("not recorded")
        expect(page.get_by_test_id("layer-row").nth(1)).to_contain_text("not recorded")
        summary = page.get_by_test_id("strength-summary")
        expect(summary).to_contain_text("Recommended strength 1")
        expect(summary).to_contain_text("not every strength measured")
        expect(page.get_by_test_id("strength-row")).to_have_count(3)
        expect(page.locator('[data-testid="strength-row"].chosen')).to_contain_text("0.9")
        points = page.locator('[data-testid="strength-score-svg"] polyline').get_attribute("points")
        assert len((points or "").split()) == 3
        screenshot(page, "adapter-strength.png")

        page.goto(f"{api.base_url}/dashboard#/jobs/ftjob-nope")
        expect(page.get_by_test_id("error-banner")).to_contain_text("404")
        assert errors == [], errors


# -- the create form, comparisons, adapters and checkpoints (real API, no worker) ---------------


def schema_leaves(schema: dict[str, Any]) -> list[str]:
    """The dotted keys of a method's settings (its config schema's leaves, ``type`` left out)."""

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        ref = node.get("$ref")
        return schema["$defs"][ref.rsplit("/", 1)[1]] if ref else node

    def walk(node: dict[str, Any], prefix: str) -> list[str]:
        keys = []
        for name, prop in resolve(node).get("properties", {}).items():
            inner = resolve(prop)
            if "properties" in inner:
                keys += walk(inner, f"{prefix}{name}.")
            elif not (prefix == "" and name == "type"):
                keys.append(f"{prefix}{name}")
        return keys

    return walk(schema, "")


def test_dashboard_create_form_sends_the_fields_set(tmp_path: Path, browser: Any) -> None:
    from playwright.sync_api import expect

    with running_api(tmp_path) as api, open_page(browser) as (page, errors):
        train = api.upload_ok(filename="train.jsonl")["id"]
        valid = api.upload_ok(filename="valid.jsonl")["id"]
        defaults = api.job_ok(train)["hyperparameters"]  # what the API resolves when unset
        methods = {m["id"]: m for m in api.get_json("/v1/methods")["data"]}

        page.goto(f"{api.base_url}/dashboard")
        field = lambda param: page.locator(f'[data-param="{param}"]')  # noqa: E731
        epochs = field(f"{HP}.n_epochs")
        expect(epochs).to_have_value("")  # empty: the API's default, which the placeholder shows
        for name in ("n_epochs", "batch_size"):  # chosen from the data when the job starts
            shown = field(f"{HP}.{name}").get_attribute("placeholder") or ""
            assert defaults[name] == "auto", defaults
            assert shown.startswith("auto: chosen from the training examples"), (name, shown)
        lr_default = methods["post_block"]["defaults"]["learning_rate"]
        expect(field(f"{HP}.learning_rate")).to_have_attribute(
            "placeholder", f"default: {lr_default}"
        )

        # the method's fields are its registry entry's settings, whichever method is chosen
        own = page.locator('[data-testid="create-method-fields"] [data-key]')
        for method in ("lora", "post_block"):
            page.get_by_test_id("create-method").select_option(method)
            keys = own.evaluate_all("nodes => nodes.map(n => n.dataset.key)")
            assert keys and sorted(keys) == sorted(schema_leaves(methods[method]["config_schema"]))

        # a bad value: the API's 400 next to the form, the field it names outlined
        learning_rate = field(f"{HP}.learning_rate")
        learning_rate.fill("5")
        refused = api.create_job(
            {
                "model": "tiny-llama",
                "training_file": train,
                "method": {
                    "type": "post_block",
                    "post_block": {"hyperparameters": {"learning_rate": 5}},
                },
            }
        )
        assert refused.status_code == 400, refused.text
        page.get_by_test_id("create-button").click()
        form_error = page.get_by_test_id("create-error")
        expect(form_error).to_contain_text(refused.json()["error"]["message"])
        expect(form_error).to_contain_text("400")
        expect(learning_rate).to_have_class(re.compile(r"\binvalid\b"))
        expect(page.get_by_test_id("error-banner")).to_be_hidden()
        assert len(api.get_json("/v1/fine_tuning/jobs")["data"]) == 1

        learning_rate.fill("0.002")
        expect(learning_rate).not_to_have_class(re.compile(r"\binvalid\b"))
        field("method.post_block.adapter.rank").fill("4")
        field("method.post_block.site.layers").fill("0, 2")
        page.get_by_test_id("create-file").select_option(train)
        page.get_by_test_id("create-validation-file").select_option(valid)
        page.locator('[data-testid="create-section-compute"] > summary').click()
        field("compute.processes").fill("2")
        field("compute.deepspeed.zero_stage").select_option(label="0")
        field("suffix").fill("form-run")
        field("seed").fill("7")
        page.locator('[data-testid="create-section-metadata"] > summary').click()
        page.get_by_test_id("create-metadata").fill("team=dashboard\nrun = 1")
        screenshot(page, "create-form.png")
        page.get_by_test_id("create-button").click()
        page.wait_for_url(re.compile(r"#/jobs/ftjob-"))
        job = api.get_json(f"/v1/fine_tuning/jobs/{page.url.rsplit('/', 1)[1]}")
        block = job["method"]["post_block"]
        assert block["hyperparameters"] == {"learning_rate": 0.002}  # only what was set
        assert job["hyperparameters"]["learning_rate"] == 0.002
        assert job["hyperparameters"]["n_epochs"] == defaults["n_epochs"]
        assert block["adapter"]["rank"] == 4 and block["site"]["layers"] == [0, 2]
        adapter_schema = methods["post_block"]["config_schema"]["$defs"]["AdapterConfig"]
        assert block["adapter"]["kind"] == adapter_schema["properties"]["kind"]["default"]
        assert job["validation_file"] == valid and job["training_file"] == train
        assert job["compute"]["processes"] == 2 and job["compute"]["gpus"] == 0
        assert job["compute"]["deepspeed"]["zero_stage"] == 0
        assert job["user_provided_suffix"] == "form-run" and job["seed"] == 7
        assert job["metadata"] == {"team": "dashboard", "run": "1"}
        expect(page.get_by_test_id("job-validation-file")).to_have_text(valid)
        assert errors == [], errors


def finished_job(
    api: Api,
    training_file: str,
    *,
    learning_rate: float,
    train_loss: list[float],
    valid: dict[int, tuple[float, float | None]],
    adapter: str | None,
    checkpoints: tuple[int, ...] = (),
) -> str:
    """A job created through the API, then given metrics, checkpoints and an adapter in the
    registry, as a worker would record them (no training runs)."""
    job = api.job_ok(
        training_file,
        method={
            "type": "post_block",
            "post_block": {"hyperparameters": {"learning_rate": learning_rate}},
        },
    )
    with session_scope(api.settings.resolved_database_url) as session:
        row = jobs_repo.get_job(session, job["id"])
        for step, loss in enumerate(train_loss, start=1):
            metrics = {"train_loss": loss}
            if step in valid:
                metrics["valid_loss"], accuracy = valid[step]
                if accuracy is not None:
                    metrics["valid_mean_token_accuracy"] = accuracy
            progress.record_progress(
                session,
                row,
                step=step,
                total=len(train_loss),
                trained_tokens=100 * step,
                eta_seconds=None,
                metrics=metrics,
            )
        for step in checkpoints:
            progress.add_checkpoint(session, row, step=step, path=f"ckpt/{step}", metrics=None)
        row.status, row.fine_tuned_model = "succeeded", adapter
        row.finished_at = datetime.now(UTC)
    return str(job["id"])


def test_dashboard_compares_jobs_and_shows_adapters_and_checkpoints(
    tmp_path: Path, browser: Any
) -> None:
    from playwright.sync_api import expect

    with running_api(tmp_path) as api, open_page(browser) as (page, errors):
        file_id = api.upload_ok()["id"]
        kept = register_adapter(api, "alpha", files={"adapter_model.safetensors": b"a"})
        gone = register_adapter(api, "beta", files={"adapter_model.safetensors": b"b"})
        first = finished_job(
            api,
            file_id,
            learning_rate=0.001,
            train_loss=[2.0, 1.5, 1.2, 1.0],
            valid={2: (1.6, 0.3), 4: (1.1, 0.6)},
            adapter=kept["id"],
            checkpoints=(2, 3, 4),
        )
        second = finished_job(
            api,
            file_id,
            learning_rate=0.0005,
            train_loss=[2.1, 1.9, 1.7, 1.6, 1.5],
            valid={5: (1.7, None)},
            adapter=gone["id"],
        )
        assert api.client.delete(f"/v1/adapters/{gone['id']}").status_code == 200
        assert api.client.get(f"/v1/adapters/{gone['id']}").status_code == 404

        # the list: name@version for an adapter, "deleted" (no link) for one that is gone
        page.goto(f"{api.base_url}/dashboard")
        row = lambda job_id: page.locator(f'[data-testid="job-row"][data-job-id="{job_id}"]')  # noqa: E731
        expect(row(first).get_by_test_id("adapter-link")).to_have_text("alpha@1")
        expect(row(second).get_by_test_id("adapter-deleted")).to_have_text("deleted")
        expect(row(second).locator("a[href^='#/adapters/']")).to_have_count(0)
        expect(page.get_by_test_id("compare-button")).to_be_disabled()
        row(first).get_by_test_id("job-select").check()
        row(second).get_by_test_id("job-select").check()
        expect(page.get_by_test_id("compare-count")).to_have_text("2 selected")
        screenshot(page, "jobs-selected.png")
        page.get_by_test_id("compare-button").click()
        page.wait_for_url(re.compile(r"#/compare/"))

        # one loss plot, a series per job in its own colour, and a legend naming both
        chart = page.get_by_test_id("compare-loss-chart")
        train = chart.locator('polyline[data-series="train_loss"]')
        expect(train).to_have_count(2)
        jobs = train.evaluate_all("ns => ns.map(n => [n.dataset.job, n.getAttribute('stroke')])")
        assert {job for job, _ in jobs} == {first, second}
        assert len({color for _, color in jobs}) == 2
        valid_lines = chart.locator('polyline[data-series="valid_loss"]')
        expect(valid_lines).to_have_count(2)
        dashes = valid_lines.evaluate_all("ns => ns.map(n => n.getAttribute('stroke-dasharray'))")
        assert all(dashes), dashes  # validation loss dashed
        first_points = chart.locator(f'polyline[data-series="train_loss"][data-job="{first}"]')
        assert len((first_points.get_attribute("points") or "").split()) == 4
        accuracy = page.locator('[data-testid="compare-accuracy-chart"] polyline')
        expect(accuracy).to_have_count(1)  # only the first job measured accuracy
        expect(accuracy).to_have_attribute("data-job", first)
        legend = page.get_by_test_id("compare-legend-item")
        expect(legend).to_have_count(2)
        expect(page.get_by_test_id("compare-legend")).to_contain_text(first)

        # the settings side by side, the ones that differ highlighted
        table = page.get_by_test_id("compare-table")
        expect(table).to_be_visible()
        table_row = lambda key: table.locator(f'[data-testid="compare-row"][data-key="{key}"]')  # noqa: E731
        expect(table_row("Hyperparameters:learning_rate")).to_have_attribute("data-differs", "true")
        expect(table_row("Hyperparameters:learning_rate")).to_have_class(re.compile(r"\bdiff\b"))
        expect(table_row("Hyperparameters:learning_rate")).to_contain_text("0.0005")
        expect(table_row("Job:model")).to_have_attribute("data-differs", "false")
        expect(table_row("Method settings:adapter.rank")).to_have_attribute("data-differs", "false")
        expect(table_row("Results:adapter")).to_contain_text("alpha@1")
        expect(table_row("Results:adapter")).to_contain_text("deleted")
        screenshot(page, "compare.png")

        # a job whose adapter is gone: "deleted", no link, no download
        page.goto(f"{api.base_url}/dashboard#/jobs/{second}")
        expect(page.get_by_test_id("job-status")).to_have_text("succeeded")
        expect(page.get_by_test_id("job-fine-tuned-model")).to_have_text("deleted")
        expect(page.locator('[data-testid="job-fine-tuned-model"] a')).to_have_count(0)
        expect(page.get_by_test_id("job-download")).to_be_hidden()
        expect(page.get_by_test_id("job-adapter-link")).to_be_hidden()
        expect(page.get_by_test_id("checkpoints-empty")).to_have_text(
            "this job saved no checkpoints"
        )

        # a job's checkpoints, as the API lists them; a value not measured reads as a dash
        listed = api.get_json(f"/v1/fine_tuning/jobs/{first}/checkpoints")["data"]
        assert sorted(c["step_number"] for c in listed) == [2, 3, 4]
        page.goto(f"{api.base_url}/dashboard#/jobs/{first}")
        expect(page.get_by_test_id("job-fine-tuned-model")).to_have_text("alpha@1")
        expect(page.get_by_test_id("job-adapter-link")).to_have_text("Adapter alpha@1 →")
        rows = page.get_by_test_id("checkpoint-row")
        expect(rows).to_have_count(3)
        for checkpoint in listed:
            shown = page.locator(
                f'[data-testid="checkpoint-row"][data-step="{checkpoint["step_number"]}"]'
            )
            expect(shown.get_by_test_id("checkpoint-model")).to_have_text(
                checkpoint["fine_tuned_model_checkpoint"]
            )
            for name in ("train_loss", "valid_loss"):
                value = checkpoint["metrics"][name]
                expect(shown.locator(f'[data-metric="{name}"]')).to_have_text(
                    "—" if value is None else f"{value:g}"
                )
        step_3 = page.locator('[data-testid="checkpoint-row"][data-step="3"]')
        expect(step_3.locator('[data-metric="valid_loss"]')).to_have_text("—")  # no eval at 3
        screenshot(page, "job-checkpoints.png")
        assert errors == [], errors
