"""GET /metrics: Prometheus text with job figures from the registry and request latency by
route template."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.api.helpers import JOBS, Api


def _samples(api: Api) -> dict[tuple[str, tuple], float]:
    response = api.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def test_jobs_by_status_and_queue_depth(api: Api) -> None:
    before = _samples(api)
    assert before[("steer_jobs", (("status", "queued"),))] == 0
    first = api.job_ok()
    api.job_ok(first["training_file"])
    api.job_ok(first["training_file"], gpus=1)
    assert api.client.post(f"{JOBS}/{first['id']}/cancel").status_code == 200
    after = _samples(api)
    assert after[("steer_jobs", (("status", "queued"),))] == 2
    assert after[("steer_jobs", (("status", "cancelled"),))] == 1
    assert after[("steer_queue_depth", (("queue", "cpu"),))] == 1
    assert after[("steer_queue_depth", (("queue", "gpu1"),))] == 1
    assert after[("steer_running_tokens_per_second", ())] == 0
    assert after[("steer_trained_tokens_total", ())] == 0


def test_request_latency_is_labelled_by_route_template(api: Api) -> None:
    job = api.job_ok()
    for _ in range(3):
        assert api.client.get(f"{JOBS}/{job['id']}").status_code == 200
    assert api.client.get(f"{JOBS}/ftjob-nope").status_code == 404
    samples = _samples(api)
    route = "/v1/fine_tuning/jobs/{job_id}"
    ok = ("method", "GET"), ("route", route), ("status", "200")
    assert samples[("steer_http_request_duration_seconds_count", ok)] == 3
    missing = ("method", "GET"), ("route", route), ("status", "404")
    assert samples[("steer_http_request_duration_seconds_count", missing)] == 1
    assert not any(job["id"] in str(labels) for _, labels in samples)
