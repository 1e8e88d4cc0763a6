"""The NVML fingerprint: a fake NVML module drives every path; no GPU is needed."""

from types import SimpleNamespace

from longctx.provenance import fingerprint, nvml_snapshot, sha256_json


class NVMLError(Exception):
    pass


def fake_nvml(count=2, broken=()):
    """A stand-in for pynvml: two H100s; names in ``broken`` raise like an unsupported NVML query."""

    def fn(name, value):
        def call(*args):
            if name in broken:
                raise NVMLError(f"{name} not supported")
            return value(*args) if callable(value) else value

        return call

    return SimpleNamespace(
        NVML_CLOCK_SM=0,
        NVML_CLOCK_MEM=1,
        NVML_TEMPERATURE_GPU=0,
        nvmlDeviceGetCount=fn("count", count),
        nvmlDeviceGetHandleByIndex=fn("handle", lambda i: f"h{i}"),
        nvmlDeviceGetName=fn("name", b"NVIDIA H100 80GB HBM3"),
        nvmlDeviceGetCudaComputeCapability=fn("cc", (9, 0)),
        nvmlDeviceGetMemoryInfo=fn("mem", SimpleNamespace(total=85_000_000_000)),
        nvmlSystemGetDriverVersion=fn("driver", "570.86.15"),
        nvmlSystemGetCudaDriverVersion=fn("cuda_driver", 12080),
        nvmlDeviceGetClockInfo=fn("clock", lambda h, kind: 1980 if kind == 0 else 2619),
        nvmlDeviceGetTemperature=fn("temp", 41),
        nvmlDeviceGetPowerUsage=fn("power", 123_000),
        nvmlDeviceGetEnforcedPowerLimit=fn("limit", 700_000),
        nvmlDeviceGetCurrentClocksEventReasons=fn("reasons", 0),
    )


def test_fake_nvml_identity_and_observed():
    identity, observed = nvml_snapshot(fake_nvml())
    assert identity["count"] == 2 and identity["available"]
    assert identity["devices"][0]["name"] == "NVIDIA H100 80GB HBM3"
    assert identity["devices"][1]["compute_capability"] == "9.0"
    assert identity["driver_version"] == "570.86.15"
    assert observed[0]["power_draw_w"] == 123.0 and observed[0]["power_limit_w"] == 700.0
    assert observed[0]["sm_clock_mhz"] == 1980 and observed[0]["clock_event_reasons"] == 0


def test_every_nvml_call_is_guarded():
    identity, observed = nvml_snapshot(fake_nvml(broken={"temp", "power", "name", "driver", "reasons"}))
    assert "unavailable" in identity["devices"][0]["name"]
    assert "not supported" in identity["driver_version"]["unavailable"]
    assert "unavailable" in observed[0]["temperature_c"]
    assert "unavailable" in observed[0]["power_draw_w"]
    assert observed[0]["sm_clock_mhz"] == 1980


def test_no_gpu_says_so():
    identity, observed = nvml_snapshot(fake_nvml(count=0))
    assert identity["available"] is False and identity["reason"] and observed == []
    identity, _ = nvml_snapshot(fake_nvml(broken={"count"}))
    assert identity["available"] is False and "not supported" in identity["reason"]


def test_identity_hash_ignores_observed_telemetry():
    nvml = fake_nvml()
    first = fingerprint(nvml)
    hot = fake_nvml()
    hot.nvmlDeviceGetTemperature = lambda *a: 85
    second = fingerprint(hot)
    assert first["identity_hash"] == second["identity_hash"] == sha256_json(first["identity"])
    assert first["observed"]["gpus"][0]["temperature_c"] != second["observed"]["gpus"][0]["temperature_c"]


def test_fingerprint_on_this_machine_does_not_crash():
    fp = fingerprint()
    assert "gpu" in fp["identity"] and "packages" in fp["identity"]
    assert fp["identity"]["packages"]["transformers"].startswith("5.")
