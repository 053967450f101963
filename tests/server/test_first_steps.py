"""A person who just ran `make serve` is told, once the server answers, what to do next."""

from web_calls import add_user

from memory.server.process import ServerProcess


def test_a_fresh_server_says_how_to_create_the_first_account_and_then_which_page_to_open(tmp_path):
    data_dir = tmp_path / "data"
    log_file = tmp_path / "server.log"
    with ServerProcess(data_dir, log_file=log_file, extra_args=["--log-level", "info"]) as server:
        pass
    fresh = log_file.read_text()
    assert f"user add NAME --data-dir {data_dir}" in fresh and f"open {server.url}/" in fresh
    assert fresh.index("Uvicorn running") < fresh.index("user add NAME"), "said once the server is up"

    add_user(data_dir, "alice", "a long enough password")
    log_file.write_text("")
    with ServerProcess(data_dir, port=server.port, log_file=log_file, extra_args=["--log-level", "info"]):
        pass
    known = log_file.read_text()
    assert f"Ready at {server.url}/" in known and "user add" not in known
