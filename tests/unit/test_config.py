"""Unit tests for mbserver.config: addresses, sizes, options, usage errors."""

from __future__ import annotations

import dataclasses

import pytest

from mbserver import MEMCACHED_COMPAT_VERSION, __version__
from mbserver.config import Settings, parse_address, parse_args, parse_size


class TestParseAddress:
    @pytest.mark.parametrize(
        "text, expected",
        [
            ("127.0.0.1:11211", ("127.0.0.1", 11211)),
            ("0.0.0.0:0", ("0.0.0.0", 0)),
            ("10.1.2.3:65535", ("10.1.2.3", 65535)),
            ("[::1]:11211", ("::1", 11211)),
            ("[::]:80", ("::", 80)),
            ("[fe80::1:2]:1", ("fe80::1:2", 1)),
            ("[2001:db8::ff00:42:8329]:11211", ("2001:db8::ff00:42:8329", 11211)),
            ("[::ffff:127.0.0.1]:11211", ("::ffff:127.0.0.1", 11211)),
        ],
    )
    def test_good(self, text, expected):
        assert parse_address(text) == expected

    @pytest.mark.parametrize(
        "text",
        [
            "",
            ":",
            "127.0.0.1",
            "127.0.0.1:",
            ":11211",
            "127.0.0.1:abc",
            "127.0.0.1:-1",
            "127.0.0.1:65536",
            "127.0.0.1:99999999999999999999",
            "127.0.0.1:11211:1",
            "localhost:11211",
            "example.com:11211",
            "256.0.0.1:11211",
            "1.2.3:11211",
            "::1:11211",  # IPv6 must be bracketed
            "::1",
            "[::1]",
            "[::1]:",
            "[::1]11211",
            "[127.0.0.1]:11211",  # brackets are for IPv6 only
            "[localhost]:11211",
            "[::1:11211",
            "::1]:11211",
            " 127.0.0.1:11211",
            "127.0.0.1 :11211",
            "127.0.0.1:11 211",
            "127.0.0.1:\u0661\u0662",  # Arabic-Indic digits: str.isdigit() says yes
            "127.0.0.1:\u00b2",  # superscript two
        ],
    )
    def test_bad(self, text):
        with pytest.raises(ValueError):
            parse_address(text)


class TestParseSize:
    @pytest.mark.parametrize(
        "text, expected",
        [
            ("0", 0),
            ("1048576", 1048576),
            ("1024", 1024),
            ("512k", 512 << 10),
            ("512K", 512 << 10),
            ("1m", 1 << 20),
            ("2M", 2 << 20),
            ("1g", 1 << 30),
            ("1G", 1 << 30),
            ("64kb", 64 << 10),
            ("64KB", 64 << 10),
            ("3mb", 3 << 20),
            ("100b", 100),
            (" 1m ", 1 << 20),
        ],
    )
    def test_good(self, text, expected):
        assert parse_size(text) == expected

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "m",
            "k",
            "-1",
            "-1m",
            "1.5m",
            "1 m",
            "1t",
            "1mm",
            "1bb",
            "0x10",
            "1e6",
            "abc",
            "\u0661m",
        ],
    )
    def test_bad(self, text):
        with pytest.raises(ValueError):
            parse_size(text)


