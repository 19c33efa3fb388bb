import pytest

from inferno.bench import BenchConfig
from inferno.bench.config import check_url, make_config, parse_list
from inferno.errors import ConfigError


def test_defaults() -> None:
    config = BenchConfig(model="digits")
    assert config.url == "http://127.0.0.1:8000"
    assert config.concurrency == (1, 16, 64) and config.rates == ()
    assert config.levels() == [("concurrency", 1), ("concurrency", 16), ("concurrency", 64)]


def test_rates_alone_run_only_rates() -> None:
    assert BenchConfig(model="m", rates=(50.0, 100.0)).levels() == [("rate", 50.0), ("rate", 100.0)]
    both = BenchConfig(model="m", rates=(50.0,), concurrency=(2,))
    assert both.levels() == [("concurrency", 2), ("rate", 50.0)]


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"duration_s": 0}, "--duration"),
        ({"warmup_s": -1}, "--warmup"),
        ({"timeout_s": 0}, "--timeout"),
        ({"concurrency": (0,)}, "--concurrency"),
        ({"concurrency": (5000,)}, "--concurrency"),
        ({"rates": (-5.0,)}, "--rate"),
        ({"max_requests": 0}, "--max-requests"),
        ({"batch": 0}, "--batch"),
        ({"concurrency": (), "rates": ()}, "--concurrency and --rate"),
        ({"url": "ftp://127.0.0.1"}, "--url"),
        ({"model": ""}, "--model"),
    ],
)
def test_bad_values_name_the_option(fields: dict[str, object], fragment: str) -> None:
    settings: dict[str, object] = {"model": "m", **fields}
    with pytest.raises(ConfigError, match=fragment):
        make_config(**settings)


def test_frozen() -> None:
    config = BenchConfig(model="m")
    with pytest.raises(ValueError, match="frozen"):
        config.duration_s = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000"),
        ("https://inference.example.com", "https://inference.example.com"),
        ("HTTP://LocalHost:9", "http://localhost:9"),
        ("http://[::1]:8000", "http://[::1]:8000"),
    ],
)
def test_url_accepted(url: str, expected: str) -> None:
    assert check_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "127.0.0.1:8000",
        "ftp://127.0.0.1",
        "http://",
        "http://127.0.0.1:8000/v2/models",
        "http://127.0.0.1:8000?x=1",
        "http://127.0.0.1:8000#frag",
        "http://user:pw@127.0.0.1:8000",
        "http://127.0.0.1:99999",
        "http://127.0.0.1:port",
    ],
)
def test_url_rejected(url: str) -> None:
    with pytest.raises(ConfigError, match="--url"):
        check_url(url)


def test_parse_list() -> None:
    assert parse_list("--concurrency", "1, 16,64", int) == (1, 16, 64)
    assert parse_list("--rate", "50,99.5", float) == (50.0, 99.5)
    for bad in ("", "1,,x", "1.5"):
        with pytest.raises(ConfigError, match="--concurrency"):
            parse_list("--concurrency", bad, int)


def test_grpc_protocol_from_the_url_or_the_option() -> None:
    by_url = BenchConfig(model="m", url="grpc://127.0.0.1:9001")
    assert by_url.protocol == "grpc" and by_url.grpc_address == "127.0.0.1:9001"
    assert by_url.server == "grpc://127.0.0.1:9001"
    default_port = BenchConfig(model="m", protocol="grpc")
    assert default_port.grpc_address == "127.0.0.1:8001"
    on_port = BenchConfig(model="m", url="http://10.0.0.5:8000", protocol="grpc", grpc_port=9)
    assert on_port.grpc_address == "10.0.0.5:9" and on_port.server == "grpc://10.0.0.5:9"
    assert BenchConfig(model="m", url="grpc://[::1]", protocol=None).grpc_address == "[::1]:8001"
    http = BenchConfig(model="m", protocol=None, binary=True)
    assert http.protocol == "http" and http.binary and http.server == http.url


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        (
            {"protocol": "grpc", "binary": True},
            "--binary: Triton's binary tensor extension is HTTP's",
        ),
        ({"grpc_port": 9001}, "--grpc-port 9001: only with --protocol grpc"),
        ({"protocol": "http", "url": "grpc://127.0.0.1:8001"}, "--protocol http: expected an http"),
        ({"url": "grpc://127.0.0.1:8001", "grpc_port": 8002}, "name different ports"),
        ({"protocol": "grpc", "url": "https://example.com"}, "gRPC over TLS"),
        ({"protocol": "quic"}, "--protocol"),
        ({"grpc_port": 0, "protocol": "grpc"}, "--grpc-port"),
        ({"clients": 0}, "--clients"),
        ({"clients": 65}, "--clients"),
        ({"url": "grpcs://127.0.0.1"}, "--url"),
    ],
)
def test_bad_protocol_settings_name_the_options(fields: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        make_config(**{"model": "m", **fields})


def test_check_url_takes_grpc_only_when_asked() -> None:
    assert check_url("grpc://Host:8001", grpc=True) == "grpc://host:8001"
    with pytest.raises(ConfigError, match=r"expected http\(s\)://host\[:port\], e.g."):
        check_url("grpc://host:8001")
