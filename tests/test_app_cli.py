"""``motion-adapters app``'s access flags: ``--auth`` / ``--auth-file`` / ``--no-auth``, the refusal to serve beyond
this machine without one of them, a start line that tells who can reach the server, and a password-protected
server that refuses a client without the password."""

from __future__ import annotations

import argparse
import os

import pytest

from motion_adapters.app.cli import add_app_parser, auth_from_args, is_loopback, read_auth_file, start_line
from motion_adapters.cli import main
from motion_adapters.errors import MotionAdapterError

SECRET = "hunter2-s3cret"


def app_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_app_parser(parser.add_subparsers())
    return parser.parse_args(["app", *argv])


def test_loopback_hosts():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.1.1", "localhost", "::1", "[::1]", "LOCALHOST"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.7", "studio.example.org", "10.0.0.1"))


def test_serving_beyond_this_machine_needs_a_password_or_no_auth(capsys):
    with pytest.raises(MotionAdapterError) as e:
        auth_from_args(app_args("--host", "0.0.0.0"))
    message = str(e.value)
    assert message.startswith("--host 0.0.0.0:") and "--auth USER:PASS" in message
    assert "--auth-file FILE" in message and "--no-auth" in message and "found none" in message
    with pytest.raises(MotionAdapterError, match="^--share: .*--auth USER:PASS"):
        auth_from_args(app_args("--share"))
    assert main(["app", "--host", "192.168.1.7"]) == 2  # one clear error line, nothing started
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --host 192.168.1.7:")

    assert auth_from_args(app_args()) is None  # this machine only: no password needed, no warning
    assert capsys.readouterr().err == ""
    assert auth_from_args(app_args("--host", "0.0.0.0", "--no-auth")) is None
    assert "warning: --host 0.0.0.0 with --no-auth" in capsys.readouterr().err
    accounts = auth_from_args(app_args("--host", "0.0.0.0", "--auth", f"alice:{SECRET}", "--auth", "bob:a:b"))
    assert accounts == [("alice", SECRET), ("bob", "a:b")]  # split at the first colon: passwords may hold colons
    with pytest.raises(MotionAdapterError, match="found both"):
        auth_from_args(app_args("--host", "0.0.0.0", "--auth", "a:b", "--no-auth"))


@pytest.mark.parametrize("value, found", [("alice", "without a colon"), (":pw", "user name before the colon"),
                                          ("alice:", "empty password for user 'alice'")])
def test_bad_auth_values_name_the_flag(value, found):
    with pytest.raises(MotionAdapterError, match=f"^--auth: expected USER:PASS.*{found}"):
        auth_from_args(app_args("--auth", value))


def test_auth_file_lines_comments_and_permissions(tmp_path, capsys):
    f = tmp_path / "users"
    f.write_text(f"# studio users\n\nalice:{SECRET}\n  bob:pw  \n")
    f.chmod(0o600)
    assert read_auth_file(str(f)) == [("alice", SECRET), ("bob", "pw")]
    assert capsys.readouterr().err == ""
    if os.name == "posix":
        f.chmod(0o644)
        read_auth_file(str(f))
        err = capsys.readouterr().err
        assert "readable by other users (mode 644)" in err and "chmod 600" in err and SECRET not in err
    f.write_text(f"alice:{SECRET}\nbob\n")
    with pytest.raises(MotionAdapterError, match=r"line 2: expected USER:PASS.*without a colon") as e:
        read_auth_file(str(f))
    assert SECRET not in str(e.value)
    f.write_text("# nobody\n\n")
    with pytest.raises(MotionAdapterError, match="at least one USER:PASS line, found none"):
        read_auth_file(str(f))
    with pytest.raises(MotionAdapterError, match="--auth-file .*missing: expected a file of USER:PASS lines, found no"):
        read_auth_file(str(tmp_path / "missing"))
    f.write_text(f"carol:{SECRET}\n")
    assert auth_from_args(app_args("--host", "0.0.0.0", "--auth-file", str(f))) == [("carol", SECRET)]


def test_the_start_line_tells_who_can_reach_the_studio():
    local = start_line("127.0.0.1", 7860, "http://127.0.0.1:7860/", None, 0)
    assert "this machine only" in local and "network" not in local
    assert "password-protected (1 user)" in start_line("127.0.0.1", 7860, "http://127.0.0.1:7860/", None, 1)
    net = start_line("0.0.0.0", 7860, "http://localhost:7860/", None, 2)
    assert "reachable from the network on port 7860 of every address of this machine" in net
    assert "password-protected (2 users)" in net
    assert "this machine only" not in net
    open_ = start_line("192.168.1.7", 8000, "http://192.168.1.7:8000/", None, 0)
    assert "reachable from the network at http://192.168.1.7:8000, WITHOUT a password (--no-auth)" in open_
    shared = start_line("127.0.0.1", 7860, "http://127.0.0.1:7860/", "https://abc.gradio.live", 1)
    assert "public link https://abc.gradio.live (anyone with the link), password-protected" in shared
    assert "this machine only" not in shared
    assert "at http://[fd00::7]:7860, password" in start_line("fd00::7", 7860, "http://[fd00::7]:7860/", None, 1)


def test_a_password_protected_studio_refuses_clients_without_it(shapes_env, tmp_path):
    import httpx
    from app_support import free_port

    from motion_adapters.app.config import StudioConfig
    from motion_adapters.app.server import launch

    cfg = StudioConfig(models_dirs=[tmp_path / "models"], output_dir=tmp_path / "out", device="cpu")
    demo, url, _studio = launch(cfg, host="127.0.0.1", port=free_port(), block=False, quiet=True,
                                auth=[("alice", SECRET)])
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            assert http.get("/gradio_api/info").status_code == 401
            assert http.post("/login", data={"username": "alice", "password": "wrong"}).status_code >= 400
            assert http.get("/gradio_api/info").status_code == 401
            assert http.post("/login", data={"username": "alice", "password": SECRET}).status_code == 200
            info = http.get("/gradio_api/info")
            assert info.status_code == 200 and "/status" in info.text
    finally:
        demo.close()