class TestParseArgs:
    def test_defaults(self):
        assert parse_args(["127.0.0.1:11211"]) == Settings(
            host="127.0.0.1",
            port=11211,
            memory_limit=64 << 20,
            max_item_size=1 << 20,
            max_connections=1024,
            verbosity=0,
        )

    def test_settings_defaults_match_the_command_line_defaults(self):
        assert Settings() == parse_args(["127.0.0.1:11211"])

    def test_ipv6(self):
        settings = parse_args(["[::1]:22122"])
        assert (settings.host, settings.port) == ("::1", 22122)

    def test_short_options(self):
        settings = parse_args(["0.0.0.0:1", "-m", "128", "-I", "2m", "-c", "10", "-vv"])
        assert settings == Settings("0.0.0.0", 1, 128 << 20, 2 << 20, 10, 2)

    def test_long_options(self):
        settings = parse_args(
            [
                "--memory-limit=256",
                "--max-item-size",
                "512k",
                "--max-connections",
                "5000",
                "--verbose",
                "127.0.0.1:11211",
            ]
        )
        assert settings == Settings("127.0.0.1", 11211, 256 << 20, 512 << 10, 5000, 1)

    @pytest.mark.parametrize("size, expected", [("1024", 1024), ("1k", 1024), ("1g", 1 << 30)])
    def test_item_size_limits_are_inclusive(self, size, expected):
        settings = parse_args(["127.0.0.1:1", "-m", "2048", "-I", size])
        assert settings.max_item_size == expected

    def test_item_size_may_be_half_the_memory(self):
        assert parse_args(["127.0.0.1:1", "-m", "2", "-I", "1m"]).max_item_size == 1 << 20

    def test_verbosity_counts(self):
        assert parse_args(["127.0.0.1:1", "-vvv"]).verbosity == 3

    def test_hot_keys(self):
        assert parse_args(["127.0.0.1:1"]).hot_keys == 0  # off by default
        assert parse_args(["127.0.0.1:1", "--hot-keys", "20"]).hot_keys == 20
        assert parse_args(["127.0.0.1:1"], {"MBSERVER_HOT_KEYS": "5"}).hot_keys == 5

    def test_settings_are_frozen(self):
        settings = parse_args(["127.0.0.1:1"])
        with pytest.raises(dataclasses.FrozenInstanceError):
            settings.port = 2

    def test_version_exits_zero(self, capsys):
        with pytest.raises(SystemExit) as caught:
            parse_args(["--version"])
        assert caught.value.code == 0
        out = capsys.readouterr().out
        assert __version__ in out and MEMCACHED_COMPAT_VERSION in out


def usage_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as caught:
        parse_args(argv)
    assert caught.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "usage:" in captured.err
    return captured.err


class TestUsageErrors:
    def test_no_address(self, capsys):
        assert "IP:PORT" in usage_error(capsys, [])

    def test_two_addresses(self, capsys):
        usage_error(capsys, ["127.0.0.1:1", "127.0.0.1:2"])

    @pytest.mark.parametrize(
        "address", ["localhost:11211", "::1:11211", "127.0.0.1:70000", "127.0.0.1"]
    )
    def test_bad_address(self, capsys, address):
        assert "bad address" in usage_error(capsys, [address])

    @pytest.mark.parametrize("value", ["0", "-1", "abc", "1.5", ""])
    def test_bad_memory_limit(self, capsys, value):
        assert "-m" in usage_error(capsys, ["127.0.0.1:1", "-m", value])

    @pytest.mark.parametrize("value", ["0", "-5", "many"])
    def test_bad_max_connections(self, capsys, value):
        assert "-c" in usage_error(capsys, ["127.0.0.1:1", "-c", value])

    @pytest.mark.parametrize("value", ["1t", "big", "1.5m", ""])
    def test_bad_item_size_syntax(self, capsys, value):
        assert "-I" in usage_error(capsys, ["127.0.0.1:1", "-I", value])

    @pytest.mark.parametrize("value", ["1023", "0", "2g"])
    def test_item_size_out_of_range(self, capsys, value):
        assert "-I" in usage_error(capsys, ["127.0.0.1:1", "-m", "8192", "-I", value])

    def test_item_size_over_half_the_memory(self, capsys):
        err = usage_error(capsys, ["127.0.0.1:1", "-m", "2", "-I", "1025k"])
        assert "half" in err

    def test_default_item_size_with_a_tiny_memory_limit(self, capsys):
        # -m 1 leaves room for items of at most 512 KiB: the 1 MiB default is too big.
        assert "half" in usage_error(capsys, ["127.0.0.1:1", "-m", "1"])

    @pytest.mark.parametrize("value", ["-1", "1001", "many", "2.5"])
    def test_bad_hot_keys(self, capsys, value):
        assert "--hot-keys" in usage_error(capsys, ["127.0.0.1:1", "--hot-keys", value])

    def test_unknown_option(self, capsys):
        assert "unrecognized" in usage_error(capsys, ["127.0.0.1:1", "--frobnicate"])


