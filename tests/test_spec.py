"""Unit tests for ``pytest_isolate.spec``: value parsing, precedence and marker merging."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_isolate.spec import (
    BUILTIN_DEFAULTS,
    CLOCK_FORM,
    CPU_FORM,
    CPU_PERIOD_FORM,
    CPUSET_FORM,
    HOSTNAME_FORM,
    MAX_MEM,
    MEM_FORM,
    MIN_MEM,
    NET_FORM,
    NOISE_FORM,
    PIDS_FORM,
    SEED_FORM,
    SHARE_FORM,
    SPEC_KEYS,
    TIMEOUT_FORM,
    IsolationSpec,
    Settings,
    SpecError,
    check_contradictions,
    decide,
    format_cpuset,
    merge_marker_kwargs,
    option_name,
    parse_bool,
    parse_cgroup_root,
    parse_clock_offset,
    parse_cpu,
    parse_cpu_period,
    parse_cpuset,
    parse_hostname,
    parse_mem,
    parse_net,
    parse_noise,
    parse_pids,
    parse_seed,
    parse_shares,
    parse_timeout,
    resolve_cgroup_root,
    resolve_defaults,
    resolve_strict,
    spec_from_marker,
)

SRC = "@pytest.mark.isolated on test_x.py::test_y"
MiB = 2**20
GiB = 2**30


def _raises(exc: pytest.ExceptionInfo[SpecError]) -> str:
    return str(exc.value)


# -- the spec itself ---------------------------------------------------------------------------


def test_builtin_defaults() -> None:
    assert BUILTIN_DEFAULTS == IsolationSpec(
        cpu=None, mem=None, pids=4096, timeout=None, hostname="isolated", net="private"
    )
    assert SPEC_KEYS == (
        "cpu", "mem", "pids", "timeout", "hostname", "net",
        "cpu_period", "cpuset", "noise", "clock_offset", "seed",
    )  # fmt: skip
    assert (BUILTIN_DEFAULTS.cpu_period, BUILTIN_DEFAULTS.cpuset, BUILTIN_DEFAULTS.noise) == (
        None, None, 0,
    )  # fmt: skip
    assert (BUILTIN_DEFAULTS.clock_offset, BUILTIN_DEFAULTS.seed) == (0.0, None)


def test_spec_is_frozen() -> None:
    spec = IsolationSpec()
    key = "cpu"
    with pytest.raises(FrozenInstanceError):
        setattr(spec, key, 1.0)


def test_spec_error_is_value_error() -> None:
    assert issubclass(SpecError, ValueError)


def test_forms_name_the_accepted_values() -> None:
    assert CPU_FORM == ("a number of CPUs > 0, e.g. 0.3 (30% of one CPU) or 2, or None for no cap")
    assert MEM_FORM == (
        "bytes as an int, or a string like '128M', '1.5GiB', '500MB' "
        "(K/M/G/T and KiB/MiB/GiB/TiB are binary, KB/MB/GB/TB decimal), or None for no cap"
    )
    assert PIDS_FORM == "an int >= 1 (processes and threads), or None for no cap"
    assert TIMEOUT_FORM == "seconds as a number > 0, e.g. 10 or 2.5, or None for no timeout"
    assert HOSTNAME_FORM == (
        "a hostname: 1-64 characters, dot-separated labels of letters, digits and inner '-'"
    )


# -- cpu -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.3, 0.3),
        (2, 2.0),
        ("0.3", 0.3),
        (" 2 ", 2.0),
        ("1.5", 1.5),
        (0.01, 0.01),
        (64, 64.0),
        (None, None),
        ("none", None),
        ("None", None),
        (" NONE ", None),
        ("max", None),
        ("unlimited", None),
        ("off", None),
    ],
)
def test_parse_cpu_accepts(value: object, expected: float | None) -> None:
    result = parse_cpu(value, SRC)
    assert result == expected
    if expected is not None:
        assert type(result) is float


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (0, " (must be greater than 0)"),
        (-1, " (must be greater than 0)"),
        ("0", " (must be greater than 0)"),
        (-0.5, " (must be greater than 0)"),
        (0.001, " (the kernel's smallest cap is 0.01)"),
        ("0.009", " (the kernel's smallest cap is 0.01)"),
        (True, ""),
        (False, ""),
        ("abc", ""),
        ("", ""),
        ([1], ""),
        (float("nan"), ""),
        (float("inf"), ""),
        ("inf", ""),
        (1e308, " (must be at most 8192; None for no cap)"),
        ("1e12", " (must be at most 8192; None for no cap)"),
        (8193, " (must be at most 8192; None for no cap)"),
    ],
)
def test_parse_cpu_rejects(value: object, reason: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_cpu(value, SRC)
    assert _raises(exc) == f"{SRC}: invalid cpu={value!r}{reason}; expected {CPU_FORM}"


def test_parse_cpu_message_exact() -> None:
    with pytest.raises(SpecError) as exc:
        parse_cpu(0, "command line option --isolate-cpu")
    assert str(exc.value) == (
        "command line option --isolate-cpu: invalid cpu=0 (must be greater than 0); "
        "expected a number of CPUs > 0, e.g. 0.3 (30% of one CPU) or 2, or None for no cap"
    )


# -- mem -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (GiB, GiB),
        (MIN_MEM, MIN_MEM),
        ("4194304", 4 * MiB),
        ("4194304B", 4 * MiB),
        ("4096K", 4 * MiB),
        ("4096k", 4 * MiB),
        ("4096KiB", 4 * MiB),
        ("5000KB", 5_000_000),
        ("128M", 128 * MiB),
        ("128m", 128 * MiB),
        ("128MiB", 128 * MiB),
        ("128mib", 128 * MiB),
        ("500MB", 500_000_000),
        ("1G", GiB),
        ("1GiB", GiB),
        ("1GB", 1_000_000_000),
        ("1.5GiB", 1_610_612_736),
        ("1.5G", 1_610_612_736),
        (".5G", 512 * MiB),
        ("0.5 GiB", 512 * MiB),
        (" 128 M ", 128 * MiB),
        ("2.5GB", 2_500_000_000),
        ("1T", 2**40),
        ("1TiB", 2**40),
        ("1TB", 10**12),
        ("1tb", 10**12),
        (None, None),
        ("none", None),
        ("None", None),
        ("max", None),
        ("unlimited", None),
    ],
)
def test_parse_mem_accepts(value: object, expected: int | None) -> None:
    result = parse_mem(value, SRC)
    assert result == expected
    if expected is not None:
        assert type(result) is int


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("12 parsecs", ""),
        ("12 PB", ""),
        ("1e9", ""),
        ("-5M", ""),
        ("M", ""),
        ("", ""),
        ("1.2.3M", ""),
        (True, ""),
        (False, ""),
        ([1], ""),
        (1.5 * GiB, ""),
        (MIN_MEM - 1, " (must be at least 4MiB)"),
        (0, " (must be at least 4MiB)"),
        (-GiB, " (must be at least 4MiB)"),
        ("1M", " (must be at least 4MiB)"),
        ("4095K", " (must be at least 4MiB)"),
        ("4MB", " (must be at least 4MiB)"),
    ],
)
def test_parse_mem_rejects(value: object, reason: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_mem(value, SRC)
    assert _raises(exc) == f"{SRC}: invalid mem={value!r}{reason}; expected {MEM_FORM}"


def test_parse_mem_message_exact() -> None:
    with pytest.raises(SpecError) as exc:
        parse_mem("12 parsecs", "ini option isolate_mem")
    message = str(exc.value)
    assert message.startswith("ini option isolate_mem: invalid mem='12 parsecs'; expected bytes")
    assert "expected" in message and "mem=" in message and "'1.5GiB'" in message


_BINARY = {"": 1, "B": 1, "K": 2**10, "KiB": 2**10, "M": 2**20, "MiB": 2**20, "G": 2**30,
           "GiB": 2**30, "T": 2**40, "TiB": 2**40}  # fmt: skip
_DECIMAL = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_ALL_UNITS = {**_BINARY, **_DECIMAL}


@settings(max_examples=300, deadline=None, database=None)
@given(
    unit=st.sampled_from(sorted(_ALL_UNITS)),
    data=st.data(),
    lower=st.booleans(),
    spaced=st.booleans(),
)
def test_parse_mem_integer_round_trip(
    unit: str, data: st.DataObject, lower: bool, spaced: bool
) -> None:
    factor = _ALL_UNITS[unit]
    # Whole numbers of a unit, well past 2**53 bytes (where a float would round).
    count = data.draw(st.integers(min_value=-(-MIN_MEM // factor), max_value=MAX_MEM // factor))
    text = f"{count}{' ' if spaced else ''}{unit.lower() if lower else unit}"
    assert parse_mem(text, SRC) == count * factor
    assert parse_mem(count * factor, SRC) == count * factor


@settings(max_examples=300, deadline=None, database=None)
@given(
    unit=st.sampled_from(sorted(_ALL_UNITS)),
    whole=st.integers(min_value=0, max_value=10**15),
    digits=st.text(alphabet="0123456789", min_size=1, max_size=6),
)
def test_parse_mem_decimal_fraction_round_trip(unit: str, whole: int, digits: str) -> None:
    # "W.DDD<unit>" is exactly (W + DDD/10**len) units, truncated to whole bytes.
    factor = _ALL_UNITS[unit]
    scale = 10 ** len(digits)
    expected = (whole * scale + int(digits)) * factor // scale
    text = f"{whole}.{digits}{unit}"
    if expected < MIN_MEM:
        with pytest.raises(SpecError, match=r"\(must be at least 4MiB\)"):
            parse_mem(text, SRC)
    elif expected > MAX_MEM:
        with pytest.raises(SpecError, match=r"\(must be at most 8EiB; None for no cap\)"):
            parse_mem(text, SRC)
    else:
        assert parse_mem(text, SRC) == expected


@settings(max_examples=200, deadline=None, database=None)
@given(
    unit=st.sampled_from(sorted(_BINARY)),
    halves=st.integers(min_value=8 * 2**20, max_value=2**40),
)
def test_parse_mem_binary_halves_round_trip(unit: str, halves: int) -> None:
    # n + 0.5 of a binary unit is exactly representable: no rounding may creep in.
    factor = _BINARY[unit]
    if factor == 1:
        return  # half a byte: truncation, covered elsewhere
    text = f"{halves // 2}.{5 if halves % 2 else 0}{unit}"
    if halves * factor // 2 > MAX_MEM:
        with pytest.raises(SpecError, match=r"\(must be at most 8EiB; None for no cap\)"):
            parse_mem(text, SRC)
        return
    assert parse_mem(text, SRC) == halves * factor // 2


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("8.2MB", 8_200_000),
        ("64.1MB", 64_100_000),
        ("9007199254740993", 9_007_199_254_740_993),
    ],
)
def test_parse_mem_decimal_fraction_exact(value: str, expected: int) -> None:
    assert parse_mem(value, SRC) == expected


# -- pids ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, 1),
        (4096, 4096),
        ("64", 64),
        (" 64 ", 64),
        ("+64", 64),
        (None, None),
        ("none", None),
        ("max", None),
        ("off", None),
    ],
)
def test_parse_pids_accepts(value: object, expected: int | None) -> None:
    result = parse_pids(value, SRC)
    assert result == expected
    if expected is not None:
        assert type(result) is int


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (-1, " (must be at least 1)"),
        (0, " (must be at least 1)"),
        ("0", " (must be at least 1)"),
        ("-3", " (must be at least 1)"),
        (1.5, ""),
        (2.0, ""),
        ("1.5", ""),
        ("abc", ""),
        ("", ""),
        (True, ""),
        (False, ""),
        ([4], ""),
    ],
)
def test_parse_pids_rejects(value: object, reason: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_pids(value, SRC)
    assert _raises(exc) == f"{SRC}: invalid pids={value!r}{reason}; expected {PIDS_FORM}"


# -- timeout -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (10, 10.0),
        (2.5, 2.5),
        ("2.5", 2.5),
        (" 10 ", 10.0),
        (0.001, 0.001),
        (None, None),
        ("none", None),
        ("off", None),
    ],
)
def test_parse_timeout_accepts(value: object, expected: float | None) -> None:
    result = parse_timeout(value, SRC)
    assert result == expected
    if expected is not None:
        assert type(result) is float


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (0, " (must be greater than 0)"),
        (-1, " (must be greater than 0)"),
        ("0", " (must be greater than 0)"),
        ("x", ""),
        ("", ""),
        (True, ""),
        (float("inf"), ""),
        (float("nan"), ""),
        ({"s": 1}, ""),
    ],
)
def test_parse_timeout_rejects(value: object, reason: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_timeout(value, SRC)
    assert _raises(exc) == f"{SRC}: invalid timeout={value!r}{reason}; expected {TIMEOUT_FORM}"


# -- hostname ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["isolated", "a", "A1", "my-host.example.org", "x" * 64, "a-b", "1.2.3.4"],
)
def test_parse_hostname_accepts(value: str) -> None:
    assert parse_hostname(value, SRC) == value


@pytest.mark.parametrize(
    "value",
    ["bad name", "", "x" * 70, "x" * 65, "-lead", "trail-", ".dot", "under_score", "tab\there",
     None, 5, b"host"],
)  # fmt: skip
def test_parse_hostname_rejects(value: object) -> None:
    with pytest.raises(SpecError) as exc:
        parse_hostname(value, SRC)
    assert _raises(exc) == f"{SRC}: invalid hostname={value!r}; expected {HOSTNAME_FORM}"


def test_parse_hostname_message_exact() -> None:
    with pytest.raises(SpecError) as exc:
        parse_hostname("bad name", "ini option isolate_hostname")
    assert str(exc.value) == (
        "ini option isolate_hostname: invalid hostname='bad name'; "
        "expected a hostname: 1-64 characters, dot-separated labels of letters, digits and "
        "inner '-'"
    )


def test_parse_hostname_rejects_trailing_newline() -> None:
    with pytest.raises(SpecError):
        parse_hostname("host\n", SRC)


# -- resolve_defaults ------------------------------------------------------------------------------


def test_resolve_defaults_nothing_given() -> None:
    assert resolve_defaults({}, {}) == BUILTIN_DEFAULTS
    empty: dict[str, object | None] = {key: "" for key in SPEC_KEYS}
    nones: dict[str, object | None] = {key: None for key in SPEC_KEYS}
    assert resolve_defaults(empty, empty) == BUILTIN_DEFAULTS
    assert resolve_defaults(nones, empty) == BUILTIN_DEFAULTS


def test_resolve_defaults_cli_over_ini_over_builtin() -> None:
    cli: dict[str, object | None] = {"cpu": "0.5", "mem": "1G", "pids": "", "timeout": None}
    ini: dict[str, object | None] = {
        "cpu": "2",
        "mem": "512M",
        "pids": "64",
        "timeout": "30",
        "hostname": "",
    }
    assert resolve_defaults(cli, ini) == IsolationSpec(
        cpu=0.5, mem=GiB, pids=64, timeout=30.0, hostname="isolated"
    )


def test_resolve_defaults_ini_only() -> None:
    ini: dict[str, object | None] = {"mem": "512M", "hostname": "box", "pids": "none"}
    assert resolve_defaults({}, ini) == IsolationSpec(mem=512 * MiB, pids=None, hostname="box")


def test_resolve_defaults_none_word_overrides_builtin() -> None:
    assert resolve_defaults({"pids": "none"}, {"pids": "10"}).pids is None


def test_resolve_defaults_cli_error_names_the_option() -> None:
    with pytest.raises(SpecError) as exc:
        resolve_defaults({"mem": "huge"}, {"mem": "1G"})
    assert str(exc.value) == (
        f"command line option --isolate-mem: invalid mem='huge'; expected {MEM_FORM}"
    )


def test_resolve_defaults_ini_error_names_the_option() -> None:
    with pytest.raises(SpecError) as exc:
        resolve_defaults({"mem": ""}, {"mem": "12 parsecs"})
    assert str(exc.value) == (
        f"ini option isolate_mem: invalid mem='12 parsecs'; expected {MEM_FORM}"
    )


@pytest.mark.parametrize(
    ("key", "bad", "form"),
    [("cpu", "0", CPU_FORM), ("pids", "-1", PIDS_FORM), ("timeout", "x", TIMEOUT_FORM),
     ("hostname", "bad name", HOSTNAME_FORM)],
)  # fmt: skip
def test_resolve_defaults_error_sources_per_key(key: str, bad: str, form: str) -> None:
    with pytest.raises(SpecError) as exc:
        resolve_defaults({key: bad}, {})
    assert str(exc.value).startswith(f"command line option --isolate-{key}: invalid {key}=")
    assert str(exc.value).endswith(f"; expected {form}")
    with pytest.raises(SpecError) as exc:
        resolve_defaults({}, {key: bad})
    assert str(exc.value).startswith(f"ini option isolate_{key}: invalid {key}=")
    assert str(exc.value).endswith(f"; expected {form}")


def test_resolve_defaults_ini_is_not_read_when_cli_given() -> None:
    # Precedence is per key: a command line value makes the ini value irrelevant.
    assert resolve_defaults({"mem": "1G"}, {"mem": "garbage"}).mem == GiB


# -- merge_marker_kwargs -------------------------------------------------------------------------


def test_merge_closest_marker_wins_per_key() -> None:
    markers: list[tuple[tuple[object, ...], dict[str, object]]] = [
        ((), {"cpu": 0.5}),  # on the function (closest)
        ((), {"cpu": 1, "mem": "1G"}),  # on the class
        ((), {"mem": "2G", "timeout": 5, "cpu": 4}),  # on the module
    ]
    assert merge_marker_kwargs(markers, SRC) == {"cpu": 0.5, "mem": "1G", "timeout": 5}


def test_merge_keeps_explicit_none_from_closest() -> None:
    markers: list[tuple[tuple[object, ...], dict[str, object]]] = [
        ((), {"timeout": None}),
        ((), {"timeout": 5}),
    ]
    assert merge_marker_kwargs(markers, SRC) == {"timeout": None}


def test_merge_no_markers_and_bare_markers() -> None:
    assert merge_marker_kwargs([], SRC) == {}
    assert merge_marker_kwargs(iter([((), {}), ((), {})]), SRC) == {}


def test_merge_rejects_positional_arguments() -> None:
    with pytest.raises(SpecError) as exc:
        merge_marker_kwargs([((), {"cpu": 1}), (("1G",), {})], SRC)
    assert str(exc.value) == (
        f"{SRC}: positional arguments are not accepted (got '1G'); use keyword arguments, "
        "e.g. @pytest.mark.isolated(cpu=0.5, mem='128M')"
    )


def test_merge_rejects_several_positional_arguments() -> None:
    with pytest.raises(SpecError) as exc:
        merge_marker_kwargs([((0.5, "1G"), {"pids": 3})], SRC)
    assert "(got 0.5, '1G')" in str(exc.value)
    assert "use keyword arguments" in str(exc.value)


def test_merge_rejects_unknown_argument() -> None:
    with pytest.raises(SpecError) as exc:
        merge_marker_kwargs([((), {"memory": "1G", "cpu": 1})], SRC)
    assert str(exc.value) == (
        f"{SRC}: unknown argument memory; accepted: cpu, mem, pids, timeout, hostname, net, "
        "cpu_period, cpuset, noise, clock_offset, seed"
    )


def test_merge_rejects_unknown_arguments_sorted() -> None:
    with pytest.raises(SpecError) as exc:
        merge_marker_kwargs([((), {}), ((), {"memory": 1, "cpus": 2})], SRC)
    assert str(exc.value) == (
        f"{SRC}: unknown arguments cpus, memory; accepted: cpu, mem, pids, timeout, hostname, "
        "net, cpu_period, cpuset, noise, clock_offset, seed"
    )


# -- spec_from_marker ----------------------------------------------------------------------------


def test_spec_from_marker_applies_over_defaults() -> None:
    defaults = IsolationSpec(cpu=2.0, pids=10, timeout=5.0, hostname="ci")
    kwargs: dict[str, object] = {"cpu": "0.5", "mem": "128M", "hostname": "box"}
    assert spec_from_marker(kwargs, defaults, SRC) == IsolationSpec(
        cpu=0.5, mem=128 * MiB, pids=10, timeout=5.0, hostname="box"
    )


def test_spec_from_marker_none_removes_a_default_cap() -> None:
    defaults = IsolationSpec(timeout=5.0, pids=10)
    spec = spec_from_marker({"timeout": None, "pids": "none"}, defaults, SRC)
    assert spec == IsolationSpec(timeout=None, pids=None)


def test_spec_from_marker_empty_returns_defaults() -> None:
    defaults = IsolationSpec(mem=GiB)
    assert spec_from_marker({}, defaults, SRC) == defaults


def test_spec_from_marker_error_names_marker() -> None:
    with pytest.raises(SpecError) as exc:
        spec_from_marker({"cpu": 0}, BUILTIN_DEFAULTS, SRC)
    assert str(exc.value) == (f"{SRC}: invalid cpu=0 (must be greater than 0); expected {CPU_FORM}")


# -- every marker argument with every wrong type and value -------------------------------------

FORMS = {"cpu": CPU_FORM, "mem": MEM_FORM, "pids": PIDS_FORM, "timeout": TIMEOUT_FORM,
         "hostname": HOSTNAME_FORM, "net": NET_FORM, "cpu_period": CPU_PERIOD_FORM,
         "cpuset": CPUSET_FORM, "noise": NOISE_FORM, "clock_offset": CLOCK_FORM,
         "seed": SEED_FORM}  # fmt: skip
WRONG_TYPES: list[object] = [[1], {"a": 1}, (1,), {1}, b"1", object(), 1j, True, False]
WRONG_VALUES: dict[str, list[object]] = {
    "cpu": [0, -1, 0.0, float("nan"), float("inf"), "", "fast", "1e999", 1e999, -0.5],
    "mem": [0, -1, 1, MIN_MEM - 1, "", "lots", "12 parsecs", "-5M", "1.5.5G", "1e3M",
            float("nan"), 2**80],
    "pids": [0, -1, 1.5, "", "many", "1.5", float("inf"), 2**80],
    "timeout": [0, -1, "", "soon", float("nan"), float("inf"), "-3"],
    "hostname": ["", "no spaces", "a" * 65, "-lead", "trail-", "dot..dot", "nul\x00", 5],
    "net": ["", "none", "hosts", "private\x00", "lo", 0],
    "cpu_period": [0, -1, "2s", "1 year", float("nan"), "", 5],
    "cpuset": ["", "x", "1-0", -1, "0,,1", 2**20],
    "noise": [-1, 65, 1.5, "", "lots", 2**80],
    "clock_offset": ["", "later", float("nan"), 1e300, "-4000d"],
    "seed": [-1, 2**32, 1.5, "", "x"],
}  # fmt: skip
BAD_ARGUMENTS = [(key, value) for key in SPEC_KEYS for value in WRONG_TYPES] + [
    (key, value) for key, values in WRONG_VALUES.items() for value in values
]


@pytest.mark.parametrize(("key", "value"), BAD_ARGUMENTS, ids=repr)
def test_every_bad_marker_argument_is_a_clear_error(key: str, value: object) -> None:
    with pytest.raises(SpecError) as exc:
        spec_from_marker({key: value}, BUILTIN_DEFAULTS, SRC)
    message = _raises(exc)
    assert message.startswith(f"{SRC}: invalid {key}="), message
    assert message.endswith(f"expected {FORMS[key]}"), message


# -- contradictions ------------------------------------------------------------------------------


def test_no_isolate_alone_or_over_the_ini_is_fine() -> None:
    check_contradictions(None, True, {key: None for key in SPEC_KEYS})
    check_contradictions(True, False, {"mem": "1G"})


@pytest.mark.parametrize(
    ("isolate_all", "cli", "named"),
    [
        (True, {}, "--isolate-all"),
        (None, {"mem": "128M"}, "--isolate-mem"),
        (True, {"cpu": "0.5", "timeout": "3"}, "--isolate-all, --isolate-cpu, --isolate-timeout"),
    ],
)
def test_contradicting_command_line_options_are_an_error(
    isolate_all: bool | None, cli: dict[str, object], named: str
) -> None:
    with pytest.raises(SpecError) as exc:
        check_contradictions(isolate_all, True, cli)
    assert _raises(exc) == (
        f"command line options {named} and --no-isolate contradict each other: --no-isolate "
        f"runs every test in-process, without sandbox or caps; pass one or the other"
    )


# -- parse_bool ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        (False, False),
        ("1", True),
        ("true", True),
        ("True", True),
        (" YES ", True),
        ("on", True),
        (1, True),
        ("0", False),
        ("false", False),
        ("No", False),
        ("off", False),
        ("", False),
        (0, False),
    ],
)
def test_parse_bool(value: object, expected: bool) -> None:
    assert parse_bool(value, "ini option isolate_all") is expected


@pytest.mark.parametrize("value", ["maybe", "2", 2, "tru"])
def test_parse_bool_rejects(value: object) -> None:
    with pytest.raises(SpecError) as exc:
        parse_bool(value, "ini option isolate_all")
    assert str(exc.value) == (
        f"ini option isolate_all: invalid value {value!r}; expected true or false"
    )


# -- decide ----------------------------------------------------------------------------------------


def _settings(isolate_all: bool = False, disabled: bool = False) -> Settings:
    return Settings(isolate_all=isolate_all, disabled=disabled, defaults=BUILTIN_DEFAULTS)


def test_decide_unmarked_test_runs_in_process() -> None:
    assert decide([], _settings(), "t.py::test") is None


def test_decide_isolate_all_uses_the_defaults() -> None:
    assert decide([], _settings(isolate_all=True), "t.py::test") == BUILTIN_DEFAULTS


def test_decide_marker_over_defaults() -> None:
    spec = decide([((), {"mem": "64M"})], _settings(), "t.py::test")
    assert spec == replace(BUILTIN_DEFAULTS, mem=64 * 2**20)


def test_decide_disabled_wins_over_markers() -> None:
    assert decide([((), {"mem": "64M"})], _settings(disabled=True), "t.py::test") is None


def test_decide_bad_marker_is_a_message_naming_the_test() -> None:
    message = decide([((), {"pids": -1})], _settings(), "t.py::test_x")
    assert message == (
        "@pytest.mark.isolated on t.py::test_x: invalid pids=-1 (must be at least 1); "
        "expected an int >= 1 (processes and threads), or None for no cap"
    )


# -- strict mode and the cgroup root ---------------------------------------------------------


@pytest.mark.parametrize(
    ("cli", "ini", "expected"),
    [
        (None, "false", (False, "")),
        (True, "false", (True, "command line option --isolate-strict")),
        (None, "yes", (True, "ini option isolate_strict")),
        (True, "true", (True, "command line option --isolate-strict")),
    ],
)
def test_strict_names_where_it_was_turned_on(
    cli: bool | None, ini: str, expected: tuple[bool, str]
) -> None:
    assert resolve_strict(cli, ini) == expected


def test_strict_bad_ini_value_names_the_key() -> None:
    with pytest.raises(SpecError, match=r"^ini option isolate_strict: invalid value 'sure'"):
        resolve_strict(None, "sure")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", ""),
        (None, ""),
        ("/", ""),
        ("/pytest-isolate/alice/", "/pytest-isolate/alice"),
        ("/a//b/./c", "/a/b/c"),
    ],
)
def test_cgroup_root_is_normalized(value: str | None, expected: str) -> None:
    assert parse_cgroup_root(value, "here") == expected


@pytest.mark.parametrize("value", ["relative/path", "/a/../b", "/a\0b", 3])
def test_bad_cgroup_root_names_its_source(value: object) -> None:
    with pytest.raises(SpecError, match=r"^ini option isolate_cgroup_root: invalid cgroup_root="):
        resolve_cgroup_root(None, value)
    with pytest.raises(SpecError, match=r"^command line option --isolate-cgroup-root: invalid"):
        resolve_cgroup_root(value, "/fine")


def test_cgroup_root_cli_wins_over_ini() -> None:
    assert resolve_cgroup_root("/from-cli", "/from-ini") == "/from-cli"
    assert resolve_cgroup_root(None, "/from-ini") == "/from-ini"


# -- net ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "expected"), [("private", "private"), ("host", "host"),
                                                 (" HOST ", "host")])  # fmt: skip
def test_parse_net_accepts(value: str, expected: str) -> None:
    assert parse_net(value, SRC) == expected


@pytest.mark.parametrize("value", ["none", "", "hosts", 1, None, True])
def test_parse_net_rejects_with_the_accepted_form(value: object) -> None:
    with pytest.raises(SpecError) as exc:
        parse_net(value, "command line option --isolate-net")
    assert str(exc.value) == (
        f"command line option --isolate-net: invalid net={value!r}; expected {NET_FORM}"
    )


def test_net_marker_and_defaults() -> None:
    settings = Settings(isolate_all=True, disabled=False, defaults=BUILTIN_DEFAULTS)
    assert decide([((), {"net": "host"})], settings, "t.py::t") == IsolationSpec(net="host")
    assert resolve_defaults({"net": "host"}, {}) == IsolationSpec(net="host")
    assert resolve_defaults({}, {"net": "host"}).net == "host"
    assert "invalid net='wide'" in str(decide([((), {"net": "wide"})], settings, "t.py::t"))


# -- shares -------------------------------------------------------------------------------
def test_parse_shares_resolves_relative_paths_and_dedups() -> None:
    exists = {"/base/results", "/abs/dir"}.__contains__
    shares = parse_shares(["results", "/abs/dir/", "./results", "/abs/x/../dir"], "src", "/base",
                          exists)  # fmt: skip
    assert shares == ("/base/results", "/abs/dir")


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("", "empty path"),
        ("/", "/ cannot be shared"),
        ("/proc/self", "/proc/self cannot be shared"),
        ("/dev", "/dev cannot be shared"),
        ("missing", "/base/missing does not exist"),
    ],
)
def test_parse_shares_rejects(value: str, why: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_shares([value], "ini option isolate_share", "/base", lambda path: True
                     if "missing" not in path else False)  # fmt: skip
    assert str(exc.value) == (
        f"ini option isolate_share: invalid share={value!r} ({why}); expected {SHARE_FORM}"
    )


def test_parse_shares_keeps_lookalikes_of_fresh_trees() -> None:
    assert parse_shares(["/devices"], "src", "/", lambda path: True) == ("/devices",)


# -- bounds that keep every accepted value usable (an attack round found overflows) ------------


@pytest.mark.parametrize("value", [7 * 86400.0 + 1, 2.15e6, 1e300, "3e6"])
def test_parse_timeout_rejects_beyond_a_week(value: object) -> None:
    with pytest.raises(SpecError) as exc:
        parse_timeout(value, SRC)
    assert _raises(exc) == (
        f"{SRC}: invalid timeout={value!r} (must be at most 604800 (a week); None for no "
        f"timeout); expected {TIMEOUT_FORM}"
    )


def test_parse_timeout_accepts_a_week() -> None:
    assert parse_timeout(604800, SRC) == 604800.0


# -- the conditions a flaky-test hunt varies ---------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.1, 0.1), (1, 1.0), ("100ms", 0.1), ("1s", 1.0), (" 250 ms ", 0.25), ("1000us", 0.001),
     ("0.5", 0.5), (None, None), ("none", None)],
)  # fmt: skip
def test_parse_cpu_period_accepts(value: object, expected: float | None) -> None:
    assert parse_cpu_period(value, SRC) == (None if expected is None else pytest.approx(expected))


@pytest.mark.parametrize(
    ("value", "reason"),
    [("2s", " (must be from 1ms to 1s)"), (0.0005, " (must be from 1ms to 1s)"),
     (0, " (must be from 1ms to 1s)"), ("10 parsecs", ""), (True, ""), ([1], ""), ("nan", "")],
)  # fmt: skip
def test_parse_cpu_period_rejects(value: object, reason: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_cpu_period(value, SRC)
    assert (
        _raises(exc) == f"{SRC}: invalid cpu_period={value!r}{reason}; expected {CPU_PERIOD_FORM}"
    )


def test_a_quota_below_one_millisecond_names_both_values() -> None:
    with pytest.raises(SpecError) as exc:
        spec_from_marker({"cpu": 0.05, "cpu_period": "10ms"}, BUILTIN_DEFAULTS, SRC)
    assert _raises(exc) == (
        f"{SRC}: cpu=0.05 with cpu_period=0.01s gives 0.5ms of CPU per period, below the "
        "kernel's smallest quota of 1ms; raise cpu or cpu_period"
    )
    spec = spec_from_marker({"cpu": 0.05, "cpu_period": "1s"}, BUILTIN_DEFAULTS, SRC)
    assert (spec.cpu, spec.cpu_period) == (0.05, 1.0)


def test_the_quota_check_names_the_command_line_options() -> None:
    with pytest.raises(SpecError) as exc:
        resolve_defaults({"cpu": "0.02", "cpu_period": "20ms"}, {})
    assert str(exc.value).startswith(
        "command line option --isolate-cpu and command line option --isolate-cpu-period: "
        "cpu=0.02 with cpu_period=0.02s"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, (0,)), ("0", (0,)), ("0-1", (0, 1)), ("3,0-1", (0, 1, 3)), (" 1 , 1 ", (1,)),
     (None, None), ("none", None)],
)  # fmt: skip
def test_parse_cpuset_accepts(value: object, expected: tuple[int, ...] | None) -> None:
    assert parse_cpuset(value, SRC) == expected
    if expected is not None:
        assert parse_cpuset(format_cpuset(expected), SRC) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [("", ""), ("a", ""), ("1-0", " (1-0 is an empty range)"), (-1, " (CPU numbers are 0 to 8191)"),
     ("9000", " (CPU 9000 is above 8191)"), (True, ""), ([0], ""), ("0-", "")],
)  # fmt: skip
def test_parse_cpuset_rejects(value: object, reason: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_cpuset(value, SRC)
    assert _raises(exc) == f"{SRC}: invalid cpuset={value!r}{reason}; expected {CPUSET_FORM}"


def test_format_cpuset() -> None:
    assert format_cpuset((0, 1, 2, 5, 7, 8)) == "0-2,5,7-8"


@pytest.mark.parametrize(("value", "expected"), [(0, 0), ("2", 2), (64, 64), (None, 0)])
def test_parse_noise_accepts(value: object, expected: int) -> None:
    assert parse_noise(value, SRC) == expected


@pytest.mark.parametrize(
    ("value", "reason"), [(65, " (must be from 0 to 64)"), (-1, " (must be from 0 to 64)"),
                          (1.5, ""), (True, ""), ("x", "")],
)  # fmt: skip
def test_parse_noise_rejects(value: object, reason: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_noise(value, SRC)
    assert _raises(exc) == f"{SRC}: invalid noise={value!r}{reason}; expected {NOISE_FORM}"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 0.0), (90, 90.0), ("90s", 90.0), ("-1h", -3600.0), ("30d", 30 * 86400.0),
     ("+2m", 120.0), (None, 0.0), ("3650d", 3650 * 86400.0)],
)  # fmt: skip
def test_parse_clock_offset_accepts(value: object, expected: float) -> None:
    assert parse_clock_offset(value, SRC) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [("3651d", " (at most 3650 days either way)"), (-1e12, " (at most 3650 days either way)"),
     ("soon", ""), (True, ""), (float("inf"), "")],
)  # fmt: skip
def test_parse_clock_offset_rejects(value: object, reason: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_clock_offset(value, SRC)
    assert _raises(exc) == f"{SRC}: invalid clock_offset={value!r}{reason}; expected {CLOCK_FORM}"


@pytest.mark.parametrize(("value", "expected"), [(0, 0), ("42", 42), (2**32 - 1, 2**32 - 1),
                                                 (None, None)])  # fmt: skip
def test_parse_seed_accepts(value: object, expected: int | None) -> None:
    assert parse_seed(value, SRC) == expected


@pytest.mark.parametrize("value", [2**32, -1, 1.5, "x", True])
def test_parse_seed_rejects(value: object) -> None:
    with pytest.raises(SpecError) as exc:
        parse_seed(value, SRC)
    assert _raises(exc).startswith(f"{SRC}: invalid seed={value!r}")
    assert _raises(exc).endswith(f"expected {SEED_FORM}")


def test_option_names() -> None:
    assert option_name("cpu") == "--isolate-cpu"
    assert option_name("cpu_period") == "--isolate-cpu-period"
    assert option_name("clock_offset") == "--isolate-clock-offset"
