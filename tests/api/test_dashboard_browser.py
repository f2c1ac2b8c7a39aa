"""The dashboard (``GET /dashboard``) clicked through in a real headless Chromium.

Playwright drives Debian's ``/usr/bin/chromium`` (no browser download). The first test runs the
real service with a real worker: upload a file, create a job from the form, watch it train to
``succeeded`` with its loss curve drawn, download the adapter, open its per-layer page.
Screenshots go to ``test-artifacts/dashboard/``. The second serves the app with auth on: the
page shows the 401 in its error banner until a key is entered.
"""

from __future__ import annotations

import os
import re
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import running_api
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
        page.get_by_test_id("create-epochs").fill("3")
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
        expect(row.get_by_test_id("adapter-link")).to_have_text(adapter_id)
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
    """No worker: a real queued job is cancelled from its page; its metrics, and an adapter
    whose shifts are partly unrecorded, are served by the browser's route interception."""
    from playwright.sync_api import expect

    metrics = [{"step": s, "name": "train_loss", "value": 2.0 / s} for s in range(1, 7)] + [
        {"step": s, "name": name, "value": value}
        for s, name, value in [
            (3, "valid_loss", 1.1),
            (3, "valid_accuracy", 0.4),
            (6, "valid_loss", 0.7),
            (6, "valid_accuracy", 0.65),
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
        expect(accuracy).to_have_attribute("data-series", "valid_accuracy")
        assert len((accuracy.get_attribute("points") or "").split()) == 2
        expect(page.get_by_test_id("job-download")).to_be_hidden()
        shot = screenshot(page, "job-accuracy.png")
        assert shot.stat().st_size > 0
        page.get_by_test_id("job-cancel").click()
        expect(page.get_by_test_id("job-status")).to_have_text("cancelled")
        expect(page.get_by_test_id("job-cancel")).to_be_hidden()
        assert api.get_json(f"/v1/fine_tuning/jobs/{job['id']}")["status"] == "cancelled"

        page.goto(f"{api.base_url}/dashboard#/adapters/canned@1")
        expect(page.get_by_test_id("adapter-reference")).to_have_text("canned@1")
        expect(page.locator('[data-testid="layer-norm-chart"] rect.bar')).to_have_count(4)
        shift = page.get_by_test_id("layer-shift-chart")
        expect(shift.locator("rect.bar")).to_have_count(2)
        expect(shift.locator("rect.bar-missing")).to_have_count(2)
        expect(shift).to_contain_text("not recorded")
        expect(page.get_by_test_id("layer-row").nth(1)).to_contain_text("not recorded")

        page.goto(f"{api.base_url}/dashboard#/jobs/ftjob-nope")
        expect(page.get_by_test_id("error-banner")).to_contain_text("404")
        assert errors == [], errors