class TestUnixSocketAndShutdown:
    """-s/--unix-socket, -a/--unix-mask and -A/--enable-shutdown, as memcached's."""

    def test_defaults(self):
        settings = parse_args(["127.0.0.1:1"])
        assert (settings.unix_socket, settings.unix_mask, settings.enable_shutdown) == (
            None,
            0o700,
            False,
        )

    def test_a_unix_socket_alone_listens_only_there(self):
        settings = parse_args(["-s", "/run/mb.sock"])
        assert settings.unix_socket == "/run/mb.sock"
        assert settings.host is None  # no TCP listener
        assert settings.unix_mask == 0o700

    def test_a_unix_socket_and_an_address_listen_on_both(self):
        settings = parse_args(["127.0.0.1:5", "--unix-socket", "mb.sock", "-a", "0770"])
        assert (settings.host, settings.port) == ("127.0.0.1", 5)
        assert (settings.unix_socket, settings.unix_mask) == ("mb.sock", 0o770)

    @pytest.mark.parametrize(
        "text, mask", [("700", 0o700), ("0700", 0o700), ("777", 0o777), ("0", 0), ("66", 0o66)]
    )
    def test_the_mask_is_octal(self, text, mask):
        assert parse_args(["-s", "x.sock", "-a", text]).unix_mask == mask

    @pytest.mark.parametrize("text", ["800", "7777", "00700", "rwx", "-1", "", "0x1ff", "7 0"])
    def test_a_mask_that_is_not_octal_permissions(self, capsys, text):
        assert "octal" in usage_error(capsys, ["-s", "x.sock", "-a", text])

    def test_a_mask_needs_a_socket(self, capsys):
        assert "--unix-socket" in usage_error(capsys, ["127.0.0.1:1", "-a", "700"])

    def test_an_empty_socket_path(self, capsys):
        assert "empty" in usage_error(capsys, ["-s", ""])

    def test_neither_address_nor_socket(self, capsys):
        err = usage_error(capsys, ["-m", "8"])
        assert "IP:PORT" in err and "--unix-socket" in err

    def test_from_the_environment(self):
        environ = {"MBSERVER_UNIX_SOCKET": "/tmp/a.sock", "MBSERVER_UNIX_MASK": "0750"}
        settings = parse_args([], environ)
        assert (settings.host, settings.unix_socket, settings.unix_mask) == (
            None,
            "/tmp/a.sock",
            0o750,
        )
        # The command line wins, and adds the address.
        settings = parse_args(["127.0.0.1:1", "-a", "0700"], environ)
        assert (settings.host, settings.unix_mask) == ("127.0.0.1", 0o700)

    def test_a_bad_mask_from_the_environment(self, capsys):
        environ = {"MBSERVER_UNIX_SOCKET": "a.sock", "MBSERVER_UNIX_MASK": "999"}
        with pytest.raises(SystemExit) as caught:
            parse_args([], environ)
        assert caught.value.code == 2
        assert "MBSERVER_UNIX_MASK" in capsys.readouterr().err

    def test_enable_shutdown(self):
        assert parse_args(["127.0.0.1:1", "-A"]).enable_shutdown
        assert parse_args(["127.0.0.1:1", "--enable-shutdown"]).enable_shutdown

    @pytest.mark.parametrize(
        "text, enabled",
        [("1", True), ("true", True), ("YES", True), ("on", True), ("0", False), ("off", False)],
    )
    def test_enable_shutdown_from_the_environment(self, text, enabled):
        settings = parse_args(["127.0.0.1:1"], {"MBSERVER_ENABLE_SHUTDOWN": text})
        assert settings.enable_shutdown is enabled

    def test_a_bad_switch_from_the_environment(self, capsys):
        with pytest.raises(SystemExit):
            parse_args(["127.0.0.1:1"], {"MBSERVER_ENABLE_SHUTDOWN": "maybe"})
        assert "MBSERVER_ENABLE_SHUTDOWN" in capsys.readouterr().err


class TestPrefixDelimiter:
    def test_default_is_memcacheds(self):
        assert parse_args(["127.0.0.1:1"], environ={}).prefix_delimiter == ":"

    @pytest.mark.parametrize("option", ["-D", "--prefix-delimiter"])
    def test_one_character(self, option):
        assert parse_args(["127.0.0.1:1", option, "#"], environ={}).prefix_delimiter == "#"

    def test_from_the_environment(self):
        environ = {"MBSERVER_PREFIX_DELIMITER": "|"}
        assert parse_args(["127.0.0.1:1"], environ=environ).prefix_delimiter == "|"

    @pytest.mark.parametrize("value", ["", "ab", " ", "é", "\t"])
    def test_anything_else_is_a_usage_error(self, capsys, value):
        # One printable character, so that `STAT stat_key_prefix` stays one token.
        assert "--prefix-delimiter" in usage_error(capsys, ["127.0.0.1:1", "-D", value])
